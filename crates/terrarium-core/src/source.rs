//! Workspaces that come from elsewhere (a repository on GitHub): the trait a front door
//! implements to fetch one, and the layout such trees take under the workspace root.
//!
//! Architecture invariant: the core never knows who the source is or holds its credentials. It
//! decides where a fetched tree goes (a fresh directory under [`PREPARED_DIR`] or [`PULLS_DIR`]),
//! checks the caller may use that place, and asks the source to fill it; the source extracts
//! with [`crate::archive`], which writes only beneath the fresh directory.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::archive;
use crate::workspace::{Workspace, WorkspaceRoot};

/// Where repositories fetched on a caller's request go, relative to the workspace root.
pub const PREPARED_DIR: &str = "github";

/// Where pull requests fetched by the webhook go, relative to the workspace root.
pub const PULLS_DIR: &str = ".terrarium-pulls";

/// Written at the top of every fetched tree: [`repository_tree`] trusts only trees that have it.
pub const MARKER: &str = ".terrarium-fetched";

/// A repository at a ref, as a source accepted it: names safe as directory names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub owner: String,
    pub name: String,
    pub reference: String,
}

impl SourceRef {
    /// `owner/name`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// What a fetch put into the fresh directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub files: u64,
    pub bytes: u64,
}

/// A source's failure: what the caller is told, and what the audit trail may record (never a
/// value the caller or the remote side gave).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// The error class in results and audit events (e.g. `github`).
    pub kind: &'static str,
    pub message: String,
    pub audit: Cow<'static, str>,
}

/// The boxed future a [`WorkspaceSource`] returns (the trait is used as `dyn`).
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched, SourceError>> + Send + 'a>>;

/// A place workspaces can be fetched from. Implemented by the binary's GitHub client.
pub trait WorkspaceSource: Send + Sync {
    /// Checks a caller's request (names, allow-lists) before anything is created.
    fn check(&self, owner: &str, repo: &str, reference: &str) -> Result<SourceRef, SourceError>;

    /// Downloads `source` and extracts it into `root/relative`, which does not exist yet (a name
    /// from [`fresh_dir`]); on failure nothing is left there. Stops at `deadline` or `cancel`.
    fn fetch<'a>(
        &'a self,
        source: &'a SourceRef,
        root: &'a Path,
        relative: &'a str,
        deadline: Duration,
        cancel: &'a CancellationToken,
    ) -> FetchFuture<'a>;
}

/// The fetched repository a workspace lies in, if any: `<root>/<github|.terrarium-pulls>/<owner>/
/// <repo>/<dir>`. A run in a subdirectory of a repository may then read the rest of it, as
/// `source = "../../modules/x"` needs, and nothing beyond it.
pub fn repository_tree(workspace: &str) -> Option<String> {
    let parts: Vec<&str> = workspace.split('/').take(4).collect();
    if parts.len() < 4
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    if parts[0] != PREPARED_DIR && parts[0] != PULLS_DIR {
        return None;
    }
    Some(parts.join("/"))
}

/// [`repository_tree`], opened: resolved by descriptor with no symlink on the way, and holding
/// the marker as a plain file. Only such a tree widens what a run may read.
pub fn trusted_tree(root: &WorkspaceRoot, workspace: &str) -> Option<Workspace> {
    let tree = root.plain_dir("path", &repository_tree(workspace)?).ok()?;
    tree.has_plain_file(MARKER).then_some(tree)
}

/// A fresh, not yet existing directory for `source`, relative to the root:
/// `<parent>/<owner>/<repo>/<ref>-<random>`. Only a name: the fetch creates it once there is
/// something to put in it.
pub fn fresh_dir(parent: &str, source: &SourceRef) -> String {
    let slug: String = source
        .reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let slug = slug.trim_matches(['-', '.']).to_string();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{parent}/{}/{}/{slug}-{}",
        source.owner,
        source.name,
        &id[..8]
    )
}

/// Removes a fetched tree (`relative` to `root`), never following a link on the way.
pub fn remove_tree(root: &Path, relative: &str) {
    if let Err(e) = archive::remove_beneath(root, Path::new(relative)) {
        tracing::warn!("removing the fetched tree {relative}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_fetched_trees_widen_reads() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().canonicalize().expect("canonical");
        let r = WorkspaceRoot::open(root.clone()).expect("root");
        let tree = root.join("github/acme/infra/main-1234abcd");
        std::fs::create_dir_all(tree.join("envs/staging")).expect("mkdir");
        let rel = "github/acme/infra/main-1234abcd";
        let tree_of = |ws: &str| trusted_tree(&r, ws).map(|t| t.relative);
        // Without the marker the shape alone grants nothing.
        assert_eq!(tree_of(&format!("{rel}/envs/staging")), None);
        std::fs::write(tree.join(MARKER), "acme/infra@main\n").expect("marker");
        assert_eq!(
            tree_of(&format!("{rel}/envs/staging")),
            Some(rel.to_string())
        );
        assert_eq!(tree_of(rel), Some(rel.to_string()));
        // Shallower paths and other top directories: nothing.
        assert_eq!(tree_of("github/acme/infra"), None);
        std::fs::create_dir_all(root.join("mine/a/b/c")).expect("mkdir");
        std::fs::write(root.join("mine/a/b").join(MARKER), "").expect("marker");
        assert_eq!(tree_of("mine/a/b/c"), None);
        // A marker that is a link is not trusted.
        let linked = root.join(".terrarium-pulls/acme/infra/x");
        std::fs::create_dir_all(linked.join("d")).expect("mkdir");
        std::os::unix::fs::symlink(tree.join(MARKER), linked.join(MARKER)).expect("link");
        assert_eq!(tree_of(".terrarium-pulls/acme/infra/x/d"), None);
        // A tree reached through a symlinked component is not trusted either (it could be
        // swapped to point anywhere).
        std::os::unix::fs::symlink(root.join("github/acme"), root.join("github/evil"))
            .expect("link");
        assert_eq!(tree_of("github/evil/infra/main-1234abcd"), None);
    }

    #[test]
    fn fresh_dirs_are_slugged_and_unique() {
        let s = SourceRef {
            owner: "acme".into(),
            name: "infra".into(),
            reference: "feature/x y".into(),
        };
        let a = fresh_dir(PREPARED_DIR, &s);
        let b = fresh_dir(PREPARED_DIR, &s);
        assert!(a.starts_with("github/acme/infra/feature-x-y-"), "{a}");
        assert_ne!(a, b);
    }
}
