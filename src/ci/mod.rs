//! The CI front door: `terrarium ci plan` plans a checkout's Terraform directories through the
//! same executor (and sandbox) as the MCP front doors, reports on the pull request when it can,
//! and exits like `terraform plan -detailed-exitcode`.

pub(crate) mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use terrarium_core::sandbox::ProcessRunner;
use terrarium_core::{Executor, Transport};

use crate::github::{GitHub, pull};
use crate::settings::Settings;
use report::{dirs_of_changed_files, markdown, plan, root_modules};

/// `terrarium ci plan`: plans the chosen directories of the checkout at the workspace root,
/// reports on the pull request when GitHub credentials and a pull request are known, prints
/// the Markdown summary (and appends it to `GITHUB_STEP_SUMMARY`), and returns the exit code.
pub(crate) async fn run(
    settings: Settings,
    host_env: BTreeMap<String, String>,
    dirs: Vec<String>,
    base: Option<String>,
    pull: Option<(String, u64)>,
) -> anyhow::Result<ExitCode> {
    let gh = GitHub::from_config(&settings.github)?.map(Arc::new);
    let mut config = settings.core;
    let root = config.workspace_root.clone();
    // The root is one repository's checkout: a directory may read the rest of it (its
    // `../../modules`), as in a fetched repository. Writes stay confined to the directory.
    config.sandbox_read_paths.push(root.clone());
    let event_path = host_env.get("GITHUB_EVENT_PATH").map(PathBuf::from);
    let summary_path = host_env.get("GITHUB_STEP_SUMMARY").map(PathBuf::from);
    let exec = Executor::new(config, Arc::new(ProcessRunner::new()), host_env, None)?;
    let target = pull::ci_target(
        pull.as_ref().map(|p| p.0.as_str()),
        pull.as_ref().map(|p| p.1),
        event_path.as_deref(),
    )?;
    let report = match (gh, target) {
        (Some(gh), Some((repo, number))) => {
            // Report back on the pull request; its files decide the directories.
            let client = gh.repo(&repo, None).await?;
            let pr = client.pull(number).await?;
            let run = pull::PullRun::start(&client, pr, &gh.config().check_name).await;
            let dirs = if dirs.is_empty() {
                match run.changed_dirs(&exec, "").await {
                    Ok(d) => d,
                    Err(e) => {
                        run.fail(&e.to_string()).await;
                        return Err(e.into());
                    }
                }
            } else {
                dirs
            };
            let report = run.plan(&exec, "", &dirs, "ci", Transport::Cli).await;
            run.finish(&report).await?;
            report
        }
        (None, Some((repo, number))) => {
            tracing::warn!(%repo, number, "no GitHub credentials: planning without reporting on the pull request");
            plan(&exec, &chosen_dirs(&exec, &root, dirs, base)?).await
        }
        (_, None) => plan(&exec, &chosen_dirs(&exec, &root, dirs, base)?).await,
    };
    let md = markdown(&report);
    print!("{md}");
    if let Some(path) = summary_path {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .context("writing GITHUB_STEP_SUMMARY")?;
        f.write_all(md.as_bytes())?;
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Directories for a plain CI run: given, changed since `--base`, or every root module.
fn chosen_dirs(
    exec: &Executor,
    root: &Path,
    dirs: Vec<String>,
    base: Option<String>,
) -> anyhow::Result<Vec<String>> {
    Ok(if !dirs.is_empty() {
        dirs
    } else if let Some(base) = base {
        dirs_of_changed_files(exec, "", &changed_since(root, &base)?)
    } else {
        root_modules(exec, "")
    })
}

/// Files changed between `base` and `HEAD` in the checkout at `root` (`git diff base...HEAD`).
/// git runs on the operator's own checkout, never on fetched content, and with the ref checked
/// so that it cannot be read as an option.
fn changed_since(root: &Path, base: &str) -> anyhow::Result<Vec<String>> {
    if base.starts_with('-') || base.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("--base {base:?} is not a git ref");
    }
    let out = std::process::Command::new("git")
        .args(["diff", "--name-only", &format!("{base}...HEAD"), "--"])
        .current_dir(root)
        .output()
        .context("running git diff (is git installed and the root a checkout?)")?;
    if !out.status.success() {
        anyhow::bail!(
            "git diff {base}...HEAD failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}
