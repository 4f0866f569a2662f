//! `delete`: cancel an active build, post the delete build, wait for its job to succeed and
//! for the workspace to be gone. Runs for every workspace that was created.

use std::time::Duration;

use uuid::Uuid;

use crate::coder::watch::Updates;
use crate::coder::{
    ApiError, Client, CreateWorkspaceBuildRequest, ProvisionerJob, ProvisionerJobStatus,
    WorkspaceTransition,
};
use crate::phases::{PhaseError, Reason};

const POLL_EVERY: Duration = Duration::from_millis(500);
/// Attempts at posting the delete build while another build is still active (409).
const CONFLICT_ATTEMPTS: u32 = 5;

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
            own = Updates::new(client, workspace, crate::config::WaitMode::Poll);
            &mut own
        }
    };

    let mut attempt = 0;
    let build = loop {
        cancel_active(client, workspace).await?;
        let req = CreateWorkspaceBuildRequest {
            transition: WorkspaceTransition::Delete,
            orphan: false,
        };
        match client.create_build(workspace, &req).await {
            Ok(b) => break b,
            Err(e) if e.is_not_found() => return Ok(()), // already gone
            Err(e) if e.status() == Some(409) && attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(POLL_EVERY).await;
            }
            Err(e) => return Err(e.into()),
        }
    };

    // Follow the delete build; the stream may end or error once the workspace is gone, so
    // fall back to the build itself then.
    let followed = updates
        .wait_for(POLL_EVERY, |ws| {
            let b = &ws.latest_build;
            (b.id == build.id && b.job.status.is_terminal()).then(|| b.job.clone())
        })
        .await;
    let job = match followed {
        Ok(job) => job,
        Err(e) => {
            tracing::debug!(workspace.id = %workspace, error = %e, "following the delete build directly");
            wait_job(client, build.id).await?
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
    match client.workspace(workspace).await {
        Err(e) if e.is_not_found() => Ok(()),
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

/// Cancels the workspace's latest build if it is still pending or running, and waits for it
/// to stop (Coder refuses a new build while one is active).
async fn cancel_active(client: &Client, workspace: Uuid) -> Result<(), PhaseError> {
    let ws = match client.workspace(workspace).await {
        Ok(ws) => ws,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let b = &ws.latest_build;
    if !b.job.status.is_active() && b.job.status != ProvisionerJobStatus::Canceling {
        return Ok(());
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
    Ok(())
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
