//! Fetching a repository at a ref into a fresh directory under the workspace root: download
//! the tarball through the API (no git binary, so no hooks, no `.git` config, no submodule
//! URLs), then the safe extraction of [`super::archive`].

use std::path::{Path, PathBuf};

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
pub fn repository_tree(root: &Path, workspace: &Path) -> Option<PathBuf> {
    let rel = workspace.strip_prefix(root).ok()?;
    let parts: Vec<_> = rel.components().take(4).collect();
    if parts.len() < 4 {
        return None;
    }
    let first = parts[0].as_os_str();
    if first != PREPARED_DIR && first != super::webhook::PULLS_DIR {
        return None;
    }
    let tree: PathBuf = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    // Not a link: the marker must be a plain file the fetch wrote.
    let marker = std::fs::symlink_metadata(tree.join(MARKER)).ok()?;
    marker.is_file().then_some(tree)
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
        let root = d.path();
        let tree = root.join("github/acme/infra/main-1234abcd");
        let ws = tree.join("envs/staging");
        std::fs::create_dir_all(&ws).expect("mkdir");
        // Without the marker the shape alone grants nothing.
        assert_eq!(repository_tree(root, &ws), None);
        std::fs::write(tree.join(MARKER), "acme/infra@main\n").expect("marker");
        assert_eq!(repository_tree(root, &ws), Some(tree.clone()));
        assert_eq!(repository_tree(root, &tree), Some(tree.clone()));
        // Shallower paths, other top directories and paths outside the root: nothing.
        assert_eq!(repository_tree(root, &root.join("github/acme/infra")), None);
        let own = root.join("mine/a/b/c");
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::write(root.join("mine/a/b").join(MARKER), "").expect("marker");
        assert_eq!(repository_tree(root, &own), None);
        assert_eq!(repository_tree(&root.join("github"), &ws), None);
        // A marker that is a link is not trusted.
        let linked = root.join(".terrarium-pulls/acme/infra/x");
        std::fs::create_dir_all(linked.join("d")).expect("mkdir");
        std::os::unix::fs::symlink(tree.join(MARKER), linked.join(MARKER)).expect("link");
        assert_eq!(repository_tree(root, &linked.join("d")), None);
    }
}
