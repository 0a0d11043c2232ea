//! Which kernel sandbox layers this machine can apply, and the per-run set-up for the child.
//!
//! Layers: Landlock (filesystem, TCP, signal scoping), seccomp (a syscall deny list), and
//! namespaces (a user + PID namespace per run, so every descendant dies with terraform; an empty
//! network namespace for actions that need no network). The mode decides what happens when a
//! layer is missing: `strict` refuses to run, `best-effort` runs and warns, `off` applies none.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use seccompiler::BpfProgram;
use serde::Serialize;

use super::access::{self, Grant, RunAccess};
use super::mounts::MountPlan;
use super::seccomp;

/// How the kernel sandbox layers (Landlock, seccomp, namespaces) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Every layer must be applied, or terraform does not run.
    Strict,
    /// Layers this kernel cannot apply are skipped, with a warning in each result.
    BestEffort,
    /// No kernel layers (the process-level limits still apply). Loud.
    Off,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Strict => "strict",
            SandboxMode::BestEffort => "best-effort",
            SandboxMode::Off => "off",
        }
    }
}

/// A sandbox layer an operator can name (`TERRARIUM_SANDBOX_DISABLE`). The per-run cgroup is
/// teardown hygiene rather than confinement, but it can be turned off the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Landlock,
    Seccomp,
    Namespaces,
    Cgroup,
}

impl LayerKind {
    pub const ALL: [LayerKind; 4] = [
        LayerKind::Landlock,
        LayerKind::Seccomp,
        LayerKind::Namespaces,
        LayerKind::Cgroup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Landlock => "landlock",
            LayerKind::Seccomp => "seccomp",
            LayerKind::Namespaces => "namespaces",
            LayerKind::Cgroup => "cgroup",
        }
    }
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A layer name that is not one of [`LayerKind::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown layer {0:?}; the layers are landlock, seccomp, namespaces, cgroup")]
pub struct UnknownLayer(pub String);

impl std::str::FromStr for LayerKind {
    type Err = UnknownLayer;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LayerKind::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLayer(s.to_string()))
    }
}

impl Serialize for LayerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the probe found for one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    pub name: LayerKind,
    pub available: bool,
    /// Turned off by the operator (`TERRARIUM_SANDBOX_DISABLE`): not applied, and not a reason
    /// for strict mode to refuse.
    pub disabled: bool,
    pub detail: String,
}

impl Layer {
    /// "enforced", "disabled", "unavailable" or "off", as results and probes report it.
    pub fn state(&self, mode: SandboxMode) -> &'static str {
        match (mode, self.disabled, self.available) {
            (SandboxMode::Off, _, _) => "off",
            (_, true, _) => "disabled",
            (_, false, true) => "enforced",
            (_, false, false) => "unavailable",
        }
    }
}

pub use super::setup::{ChildSetup, Limits};

/// Where and how one run starts, besides its limits.
#[derive(Debug)]
pub struct RunPlace<'a> {
    /// What it may touch.
    pub access: RunAccess,
    /// Whether the action may use the network.
    pub network: bool,
    /// Its working directory.
    pub cwd: &'a Grant,
    /// A path that does not exist yet, in the server's state dir, for the mount skeleton.
    pub scratch: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the {layer} sandbox layer cannot be applied on this system ({detail}); terraform was not run. \
         Set TERRARIUM_SANDBOX=best-effort to run without it"
    )]
    Unavailable { layer: LayerKind, detail: String },
    #[error("sandbox set-up failed: {0}")]
    Setup(String),
}

pub struct KernelSandbox {
    mode: SandboxMode,
    layers: Vec<Layer>,
    seccomp: Option<Arc<Vec<BpfProgram>>>,
    connect_ports: Vec<u16>,
    extra_read: Vec<PathBuf>,
    /// Per-run cgroups for teardown, or why there are none.
    cgroups: Result<super::cgroup::RunCgroups, super::cgroup::CgroupUnavailable>,
    /// The kernel's Landlock ABI: below the wanted one, best-effort still applies what it has.
    landlock_abi: i32,
}

use LayerKind::{Landlock as LANDLOCK, Namespaces as NAMESPACES, Seccomp as SECCOMP};

impl KernelSandbox {
    /// Probes this machine's layers; `disabled` are the ones the operator turned off,
    /// `connect_ports` the TCP ports runs that need the network may connect to, `read_paths`
    /// extra paths every run may read.
    pub fn new(
        mode: SandboxMode,
        disabled: &[LayerKind],
        connect_ports: Vec<u16>,
        read_paths: Vec<PathBuf>,
    ) -> KernelSandbox {
        let facts = kernel_facts();
        let abi = facts.landlock_abi;
        let landlock = Layer {
            disabled: false,
            name: LANDLOCK,
            available: abi >= access::WANTED_ABI as i32,
            detail: if abi > 0 {
                format!(
                    "ABI {abi} (filesystem, TCP and signal rules need ABI {})",
                    access::WANTED_ABI as i32
                )
            } else {
                "not supported or not enabled in this kernel".into()
            },
        };
        let filters = facts.seccomp.clone();
        let seccomp_layer = Layer {
            disabled: false,
            name: SECCOMP,
            available: filters.is_ok(),
            detail: match &filters {
                Ok(_) => format!(
                    "deny list of {} syscalls",
                    seccomp::denied_names().len() + 1
                ),
                Err(e) => e.clone(),
            },
        };
        let ns = facts.namespaces.clone();
        let ns_layer = Layer {
            disabled: false,
            name: NAMESPACES,
            available: ns.is_ok(),
            detail: match &ns {
                Ok(()) => {
                    "user + PID + mount namespace per run (the run sees only what it is granted); \
                     empty network namespace for offline actions"
                        .into()
                }
                Err(e) => format!("unshare failed: {e}"),
            },
        };
        let mut layers = vec![landlock, seccomp_layer, ns_layer];
        for l in &mut layers {
            l.disabled = disabled.contains(&l.name);
        }
        KernelSandbox {
            mode,
            layers,
            seccomp: filters.ok(),
            connect_ports,
            extra_read: read_paths,
            landlock_abi: abi,
            cgroups: if disabled.contains(&LayerKind::Cgroup) {
                Err(super::cgroup::CgroupUnavailable::Disabled)
            } else {
                super::cgroup::RunCgroups::open()
            },
        }
    }

    /// How a run's leftover processes are ended: by its cgroup where the server may create
    /// cgroups, else by process group, PID namespace and the subreaper sweep.
    pub fn teardown(&self) -> String {
        match &self.cgroups {
            Ok(c) => format!("cgroup per run under {} (cgroup.kill)", c.path().display()),
            Err(why) => format!("process group, PID namespace and subreaper sweep ({why})"),
        }
    }

    pub fn mode(&self) -> SandboxMode {
        self.mode
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    fn layer(&self, name: LayerKind) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    fn usable(&self, name: LayerKind) -> bool {
        self.mode != SandboxMode::Off
            && self.layer(name).is_some_and(|l| l.available && !l.disabled)
    }

    /// Problems to report at start-up and in results: missing layers, or the sandbox being off.
    pub fn warnings(&self) -> Vec<String> {
        match self.mode {
            SandboxMode::Off => vec![
                "TERRARIUM_SANDBOX=off: terraform runs without Landlock, seccomp or namespaces; a workspace's \
                 configuration can read, write and connect wherever the server's user can"
                    .into(),
            ],
            _ => self
                .layers
                .iter()
                .filter(|l| !l.available || l.disabled)
                .map(|l| {
                    if l.disabled {
                        format!("sandbox layer {} is disabled by TERRARIUM_SANDBOX_DISABLE", l.name)
                    } else {
                        format!("sandbox layer {} is not applied: {}", l.name, l.detail)
                    }
                })
                .collect(),
        }
    }

    /// In strict mode, the first layer that cannot be applied.
    pub fn refusal(&self) -> Option<SandboxError> {
        if self.mode != SandboxMode::Strict {
            return None;
        }
        self.layers
            .iter()
            .find(|l| !l.available)
            .map(|l| SandboxError::Unavailable {
                layer: l.name,
                detail: l.detail.clone(),
            })
    }

    /// The child set-up for one run.
    pub fn setup(&self, limits: Limits, place: RunPlace<'_>) -> Result<ChildSetup, SandboxError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let RunPlace {
            access: mut run,
            network,
            cwd,
            scratch,
        } = place;
        let mut setup = ChildSetup::plain(limits);
        // Teardown hygiene, like the process group: in every mode.
        if let Ok(cgroups) = &self.cgroups {
            match cgroups.create() {
                Ok(cg) => setup.cgroup = Some(cg),
                Err(e) => tracing::warn!(error = %e, "cannot create the run's cgroup"),
            }
        }
        setup.cwd = Some(match cwd {
            Grant::Held { fd, .. } => fd.clone(),
            Grant::Path(p) => Arc::new(
                nix::fcntl::open(
                    p,
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| SandboxError::Setup(format!("{}: {e}", p.display())))?,
            ),
        });
        if self.mode == SandboxMode::Off {
            return Ok(setup);
        }
        run.connect_ports = if network {
            self.connect_ports.clone()
        } else {
            Vec::new()
        };
        // Best-effort on an older kernel still gets the Landlock rules its ABI can enforce.
        let partial = self.mode == SandboxMode::BestEffort
            && self.landlock_abi > 0
            && self.layer(LANDLOCK).is_some_and(|l| !l.disabled);
        if self.usable(LANDLOCK) || partial {
            let strict = self.mode == SandboxMode::Strict;
            match access::ruleset(&run, &self.extra_read, strict) {
                Ok(rs) => match Option::<OwnedFd>::from(rs) {
                    Some(fd) => setup.landlock = Some(fd),
                    // The crate found nothing to enforce on this kernel.
                    None if strict => {
                        return Err(SandboxError::Setup(
                            "the Landlock ruleset has no descriptor".into(),
                        ));
                    }
                    None => {}
                },
                Err(e) if strict => return Err(SandboxError::Setup(e.to_string())),
                Err(e) => {
                    tracing::warn!(error = %e, "Landlock rules could not be built; running without them")
                }
            }
        }
        if self.usable(SECCOMP) {
            setup.seccomp = self.seccomp.clone();
        }
        if self.usable(NAMESPACES) {
            setup.namespaces = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS;
            if !network {
                setup.namespaces |= libc::CLONE_NEWNET;
            }
            let plan = MountPlan::prepare(scratch, &run, &self.extra_read, cwd).map_err(|e| {
                let _ = std::fs::remove_dir_all(scratch);
                SandboxError::Setup(format!("preparing the run's mount namespace: {e}"))
            })?;
            setup.mounts = Some(plan);
        }
        Ok(setup)
    }
}

/// The running kernel's Landlock ABI version (0 or less when unsupported).
fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query: no ruleset, size 0, the VERSION flag.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        ) as i32
    }
}

fn seccomp_supported() -> bool {
    // SAFETY: a query with no side effects.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Why the namespaces layer cannot be had on this machine.
#[derive(Debug, thiserror::Error)]
enum NamespaceProbeError {
    #[error("{0}")]
    Os(std::io::Error),
    #[error(
        "a /proc of the run's own PID namespace cannot be mounted here (a container that masks /proc?)"
    )]
    NoOwnProc,
    #[error("probe process was killed")]
    Killed,
}

/// What this kernel offers the sandbox. It does not change while the process runs, so it is
/// found once and every [`KernelSandbox`] of the process shares it.
struct KernelFacts {
    landlock_abi: i32,
    seccomp: Result<Arc<Vec<BpfProgram>>, String>,
    namespaces: Result<(), String>,
}

static KERNEL_FACTS: OnceLock<KernelFacts> = OnceLock::new();

fn kernel_facts() -> &'static KernelFacts {
    KERNEL_FACTS.get_or_init(|| KernelFacts {
        landlock_abi: landlock_abi(),
        seccomp: if seccomp_supported() {
            seccomp::build().map(Arc::new).map_err(|e| e.to_string())
        } else {
            Err("not supported by this kernel".into())
        },
        namespaces: probe_namespaces().map_err(|e| e.to_string()),
    })
}

/// Starts probing the kernel (~3 ms: a child process that creates namespaces, and the seccomp
/// filter's compile) in the background, so that a binary overlaps it with the rest of its
/// start-up: called first, while the process is small (its fork copies little) and has its
/// configuration still to load. [`KernelSandbox::new`] waits for it, or probes itself when
/// nobody started it.
pub fn start_probe() {
    if KERNEL_FACTS.get().is_none() {
        let _ = std::thread::Builder::new()
            .name("sandbox-probe".into())
            .spawn(kernel_facts);
    }
}

/// Forks a child that tries the run's namespaces — user, PID, mount and network — and reports
/// the result in its exit code. Most of its cost is the kernel making the network namespace;
/// binaries overlap it with their start-up (see [`start_probe`]).
fn probe_namespaces() -> Result<(), NamespaceProbeError> {
    // Over the probe's own view of /proc, in its private mount namespace: nothing is created
    // on disk (a probe cut short by an early exit leaves nothing behind), and the kernel's
    // "is a procfs fully visible here" check is the same wherever the new one goes.
    probe_in_child(c"/proc")
}

/// Forks a child that does what a run's set-up does — unshare the namespaces, make mounts
/// private, fork into the PID namespace and mount a procfs there — and reports in its exit code
/// (0, or the errno of the step that failed; 1000 + errno for the procfs).
fn probe_in_child(target: &std::ffi::CStr) -> Result<(), NamespaceProbeError> {
    // SAFETY: the children only make async-signal-safe syscalls and _exit.
    unsafe {
        match libc::fork() {
            -1 => Err(NamespaceProbeError::Os(std::io::Error::last_os_error())),
            0 => {
                let flags = libc::CLONE_NEWUSER
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWNS;
                let private = libc::MS_REC | libc::MS_PRIVATE;
                if libc::unshare(flags) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        private,
                        std::ptr::null(),
                    ) != 0
                {
                    libc::_exit(*libc::__errno_location() & 0xff)
                }
                match libc::fork() {
                    -1 => libc::_exit(*libc::__errno_location() & 0xff),
                    0 => {
                        let r = libc::mount(
                            c"proc".as_ptr(),
                            target.as_ptr(),
                            c"proc".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            std::ptr::null(),
                        );
                        // 255: the procfs could not be mounted.
                        libc::_exit(if r == 0 { 0 } else { 255 })
                    }
                    pid => {
                        let mut status = 0;
                        libc::waitpid(pid, &mut status, 0);
                        libc::_exit(if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else {
                            254
                        })
                    }
                }
            }
            pid => {
                let mut status = 0;
                while libc::waitpid(pid, &mut status, 0) < 0 {
                    if *libc::__errno_location() != libc::EINTR {
                        return Err(NamespaceProbeError::Os(std::io::Error::last_os_error()));
                    }
                }
                match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
                    Some(0) => Ok(()),
                    Some(255) => Err(NamespaceProbeError::NoOwnProc),
                    Some(errno) => Err(NamespaceProbeError::Os(std::io::Error::from_raw_os_error(
                        errno,
                    ))),
                    None => Err(NamespaceProbeError::Killed),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(mode: SandboxMode, landlock: bool) -> KernelSandbox {
        let layer = |name, available| Layer {
            name,
            available,
            disabled: false,
            detail: "test".into(),
        };
        KernelSandbox {
            mode,
            layers: vec![
                layer(LANDLOCK, landlock),
                layer(SECCOMP, true),
                layer(NAMESPACES, true),
            ],
            seccomp: None,
            connect_ports: vec![443],
            extra_read: Vec::new(),
            cgroups: Err(crate::sandbox::cgroup::CgroupUnavailable::NotProbed),
            landlock_abi: if landlock {
                access::WANTED_ABI as i32
            } else {
                0
            },
        }
    }

    fn place(dir: &tempfile::TempDir, network: bool) -> RunPlace<'_> {
        // Leaked for the test's lifetime: the place borrows them.
        let cwd: &'static Grant = Box::leak(Box::new(Grant::Path(dir.path().to_path_buf())));
        let scratch: &'static Path = Box::leak(dir.path().join("skeleton").into_boxed_path());
        RunPlace {
            access: RunAccess::default(),
            network,
            cwd,
            scratch,
        }
    }

    #[test]
    fn strict_refuses_when_a_layer_is_missing() {
        let s = sandbox(SandboxMode::Strict, false);
        let dir = tempfile::tempdir().unwrap();
        let err = s.setup(Limits::default(), place(&dir, false)).unwrap_err();
        let m = err.to_string();
        assert!(
            m.contains("landlock") && m.contains("TERRARIUM_SANDBOX=best-effort"),
            "{m}"
        );
        assert!(s.refusal().is_some());
    }

    #[test]
    fn best_effort_on_an_older_landlock_still_applies_what_it_has() {
        // An ABI below the wanted one (say 4, a 6.8 kernel) is "unavailable" for strict mode,
        // but best-effort still builds the ruleset, with the features that ABI has.
        let mut s = sandbox(SandboxMode::BestEffort, false);
        s.landlock_abi = 4;
        let dir = tempfile::tempdir().unwrap();
        let setup = s.setup(Limits::default(), place(&dir, false)).unwrap();
        // The ruleset has a descriptor where this kernel has Landlock at all.
        assert_eq!(setup.landlock.is_some(), landlock_abi() > 0);
        let mut strict = sandbox(SandboxMode::Strict, false);
        strict.landlock_abi = 4;
        assert!(strict.setup(Limits::default(), place(&dir, false)).is_err());
    }

    #[test]
    fn best_effort_runs_without_the_missing_layer_and_warns() {
        let s = sandbox(SandboxMode::BestEffort, false);
        let dir = tempfile::tempdir().unwrap();
        let setup = s.setup(Limits::default(), place(&dir, false)).unwrap();
        assert!(setup.landlock.is_none());
        assert_eq!(
            setup.namespaces,
            libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWNET
        );
        assert!(setup.mounts.is_some() && dir.path().join("skeleton/usr").is_dir());
        assert_eq!(s.warnings().len(), 1);
        assert!(s.warnings()[0].contains("landlock"));
    }

    #[test]
    fn network_actions_keep_the_host_network() {
        let s = sandbox(SandboxMode::BestEffort, false);
        let dir = tempfile::tempdir().unwrap();
        let setup = s.setup(Limits::default(), place(&dir, true)).unwrap();
        assert_eq!(setup.namespaces & libc::CLONE_NEWNET, 0);
    }

    #[test]
    fn off_applies_nothing_and_says_so() {
        let s = sandbox(SandboxMode::Off, true);
        let dir = tempfile::tempdir().unwrap();
        let setup = s.setup(Limits::default(), place(&dir, false)).unwrap();
        assert!(setup.landlock.is_none() && setup.seccomp.is_none() && setup.namespaces == 0);
        assert!(s.warnings()[0].contains("TERRARIUM_SANDBOX=off"));
    }

    #[test]
    fn this_kernel_is_probed() {
        // Whatever the machine, the probe answers for every layer with a reason.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        let s = KernelSandbox::new(SandboxMode::BestEffort, &[], vec![443], Vec::new());
        assert_eq!(s.layers().len(), 3);
        assert!(s.layers().iter().all(|l| !l.detail.is_empty()));
    }
}
