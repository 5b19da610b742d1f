//! The operator's side of Slim Scheduler: a request client, an open-loop load generator, sample
//! loading, and a whole local deployment in one process for the demo and the tests. The `slim`
//! binary's commands live in [`commands`].

pub mod client;
pub mod cluster;
pub mod commands;
pub mod load;
pub mod samples;

/// Sets up logging: `RUST_LOG` wins, else `default_level`; JSON lines when `json`.
pub fn init_logging(default_level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
