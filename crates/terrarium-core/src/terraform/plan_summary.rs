//! A plan's meaning: what will be added, changed, replaced and destroyed, and how outputs change.
//! This is what callers read and what the apply policy checks, so it is computed once, at plan
//! time, and stored with the plan — from the `plan -json` UI stream the plan run writes anyway
//! ([`from_stream`]), so a plan costs one terraform process. The full JSON plan
//! (`show -json`, attribute values included) is made only when something needs it, and
//! [`summarize`] reads the same summary from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::stream::StreamReport;

pub use super::values::{SENSITIVE, UNKNOWN};
use super::values::{mask, planned_value};

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

impl Counts {
    /// Counts one resource change the way terraform does (a replacement is one add, one destroy
    /// and one replace; only managed resources count); whether it is listed (not a no-op or a
    /// read).
    fn record(&mut self, mode: &str, actions: &[String]) -> bool {
        let has = |a: &str| actions.iter().any(|x| x == a);
        if mode == "managed" {
            match (has("create"), has("delete"), has("update")) {
                (true, true, _) => {
                    self.add += 1;
                    self.destroy += 1;
                    self.replace += 1;
                }
                (true, false, _) => self.add += 1,
                (false, true, _) => self.destroy += 1,
                (false, false, true) => self.change += 1,
                _ => {}
            }
        }
        !actions.iter().all(|a| a == "no-op" || a == "read")
    }
}

impl PlanSummary {
    /// Whether two summaries of one plan agree on what it does: the counts, the deletion flag
    /// and every changed resource with its actions (what the apply rules read).
    pub fn same_changes(&self, other: &PlanSummary) -> bool {
        let key = |s: &PlanSummary| {
            let mut v: Vec<(String, Vec<String>)> = s
                .resource_changes
                .iter()
                .map(|r| {
                    let mut a = r.actions.clone();
                    // The stream does not give a replacement's order: compare as sets.
                    a.sort();
                    (r.address.clone(), a)
                })
                .collect();
            v.sort();
            v
        };
        self.counts == other.counts && self.deletes == other.deletes && key(self) == key(other)
    }

    /// Whether applying it would change anything: a resource, or an output's value.
    pub fn has_changes(&self) -> bool {
        let c = &self.counts;
        c.add + c.change + c.destroy > 0
            || self
                .output_changes
                .iter()
                .any(|o| o.actions.iter().any(|a| a != "no-op"))
    }
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
        if !counts.record(&mode, &actions) {
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
            } else {
                Some(planned_value(oc))
            };
            output_changes.push(OutputChange {
                name: name.clone(),
                actions,
                sensitive,
                after,
            });
        }
    }
    resource_changes.sort_by(|a, b| a.address.cmp(&b.address));
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

/// A full JSON plan's changes with their values, as `terraform_show` of a plan returns them:
/// every resource that changes (before and after, sensitive parts masked, unknown parts
/// marked) and every output.
pub fn detailed_changes(plan: &Value) -> Value {
    let mut resources = Vec::new();
    for rc in plan
        .get("resource_changes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let change = rc.get("change").unwrap_or(&Value::Null);
        let actions = strings(change.get("actions"));
        if actions.iter().all(|a| a == "no-op") {
            continue;
        }
        let before = mask(
            change.get("before").unwrap_or(&Value::Null),
            change.get("before_sensitive").unwrap_or(&Value::Null),
        );
        resources.push(serde_json::json!({
            "address": str_field(rc, "address"),
            "mode": str_field(rc, "mode"),
            "type": str_field(rc, "type"),
            "name": str_field(rc, "name"),
            "actions": actions,
            "action_reason": rc.get("action_reason"),
            "before": before,
            "after": planned_value(change),
        }));
    }
    let mut outputs = serde_json::Map::new();
    for (name, oc) in plan
        .get("output_changes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        outputs.insert(
            name.clone(),
            serde_json::json!({
                "actions": strings(oc.get("actions")),
                "after": planned_value(oc),
            }),
        );
    }
    serde_json::json!({"resource_changes": resources, "output_changes": outputs})
}

/// The summary from a `plan -json` run's UI stream: its `planned_change` messages, its `outputs`
/// message (planned actions; values are in the full JSON plan only) and its version. `errored`:
/// the run failed (a failed plan is not applicable).
pub fn from_stream(report: &StreamReport, destroy_mode: bool, errored: bool) -> PlanSummary {
    let mut counts = Counts::default();
    let mut resource_changes = Vec::new();
    let mut any_change = false;
    for change in &report.planned_changes {
        let resource = change.get("resource").unwrap_or(&Value::Null);
        let action = str_field(change, "action");
        let actions = plan_actions(&action);
        let mode = if str_field(resource, "resource").starts_with("data.") {
            "data"
        } else {
            "managed"
        };
        // Every planned_change is a change terraform would make (no-ops are not reported), a
        // move or an import included.
        any_change = true;
        if !counts.record(mode, &actions) {
            continue;
        }
        resource_changes.push(ResourceChange {
            address: str_field(resource, "addr"),
            resource_type: str_field(resource, "resource_type"),
            name: str_field(resource, "resource_name"),
            mode: mode.to_string(),
            actions,
            action_reason: opt_str(change, "reason").map(|r| plan_reason(&r)),
        });
    }
    // The stream reports changes in the order terraform's graph walk reached them, which differs
    // from run to run: both summaries list them by address.
    resource_changes.sort_by(|a, b| a.address.cmp(&b.address));
    let mut output_changes = Vec::new();
    for (name, o) in report
        .outputs
        .as_ref()
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let action = str_field(o, "action");
        let sensitive = o.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
        any_change |= action != "noop";
        output_changes.push(OutputChange {
            name: name.clone(),
            actions: plan_actions(&action),
            sensitive,
            after: sensitive.then(|| Value::String(SENSITIVE.into())),
        });
    }
    PlanSummary {
        deletes: destroy_mode || counts.destroy > 0,
        counts,
        resource_changes,
        output_changes,
        destroy_mode,
        terraform_version: report.terraform_version.clone(),
        applyable: !errored && any_change,
    }
}

/// The UI stream's action name as the JSON plan's action list (what callers and the apply
/// policy read). The stream does not say in which order a replacement happens: it is listed as
/// delete then create.
fn plan_actions(action: &str) -> Vec<String> {
    let list: &[&str] = match action {
        "create" => &["create"],
        "read" => &["read"],
        "update" => &["update"],
        "delete" => &["delete"],
        "replace" => &["delete", "create"],
        "remove" => &["forget"],
        // A move or an import without changes, and an output that stays.
        "noop" | "move" | "import" => &["no-op"],
        other => return vec![other.to_string()],
    };
    list.iter().map(|a| a.to_string()).collect()
}

/// The UI stream's reason as the JSON plan's `action_reason`.
fn plan_reason(reason: &str) -> String {
    match reason {
        "tainted" => "replace_because_tainted",
        "requested" => "replace_by_request",
        "cannot_update" => "replace_because_cannot_update",
        "replace_triggered_by" => "replace_by_triggers",
        other => other,
    }
    .to_string()
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
        // Elements unknown until apply are marked, never shown as nulls.
        let list = json!({"after": ["a", null, null], "after_unknown": [false, true, true],
                          "after_sensitive": false});
        assert_eq!(planned_value(&list), json!(["a", UNKNOWN, UNKNOWN]));
        let obj = json!({"after": {"id": null, "tags": {"k": "hunter2"}},
                         "after_unknown": {"id": true}, "after_sensitive": {"tags": {"k": true}}});
        assert_eq!(
            planned_value(&obj),
            json!({"id": UNKNOWN, "tags": {"k": SENSITIVE}})
        );
    }

    #[test]
    fn detailed_changes_mask_values() {
        let plan = json!({"format_version": "1.2", "resource_changes": [
            {"address": "terraform_data.a", "mode": "managed", "type": "terraform_data", "name": "a",
             "change": {"actions": ["update"], "before": {"input": "old", "pw": "hunter2"},
                        "before_sensitive": {"pw": true},
                        "after": {"input": "new", "pw": "hunter3", "output": null},
                        "after_sensitive": {"pw": true}, "after_unknown": {"output": true}}},
            {"address": "terraform_data.b", "mode": "managed", "type": "terraform_data", "name": "b",
             "change": {"actions": ["no-op"]}}],
            "output_changes": {"o": {"actions": ["create"], "after": "x", "after_unknown": false,
                                     "after_sensitive": false}}});
        let d = detailed_changes(&plan);
        let text = d.to_string();
        assert!(!text.contains("hunter"), "{text}");
        assert_eq!(d["resource_changes"].as_array().unwrap().len(), 1);
        assert_eq!(d["resource_changes"][0]["after"]["output"], UNKNOWN);
        assert_eq!(d["resource_changes"][0]["before"]["input"], "old");
        assert_eq!(d["output_changes"]["o"]["after"], "x");
    }

    #[test]
    fn finds_sensitive_variables() {
        assert_eq!(sensitive_variables(&plan()), vec!["password".to_string()]);
    }

    /// The UI stream of a plan that creates, replaces, updates, deletes and reads, as
    /// terraform 1.15 writes it.
    const STREAM: &str = r#"{"@message":"Terraform 1.15.5","terraform":"1.15.5","type":"version","ui":"1.3"}
{"@message":"terraform_data.a: Plan to create","change":{"resource":{"addr":"terraform_data.a","module":"","resource":"terraform_data.a","implied_provider":"terraform","resource_type":"terraform_data","resource_name":"a","resource_key":null},"action":"create"},"type":"planned_change"}
{"@message":"terraform_data.b: Plan to replace","change":{"resource":{"addr":"terraform_data.b","module":"","resource":"terraform_data.b","resource_type":"terraform_data","resource_name":"b"},"action":"replace","reason":"cannot_update"},"type":"planned_change"}
{"@message":"module.m.terraform_data.c: Plan to update","change":{"resource":{"addr":"module.m.terraform_data.c","module":"module.m","resource":"terraform_data.c","resource_type":"terraform_data","resource_name":"c"},"action":"update"},"type":"planned_change"}
{"@message":"terraform_data.e: Plan to delete","change":{"resource":{"addr":"terraform_data.e","module":"","resource":"terraform_data.e","resource_type":"terraform_data","resource_name":"e"},"action":"delete","reason":"delete_because_no_resource_config"},"type":"planned_change"}
{"@message":"data.terraform_remote_state.r: Plan to read","change":{"resource":{"addr":"data.terraform_remote_state.r","module":"","resource":"data.terraform_remote_state.r","resource_type":"terraform_remote_state","resource_name":"r"},"action":"read"},"type":"planned_change"}
{"@message":"Plan: 2 to add, 1 to change, 2 to destroy.","changes":{"add":2,"change":1,"import":0,"remove":2,"operation":"plan"},"type":"change_summary"}
{"@message":"Outputs: 3","outputs":{"plain":{"sensitive":false,"action":"create"},"secret":{"sensitive":true,"action":"update"},"same":{"sensitive":false,"action":"noop"}},"type":"outputs"}"#;

    #[test]
    fn the_stream_gives_the_same_summary_as_the_json_plan() {
        let report = crate::terraform::stream::parse(STREAM);
        let s = from_stream(&report, false, false);
        assert_eq!(
            s.counts,
            Counts {
                add: 2,
                change: 1,
                destroy: 2,
                replace: 1
            }
        );
        assert!(s.deletes && s.applyable && !s.destroy_mode);
        assert_eq!(s.terraform_version.as_deref(), Some("1.15.5"));
        let addresses: Vec<&str> = s
            .resource_changes
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(
            addresses,
            [
                "module.m.terraform_data.c",
                "terraform_data.a",
                "terraform_data.b",
                "terraform_data.e"
            ],
            "reads are left out, as from the JSON plan, and changes are in address order"
        );
        let b = &s.resource_changes[2];
        assert_eq!(b.actions, ["delete", "create"]);
        assert_eq!(
            b.action_reason.as_deref(),
            Some("replace_because_cannot_update")
        );
        assert_eq!(s.resource_changes[0].mode, "managed");
        assert_eq!(s.resource_changes[0].name, "c");
        let out = |n: &str| s.output_changes.iter().find(|o| o.name == n).unwrap();
        assert_eq!(out("plain").actions, ["create"]);
        assert_eq!(out("plain").after, None, "values are in the full plan only");
        assert_eq!(out("secret").after, Some(Value::String(SENSITIVE.into())));
        assert_eq!(out("same").actions, ["no-op"]);
        // The policy reads the same facts from either source.
        let json_plan = json!({"format_version": "1.2", "resource_changes": [
            {"address": "terraform_data.b", "mode": "managed", "type": "terraform_data", "name": "b",
             "change": {"actions": ["delete", "create"]}, "action_reason": "replace_because_cannot_update"}]});
        assert_eq!(
            summarize(&json_plan, false).unwrap().resource_changes[0],
            s.resource_changes[2]
        );
    }

    #[test]
    fn an_empty_or_failed_plan_is_not_applicable() {
        let version = r#"{"terraform":"1.15.5","type":"version"}"#;
        let s = from_stream(&crate::terraform::stream::parse(version), false, false);
        assert!(!s.applyable && !s.deletes);
        let s = from_stream(&crate::terraform::stream::parse(STREAM), false, true);
        assert!(!s.applyable);
        assert!(from_stream(&crate::terraform::stream::parse(version), true, false).deletes);
    }

    #[test]
    fn destroy_mode_always_deletes() {
        let s = summarize(&json!({"format_version": "1.2"}), true).unwrap();
        assert!(s.deletes);
        assert!(summarize(&json!([]), false).is_err());
    }
}
