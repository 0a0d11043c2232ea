//! Planning a set of Terraform directories through the executor and reporting it: which
//! directories (root modules, those with changed files), the plans, the Markdown summary, and the
//! exit code in `terraform plan -detailed-exitcode`'s convention (0 no changes, 2 changes, 1
//! error). Shared by `terrarium ci plan` and the GitHub pull-request flow; every run goes through
//! [`Executor::call`].

use std::path::Path;

use serde_json::{Value, json};
use terrarium_core::{CallContext, Executor, Transport};

/// One directory's result.
#[derive(Debug, Clone)]
pub(crate) struct DirResult {
    pub path: String,
    pub ok: bool,
    pub changes: bool,
    pub counts: Value,
    pub resource_changes: Vec<String>,
    pub error: Option<String>,
    pub output: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub dirs: Vec<DirResult>,
    /// Why the sandbox the runs had was weaker than strict (a layer missing in best-effort
    /// mode, a layer disabled, the sandbox off); empty when every layer was enforced. Stated
    /// at the top of the summary, the pull request comment and the check run, so a reviewer
    /// never mistakes a plan of untrusted code run with less isolation for a confined one.
    pub sandbox: Vec<String>,
}

impl Report {
    /// The notice for a sandbox that is not strict, `None` when it is.
    pub(crate) fn sandbox_notice(&self) -> Option<String> {
        if self.sandbox.is_empty() {
            return None;
        }
        let mut md = String::from(
            "> [!WARNING]\n> **Sandbox not strict:** terraform ran with weaker isolation than \
             Terrarium's strict sandbox, so this code could reach more of the runner than a \
             confined run.\n",
        );
        for w in &self.sandbox {
            md.push_str(&format!("> - {}\n", w.replace('\n', " ")));
        }
        Some(md)
    }

    /// 1 if any directory failed, else 2 if any has changes, else 0.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.dirs.iter().any(|d| !d.ok) {
            1
        } else if self.dirs.iter().any(|d| d.changes) {
            2
        } else {
            0
        }
    }
}

/// Root modules under `base` (a directory relative to the root, `""` for the root itself):
/// directories with `.tf` files that are not inside a `modules` directory (those are called by
/// root modules, not planned on their own). Paths are relative to `base`.
pub(crate) fn root_modules(exec: &Executor, base: &str) -> Vec<String> {
    let root = exec.root();
    let found = if base.is_empty() {
        root.list(8, 1000)
    } else {
        match root.workspace("base", base) {
            Ok(start) => root.list_in(&start, 8, 1000),
            Err(_) => Vec::new(),
        }
    };
    found
        .into_iter()
        .filter(|d| {
            !Path::new(d)
                .components()
                .any(|c| c.as_os_str() == "modules")
        })
        .collect()
}

/// `dir` (relative to `base`) as a path relative to the root.
pub(crate) fn under(base: &str, dir: &str) -> String {
    match (base, dir) {
        ("", d) => d.to_string(),
        (b, ".") => b.to_string(),
        (b, d) => format!("{b}/{d}"),
    }
}

/// Root modules under `base` holding the given changed files (paths relative to `base`, as a
/// pull request lists them); the result is relative to `base` too.
pub(crate) fn dirs_of_changed_files(exec: &Executor, base: &str, files: &[String]) -> Vec<String> {
    let roots = root_modules(exec, base);
    let mut dirs: Vec<String> = files
        .iter()
        .filter(|f| {
            f.ends_with(".tf")
                || f.ends_with(".tfvars")
                || f.ends_with(".tf.json")
                || f.ends_with(".tfvars.json")
        })
        .map(|f| {
            let parent = Path::new(f)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if parent.is_empty() {
                ".".to_string()
            } else {
                parent
            }
        })
        .filter(|d| roots.contains(d))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Inits and plans each directory, one after another, as the local CI caller.
pub(crate) async fn plan(exec: &Executor, dirs: &[String]) -> Report {
    plan_as(exec, dirs, "ci", Transport::Cli).await
}

/// Inits and plans each directory (relative to the root) with the given caller identity.
pub(crate) async fn plan_as(
    exec: &Executor,
    dirs: &[String],
    principal: &str,
    transport: Transport,
) -> Report {
    let mut report = Report {
        sandbox: exec.sandbox().warnings(),
        ..Report::default()
    };
    for dir in dirs {
        let ctx = || CallContext::new(principal, transport);
        let init = exec
            .call("terraform_init", json!({"path": dir}), ctx())
            .await;
        let result = if init.is_error {
            DirResult {
                path: dir.clone(),
                ok: false,
                changes: false,
                counts: Value::Null,
                resource_changes: Vec::new(),
                error: Some(first_line(&init.text)),
                output: init.text,
            }
        } else {
            let plan = exec
                .call("terraform_plan", json!({"path": dir}), ctx())
                .await;
            let s = &plan.structured;
            DirResult {
                path: dir.clone(),
                ok: !plan.is_error,
                changes: s["changes"] == true,
                counts: s["summary"]["counts"].clone(),
                resource_changes: s["summary"]["resource_changes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|rc| {
                                let actions: Vec<&str> = rc["actions"]
                                    .as_array()
                                    .map(|x| x.iter().filter_map(Value::as_str).collect())
                                    .unwrap_or_default();
                                format!(
                                    "{} {}",
                                    actions.join("/"),
                                    rc["address"].as_str().unwrap_or_default()
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                error: plan.is_error.then(|| first_line(&plan.text)),
                output: plan.text,
            }
        };
        report.dirs.push(result);
    }
    report
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string()
}

/// The Markdown summary: a table, then per directory its changes, errors and the full output
/// folded under `<details>`.
pub(crate) fn markdown(report: &Report) -> String {
    let mut md = String::from("## Terraform plan\n\n");
    if let Some(notice) = report.sandbox_notice() {
        md.push_str(&notice);
        md.push('\n');
    }
    if report.dirs.is_empty() {
        md.push_str("No Terraform directories to plan.\n");
        return md;
    }
    md.push_str("| Directory | Result | Add | Change | Destroy |\n|---|---|---|---|---|\n");
    for d in &report.dirs {
        let result = match (d.ok, d.changes) {
            (false, _) => "❌ error",
            (true, true) => "📝 changes",
            (true, false) => "✅ no changes",
        };
        let n = |k: &str| {
            d.counts[k]
                .as_u64()
                .map_or("-".to_string(), |v| v.to_string())
        };
        md.push_str(&format!(
            "| `{}` | {result} | {} | {} | {} |\n",
            d.path,
            n("add"),
            n("change"),
            n("destroy")
        ));
    }
    for d in &report.dirs {
        md.push_str(&format!("\n### `{}`\n\n", d.path));
        if let Some(e) = &d.error {
            md.push_str(&format!("**Error:** {e}\n\n"));
        }
        for rc in &d.resource_changes {
            md.push_str(&format!("- `{rc}`\n"));
        }
        md.push_str(&format!(
            "\n<details><summary>Output</summary>\n\n```text\n{}\n```\n\n</details>\n",
            d.output.replace("```", "'''")
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(ok: bool, changes: bool) -> DirResult {
        DirResult {
            path: "a".into(),
            ok,
            changes,
            counts: json!({"add": 1, "change": 0, "destroy": 0}),
            resource_changes: vec!["create terraform_data.x".into()],
            error: None,
            output: "out ``` fence".into(),
        }
    }

    #[test]
    fn exit_codes_follow_detailed_exitcode() {
        assert_eq!(Report::default().exit_code(), 0);
        assert_eq!(
            Report {
                dirs: vec![dir(true, false)],
                ..Report::default()
            }
            .exit_code(),
            0
        );
        assert_eq!(
            Report {
                dirs: vec![dir(true, false), dir(true, true)],
                ..Report::default()
            }
            .exit_code(),
            2
        );
        assert_eq!(
            Report {
                dirs: vec![dir(true, true), dir(false, false)],
                ..Report::default()
            }
            .exit_code(),
            1
        );
    }

    #[test]
    fn markdown_keeps_code_blocks_balanced() {
        let md = markdown(&Report {
            dirs: vec![dir(true, true)],
            ..Report::default()
        });
        assert!(md.contains("| `a` | 📝 changes | 1 | 0 | 0 |"));
        assert_eq!(md.matches("```").count() % 2, 0, "{md}");
        assert!(!md.contains("Sandbox not strict"), "{md}");
    }

    #[test]
    fn a_sandbox_that_is_not_strict_is_stated_first() {
        let md = markdown(&Report {
            dirs: vec![dir(true, false)],
            sandbox: vec!["sandbox layer seccomp is disabled by TERRARIUM_SANDBOX_DISABLE".into()],
        });
        let notice = md.find("Sandbox not strict").expect("stated");
        assert!(notice < md.find("| Directory").expect("table"), "{md}");
        assert!(md.contains("seccomp is disabled"), "{md}");
    }
}
