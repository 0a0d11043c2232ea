//! `terraform_fmt`: a check with a diff by default; files are rewritten only with `write: true`.

use serde::Deserialize;
use serde_json::json;

use super::{ToolOutput, from_run};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Invocation;
use crate::terraform::Subcommand;
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    #[serde(default)]
    write: bool,
    #[serde(default)]
    recursive: bool,
}

/// `terraform fmt -check` exits 3 when files need formatting: a finding, not a failure.
const EXIT_UNFORMATTED: i32 = 3;

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    let inv = if args.write {
        Invocation::new(Subcommand::Fmt)
            .flag("no-color")
            .flag("list=true")
            .flag_if(args.recursive, "recursive")
    } else {
        Invocation::new(Subcommand::Fmt)
            .flag("no-color")
            .flag("check")
            .flag("diff")
            .flag_if(args.recursive, "recursive")
    };
    let dir = ctx.run_dir()?;
    let outcome = ctx.terraform(ws, &dir, &inv, false).await?;
    let stdout = outcome.stdout.text.clone();
    let files: Vec<String> = if args.write {
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect()
    } else {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("--- old/"))
            .map(String::from)
            .collect()
    };
    let unformatted = outcome.exit_code == Some(EXIT_UNFORMATTED) && !args.write;
    let ok = outcome.success() || (unformatted && !outcome.timed_out && !outcome.cancelled);
    let text = match (args.write, files.is_empty()) {
        (true, true) => "All files were already formatted; nothing was changed.".to_string(),
        (true, false) => format!("Rewrote {} file(s):\n{}", files.len(), files.join("\n")),
        (false, true) if ok => "All files are formatted.".to_string(),
        (false, _) => format!(
            "{} file(s) need formatting (nothing was changed):\n{}",
            files.len(),
            stdout.trim_end()
        ),
    };
    let mut out = from_run(outcome, &inv, text);
    out.success = ok;
    out.data
        .insert("formatted".into(), json!(args.write || !unformatted));
    out.data.insert("written".into(), json!(args.write));
    out.data.insert("files".into(), json!(files));
    Ok(out)
}
