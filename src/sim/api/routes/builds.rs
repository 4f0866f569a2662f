//! A build, its timings, and a cancel (coderd/workspacebuilds.go).

use axum::Json;
use axum::extract::{Path, State as Ax};
use axum::response::IntoResponse;

use super::*;

pub(in crate::sim::api) async fn build(Ax(app): Ax<Shared>, Path(id): Path<String>) -> Answer {
    Ok(match app.state.build(path_id(&id)?) {
        Some(b) => Json(b).into_response(),
        None => resource_not_found(),
    })
}

pub(in crate::sim::api) async fn timings(Ax(app): Ax<Shared>, Path(id): Path<String>) -> Answer {
    Ok(match app.state.timings(path_id(&id)?) {
        Some(t) => Json(t).into_response(),
        None => resource_not_found(),
    })
}

pub(in crate::sim::api) async fn cancel(Ax(app): Ax<Shared>, Path(id): Path<String>) -> Answer {
    let id = path_id(&id)?;
    Ok(said(
        app.state.cancel(id),
        "Job has been marked as canceled...",
    ))
}
