//! The daemon's HTTP endpoints: `/metrics` (Prometheus text, or OpenMetrics with exemplars
//! when the scraper asks for it), `/healthz`, `/readyz`, `/`, the status page, and the run
//! API (`api`).

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::metrics::Metrics;

/// Coder must have answered within this for `/readyz` to say ready.
pub const READY_WITHIN: Duration = Duration::from_secs(300);

/// What the endpoints serve, implemented by the daemon (so this module needs nothing of it).
pub trait Served: Send + Sync + 'static {
    fn metrics(&self) -> &Metrics;
    /// The status page, rendered now.
    fn status_page(&self) -> String;
    /// The status page's data as JSON.
    fn status_json(&self) -> serde_json::Value;
    /// What the page knows of a failed workspace's trace (`{trace_id}` links when no
    /// tracing backend is configured).
    fn find_trace(&self, trace_id: &str) -> Option<serde_json::Value>;
    /// The run API's bearer token; `None`: the API is off.
    fn api_token(&self) -> Option<crate::secret::Secret>;
    /// Starts a run of `scenario` now (with `count` workspaces instead of its own); its id.
    fn start_run(&self, scenario: &str, count: Option<u32>) -> Result<String, api::Refusal>;
    /// A run started through the API: `{"id", "scenario", "state": "running"}`, or once done
    /// the `once --output json` document with `"state": "done"`.
    fn run_state(&self, id: &str) -> Option<serde_json::Value>;
}

type Shared = Arc<dyn Served>;

pub fn router(d: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(page))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/runs", post(api::start))
        .route("/api/v1/runs/{id}", get(api::state))
        .with_state(d)
}

/// Whether the scraper asked for OpenMetrics (Prometheus does when exemplar storage is on).
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics(State(d): State<Shared>, headers: HeaderMap) -> Response {
    let om = wants_openmetrics(&headers);
    let body = d.metrics().encode(om);
    let ctype = if om {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, ctype)], body).into_response()
}

async fn readyz(State(d): State<Shared>) -> Response {
    match d.metrics().last_answer() {
        Some(t)
            if (chrono::Utc::now() - t)
                .to_std()
                .is_ok_and(|age| age < READY_WITHIN) =>
        {
            (StatusCode::OK, "ready\n").into_response()
        }
        Some(t) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: Coder last answered at {t}\n"),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Coder has not answered yet\n",
        )
            .into_response(),
    }
}

async fn page(State(d): State<Shared>) -> Html<String> {
    Html(d.status_page())
}

async fn status_json(State(d): State<Shared>) -> Response {
    axum::Json(d.status_json()).into_response()
}

async fn trace(
    State(d): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match d.find_trace(&id) {
        Some(doc) => axum::Json(doc).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "message": format!("trace {id:?} is not one of the failed workspaces the status page lists")
            })),
        )
            .into_response(),
    }
}
