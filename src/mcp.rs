//! The MCP face of the executor (rmcp `ServerHandler`), shared by the stdio and HTTP transports.
//!
//! It only translates: `tools/list` comes from the schema files and the policy, `tools/call`
//! becomes one [`Executor::call`] with the client's progress token and cancellation wired in.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, ServiceExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::Principal;
use crate::metrics::{Metrics, ToolLabels, ToolName};
use terrarium_core::tools::ToolKind;
use terrarium_core::{CallContext, Executor, Transport};

/// The caller's address as the server sees it, put on each request by the HTTP front door.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp(pub String);

/// Progress messages buffered per call; beyond this, messages are dropped (the final result
/// still carries the whole output), so a flood cannot build up memory or swamp the client.
const PROGRESS_BUFFER: usize = 256;

#[derive(Clone)]
pub(crate) struct TerrariumServer {
    exec: Arc<Executor>,
    transport: Transport,
    principal: String,
    metrics: Option<Arc<Metrics>>,
}

impl TerrariumServer {
    pub(crate) fn new(
        exec: Arc<Executor>,
        transport: Transport,
        principal: impl Into<String>,
    ) -> TerrariumServer {
        TerrariumServer {
            exec,
            transport,
            principal: principal.into(),
            metrics: None,
        }
    }

    /// Records tool calls in the HTTP front door's metrics.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> TerrariumServer {
        self.metrics = Some(metrics);
        self
    }

    /// The caller: over HTTP, the principal and address the authentication middleware put on
    /// the request; otherwise this server's fixed principal.
    fn caller(&self, context: &RequestContext<RoleServer>) -> (String, Option<String>) {
        let parts = context.extensions.get::<http::request::Parts>();
        let principal = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .map_or_else(|| self.principal.clone(), |p| p.0.clone());
        let ip = parts
            .and_then(|p| p.extensions.get::<ClientIp>())
            .map(|ip| ip.0.clone());
        (principal, ip)
    }

    fn tool(&self, kind: ToolKind, schema: Arc<serde_json::Map<String, Value>>) -> Tool {
        let description = schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let h = kind.hints();
        Tool::new(kind.name(), description, schema)
            .with_title(kind.title())
            .with_annotations(
                ToolAnnotations::with_title(kind.title())
                    .read_only(h.read_only)
                    .destructive(h.destructive)
                    .idempotent(h.idempotent)
                    .open_world(h.open_world),
            )
    }
}

/// Serves MCP over stdin/stdout until the client disconnects.
pub(crate) async fn serve_stdio(exec: Arc<Executor>) -> Result<(), std::io::Error> {
    let server = TerrariumServer::new(exec, Transport::Stdio, "stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}

impl ServerHandler for TerrariumServer {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("terrarium", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Terrarium runs Terraform in a sandbox. Paths are relative to the server's workspace root \
                 (see workspace_list). Typical flow: terraform_init → terraform_validate → terraform_plan \
                 (returns a plan_id) → terraform_apply with that plan_id (only when the server enables it).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let principal = self.caller(&context).0;
        let tools = self
            .exec
            .listed_tools_for(self.transport, &principal)
            .into_iter()
            .map(|(kind, schema)| self.tool(kind, schema))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.exec
            .listed_tools()
            .into_iter()
            .find(|(k, _)| k.name() == name)
            .map(|(kind, schema)| self.tool(kind, schema))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let (principal, source_ip) = self.caller(&context);
        let mut call = CallContext::new(principal, self.transport);
        call.source_ip = source_ip;
        call.cancel = context.ct.child_token();
        let token = context
            .meta
            .get_progress_token()
            .or_else(|| request.meta.as_ref().and_then(|m| m.get_progress_token()));
        let mut forwarder = None;
        if let Some(token) = token {
            let (tx, mut rx) = mpsc::channel::<String>(PROGRESS_BUFFER);
            let peer = context.peer.clone();
            forwarder = Some(tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(message) = rx.recv().await {
                    n += 1;
                    let p = ProgressNotificationParam::new(token.clone(), n as f64)
                        .with_message(message);
                    if peer.notify_progress(p).await.is_err() {
                        break;
                    }
                }
            }));
            call.progress = Some(Arc::new(move |m: String| {
                let _ = tx.try_send(m);
            }));
        }
        let arguments = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let started = std::time::Instant::now();
        let response = self.exec.call(&request.name, arguments, call).await;
        crate::memory::after_call();
        if let Some(m) = &self.metrics {
            let outcome = if !response.is_error {
                "ok".to_string()
            } else {
                response.structured["error"]["kind"]
                    .as_str()
                    .unwrap_or("terraform")
                    .to_string()
            };
            m.tool_calls
                .get_or_create(&ToolLabels {
                    tool: request.name.to_string(),
                    outcome,
                })
                .inc();
            m.tool_duration
                .get_or_create(&ToolName {
                    tool: request.name.to_string(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        if let Some(f) = forwarder {
            // The sender was dropped with the call context: the forwarder drains and ends, so
            // every progress notification precedes the result.
            let _ = f.await;
        }
        let mut result = if response.is_error {
            CallToolResult::error(vec![ContentBlock::text(response.text)])
        } else {
            CallToolResult::success(vec![ContentBlock::text(response.text)])
        };
        result.structured_content = Some(response.structured);
        Ok(result.into())
    }
}
