//! The GitHub settings: App credentials, the API base URL, the webhook secret and which
//! repositories may be touched at all.

use std::time::Duration;

use super::defs as d;
use super::layers::Layers;
use super::{ConfigError, Secret, invalid};

/// GitHub App (or plain token) access. Everything is off until credentials are set.
#[derive(Debug, Clone)]
pub(crate) struct GitHubConfig {
    pub app_id: Option<u64>,
    /// The App's private key (PEM).
    pub private_key: Secret,
    /// A plain installation or Actions token (`GITHUB_TOKEN`), instead of App credentials.
    pub token: Secret,
    /// REST API base: `https://api.github.com`, or a GitHub Enterprise `/api/v3` URL.
    pub api_url: String,
    pub webhook_secret: Secret,
    /// `owner/repo` globs; a repository not matched is never fetched, planned or reported on.
    pub repos: Vec<String>,
    /// Plan pull requests whose head lives in a fork (their code is anyone's).
    pub allow_forks: bool,
    /// Largest compressed archive downloaded.
    pub archive_max_bytes: u64,
    /// Largest extracted size and entry count.
    pub extract_max_bytes: u64,
    pub extract_max_files: u64,
    /// Webhook plans waiting at most; deliveries beyond it get 503.
    pub queue_size: usize,
    pub webhook_max_bytes: usize,
    /// Name of the check run on the pull request's head commit.
    pub check_name: String,
    pub api_timeout: Duration,
}

impl GitHubConfig {
    /// App credentials or a token are set: the client can be built.
    pub(crate) fn has_credentials(&self) -> bool {
        self.app_id.is_some() || !self.token.expose().is_empty()
    }

    pub(crate) fn repo_allowed(&self, full_name: &str) -> bool {
        let name = full_name.to_ascii_lowercase();
        self.repos
            .iter()
            .any(|g| terrarium_core::policy::glob_match(&g.to_ascii_lowercase(), &name))
    }
}

pub(super) fn load(l: &Layers<'_>) -> Result<GitHubConfig, ConfigError> {
    let app_id = l.int(&d::GITHUB_APP_ID)?;
    let private_key = l.secret(&d::GITHUB_PRIVATE_KEY)?;
    let token = l.secret(&d::GITHUB_TOKEN)?;
    match (app_id.is_some(), private_key.expose().is_empty()) {
        (true, true) => {
            return Err(invalid(
                d::GITHUB_PRIVATE_KEY.name,
                "required with TERRARIUM_GITHUB_APP_ID (or use TERRARIUM_GITHUB_PRIVATE_KEY_FILE)",
            ));
        }
        (false, false) => {
            return Err(invalid(
                d::GITHUB_APP_ID.name,
                "required with TERRARIUM_GITHUB_PRIVATE_KEY",
            ));
        }
        _ => {}
    }
    if app_id.is_some() {
        // Parse now so that a wrong key fails at start-up, not on the first pull request. The
        // message never includes the key.
        jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).map_err(|e| {
            invalid(
                &l.label(&d::GITHUB_PRIVATE_KEY),
                format!("not an RSA private key in PEM form ({e})"),
            )
        })?;
        if !token.expose().is_empty() {
            return Err(invalid(
                d::GITHUB_TOKEN.name,
                "set either App credentials or a token, not both",
            ));
        }
    }
    let api_url = l
        .string(&d::GITHUB_API_URL)?
        .trim()
        .trim_end_matches('/')
        .to_string();
    check_api_url(&api_url).map_err(|m| invalid(&l.label(&d::GITHUB_API_URL), m))?;
    let repos = l.list(&d::GITHUB_REPOS)?;
    for r in &repos {
        let ok = r.split('/').count() == 2 && r.split('/').all(|p| !p.is_empty());
        if !ok {
            return Err(invalid(
                &l.label(&d::GITHUB_REPOS),
                format!("{r:?} is not an owner/repo glob (for example acme/* or acme/infra)"),
            ));
        }
    }
    let webhook_secret = l.secret(&d::GITHUB_WEBHOOK_SECRET)?;
    if !webhook_secret.expose().is_empty() && app_id.is_none() && token.expose().is_empty() {
        return Err(invalid(
            d::GITHUB_WEBHOOK_SECRET.name,
            "the webhook needs GitHub credentials to report back: set TERRARIUM_GITHUB_APP_ID and TERRARIUM_GITHUB_PRIVATE_KEY",
        ));
    }
    Ok(GitHubConfig {
        app_id,
        private_key,
        token,
        api_url,
        webhook_secret,
        repos,
        allow_forks: l.bool(&d::GITHUB_ALLOW_FORKS)?,
        archive_max_bytes: l.number(&d::GITHUB_ARCHIVE_MAX_BYTES)?,
        extract_max_bytes: l.number(&d::GITHUB_EXTRACT_MAX_BYTES)?,
        extract_max_files: l.number(&d::GITHUB_EXTRACT_MAX_FILES)?,
        queue_size: l.number(&d::GITHUB_QUEUE_SIZE)?,
        webhook_max_bytes: l.number(&d::GITHUB_WEBHOOK_MAX_BYTES)?,
        check_name: l.string(&d::GITHUB_CHECK_NAME)?,
        api_timeout: l.secs(&d::GITHUB_API_TIMEOUT_SECS)?,
    })
}

/// Tokens travel in headers: plain HTTP is allowed only to this machine (tests, a local
/// forwarder).
fn check_api_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") => Ok(()),
        Some("http") => Err(format!(
            "{url:?}: plain http is allowed only to a loopback address; use https"
        )),
        _ => Err(format!("{url:?} is not an http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_must_be_https_unless_loopback() {
        assert!(check_api_url("https://api.github.com").is_ok());
        assert!(check_api_url("https://ghe.example.com/api/v3").is_ok());
        assert!(check_api_url("http://127.0.0.1:9000").is_ok());
        assert!(check_api_url("http://api.github.com").is_err());
        assert!(check_api_url("ftp://x").is_err());
        assert!(check_api_url("not a url").is_err());
    }
}
