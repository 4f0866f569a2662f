//! `stop`: a stop build (`transition: "stop"`) until its job has succeeded. The agent goes
//! with the workspace's compute, so terminals and SSH need `start` and `agent` again.

use std::time::Duration;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Stage, Walk};
use crate::coder::WorkspaceTransition;

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[Stage::Started, Stage::AgentReady],
    leaves: Leaves::Stage(Stage::Stopped),
    build: Some("stop"),
    run: |ctx, walk| Box::pin(run(ctx, walk)),
    ..PhaseDef::BASE
};

async fn run(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    walk.agent = None;
    super::build::post_and_wait(ctx, walk, WorkspaceTransition::Stop).await
}
