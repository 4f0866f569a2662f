//! `ssh`: an SSH session to the workspace ran `run_command` and its output matched.
//! The transport and protocol live in [`crate::ssh`]; this adds the phase's sub-timings
//! (`handshake`, `proxy_startup`).

use std::time::Duration;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Stage, Walk};
use crate::ssh::{CoderEnv, Target};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(60),
    runs_in: &[Stage::AgentReady],
    leaves: Leaves::Same,
    run: |ctx, walk| Box::pin(run(ctx, walk)),
    ..PhaseDef::BASE
};

async fn run(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let (_, agent) = walk.agent()?;
    let target = Target {
        workspace: walk.name.clone(),
        owner: walk.owner.clone(),
        agent,
    };
    let coder = CoderEnv {
        url: ctx.client.base_url().clone(),
        token: ctx.client.token().clone(),
    };
    let s = &ctx.settings;
    let t = crate::ssh::run(&s.ssh, &target, &coder, &s.run_command, &s.expect_output).await?;
    walk.sub_timings
        .insert("handshake", t.handshake.as_secs_f64() * 1e3);
    if let Some(p) = t.proxy_startup {
        walk.sub_timings
            .insert("proxy_startup", p.as_secs_f64() * 1e3);
    }
    Ok(())
}
