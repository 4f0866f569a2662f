//! `create`: POST the workspace; done when Coder answers 201 with it.

use crate::coder::{Client, CreateWorkspaceRequest, Workspace, WorkspaceBuildParameter};
use crate::phases::PhaseError;

/// What every workspace of a run is created from, resolved once per run.
#[derive(Debug, Clone)]
pub struct Blueprint {
    pub template_id: uuid::Uuid,
    pub template_name: String,
    pub parameters: Vec<WorkspaceBuildParameter>,
}

pub async fn run(
    client: &Client,
    blueprint: &Blueprint,
    name: &str,
) -> Result<Workspace, PhaseError> {
    let req = CreateWorkspaceRequest {
        template_id: Some(blueprint.template_id),
        name: name.to_string(),
        rich_parameter_values: blueprint.parameters.clone(),
        ..Default::default()
    };
    Ok(client.create_workspace(&req).await?)
}
