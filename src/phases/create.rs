//! `create`: POST the workspace; done when Coder answers 201 with it. Starts following the
//! workspace for the phases after it.

use std::time::Duration;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Stage, Walk};
use crate::coder::watch::Updates;
use crate::coder::{CreateWorkspaceRequest, WorkspaceBuildParameter};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(30),
    runs_in: &[Stage::None],
    leaves: Leaves::Stage(Stage::Created),
    run: |ctx, walk| Box::pin(run(ctx, walk)),
    ..PhaseDef::BASE
};

/// What every workspace of a run is created from, resolved once per run.
#[derive(Debug, Clone)]
pub struct Blueprint {
    pub template_id: uuid::Uuid,
    pub template_name: String,
    /// The template's organization: where an older Coder creates workspaces.
    pub organization_id: uuid::Uuid,
    /// The template's active version: whose form `parameters` loads.
    pub version_id: uuid::Uuid,
    /// Coder checks this template's parameters with its classic rules, not by evaluating it.
    pub classic_parameters: bool,
    pub parameters: Vec<WorkspaceBuildParameter>,
}

async fn run(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let b = &ctx.blueprint;
    let req = CreateWorkspaceRequest {
        template_id: Some(b.template_id),
        name: walk.name.clone(),
        rich_parameter_values: b.parameters.clone(),
        ..Default::default()
    };
    let ws = ctx
        .client
        .create_workspace(b.organization_id, &req, &ctx.dialect)
        .await?;
    walk.id = Some(ws.id);
    walk.created = Some(std::time::Instant::now());
    walk.owner = ws.owner_name.clone();
    walk.builds.push(ws.latest_build.id);
    let mut updates = Updates::new(&ctx.client, ws.id, ctx.dialect.clone());
    updates.latest = Some(ws);
    walk.updates = Some(updates);
    Ok(())
}
