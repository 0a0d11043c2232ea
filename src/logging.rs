//! Diagnostic logging (never the audit trail, which has its own sinks).

use anyhow::Context;
use terrarium_core::audit::AUDIT_TARGET;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Diagnostics go to stderr (stdout belongs to the MCP stdio transport) or to a file, written
/// by tracing-appender's worker thread so a slow disk never holds up a call (lossless: a full
/// buffer waits). The returned guard flushes the file when dropped. Audit events have their own
/// sinks and are left out here.
pub(crate) fn init(
    level: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,terrarium={level},terrarium_core={level},{AUDIT_TARGET}=off"
    ));
    let layer = tracing_subscriber::fmt::layer().with_ansi(false);
    let (layer, guard) = match file {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("--log-file {}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(f);
            (
                layer.with_writer(writer).with_filter(filter).boxed(),
                Some(guard),
            )
        }
        None => (
            layer
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed(),
            None,
        ),
    };
    tracing_subscriber::registry().with(layer).init();
    Ok(guard)
}
