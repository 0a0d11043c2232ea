//! The GitHub settings: App credentials, the API base URL, the webhook secret and which
//! repositories may be touched at all.

use std::time::Duration;

use super::{ConfigError, EnvReader, Secret, invalid};

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

pub(super) fn load(reader: &EnvReader<'_>) -> Result<GitHubConfig, ConfigError> {
    let app_id = reader.parse::<u64>("GITHUB_APP_ID", "a numeric GitHub App id")?;
    let private_key = Secret::new(reader.get("GITHUB_PRIVATE_KEY")?.unwrap_or_default());
    let token = Secret::new(reader.get("GITHUB_TOKEN")?.unwrap_or_default());
    match (app_id.is_some(), private_key.expose().is_empty()) {
        (true, true) => {
            return Err(invalid(
                "TERRARIUM_GITHUB_PRIVATE_KEY",
                "required with TERRARIUM_GITHUB_APP_ID (or use TERRARIUM_GITHUB_PRIVATE_KEY_FILE)",
            ));
        }
        (false, false) => {
            return Err(invalid(
                "TERRARIUM_GITHUB_APP_ID",
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
                "TERRARIUM_GITHUB_PRIVATE_KEY",
                format!("not an RSA private key in PEM form ({e})"),
            )
        })?;
        if !token.expose().is_empty() {
            return Err(invalid(
                "TERRARIUM_GITHUB_TOKEN",
                "set either App credentials or a token, not both",
            ));
        }
    }
    let api_url = reader
        .get("GITHUB_API_URL")?
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "https://api.github.com".into());
    let api_url = api_url.trim().trim_end_matches('/').to_string();
    check_api_url(&api_url).map_err(|m| invalid("TERRARIUM_GITHUB_API_URL", m))?;
    let repos = reader.list("GITHUB_REPOS")?.unwrap_or_default();
    for r in &repos {
        let ok = r.split('/').count() == 2 && r.split('/').all(|p| !p.is_empty());
        if !ok {
            return Err(invalid(
                "TERRARIUM_GITHUB_REPOS",
                format!("{r:?} is not an owner/repo glob (for example acme/* or acme/infra)"),
            ));
        }
    }
    let bytes = |key: &str, default: u64| -> Result<u64, ConfigError> {
        let v = reader
            .parse::<u64>(key, "a number of bytes")?
            .unwrap_or(default);
        if v == 0 {
            return Err(invalid(&format!("TERRARIUM_{key}"), "must be at least 1"));
        }
        Ok(v)
    };
    let queue_size = reader
        .parse::<usize>("GITHUB_QUEUE_SIZE", "a whole number")?
        .unwrap_or(32);
    if queue_size == 0 {
        return Err(invalid("TERRARIUM_GITHUB_QUEUE_SIZE", "must be at least 1"));
    }
    let webhook_secret = Secret::new(reader.get("GITHUB_WEBHOOK_SECRET")?.unwrap_or_default());
    if !webhook_secret.expose().is_empty() && app_id.is_none() && token.expose().is_empty() {
        return Err(invalid(
            "TERRARIUM_GITHUB_WEBHOOK_SECRET",
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
        allow_forks: reader.bool("GITHUB_ALLOW_FORKS")?.unwrap_or(false),
        archive_max_bytes: bytes("GITHUB_ARCHIVE_MAX_BYTES", 100 << 20)?,
        extract_max_bytes: bytes("GITHUB_EXTRACT_MAX_BYTES", 256 << 20)?,
        extract_max_files: bytes("GITHUB_EXTRACT_MAX_FILES", 20_000)?,
        queue_size,
        webhook_max_bytes: bytes("GITHUB_WEBHOOK_MAX_BYTES", 5 << 20)? as usize,
        check_name: reader
            .get("GITHUB_CHECK_NAME")?
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "Terrarium plan".into()),
        api_timeout: Duration::from_secs(
            reader
                .parse::<u64>("GITHUB_API_TIMEOUT_SECS", "a whole number of seconds")?
                .unwrap_or(30)
                .max(1),
        ),
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

impl GitHubConfig {
    /// `(name, value)` pairs for `check-config`, secrets masked.
    pub(crate) fn effective(&self) -> Vec<(&'static str, String)> {
        let mask = |s: &Secret| {
            if s.expose().is_empty() {
                String::new()
            } else {
                "****".to_string()
            }
        };
        vec![
            (
                "TERRARIUM_GITHUB_APP_ID",
                self.app_id.map(|i| i.to_string()).unwrap_or_default(),
            ),
            ("TERRARIUM_GITHUB_PRIVATE_KEY", mask(&self.private_key)),
            ("TERRARIUM_GITHUB_TOKEN", mask(&self.token)),
            ("TERRARIUM_GITHUB_API_URL", self.api_url.clone()),
            (
                "TERRARIUM_GITHUB_WEBHOOK_SECRET",
                mask(&self.webhook_secret),
            ),
            ("TERRARIUM_GITHUB_REPOS", self.repos.join(",")),
            ("TERRARIUM_GITHUB_ALLOW_FORKS", self.allow_forks.to_string()),
            (
                "TERRARIUM_GITHUB_ARCHIVE_MAX_BYTES",
                self.archive_max_bytes.to_string(),
            ),
            (
                "TERRARIUM_GITHUB_EXTRACT_MAX_BYTES",
                self.extract_max_bytes.to_string(),
            ),
            (
                "TERRARIUM_GITHUB_EXTRACT_MAX_FILES",
                self.extract_max_files.to_string(),
            ),
            ("TERRARIUM_GITHUB_QUEUE_SIZE", self.queue_size.to_string()),
            (
                "TERRARIUM_GITHUB_WEBHOOK_MAX_BYTES",
                self.webhook_max_bytes.to_string(),
            ),
            ("TERRARIUM_GITHUB_CHECK_NAME", self.check_name.clone()),
            (
                "TERRARIUM_GITHUB_API_TIMEOUT_SECS",
                self.api_timeout.as_secs().to_string(),
            ),
        ]
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
