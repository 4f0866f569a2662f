//! `agent`: from a succeeded build until every agent is `connected` and `ready`.
//!
//! Coder's own harness waits for `connected` only; a workspace is usable when its start-up
//! scripts have run, so we also wait for the lifecycle to reach `ready`. "Every agent" means
//! the top-level ones: a devcontainer sub-agent (`parent_id` set) is left out, as Coder's own
//! workspace health leaves it out, unless the scenario names it (`agent = "name"`); a named
//! agent is waited for alone, and may appear after the build (a sub-agent does).

use std::time::Duration;

use uuid::Uuid;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::{WorkspaceAgentLifecycle as Life, WorkspaceAgentStatus as Status};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(10 * 60),
    runs_in: &[Stage::Started, Stage::AgentReady],
    leaves: Leaves::Stage(Stage::AgentReady),
    agents: true,
    run: |ctx, walk| Box::pin(run_phase(ctx, walk)),
    ..PhaseDef::BASE
};

async fn run_phase(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let agents = run(walk.updates()?, ctx.settings.agent.as_deref()).await?;
    walk.ended_on_event();
    walk.agent = agents.into_iter().next();
    Ok(())
}

/// Coder's harness polls agents every second; so do we when the stream is unavailable.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Waits for every top-level agent (or the `named` one) to be ready; returns the agents'
/// ids and names, first agent first.
pub async fn run(
    updates: &mut crate::coder::watch::Updates,
    named: Option<&str>,
) -> Result<Vec<(Uuid, String)>, PhaseError> {
    updates
        .wait_for(POLL_EVERY, |ws| {
            let agents: Vec<_> = ws
                .latest_build
                .agents()
                .filter(|a| match named {
                    Some(n) => a.name == n,
                    None => a.parent_id.is_none(),
                })
                .collect();
            if named.is_some() && agents.is_empty() {
                return None; // not there yet
            }
            for a in &agents {
                if a.status == Status::Timeout {
                    return Some(Err(PhaseError::new(
                        Reason::AgentTimeout,
                        format!(
                            "agent {:?} did not connect within its connection timeout",
                            a.name
                        ),
                    )));
                }
                if matches!(a.lifecycle_state, Life::StartError | Life::StartTimeout) {
                    return Some(Err(PhaseError::new(
                        Reason::AgentUnhealthy,
                        format!(
                            "agent {:?} start-up ended in {:?}",
                            a.name, a.lifecycle_state
                        ),
                    )));
                }
            }
            let ready = agents
                .iter()
                .all(|a| a.status == Status::Connected && a.lifecycle_state == Life::Ready);
            ready.then(|| Ok(agents.iter().map(|a| (a.id, a.name.clone())).collect()))
        })
        .await?
}
