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

/// Passes over `/proc` before the sweep gives up on a lineage that keeps forking (each pass
/// kills a generation; `RLIMIT_NPROC` bounds how many there can be).
const MAX_PASSES: usize = 1000;

/// Kills and reaps every child of this process that is not an active run: each is a descendant
/// of some run that outlived it. Returns how many were found.
///
/// Killing an orphan re-parents its own children to this process, and a child can have a lower
/// pid than its parent (after the pid counter wraps), so one ascending pass over `/proc` can
/// miss them: passes repeat until one finds no unknown child.
pub fn sweep(active: &ActiveRuns) -> usize {
    let me = std::process::id() as i32;
    let active = active.lock();
    let mut found = 0;
    for _ in 0..MAX_PASSES {
        let this_pass = sweep_once(me, &active);
        found += this_pass;
        if this_pass == 0 {
            break;
        }
    }
    found
}

fn sweep_once(me: i32, active: &HashSet<i32>) -> usize {
    let orphans: Vec<i32> = match own_children() {
        Some(children) => children
            .into_iter()
            .filter(|pid| !active.contains(pid))
            .collect(),
        None => {
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return 0;
            };
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
                .filter(|pid| !active.contains(pid) && parent_of(*pid) == Some(me))
                .collect()
        }
    };
    // Stop them all first, so none forks while its siblings are being killed.
    for pid in &orphans {
        // SAFETY: signalling a child of ours that no other code waits for.
        unsafe {
            libc::kill(*pid, libc::SIGSTOP);
        }
    }
    for pid in &orphans {
        // SAFETY: signalling and reaping a child of ours that no other code waits for.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(*pid, &mut status, 0);
        }
    }
    orphans.len()
}

/// This process's children, from each thread's `/proc/self/task/<tid>/children` (an adopted
/// orphan is the child of one of the threads): a few small reads instead of a pass over every
/// process on the machine. `None` where the kernel does not provide the file.
fn own_children() -> Option<Vec<i32>> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            // The thread exited since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => {
                return None;
            }
            Err(_) => {}
        }
    }
    Some(children)
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
    fn lists_its_own_children() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let children = own_children().expect("this kernel lists children");
        let _ = child.kill();
        let _ = child.wait();
        assert!(children.contains(&(child.id() as i32)), "{children:?}");
    }

    #[test]
    fn reads_the_parent_pid() {
        assert_eq!(
            parent_of(std::process::id() as i32),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }
}
