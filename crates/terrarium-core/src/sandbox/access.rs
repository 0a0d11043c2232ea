//! Landlock rules for one run: what terraform may read, write, execute and connect to.
//!
//! Built in the server (it opens the paths), enforced in the child just before exec. Paths that
//! do not exist on this system (say `/lib32`) are skipped; every path the run itself needs (the
//! workspace, the run dir, terraform) must exist.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope,
};

/// The Landlock ABI whose features Terrarium uses: filesystem (with truncate and ioctl on
/// devices), TCP bind/connect (v4) and signal/abstract-socket scoping (v6).
pub const WANTED_ABI: ABI = ABI::V6;

/// System locations terraform and `local-exec` commands may read and execute.
pub const SYSTEM_READ_EXEC: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc/alternatives",
];

/// System files that are read but never executed: certificates, name service, time zone.
pub const SYSTEM_READ: &[&str] = &[
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/mime.types",
    "/proc",
    "/sys/kernel/mm/transparent_hugepage",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];

/// Device files that are written too.
pub const SYSTEM_READ_WRITE: &[&str] = &["/dev/null", "/dev/full"];

/// A place a run is granted: named by path (system and server-owned locations, which workspace
/// content cannot rename), or held by descriptor (a workspace or a fetched tree: resolved once
/// by `workspace`, never by name again, so the rule covers the directory that was checked).
#[derive(Debug, Clone)]
pub enum Grant {
    Path(PathBuf),
    Held {
        fd: Arc<OwnedFd>,
        /// Where it was when resolved: where the run sees it (mount namespace) and messages.
        path: PathBuf,
    },
}

impl Grant {
    pub fn path(&self) -> &Path {
        match self {
            Grant::Path(p) | Grant::Held { path: p, .. } => p,
        }
    }

    fn is_dir(&self) -> bool {
        match self {
            Grant::Path(p) => p.is_dir(),
            Grant::Held { fd, .. } => nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| {
                nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                    & nix::sys::stat::SFlag::S_IFMT
                    == nix::sys::stat::SFlag::S_IFDIR
            }),
        }
    }
}

impl From<PathBuf> for Grant {
    fn from(p: PathBuf) -> Grant {
        Grant::Path(p)
    }
}

/// A Landlock rule's descriptor: opened here by path, or the held one.
enum RuleFd {
    Opened(PathFd),
    Held(Arc<OwnedFd>),
}

impl AsFd for RuleFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            RuleFd::Opened(f) => f.as_fd(),
            RuleFd::Held(f) => f.as_fd(),
        }
    }
}

/// What one run may touch, besides the system paths above.
#[derive(Debug, Clone, Default)]
pub struct RunAccess {
    /// Read, write, create, delete and execute: the workspace and the run's private dir.
    pub read_write: Vec<Grant>,
    /// Read and execute: terraform's own directory, the plugin cache.
    pub read_exec: Vec<Grant>,
    /// Read only: configured extra paths, a fetched repository's tree.
    pub read_only: Vec<Grant>,
    /// TCP ports the run may connect to; empty means no TCP at all. Binding is never allowed.
    pub connect_ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("Landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("Landlock: cannot open {path}: {message}")]
    Path { path: PathBuf, message: String },
}

fn open(path: &Path, required: bool) -> Result<Option<PathFd>, AccessError> {
    match PathFd::new(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(_) if !required && !path.exists() => Ok(None),
        Err(e) => Err(AccessError::Path {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Builds the ruleset. `strict` makes every wanted feature a hard requirement.
pub fn ruleset(
    access: &RunAccess,
    extra_read: &[PathBuf],
    strict: bool,
) -> Result<RulesetCreated, AccessError> {
    let abi = WANTED_ABI;
    let level = if strict {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let all = AccessFs::from_all(abi);
    let read_exec = AccessFs::from_read(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let file_rw = AccessFs::ReadFile | AccessFs::WriteFile;

    let mut rules: Vec<PathBeneath<RuleFd>> = Vec::new();
    let mut add = |grant: &Grant,
                   rights: landlock::BitFlags<AccessFs>,
                   required: bool|
     -> Result<(), AccessError> {
        let fd = match grant {
            Grant::Path(path) => open(path, required)?.map(RuleFd::Opened),
            Grant::Held { fd, .. } => Some(RuleFd::Held(fd.clone())),
        };
        if let Some(fd) = fd {
            // A rule on a file may only carry file rights; directories get the full set.
            let rights = if grant.is_dir() {
                rights
            } else {
                rights & AccessFs::from_file(abi)
            };
            rules.push(PathBeneath::new(fd, rights));
        }
        Ok(())
    };
    let system = |p: &&str| Grant::Path(PathBuf::from(p));
    for g in SYSTEM_READ_EXEC.iter().map(system) {
        add(&g, read_exec, false)?;
    }
    for g in SYSTEM_READ.iter().map(system) {
        add(&g, read, false)?;
    }
    for g in SYSTEM_READ_WRITE.iter().map(system) {
        add(&g, file_rw, false)?;
    }
    for g in &access.read_exec {
        add(g, read_exec, true)?;
    }
    for g in &access.read_only {
        add(g, read, true)?;
    }
    for p in extra_read {
        add(&Grant::Path(p.clone()), read, true)?;
    }
    for g in &access.read_write {
        add(g, all, true)?;
    }

    let rs = Ruleset::default()
        .set_compatibility(level)
        .handle_access(all)?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?
        .add_rules(rules.into_iter().map(Ok::<_, AccessError>))?
        .add_rules(
            access
                .connect_ports
                .iter()
                .map(|port| Ok::<_, AccessError>(NetPort::new(*port, AccessNet::ConnectTcp))),
        )?;
    Ok(rs)
}
