//! Fetching a repository at a ref into a fresh directory under the workspace root: download
//! the tarball through the API (no git binary, so no hooks, no `.git` config, no submodule
//! URLs), then the safe extraction of [`super::archive`].

use std::path::{Path, PathBuf};

use crate::workspace::{Workspace, WorkspaceRoot};

use super::archive::{self, Extracted, Limits};
use super::{GitHubError, RepoClient, RepoName};
use crate::config::GitHubConfig;

/// Where fetched repositories go, relative to the workspace root.
pub const PREPARED_DIR: &str = "github";

/// Written at the top of every fetched tree: [`repository_tree`] trusts only trees that have it.
pub const MARKER: &str = ".terrarium-fetched";

/// The fetched repository a workspace lies in, if any: `<root>/<github|.terrarium-pulls>/<owner>/
/// <repo>/<dir>` holding [`MARKER`]. A run in a subdirectory of a repository may then read the
/// rest of it, as `source = "../../modules/x"` needs, and nothing beyond it.
pub fn repository_tree(workspace: &str) -> Option<String> {
    let parts: Vec<&str> = workspace.split('/').take(4).collect();
    if parts.len() < 4
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    if parts[0] != PREPARED_DIR && parts[0] != super::webhook::PULLS_DIR {
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

/// A fresh, not yet existing directory for `repo` at `reference`:
/// `<root>/<parent>/<owner>/<repo>/<ref>-<random>`. Returns it absolute and relative to the root.
/// Only a name: [`fetch_into`] creates it once there is something to put in it.
pub fn fresh_dir(root: &Path, parent: &str, repo: &RepoName, reference: &str) -> (PathBuf, String) {
    let slug: String = reference
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
    let name = format!("{slug}-{}", &id[..8]);
    let relative = format!("{parent}/{}/{}/{name}", repo.owner, repo.name);
    (root.join(&relative), relative)
}

/// Downloads `reference` of the repository and extracts it into `root/relative` (which must
/// not exist; a name from [`fresh_dir`]). On any failure nothing is left there. The directories
/// on the way are walked from `root` without following links (see
/// [`archive::extract_beneath`]).
/// The download stops at `deadline` or when `cancel` fires (a slow server cannot hold a call
/// forever); extraction, bounded by the caps, always runs to its end.
pub async fn fetch_into(
    client: &RepoClient,
    reference: &str,
    root: &Path,
    relative: &str,
    config: &GitHubConfig,
    deadline: std::time::Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Extracted, GitHubError> {
    let download = tokio::time::timeout(
        deadline,
        client.archive(reference, config.archive_max_bytes),
    );
    let bytes = tokio::select! {
        r = download => r.map_err(|_| GitHubError::TimedOut(deadline.as_secs()))??,
        _ = cancel.cancelled() => return Err(GitHubError::Cancelled),
    };
    let limits = Limits {
        max_total_bytes: config.extract_max_bytes,
        max_entries: config.extract_max_files,
        // Headers and padding: 1 KiB an entry at most, on top of the content.
        max_stream_bytes: config
            .extract_max_bytes
            .saturating_add(config.extract_max_files.saturating_mul(1024))
            .saturating_add(1 << 20),
    };
    let root = root.to_path_buf();
    let relative = PathBuf::from(relative);
    let marker = format!("{}@{reference}\n", client.repo);
    tokio::task::spawn_blocking(move || {
        archive::extract_beneath(
            std::io::Cursor::new(bytes),
            &root,
            &relative,
            limits,
            Some((MARKER, marker.as_bytes())),
        )
    })
    .await
    .map_err(|e| GitHubError::Io(format!("extraction task: {e}")))?
    .map_err(GitHubError::from)
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
}
