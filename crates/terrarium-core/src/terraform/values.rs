//! How terraform's values reach a caller: sensitive parts masked and parts only known after
//! apply marked, by the masks terraform writes beside them (`sensitive_values`,
//! `after_sensitive`, `after_unknown`). A leaf: the state and plan summaries both use it.

use serde_json::Value;

/// Shown instead of a sensitive value.
pub const SENSITIVE: &str = "(sensitive value)";
/// Shown instead of a value only known after apply.
pub const UNKNOWN: &str = "(known after apply)";

/// Replaces the parts of `value` that a terraform sensitivity mask (`sensitive_values`, a
/// structure of the same shape with `true` at sensitive leaves) marks.
pub fn mask(value: &Value, sensitive: &Value) -> Value {
    match (value, sensitive) {
        (_, Value::Bool(true)) => Value::String(SENSITIVE.into()),
        (Value::Object(v), Value::Object(s)) => Value::Object(
            v.iter()
                .map(|(k, x)| {
                    (
                        k.clone(),
                        s.get(k).map_or_else(|| x.clone(), |m| mask(x, m)),
                    )
                })
                .collect(),
        ),
        (Value::Array(v), Value::Array(s)) => Value::Array(
            v.iter()
                .enumerate()
                .map(|(i, x)| s.get(i).map_or_else(|| x.clone(), |m| mask(x, m)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// A change's planned value (`after`) as a caller may read it: sensitive parts masked, parts
/// only known after apply (a whole value, a list element, an attribute) marked as such.
pub fn planned_value(change: &Value) -> Value {
    let after = change.get("after").cloned().unwrap_or(Value::Null);
    let unknown = change.get("after_unknown").unwrap_or(&Value::Null);
    let known = mark_unknown(&after, unknown);
    mask(
        &known,
        change.get("after_sensitive").unwrap_or(&Value::Null),
    )
}

/// Replaces the parts of `value` that an `after_unknown` mask marks `true`.
fn mark_unknown(value: &Value, unknown: &Value) -> Value {
    match (value, unknown) {
        (_, Value::Bool(true)) => Value::String(UNKNOWN.into()),
        (Value::Object(v), Value::Object(u)) => {
            let mut out = v.clone();
            for (k, m) in u {
                let inner = v.get(k).unwrap_or(&Value::Null);
                out.insert(k.clone(), mark_unknown(inner, m));
            }
            Value::Object(out)
        }
        (Value::Array(v), Value::Array(u)) => Value::Array(
            (0..v.len().max(u.len()))
                .map(|i| {
                    let inner = v.get(i).unwrap_or(&Value::Null);
                    u.get(i)
                        .map_or_else(|| inner.clone(), |m| mark_unknown(inner, m))
                })
                .collect(),
        ),
        _ => value.clone(),
    }
}
