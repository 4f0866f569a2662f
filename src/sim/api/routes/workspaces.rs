//! Workspaces: created (both routes), read (deleted ones 410), listed, found by name, built,
//! given an autostart schedule (coderd/workspaces.go, coderd/workspacebuilds.go).

use std::collections::HashMap;

use axum::extract::{Path, Query, State as Ax};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxResponse};
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use super::*;
use crate::coder::{
    CreateWorkspaceBuildRequest, CreateWorkspaceRequest, Response, ValidationError,
};
use crate::sim::accounts::Caller;
use crate::sim::types::{Workspace, WorkspacesResponse};

pub(in crate::sim::api) async fn create_for_user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    if !caller.is(&user) {
        return Ok(resource_not_found());
    }
    create(&app, &caller, &body)
}

pub(in crate::sim::api) async fn create_in_org(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path((org, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Answer {
    if !is_org(&app, &org) || !caller.is(&user) {
        return Ok(resource_not_found());
    }
    create(&app, &caller, &body)
}

/// Coder's workspace name rule (codersdk.NameValid).
pub(in crate::sim::api) fn name_valid(name: &str) -> Result<(), String> {
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

/// Creates a workspace for the caller.
pub(in crate::sim::api) fn create(app: &Shared, caller: &Caller, body: &[u8]) -> Answer {
    let req: CreateWorkspaceRequest = read_body(body, "body")?;
    let st = &app.state;
    let template_ok = match (req.template_id, req.template_version_id) {
        (Some(t), _) => t == st.id.template.id,
        (None, Some(v)) => v == st.id.template.active_version_id,
        (None, None) => {
            return Ok(bad_request(
                "Either template_id or template_version_id must be specified.",
                vec![],
            ));
        }
    };
    if !template_ok {
        return Ok(bad_request(
            "Template not found.",
            vec![ValidationError {
                field: "template_id".into(),
                detail: "template not found".into(),
            }],
        ));
    }
    if let Err(d) = name_valid(&req.name) {
        return Ok(bad_request(
            "Invalid workspace name.",
            vec![ValidationError {
                field: "name".into(),
                detail: d,
            }],
        ));
    }
    if st.lock().names.contains_key(&req.name) {
        return Ok((
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
            .into_response());
    }
    // The build's parameters, checked after the name as coderd checks them in its builder
    // (coderd/wsbuilder). coderd drops a value no parameter has; the simulator refuses it,
    // being stricter where a scenario's typo would otherwise pass unseen.
    for p in &req.rich_parameter_values {
        if !st.id.params.iter().any(|t| t.name == p.name) {
            return Ok(bad_request(
                "Unable to validate parameters",
                vec![ValidationError {
                    field: p.name.clone(),
                    detail: "parameter is not defined in the template".into(),
                }],
            ));
        }
    }
    let values = req
        .rich_parameter_values
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let refused = crate::sim::parameters::refusals(&st.id.params, &values);
    if !refused.is_empty() {
        return Ok(bad_request("Unable to validate parameters", refused));
    }
    let Some(owner) = st.accounts.find(&caller.id.to_string()) else {
        return Ok(resource_not_found());
    };
    let ws = st.create_workspace(&req.name, &owner, req.rich_parameter_values);
    app.notify_created(&ws, caller.id);
    Ok((StatusCode::CREATED, Json(ws)).into_response())
}

/// `GET /workspaces/{id}` as coderd/workspaces.go's `workspace` handler answers it: a deleted
/// workspace is **410 Gone** unless `include_deleted` is true (a value that is not a boolean
/// is a 400); 404 only for one that never existed.
pub(in crate::sim::api) async fn workspace(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let id = path_id(&id)?;
    let show_deleted = match q.get("include_deleted").map(String::as_str) {
        None | Some("") => false,
        Some(v) => match go_parse_bool(v) {
            Some(b) => b,
            None => {
                return Ok(bad_request(
                    &format!("Invalid boolean value {v:?} for \"include_deleted\" query param."),
                    vec![ValidationError {
                        field: "deleted".into(),
                        detail: "Must be a valid boolean".into(),
                    }],
                ));
            }
        },
    };
    if let Some(ws) = app.state.current(id) {
        return Ok(Json(ws).into_response());
    }
    let grave = app.state.lock().deleted.get(&id).map(|g| g.ws.clone());
    Ok(match grave {
        Some(ws) if show_deleted => Json(ws).into_response(),
        Some(_) => gone(id),
        None => resource_not_found(),
    })
}

/// Coder's answer for a deleted workspace (coderd/workspaces.go `workspace`, v2.36.1: the
/// query parameter it names is `include_deleted`, seen from the real server).
pub(in crate::sim::api) fn gone(id: Uuid) -> AxResponse {
    error(
        StatusCode::GONE,
        format!(
            "Workspace {:?} was deleted, you can view this workspace by specifying '?include_deleted=true' and trying again.",
            id.to_string()
        ),
    )
}

pub(in crate::sim::api) async fn create_build(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let id = path_id(&id)?;
    let req: CreateWorkspaceBuildRequest = read_body(&body, "transition")?;
    Ok(match app.state.start_build(id, req.transition) {
        Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    })
}

/// `codersdk.UpdateWorkspaceAutostartRequest`.
#[derive(Deserialize)]
pub(in crate::sim::api) struct AutostartRequest {
    #[serde(default)]
    schedule: Option<String>,
}

/// `PUT /workspaces/{workspace}/autostart` (coderd/workspaces.go `putWorkspaceAutostart`).
pub(in crate::sim::api) async fn put_autostart(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let id = path_id(&id)?;
    let req: AutostartRequest = read_body(&body, "schedule")?;
    Ok(match app.state.set_autostart(id, req.schedule.as_deref()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(detail) => bad_request(
            "Invalid autostart schedule.",
            vec![ValidationError {
                field: "schedule".into(),
                detail,
            }],
        ),
    })
}

/// `GET /workspaces?q=owner:me name:<text>`: Coder's search, for the filters we use; a
/// member sees its own workspaces only.
pub(in crate::sim::api) async fn list(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SearchQuery>,
) -> AxResponse {
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
    let owner_id = match &owner {
        Some(o) if caller.is(o) => Some(caller.id),
        Some(o) => match app.state.accounts.find(o) {
            Some(u) => Some(u.id),
            None => {
                return Json(WorkspacesResponse {
                    workspaces: vec![],
                    count: 0,
                })
                .into_response();
            }
        },
        None => None,
    };
    let w = app.state.lock();
    let mut all: Vec<Workspace> = w
        .live
        .values()
        .filter(|e| caller.may_see(e.ws.owner_id))
        .filter(|e| owner_id.is_none_or(|o| e.ws.owner_id == o))
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
    let page = q.page(all);
    Json(WorkspacesResponse {
        workspaces: page,
        count,
    })
    .into_response()
}

/// `GET /users/{user}/workspace/{workspacename}`: what `coder ssh` resolves a name with.
pub(in crate::sim::api) async fn workspace_by_name(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path((user, name)): Path<(String, String)>,
) -> AxResponse {
    let owner = if caller.is(&user) {
        Some(caller.id)
    } else {
        app.state.accounts.find(&user).map(|u| u.id)
    };
    let id = app.state.lock().names.get(&name).copied();
    match id.and_then(|id| app.state.current(id)) {
        Some(ws) if Some(ws.owner_id) == owner && caller.may_see(ws.owner_id) => {
            app.state.note_caller(&ws.name, &caller.username);
            Json(ws).into_response()
        }
        _ => resource_not_found(),
    }
}
