//! The monitoring HTTP server: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/api/v1/state`
//! (JSON) and a live dashboard at `/`. The core task publishes a [`Snapshot`] that the handlers
//! read; they never touch the cluster state itself.

mod arrivals;
mod dashboard;
mod history;
mod metrics;
mod models;
mod power;
mod server;
mod snapshot;
mod state_api;
mod views;
mod window;

pub use history::{HistorySample, HISTORY_SECONDS};
pub use metrics::{Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use models::{LatencyView, ModelView, WidthShare};
pub use power::{PowerPoint, PowerSeries};
pub use server::{router, serve, HttpState};
pub use snapshot::{Monitor, Snapshot, RECENT_DECISIONS};
pub use views::{
    AgentView, BatchTotals, CoordinatorView, CountersView, DecisionCount, TelemetryView,
};
pub use window::{Percentiles, WINDOW_MS};
