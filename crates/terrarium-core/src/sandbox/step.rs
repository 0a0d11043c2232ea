//! How the child reports a failed step of its set-up: a [`Step`] and an errno, 8 bytes that
//! need no allocation to send (the child runs between clone and exec).

/// A step of the child's set-up, as reported when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Stdio = 1,
    Signals,
    Session,
    Cgroup,
    Limits,
    NoNewPrivs,
    DeathSignal,
    ServerGone,
    Descriptors,
    WorkingDir,
    MountPrivate,
    MountRoot,
    MountBind,
    BoundPathChanged,
    MountProc,
    PivotRoot,
    DetachOldRoot,
    EnterWorkspace,
    WorkspaceChanged,
    Landlock,
    Seccomp,
    Exec,
}

impl Step {
    const ALL: [Step; 22] = [
        Step::Stdio,
        Step::Signals,
        Step::Session,
        Step::Cgroup,
        Step::Limits,
        Step::NoNewPrivs,
        Step::DeathSignal,
        Step::ServerGone,
        Step::Descriptors,
        Step::WorkingDir,
        Step::MountPrivate,
        Step::MountRoot,
        Step::MountBind,
        Step::BoundPathChanged,
        Step::MountProc,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::EnterWorkspace,
        Step::WorkspaceChanged,
        Step::Landlock,
        Step::Seccomp,
        Step::Exec,
    ];

    pub fn from_code(code: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == code)
    }

    /// What the step does, for the error the caller sees.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Stdio => "connecting the run's standard streams",
            Step::Signals => "resetting signal handling",
            Step::Session => "starting a new session",
            Step::Cgroup => "joining the run's cgroup",
            Step::Limits => "setting resource limits",
            Step::NoNewPrivs => "setting no-new-privileges",
            Step::DeathSignal => "setting the parent-death signal",
            Step::ServerGone => "checking the server is still there (it exited during the spawn)",
            Step::Descriptors => "closing inherited descriptors",
            Step::WorkingDir => "entering the workspace by its descriptor",
            Step::MountPrivate => "mount namespace, making mounts private",
            Step::MountRoot => "mount namespace, binding the skeleton",
            Step::MountBind => "mount namespace, binding a granted path",
            Step::BoundPathChanged => {
                "mount namespace, a granted directory was replaced while the run started"
            }
            Step::MountProc => "mount namespace, mounting the run's /proc",
            Step::PivotRoot => "mount namespace, pivot_root",
            Step::DetachOldRoot => "mount namespace, detaching the old root",
            Step::EnterWorkspace => "mount namespace, entering the working directory",
            Step::WorkspaceChanged => "the workspace was replaced while the run started",
            Step::Landlock => "applying the Landlock rules",
            Step::Seccomp => "applying the seccomp filter",
            Step::Exec => "executing terraform",
        }
    }
}

/// A failed step of the child's set-up and the errno it failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildError {
    pub step: Step,
    pub errno: i32,
}

impl ChildError {
    /// The failed step with the calling thread's errno.
    pub fn last(step: Step) -> ChildError {
        ChildError {
            step,
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        }
    }

    pub fn new(step: Step, errno: i32) -> ChildError {
        ChildError { step, errno }
    }

    /// The 8 bytes sent to the server.
    pub fn encode(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        b[4..].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    pub fn decode(b: [u8; 8]) -> ChildError {
        let step = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let errno = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        ChildError {
            step: Step::from_code(step).unwrap_or(Step::Exec),
            errno,
        }
    }
}

impl std::fmt::Display for ChildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.step.describe(),
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for ChildError {}

/// `r < 0` becomes the step's error.
pub fn check(r: libc::c_long, step: Step) -> Result<(), ChildError> {
    if r < 0 {
        Err(ChildError::last(step))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_survives_the_pipe() {
        for step in Step::ALL {
            let e = ChildError::new(step, libc::ENOENT);
            assert_eq!(ChildError::decode(e.encode()), e);
        }
        // Each code names one step.
        let mut codes: Vec<u32> = Step::ALL.iter().map(|s| *s as u32).collect();
        codes.dedup();
        assert_eq!(codes.len(), Step::ALL.len());
        assert_eq!(Step::from_code(Step::Exec as u32 + 1), None);
    }
}
