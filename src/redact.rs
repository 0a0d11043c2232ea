//! Redaction of known secret values from everything a caller or a log sees.
//!
//! Terraform hides values it knows are sensitive; this is the second line: the values of
//! pass-through credentials, of variables the configuration marks sensitive, and of variables
//! whose names say they are secrets are replaced wherever they appear in text or structured
//! results, including in terraform's own error messages.

use serde_json::Value;

pub const MASK: &str = "[REDACTED]";

/// Values shorter than this are not treated as secrets: masking every "1" or "on" in a result
/// would destroy it, and such values give an attacker nothing.
pub const MIN_SECRET_LEN: usize = 4;

/// Variable names that are treated as secret whatever the configuration says.
pub fn name_looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "access_key",
        "auth",
    ]
    .iter()
    .any(|w| n.contains(w))
}

#[derive(Default, Clone)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Adds a secret string. Short values are ignored (see [`MIN_SECRET_LEN`]).
    pub fn add(&mut self, secret: &str) {
        if secret.chars().count() >= MIN_SECRET_LEN && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            // Longest first, so a secret that contains another is masked whole.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Adds every scalar inside a JSON value (a variable's value may be a map of secrets).
    pub fn add_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => {
                self.add(s);
                // Terraform may print a string JSON-escaped (in diagnostics), so mask that too.
                if let Ok(escaped) = serde_json::to_string(s) {
                    self.add(escaped.trim_matches('"'));
                }
            }
            Value::Number(n) => self.add(&n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| self.add_value(x)),
            Value::Object(o) => o.values().for_each(|x| self.add_value(x)),
            Value::Bool(_) | Value::Null => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    pub fn value(&self, v: &mut Value) {
        if self.secrets.is_empty() {
            return;
        }
        match v {
            Value::String(s) if self.secrets.iter().any(|x| s.contains(x.as_str())) => {
                *s = self.text(s);
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(o) => {
                // Keys can carry values too (a map variable's keys).
                let keys: Vec<String> = o.keys().cloned().collect();
                for k in keys {
                    if let Some(mut x) = o.remove(&k) {
                        self.value(&mut x);
                        o.insert(self.text(&k), x);
                    }
                }
            }
            Value::Number(n) => {
                let t = n.to_string();
                if self.secrets.iter().any(|x| x == &t) {
                    *v = Value::String(MASK.into());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_text_and_values() {
        let mut r = Redactor::new();
        r.add("hunter2-secret");
        r.add("on");
        r.add_value(&json!({"k": ["nested-secret", 123456789]}));
        assert_eq!(r.text("pw=hunter2-secret;on"), "pw=[REDACTED];on");
        let mut v = json!({"a": "x nested-secret y", "n": 123456789, "hunter2-secret": 1});
        r.value(&mut v);
        assert_eq!(
            v,
            json!({"a": "x [REDACTED] y", "n": "[REDACTED]", "[REDACTED]": 1})
        );
    }

    #[test]
    fn longest_secret_wins() {
        let mut r = Redactor::new();
        r.add("abcd");
        r.add("abcdefgh");
        assert_eq!(r.text("abcdefgh"), "[REDACTED]");
    }

    #[test]
    fn escaped_forms_are_masked() {
        let mut r = Redactor::new();
        r.add_value(&json!("quote\"inside"));
        assert_eq!(r.text(r#"value "quote\"inside""#), r#"value "[REDACTED]""#);
    }

    #[test]
    fn secret_names() {
        assert!(name_looks_secret("db_password"));
        assert!(name_looks_secret("API_KEY"));
        assert!(!name_looks_secret("region"));
    }
}
