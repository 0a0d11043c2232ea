//! Fetching a repository at a ref into a fresh directory under the workspace root: download
//! the tarball through the API (no git binary, so no hooks, no `.git` config, no submodule
//! URLs), then the safe extraction of [`super::archive`].

use std::path::{Path, PathBuf};

use super::archive::{self, Extracted, Limits};
use super::{GitHubError, RepoClient, RepoName};
use crate::config::GitHubConfig;

/// Where fetched repositories go, relative to the workspace root.
pub const PREPARED_DIR: &str = "github";

/// A fresh, not yet existing directory for `repo` at `reference`:
/// `<root>/<parent>/<owner>/<repo>/<ref>-<random>`. Returns it absolute and relative to the root.
pub fn fresh_dir(
    root: &Path,
    parent: &str,
    repo: &RepoName,
    reference: &str,
) -> Result<(PathBuf, String), GitHubError> {
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
    let parent_dir = root.join(parent).join(&repo.owner).join(&repo.name);
    std::fs::create_dir_all(&parent_dir)
        .map_err(|e| GitHubError::Io(format!("creating {}: {e}", parent_dir.display())))?;
    Ok((parent_dir.join(name), relative))
}

/// Downloads `reference` of the repository and extracts it into `dest` (which must not exist).
/// On any failure nothing is left at `dest`.
pub async fn fetch_into(
    client: &RepoClient,
    reference: &str,
    dest: &Path,
    config: &GitHubConfig,
) -> Result<Extracted, GitHubError> {
    let bytes = client.archive(reference, config.archive_max_bytes).await?;
    let limits = Limits {
        max_total_bytes: config.extract_max_bytes,
        max_entries: config.extract_max_files,
        // Headers and padding: 1 KiB an entry at most, on top of the content.
        max_stream_bytes: config
            .extract_max_bytes
            .saturating_add(config.extract_max_files.saturating_mul(1024))
            .saturating_add(1 << 20),
    };
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        archive::extract_tar_gz(std::io::Cursor::new(bytes), &dest, limits)
    })
    .await
    .map_err(|e| GitHubError::Io(format!("extraction task: {e}")))?
    .map_err(GitHubError::from)
}
