//! `terraform_init`: backend, modules and providers (through the server's plugin cache).

use serde::Deserialize;

use super::{ToolOutput, simple};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Invocation;
use crate::terraform::Subcommand;
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    #[serde(default)]
    upgrade: bool,
    #[serde(default = "super::yes")]
    backend: bool,
}

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    let inv = Invocation::new(Subcommand::Init)
        .flag("input=false")
        .flag("no-color")
        .flag_if(args.upgrade, "upgrade")
        .flag_if(!args.backend, "backend=false");
    simple(ctx, ws, inv).await
}
