//! The GitHub webhook: authenticate a delivery by its HMAC signature before reading anything in
//! it, decide whether it asks for a plan, and queue that plan for a background worker.
//!
//! The answer is quick (GitHub gives a delivery 10 seconds); the plan runs later, with a
//! bounded queue so that a burst of pushes cannot pile up unbounded work. Deliveries are
//! de-duplicated by their `X-GitHub-Delivery` id *and* the digest of their signed body,
//! remembered in the state dir across restarts ([`super::seen`]), so a replayed (even correctly
//! signed, even under a fresh id) delivery plans nothing twice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::client::PullInfo;
use super::pull::PullRun;
use super::seen::{self, Seen};
use super::{GitHub, RepoName, fetch};
use crate::settings::Secret;
use terrarium_core::audit;
use terrarium_core::source::{self, PULLS_DIR, SourceRef};
use terrarium_core::{Executor, Transport};

/// `X-Hub-Signature-256: sha256=<hex>` over the raw body, compared in constant time.
pub(crate) fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// The signature GitHub would send (tests).
#[cfg(test)]
fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What became of a delivery that passed the signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepted {
    Queued,
    Pong,
    Duplicate,
    Ignored(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Rejected {
    #[error("missing or invalid X-Hub-Signature-256")]
    Signature,
    #[error("{0}")]
    BadRequest(String),
    #[error("the plan queue is full; redeliver later")]
    Busy,
    /// The delivery could not be recorded (so its replay could not be recognized): not handled.
    #[error("{0}")]
    Unavailable(String),
}

/// One queued plan.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub delivery: String,
    pub repo: RepoName,
    pub installation: Option<u64>,
    pub pr: PullInfo,
}

pub(crate) struct Receiver {
    exec: Arc<Executor>,
    gh: Arc<GitHub>,
    secret: Secret,
    seen: Mutex<Seen>,
    queue: mpsc::Sender<Job>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Receiver {
    /// `None` unless GitHub credentials and a webhook secret are configured. Starts the worker.
    pub(crate) fn start(exec: Arc<Executor>, gh: Option<Arc<GitHub>>) -> Option<Arc<Receiver>> {
        let gh = gh?;
        let secret = gh.config().webhook_secret.clone();
        if secret.expose().is_empty() {
            return None;
        }
        // Pull request trees a crash left behind hold nothing worth keeping.
        let _ = std::fs::remove_dir_all(exec.config().workspace_root.join(PULLS_DIR));
        let (tx, rx) = mpsc::channel(gh.config().queue_size);
        let receiver = Arc::new(Receiver {
            exec: exec.clone(),
            gh,
            secret,
            seen: Mutex::new(Seen::open(
                exec.config().state_dir.join(seen::FILE),
                unix_now(),
            )),
            queue: tx,
        });
        tokio::spawn(worker(exec, receiver.gh.clone(), rx));
        Some(receiver)
    }

    /// Handles one delivery. The signature is checked before the body is parsed at all.
    pub(crate) fn receive(
        &self,
        event: Option<&str>,
        delivery: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        source_ip: &str,
    ) -> Result<Accepted, Rejected> {
        let result = self.decide(event, delivery, signature, body);
        let (outcome, reason) = match &result {
            Ok(Accepted::Queued) => ("queued", String::new()),
            Ok(Accepted::Pong) => ("pong", String::new()),
            Ok(Accepted::Duplicate) => ("duplicate", String::new()),
            Ok(Accepted::Ignored(r)) => ("ignored", r.clone()),
            Err(e) => ("rejected", e.to_string()),
        };
        let level = if matches!(result, Err(Rejected::Signature)) {
            "warn"
        } else {
            "info"
        };
        let _ = self.exec.auditor().record(audit::event(
            "github_webhook",
            level,
            json!({
                "transport": "github",
                "source_ip": source_ip,
                // Unauthenticated values are not echoed into the trail.
                "delivery": if matches!(result, Err(Rejected::Signature)) { None } else { delivery },
                "github_event": if matches!(result, Err(Rejected::Signature)) { None } else { event },
                "outcome": outcome,
                "reason": reason,
            }),
        ));
        result
    }

    fn decide(
        &self,
        event: Option<&str>,
        delivery: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Accepted, Rejected> {
        if !verify_signature(self.secret.expose().as_bytes(), body, signature) {
            return Err(Rejected::Signature);
        }
        let delivery = delivery
            .filter(|d| !d.is_empty() && d.len() <= 100)
            .ok_or_else(|| Rejected::BadRequest("missing X-GitHub-Delivery".into()))?;
        let event = event.ok_or_else(|| Rejected::BadRequest("missing X-GitHub-Event".into()))?;
        let payload: Value = serde_json::from_slice(body)
            .map_err(|e| Rejected::BadRequest(format!("the body is not JSON: {e}")))?;
        let keys = seen::keys(delivery, body);
        let now = unix_now();
        let horizon = {
            let mut seen = self
                .seen
                .lock()
                .map_err(|_| Rejected::Unavailable("the delivery record is unusable".into()))?;
            if !seen.check_and_remember(&keys, now).map_err(|e| {
                tracing::error!("webhook delivery not handled: {e}");
                Rejected::Unavailable(e.to_string())
            })? {
                return Ok(Accepted::Duplicate);
            }
            seen.horizon(now)
        };
        let accepted = self.route(event, delivery, &payload, horizon);
        if matches!(accepted, Err(Rejected::Busy)) {
            // Nothing was done: a redelivery must be able to succeed.
            if let Ok(mut seen) = self.seen.lock() {
                seen.forget(&keys, now);
            }
        }
        accepted
    }

    fn route(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
        horizon: u64,
    ) -> Result<Accepted, Rejected> {
        match event {
            "ping" => return Ok(Accepted::Pong),
            "pull_request" => {}
            other => return Ok(Accepted::Ignored(format!("event {other} is not handled"))),
        }
        let action = payload["action"].as_str().unwrap_or_default();
        if !matches!(action, "opened" | "synchronize" | "reopened") {
            return Ok(Accepted::Ignored(format!(
                "pull_request action {action} does not need a plan"
            )));
        }
        // A replay of a delivery forgotten since (expired or evicted) is older than the horizon.
        if let Some(updated) = payload["pull_request"]["updated_at"].as_str()
            && let Some(t) = unix_seconds(updated)
            && t < horizon
        {
            return Ok(Accepted::Ignored(format!(
                "the pull request event is from {updated}, older than the deliveries remembered \
                 for de-duplication; it is not planned (push again to plan)"
            )));
        }
        let full = payload["repository"]["full_name"]
            .as_str()
            .ok_or_else(|| Rejected::BadRequest("repository.full_name is missing".into()))?;
        let repo = RepoName::parse(full).map_err(|e| Rejected::BadRequest(e.to_string()))?;
        if !self.gh.config().repo_allowed(&repo.full()) {
            return Ok(Accepted::Ignored(format!(
                "repository {repo} is not in TERRARIUM_GITHUB_REPOS"
            )));
        }
        let pr = PullInfo::from_json(&payload["pull_request"]).ok_or_else(|| {
            Rejected::BadRequest("pull_request lacks number, head.sha or base.repo".into())
        })?;
        super::check_ref(&pr.head_sha).map_err(|e| Rejected::BadRequest(e.to_string()))?;
        if pr.is_from_fork() && !self.gh.config().allow_forks {
            return Ok(Accepted::Ignored(
                "pull request from a fork (set TERRARIUM_GITHUB_ALLOW_FORKS=true to plan them)"
                    .into(),
            ));
        }
        let job = Job {
            delivery: delivery.to_string(),
            repo,
            installation: payload["installation"]["id"].as_u64(),
            pr,
        };
        match self.queue.try_send(job) {
            Ok(()) => Ok(Accepted::Queued),
            Err(_) => Err(Rejected::Busy),
        }
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp (GitHub's `updated_at`).
fn unix_seconds(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp()).ok()
}

/// Runs queued plans one at a time (each is itself several terraform runs under the executor's
/// limits).
async fn worker(exec: Arc<Executor>, gh: Arc<GitHub>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let outcome = plan_job(&exec, &gh, &job).await;
        let (level, fields) = match &outcome {
            Ok(code) => ("info", json!({"success": *code != 1, "exit_code": code})),
            Err(e) => (
                "error",
                json!({"success": false, "error": e.audit_message()}),
            ),
        };
        let mut fields = fields;
        fields["transport"] = json!("github");
        fields["delivery"] = json!(job.delivery);
        fields["repository"] = json!(job.repo.full());
        fields["pull_request"] = json!(job.pr.number);
        fields["head_sha"] = json!(job.pr.head_sha);
        let _ = exec
            .auditor()
            .record(audit::event("github_pull_request_plan", level, fields));
    }
}

/// Removes a fetched tree (root, relative) when dropped: it never outlives its plan.
struct RemoveOnDrop(PathBuf, String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        source::remove_tree(&self.0, &self.1);
    }
}

async fn plan_job(exec: &Executor, gh: &GitHub, job: &Job) -> Result<u8, super::GitHubError> {
    let client = gh.repo(&job.repo, job.installation).await?;
    let run = PullRun::start(&client, job.pr.clone(), &gh.config().check_name).await;
    let root = exec.config().workspace_root.clone();
    let fetched = async {
        let relative = source::fresh_dir(
            PULLS_DIR,
            &SourceRef {
                owner: job.repo.owner.clone(),
                name: job.repo.name.clone(),
                reference: job.pr.head_sha.clone(),
            },
        );
        let guard = RemoveOnDrop(root.clone(), relative.clone());
        fetch::fetch_into(
            &client,
            &job.pr.head_sha,
            &root,
            &relative,
            gh.config(),
            exec.config().timeout,
            &exec.shutdown_token(),
        )
        .await?;
        let dirs = run.changed_dirs(exec, &relative).await?;
        Ok::<_, super::GitHubError>((guard, relative, dirs))
    }
    .await;
    let (guard, relative, dirs) = match fetched {
        Ok(x) => x,
        Err(e) => {
            run.fail(&e.to_string()).await;
            return Err(e);
        }
    };
    let principal = format!("github:{}#{}", job.repo, job.pr.number);
    let report = run
        .plan(exec, &relative, &dirs, &principal, Transport::GitHub)
        .await;
    drop(guard);
    run.finish(&report).await?;
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let body = br#"{"zen":"hi"}"#;
        let sig = sign(b"s3cret", body);
        assert!(verify_signature(b"s3cret", body, Some(&sig)));
        assert!(!verify_signature(b"other", body, Some(&sig)));
        assert!(!verify_signature(
            b"s3cret",
            b"{\"zen\":\"ho\"}",
            Some(&sig)
        ));
        assert!(!verify_signature(b"s3cret", body, None));
        assert!(!verify_signature(b"s3cret", body, Some("sha256=zz")));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&sig.replace("sha256=", "sha1="))
        ));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&sig[..sig.len() - 2])
        ));
    }

    #[test]
    fn github_timestamps_parse() {
        assert_eq!(unix_seconds("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(unix_seconds("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
