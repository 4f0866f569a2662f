//! `scaletestd sim-coder ssh --stdio TARGET`: the simulator's stand-in for `coder ssh --stdio`,
//! with the same arguments (`--ssh-host-prefix`, `--hostname-suffix`), the same reading of
//! TARGET ([`crate::coder::ssh_target`]) and the same environment (`CODER_URL`,
//! `CODER_SESSION_TOKEN`), so the `proxy-command` transport is tested exactly as it runs
//! against a real Coder: resolve the workspace and agent through the API, refuse what Coder's
//! CLI refuses, then pipe one raw SSH byte stream between stdin/stdout and the agent.
//!
//! Stricter than Coder where Coder would paper over a scale test's mistake: a stopped
//! workspace is refused rather than started, and a build still running is refused rather than
//! waited for; several agents without an agent name are refused (Coder picks one at random).

use tokio::io::AsyncWriteExt;

use crate::coder::ssh_target::{self, SshTarget};
use crate::coder::{TOKEN_HEADER, Workspace, WorkspaceTransition};
use crate::sim::api::SSH_HEADER;
use crate::sim::ssh::PREAMBLE;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: CoderCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CoderCommand {
    /// Connect stdin/stdout to a workspace's SSH server.
    Ssh {
        /// Pipe the raw SSH stream over stdin/stdout (required, as for ProxyCommand use).
        #[arg(long)]
        stdio: bool,
        /// Strip this prefix from the target (as `coder config-ssh`'s `Host coder.*`).
        #[arg(long, default_value = "")]
        ssh_host_prefix: String,
        /// Strip `.<suffix>` from the target (as `coder config-ssh`'s `Host *.coder`).
        #[arg(long, default_value = "")]
        hostname_suffix: String,
        /// `[owner/]workspace[.agent]`, read as Coder's CLI reads it.
        target: String,
    },
    /// Print the version, as `coder version` does.
    Version,
}

pub async fn run(args: Args) -> u8 {
    match args.command {
        CoderCommand::Version => {
            println!(
                "Coder {} (scaletestd simulator stand-in)",
                crate::sim::SimConfig::default().version
            );
            0
        }
        CoderCommand::Ssh {
            stdio,
            ssh_host_prefix,
            hostname_suffix,
            target,
        } => match ssh(stdio, &target, &ssh_host_prefix, &hostname_suffix).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
    }
}

async fn ssh(stdio: bool, input: &str, prefix: &str, suffix: &str) -> Result<(), String> {
    if !stdio {
        return Err("only --stdio is supported".into());
    }
    let url = std::env::var("CODER_URL").map_err(|_| "CODER_URL is not set".to_string())?;
    let token = std::env::var("CODER_SESSION_TOKEN")
        .map_err(|_| "CODER_SESSION_TOKEN is not set".to_string())?;
    let target = ssh_target::parse(input, prefix, suffix)?;
    let (ws, ssh_addr) = resolve(&url, &token, &target).await?;
    let name = &ws.name;
    // getWorkspaceAndAgent (cli/ssh.go): deleted and deleting workspaces are refused; a
    // stopped one Coder would start, a building one it would wait for.
    if ws.latest_build.transition == WorkspaceTransition::Delete {
        return Err(format!("workspace {name:?} is deleted"));
    }
    if ws.latest_build.transition != WorkspaceTransition::Start {
        return Err(format!("workspace {name:?} must be started"));
    }
    if ws.latest_build.job.completed_at.is_none() {
        return Err(format!("workspace {name:?} is still building"));
    }
    let agents: Vec<_> = ws.latest_build.agents().collect();
    if agents.is_empty() {
        return Err(format!("workspace {name:?} has no agents"));
    }
    match &target.agent {
        Some(a) if !agents.iter().any(|x| &x.name == a) => {
            return Err(format!("agent not found by name {a:?}"));
        }
        None if agents.len() > 1 => {
            let names: Vec<_> = agents.iter().map(|a| a.name.as_str()).collect();
            return Err(format!(
                "multiple agents found, please specify the agent name ({input}.<agent>), available agents: {names:?}"
            ));
        }
        _ => {}
    }
    let ssh_addr =
        ssh_addr.ok_or("this Coder is not the scaletestd simulator (no SSH address header)")?;
    let mut conn = tokio::net::TcpStream::connect(&ssh_addr)
        .await
        .map_err(|e| format!("cannot reach the agent at {ssh_addr}: {e}"))?;
    let _ = conn.set_nodelay(true);
    conn.write_all(format!("{PREAMBLE}{name} {token}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (mut r, mut w) = conn.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
        let _ = w.shutdown().await;
    };
    let down = async {
        let mut out = tokio::io::stdout();
        let _ = tokio::io::copy(&mut r, &mut out).await;
        let _ = out.flush().await;
    };
    // The session is over when the agent closes its side, whatever stdin does.
    tokio::pin!(down);
    tokio::select! {
        _ = &mut down => {}
        _ = up => (&mut down).await,
    }
    Ok(())
}

/// `namedWorkspace` (cli/root.go): an id through `GET /workspaces/{id}`, a name through
/// `GET /users/{owner}/workspace/{name}` (owner `me` when not given).
async fn resolve(
    url: &str,
    token: &str,
    target: &SshTarget,
) -> Result<(Workspace, Option<String>), String> {
    let base = url.trim_end_matches('/');
    let path = match uuid::Uuid::parse_str(&target.workspace) {
        Ok(id) => format!("{base}/api/v2/workspaces/{id}"),
        Err(_) => format!(
            "{base}/api/v2/users/{}/workspace/{}",
            target.owner.as_deref().unwrap_or("me"),
            target.workspace
        ),
    };
    let resp = reqwest::Client::new()
        .get(&path)
        .header(TOKEN_HEADER, token)
        .send()
        .await
        .map_err(|e| format!("cannot reach Coder at {url}: {}", e.without_url()))?;
    let status = resp.status();
    let ssh_addr = resp
        .headers()
        .get(SSH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "workspace {:?}: {status}: {}",
            target.workspace,
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let ws: Workspace =
        crate::coder::decode_json(&body).map_err(|e| format!("malformed workspace: {e}"))?;
    Ok((ws, ssh_addr))
}
