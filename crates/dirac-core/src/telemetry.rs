//! Logging: `tracing` with JSON lines (default) or text, filtered by
//! `RUST_LOG` (default `info`). Every request runs in an `rpc` span carrying
//! `component` (the gRPC service) and every agent cycle in an `agent` span, so
//! each line says which component wrote it.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call twice (the second is ignored).
pub fn init(format: &str, filter: Option<&str>) {
    let filter =
        EnvFilter::try_new(filter.unwrap_or("info")).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}
