//! Users, their tokens and the deployment's entitlements, as coderd/users.go,
//! coderd/apikey.go and enterprise/coderd/coderd.go answer them.

use axum::extract::{Path, Query, State as Ax};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxResponse};
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use super::*;
use crate::coder::{Response, ValidationError};
use crate::sim::accounts::Caller;

/// The user a route's `{user}` names: `me` (or the caller's own name or id) for the caller,
/// else any user by name or id.
fn named(app: &App, caller: &Caller, user: &str) -> Option<crate::sim::types::User> {
    let key = if caller.is(user) {
        caller.id.to_string()
    } else {
        user.to_string()
    };
    app.state.accounts.find(&key)
}

/// `GET /users/{user}`: any user by name or id, `me` for the caller.
pub(in crate::sim::api) async fn user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> AxResponse {
    match named(&app, &caller, &user) {
        Some(u) => Json(u).into_response(),
        None => resource_not_found(),
    }
}

/// `GET /users?q=word`: users whose name or email contains the word (Coder's plain search
/// term; other filters are refused rather than ignored), paged, with the total count.
pub(in crate::sim::api) async fn list_users(
    Ax(app): Ax<Shared>,
    Query(q): Query<SearchQuery>,
) -> AxResponse {
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
    let users = q.page(all);
    Json(serde_json::json!({ "users": users, "count": count })).into_response()
}

#[derive(Deserialize)]
pub(in crate::sim::api) struct CreateUser {
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
pub(in crate::sim::api) async fn create_user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Answer {
    let req: CreateUser = read_body(&body, "body")?;
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
        return Ok(bad_request("Validation failed.", invalid));
    }
    let login_type = if req.service_account {
        if !req.login_type.is_empty() && req.login_type != "none" {
            return Ok(bad_request(
                "Service accounts must use login type 'none'.",
                vec![],
            ));
        }
        if !req.password.is_empty() {
            return Ok(bad_request(
                "Password cannot be set for service accounts.",
                vec![],
            ));
        }
        if !req.email.is_empty() {
            return Ok(bad_request(
                "Email cannot be set for service accounts.",
                vec![],
            ));
        }
        if !app.state.cfg.service_accounts {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "Service Accounts is a Premium feature. Contact sales!",
            ));
        }
        "none"
    } else if req.login_type.is_empty() {
        "password"
    } else {
        req.login_type.as_str()
    };
    if !req.service_account && login_type == "none" {
        return Ok(bad_request(
            "Login type 'none' requires a service account.",
            vec![],
        ));
    }
    if login_type != "password" && !req.password.is_empty() {
        return Ok(bad_request(
            &format!("Password cannot be set for non-password ({login_type:?}) authentication."),
            vec![],
        ));
    }
    if req.organization_ids.is_empty() {
        return Ok((
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
            .into_response());
    }
    if app.state.accounts.taken(&req.username, &req.email) {
        return Ok(error(StatusCode::CONFLICT, "User already exists."));
    }
    let org = app.state.id.org.id;
    if let Some(other) = req
        .organization_ids
        .iter()
        .find(|o| **o != org && !o.is_nil())
    {
        return Ok(error(
            StatusCode::NOT_FOUND,
            format!(
                "Organization does not exist with the provided id {:?}.",
                other.to_string()
            ),
        ));
    }
    match login_type {
        "none" => {}
        "password" => {
            if let Err(detail) = crate::sim::accounts::password_valid(&req.password) {
                return Ok(bad_request(
                    "Password is invalid",
                    vec![ValidationError {
                        field: "password".into(),
                        detail,
                    }],
                ));
            }
        }
        other => {
            return Ok(bad_request(
                &format!("Unsupported login type {other:?} for manually creating new users."),
                vec![],
            ));
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
    Ok(match created {
        Ok(u) => (StatusCode::CREATED, Json(u)).into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    })
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
pub(in crate::sim::api) async fn entitlements(Ax(app): Ax<Shared>) -> AxResponse {
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
pub(in crate::sim::api) async fn delete_user(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> AxResponse {
    let Some(u) = named(&app, &caller, &user) else {
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

#[derive(Deserialize)]
pub(in crate::sim::api) struct CreateToken {
    #[serde(default)]
    token_name: String,
    /// Go's `time.Duration`: nanoseconds.
    #[serde(default)]
    lifetime: i64,
}

/// `POST /users/{user}/keys/tokens` (coderd/apikey.go `postToken`): 201 `{"key": …}`.
pub(in crate::sim::api) async fn create_token(
    Ax(app): Ax<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let req: CreateToken = read_body(&body, "body")?;
    let Some(u) = named(&app, &caller, &user) else {
        return Ok(resource_not_found());
    };
    Ok(
        match app
            .state
            .accounts
            .issue_token(&caller, u.id, &req.token_name, req.lifetime)
        {
            Ok(key) => {
                (StatusCode::CREATED, Json(serde_json::json!({ "key": key }))).into_response()
            }
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
        },
    )
}
