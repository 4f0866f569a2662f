//! The REST handlers: users and tokens, templates, workspaces (create, get, list, by name),
//! builds, timings and cancel, each answering as coderd does (its file cited where it
//! matters), each request as the user its token names.

use std::collections::HashMap;

use axum::extract::{Path, Query, State as Ax};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxResponse};
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use super::{App, Shared, error, resource_not_found};
use crate::coder::{
    CreateWorkspaceBuildRequest, CreateWorkspaceRequest, Response, ValidationError,
};
use crate::sim::accounts::Caller;
use crate::sim::types::{Workspace, WorkspacesResponse};

pub(super) async fn buildinfo(Ax(app): Ax<Shared>) -> AxResponse {
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

pub(super) fn is_org(app: &App, org: &str) -> bool {
    let o = &app.state.id.org;
    org == o.name || org == o.id.to_string()
}

/// `GET /users/{user}`: any user by name or id, `me` for the caller.
pub(super) async fn user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> AxResponse {
    let key = if caller.is(&user) {
        caller.id.to_string()
    } else {
        user
    };
    match app.state.accounts.find(&key) {
        Some(u) => Json(u).into_response(),
        None => resource_not_found(),
    }
}

#[derive(Deserialize)]
pub(super) struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
}

/// `GET /users?q=word`: users whose name or email contains the word (Coder's plain search
/// term; other filters are refused rather than ignored), paged, with the total count.
pub(super) async fn list_users(Ax(app): Ax<Shared>, Query(q): Query<UsersQuery>) -> AxResponse {
    let mut word = String::new();
    for term in q.q.split_whitespace() {
        if let Some((k, _)) = term.split_once(':') {
            return bad_request(
                "Invalid user search query.",
                vec![ValidationError {
                    field: "q".into(),
                    detail: format!("Query param {k:?} is not supported by the simulator"),
                }],
            );
        }
        word = term.to_string();
    }
    let all = app.state.accounts.search(&word);
    let count = all.len();
    let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let users: Vec<_> = all.into_iter().skip(q.offset).take(limit).collect();
    Json(serde_json::json!({ "users": users, "count": count })).into_response()
}

#[derive(Deserialize)]
pub(super) struct CreateUser {
    #[serde(default)]
    email: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    login_type: String,
    #[serde(default)]
    organization_ids: Vec<Uuid>,
    #[serde(default)]
    service_account: bool,
}

/// `POST /users`, checked in the order coderd/users.go `postUser` checks it (v2.36.1):
/// httpapi.Read's tag validations, then the service-account rules (login type `none`,
/// neither password nor email, the Premium entitlement), then login type `none` for anyone
/// else, a password on a non-password user, the organizations, a taken name, and last the
/// password's strength (coderd/userpassword).
pub(super) async fn create_user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> AxResponse {
    let req: CreateUser = match read_body(&body, "body") {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    // codersdk.CreateUserRequestWithOrgs: `email` is `required_unless=ServiceAccount true,
    // omitempty,email`, `username` is `required,username`.
    let mut invalid = Vec::new();
    if req.email.is_empty() && !req.service_account {
        invalid.push(ValidationError {
            field: "email".into(),
            detail: "Validation failed for tag \"required_unless\" with value: \"\"".into(),
        });
    } else if !req.email.is_empty() && !email_valid(&req.email) {
        invalid.push(ValidationError {
            field: "email".into(),
            detail: format!(
                "Validation failed for tag \"email\" with value: \"{}\"",
                req.email
            ),
        });
    }
    if !crate::sim::accounts::username_valid(&req.username) {
        invalid.push(ValidationError {
            field: "username".into(),
            detail: format!(
                "Validation failed for tag \"username\" with value: \"{}\"",
                req.username
            ),
        });
    }
    if !invalid.is_empty() {
        return bad_request("Validation failed.", invalid);
    }
    let login_type = if req.service_account {
        if !req.login_type.is_empty() && req.login_type != "none" {
            return bad_request("Service accounts must use login type 'none'.", vec![]);
        }
        if !req.password.is_empty() {
            return bad_request("Password cannot be set for service accounts.", vec![]);
        }
        if !req.email.is_empty() {
            return bad_request("Email cannot be set for service accounts.", vec![]);
        }
        if !app.state.cfg.service_accounts {
            return error(
                StatusCode::FORBIDDEN,
                "Service Accounts is a Premium feature. Contact sales!",
            );
        }
        "none"
    } else if req.login_type.is_empty() {
        "password"
    } else {
        req.login_type.as_str()
    };
    if !req.service_account && login_type == "none" {
        return bad_request("Login type 'none' requires a service account.", vec![]);
    }
    if login_type != "password" && !req.password.is_empty() {
        return bad_request(
            &format!("Password cannot be set for non-password ({login_type:?}) authentication."),
            vec![],
        );
    }
    if req.organization_ids.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(Response {
                message: "No organization specified to place the user as a member of. It is required to specify at least one organization id to place the user in.".into(),
                detail: "required at least 1 value for the array 'organization_ids'".into(),
                validations: vec![ValidationError {
                    field: "organization_ids".into(),
                    detail: "Missing values, this cannot be empty".into(),
                }],
            }),
        )
            .into_response();
    }
    if app.state.accounts.taken(&req.username, &req.email) {
        return error(StatusCode::CONFLICT, "User already exists.");
    }
    let org = app.state.id.org.id;
    if let Some(other) = req
        .organization_ids
        .iter()
        .find(|o| **o != org && !o.is_nil())
    {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "Organization does not exist with the provided id {:?}.",
                other.to_string()
            ),
        );
    }
    match login_type {
        "none" => {}
        "password" => {
            if let Err(detail) = crate::sim::accounts::password_valid(&req.password) {
                return bad_request(
                    "Password is invalid",
                    vec![ValidationError {
                        field: "password".into(),
                        detail,
                    }],
                );
            }
        }
        other => {
            return bad_request(
                &format!("Unsupported login type {other:?} for manually creating new users."),
                vec![],
            );
        }
    }
    let created = app.state.accounts.create(
        &caller,
        crate::sim::accounts::NewUser {
            username: &req.username,
            name: &req.name,
            password: &req.password,
            email: &req.email,
            login_type,
            service_account: req.service_account,
            organization: org,
        },
        chrono::Utc::now(),
    );
    match created {
        Ok(u) => (StatusCode::CREATED, Json(u)).into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

/// go-playground's `email` tag, as far as a test user's address goes: one `@` with
/// something on both sides and a dot in the domain.
fn email_valid(email: &str) -> bool {
    email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|l| !l.is_empty())
    })
}

/// The features an unlicensed coderd v2.36.1 lists, each not entitled (codersdk/deployment.go
/// `FeatureNames`, as `GET /entitlements` answers them).
const FEATURES: &[&str] = &[
    "access_control",
    "advanced_template_scheduling",
    "ai_governance_user_limit",
    "aibridge",
    "appearance",
    "audit_log",
    "boundary",
    "browser_only",
    "connection_log",
    "control_shared_ports",
    "custom_roles",
    "external_provisioner_daemons",
    "external_token_encryption",
    "high_availability",
    "managed_agent_limit",
    "multiple_external_auth",
    "multiple_organizations",
    "scim",
    "service_accounts",
    "task_batch_actions",
    "template_rbac",
    "user_limit",
    "user_role_management",
    "workspace_batch_actions",
    "workspace_external_agent",
    "workspace_prebuilds",
    "workspace_proxy",
];

/// `GET /entitlements` (enterprise/coderd/coderd.go `serveEntitlements`): what the
/// simulated license grants; only `service_accounts` has behaviour here. `user_limit`
/// counts the active users, as coderd does without a license.
pub(super) async fn entitlements(Ax(app): Ax<Shared>) -> AxResponse {
    let licensed = app.state.cfg.service_accounts;
    let features: serde_json::Map<String, serde_json::Value> = FEATURES
        .iter()
        .map(|name| {
            let on = licensed && *name == "service_accounts";
            let mut f = serde_json::json!({
                "entitlement": if on { "entitled" } else { "not_entitled" },
                "enabled": on,
            });
            if *name == "user_limit" {
                f["actual"] = app.state.accounts.search("").len().into();
            }
            (name.to_string(), f)
        })
        .collect();
    Json(serde_json::json!({
        "features": features,
        "warnings": [],
        "errors": [],
        "has_license": licensed,
        "trial": false,
        "require_telemetry": false,
        "refreshed_at": chrono::Utc::now(),
    }))
    .into_response()
}

/// `DELETE /users/{user}`: refused (417) while the user owns a workspace not yet deleted.
pub(super) async fn delete_user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> AxResponse {
    let key = if caller.is(&user) {
        caller.id.to_string()
    } else {
        user
    };
    let Some(u) = app.state.accounts.find(&key) else {
        return resource_not_found();
    };
    let owns = app
        .state
        .lock()
        .live
        .values()
        .any(|e| e.ws.owner_id == u.id);
    said(
        app.state.accounts.delete(&caller, u.id, owns),
        "User has been deleted!",
    )
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

#[derive(Deserialize)]
pub(super) struct CreateToken {
    #[serde(default)]
    token_name: String,
    /// Go's `time.Duration`: nanoseconds.
    #[serde(default)]
    lifetime: i64,
}

/// `POST /users/{user}/keys/tokens` (coderd/apikey.go `postToken`): 201 `{"key": …}`.
pub(super) async fn create_token(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    let req: CreateToken = match read_body(&body, "body") {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let key = if caller.is(&user) {
        caller.id.to_string()
    } else {
        user
    };
    let Some(u) = app.state.accounts.find(&key) else {
        return resource_not_found();
    };
    match app
        .state
        .accounts
        .issue_token(&caller, u.id, &req.token_name, req.lifetime)
    {
        Ok(key) => (StatusCode::CREATED, Json(serde_json::json!({ "key": key }))).into_response(),
        // A refusal's second line is Coder's `detail`.
        Err((code, msg)) => {
            let (message, detail) = msg.split_once('\n').unwrap_or((&msg, ""));
            (
                StatusCode::from_u16(code).expect("valid code"),
                Json(Response {
                    message: message.into(),
                    detail: detail.into(),
                    validations: vec![],
                }),
            )
                .into_response()
        }
    }
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

/// `POST /templateversions/{id}/dynamic-parameters/evaluate` (coderd/parameters.go): the form
/// evaluated once, as `owner_id` would see it.
pub(super) async fn evaluate_parameters(
    Ax(app): Ax<Shared>,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    let version = match path_id(&version) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let req: crate::coder::parameters::DynamicParametersRequest = match read_body(&body, "body") {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if version != app.state.id.template.active_version_id {
        return resource_not_found();
    }
    let owner_known = req
        .owner_id
        .is_some_and(|id| !id.is_nil() && app.state.accounts.find(&id.to_string()).is_some());
    Json(crate::sim::parameters::evaluate(
        &app.state.id.params,
        0,
        &req.inputs,
        owner_known,
    ))
    .into_response()
}

pub(super) async fn create_for_user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    if !caller.is(&user) {
        return resource_not_found();
    }
    create(&app, &caller, &body)
}

pub(super) async fn create_in_org(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path((org, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> AxResponse {
    if !is_org(&app, &org) || !caller.is(&user) {
        return resource_not_found();
    }
    create(&app, &caller, &body)
}

/// A JSON request body, or httpapi.Read's 400 naming `field`.
fn read_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    field: &str,
) -> Result<T, Box<AxResponse>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(bad_request(
            "Request body must be valid JSON.",
            vec![ValidationError {
                field: field.into(),
                detail: e.to_string(),
            }],
        ))
    })
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

/// Creates a workspace for the caller.
pub(super) fn create(app: &App, caller: &Caller, body: &[u8]) -> AxResponse {
    let req: CreateWorkspaceRequest = match read_body(body, "body") {
        Ok(r) => r,
        Err(resp) => return *resp,
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
    // The build's parameters, checked after the name as coderd checks them in its builder
    // (coderd/wsbuilder). coderd drops a value no parameter has; the simulator refuses it,
    // being stricter where a scenario's typo would otherwise pass unseen.
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
    let values = req
        .rich_parameter_values
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let refused = crate::sim::parameters::refusals(&st.id.params, &values);
    if !refused.is_empty() {
        return bad_request("Unable to validate parameters", refused);
    }
    let Some(owner) = st.accounts.find(&caller.id.to_string()) else {
        return resource_not_found();
    };
    let ws = st.create_workspace(&req.name, &owner, req.rich_parameter_values);
    (StatusCode::CREATED, Json(ws)).into_response()
}

pub(super) fn parse_id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

/// A UUID in the route, or Coder's answer for one that is not (coderd/httpmw/httpmw.go
/// `ParseUUIDParam`: 400 "Invalid UUID", the detail from Go's uuid.Parse).
pub(super) fn path_id(s: &str) -> Result<Uuid, Box<AxResponse>> {
    Uuid::parse_str(s).map_err(|_| {
        let detail = match s.len() {
            32 | 36 | 38 | 45 => "invalid UUID format".to_string(),
            n => format!("invalid UUID length: {n}"),
        };
        Box::new(
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

/// `GET /workspaces/{id}` as coderd/workspaces.go's `workspace` handler answers it: a deleted
/// workspace is **410 Gone** unless `include_deleted` is true (a value that is not a boolean
/// is a 400); 404 only for one that never existed.
pub(super) async fn workspace(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> AxResponse {
    let id = match path_id(&id) {
        Ok(id) => id,
        Err(resp) => return *resp,
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

/// Coder's answer for a deleted workspace (coderd/workspaces.go `workspace`, v2.36.1: the
/// query parameter it names is `include_deleted`, seen from the real server).
pub(super) fn gone(id: Uuid) -> AxResponse {
    error(
        StatusCode::GONE,
        format!(
            "Workspace {:?} was deleted, you can view this workspace by specifying '?include_deleted=true' and trying again.",
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
    let id = match path_id(&id) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let req: CreateWorkspaceBuildRequest = match read_body(&body, "transition") {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match app.state.start_build(id, req.transition) {
        Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

/// `codersdk.UpdateWorkspaceAutostartRequest`.
#[derive(Deserialize)]
pub(super) struct AutostartRequest {
    #[serde(default)]
    schedule: Option<String>,
}

/// `PUT /workspaces/{workspace}/autostart` (coderd/workspaces.go `putWorkspaceAutostart`).
pub(super) async fn put_autostart(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    let id = match path_id(&id) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    let req: AutostartRequest = match read_body(&body, "schedule") {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match app.state.set_autostart(id, req.schedule.as_deref()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(detail) => bad_request(
            "Invalid autostart schedule.",
            vec![ValidationError {
                field: "schedule".into(),
                detail,
            }],
        ),
    }
}

pub(super) async fn build(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    match path_id(&id).map(|id| app.state.build(id)) {
        Ok(Some(b)) => Json(b).into_response(),
        Ok(None) => resource_not_found(),
        Err(resp) => *resp,
    }
}

pub(super) async fn timings(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    match path_id(&id).map(|id| app.state.timings(id)) {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => resource_not_found(),
        Err(resp) => *resp,
    }
}

pub(super) async fn cancel(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    let id = match path_id(&id) {
        Ok(id) => id,
        Err(resp) => return *resp,
    };
    said(app.state.cancel(id), "Job has been marked as canceled...")
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

/// `GET /workspaces?q=owner:me name:<text>`: Coder's search, for the filters we use; a
/// member sees its own workspaces only.
pub(super) async fn list(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
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
