//! `/api/v1/state`: the snapshot as JSON.

use axum::{extract::State, http::header, response::IntoResponse};

use super::server::HttpState;

/// The latest snapshot: agents, counters, batch totals, history and recent decisions.
pub async fn state(State(http): State<HttpState>) -> impl IntoResponse {
    let body = serde_json::to_vec(http.snapshot().as_ref()).expect("snapshot serializes");
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}
