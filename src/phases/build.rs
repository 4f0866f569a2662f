//! `build`: from creation until the start build's provisioner job has succeeded.
//! Runs after `create`. What the build spent where is read by [`super::stages`] once the
//! walk is over; this phase only names the build ([`PhaseDef::build`]).

use std::time::Duration;

use super::{Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::{ProvisionerJobStatus, WorkspaceTransition};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[Stage::Created],
    leaves: Leaves::Stage(Stage::Started),
    build: Some("start"),
    run: |_, walk| Box::pin(run(walk)),
    ..PhaseDef::BASE
};

/// Coder's harness polls builds every 500 ms; so do we when the stream is unavailable.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Waits for the workspace's start build to finish.
async fn run(walk: &mut Walk) -> Result<(), PhaseError> {
    let job = walk
        .updates()?
        .wait_for(POLL_EVERY, |ws| {
            let b = &ws.latest_build;
            (b.transition == WorkspaceTransition::Start && b.job.status.is_terminal())
                .then(|| b.job.clone())
        })
        .await?;
    walk.ended_on_event();
    match job.status {
        ProvisionerJobStatus::Succeeded => Ok(()),
        ProvisionerJobStatus::Canceled => Err(PhaseError::new(
            Reason::BuildCanceled,
            "the start build was canceled",
        )),
        _ => Err(PhaseError::new(
            Reason::BuildFailed,
            if job.error.is_empty() {
                "the start build failed".to_string()
            } else {
                job.error.clone()
            },
        )),
    }
}

/// Posts a build of `transition` and waits on the workspace's events until its job has
/// finished: the body of `stop` and `start` (Coder refuses the post with 409 while another
/// build is active, and takes the version and parameters from the previous build).
pub(super) async fn post_and_wait(
    ctx: &super::Ctx,
    walk: &mut Walk,
    transition: WorkspaceTransition,
) -> Result<(), PhaseError> {
    let id = walk
        .id
        .ok_or_else(|| PhaseError::new(Reason::ProtocolError, "no workspace to build"))?;
    let req = crate::coder::CreateWorkspaceBuildRequest {
        transition,
        orphan: false,
    };
    let build = ctx.client.create_build(id, &req).await?;
    walk.builds.push(build.id);
    let job = walk
        .updates()?
        .wait_for(POLL_EVERY, |ws| {
            let b = &ws.latest_build;
            (b.id == build.id && b.job.status.is_terminal()).then(|| b.job.clone())
        })
        .await?;
    walk.ended_on_event();
    let what = match transition {
        WorkspaceTransition::Start => "start",
        WorkspaceTransition::Stop => "stop",
        WorkspaceTransition::Delete => "delete",
    };
    match job.status {
        ProvisionerJobStatus::Succeeded => Ok(()),
        ProvisionerJobStatus::Canceled => Err(PhaseError::new(
            Reason::BuildCanceled,
            format!("the {what} build was canceled"),
        )),
        _ => Err(PhaseError::new(
            Reason::BuildFailed,
            if job.error.is_empty() {
                format!("the {what} build failed")
            } else {
                format!("the {what} build failed: {}", job.error)
            },
        )),
    }
}
