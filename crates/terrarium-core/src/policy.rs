//! What may run: the tool allowlist, the apply/destroy switches, and the checks a saved plan
//! must pass before it is applied. The rules come from a policy file (`policies/default.toml`,
//! embedded, or `TERRARIUM_POLICY_FILE`) narrowed by the environment's switches. Pure functions
//! of the configuration, the policy and the plan, so every rule is unit-tested without terraform.

use std::path::Path;

use serde::Deserialize;

use crate::call::Transport;
use crate::config::Config;
use crate::terraform::plan_summary::PlanSummary;
use crate::tools::kind::ToolKind;

/// The policy shipped with Terrarium.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub tools: ToolRules,
    #[serde(default)]
    pub apply: ApplyRules,
    /// What each authenticated HTTP principal may do (by token name; `"*"` for everyone not
    /// named). Local front doors (stdio, CLI) act as the server's own user and are not limited
    /// by this table. A principal with no entry and no `"*"` entry may do nothing.
    #[serde(default)]
    pub principals: std::collections::BTreeMap<String, Grant>,
}

/// A principal's scopes and the workspaces it may touch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub scopes: Vec<Scope>,
    /// Globs over workspace paths relative to the root (`*` matches any run of characters).
    #[serde(default = "everything")]
    pub workspaces: Vec<String>,
    /// May show and apply (within its scopes) saved plans another caller made. Off by default:
    /// a plan carries its maker's variables, and its id must not work as a bearer capability.
    #[serde(default)]
    pub apply_others_plans: bool,
    /// May show (not apply) saved plans another caller made.
    #[serde(default)]
    pub show_others_plans: bool,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

/// What a scope allows: `read` the read-only tools, `plan` also init, fmt and plan, `apply`
/// also apply. Scopes do not imply each other: grant each one that is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Plan,
    Apply,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Plan => "plan",
            Scope::Apply => "apply",
        }
    }

    /// The scope a tool needs.
    pub fn of(tool: ToolKind) -> Scope {
        match tool {
            ToolKind::Apply => Scope::Apply,
            ToolKind::Init | ToolKind::Fmt | ToolKind::Plan | ToolKind::GitHubPrepare => {
                Scope::Plan
            }
            _ => Scope::Read,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRules {
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRules {
    #[serde(default)]
    pub protected: Vec<String>,
    #[serde(default = "default_max_destroy")]
    pub max_destroy: u64,
}

impl Default for ApplyRules {
    fn default() -> Self {
        ApplyRules {
            protected: Vec::new(),
            max_destroy: default_max_destroy(),
        }
    }
}

fn default_max_destroy() -> u64 {
    100
}

#[derive(Debug, thiserror::Error)]
#[error("policy {source_name}: {message}")]
pub struct PolicyFileError {
    source_name: String,
    message: String,
}

impl Policy {
    /// Parses and checks a policy; `source_name` is used in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Policy, PolicyFileError> {
        let err = |message: String| PolicyFileError {
            source_name: source_name.to_string(),
            message,
        };
        let policy: Policy = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        for t in &policy.tools.allow {
            if ToolKind::from_name(t).is_none() {
                return Err(err(format!("tools.allow names an unknown tool {t:?}")));
            }
        }
        for p in &policy.apply.protected {
            if p.is_empty() || p.len() > 512 {
                return Err(err(format!("apply.protected: bad pattern {p:?}")));
            }
        }
        Ok(policy)
    }

    pub fn load(path: Option<&Path>) -> Result<Policy, PolicyFileError> {
        match path {
            None => Policy::parse(DEFAULT_POLICY, "policies/default.toml (built in)"),
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| PolicyFileError {
                    source_name: name.clone(),
                    message: e.to_string(),
                })?;
                Policy::parse(&text, &name)
            }
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown tool {0}: Terrarium exposes only the tools listed by tools/list")]
    UnknownTool(String),
    #[error("tool {0} is not allowed by this server's policy (tools.allow)")]
    ToolNotAllowed(String),
    #[error(
        "this plan would delete or replace the protected resource {address} (policy apply.protected); it cannot be applied here"
    )]
    Protected { address: String },
    #[error(
        "this plan deletes {count} resources, more than this server's policy allows in one apply (apply.max_destroy = {max})"
    )]
    TooManyDeletes { count: u64, max: u64 },
    #[error(
        "terraform_apply is disabled on this server; set TERRARIUM_ENABLE_APPLY=true to allow applying saved plans"
    )]
    ApplyDisabled,
    #[error(
        "github_prepare_workspace needs GitHub access; set TERRARIUM_GITHUB_APP_ID and TERRARIUM_GITHUB_PRIVATE_KEY (or TERRARIUM_GITHUB_TOKEN) and TERRARIUM_GITHUB_REPOS"
    )]
    GitHubNotConfigured,
    #[error(
        "this plan deletes resources ({what}); deleting is disabled on this server. Set TERRARIUM_ENABLE_DESTROY=true to allow it"
    )]
    DestroyDisabled { what: String },
    #[error("this plan has nothing to apply")]
    NothingToApply,
    #[error(
        "{principal} may not call {tool}: it needs the {scope} scope, which this server's policy does not grant them"
    )]
    MissingScope {
        principal: String,
        tool: String,
        scope: &'static str,
    },
    #[error(
        "{principal} may not use workspace {workspace} (policy principals.{principal}.workspaces)"
    )]
    WorkspaceNotGranted {
        principal: String,
        workspace: String,
    },
}

/// Is this tool callable at all on this server?
/// `source_configured`: whether the binary gave the executor a workspace source (GitHub).
pub fn check_tool(
    config: &Config,
    policy: &Policy,
    tool: &str,
    source_configured: bool,
) -> Result<(), PolicyError> {
    if ToolKind::from_name(tool).is_none() {
        return Err(PolicyError::UnknownTool(tool.to_string()));
    }
    if !policy.tools.allow.iter().any(|t| t == tool) {
        return Err(PolicyError::ToolNotAllowed(tool.to_string()));
    }
    if tool == "terraform_apply" && !config.enable_apply {
        return Err(PolicyError::ApplyDisabled);
    }
    if tool == "github_prepare_workspace" && !source_configured {
        return Err(PolicyError::GitHubNotConfigured);
    }
    Ok(())
}

/// Is this tool listed in `tools/list`? (A disabled apply is not advertised.)
pub fn is_listed(config: &Config, policy: &Policy, tool: &str, source_configured: bool) -> bool {
    check_tool(config, policy, tool, source_configured).is_ok()
}

/// The grant that applies to a principal, if any.
pub fn grant_for<'a>(policy: &'a Policy, principal: &str) -> Option<&'a Grant> {
    policy
        .principals
        .get(principal)
        .or_else(|| policy.principals.get("*"))
}

/// May this principal call this tool (on this workspace)? Local transports always may.
pub fn check_access(
    policy: &Policy,
    transport: Transport,
    principal: &str,
    tool: ToolKind,
    workspace: Option<&str>,
) -> Result<(), PolicyError> {
    if !transport.is_remote() {
        return Ok(());
    }
    let scope = Scope::of(tool);
    let grant = grant_for(policy, principal);
    if !grant.is_some_and(|g| g.scopes.contains(&scope)) {
        return Err(PolicyError::MissingScope {
            principal: principal.to_string(),
            tool: tool.name().to_string(),
            scope: scope.as_str(),
        });
    }
    if let (Some(ws), Some(g)) = (workspace, grant)
        && !g.workspaces.iter().any(|glob| glob_match(glob, ws))
    {
        return Err(PolicyError::WorkspaceNotGranted {
            principal: principal.to_string(),
            workspace: ws.to_string(),
        });
    }
    Ok(())
}

/// What a caller wants to do with a saved plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanUse {
    Show,
    Apply,
}

/// May this caller use saved plans made by other callers? Local front doors (the server's own
/// user, who can read the plan store anyway) always may; a remote principal only when its
/// grant says so (`apply_others_plans` for show and apply, `show_others_plans` for show).
pub fn may_use_others_plans(
    policy: &Policy,
    transport: Transport,
    principal: &str,
    how: PlanUse,
) -> bool {
    if !transport.is_remote() {
        return true;
    }
    grant_for(policy, principal)
        .is_some_and(|g| g.apply_others_plans || (how == PlanUse::Show && g.show_others_plans))
}

/// Whether a principal may see a workspace at all (for `workspace_list`).
pub fn workspace_visible(
    policy: &Policy,
    transport: Transport,
    principal: &str,
    workspace: &str,
) -> bool {
    !transport.is_remote()
        || grant_for(policy, principal)
            .is_some_and(|g| g.workspaces.iter().any(|glob| glob_match(glob, workspace)))
}

/// May this saved plan be applied?
pub fn check_apply(
    enable_destroy: bool,
    policy: &Policy,
    plan: &PlanSummary,
) -> Result<(), PolicyError> {
    for rc in &plan.resource_changes {
        if rc.actions.iter().any(|a| a == "delete")
            && let Some(_) = policy
                .apply
                .protected
                .iter()
                .find(|p| glob_match(p, &rc.address))
        {
            return Err(PolicyError::Protected {
                address: rc.address.clone(),
            });
        }
    }
    if plan.deletes && enable_destroy && plan.counts.destroy > policy.apply.max_destroy {
        return Err(PolicyError::TooManyDeletes {
            count: plan.counts.destroy,
            max: policy.apply.max_destroy,
        });
    }
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

    fn default_policy() -> Policy {
        Policy::load(None).unwrap()
    }

    #[test]
    fn deletes_need_the_destroy_switch() {
        let p = default_policy();
        assert!(check_apply(false, &p, &plan(&["create"], false)).is_ok());
        assert!(check_apply(false, &p, &plan(&["update"], false)).is_ok());
        for (actions, mode) in [
            (&["delete"][..], false),
            (&["delete", "create"][..], false),
            (&["create", "delete"][..], false),
            (&["no-op"][..], true),
        ] {
            let err = check_apply(false, &p, &plan(actions, mode)).unwrap_err();
            assert!(
                err.to_string().contains("TERRARIUM_ENABLE_DESTROY"),
                "{actions:?}"
            );
            assert!(check_apply(true, &p, &plan(actions, mode)).is_ok());
        }
    }

    #[test]
    fn protected_resources_are_never_deleted() {
        let mut p = default_policy();
        p.apply.protected = vec!["terraform_*.a".into()];
        let err = check_apply(true, &p, &plan(&["delete", "create"], false)).unwrap_err();
        assert!(matches!(err, PolicyError::Protected { .. }), "{err}");
        assert!(check_apply(true, &p, &plan(&["update"], false)).is_ok());
    }

    #[test]
    fn max_destroy_bounds_one_apply() {
        let mut p = default_policy();
        p.apply.max_destroy = 0;
        let err = check_apply(true, &p, &plan(&["delete"], false)).unwrap_err();
        assert!(
            matches!(err, PolicyError::TooManyDeletes { count: 1, max: 0 }),
            "{err}"
        );
    }

    #[test]
    fn policy_files_are_checked() {
        assert!(Policy::parse("[tools]\nallow = [\"terraform_import\"]\n", "t").is_err());
        assert!(Policy::parse("[tools]\nallow = []\nextra = 1\n", "t").is_err());
        let p = Policy::parse("[tools]\nallow = [\"terraform_plan\"]\n", "t").unwrap();
        assert_eq!(p.apply.max_destroy, 100);
    }

    #[test]
    fn scopes_and_workspaces_bind_remote_principals_only() {
        let p = Policy::parse(
            r#"
[tools]
allow = ["terraform_plan", "terraform_apply", "terraform_show"]
[principals.ci]
scopes = ["read", "plan"]
workspaces = ["team-a/*"]
[principals.ops]
scopes = ["read", "plan", "apply"]
"#,
            "t",
        )
        .unwrap();
        let plan = ToolKind::Plan;
        assert!(check_access(&p, Transport::Http, "ci", plan, Some("team-a/net")).is_ok());
        assert!(matches!(
            check_access(&p, Transport::Http, "ci", plan, Some("team-b/net")),
            Err(PolicyError::WorkspaceNotGranted { .. })
        ));
        assert!(matches!(
            check_access(
                &p,
                Transport::Http,
                "ci",
                ToolKind::Apply,
                Some("team-a/net")
            ),
            Err(PolicyError::MissingScope { scope: "apply", .. })
        ));
        assert!(
            check_access(
                &p,
                Transport::Http,
                "ops",
                ToolKind::Apply,
                Some("anything")
            )
            .is_ok()
        );
        assert!(
            check_access(&p, Transport::Http, "stranger", ToolKind::Show, None).is_err(),
            "no entry, no \"*\": nothing"
        );
        assert!(check_access(&p, Transport::Stdio, "stdio", ToolKind::Apply, Some("x")).is_ok());
        assert!(
            workspace_visible(&p, Transport::Http, "ci", "team-a/x")
                && !workspace_visible(&p, Transport::Http, "ci", "b")
        );
    }

    #[test]
    fn the_default_policy_lets_principals_read_and_plan_but_not_apply() {
        let p = default_policy();
        assert!(check_access(&p, Transport::Http, "anyone", ToolKind::Plan, Some("x")).is_ok());
        assert!(check_access(&p, Transport::Http, "anyone", ToolKind::Apply, Some("x")).is_err());
    }

    #[test]
    fn others_plans_need_an_explicit_grant() {
        let p = Policy::parse(
            r#"
[tools]
allow = ["terraform_apply", "terraform_show"]
[principals.ops]
scopes = ["read", "apply"]
[principals.lead]
scopes = ["read", "apply"]
apply_others_plans = true
[principals.auditor]
scopes = ["read"]
show_others_plans = true
"#,
            "t",
        )
        .unwrap();
        for how in [PlanUse::Show, PlanUse::Apply] {
            assert!(!may_use_others_plans(&p, Transport::Http, "ops", how));
            assert!(!may_use_others_plans(&p, Transport::Http, "stranger", how));
            assert!(may_use_others_plans(&p, Transport::Http, "lead", how));
            assert!(may_use_others_plans(&p, Transport::Stdio, "stdio", how));
        }
        assert!(may_use_others_plans(
            &p,
            Transport::Http,
            "auditor",
            PlanUse::Show
        ));
        assert!(!may_use_others_plans(
            &p,
            Transport::Http,
            "auditor",
            PlanUse::Apply
        ));
        let d = default_policy();
        assert!(!may_use_others_plans(
            &d,
            Transport::Http,
            "anyone",
            PlanUse::Show
        ));
    }

    #[test]
    fn globs() {
        assert!(glob_match("module.db.*", "module.db.aws_db_instance.main"));
        assert!(glob_match(
            "*.production_*",
            "aws_s3_bucket.production_logs"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("a*b*c", "a-b-c"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
