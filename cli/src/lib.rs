//! The operator's side of Slim Scheduler: the `slim` binary's commands live in [`commands`]; its
//! argument parsing and error reporting in [`app`]. The request client, the load generator,
//! sample loading and the in-process cluster the commands build on are in `slim_client`, which
//! the end-to-end tests use too.

pub mod app;
pub mod commands;
pub mod knee;
pub mod saturate;

/// Whether log lines written to stderr should carry ANSI colours: only on a terminal, and never
/// when `NO_COLOR` is set (journald and log files get plain text).
pub fn stderr_wants_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Sets up logging to stderr: `RUST_LOG` wins, else `default_level`; JSON lines when `json`;
/// colours only on a terminal.
pub fn init_logging(default_level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr_wants_colour());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A user-facing error: `error: <message>` and one `  caused by: <cause>` line per underlying
/// cause, without a backtrace (whatever `RUST_BACKTRACE` says).
pub fn error_report(error: &anyhow::Error) -> String {
    let mut out = format!("error: {error}");
    let mut last = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        // Contexts often repeat their cause's text; print each piece once.
        if text.is_empty() || last.ends_with(&text) {
            continue;
        }
        out.push_str("\n  caused by: ");
        out.push_str(&text);
        last = text;
    }
    out
}
