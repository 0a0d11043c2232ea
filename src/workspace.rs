//! Path confinement: a caller's relative path in, a canonical path inside the root out.
//!
//! Every path a caller gives passes through here before it reaches the file system or terraform.
//! The check is done on the canonical form (symlinks resolved), so a symlink inside the root that
//! points out of it is caught; the result is what the executor uses from then on.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkspaceError {
    #[error("{field}: must be a relative path (it is resolved against the workspace root)")]
    Absolute { field: String },
    #[error("{field}: contains a NUL or control character")]
    BadCharacter { field: String },
    #[error("{field}: must not be empty")]
    Empty { field: String },
    #[error("{field}: resolves outside the workspace root")]
    Escapes { field: String },
    #[error("{field}: no such directory in the workspace root")]
    NotFound { field: String },
    #[error("{field}: is not a directory")]
    NotADirectory { field: String },
    #[error("{field}: is not a regular file")]
    NotAFile { field: String },
}

impl WorkspaceError {
    /// The argument that was refused (`path`, `var_files/0`, ...), for the audit trail's
    /// `fields`; the value itself is never recorded.
    pub fn field(&self) -> &str {
        match self {
            WorkspaceError::Absolute { field }
            | WorkspaceError::BadCharacter { field }
            | WorkspaceError::Empty { field }
            | WorkspaceError::Escapes { field }
            | WorkspaceError::NotFound { field }
            | WorkspaceError::NotADirectory { field }
            | WorkspaceError::NotAFile { field } => field,
        }
    }
}

/// The canonical workspace root and the operations that keep paths inside it.
#[derive(Debug, Clone)]
pub struct WorkspaceRoot {
    root: PathBuf,
}

/// A workspace directory that has passed confinement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workspace {
    /// Canonical absolute path.
    pub dir: PathBuf,
    /// Path relative to the root, as shown to callers ("." for the root itself).
    pub relative: String,
}

impl WorkspaceRoot {
    /// `root` must already be canonical (the config loader canonicalizes it).
    pub fn new(root: PathBuf) -> WorkspaceRoot {
        WorkspaceRoot { root }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Resolves the `path` argument of a tool to an existing workspace directory.
    pub fn workspace(&self, field: &str, path: &str) -> Result<Workspace, WorkspaceError> {
        let dir = self.confine(field, &self.root, path)?;
        if !dir.is_dir() {
            return Err(WorkspaceError::NotADirectory {
                field: field.into(),
            });
        }
        let relative = dir
            .strip_prefix(&self.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let relative = if relative.is_empty() {
            ".".to_string()
        } else {
            relative
        };
        Ok(Workspace { dir, relative })
    }

    /// Resolves a file named relative to a workspace (such as a var file), still confined to the
    /// root, to an existing regular file.
    pub fn file_in(
        &self,
        field: &str,
        ws: &Workspace,
        path: &str,
    ) -> Result<PathBuf, WorkspaceError> {
        let file = self.confine(field, &ws.dir, path)?;
        if !file.is_file() {
            return Err(WorkspaceError::NotAFile {
                field: field.into(),
            });
        }
        Ok(file)
    }

    fn confine(&self, field: &str, base: &Path, path: &str) -> Result<PathBuf, WorkspaceError> {
        let field = field.to_string();
        if path.is_empty() {
            return Err(WorkspaceError::Empty { field });
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(WorkspaceError::BadCharacter { field });
        }
        let p = Path::new(path);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, Component::RootDir | Component::Prefix(_)))
        {
            return Err(WorkspaceError::Absolute { field });
        }
        // A lexical pre-check gives a clear error for `..` that climbs out, even when the
        // target does not exist (canonicalize would report "not found" instead).
        let mut depth: isize = base
            .strip_prefix(&self.root)
            .map(|r| r.components().count() as isize)
            .unwrap_or(0);
        for c in p.components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(WorkspaceError::Escapes { field });
            }
        }
        let joined = base.join(p);
        let canonical = match std::fs::canonicalize(&joined) {
            Ok(c) => c,
            Err(_) => {
                // A dangling symlink or a missing path: say "escapes" when the link target is
                // outside, so the error does not depend on whether the target exists.
                if let Ok(target) = std::fs::read_link(&joined) {
                    let resolved = joined.parent().unwrap_or(base).join(target);
                    if !normalize(&resolved).starts_with(&self.root) {
                        return Err(WorkspaceError::Escapes { field });
                    }
                }
                return Err(WorkspaceError::NotFound { field });
            }
        };
        if !canonical.starts_with(&self.root) {
            return Err(WorkspaceError::Escapes { field });
        }
        Ok(canonical)
    }

    /// Workspaces under the root: directories holding at least one `.tf` or `.tf.json` file,
    /// found without following symlinks, skipping hidden directories (such as `.terraform`).
    pub fn list(&self, max_depth: usize, max_entries: usize) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut has_tf = false;
            let mut subdirs = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() && !name.starts_with('.') && depth < max_depth {
                    subdirs.push(entry.path());
                } else if ft.is_file() && (name.ends_with(".tf") || name.ends_with(".tf.json")) {
                    has_tf = true;
                }
            }
            if has_tf {
                let rel = dir
                    .strip_prefix(&self.root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                found.push(if rel.is_empty() { ".".to_string() } else { rel });
                if found.len() >= max_entries {
                    break;
                }
            }
            stack.extend(subdirs.into_iter().map(|d| (d, depth + 1)));
        }
        found.sort();
        found
    }
}

/// Lexical normalization (no file system access), used only to classify dangling links.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, WorkspaceRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(root.join("a/main.tf"), "").unwrap();
        std::fs::write(root.join("a/x.tfvars"), "").unwrap();
        std::fs::write(dir.path().join("outside/secret.tfvars"), "").unwrap();
        symlink(dir.path().join("outside"), root.join("link_out")).unwrap();
        symlink(root.join("a/b"), root.join("link_in")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();
        let canonical = std::fs::canonicalize(&root).unwrap();
        (dir, WorkspaceRoot::new(canonical))
    }

    #[test]
    fn accepts_paths_inside() {
        let (_d, r) = setup();
        assert_eq!(r.workspace("path", "a").unwrap().relative, "a");
        assert_eq!(r.workspace("path", "a/b/..").unwrap().relative, "a");
        assert_eq!(r.workspace("path", ".").unwrap().relative, ".");
        assert_eq!(r.workspace("path", "link_in").unwrap().relative, "a/b");
    }

    #[test]
    fn rejects_escapes() {
        let (_d, r) = setup();
        let cases = [
            (
                "..",
                WorkspaceError::Escapes {
                    field: "path".into(),
                },
            ),
            (
                "a/../..",
                WorkspaceError::Escapes {
                    field: "path".into(),
                },
            ),
            (
                "a/../../outside",
                WorkspaceError::Escapes {
                    field: "path".into(),
                },
            ),
            (
                "/etc",
                WorkspaceError::Absolute {
                    field: "path".into(),
                },
            ),
            (
                "link_out",
                WorkspaceError::Escapes {
                    field: "path".into(),
                },
            ),
            (
                "dangling",
                WorkspaceError::Escapes {
                    field: "path".into(),
                },
            ),
            (
                "a\0b",
                WorkspaceError::BadCharacter {
                    field: "path".into(),
                },
            ),
            (
                "a\nb",
                WorkspaceError::BadCharacter {
                    field: "path".into(),
                },
            ),
            (
                "",
                WorkspaceError::Empty {
                    field: "path".into(),
                },
            ),
            (
                "missing",
                WorkspaceError::NotFound {
                    field: "path".into(),
                },
            ),
            (
                "a/main.tf",
                WorkspaceError::NotADirectory {
                    field: "path".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(r.workspace("path", input).unwrap_err(), want, "{input:?}");
        }
        // Percent-encoded traversal is just a strange directory name, which does not exist.
        assert_eq!(
            r.workspace("path", "%2e%2e").unwrap_err(),
            WorkspaceError::NotFound {
                field: "path".into()
            }
        );
    }

    #[test]
    fn files_are_confined_too() {
        let (_d, r) = setup();
        let ws = r.workspace("path", "a").unwrap();
        assert!(r.file_in("var_files/0", &ws, "x.tfvars").is_ok());
        assert_eq!(
            r.file_in("var_files/0", &ws, "../link_out/secret.tfvars")
                .unwrap_err(),
            WorkspaceError::Escapes {
                field: "var_files/0".into()
            }
        );
        assert_eq!(
            r.file_in("var_files/0", &ws, "../../outside/secret.tfvars")
                .unwrap_err(),
            WorkspaceError::Escapes {
                field: "var_files/0".into()
            }
        );
        assert_eq!(
            r.file_in("var_files/0", &ws, "b").unwrap_err(),
            WorkspaceError::NotAFile {
                field: "var_files/0".into()
            }
        );
    }

    #[test]
    fn lists_workspaces_without_following_links() {
        let (_d, r) = setup();
        assert_eq!(r.list(8, 100), vec!["a".to_string()]);
    }
}
