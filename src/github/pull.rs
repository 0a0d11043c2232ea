//! Planning a pull request and reporting back, shared by `terrarium ci plan` (the code is the
//! Actions checkout) and the webhook (the code is a freshly fetched archive).
//!
//! A check run is opened first, so the pull request shows the plan is under way; then the
//! changed directories are planned through the executor, the comment is written or updated,
//! and the check run completed. A failure anywhere still completes the check run.

use serde_json::Value;

use super::client::{PullInfo, RepoClient};
use super::{GitHubError, RepoName, report};
use crate::ci::report::{self as ci, Report};
use terrarium_core::{Executor, Transport};

/// A plan of one pull request in progress.
pub(crate) struct PullRun<'a> {
    client: &'a RepoClient,
    pr: PullInfo,
    check_run: Option<u64>,
}

impl<'a> PullRun<'a> {
    /// Opens the check run. Not being able to (a missing `checks: write` permission) is logged
    /// and the plan goes on: the comment still reports it.
    pub(crate) async fn start(
        client: &'a RepoClient,
        pr: PullInfo,
        check_name: &str,
    ) -> PullRun<'a> {
        let check_run = match client.create_check_run(check_name, &pr.head_sha).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(repo = %client.repo, pr = pr.number, error = %e, "cannot create the check run");
                None
            }
        };
        PullRun {
            client,
            pr,
            check_run,
        }
    }

    /// The directories to plan: root modules under `base` that the pull request's files touch.
    /// Returned relative to `base`.
    pub(crate) async fn changed_dirs(
        &self,
        exec: &Executor,
        base: &str,
    ) -> Result<Vec<String>, GitHubError> {
        let files = self.client.pull_files(self.pr.number).await?;
        Ok(ci::dirs_of_changed_files(exec, base, &files))
    }

    /// Plans `dirs` (relative to `base`) and reports. The report shows repository paths.
    pub(crate) async fn plan(
        &self,
        exec: &Executor,
        base: &str,
        dirs: &[String],
        principal: &str,
        transport: Transport,
    ) -> Report {
        let full: Vec<String> = dirs.iter().map(|d| ci::under(base, d)).collect();
        let mut report = ci::plan_as(exec, &full, principal, transport).await;
        for (d, shown) in report.dirs.iter_mut().zip(dirs) {
            d.path = shown.clone();
        }
        report
    }

    /// Writes the comment and completes the check run.
    pub(crate) async fn finish(&self, report: &Report) -> Result<(), GitHubError> {
        let summary = ci::markdown(report);
        let md = report::comment_markdown(&summary, &self.pr.head_sha);
        let comment = report::upsert_comment(self.client, self.pr.number, &md).await;
        if let Some(id) = self.check_run {
            let (conclusion, title) = report::check_outcome(report);
            self.client
                .complete_check_run(id, conclusion, &title, &summary, "")
                .await?;
        }
        comment.map(drop)
    }

    /// Completes the check run as failed with `message` (the plan could not even start).
    pub(crate) async fn fail(&self, message: &str) {
        if let Some(id) = self.check_run {
            let summary = format!("Terrarium could not plan this pull request:\n\n{message}\n");
            if let Err(e) = self
                .client
                .complete_check_run(id, "failure", "Plan could not run", &summary, "")
                .await
            {
                tracing::warn!(repo = %self.client.repo, error = %e, "cannot complete the check run");
            }
        }
    }
}

/// Which pull request a CI run is for: `--repo` and `--pr` when given, else the
/// `pull_request` (or `pull_request_target`) event GitHub Actions saved at `GITHUB_EVENT_PATH`.
/// `None` when the run is not for a pull request (a push, another CI system).
pub(crate) fn ci_target(
    repo: Option<&str>,
    pr: Option<u64>,
    event_path: Option<&std::path::Path>,
) -> Result<Option<(RepoName, u64)>, GitHubError> {
    match (repo, pr) {
        (Some(r), Some(n)) => return Ok(Some((RepoName::parse(r)?, n))),
        (Some(_), None) | (None, Some(_)) => {
            return Err(GitHubError::Io("--repo and --pr go together".into()));
        }
        (None, None) => {}
    }
    let Some(path) = event_path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| GitHubError::Io(format!("GITHUB_EVENT_PATH {}: {e}", path.display())))?;
    let event: Value = serde_json::from_str(&text)
        .map_err(|e| GitHubError::Io(format!("GITHUB_EVENT_PATH {}: {e}", path.display())))?;
    let (Some(number), Some(full)) = (
        event["pull_request"]["number"].as_u64(),
        event["repository"]["full_name"].as_str(),
    ) else {
        return Ok(None);
    };
    Ok(Some((RepoName::parse(full)?, number)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_target_from_flags_or_event() {
        assert_eq!(
            ci_target(Some("acme/infra"), Some(7), None).ok().flatten(),
            Some((
                RepoName::parse("acme/infra")
                    .ok()
                    .unwrap_or_else(|| unreachable!()),
                7
            ))
        );
        assert!(ci_target(Some("acme/infra"), None, None).is_err());
        assert!(ci_target(Some("bad"), Some(1), None).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let pr_event = dir.path().join("pr.json");
        std::fs::write(
            &pr_event,
            r#"{"action":"opened","number":5,"pull_request":{"number":5},"repository":{"full_name":"acme/infra"}}"#,
        )
        .expect("write");
        let t = ci_target(None, None, Some(&pr_event)).expect("parses");
        assert_eq!(
            t.map(|(r, n)| (r.full(), n)),
            Some(("acme/infra".into(), 5))
        );
        let push = dir.path().join("push.json");
        std::fs::write(
            &push,
            r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/infra"}}"#,
        )
        .expect("write");
        assert!(
            ci_target(None, None, Some(&push))
                .expect("parses")
                .is_none()
        );
        assert!(ci_target(None, None, None).expect("none").is_none());
    }
}
