//! The REST handlers, a file per kind of thing they serve, each answering as coderd does
//! (its file cited where it matters), each request as the user its token names; and what
//! they share: a refusal carried by `?` ([`Refused`]), request bodies and route ids read as
//! coderd reads them.

use axum::Json;
use axum::extract::{Path, State as Ax};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxResponse};
use uuid::Uuid;

pub(in crate::sim::api) use super::{App, Shared, error, resource_not_found};
use crate::coder::{Response, ValidationError};

mod builds;
mod templates;
mod users;
mod workspaces;

pub(in crate::sim::api) use builds::*;
pub(in crate::sim::api) use templates::*;
pub(in crate::sim::api) use users::*;
pub(in crate::sim::api) use workspaces::*;

pub(in crate::sim::api) async fn buildinfo(Ax(app): Ax<Shared>) -> AxResponse {
    Json(crate::sim::types::BuildInfo {
        version: app.state.cfg.version.clone(),
        external_url: "https://github.com/coder/coder".into(),
        dashboard_url: String::new(),
        deployment_id: app.state.id.org.id.to_string(),
        telemetry: false,
        workspace_proxy: false,
        agent_api_version: "1.0".into(),
        provisioner_api_version: "1.18".into(),
        upgrade_message: String::new(),
        webpush_public_key: String::new(),
    })
    .into_response()
}

/// `GET /applications/host` (coderd/workspaceapps.go `appHost`): the wildcard app host with
/// the access URL's port added when it has none (`appurl.SubdomainAppHost`); `""` without.
pub(in crate::sim::api) async fn app_host(Ax(app): Ax<Shared>) -> AxResponse {
    let host = match &app.state.cfg.wildcard_host {
        Some(h) => {
            let has_port = h
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
            match app.access_url.port() {
                Some(port) if !has_port => format!("{h}:{port}"),
                _ => h.clone(),
            }
        }
        None => String::new(),
    };
    Json(serde_json::json!({ "host": host })).into_response()
}

pub(in crate::sim::api) fn is_org(app: &App, org: &str) -> bool {
    let o = &app.state.id.org;
    org == o.name || org == o.id.to_string()
}

/// Coder's `{"message": …}` for a done action, or its refusal with status and message.
fn said(result: Result<(), (u16, String)>, message: &str) -> AxResponse {
    match result {
        Ok(()) => Json(Response {
            message: message.into(),
            ..Default::default()
        })
        .into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

pub(in crate::sim::api) async fn organization(
    Ax(app): Ax<Shared>,
    Path(org): Path<String>,
) -> AxResponse {
    if !is_org(&app, &org) {
        return resource_not_found();
    }
    Json(app.state.id.org.clone()).into_response()
}

/// A JSON request body, or httpapi.Read's 400 naming `field`.
pub(in crate::sim::api) fn read_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    field: &str,
) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| {
        Refused::from(bad_request(
            "Request body must be valid JSON.",
            vec![ValidationError {
                field: field.into(),
                detail: e.to_string(),
            }],
        ))
    })
}

pub(in crate::sim::api) fn bad_request(
    message: &str,
    validations: Vec<ValidationError>,
) -> AxResponse {
    (
        StatusCode::BAD_REQUEST,
        Json(Response {
            message: message.into(),
            detail: String::new(),
            validations,
        }),
    )
        .into_response()
}

/// A search's query (`GET /users`, `GET /workspaces`): the terms, and a page of the results
/// (coderd/httpapi `ParsePagination`: no limit or 0 means all).
#[derive(serde::Deserialize)]
pub(in crate::sim::api) struct SearchQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
}

impl SearchQuery {
    pub fn page<T>(&self, all: Vec<T>) -> Vec<T> {
        let limit = self.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        all.into_iter().skip(self.offset).take(limit).collect()
    }
}

/// A request refused with Coder's answer: what `?` carries out of a handler (boxed: an
/// answer is large, and most calls are not refused).
pub(in crate::sim::api) struct Refused(Box<AxResponse>);

impl From<AxResponse> for Refused {
    fn from(r: AxResponse) -> Refused {
        Refused(Box::new(r))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> AxResponse {
        *self.0
    }
}

/// What a handler that may refuse early answers.
pub(in crate::sim::api) type Answer = Result<AxResponse, Refused>;

pub(in crate::sim::api) fn parse_id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

/// A UUID in the route, or Coder's answer for one that is not (coderd/httpmw/httpmw.go
/// `ParseUUIDParam`: 400 "Invalid UUID", the detail from Go's uuid.Parse).
pub(in crate::sim::api) fn path_id(s: &str) -> Result<Uuid, Refused> {
    Uuid::parse_str(s).map_err(|_| {
        let detail = match s.len() {
            32 | 36 | 38 | 45 => "invalid UUID format".to_string(),
            n => format!("invalid UUID length: {n}"),
        };
        Refused::from(
            (
                StatusCode::BAD_REQUEST,
                Json(Response {
                    message: format!("Invalid UUID {s:?}."),
                    detail,
                    validations: vec![],
                }),
            )
                .into_response(),
        )
    })
}

/// Go's `strconv.ParseBool`, which Coder uses for boolean query parameters.
pub(in crate::sim::api) fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
