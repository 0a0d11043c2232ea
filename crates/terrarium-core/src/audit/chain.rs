//! The hash chain that makes the audit trail tamper-evident.
//!
//! Each event carries `seq` (one more than the previous event's), `prev_hash` (the previous
//! event's `hash`) and `hash` = SHA-256 over `prev_hash`, a newline, and the event's canonical
//! JSON (keys sorted at every level, no whitespace, the `hash` field left out). Editing,
//! deleting, inserting or reordering any event breaks a link that `verify` finds.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev_hash` of the very first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain stands: the last event's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// Compact JSON with object keys sorted, independent of how the map was built.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The hash of an event (its `hash` field, if present, is ignored).
pub fn hash_of(event: &Map<String, Value>, prev_hash: &str) -> String {
    let mut without = event.clone();
    without.remove("hash");
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(&Value::Object(without)).as_bytes());
    hex::encode(h.finalize())
}

/// Links an event to the chain: sets `seq`, `prev_hash` and `hash`, and returns the new head.
pub fn link(event: &mut Map<String, Value>, head: &Head) -> Head {
    let seq = head.seq + 1;
    event.insert("seq".into(), Value::from(seq));
    event.insert("prev_hash".into(), Value::String(head.hash.clone()));
    let hash = hash_of(event, &head.hash);
    event.insert("hash".into(), Value::String(hash.clone()));
    Head { seq, hash }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 1, "y": 2}], "c": "x"}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn linking_is_deterministic_and_order_sensitive() {
        let mut e1 = json!({"event": "a"}).as_object().unwrap().clone();
        let h1 = link(&mut e1, &Head::genesis());
        assert_eq!(h1.seq, 1);
        assert_eq!(hash_of(&e1, GENESIS), h1.hash);
        let mut e2 = json!({"event": "b"}).as_object().unwrap().clone();
        let h2 = link(&mut e2, &h1);
        assert_eq!(e2["prev_hash"], Value::String(h1.hash.clone()));
        assert_ne!(h1.hash, h2.hash);
        e1.insert("event".into(), json!("edited"));
        assert_ne!(hash_of(&e1, GENESIS), h1.hash);
    }
}
