//! Tearing a run down by cgroup, where the server may create cgroups (cgroup v2).
//!
//! A process group can be left (`setsid`), a PID namespace may be unavailable (container
//! seccomp profiles refuse user namespaces), and the subreaper sweep has to chase a lineage
//! generation by generation. A cgroup holds every descendant whatever it does, and
//! `cgroup.kill` (Linux 5.14) kills them all at once. So each run gets a cgroup of its own
//! under one the server creates beside itself; the child is created inside it (`clone3` with
//! `CLONE_INTO_CGROUP` and the directory descriptor opened here; where that call is refused the
//! child writes itself into `cgroup.procs` first thing), and when the run ends the cgroup is
//! killed, waited for and removed. Where cgroups cannot be created (read-only cgroupfs in
//! most containers), the process group, the PID namespace and the sweep still apply.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup under which runs get theirs: `<cgroup2 mount><own cgroup>/terrarium-<pid>`.
#[derive(Debug)]
pub struct RunCgroups {
    base: PathBuf,
}

/// One run's cgroup: killed and removed by [`RunCgroup::teardown`] (or on drop).
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// The cgroup's directory, for `clone3`'s `CLONE_INTO_CGROUP`.
    pub dir_fd: File,
    /// `cgroup.procs` of this cgroup, opened for writing: where the child cannot be created
    /// in the cgroup, it writes "0" here to join.
    pub procs: File,
    done: bool,
}

/// Why runs get no cgroup of their own (teardown then relies on the process group, the PID
/// namespace and the subreaper sweep).
#[derive(Debug, thiserror::Error)]
pub enum CgroupUnavailable {
    #[error("no cgroup v2 file system is mounted")]
    NoCgroup2,
    #[error("/proc/self/cgroup: {0}")]
    OwnCgroup(std::io::Error),
    #[error("this process is not in the cgroup v2 hierarchy")]
    NotInHierarchy,
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this kernel has no cgroup.kill (Linux 5.14 or later needed)")]
    NoKill,
    #[error("per-run cgroups disabled by TERRARIUM_SANDBOX_DISABLE")]
    Disabled,
    #[cfg(test)]
    #[error("not in unit tests")]
    NotProbed,
}

impl RunCgroups {
    /// Finds the cgroup v2 hierarchy and this process's place in it, and creates the runs'
    /// parent cgroup there. `None` (with the reason) where that is not possible.
    pub fn open() -> Result<RunCgroups, CgroupUnavailable> {
        let mount = cgroup2_mount().ok_or(CgroupUnavailable::NoCgroup2)?;
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(CgroupUnavailable::OwnCgroup)?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or(CgroupUnavailable::NotInHierarchy)?;
        let parent = mount.join(own.trim_start_matches('/'));
        sweep_stale(&parent);
        let base = parent.join(format!("terrarium-{}", std::process::id()));
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupUnavailable::Create { path: base, source }),
        }
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return Err(CgroupUnavailable::NoKill);
        }
        Ok(RunCgroups { base })
    }

    /// A fresh cgroup for one run.
    pub fn create(&self) -> std::io::Result<RunCgroup> {
        let dir = self
            .base
            .join(format!("run-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir)?;
        let open = || {
            use std::os::unix::fs::OpenOptionsExt;
            let dir_fd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(&dir)?;
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            Ok::<_, std::io::Error>((dir_fd, procs))
        };
        match open() {
            Ok((dir_fd, procs)) => Ok(RunCgroup {
                dir,
                dir_fd,
                procs,
                done: false,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Where runs' cgroups go.
    pub fn path(&self) -> &Path {
        &self.base
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.base);
    }
}

impl RunCgroup {
    /// Kills everything still in the cgroup, waits until it is empty (at most `wait`) and
    /// removes it. Returns whether any process was still there.
    pub fn teardown(&mut self, wait: Duration) -> bool {
        self.done = true;
        let populated = populated_now(&self.dir);
        if populated {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(self.dir.join("cgroup.kill"))
                .and_then(|mut f| f.write_all(b"1"));
            let deadline = Instant::now() + wait;
            while populated_now(&self.dir) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
        populated
    }
}

impl RunCgroup {
    #[cfg(test)]
    pub(crate) fn path_for_tests(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.done {
            self.teardown(Duration::from_secs(1));
        }
    }
}

fn populated_now(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|e| e.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Removes the cgroups of earlier servers that are gone (killing anything left in them).
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("terrarium-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(runs) = std::fs::read_dir(e.path()) {
            for run in runs.flatten().filter(|r| r.path().is_dir()) {
                let (Ok(dir_fd), Ok(procs)) = (File::open("/dev/null"), File::open("/dev/null"))
                else {
                    continue;
                };
                let mut cg = RunCgroup {
                    dir: run.path(),
                    dir_fd,
                    procs,
                    done: false,
                };
                cg.teardown(Duration::from_millis(500));
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_when_there_is_one() {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(cgroup2_mount().is_some(), info.contains(" - cgroup2 "));
    }
}
