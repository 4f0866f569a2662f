//! `create`: POST the workspace; done when Coder answers 201 with it.

use crate::coder::{Client, CreateWorkspaceRequest, Dialect, Workspace, WorkspaceBuildParameter};
use crate::phases::PhaseError;

/// What every workspace of a run is created from, resolved once per run.
#[derive(Debug, Clone)]
pub struct Blueprint {
    pub template_id: uuid::Uuid,
    pub template_name: String,
    /// The template's organization: where an older Coder creates workspaces.
    pub organization_id: uuid::Uuid,
    pub parameters: Vec<WorkspaceBuildParameter>,
}

pub async fn run(
    client: &Client,
    blueprint: &Blueprint,
    name: &str,
    dialect: &Dialect,
) -> Result<Workspace, PhaseError> {
    let req = CreateWorkspaceRequest {
        template_id: Some(blueprint.template_id),
        name: name.to_string(),
        rich_parameter_values: blueprint.parameters.clone(),
        ..Default::default()
    };
    Ok(client
        .create_workspace(blueprint.organization_id, &req, dialect)
        .await?)
}
