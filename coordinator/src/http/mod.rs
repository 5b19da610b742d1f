//! The monitoring HTTP server: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/api/v1/state`
//! (JSON) and a live dashboard at `/`. The core task publishes a [`Snapshot`] that the handlers
//! read; they never touch the cluster state itself.

mod dashboard;
mod metrics;
mod server;
mod snapshot;
mod state_api;

pub use metrics::{render as render_metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use server::{router, serve, HttpState};
pub use snapshot::{
    width_label, AgentView, BatchTotals, CoordinatorView, CountersView, DecisionCount,
    HistorySample, Monitor, Snapshot, TelemetryView, HISTORY_SECONDS, RECENT_DECISIONS,
};
