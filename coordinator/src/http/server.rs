//! The axum server and the health endpoints.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{dashboard, metrics, snapshot::Snapshot, state_api};

/// What the handlers read: the latest snapshot and the live broker connection flag.
#[derive(Debug, Clone)]
pub struct HttpState {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    connected: Arc<AtomicBool>,
}

impl HttpState {
    /// State reading snapshots from `snapshot` and the connection flag `connected`.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, connected: Arc<AtomicBool>) -> Self {
        Self {
            snapshot,
            connected,
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Connected to the broker now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Every route.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/state", get(state_api::state))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the task is aborted; returns the bound address.
pub fn serve(listener: TcpListener, state: HttpState) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "monitoring HTTP server stopped");
        }
    });
    Ok((addr, task))
}

/// The process is alive.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Connected to the broker and at least one agent online; 503 otherwise.
async fn readyz(State(http): State<HttpState>) -> (StatusCode, String) {
    let online = http.snapshot().agents.iter().filter(|a| a.online).count();
    if !http.connected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not connected to the broker\n".into(),
        )
    } else if online == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no agent online\n".into(),
        )
    } else {
        (StatusCode::OK, format!("ready: {online} agents online\n"))
    }
}

async fn metrics_text(State(http): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&http.snapshot()),
    )
}
