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

/// What the handlers read: the latest snapshot, the live broker connection flag, and the
/// metrics registry (built once, here).
#[derive(Debug, Clone)]
pub struct HttpState {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    connected: Arc<AtomicBool>,
    metrics: metrics::Metrics,
}

impl HttpState {
    /// State reading snapshots from `snapshot` and the connection flag `connected`.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, connected: Arc<AtomicBool>) -> Self {
        Self {
            metrics: metrics::Metrics::new(snapshot.clone()),
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
        .route("/charts.js", get(dashboard::charts))
        .route("/dashboard.css", get(dashboard::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/state", get(state_api::state))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the task is aborted; returns the bound address.
pub fn serve(
    listener: TcpListener,
    state: HttpState,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
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
    if !slim_mqtt::daemon::healthy() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: a task panicked; the process is exiting\n".into(),
        );
    }
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
        http.metrics.scrape(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain HTTP/1.0 GET: (status code, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    async fn server(snapshot: Snapshot, connected: bool) -> SocketAddr {
        let (_tx, rx) = watch::channel(Arc::new(snapshot));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, _task) = serve(
            listener,
            HttpState::new(rx, Arc::new(AtomicBool::new(connected))),
        )
        .unwrap();
        addr
    }

    #[tokio::test]
    async fn readyz_is_503_without_a_broker_or_without_agents_and_healthz_is_200() {
        let addr = server(Snapshot::default(), false).await;
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("broker"), "{body}");
        let addr = server(Snapshot::default(), true).await;
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("no agent"), "{body}");
    }

    #[tokio::test]
    async fn the_dashboard_and_its_assets_are_served_from_the_binary() {
        let addr = server(Snapshot::default(), true).await;
        let (status, page) = get(addr, "/").await;
        assert_eq!(status, 200);
        assert!(page.contains("dashboard.js") && page.contains("Fleet"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
        let (status, script) = get(addr, "/dashboard.js").await;
        assert_eq!(status, 200);
        assert!(script.contains("api/v1/state"));
        assert_eq!(get(addr, "/dashboard.css").await.0, 200);
        let (status, charts) = get(addr, "/charts.js").await;
        assert_eq!(status, 200);
        assert!(charts.contains("function niceTicks"));
        for page_or_script in [&page, &script, &charts] {
            assert!(!page_or_script.contains("https://"), "no CDN");
        }
        assert_eq!(get(addr, "/nope").await.0, 404);
    }
}
