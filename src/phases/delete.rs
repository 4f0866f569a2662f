//! `delete`: cancel an active build, post the delete build, wait for its job to succeed and
//! for the workspace to be gone. Runs for every workspace that was created.

use std::time::Duration;

use uuid::Uuid;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::watch::Updates;
use crate::coder::{
    ApiError, Client, CreateWorkspaceBuildRequest, Dialect, ProvisionerJob, ProvisionerJobStatus,
    WatchTransport, WorkspaceBuild, WorkspaceTransition,
};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[
        Stage::Created,
        Stage::Started,
        Stage::AgentReady,
        Stage::Stopped,
        Stage::Autostarting,
        Stage::Autostarted,
    ],
    leaves: Leaves::Stage(Stage::Gone),
    run: |ctx, walk| Box::pin(run_phase(ctx, walk)),
    ..PhaseDef::BASE
};

async fn run_phase(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let id = walk
        .id
        .ok_or_else(|| PhaseError::new(Reason::ProtocolError, "no workspace to delete"))?;
    run(&ctx.client, id, walk.updates.as_mut()).await
}

const POLL_EVERY: Duration = Duration::from_millis(500);
/// Attempts at posting the delete build (another build still active, or a transient error).
const DELETE_ATTEMPTS: u32 = 6;

/// Deletes the workspace. `updates` is the walk's follower, if it has one.
pub async fn run(
    client: &Client,
    workspace: Uuid,
    updates: Option<&mut Updates>,
) -> Result<(), PhaseError> {
    let mut own;
    let updates = match updates {
        Some(u) => u,
        None => {
            own = Updates::new(
                client,
                workspace,
                std::sync::Arc::new(Dialect::new(WatchTransport::Poll)),
            );
            &mut own
        }
    };

    // What the walk last saw of the workspace stands in for a first read of it: each call
    // here is load on the Coder being measured.
    let known = updates.latest.as_ref().map(|ws| ws.latest_build.job.status);
    let build = post_delete(client, workspace, known).await?;
    let Some(build) = build else { return Ok(()) }; // already gone

    // Follow the delete build; the stream may end or error once the workspace is gone, so
    // fall back to the build itself then.
    let followed = updates
        .wait_for(POLL_EVERY, |ws| {
            let b = &ws.latest_build;
            (b.id == build.id && b.job.status.is_terminal()).then(|| b.job.clone())
        })
        .await;
    let (job, streamed) = match followed {
        Ok(job) => (job, true),
        Err(e) => {
            tracing::debug!(workspace.id = %workspace, error = %e, "following the delete build directly");
            (wait_job(client, build.id).await?, false)
        }
    };
    match job.status {
        ProvisionerJobStatus::Succeeded => {}
        ProvisionerJobStatus::Canceled => {
            return Err(PhaseError::new(
                Reason::BuildCanceled,
                "the delete build was canceled",
            ));
        }
        _ => {
            return Err(PhaseError::new(
                Reason::BuildFailed,
                format!("the delete build failed: {}", job.error),
            ));
        }
    }
    // coderd marks the workspace deleted in the transaction that completes the delete job
    // and then publishes it, so the stream's last state says "deleted" itself
    // (coderd/workspaces.go watchWorkspace reads deleted workspaces too); ask only when the
    // stream did not say so.
    let said_deleted = updates.latest.as_ref().is_some_and(|ws| {
        ws.latest_build.id == build.id
            && ws.latest_build.status == crate::coder::WorkspaceStatus::Deleted
    });
    if streamed && said_deleted {
        return Ok(());
    }
    match client.workspace(workspace).await {
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(e.into()),
        Ok(ws) if ws.latest_build.status == crate::coder::WorkspaceStatus::Deleted => Ok(()),
        Ok(ws) => Err(PhaseError::new(
            Reason::ProtocolError,
            format!(
                "the delete build succeeded but the workspace is still {:?}",
                ws.latest_build.status
            ),
        )),
    }
}

/// Posts the delete build, cancelling an active build first. A POST is not retried by the
/// client, but a delete is safe to retry once we know no delete build exists yet: after a
/// 5xx, a 429 or a lost connection, look at the workspace and follow its delete build if the
/// POST went through after all. `None`: the workspace is gone.
async fn post_delete(
    client: &Client,
    workspace: Uuid,
    known: Option<ProvisionerJobStatus>,
) -> Result<Option<WorkspaceBuild>, PhaseError> {
    let mut attempt = 0;
    // The latest build the walk saw ended: nothing to cancel, post the delete straight away.
    // Should another build have begun since, Coder answers 409 and the next attempt reads.
    let mut settled = known.is_some_and(|s| s.is_terminal());
    loop {
        let transient = |r: Reason| {
            matches!(
                r,
                Reason::Http5xx | Reason::RateLimited | Reason::ConnectError | Reason::Timeout
            )
        };
        let presence = if std::mem::take(&mut settled) {
            Ok(Presence::Idle)
        } else {
            cancel_active(client, workspace).await
        };
        match presence {
            Ok(Presence::Gone) => return Ok(None),
            Ok(Presence::Idle) => {}
            Err(e) if !transient(e.reason) || attempt >= DELETE_ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(crate::coder::backoff(
                    POLL_EVERY,
                    Duration::from_secs(5),
                    attempt,
                ))
                .await;
                continue;
            }
        }
        let req = CreateWorkspaceBuildRequest {
            transition: WorkspaceTransition::Delete,
            orphan: false,
        };
        let err = match client.create_build(workspace, &req).await {
            Ok(b) => return Ok(Some(b)),
            Err(e) if e.is_gone() => return Ok(None),
            Err(e) => e,
        };
        let transient = transient(err.reason());
        if !(transient || err.status() == Some(409)) || attempt >= DELETE_ATTEMPTS {
            return Err(err.into());
        }
        attempt += 1;
        if transient {
            match client.workspace(workspace).await {
                Err(e) if e.is_gone() => return Ok(None),
                Ok(ws)
                    if ws.latest_build.transition == WorkspaceTransition::Delete
                        && !matches!(
                            ws.latest_build.job.status,
                            ProvisionerJobStatus::Canceled | ProvisionerJobStatus::Failed
                        ) =>
                {
                    return Ok(Some(ws.latest_build));
                }
                _ => {}
            }
        }
        tokio::time::sleep(crate::coder::backoff(
            POLL_EVERY,
            Duration::from_secs(5),
            attempt,
        ))
        .await;
    }
}

/// What [`cancel_active`] found.
enum Presence {
    /// Deleted already (410) or never there (404): nothing to post.
    Gone,
    /// There, with no build in the way of a new one.
    Idle,
}

/// Cancels the workspace's latest build if it is still pending or running, and waits for it
/// to stop (Coder refuses a new build while one is active). Reading the workspace first also
/// tells a workspace that is already gone, which must not get a delete build posted.
async fn cancel_active(client: &Client, workspace: Uuid) -> Result<Presence, PhaseError> {
    let ws = match client.workspace(workspace).await {
        Ok(ws) => ws,
        Err(e) if e.is_gone() => return Ok(Presence::Gone),
        Err(e) => return Err(e.into()),
    };
    let b = &ws.latest_build;
    if !b.job.status.is_active() && b.job.status != ProvisionerJobStatus::Canceling {
        return Ok(Presence::Idle);
    }
    if b.job.status.is_active() {
        match client.cancel_build(b.id).await {
            Ok(()) => {}
            // The job finished between our read and the cancel: nothing to cancel.
            Err(ApiError::Status {
                status: 400 | 409, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    wait_job(client, b.id).await?;
    Ok(Presence::Idle)
}

async fn wait_job(client: &Client, build: Uuid) -> Result<ProvisionerJob, PhaseError> {
    loop {
        let b = client.workspace_build(build).await?;
        if b.job.status.is_terminal() {
            return Ok(b.job);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
