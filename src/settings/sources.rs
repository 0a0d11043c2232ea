//! Where configuration may come from — and the rule that it never comes from workspace content.
//!
//! The code Terrarium runs is hostile: a pull request's checkout, a fetched repository, a team's
//! directory. Before this module, `.env` (even one in a parent directory) and `terrarium.toml`
//! were read from the current directory, which in CI *is* the pull request's checkout: a pull
//! request could turn the sandbox off, pass the GitHub App key through to terraform, or point the
//! GitHub API at itself and receive a signed App JWT.
//!
//! The rule, for every subcommand that loads configuration (`serve`, `ci plan`,
//! `check-config`):
//! - Explicit sources are the production way: `--config FILE` (or `TERRARIUM_CONFIG`) for TOML,
//!   `--env-file FILE` (or `TERRARIUM_ENV_FILE`) for `KEY=value` lines. Giving either turns the
//!   search of the current directory off.
//! - Without them, `terrarium.toml` and `.env` in the current directory (only there, no parent
//!   search) are read for compatibility — but only when the current directory lies outside
//!   every *untrusted tree*: the workspace root, `GITHUB_WORKSPACE`, and for `ci` the current
//!   directory itself when no root is set (`ci plan` then plans it). If one of those files sits
//!   inside such a tree, start-up is refused, naming the file and the safe alternative: its
//!   presence is either an attack or a deployment that depended on reading workspace content.
//! - Every file the configuration names (`--config`, `--env-file`, every `TERRARIUM_*_FILE`, the
//!   policy file) is canonicalized and refused when it lies inside an untrusted tree — checked
//!   before anything is read from the files, and again against the final workspace root.
//!
//! Nothing from a refused file is applied: values from the env file are collected here and only
//! put into the process environment by `main` once every check passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Settings;
use super::defs::{self, PREFIX};

/// The implicit files looked for in the current directory, in the order they are reported.
pub(crate) const IMPLICIT_ENV_FILE: &str = ".env";
pub(crate) const IMPLICIT_CONFIG_FILE: &str = "terrarium.toml";

#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(
        "refusing to start: {file} would be read as configuration, but it lies inside {what} \
         ({tree}), whose content is the code being run and may be hostile. Configuration never \
         comes from workspace content: set the values in the environment, or put them in a file \
         outside {what} and pass --config FILE (TOML) or --env-file FILE (KEY=value lines); when \
         either is given, the current directory is not searched"
    )]
    Untrusted {
        file: PathBuf,
        what: &'static str,
        tree: PathBuf,
    },
    #[error("{option} {file}: {message}")]
    Unreadable {
        option: &'static str,
        file: PathBuf,
        message: String,
    },
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--env-file FILE`.
    pub env_file: Option<PathBuf>,
    /// `ci plan`: without a configured root, the current directory is the checkout.
    pub ci: bool,
}

/// The configuration sources, checked and read.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The environment the configuration is loaded from: the process environment, the env
    /// file's values under it, and `TERRARIUM_CONFIG` naming the TOML file to read (if any).
    pub env: BTreeMap<String, String>,
    /// Values below every layer (`ci plan`: the checkout is the workspace root unless one is
    /// configured), by environment name.
    pub fallbacks: BTreeMap<String, String>,
    /// The configuration files read, canonical, for the check against the final root.
    files: Vec<PathBuf>,
    /// The current directory, canonical, when an implicit file was read from it.
    implicit_dir: Option<PathBuf>,
    untrusted: Vec<(&'static str, PathBuf)>,
    cwd: PathBuf,
}

/// A directory whose content may be hostile, canonical when it exists.
fn tree(p: &Path, cwd: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    std::fs::canonicalize(&abs).unwrap_or(abs)
}

/// The canonical form of `p`; for a path that does not exist yet, its nearest existing
/// ancestor's canonical form with the rest appended (a file that is to be created inside the
/// root is as dangerous as one that exists).
fn canonical(p: &Path, cwd: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    if let Ok(c) = std::fs::canonicalize(&abs) {
        return c;
    }
    let mut rest = Vec::new();
    let mut probe = abs.clone();
    while !probe.exists() {
        match (probe.file_name().map(|n| n.to_os_string()), probe.pop()) {
            (Some(name), true) => rest.push(name),
            _ => return abs,
        }
    }
    let mut out = std::fs::canonicalize(&probe).unwrap_or(probe);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

fn inside<'a>(
    p: &Path,
    untrusted: &'a [(&'static str, PathBuf)],
) -> Option<&'a (&'static str, PathBuf)> {
    untrusted.iter().find(|(_, t)| p.starts_with(t))
}

/// The untrusted trees known before any configuration file is read.
fn untrusted_trees(
    env: &BTreeMap<String, String>,
    cwd: &Path,
    ci: bool,
) -> Vec<(&'static str, PathBuf)> {
    let mut trees = Vec::new();
    let root = env
        .get(defs::WORKSPACE_ROOT.name)
        .cloned()
        .or_else(|| {
            env.get(&format!("{}_FILE", defs::WORKSPACE_ROOT.name))
                .and_then(|f| std::fs::read_to_string(f).ok())
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        })
        .filter(|s| !s.is_empty());
    if let Some(root) = &root {
        trees.push(("the workspace root", tree(Path::new(root), cwd)));
    }
    let gh = env.get("GITHUB_WORKSPACE").filter(|s| !s.is_empty());
    if let Some(gh) = gh {
        trees.push((
            "the CI checkout (GITHUB_WORKSPACE)",
            tree(Path::new(gh), cwd),
        ));
    }
    if ci && root.is_none() && gh.is_none() {
        trees.push((
            "the CI checkout (the current directory, which `ci plan` plans)",
            tree(cwd, cwd),
        ));
    }
    trees
}

/// Every `TERRARIUM_*_FILE` value: files the server reads (or writes) as configuration.
fn named_files(env: &BTreeMap<String, String>) -> Vec<(String, PathBuf)> {
    env.iter()
        .filter(|(k, v)| k.starts_with(PREFIX) && k.ends_with("_FILE") && !v.is_empty())
        .map(|(k, v)| (k.clone(), PathBuf::from(v)))
        .collect()
}

impl Prepared {
    /// The sources of this process: its environment and current directory.
    pub(crate) fn from_process(req: &Request) -> Result<Prepared, SourceError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let process_env: BTreeMap<String, String> = std::env::vars().collect();
        Prepared::new(req, &process_env, &cwd)
    }

    /// The current directory (canonical): relative paths in settings start here.
    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Decides and checks the sources, reads the env file; nothing is applied yet.
    pub(crate) fn new(
        req: &Request,
        process_env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<Prepared, SourceError> {
        let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        let mut untrusted = untrusted_trees(process_env, &cwd, req.ci);
        let refuse = |file: &Path, untrusted: &[(&'static str, PathBuf)]| match inside(
            &canonical(file, &cwd),
            untrusted,
        ) {
            Some((what, tree)) => Err(SourceError::Untrusted {
                file: file.to_path_buf(),
                what,
                tree: tree.clone(),
            }),
            None => Ok(()),
        };
        let explicit_env = req.env_file.clone().or_else(|| {
            process_env
                .get(defs::ENV_FILE.name)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        });
        let explicit_config = req.config_file.clone().or_else(|| {
            process_env
                .get(defs::CONFIG.name)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        });
        let explicit = explicit_env.is_some() || explicit_config.is_some();

        // The implicit files: looked at (never read) first, so that one inside an untrusted
        // tree stops the start-up before anything of it is used.
        let mut implicit_dir = None;
        let (env_file, env_option) = match explicit_env {
            Some(f) => (Some(f), "--env-file"),
            None => (None, IMPLICIT_ENV_FILE),
        };
        let mut env_file = env_file;
        let mut implicit_config = None;
        if !explicit {
            // Earlier versions also read a `.env` from any parent directory: one between the
            // current directory and the top of an untrusted tree is refused too, not ignored.
            if let Some((what, tree)) = inside(&cwd, &untrusted) {
                let mut dir = cwd.parent();
                while let Some(d) = dir.filter(|d| d.starts_with(tree)) {
                    let f = d.join(IMPLICIT_ENV_FILE);
                    if std::fs::symlink_metadata(&f).is_ok() {
                        return Err(SourceError::Untrusted {
                            file: f,
                            what,
                            tree: tree.clone(),
                        });
                    }
                    dir = d.parent();
                }
            }
            for name in [IMPLICIT_ENV_FILE, IMPLICIT_CONFIG_FILE] {
                let f = cwd.join(name);
                if std::fs::symlink_metadata(&f).is_err() {
                    continue;
                }
                if let Some((what, tree)) = inside(&cwd, &untrusted) {
                    return Err(SourceError::Untrusted {
                        file: f,
                        what,
                        tree: tree.clone(),
                    });
                }
                refuse(&f, &untrusted)?;
                implicit_dir = Some(cwd.clone());
                if name == IMPLICIT_ENV_FILE {
                    env_file = Some(f);
                } else {
                    implicit_config = Some(f);
                }
            }
        }

        let mut files = Vec::new();
        let mut env = process_env.clone();
        if let Some(f) = &env_file {
            refuse(f, &untrusted)?;
            let canon = canonical(f, &cwd);
            let unreadable = |message: String| SourceError::Unreadable {
                option: env_option,
                file: f.clone(),
                message,
            };
            let iter = dotenvy::from_path_iter(&canon).map_err(|e| unreadable(e.to_string()))?;
            for item in iter {
                // Never the offending line: it may hold a credential.
                let (k, v) = item.map_err(|e| {
                    unreadable(match e {
                        dotenvy::Error::LineParse(_, at) => {
                            format!("a line could not be parsed (at character {at})")
                        }
                        other => other.to_string(),
                    })
                })?;
                // The environment wins over the file.
                env.entry(k).or_insert(v);
            }
            // Recorded for `check-config` (the loader shows it as TERRARIUM_ENV_FILE).
            env.insert(defs::ENV_FILE.name.into(), canon.display().to_string());
            files.push(canon);
            // The env file may name the root; its tree is untrusted from now on too.
            for t in untrusted_trees(&env, &cwd, req.ci) {
                if !untrusted.iter().any(|(_, u)| *u == t.1) {
                    untrusted.push(t);
                }
            }
        }
        let config = explicit_config
            .or_else(|| {
                env.get(defs::CONFIG.name)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .or(implicit_config);
        if let Some(c) = config {
            refuse(&c, &untrusted)?;
            let canon = canonical(&c, &cwd);
            if !canon.is_file() {
                return Err(SourceError::Unreadable {
                    option: "--config",
                    file: c,
                    message: "no such file".into(),
                });
            }
            env.insert(defs::CONFIG.name.into(), canon.display().to_string());
            files.push(canon);
        }
        for (name, f) in named_files(&env) {
            if name == format!("{}_FILE", defs::CONFIG.name) || name == defs::ENV_FILE.name {
                continue;
            }
            refuse(&f, &untrusted)?;
        }
        let mut fallbacks = BTreeMap::new();
        if req.ci {
            // In CI the code is the checkout: GitHub Actions names it, elsewhere it is here.
            let root = env
                .get("GITHUB_WORKSPACE")
                .cloned()
                .unwrap_or_else(|| cwd.display().to_string());
            fallbacks.insert(defs::WORKSPACE_ROOT.name.to_string(), root);
        }
        Ok(Prepared {
            env,
            fallbacks,
            files,
            implicit_dir,
            untrusted,
            cwd,
        })
    }

    /// The check against the configuration as loaded: no source and no file it names lies
    /// inside the final workspace root (which a configuration file may have set).
    pub(crate) fn check_loaded(&self, settings: &Settings) -> Result<(), SourceError> {
        let config = &settings.core;
        let mut untrusted = self.untrusted.clone();
        untrusted.push(("the workspace root", config.workspace_root.clone()));
        let cwd = &self.cwd;
        if let Some(dir) = &self.implicit_dir
            && let Some((what, tree)) = inside(dir, &untrusted)
        {
            let file = self.files.first().cloned().unwrap_or_else(|| dir.clone());
            return Err(SourceError::Untrusted {
                file,
                what,
                tree: tree.clone(),
            });
        }
        let mut named: Vec<PathBuf> = self.files.clone();
        named.extend(named_files(&self.env).into_iter().map(|(_, f)| f));
        named.extend(settings.named_files.iter().cloned());
        for f in named {
            if let Some((what, tree)) = inside(&canonical(&f, cwd), &untrusted) {
                return Err(SourceError::Untrusted {
                    file: f,
                    what,
                    tree: tree.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &Path)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect()
    }

    #[test]
    fn implicit_files_inside_the_root_or_checkout_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let sub = root.join("team");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(".env"), "TERRARIUM_SANDBOX=off\n").unwrap();
        let e = env(&[("TERRARIUM_WORKSPACE_ROOT", &root)]);
        let err = Prepared::new(&Request::default(), &e, &sub).unwrap_err();
        assert!(err.to_string().contains(".env"), "{err}");
        assert!(err.to_string().contains("--env-file"), "{err}");
        // A `.env` in a parent inside the root (old versions searched parents) is refused too.
        std::fs::remove_file(sub.join(".env")).unwrap();
        std::fs::write(root.join(".env"), "TERRARIUM_SANDBOX=off\n").unwrap();
        let err = Prepared::new(&Request::default(), &e, &sub).unwrap_err();
        assert!(
            err.to_string()
                .contains(&root.join(".env").display().to_string()),
            "{err}"
        );
        std::fs::remove_file(root.join(".env")).unwrap();

        // In CI without a root, the current directory is the checkout.
        let ci = Request {
            ci: true,
            ..Request::default()
        };
        std::fs::write(root.join("terrarium.toml"), "sandbox = \"off\"\n").unwrap();
        let err = Prepared::new(&ci, &BTreeMap::new(), &root).unwrap_err();
        assert!(err.to_string().contains("terrarium.toml"), "{err}");
        let gh = env(&[("GITHUB_WORKSPACE", &root)]);
        let err = Prepared::new(&Request::default(), &gh, &root).unwrap_err();
        assert!(err.to_string().contains("GITHUB_WORKSPACE"), "{err}");
    }

    #[test]
    fn implicit_files_outside_are_read_and_the_environment_wins() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(d.path().join(".env"), "A_X=file\nB_X=file\n").unwrap();
        let mut e = env(&[("TERRARIUM_WORKSPACE_ROOT", &root)]);
        e.insert("A_X".into(), "env".into());
        let p = Prepared::new(&Request::default(), &e, d.path()).unwrap();
        assert_eq!(p.env["A_X"], "env");
        assert_eq!(p.env["B_X"], "file");
    }

    #[test]
    fn explicit_files_are_checked_and_turn_the_search_off() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(".env"), "X=1\n").unwrap();
        let outside = d.path().join("terrarium.env");
        std::fs::write(&outside, "Y=2\n").unwrap();
        let e = env(&[("TERRARIUM_WORKSPACE_ROOT", &root)]);
        // An explicit file outside: the hostile `.env` in the current directory is not read.
        let req = Request {
            env_file: Some(outside.clone()),
            ..Request::default()
        };
        let p = Prepared::new(&req, &e, &root).unwrap();
        assert_eq!(p.env.get("Y").map(String::as_str), Some("2"));
        assert!(!p.env.contains_key("X"));
        // An explicit file inside the root, also through a symlink from outside: refused.
        let req = Request {
            config_file: Some(root.join(".env")),
            ..Request::default()
        };
        assert!(Prepared::new(&req, &e, d.path()).is_err());
        let link = d.path().join("link.toml");
        std::os::unix::fs::symlink(root.join(".env"), &link).unwrap();
        let req = Request {
            config_file: Some(link),
            ..Request::default()
        };
        assert!(Prepared::new(&req, &e, d.path()).is_err());
        // A secret file inside the root: refused.
        let mut e2 = e.clone();
        e2.insert(
            "TERRARIUM_GITHUB_PRIVATE_KEY_FILE".into(),
            root.join("key.pem").display().to_string(),
        );
        assert!(Prepared::new(&Request::default(), &e2, d.path()).is_err());
    }
}
