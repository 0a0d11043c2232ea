//! Who is calling and how, as a front door hands a call to the [`Executor`](crate::executor::Executor),
//! and what it gets back.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The front door a call came through. Security decisions branch on this type, never on a
/// string, and every branch is an exhaustive match: a new front door must decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// An MCP client that started this server over stdio: the server's own user.
    Stdio,
    /// The Streamable HTTP endpoint: authenticated principals, held to the policy's table.
    Http,
    /// The `terrarium ci`/`plan` commands run by the operator or a CI job.
    Cli,
    /// Plans the GitHub webhook queues for pull requests (signature-checked; the server picks
    /// what runs, never the caller).
    GitHub,
}

impl Transport {
    /// The name in audit events, plan owners and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Http => "http",
            Transport::Cli => "cli",
            Transport::GitHub => "github",
        }
    }

    /// Whether the policy's principal table applies: callers that are not the server's operator.
    pub fn is_remote(self) -> bool {
        match self {
            Transport::Http => true,
            Transport::Stdio | Transport::Cli | Transport::GitHub => false,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reports a line of progress to the caller (already redacted).
pub type ProgressFn = Arc<dyn Fn(String) + Send + Sync>;

/// Who is calling and how; filled in by the front door.
#[derive(Clone)]
pub struct CallContext {
    pub principal: String,
    pub transport: Transport,
    pub request_id: String,
    pub progress: Option<ProgressFn>,
    pub cancel: CancellationToken,
    /// The caller's address (HTTP); `None` for local front doors.
    pub source_ip: Option<String>,
}

impl CallContext {
    pub fn new(principal: impl Into<String>, transport: Transport) -> CallContext {
        CallContext {
            principal: principal.into(),
            transport,
            request_id: uuid::Uuid::new_v4().to_string(),
            progress: None,
            cancel: CancellationToken::new(),
            source_ip: None,
        }
    }
}

/// What a front door sends back: a structured result and its readable text.
#[derive(Debug, Clone)]
pub struct ToolResponse {
    pub is_error: bool,
    pub structured: Value,
    pub text: String,
}
