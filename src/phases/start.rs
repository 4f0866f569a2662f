//! `start`: a start build of a stopped workspace until its job has succeeded (an `agent`
//! phase may follow to wait for the new agents).

use std::time::Duration;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Stage, Walk};
use crate::coder::WorkspaceTransition;

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[Stage::Stopped],
    leaves: Leaves::Stage(Stage::Started),
    build: Some("start"),
    run: |ctx, walk| Box::pin(run(ctx, walk)),
    ..PhaseDef::BASE
};

async fn run(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    super::build::post_and_wait(ctx, walk, WorkspaceTransition::Start).await
}
