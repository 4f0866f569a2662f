//! `ssh`: an SSH session to the workspace ran `run_command` and its output matched.
//! The transport and protocol live in [`crate::ssh`]; this adds the phase's sub-timings.

use crate::coder::Client;
use crate::config::SshConfig;
use crate::phases::{PhaseError, PhaseRecord};
use crate::ssh::{CoderEnv, SshTimings, Target};

pub async fn run(
    client: &Client,
    cfg: &SshConfig,
    target: &Target,
    command: &str,
    expect: &str,
) -> Result<SshTimings, PhaseError> {
    let coder = CoderEnv {
        url: client.base_url().clone(),
        token: client.token().clone(),
    };
    crate::ssh::run(cfg, target, &coder, command, expect).await
}

/// Puts the sub-timings on the phase's record.
pub fn record(rec: &mut PhaseRecord, t: &SshTimings) {
    rec.sub_timings_ms
        .insert("handshake", t.handshake.as_secs_f64() * 1e3);
    if let Some(p) = t.proxy_startup {
        rec.sub_timings_ms
            .insert("proxy_startup", p.as_secs_f64() * 1e3);
    }
}
