//! The run API: `POST /api/v1/runs` starts a run of a scenario now, `GET /api/v1/runs/{id}`
//! tells how it stands and, once done, answers the same JSON as `once --output json`. Off
//! (404) unless `[server] api_token_file` is set; every request carries that token as
//! `Authorization: Bearer …`, compared in constant time and never logged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Shared;

/// Why a run was not started.
#[derive(Debug)]
pub enum Refusal {
    /// No scenario of that name (or a traffic pool, which always runs).
    Unknown(String),
    /// A run of it is in flight (counted as a skipped run, `overlap`).
    Running,
    /// The request asked for something the scenario cannot do (a count out of range).
    Invalid(String),
    /// The daemon is shutting down.
    Stopping,
}

/// `POST /api/v1/runs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub scenario: String,
    #[serde(default)]
    pub count: Option<u32>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "message": message.into() })),
    )
        .into_response()
}

/// `None` when the request may go on; else the answer (404 when the API is off).
fn authorize(d: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = d.api_token() else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "the run API is off: set [server] api_token_file to turn it on",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        return None;
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer <the token in [server] api_token_file>",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(resp)
}

/// Equal bytes, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn start(
    State(d): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(denied) = authorize(&d, &headers) {
        return denied;
    }
    let req: RunRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"scenario\": \"name\", \"count\": N}} (count optional): {e}"),
            );
        }
    };
    match d.start_run(&req.scenario, req.count) {
        Ok(id) => {
            let location = format!("/api/v1/runs/{id}");
            let mut resp = (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "id": id,
                    "scenario": req.scenario,
                    "state": "running",
                    "location": location,
                })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(Refusal::Unknown(msg)) => error(StatusCode::NOT_FOUND, msg),
        Err(Refusal::Running) => error(
            StatusCode::CONFLICT,
            format!(
                "scenario {:?} has a run in flight; try again when it is done",
                req.scenario
            ),
        ),
        Err(Refusal::Invalid(msg)) => error(StatusCode::BAD_REQUEST, msg),
        Err(Refusal::Stopping) => error(StatusCode::SERVICE_UNAVAILABLE, "scaletestd is stopping"),
    }
}

pub async fn state(
    State(d): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = authorize(&d, &headers) {
        return denied;
    }
    match d.run_state(&id) {
        Some(doc) => Json(doc).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} started through the API is known (the newest 100 are kept)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_is_eq() {
        use super::constant_time_eq as eq;
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"abcd"));
        assert!(eq(b"", b""));
    }
}
