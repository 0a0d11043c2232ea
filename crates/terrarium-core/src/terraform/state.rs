//! Summaries of state and outputs (`terraform show -json`, `terraform output -json`) with
//! sensitive values replaced, so that what reaches a caller is what terraform itself would show.

use serde_json::{Map, Value, json};

use super::values::{SENSITIVE, mask};

/// `terraform output -json` → `{name: {value, type, sensitive}}` with sensitive values redacted.
pub fn outputs(raw: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, o) in raw.as_object().into_iter().flatten() {
        let sensitive = o.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
        let value = if sensitive {
            Value::String(SENSITIVE.into())
        } else {
            o.get("value").cloned().unwrap_or(Value::Null)
        };
        out.insert(
            name.clone(),
            json!({"value": value, "type": o.get("type").cloned().unwrap_or(Value::Null), "sensitive": sensitive}),
        );
    }
    out
}

/// `terraform show -json` of state → resources (with masked values) and outputs.
pub fn summarize_state(raw: &Value) -> Value {
    let mut resources = Vec::new();
    if let Some(root) = raw.pointer("/values/root_module") {
        collect_resources(root, &mut resources);
    }
    let outputs_raw = raw
        .pointer("/values/outputs")
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "terraform_version": raw.get("terraform_version").cloned().unwrap_or(Value::Null),
        "resource_count": resources.len(),
        "resources": resources,
        "outputs": outputs(&outputs_raw),
    })
}

fn collect_resources(module: &Value, out: &mut Vec<Value>) {
    for r in module
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let values = r.get("values").cloned().unwrap_or(Value::Null);
        let masked = mask(&values, r.get("sensitive_values").unwrap_or(&Value::Null));
        out.push(json!({
            "address": r.get("address"),
            "mode": r.get("mode"),
            "type": r.get("type"),
            "name": r.get("name"),
            "provider_name": r.get("provider_name"),
            "values": masked,
        }));
    }
    for child in module
        .get("child_modules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        collect_resources(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_nested_sensitive_values() {
        let v = json!({"a": "ok", "b": {"c": "hunter2", "d": [1, "s3cret"]}});
        let s = json!({"b": {"c": true, "d": [false, true]}});
        let m = mask(&v, &s);
        assert_eq!(
            m,
            json!({"a": "ok", "b": {"c": SENSITIVE, "d": [1, SENSITIVE]}})
        );
    }

    #[test]
    fn redacts_sensitive_outputs() {
        let raw = json!({"pw": {"sensitive": true, "type": "string", "value": "hunter2"},
                         "name": {"sensitive": false, "type": "string", "value": "web"}});
        let o = outputs(&raw);
        assert_eq!(o["pw"]["value"], SENSITIVE);
        assert_eq!(o["name"]["value"], "web");
    }

    #[test]
    fn walks_child_modules() {
        let raw = json!({"values": {"root_module": {
            "resources": [{"address": "terraform_data.a", "values": {"input": "x"}, "sensitive_values": {}}],
            "child_modules": [{"resources": [{"address": "module.m.terraform_data.b",
                "values": {"input": "hunter2"}, "sensitive_values": {"input": true}}]}]
        }}});
        let s = summarize_state(&raw);
        assert_eq!(s["resource_count"], 2);
        assert!(!s.to_string().contains("hunter2"));
    }
}
