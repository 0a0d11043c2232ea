//! The fallback for runs without a PID namespace: the server is a child subreaper, so a
//! descendant that leaves the run's process group (`setsid`, a double fork) is re-parented to
//! the server rather than to init, and is found and killed when a run ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// The server's own run processes, which the sweep must leave alone. Spawning holds the lock
/// until the new pid is registered, so a sweep never mistakes a run starting for an orphan.
#[derive(Debug, Default, Clone)]
pub struct ActiveRuns {
    pids: Arc<Mutex<HashSet<i32>>>,
}

impl ActiveRuns {
    pub fn lock(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: a prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Kills and reaps every child of this process that is not an active run: each is a descendant
/// of some run that outlived it. Returns how many were found.
pub fn sweep(active: &ActiveRuns) -> usize {
    let me = std::process::id() as i32;
    let active = active.lock();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut found = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if active.contains(&pid) || parent_of(pid) != Some(me) {
            continue;
        }
        found += 1;
        // SAFETY: signalling and reaping a child of ours that no other code waits for.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    }
    found
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_pid() {
        assert_eq!(
            parent_of(std::process::id() as i32),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }
}
