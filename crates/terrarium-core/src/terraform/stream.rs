//! terraform's machine-readable UI (`-json`): one JSON object per line. Each line's `@message`
//! is what a person would have read, so it is both the progress a client sees while the run
//! goes and the readable output afterwards; diagnostics and the change summary are kept apart.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: String,
    pub summary: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<Value>,
}

/// What a whole `-json` UI stream said.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    /// The human-readable messages, in order (planned changes, which are data, left out).
    pub messages: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
    /// The `change_summary` message's `changes` object, if one came.
    pub change_summary: Option<Value>,
    /// The `outputs` message's object, if one came: after apply each output's value, after a
    /// plan each output's planned action.
    pub outputs: Option<Value>,
    /// Each `planned_change` message's `change` object (a plan's resource changes).
    pub planned_changes: Vec<Value>,
    /// The `version` message's terraform version.
    pub terraform_version: Option<String>,
    /// The `version` message's UI protocol version (`ui`).
    pub ui_version: Option<String>,
}

impl StreamReport {
    /// Whether a plan's stream reports its output changes: from UI protocol 1.0 (terraform 1.1)
    /// on; older streams (terraform 1.0's UI 0.1.0) name only resource changes.
    pub fn reports_plan_outputs(&self) -> bool {
        self.outputs.is_some()
            || self
                .ui_version
                .as_deref()
                .and_then(|v| v.split('.').next())
                .and_then(|major| major.parse::<u32>().ok())
                .is_some_and(|major| major >= 1)
    }
}

/// The `@message` of one line, if the line is a UI message.
pub fn message_of(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("@message").and_then(Value::as_str).map(String::from)
}

pub fn parse(stdout: &str) -> StreamReport {
    let mut report = StreamReport::default();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            if !line.trim().is_empty() {
                report.messages.push(line.to_string());
            }
            continue;
        };
        let kind = v.get("type").and_then(Value::as_str);
        // A planned change is data (`planned_changes`), not prose: its line would repeat it.
        if let Some(m) = v.get("@message").and_then(Value::as_str)
            && kind != Some("planned_change")
        {
            report.messages.push(m.to_string());
        }
        match kind {
            Some("diagnostic") => {
                if let Some(d) = v.get("diagnostic") {
                    report.diagnostics.push(diagnostic(d));
                }
            }
            Some("change_summary") => report.change_summary = v.get("changes").cloned(),
            Some("outputs") => report.outputs = v.get("outputs").cloned(),
            Some("planned_change") => {
                if let Some(c) = v.get("change") {
                    report.planned_changes.push(c.clone());
                }
            }
            Some("version") => {
                let field = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
                report.terraform_version = field("terraform");
                report.ui_version = field("ui");
            }
            _ => {}
        }
    }
    report
}

/// A diagnostic object as terraform writes it (in the UI stream and in `validate -json`).
pub fn diagnostic(d: &Value) -> Diagnostic {
    let s = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Diagnostic {
        severity: s("severity"),
        summary: s("summary"),
        detail: s("detail"),
        address: d.get("address").and_then(Value::as_str).map(String::from),
        range: d.get("range").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plan_stream() {
        let out = r#"{"@level":"info","@message":"Terraform 1.15.5","type":"version","terraform":"1.15.5","ui":"1.3"}
{"@level":"info","@message":"terraform_data.a: Plan to create","type":"planned_change","change":{"resource":{"addr":"terraform_data.a"},"action":"create"}}
{"@level":"error","@message":"Error: boom","type":"diagnostic","diagnostic":{"severity":"error","summary":"boom","detail":"d"}}
{"@level":"info","@message":"Plan: 1 to add","type":"change_summary","changes":{"add":1,"change":0,"remove":0,"operation":"plan"}}
not json at all"#;
        let r = parse(out);
        assert_eq!(
            r.messages.len(),
            4,
            "the planned change is data, not a message"
        );
        assert_eq!(r.planned_changes.len(), 1);
        assert!(r.reports_plan_outputs(), "UI 1.3 reports output changes");
        let old = parse(r#"{"terraform":"1.0.3","type":"version","ui":"0.1.0"}"#);
        assert!(!old.reports_plan_outputs(), "UI 0.1.0 does not");
        assert_eq!(r.diagnostics[0].summary, "boom");
        assert_eq!(r.change_summary.unwrap()["add"], 1);
        assert_eq!(
            message_of(out.lines().next().unwrap()).as_deref(),
            Some("Terraform 1.15.5")
        );
    }
}
