//! The template, its version's rich parameters and the form's evaluation
//! (coderd/templates.go, coderd/templateversions.go, coderd/parameters.go).

use axum::Json;
use axum::extract::{Path, State as Ax};
use axum::response::{IntoResponse, Response as AxResponse};

use super::*;

pub(in crate::sim::api) async fn template(
    Ax(app): Ax<Shared>,
    Path((org, name)): Path<(String, String)>,
) -> AxResponse {
    if !is_org(&app, &org) || name != app.state.id.template.name {
        return resource_not_found();
    }
    Json(app.state.id.template.clone()).into_response()
}

pub(in crate::sim::api) async fn rich_parameters(
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
pub(in crate::sim::api) async fn evaluate_parameters(
    Ax(app): Ax<Shared>,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let version = path_id(&version)?;
    let req: crate::coder::parameters::DynamicParametersRequest = read_body(&body, "body")?;
    if version != app.state.id.template.active_version_id {
        return Ok(resource_not_found());
    }
    let owner_known = req
        .owner_id
        .is_some_and(|id| !id.is_nil() && app.state.accounts.find(&id.to_string()).is_some());
    Ok(Json(crate::sim::parameters::evaluate(
        &app.state.id.params,
        0,
        &req.inputs,
        owner_known,
    ))
    .into_response())
}
