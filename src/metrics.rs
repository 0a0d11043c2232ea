//! Prometheus metrics for the HTTP front door (`/metrics`), with `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ToolLabels {
    pub tool: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ToolName {
    pub tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CloseReason {
    /// `header_timeout`, `idle_timeout` or `cap` (closed to make room for a new connection).
    pub reason: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub tool_duration: Family<ToolName, Histogram>,
    pub auth_failures: Counter,
    pub rate_limited: Counter,
    pub runs_in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub sessions: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub connections_closed: Family<CloseReason, Counter>,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("terrarium");
        let requests = Family::<RouteLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let tool_calls = Family::<ToolLabels, Counter>::default();
        let tool_duration =
            Family::<ToolName, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let auth_failures = Counter::default();
        let rate_limited = Counter::default();
        let runs_in_flight = Gauge::default();
        let sessions = Gauge::default();
        let connections = Gauge::default();
        let connections_closed = Family::<CloseReason, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration by route and status",
            request_duration.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome",
            tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call duration by tool",
            tool_duration.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for missing or wrong credentials",
            auth_failures.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by the rate limiter",
            rate_limited.clone(),
        );
        registry.register(
            "runs_in_flight",
            "Tool calls running now",
            runs_in_flight.clone(),
        );
        registry.register("sessions", "Open MCP sessions", sessions.clone());
        registry.register(
            "http_connections",
            "Open HTTP connections",
            connections.clone(),
        );
        registry.register(
            "http_connections_closed",
            "Connections the server closed: past the header or idle deadline, or for the cap",
            connections_closed.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            tool_calls,
            tool_duration,
            auth_failures,
            rate_limited,
            runs_in_flight,
            sessions,
            connections,
            connections_closed,
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
