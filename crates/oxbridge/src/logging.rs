//! Log set-up: human-readable by default, JSON on request; level from `RUST_LOG`.
//!
//! Colours only when standard error is a terminal: under systemd (journald), in a
//! container's log driver or in a file, escape codes would only garble the text and
//! defeat grep.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; logs go to standard error.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
