//! Landlock rules for one run: what terraform may read, write, execute and connect to.
//!
//! Built in the server (it opens the paths), enforced in the child just before exec. Paths that
//! do not exist on this system (say `/lib32`) are skipped; every path the run itself needs (the
//! workspace, the run dir, terraform) must exist.

use std::path::{Path, PathBuf};

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

/// What one run may touch, besides the system paths above.
#[derive(Debug, Clone, Default)]
pub struct RunAccess {
    /// Read, write, create, delete and execute: the workspace and the run's private dir.
    pub read_write: Vec<PathBuf>,
    /// Read and execute: terraform's own directory, the plugin cache.
    pub read_exec: Vec<PathBuf>,
    /// Read only: configured extra paths, a saved plan being shown.
    pub read_only: Vec<PathBuf>,
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

    let mut rules: Vec<PathBeneath<PathFd>> = Vec::new();
    let mut add = |path: &Path,
                   rights: landlock::BitFlags<AccessFs>,
                   required: bool|
     -> Result<(), AccessError> {
        if let Some(fd) = open(path, required)? {
            // A rule on a file may only carry file rights; directories get the full set.
            let rights = if path.is_dir() {
                rights
            } else {
                rights & AccessFs::from_file(abi)
            };
            rules.push(PathBeneath::new(fd, rights));
        }
        Ok(())
    };
    for p in SYSTEM_READ_EXEC {
        add(Path::new(p), read_exec, false)?;
    }
    for p in SYSTEM_READ {
        add(Path::new(p), read, false)?;
    }
    for p in SYSTEM_READ_WRITE {
        add(Path::new(p), file_rw, false)?;
    }
    for p in &access.read_exec {
        add(p, read_exec, true)?;
    }
    for p in access.read_only.iter().chain(extra_read) {
        add(p, read, true)?;
    }
    for p in &access.read_write {
        add(p, all, true)?;
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
