//! The tools' input schemas: the JSON Schema files in `schemas/`, embedded in the binary.
//!
//! The same document is what `tools/list` advertises and what every call is checked against, so
//! the interface a client sees and the one the server enforces cannot drift apart.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};

/// `(tool name, schema text)` for every tool, in the order `tools/list` shows them.
const SCHEMAS: &[(&str, &str)] = &[
    (
        "workspace_list",
        include_str!("../../../schemas/workspace_list.json"),
    ),
    (
        "terraform_version",
        include_str!("../../../schemas/terraform_version.json"),
    ),
    (
        "terraform_init",
        include_str!("../../../schemas/terraform_init.json"),
    ),
    (
        "terraform_validate",
        include_str!("../../../schemas/terraform_validate.json"),
    ),
    (
        "terraform_fmt",
        include_str!("../../../schemas/terraform_fmt.json"),
    ),
    (
        "terraform_plan",
        include_str!("../../../schemas/terraform_plan.json"),
    ),
    (
        "terraform_show",
        include_str!("../../../schemas/terraform_show.json"),
    ),
    (
        "terraform_output",
        include_str!("../../../schemas/terraform_output.json"),
    ),
    (
        "terraform_graph",
        include_str!("../../../schemas/terraform_graph.json"),
    ),
    (
        "terraform_providers",
        include_str!("../../../schemas/terraform_providers.json"),
    ),
    (
        "terraform_apply",
        include_str!("../../../schemas/terraform_apply.json"),
    ),
    (
        "github_prepare_workspace",
        include_str!("../../../schemas/github_prepare_workspace.json"),
    ),
];

/// Largest serialized `arguments` object accepted, checked before schema validation so that an
/// oversize call costs nothing but its parse.
pub const MAX_ARGUMENTS_BYTES: usize = 256 * 1024;

/// One failing field: where (a JSON pointer into the arguments) and why. The offending value is
/// deliberately not included: it may be a secret, and it ends up in audit events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {tool} is not valid JSON Schema: {message}")]
    Broken { tool: String, message: String },
}

struct Compiled {
    document: Arc<Map<String, Value>>,
    /// Built on the tool's first call: start-up (and every tool never called) does not pay for
    /// the compile, ~0.4 ms a schema with its regular expressions. A bundled schema that does
    /// not compile is caught by this module's tests, never first in production.
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

/// All tool schemas: parsed at start-up (`tools/list` needs the documents), each compiled once,
/// on its tool's first call.
pub struct Schemas {
    by_tool: BTreeMap<&'static str, Compiled>,
}

impl Schemas {
    pub fn load() -> Result<Schemas, SchemaError> {
        let mut by_tool = BTreeMap::new();
        for (tool, text) in SCHEMAS {
            let broken = |message: String| SchemaError::Broken {
                tool: tool.to_string(),
                message,
            };
            let value: Value = serde_json::from_str(text).map_err(|e| broken(e.to_string()))?;
            let Value::Object(document) = value else {
                return Err(broken("not an object".into()));
            };
            by_tool.insert(
                *tool,
                Compiled {
                    document: Arc::new(document),
                    validator: OnceLock::new(),
                },
            );
        }
        Ok(Schemas { by_tool })
    }

    /// Checks every schema against the 2020-12 meta-schema and compiles it now: what the tests
    /// (and anyone who wants to know before the first call) use.
    pub fn verify_all(&self) -> Result<(), SchemaError> {
        for (tool, compiled) in &self.by_tool {
            let broken = |message: String| SchemaError::Broken {
                tool: tool.to_string(),
                message,
            };
            let document = Value::Object((*compiled.document).clone());
            jsonschema::draft202012::meta::validate(&document)
                .map_err(|e| broken(e.to_string()))?;
            compiled.validator().map_err(|e| broken(e.clone()))?;
        }
        Ok(())
    }

    /// Tool names in their advertised order.
    pub fn tools() -> impl Iterator<Item = &'static str> {
        SCHEMAS.iter().map(|(t, _)| *t)
    }

    /// The schema document for a tool, as advertised in `tools/list`.
    pub fn document(&self, tool: &str) -> Option<Arc<Map<String, Value>>> {
        self.by_tool.get(tool).map(|c| c.document.clone())
    }

    /// Checks a call's arguments. Every failing field is reported, not just the first.
    pub fn validate(&self, tool: &str, arguments: &Value) -> Result<(), Vec<FieldError>> {
        let Some(compiled) = self.by_tool.get(tool) else {
            return Err(vec![FieldError {
                pointer: String::new(),
                message: format!("unknown tool {tool}"),
            }]);
        };
        let size = serde_json::to_vec(arguments)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_ARGUMENTS_BYTES {
            return Err(vec![FieldError {
                pointer: String::new(),
                message: format!("arguments are {size} bytes; the limit is {MAX_ARGUMENTS_BYTES}"),
            }]);
        }
        let validator = compiled.validator().map_err(|message| {
            vec![FieldError {
                pointer: String::new(),
                message: format!("the schema of {tool} does not compile: {message}"),
            }]
        })?;
        let mut errors: Vec<FieldError> = validator
            .iter_errors(arguments)
            .map(|e| FieldError {
                pointer: e.instance_path().to_string(),
                message: e.masked().to_string(),
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        errors.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        errors.dedup();
        Err(errors)
    }
}

impl Compiled {
    fn validator(&self) -> Result<&jsonschema::Validator, &String> {
        self.validator
            .get_or_init(|| {
                jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&Value::Object((*self.document).clone()))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_is_strict_2020_12() {
        let schemas = Schemas::load().unwrap();
        schemas.verify_all().unwrap();
        for tool in Schemas::tools() {
            let doc = schemas.document(tool).unwrap();
            assert_eq!(
                doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{tool}"
            );
            assert_eq!(doc["additionalProperties"], false, "{tool}");
            assert_eq!(doc["type"], "object", "{tool}");
            for (name, prop) in doc["properties"].as_object().unwrap() {
                if prop["type"] == "string" && prop.get("enum").is_none() {
                    assert!(
                        prop.get("maxLength").is_some() || prop.get("pattern").is_some(),
                        "{tool}.{name} is an unbounded string"
                    );
                }
                if prop["type"] == "array" {
                    assert!(
                        prop.get("maxItems").is_some(),
                        "{tool}.{name} is an unbounded array"
                    );
                }
            }
        }
    }

    #[test]
    fn names_each_failing_field_without_its_value() {
        let schemas = Schemas::load().unwrap();
        let err = schemas
            .validate(
                "terraform_plan",
                &json!({"path": 7, "targets": ["-destroy"], "secret_extra": "hunter2-value"}),
            )
            .unwrap_err();
        let pointers: Vec<_> = err.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/path"), "{err:?}");
        assert!(pointers.contains(&"/targets/0"), "{err:?}");
        assert!(
            pointers.contains(&""),
            "additionalProperties is reported at the root: {err:?}"
        );
        let text = format!("{err:?}");
        assert!(!text.contains("hunter2-value"), "value leaked: {text}");
        assert!(!text.contains("-destroy"), "value leaked: {text}");
    }

    #[test]
    fn rejects_flags_and_absolute_paths() {
        let schemas = Schemas::load().unwrap();
        assert!(
            schemas
                .validate("terraform_validate", &json!({"path": "/etc"}))
                .is_err()
        );
        assert!(
            schemas
                .validate("terraform_validate", &json!({"path": "a\u{0}b"}))
                .is_err()
        );
        assert!(
            schemas
                .validate("terraform_plan", &json!({"path": "a", "vars": {"-x": 1}}))
                .is_err()
        );
        assert!(
            schemas
                .validate(
                    "terraform_plan",
                    &json!({"path": "a", "var_files": ["/etc/x.tfvars"]})
                )
                .is_err()
        );
        assert!(
            schemas
                .validate(
                    "terraform_apply",
                    &json!({"path": "a", "plan_id": "-chdir=/"})
                )
                .is_err()
        );
        assert!(
            schemas
                .validate(
                    "terraform_plan",
                    &json!({"path": "a", "vars": {"x": {"deep": [1, "-y"]}}})
                )
                .is_ok()
        );
    }

    #[test]
    fn oversize_arguments_are_rejected_before_validation() {
        let schemas = Schemas::load().unwrap();
        let big = "x".repeat(MAX_ARGUMENTS_BYTES + 1);
        let err = schemas
            .validate("terraform_plan", &json!({"path": "a", "vars": {"v": big}}))
            .unwrap_err();
        assert!(err[0].message.contains("limit"), "{err:?}");
    }
}
