//! `terraform_providers`: the providers the configuration requires.

use super::{ToolOutput, simple};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Invocation;
use crate::terraform::Subcommand;
use crate::workspace::Workspace;

pub(super) async fn run(ctx: &RunCtx<'_>, ws: &Workspace) -> Result<ToolOutput, ToolError> {
    simple(ctx, ws, Invocation::new(Subcommand::Providers)).await
}
