//! `pty`: the web terminal runs `run_command` and its output contains `expect_output`.

use std::time::Duration;

use uuid::Uuid;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::Client;
use crate::coder::pty::PtyEnd;

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(60),
    runs_in: &[Stage::AgentReady],
    leaves: Leaves::Same,
    run: |ctx, walk| Box::pin(run_phase(ctx, walk)),
    ..PhaseDef::BASE
};

async fn run_phase(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let (agent, _) = walk.agent()?;
    let s = &ctx.settings;
    run(&ctx.client, agent, &s.run_command, &s.expect_output).await
}

/// Coder's web terminal opens at 80×24, as its own harness does.
pub const SIZE: (u16, u16) = (80, 24);
/// Output kept for matching; a command printing more is matched on its tail.
const KEEP: usize = 64 << 10;

pub async fn run(
    client: &Client,
    agent: Uuid,
    command: &str,
    expect: &str,
) -> Result<(), PhaseError> {
    let mut pty = client
        .open_pty(agent, Uuid::new_v4(), command, SIZE)
        .await?;
    let mut seen: Vec<u8> = Vec::new();
    let mut first = Vec::new();
    loop {
        match pty.recv().await {
            Ok(chunk) => {
                if first.len() < 200 {
                    first.extend_from_slice(&chunk[..chunk.len().min(200 - first.len())]);
                }
                seen.extend_from_slice(&chunk);
                if seen.len() > KEEP {
                    seen.drain(..seen.len() - KEEP);
                }
                if crate::reason::contains(&seen, expect.as_bytes()) {
                    pty.close().await;
                    return Ok(());
                }
            }
            Err(PtyEnd::Closed) => {
                return Err(PhaseError::new(
                    Reason::OutputMismatch,
                    format!(
                        "the terminal closed without printing {expect:?}; it printed {:?}",
                        String::from_utf8_lossy(&first)
                    ),
                ));
            }
            Err(PtyEnd::Dropped(why)) => {
                return Err(PhaseError::new(
                    Reason::ConnectError,
                    format!("the web terminal dropped before printing {expect:?}: {why}"),
                ));
            }
        }
    }
}
