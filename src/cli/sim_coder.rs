//! `scaletestd sim-coder ssh --stdio coder.<workspace>`: the simulator's stand-in for
//! `coder ssh --stdio`, with the same argument shape and environment (`CODER_URL`,
//! `CODER_SESSION_TOKEN`), so the `proxy-command` transport is tested exactly as it runs
//! against a real Coder: resolve the workspace through the API, refuse one that is not
//! running, then pipe one raw SSH byte stream between stdin/stdout and the agent.

use tokio::io::AsyncWriteExt;

use crate::coder::{TOKEN_HEADER, Workspace, WorkspaceStatus};
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
        /// `coder.<workspace>`, as `coder config-ssh` names hosts.
        host: String,
    },
}

pub async fn run(args: Args) -> u8 {
    let CoderCommand::Ssh { stdio, host } = args.command;
    match ssh(stdio, &host).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn ssh(stdio: bool, host: &str) -> Result<(), String> {
    if !stdio {
        return Err("only --stdio is supported".into());
    }
    let url = std::env::var("CODER_URL").map_err(|_| "CODER_URL is not set".to_string())?;
    let token = std::env::var("CODER_SESSION_TOKEN")
        .map_err(|_| "CODER_SESSION_TOKEN is not set".to_string())?;
    let name = host.strip_prefix("coder.").unwrap_or(host);
    let name = name.split('.').next().unwrap_or(name);
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v2/users/me/workspace/{name}",
            url.trim_end_matches('/')
        ))
        .header(TOKEN_HEADER, &token)
        .send()
        .await
        .map_err(|e| format!("cannot reach Coder at {url}: {}", e.without_url()))?;
    let status = resp.status();
    let ssh_addr = resp
        .headers()
        .get(SSH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("workspace {name:?}: {status}: {}", body.trim()));
    }
    let ws: Workspace =
        serde_json::from_str(&body).map_err(|e| format!("malformed workspace: {e}"))?;
    if ws.latest_build.status != WorkspaceStatus::Running {
        return Err(format!(
            "workspace {name:?} is not running (it is {:?})",
            ws.latest_build.status
        ));
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
