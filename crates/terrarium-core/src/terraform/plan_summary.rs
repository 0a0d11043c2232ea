//! A plan's meaning, from `terraform show -json PLANFILE`: what will be added, changed, replaced
//! and destroyed, and how outputs change. This is what callers read and what the apply policy
//! checks, so it is computed once, at plan time, and stored with the plan.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Shown instead of a sensitive value.
pub const SENSITIVE: &str = "(sensitive value)";
/// Shown instead of a value only known after apply.
pub const UNKNOWN: &str = "(known after apply)";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub add: u64,
    pub change: u64,
    pub destroy: u64,
    /// Replacements, also counted in `add` and `destroy` (as terraform counts them).
    pub replace: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub mode: String,
    pub actions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputChange {
    pub name: String,
    pub actions: Vec<String>,
    pub sensitive: bool,
    /// The planned value, redacted when sensitive and a marker when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub counts: Counts,
    /// True when the plan deletes anything (destroy mode, delete, or replace).
    pub deletes: bool,
    pub resource_changes: Vec<ResourceChange>,
    pub output_changes: Vec<OutputChange>,
    /// Whether the plan was made with `-destroy`.
    pub destroy_mode: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terraform_version: Option<String>,
    /// Whether terraform considers the plan applicable (false when it errored or is empty).
    pub applyable: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("terraform show -json returned something that is not a plan: {0}")]
pub struct PlanParseError(String);

/// Names of root-module variables the configuration declares `sensitive`.
pub fn sensitive_variables(plan: &Value) -> Vec<String> {
    plan.pointer("/configuration/root_module/variables")
        .and_then(Value::as_object)
        .map(|vars| {
            vars.iter()
                .filter(|(_, v)| v.get("sensitive").and_then(Value::as_bool) == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

pub fn summarize(plan: &Value, destroy_mode: bool) -> Result<PlanSummary, PlanParseError> {
    if !plan.is_object() || plan.get("format_version").is_none() {
        return Err(PlanParseError("missing format_version".into()));
    }
    let mut counts = Counts::default();
    let mut resource_changes = Vec::new();
    for rc in plan
        .get("resource_changes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let actions = strings(rc.pointer("/change/actions"));
        let mode = str_field(rc, "mode");
        let has = |a: &str| actions.iter().any(|x| x == a);
        if mode == "managed" {
            match (has("create"), has("delete"), has("update")) {
                (true, true, _) => {
                    counts.add += 1;
                    counts.destroy += 1;
                    counts.replace += 1;
                }
                (true, false, _) => counts.add += 1,
                (false, true, _) => counts.destroy += 1,
                (false, false, true) => counts.change += 1,
                _ => {}
            }
        }
        if actions.iter().all(|a| a == "no-op" || a == "read") {
            continue;
        }
        resource_changes.push(ResourceChange {
            address: str_field(rc, "address"),
            resource_type: str_field(rc, "type"),
            name: str_field(rc, "name"),
            mode,
            actions,
            action_reason: opt_str(rc, "action_reason"),
        });
    }
    let mut output_changes = Vec::new();
    if let Some(outputs) = plan.get("output_changes").and_then(Value::as_object) {
        for (name, oc) in outputs {
            let actions = strings(oc.get("actions"));
            let sensitive = oc
                .get("after_sensitive")
                .is_some_and(|v| v != &Value::Bool(false))
                || oc
                    .get("before_sensitive")
                    .is_some_and(|v| v != &Value::Bool(false));
            let after = if sensitive {
                Some(Value::String(SENSITIVE.into()))
            } else if oc
                .get("after_unknown")
                .is_some_and(|v| v == &Value::Bool(true))
            {
                Some(Value::String(UNKNOWN.into()))
            } else {
                oc.get("after").cloned()
            };
            output_changes.push(OutputChange {
                name: name.clone(),
                actions,
                sensitive,
                after,
            });
        }
    }
    let deletes = destroy_mode || counts.destroy > 0;
    Ok(PlanSummary {
        deletes,
        counts,
        resource_changes,
        output_changes,
        destroy_mode,
        terraform_version: opt_str(plan, "terraform_version"),
        applyable: plan
            .get("applyable")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}

fn str_field(v: &Value, k: &str) -> String {
    opt_str(v, k).unwrap_or_default()
}

fn opt_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(String::from)
}

/// The strings of a JSON array (terraform's `actions`); nothing for anything else.
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> Value {
        json!({
            "format_version": "1.2",
            "terraform_version": "1.15.5",
            "applyable": true,
            "configuration": {"root_module": {"variables": {
                "password": {"sensitive": true}, "name": {}
            }}},
            "resource_changes": [
                {"address": "terraform_data.a", "mode": "managed", "type": "terraform_data", "name": "a",
                 "change": {"actions": ["create"]}},
                {"address": "terraform_data.b", "mode": "managed", "type": "terraform_data", "name": "b",
                 "change": {"actions": ["delete", "create"]}, "action_reason": "replace_because_cannot_update"},
                {"address": "terraform_data.c", "mode": "managed", "type": "terraform_data", "name": "c",
                 "change": {"actions": ["update"]}},
                {"address": "terraform_data.d", "mode": "managed", "type": "terraform_data", "name": "d",
                 "change": {"actions": ["no-op"]}},
                {"address": "terraform_data.e", "mode": "managed", "type": "terraform_data", "name": "e",
                 "change": {"actions": ["delete"]}}
            ],
            "output_changes": {
                "plain": {"actions": ["create"], "after": "hello", "after_unknown": false, "after_sensitive": false},
                "secret": {"actions": ["create"], "after": "hunter2", "after_unknown": false, "after_sensitive": true},
                "later": {"actions": ["create"], "after_unknown": true, "after_sensitive": false}
            }
        })
    }

    #[test]
    fn counts_like_terraform() {
        let s = summarize(&plan(), false).unwrap();
        assert_eq!(
            s.counts,
            Counts {
                add: 2,
                change: 1,
                destroy: 2,
                replace: 1
            }
        );
        assert!(s.deletes);
        assert_eq!(s.resource_changes.len(), 4, "no-op is left out");
        assert_eq!(
            s.resource_changes[1].action_reason.as_deref(),
            Some("replace_because_cannot_update")
        );
    }

    #[test]
    fn sensitive_outputs_are_redacted() {
        let s = summarize(&plan(), false).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("hunter2"));
        let by = |n: &str| {
            s.output_changes
                .iter()
                .find(|o| o.name == n)
                .unwrap()
                .after
                .clone()
        };
        assert_eq!(by("plain"), Some(json!("hello")));
        assert_eq!(by("secret"), Some(json!(SENSITIVE)));
        assert_eq!(by("later"), Some(json!(UNKNOWN)));
    }

    #[test]
    fn finds_sensitive_variables() {
        assert_eq!(sensitive_variables(&plan()), vec!["password".to_string()]);
    }

    #[test]
    fn destroy_mode_always_deletes() {
        let s = summarize(&json!({"format_version": "1.2"}), true).unwrap();
        assert!(s.deletes);
        assert!(summarize(&json!([]), false).is_err());
    }
}
