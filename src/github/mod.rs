//! GitHub: the App's credentials and API calls ([`client`]), fetching a repository's code safely
//! ([`fetch`], [`archive`]), reporting a plan on a pull request ([`report`]) and the webhook that
//! queues those plans ([`webhook`]). The CLI and the MCP tool reach it through the same
//! [`client::GitHub`]; every plan still runs through the executor.

pub(crate) mod client;
pub(crate) mod fetch;
pub(crate) mod pull;
pub(crate) mod report;
pub(crate) mod seen;
pub(crate) mod webhook;

pub(crate) use client::{GitHub, RepoClient};
use terrarium_core::source::SourceError;

/// A repository's `owner/name`, checked to be a name GitHub could have (so it is safe in a URL
/// path and as a directory name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub(crate) fn new(owner: &str, name: &str) -> Result<RepoName, GitHubError> {
        let owner_ok = !owner.is_empty()
            && owner.len() <= 39
            && !owner.starts_with('-')
            && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name != "."
            && name != ".."
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if owner_ok && name_ok {
            Ok(RepoName {
                owner: owner.to_string(),
                name: name.to_string(),
            })
        } else {
            Err(GitHubError::BadRepo(format!("{owner}/{name}")))
        }
    }

    /// Parses `owner/name`.
    pub(crate) fn parse(full: &str) -> Result<RepoName, GitHubError> {
        match full.split_once('/') {
            Some((o, n)) => RepoName::new(o, n),
            None => Err(GitHubError::BadRepo(full.to_string())),
        }
    }

    pub(crate) fn full(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A git ref or commit as given by a caller: branch and tag names, SHAs. Anything that could
/// change the meaning of the URL it is put in (`..`, `?`, `#`, `%`, spaces, a leading `-` or `/`)
/// is refused.
pub(crate) fn check_ref(reference: &str) -> Result<(), GitHubError> {
    let ok = !reference.is_empty()
        && reference.len() <= 255
        && !reference.starts_with(['-', '/', '.'])
        && !reference.ends_with(['/', '.'])
        && !reference.contains("..")
        && !reference.contains("//")
        && !reference.ends_with(".lock")
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(GitHubError::BadRef(reference.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error(
        "GitHub access is not configured: set TERRARIUM_GITHUB_APP_ID and \
         TERRARIUM_GITHUB_PRIVATE_KEY (or TERRARIUM_GITHUB_TOKEN)"
    )]
    NotConfigured,
    #[error("{0:?} is not a valid owner/repo name")]
    BadRepo(String),
    #[error("{0:?} is not a valid git ref (branch, tag or commit SHA)")]
    BadRef(String),
    #[error(
        "repository {0} is not in TERRARIUM_GITHUB_REPOS; ask the operator to allow it (owner/repo globs)"
    )]
    RepoNotAllowed(String),
    #[error("the GitHub App is not installed on {0}; install it on that repository first")]
    NotInstalled(String),
    #[error(
        "GitHub refused the server's credentials ({what}: 401 {message}); check \
         TERRARIUM_GITHUB_APP_ID and the private key, or the token"
    )]
    Unauthorized { what: String, message: String },
    #[error("GitHub API {what}: {status} {message}")]
    Api {
        what: String,
        status: u16,
        message: String,
    },
    #[error("GitHub API {what}: {message}")]
    Transport { what: String, message: String },
    #[error(
        "the repository archive is larger than the limit of {0} bytes (TERRARIUM_GITHUB_ARCHIVE_MAX_BYTES)"
    )]
    ArchiveTooLarge(u64),
    #[error(transparent)]
    Archive(#[from] terrarium_core::archive::ArchiveError),
    #[error("downloading the repository archive took longer than {0}s (TERRARIUM_TIMEOUT_SECS)")]
    TimedOut(u64),
    #[error("cancelled")]
    Cancelled,
    #[error("subdir {0:?} does not exist in the repository archive")]
    NoSubdir(String),
    #[error("{0}")]
    Io(String),
}

/// How the core sees a GitHub failure of `github_prepare_workspace`.
impl From<GitHubError> for SourceError {
    fn from(e: GitHubError) -> SourceError {
        SourceError {
            kind: "github",
            audit: e.audit_message(),
            message: e.to_string(),
        }
    }
}

impl GitHubError {
    /// What the audit trail records: no caller value (owner, repo, ref, subdir), no archive
    /// entry name and no text GitHub sent back; exhaustive so a new variant must decide.
    pub fn audit_message(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            GitHubError::BadRepo(_) => Cow::Borrowed("not a valid owner/repo name"),
            GitHubError::BadRef(_) => Cow::Borrowed("not a valid git ref"),
            GitHubError::RepoNotAllowed(_) => {
                Cow::Borrowed("the repository is not in TERRARIUM_GITHUB_REPOS")
            }
            GitHubError::NotInstalled(_) => {
                Cow::Borrowed("the GitHub App is not installed on the repository")
            }
            GitHubError::Unauthorized { .. } => {
                Cow::Borrowed("GitHub refused the server's credentials (401)")
            }
            GitHubError::Api { status, .. } => {
                Cow::Owned(format!("the GitHub API answered {status}"))
            }
            GitHubError::Transport { .. } => Cow::Borrowed("the GitHub API could not be reached"),
            GitHubError::Archive(e) => Cow::Borrowed(match e {
                terrarium_core::archive::ArchiveError::Absolute(_) => {
                    "archive entry with an absolute path"
                }
                terrarium_core::archive::ArchiveError::Traversal(_) => {
                    "archive entry leaving the extraction directory"
                }
                terrarium_core::archive::ArchiveError::LinkOutside { .. } => {
                    "archive link pointing outside the extraction directory"
                }
                terrarium_core::archive::ArchiveError::ThroughLink(_) => {
                    "archive entry whose path passes through a link or a file"
                }
                terrarium_core::archive::ArchiveError::Duplicate(_) => {
                    "archive entry taking an earlier entry's path"
                }
                terrarium_core::archive::ArchiveError::HardLinkTarget { .. } => {
                    "archive hard link to something other than an extracted regular file"
                }
                terrarium_core::archive::ArchiveError::TooDeep(_) => {
                    "archive entry path too long or too deep"
                }
                terrarium_core::archive::ArchiveError::TooManyLinks => {
                    "the archive has too many symbolic links"
                }
                terrarium_core::archive::ArchiveError::UnsafeDestination(_) => {
                    "the extraction directory's parent is not a plain directory"
                }
                terrarium_core::archive::ArchiveError::Special(_) => {
                    "archive entry of a special file type"
                }
                terrarium_core::archive::ArchiveError::TooLarge(_) => {
                    "the archive is larger than the limit"
                }
                terrarium_core::archive::ArchiveError::TooManyEntries(_) => {
                    "the archive has too many entries"
                }
                terrarium_core::archive::ArchiveError::Exists(_) => {
                    "the extraction directory already exists"
                }
                terrarium_core::archive::ArchiveError::Read(_) => "the archive could not be read",
                terrarium_core::archive::ArchiveError::Write { .. } => {
                    "the archive could not be extracted"
                }
            }),
            GitHubError::NoSubdir(_) => {
                Cow::Borrowed("subdir: does not exist in the repository archive")
            }
            GitHubError::Io(_) => Cow::Borrowed("I/O error while talking to GitHub"),
            GitHubError::NotConfigured
            | GitHubError::ArchiveTooLarge(_)
            | GitHubError::TimedOut(_)
            | GitHubError::Cancelled => Cow::Owned(self.to_string()),
        }
    }

    /// Maps an octocrab error to one a user can act on. GitHub's own message is kept; nothing
    /// here can contain a credential (octocrab never puts tokens in URLs or messages).
    pub fn from_octocrab(what: &str, e: octocrab::Error) -> GitHubError {
        match e {
            octocrab::Error::GitHub { source, .. } => {
                let status = source.status_code.as_u16();
                let message = source.message.chars().take(300).collect::<String>();
                if status == 401 {
                    GitHubError::Unauthorized {
                        what: what.to_string(),
                        message,
                    }
                } else {
                    GitHubError::Api {
                        what: what.to_string(),
                        status,
                        message,
                    }
                }
            }
            other => GitHubError::Transport {
                what: what.to_string(),
                message: other.to_string().chars().take(300).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_checked() {
        assert!(RepoName::parse("acme/infra").is_ok());
        assert!(RepoName::parse("acme/infra.live_2").is_ok());
        for bad in [
            "acme", "acme/", "/infra", "acme/..", "acme/a/b", "ac me/x", "-acme/x", "acme/-x",
            "acme/x?y",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_are_checked() {
        for good in ["main", "feature/x-1", "v1.2.3", "0123abcd", "release_2"] {
            assert!(check_ref(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=x",
            "a..b",
            "../x",
            "/x",
            "x/",
            "a b",
            "a?b",
            "a#b",
            "a%2e",
            "x.lock",
        ] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }
}
