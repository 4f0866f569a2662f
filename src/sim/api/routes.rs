//! The REST handlers: identity, templates, workspaces (create, get, list, by name), builds,
//! timings and cancel, each answering as coderd does (its file cited where it matters).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State as Ax};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{App, Shared, error, resource_not_found};
use crate::coder::{
    CreateWorkspaceBuildRequest, CreateWorkspaceRequest, Response, ValidationError,
};
use crate::sim::types::{Workspace, WorkspacesResponse};

pub(super) async fn buildinfo(Ax(app): Ax<Shared>) -> AxResponse {
    Json(crate::sim::types::BuildInfo {
        version: app.state.cfg.version.clone(),
        external_url: "https://github.com/coder/coder".into(),
        dashboard_url: String::new(),
        deployment_id: app.state.id.org.id.to_string(),
    })
    .into_response()
}

/// `GET /applications/host` (coderd/workspaceapps.go `appHost`): the wildcard app host with
/// the access URL's port added when it has none (`appurl.SubdomainAppHost`); `""` without.
pub(super) async fn app_host(Ax(app): Ax<Shared>) -> AxResponse {
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

pub(super) fn is_me(app: &App, user: &str) -> bool {
    let u = &app.state.id.user;
    user == "me" || user == u.username || user == u.id.to_string()
}

pub(super) fn is_org(app: &App, org: &str) -> bool {
    let o = &app.state.id.org;
    org == o.name || org == o.id.to_string()
}

pub(super) async fn user(Ax(app): Ax<Shared>, Path(user): Path<String>) -> AxResponse {
    if !is_me(&app, &user) {
        return resource_not_found();
    }
    Json(app.state.id.user.clone()).into_response()
}

pub(super) async fn organization(Ax(app): Ax<Shared>, Path(org): Path<String>) -> AxResponse {
    if !is_org(&app, &org) {
        return resource_not_found();
    }
    Json(app.state.id.org.clone()).into_response()
}

pub(super) async fn template(
    Ax(app): Ax<Shared>,
    Path((org, name)): Path<(String, String)>,
) -> AxResponse {
    if !is_org(&app, &org) || name != app.state.id.template.name {
        return resource_not_found();
    }
    Json(app.state.id.template.clone()).into_response()
}

pub(super) async fn rich_parameters(
    Ax(app): Ax<Shared>,
    Path(version): Path<String>,
) -> AxResponse {
    if version != app.state.id.template.active_version_id.to_string() {
        return resource_not_found();
    }
    Json(app.state.id.params.clone()).into_response()
}

pub(super) async fn create_for_user(
    Ax(app): Ax<Shared>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    if !is_me(&app, &user) {
        return resource_not_found();
    }
    create(&app, &body)
}

pub(super) async fn create_in_org(
    Ax(app): Ax<Shared>,
    Path((org, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> AxResponse {
    if !is_org(&app, &org) || !is_me(&app, &user) {
        return resource_not_found();
    }
    create(&app, &body)
}

pub(super) fn bad_request(message: &str, validations: Vec<ValidationError>) -> AxResponse {
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

/// Coder's workspace name rule (codersdk.NameValid).
pub(super) fn name_valid(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err("must be between 1 and 32 characters".into());
    }
    let ok = name
        .split('-')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !ok {
        return Err("must be alphanumeric with hyphens".into());
    }
    if name == "new" || name == "create" {
        return Err("cannot use a reserved name".into());
    }
    Ok(())
}

pub(super) fn create(app: &App, body: &[u8]) -> AxResponse {
    let req: CreateWorkspaceRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                "Request body must be valid JSON.",
                vec![ValidationError {
                    field: "body".into(),
                    detail: e.to_string(),
                }],
            );
        }
    };
    let st = &app.state;
    let template_ok = match (req.template_id, req.template_version_id) {
        (Some(t), _) => t == st.id.template.id,
        (None, Some(v)) => v == st.id.template.active_version_id,
        (None, None) => {
            return bad_request(
                "Either template_id or template_version_id must be specified.",
                vec![],
            );
        }
    };
    if !template_ok {
        return bad_request(
            "Template not found.",
            vec![ValidationError {
                field: "template_id".into(),
                detail: "template not found".into(),
            }],
        );
    }
    if let Err(d) = name_valid(&req.name) {
        return bad_request(
            "Invalid workspace name.",
            vec![ValidationError {
                field: "name".into(),
                detail: d,
            }],
        );
    }
    for p in &req.rich_parameter_values {
        if !st.id.params.iter().any(|t| t.name == p.name) {
            return bad_request(
                "Unable to validate parameters",
                vec![ValidationError {
                    field: p.name.clone(),
                    detail: "parameter is not defined in the template".into(),
                }],
            );
        }
    }
    if st.lock().names.contains_key(&req.name) {
        return (
            StatusCode::CONFLICT,
            Json(Response {
                message: format!("Workspace {:?} already exists.", req.name),
                detail: String::new(),
                validations: vec![ValidationError {
                    field: "name".into(),
                    detail: "This value is already in use and should be unique.".into(),
                }],
            }),
        )
            .into_response();
    }
    let ws = st.create_workspace(&req.name, req.rich_parameter_values);
    (StatusCode::CREATED, Json(ws)).into_response()
}

pub(super) fn parse_id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

/// `GET /workspaces/{id}` as coderd/workspaces.go's `workspace` handler answers it: a deleted
/// workspace is **410 Gone** unless `include_deleted` is true (a value that is not a boolean
/// is a 400); 404 only for one that never existed.
pub(super) async fn workspace(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> AxResponse {
    let Some(id) = parse_id(&id) else {
        return resource_not_found();
    };
    let show_deleted = match q.get("include_deleted").map(String::as_str) {
        None | Some("") => false,
        Some(v) => match go_parse_bool(v) {
            Some(b) => b,
            None => {
                return bad_request(
                    &format!("Invalid boolean value {v:?} for \"include_deleted\" query param."),
                    vec![ValidationError {
                        field: "deleted".into(),
                        detail: "Must be a valid boolean".into(),
                    }],
                );
            }
        },
    };
    if let Some(ws) = app.state.current(id) {
        return Json(ws).into_response();
    }
    let grave = app.state.lock().deleted.get(&id).map(|g| g.ws.clone());
    match grave {
        Some(ws) if show_deleted => Json(ws).into_response(),
        Some(_) => gone(id),
        None => resource_not_found(),
    }
}

/// Coder's answer for a deleted workspace (coderd/workspaces.go).
pub(super) fn gone(id: Uuid) -> AxResponse {
    error(
        StatusCode::GONE,
        format!(
            "Workspace {:?} was deleted, you can view this workspace by specifying '?deleted=true' and trying again.",
            id.to_string()
        ),
    )
}

/// Go's `strconv.ParseBool`, which Coder uses for boolean query parameters.
pub(super) fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub(super) async fn create_build(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    let Some(id) = parse_id(&id) else {
        return resource_not_found();
    };
    let req: CreateWorkspaceBuildRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                "Request body must be valid JSON.",
                vec![ValidationError {
                    field: "transition".into(),
                    detail: e.to_string(),
                }],
            );
        }
    };
    match app.state.start_build(id, req.transition) {
        Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

pub(super) async fn build(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    match parse_id(&id).and_then(|id| app.state.build(id)) {
        Some(b) => Json(b).into_response(),
        None => resource_not_found(),
    }
}

pub(super) async fn timings(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    match parse_id(&id).and_then(|id| app.state.timings(id)) {
        Some(t) => Json(t).into_response(),
        None => resource_not_found(),
    }
}

pub(super) async fn cancel(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    let Some(id) = parse_id(&id) else {
        return resource_not_found();
    };
    match app.state.cancel(id) {
        Ok(()) => Json(Response {
            message: "Job has been marked as canceled...".into(),
            ..Default::default()
        })
        .into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
}

/// `GET /workspaces?q=owner:me name:<text>`: Coder's search, for the filters we use.
pub(super) async fn list(Ax(app): Ax<Shared>, Query(q): Query<ListQuery>) -> AxResponse {
    let mut owner: Option<String> = None;
    let mut name: Option<String> = None;
    for term in q.q.split_whitespace() {
        match term.split_once(':') {
            Some(("owner", v)) => owner = Some(v.trim_matches('"').to_string()),
            Some(("name", v)) => name = Some(v.trim_matches('"').to_lowercase()),
            Some((k, _)) => {
                return bad_request(
                    "Invalid workspace search query.",
                    vec![ValidationError {
                        field: "q".into(),
                        detail: format!("Query param {k:?} is not a valid query param"),
                    }],
                );
            }
            None => name = Some(term.to_lowercase()),
        }
    }
    if let Some(o) = &owner
        && !is_me(&app, o)
    {
        return Json(WorkspacesResponse {
            workspaces: vec![],
            count: 0,
        })
        .into_response();
    }
    let w = app.state.lock();
    let mut all: Vec<Workspace> = w
        .live
        .values()
        .filter(|e| {
            name.as_ref()
                .is_none_or(|n| e.ws.name.to_lowercase().contains(n.as_str()))
        })
        .map(|e| {
            let mut ws = e.ws.clone();
            w.stamp_queue(&mut ws.latest_build);
            ws
        })
        .collect();
    drop(w);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let count = all.len() as i64;
    let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page = all.into_iter().skip(q.offset).take(limit).collect();
    Json(WorkspacesResponse {
        workspaces: page,
        count,
    })
    .into_response()
}

/// `GET /users/{user}/workspace/{workspacename}`: what `coder ssh` resolves a name with.
pub(super) async fn workspace_by_name(
    Ax(app): Ax<Shared>,
    Path((user, name)): Path<(String, String)>,
) -> AxResponse {
    if !is_me(&app, &user) {
        return resource_not_found();
    }
    let id = app.state.lock().names.get(&name).copied();
    match id.and_then(|id| app.state.current(id)) {
        Some(ws) => Json(ws).into_response(),
        None => resource_not_found(),
    }
}
