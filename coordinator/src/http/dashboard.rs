//! The dashboard at `/`: one page, its script and its style, built into the binary.

use axum::{http::header, response::IntoResponse};

const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const CHARTS_JS: &str = include_str!("assets/charts.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// The page.
pub async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

/// The script that polls `/api/v1/state` and draws the tables and charts.
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DASHBOARD_JS,
    )
}

/// The formatting helpers and the SVG chart code the page script uses.
pub async fn charts() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CHARTS_JS,
    )
}

/// The style sheet.
pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DASHBOARD_CSS,
    )
}
