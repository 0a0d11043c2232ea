//! The audit trail: one structured event per tool call and per security-relevant happening
//! (start-up, shutdown, config reload, rejections), hash-chained, written to every configured
//! sink before the caller gets an answer.
//!
//! Events go to the sinks here (the daily files under `TERRARIUM_AUDIT_DIR`, syslog, stderr) and
//! are mirrored as `tracing` events on the dedicated target [`AUDIT_TARGET`], which diagnostic
//! logging leaves out. Writing is synchronous and serialized: the chain needs a total order, and
//! "written before the result is returned" needs the write to have happened.

pub mod chain;
pub mod file;
pub mod syslog;
pub mod time;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};

use chain::Head;
use file::{Clock, DailyFiles, SystemClock};

pub use time::rfc3339_now;

/// The `tracing` target audit events are mirrored on.
pub const AUDIT_TARGET: &str = "terrarium::audit";

/// Where audit events go.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    pub dir: Option<PathBuf>,
    pub retention_days: u32,
    pub syslog: Option<String>,
    pub stderr: bool,
    /// Leave out `source_ip` and `principal` (deployments that may not keep personal data).
    pub omit_personal_data: bool,
}

/// One tool call, as the audit trail records it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolEvent {
    pub timestamp: String,
    pub level: &'static str,
    /// `terraform_operation` for calls that reached terraform or failed in it; otherwise the
    /// rejection: `validation_rejected`, `confinement_rejected`, `authorization_denied`, ...
    pub event: &'static str,
    pub request_id: String,
    pub principal: String,
    pub transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    pub tool: String,
    /// The terraform subcommand(s) run, e.g. `plan` or `plan,show`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The command shape (flags without values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Seconds.
    pub duration: f64,
    pub success: bool,
    /// `ok`, or the kind of failure.
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources_affected: Option<Value>,
    /// Names of the variables a plan was given; their values are never recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<String>,
    /// Failing fields of a rejected call: JSON pointers only, never the values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A non-tool event (`startup`, `shutdown`, `config_reload`, ...) with its own fields.
pub fn event(kind: &str, level: &str, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("timestamp".into(), json!(rfc3339_now()));
    m.insert("level".into(), json!(level));
    m.insert("event".into(), json!(kind));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit dir {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit syslog {url}: {message}")]
    Syslog { url: String, message: String },
    #[error("the audit trail cannot be written ({0}); mutating actions are refused until it can")]
    Unwritable(String),
    #[error(
        "the audit trail in {dir} is being written by another terrarium process, which holds \
         the lock on that directory: one hash chain has one writer, or `terrarium audit verify` \
         would report events inserted. Give this server its own TERRARIUM_STATE_DIR (or \
         TERRARIUM_AUDIT_DIR), or stop the other one (MCP clients sometimes start a stdio server \
         twice: look for a leftover `terrarium serve`)"
    )]
    Locked { dir: PathBuf },
}

struct Sinks {
    head: Head,
    files: Option<DailyFiles>,
    syslog: Option<syslog::Syslog>,
    stderr: bool,
}

pub struct Auditor {
    sinks: Mutex<Sinks>,
    /// The last write failure of a durable sink, if the last write failed.
    failure: Mutex<Option<String>>,
    omit_personal_data: bool,
    /// A torn last line found at start-up (reported once, in the startup event).
    recovered_torn: bool,
}

impl Auditor {
    pub fn new(config: &AuditConfig) -> Result<Auditor, AuditError> {
        Auditor::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: &AuditConfig, clock: Arc<dyn Clock>) -> Result<Auditor, AuditError> {
        let mut head = Head::genesis();
        let mut recovered_torn = false;
        let files = match &config.dir {
            Some(dir) => {
                let files = DailyFiles::open(dir, config.retention_days.max(1), clock).map_err(
                    |source| match source.kind() {
                        std::io::ErrorKind::WouldBlock => AuditError::Locked { dir: dir.clone() },
                        _ => AuditError::Dir {
                            path: dir.clone(),
                            source,
                        },
                    },
                )?;
                // Continue the chain where the newest file left it, across restarts and days.
                let (last, torn) = file::last_event(dir);
                recovered_torn = torn;
                if let Some(last) = last
                    && let (Some(seq), Some(hash)) = (last["seq"].as_u64(), last["hash"].as_str())
                {
                    head = Head {
                        seq,
                        hash: hash.to_string(),
                    };
                }
                Some(files)
            }
            None => None,
        };
        let syslog = match &config.syslog {
            Some(url) => Some(
                syslog::Syslog::connect(url).map_err(|e| AuditError::Syslog {
                    url: url.clone(),
                    message: e.to_string(),
                })?,
            ),
            None => None,
        };
        Ok(Auditor {
            sinks: Mutex::new(Sinks {
                head,
                files,
                syslog,
                stderr: config.stderr || config.dir.is_none() && config.syslog.is_none(),
            }),
            failure: Mutex::new(None),
            omit_personal_data: config.omit_personal_data,
            recovered_torn,
        })
    }

    /// Whether the last start found a torn line (a crash mid-write) at the end of the trail.
    pub fn recovered_torn(&self) -> bool {
        self.recovered_torn
    }

    /// `Err` while the durable trail cannot be written: mutating actions must not run.
    pub fn healthy(&self) -> Result<(), AuditError> {
        match self.failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(AuditError::Unwritable(e)),
            Err(_) => Err(AuditError::Unwritable("audit state poisoned".into())),
        }
    }

    pub fn record_tool(&self, e: &ToolEvent) -> Result<(), AuditError> {
        match serde_json::to_value(e) {
            Ok(v) => self.record(v),
            Err(err) => Err(AuditError::Unwritable(err.to_string())),
        }
    }

    /// Links the event into the chain and writes it to every sink. An error means the durable
    /// sink (the file) failed; the event still went to the others.
    pub fn record(&self, event: Value) -> Result<(), AuditError> {
        let Value::Object(mut m) = event else {
            return Err(AuditError::Unwritable(
                "an audit event must be an object".into(),
            ));
        };
        if self.omit_personal_data {
            m.remove("source_ip");
            m.remove("principal");
        }
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let head = chain::link(&mut m, &sinks.head);
        let level = m
            .get("level")
            .and_then(Value::as_str)
            .unwrap_or("info")
            .to_string();
        let kind = m
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("event")
            .to_string();
        let timestamp = m
            .get("timestamp")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string();
        let line = Value::Object(m).to_string();
        tracing::info!(target: AUDIT_TARGET, event = %kind, audit = %line);

        let mut failure = None;
        if let Some(files) = sinks.files.as_mut() {
            let mut bytes = line.clone().into_bytes();
            bytes.push(b'\n');
            if let Err(e) = files.write_line(&bytes) {
                failure = Some(e.to_string());
            }
        }
        if let Some(sys) = sinks.syslog.as_mut()
            && let Err(e) = sys.send(&level, &timestamp, &kind, &line)
        {
            tracing::warn!(error = %e, "audit event could not be sent to syslog");
        }
        if sinks.stderr {
            eprintln!("{line}");
        }
        // The chain advances only when the durable copy exists; otherwise the next event
        // links to the last one that was written.
        if failure.is_none() {
            sinks.head = head;
        }
        drop(sinks);
        let mut state = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match failure {
            Some(e) => {
                tracing::error!(error = %e, "audit event could not be written to the audit file; apply is refused until it can");
                *state = Some(e.clone());
                Err(AuditError::Unwritable(e))
            }
            None => {
                *state = None;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path) -> AuditConfig {
        AuditConfig {
            dir: Some(dir.to_path_buf()),
            retention_days: 30,
            ..AuditConfig::default()
        }
    }

    #[test]
    fn the_chain_continues_across_restarts_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let a = Auditor::new(&cfg(d.path())).unwrap();
        a.record(event("startup", "info", json!({}))).unwrap();
        a.record(event("x", "info", json!({"n": 1}))).unwrap();
        drop(a);
        let a = Auditor::new(&cfg(d.path())).unwrap();
        a.record(event("startup", "info", json!({}))).unwrap();
        let files = file::files(d.path());
        let report = verify::verify(&files).unwrap();
        assert_eq!(report.events, 3);
        assert_eq!(report.last_seq, Some(3));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_second_writer_of_one_chain_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = Auditor::new(&cfg(d.path())).unwrap();
        let second = file::lock_dir(d.path(), std::time::Duration::ZERO);
        assert_eq!(
            second.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::WouldBlock)
        );
        drop(a);
        assert!(file::lock_dir(d.path(), std::time::Duration::ZERO).is_ok());
    }

    #[test]
    fn personal_data_can_be_left_out() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(d.path());
        c.omit_personal_data = true;
        let a = Auditor::new(&c).unwrap();
        a.record(event(
            "x",
            "info",
            json!({"principal": "alice", "source_ip": "10.0.0.1"}),
        ))
        .unwrap();
        let text = std::fs::read_to_string(&file::files(d.path())[0]).unwrap();
        assert!(
            !text.contains("alice") && !text.contains("10.0.0.1"),
            "{text}"
        );
    }
}
