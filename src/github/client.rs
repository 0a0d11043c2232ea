//! The GitHub client: one App (or token) client, and per repository a client whose installation
//! token is scoped to that one repository, cached, and refreshed well before it expires.
//!
//! octocrab mints the App JWT (RS256, `iat` 60 s in the past, `exp` 9 minutes ahead) and
//! exchanges it for installation tokens; this file decides which installation, which scope and
//! when to refresh, and keeps every credential inside octocrab: none is ever returned, logged
//! or handed to terraform.

use std::collections::HashMap;
use std::sync::Arc;

use http_body_util::BodyExt;
use octocrab::Octocrab;
use octocrab::models::InstallationId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GitHubError, RepoName};
use crate::settings::GitHubConfig;

/// An installation token is renewed when less than this is left of it (GitHub issues them
/// for an hour): a plan that starts never meets a token that expires mid-report.
const REFRESH_BEFORE_EXPIRY_MINUTES: i64 = 10;

/// Pages fetched at most from a list endpoint (100 items each).
const MAX_PAGES: u32 = 30;

enum Auth {
    App(Octocrab),
    Token(Arc<Octocrab>),
}

pub(crate) struct GitHub {
    config: GitHubConfig,
    auth: Auth,
    /// Per repository (lower-cased `owner/name`): its installation and scoped client.
    repos: tokio::sync::Mutex<HashMap<String, Arc<Octocrab>>>,
}

impl GitHub {
    /// `None` when no credentials are configured.
    pub(crate) fn from_config(config: &GitHubConfig) -> Result<Option<GitHub>, GitHubError> {
        if !config.has_credentials() {
            return Ok(None);
        }
        let builder = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(|e| GitHubError::Transport {
                what: "base URL".into(),
                message: e.to_string(),
            })?
            .set_connect_timeout(Some(config.api_timeout))
            .set_read_timeout(Some(config.api_timeout))
            .set_write_timeout(Some(config.api_timeout));
        let auth = match config.app_id {
            Some(id) => {
                let key =
                    octocrab::EncodingKey::from_rsa_pem(config.private_key.expose().as_bytes())
                        .map_err(|e| GitHubError::Io(format!("the App private key: {e}")))?;
                let crab = builder
                    .app(octocrab::models::AppId(id), key)
                    .build()
                    .map_err(|e| GitHubError::from_octocrab("client", e))?;
                Auth::App(crab)
            }
            None => {
                let crab = builder
                    .personal_token(config.token.expose().to_string())
                    .build()
                    .map_err(|e| GitHubError::from_octocrab("client", e))?;
                Auth::Token(Arc::new(crab))
            }
        };
        Ok(Some(GitHub {
            config: config.clone(),
            auth,
            repos: tokio::sync::Mutex::new(HashMap::new()),
        }))
    }

    pub(crate) fn config(&self) -> &GitHubConfig {
        &self.config
    }

    /// A client for one repository: refuses repositories outside the allowlist, finds the
    /// installation (unless the caller knows it, as a webhook event does), and makes sure its
    /// token has at least ten minutes left.
    pub(crate) async fn repo(
        &self,
        repo: &RepoName,
        installation: Option<u64>,
    ) -> Result<RepoClient, GitHubError> {
        if !self.config.repo_allowed(&repo.full()) {
            return Err(GitHubError::RepoNotAllowed(repo.full()));
        }
        let app = match &self.auth {
            Auth::Token(crab) => {
                return Ok(RepoClient {
                    crab: crab.clone(),
                    repo: repo.clone(),
                });
            }
            Auth::App(app) => app,
        };
        let key = repo.full().to_ascii_lowercase();
        let mut repos = self.repos.lock().await;
        let crab = match repos.get(&key) {
            Some(c) => c.clone(),
            None => {
                let id = match installation {
                    Some(id) => id,
                    None => installation_of(app, repo).await?,
                };
                let crab = app
                    .installation_builder(InstallationId(id))
                    .repositories(vec![repo.name.clone()])
                    .build()
                    .map_err(|e| GitHubError::from_octocrab("installation client", e))?;
                let crab = Arc::new(crab);
                repos.insert(key.clone(), crab.clone());
                crab
            }
        };
        drop(repos);
        let fresh = crab
            .installation_token_with_buffer(chrono::Duration::minutes(
                REFRESH_BEFORE_EXPIRY_MINUTES,
            ))
            .await;
        if let Err(e) = fresh {
            // A revoked installation or key: forget the client so the next call looks again.
            self.repos.lock().await.remove(&key);
            return Err(GitHubError::from_octocrab("installation token", e));
        }
        Ok(RepoClient {
            crab,
            repo: repo.clone(),
        })
    }
}

/// `GET /repos/{owner}/{repo}/installation`, authenticated as the App.
async fn installation_of(app: &Octocrab, repo: &RepoName) -> Result<u64, GitHubError> {
    #[derive(Deserialize)]
    struct Installation {
        id: u64,
    }
    let route = format!("/repos/{}/{}/installation", repo.owner, repo.name);
    match app.get::<Installation, _, ()>(route, None).await {
        Ok(i) => Ok(i.id),
        Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
            Err(GitHubError::NotInstalled(repo.full()))
        }
        Err(e) => Err(GitHubError::from_octocrab("installation lookup", e)),
    }
}

/// A pull request, as far as planning needs it.
#[derive(Debug, Clone)]
pub(crate) struct PullInfo {
    pub number: u64,
    pub head_sha: String,
    /// `owner/name` of the head repository; `None` when the fork was deleted.
    pub head_repo: Option<String>,
    pub base_repo: String,
}

impl PullInfo {
    pub(crate) fn is_from_fork(&self) -> bool {
        self.head_repo
            .as_deref()
            .is_none_or(|h| !h.eq_ignore_ascii_case(&self.base_repo))
    }

    /// From a `pull_request` object (REST or webhook payload).
    pub(crate) fn from_json(pr: &Value) -> Option<PullInfo> {
        Some(PullInfo {
            number: pr["number"].as_u64()?,
            head_sha: pr["head"]["sha"].as_str()?.to_string(),
            head_repo: pr["head"]["repo"]["full_name"].as_str().map(String::from),
            base_repo: pr["base"]["repo"]["full_name"].as_str()?.to_string(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IssueComment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: Option<CommentUser>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CommentUser {
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// Calls on one repository, with its scoped credentials.
pub(crate) struct RepoClient {
    crab: Arc<Octocrab>,
    pub repo: RepoName,
}

impl RepoClient {
    fn route(&self, tail: &str) -> String {
        format!("/repos/{}/{}/{tail}", self.repo.owner, self.repo.name)
    }

    /// The `.tar.gz` of the repository at `reference`, read into memory up to `max_bytes`.
    pub(crate) async fn archive(
        &self,
        reference: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, GitHubError> {
        super::check_ref(reference)?;
        let what = format!("archive of {}@{reference}", self.repo);
        let response = self
            .crab
            .repos(&self.repo.owner, &self.repo.name)
            .download_tarball(reference.to_string())
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        let response = octocrab::map_github_error(response)
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        if let Some(len) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > max_bytes
        {
            return Err(GitHubError::ArchiveTooLarge(max_bytes));
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| GitHubError::from_octocrab(&what, e))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() as u64 + data.len() as u64 > max_bytes {
                    return Err(GitHubError::ArchiveTooLarge(max_bytes));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes)
    }

    pub(crate) async fn pull(&self, number: u64) -> Result<PullInfo, GitHubError> {
        let what = format!("pull request {}#{number}", self.repo);
        let pr: Value = self
            .crab
            .get(self.route(&format!("pulls/{number}")), None::<&()>)
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        PullInfo::from_json(&pr).ok_or_else(|| GitHubError::Api {
            what,
            status: 200,
            message: "the answer lacks number, head.sha or base.repo".into(),
        })
    }

    /// Every page of a list endpoint (100 items a page, at most [`MAX_PAGES`]).
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        route: String,
        what: &str,
    ) -> Result<Vec<T>, GitHubError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let items: Vec<T> = self
                .crab
                .get(
                    &route,
                    Some(&[("per_page", "100"), ("page", &page.to_string())]),
                )
                .await
                .map_err(|e| GitHubError::from_octocrab(what, e))?;
            let n = items.len();
            out.extend(items);
            if n < 100 {
                break;
            }
        }
        Ok(out)
    }

    /// Paths the pull request touches (both sides of a rename).
    pub(crate) async fn pull_files(&self, number: u64) -> Result<Vec<String>, GitHubError> {
        #[derive(Deserialize)]
        struct File {
            filename: String,
            #[serde(default)]
            previous_filename: Option<String>,
        }
        let what = format!("files of {}#{number}", self.repo);
        let files: Vec<File> = self
            .all_pages(self.route(&format!("pulls/{number}/files")), &what)
            .await?;
        Ok(files
            .into_iter()
            .flat_map(|f| std::iter::once(f.filename).chain(f.previous_filename))
            .collect())
    }

    pub(crate) async fn issue_comments(
        &self,
        number: u64,
    ) -> Result<Vec<IssueComment>, GitHubError> {
        let what = format!("comments of {}#{number}", self.repo);
        self.all_pages(self.route(&format!("issues/{number}/comments")), &what)
            .await
    }

    pub(crate) async fn create_comment(&self, number: u64, body: &str) -> Result<u64, GitHubError> {
        let c: IssueComment = self
            .crab
            .post(
                self.route(&format!("issues/{number}/comments")),
                Some(&json!({"body": body})),
            )
            .await
            .map_err(|e| GitHubError::from_octocrab("creating a comment", e))?;
        Ok(c.id)
    }

    pub(crate) async fn update_comment(&self, id: u64, body: &str) -> Result<(), GitHubError> {
        let _: Value = self
            .crab
            .patch(
                self.route(&format!("issues/comments/{id}")),
                Some(&json!({"body": body})),
            )
            .await
            .map_err(|e| GitHubError::from_octocrab("updating a comment", e))?;
        Ok(())
    }

    pub(crate) async fn delete_comment(&self, id: u64) -> Result<(), GitHubError> {
        let response = self
            .crab
            ._delete(self.route(&format!("issues/comments/{id}")), None::<&()>)
            .await
            .map_err(|e| GitHubError::from_octocrab("deleting a comment", e))?;
        octocrab::map_github_error(response)
            .await
            .map_err(|e| GitHubError::from_octocrab("deleting a comment", e))?;
        Ok(())
    }

    /// Starts a check run on a commit; returns its id.
    pub(crate) async fn create_check_run(
        &self,
        name: &str,
        head_sha: &str,
    ) -> Result<u64, GitHubError> {
        #[derive(Deserialize)]
        struct Run {
            id: u64,
        }
        let run: Run = self
            .crab
            .post(
                self.route("check-runs"),
                Some(&json!({
                    "name": name,
                    "head_sha": head_sha,
                    "status": "in_progress",
                    "started_at": now_iso8601(),
                })),
            )
            .await
            .map_err(|e| GitHubError::from_octocrab("creating a check run", e))?;
        Ok(run.id)
    }

    /// Completes a check run. `summary` and `text` are cut to GitHub's 65,535 characters.
    pub(crate) async fn complete_check_run(
        &self,
        id: u64,
        conclusion: &str,
        title: &str,
        summary: &str,
        text: &str,
    ) -> Result<(), GitHubError> {
        let _: Value = self
            .crab
            .patch(
                self.route(&format!("check-runs/{id}")),
                Some(&json!({
                    "status": "completed",
                    "conclusion": conclusion,
                    "completed_at": now_iso8601(),
                    "output": {
                        "title": cut(title, 255),
                        "summary": cut(summary, CHECK_TEXT_LIMIT),
                        "text": cut(text, CHECK_TEXT_LIMIT),
                    },
                })),
            )
            .await
            .map_err(|e| GitHubError::from_octocrab("completing a check run", e))?;
        Ok(())
    }
}

/// GitHub's timestamp form: ISO 8601, whole seconds, UTC.
fn now_iso8601() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// GitHub refuses comment bodies over 65,536 characters.
pub(crate) const COMMENT_LIMIT: usize = 65_536;
/// Check run `output.summary` and `output.text` hold at most 65,535 characters each.
pub(crate) const CHECK_TEXT_LIMIT: usize = 65_535;

/// Cuts `s` to at most `max` characters, saying so at the end when it did.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    const NOTE: &str = "\n\n… (truncated)";
    let keep = max.saturating_sub(NOTE.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(NOTE);
    out
}
