//! Fetching a repository at a ref into a fresh directory under the workspace root: download
//! the tarball through the API (no git binary, so no hooks, no `.git` config, no submodule
//! URLs), then the safe extraction of [`terrarium_core::archive`].

use std::path::{Path, PathBuf};

use terrarium_core::archive::{self, Extracted, Limits};
use terrarium_core::source::{
    FetchFuture, Fetched, MARKER, SourceError, SourceRef, WorkspaceSource,
};

use super::{GitHub, GitHubError, RepoClient, RepoName};
use crate::settings::GitHubConfig;

/// Downloads `reference` of the repository and extracts it into `root/relative` (which must
/// not exist; a name from [`terrarium_core::source::fresh_dir`]). On any failure nothing is left there. The directories
/// on the way are walked from `root` without following links (see
/// [`archive::extract_beneath`]).
/// The download stops at `deadline` or when `cancel` fires (a slow server cannot hold a call
/// forever); extraction, bounded by the caps, always runs to its end.
pub(crate) async fn fetch_into(
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

/// `github_prepare_workspace`'s source: the core decides where a tree goes and checks the
/// caller may use it; this fetches it with the App's credentials, which stay on this side.
impl WorkspaceSource for GitHub {
    fn check(&self, owner: &str, repo: &str, reference: &str) -> Result<SourceRef, SourceError> {
        let name = RepoName::new(owner, repo)?;
        super::check_ref(reference)?;
        Ok(SourceRef {
            owner: name.owner,
            name: name.name,
            reference: reference.to_string(),
        })
    }

    fn fetch<'a>(
        &'a self,
        source: &'a SourceRef,
        root: &'a Path,
        relative: &'a str,
        deadline: std::time::Duration,
        cancel: &'a tokio_util::sync::CancellationToken,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            let repo = RepoName::new(&source.owner, &source.name)?;
            let client = self.repo(&repo, None).await?;
            let stats = fetch_into(
                &client,
                &source.reference,
                root,
                relative,
                self.config(),
                deadline,
                cancel,
            )
            .await?;
            Ok(Fetched {
                files: stats.files,
                bytes: stats.bytes,
            })
        })
    }
}
