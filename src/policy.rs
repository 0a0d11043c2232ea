//! What may run: the tool allowlist, the apply/destroy switches, and the checks a saved plan
//! must pass before it is applied. Pure functions of the configuration and the plan, so every
//! rule is unit-tested without terraform.

use crate::config::Config;
use crate::terraform::plan_summary::PlanSummary;
use crate::tools::ToolKind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown tool {0}: Terrarium exposes only the tools listed by tools/list")]
    UnknownTool(String),
    #[error(
        "terraform_apply is disabled on this server; set TERRARIUM_ENABLE_APPLY=true to allow applying saved plans"
    )]
    ApplyDisabled,
    #[error(
        "this plan deletes resources ({what}); deleting is disabled on this server. Set TERRARIUM_ENABLE_DESTROY=true to allow it"
    )]
    DestroyDisabled { what: String },
    #[error("this plan has nothing to apply")]
    NothingToApply,
}

/// Is this tool callable at all on this server?
pub fn check_tool(config: &Config, tool: &str) -> Result<(), PolicyError> {
    if ToolKind::from_name(tool).is_none() {
        return Err(PolicyError::UnknownTool(tool.to_string()));
    }
    if tool == "terraform_apply" && !config.enable_apply {
        return Err(PolicyError::ApplyDisabled);
    }
    Ok(())
}

/// Is this tool listed in `tools/list`? (A disabled apply is not advertised.)
pub fn is_listed(config: &Config, tool: &str) -> bool {
    check_tool(config, tool).is_ok()
}

/// May this saved plan be applied?
pub fn check_apply(enable_destroy: bool, plan: &PlanSummary) -> Result<(), PolicyError> {
    if plan.deletes && !enable_destroy {
        let c = &plan.counts;
        let what = if plan.destroy_mode {
            format!("destroy mode, {} to destroy", c.destroy)
        } else {
            format!("{} to destroy, of which {} replaced", c.destroy, c.replace)
        };
        return Err(PolicyError::DestroyDisabled { what });
    }
    if !plan.applyable {
        return Err(PolicyError::NothingToApply);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terraform::plan_summary::summarize;
    use serde_json::json;

    fn plan(actions: &[&str], destroy_mode: bool) -> PlanSummary {
        summarize(
            &json!({"format_version": "1.2", "applyable": true, "resource_changes": [
                {"address": "terraform_data.a", "mode": "managed", "type": "terraform_data", "name": "a",
                 "change": {"actions": actions}}]}),
            destroy_mode,
        )
        .unwrap()
    }

    #[test]
    fn deletes_need_the_destroy_switch() {
        assert!(check_apply(false, &plan(&["create"], false)).is_ok());
        assert!(check_apply(false, &plan(&["update"], false)).is_ok());
        for (actions, mode) in [
            (&["delete"][..], false),
            (&["delete", "create"][..], false),
            (&["create", "delete"][..], false),
            (&["no-op"][..], true),
        ] {
            let err = check_apply(false, &plan(actions, mode)).unwrap_err();
            assert!(
                err.to_string().contains("TERRARIUM_ENABLE_DESTROY"),
                "{actions:?}"
            );
            assert!(check_apply(true, &plan(actions, mode)).is_ok());
        }
    }
}
