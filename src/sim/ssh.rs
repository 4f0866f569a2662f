//! The simulator's SSH server (russh), standing in for the agents' SSH servers.
//!
//! A connection reaches a workspace in one of two ways: the simulator's stand-in for
//! `coder ssh --stdio` (see `scaletestd sim-coder`) first writes a line
//! `SCALETESTD-SIM <workspace> <token>` naming the workspace it resolved through the API,
//! as `coder ssh` reaches one agent through Coder's tailnet; a plain SSH client over TCP
//! names the workspace as its user name. Like Coder's agent, any user name is accepted with
//! auth `none` (or a key) once the workspace is known. Workspaces that are not running with
//! a connected agent are refused. Commands run for real with `sh -c`; stdin is forwarded, so
//! `cat` echoes. Injected per workspace: refusal, auth failure, stalls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::world::State;
use crate::coder::{WorkspaceAgentStatus, WorkspaceStatus};

/// A fresh host key per simulator, as each Coder agent makes its own.
pub fn host_key() -> russh::keys::PrivateKey {
    let seed: [u8; 32] = rand::random();
    russh::keys::PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &seed,
    ))
}

/// The first line the stdio helper writes.
pub const PREAMBLE: &str = "SCALETESTD-SIM ";

pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    key: russh::keys::PrivateKey,
    stop: CancellationToken,
) {
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(5),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    });
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let (state, config, stop) = (state.clone(), config.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = connection(state, config, stream) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn connection(
    state: Arc<State>,
    config: Arc<russh::server::Config>,
    stream: tokio::net::TcpStream,
) {
    // russh runs the session on a task of its own: keep a handle on the socket to cut it.
    let Ok(std) = stream.into_std() else { return };
    let Ok(killer) = std.try_clone() else { return };
    let Ok(stream) = tokio::net::TcpStream::from_std(std) else {
        return;
    };
    let mut stream = tokio::io::BufReader::new(stream);
    // A preamble arrives at once; a plain SSH client sends its version line, which does not
    // start like one.
    let mut target = None;
    let head = tokio::time::timeout(Duration::from_millis(500), stream.fill_buf()).await;
    if let Ok(Ok(buf)) = head
        && buf.starts_with(PREAMBLE.as_bytes())
    {
        let mut line = String::new();
        if stream.read_line(&mut line).await.is_err() {
            return;
        }
        let mut parts = line
            .trim_end()
            .strip_prefix(PREAMBLE)
            .unwrap_or("")
            .split(' ');
        let (name, presented) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // The token must be of a user who may see the workspace (its owner, or an owner).
        let id = state.lock().names.get(name).copied();
        let allowed = state.accounts.caller(presented).is_some_and(|c| {
            id.and_then(|id| state.owner_of(id))
                .is_some_and(|(owner, _)| c.may_see(owner))
        });
        if !allowed {
            let _ = stream.get_mut().write_all(b"unauthorized\n").await;
            return;
        }
        target = Some(name.to_string());
    }
    if let Some(name) = &target {
        match admit(&state, name) {
            Admit::Refuse => return, // cut before the SSH version line
            Admit::Stall => {
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Admit::Ok | Admit::NotRunning | Admit::AuthFail => {}
        }
    }
    let cut = Arc::new(tokio::sync::Notify::new());
    let handler = Conn {
        state,
        target,
        children: HashMap::new(),
        cut: cut.clone(),
        workspace: None,
    };
    let session = async {
        if let Ok(session) = russh::server::run_stream(config, stream, handler).await {
            let _ = session.await;
        }
    };
    // An injected refusal drops the connection outright.
    tokio::select! {
        _ = session => {}
        _ = cut.notified() => {
            let _ = killer.shutdown(std::net::Shutdown::Both);
        }
    }
}

enum Admit {
    Ok,
    NotRunning,
    Refuse,
    Stall,
    AuthFail,
}

/// Whether a workspace may be reached now, and what is injected for it.
fn admit(state: &State, name: &str) -> Admit {
    let cfg = &state.cfg;
    let running = {
        let w = state.lock();
        w.names
            .get(name)
            .and_then(|id| w.live.get(id))
            .is_some_and(|e| {
                e.ws.latest_build.status == WorkspaceStatus::Running
                    && e.ws
                        .latest_build
                        .agents()
                        .any(|a| a.status == WorkspaceAgentStatus::Connected)
            })
    };
    if !running {
        Admit::NotRunning
    } else if cfg.inject("ssh_refuse", name, cfg.failures.ssh_refuse) {
        Admit::Refuse
    } else if cfg.inject("ssh_stall", name, cfg.failures.ssh_stall) {
        Admit::Stall
    } else if cfg.inject("ssh_auth", name, cfg.failures.ssh_auth) {
        Admit::AuthFail
    } else {
        Admit::Ok
    }
}

struct Conn {
    state: Arc<State>,
    target: Option<String>,
    /// stdin of the command running on each channel.
    children: HashMap<ChannelId, mpsc::Sender<Vec<u8>>>,
    /// Notified to cut the connection.
    cut: Arc<tokio::sync::Notify>,
    /// The workspace this connection reached, once known.
    workspace: Option<String>,
}

impl Conn {
    async fn auth(&mut self, user: &str) -> Result<Auth, russh::Error> {
        let name = self.target.clone().unwrap_or_else(|| user.to_string());
        match admit(&self.state, &name) {
            Admit::Ok => {
                self.workspace = Some(name);
                Ok(Auth::Accept)
            }
            Admit::Refuse => {
                self.cut.notify_one();
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(russh::Error::Disconnect)
            }
            Admit::Stall => std::future::pending().await,
            Admit::NotRunning | Admit::AuthFail => Ok(Auth::reject()),
        }
    }

    /// `ssh_require_key`: like an sshd that takes keys only (Coder's agent takes `none`).
    fn key_required(&self) -> bool {
        self.state.cfg.ssh_require_key
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        if self.key_required() {
            return Ok(Auth::reject());
        }
        self.auth(user).await
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.auth(user).await
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let child = super::shell(&command);
        let mut child = match child {
            Ok(c) => c,
            Err(_) => {
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        session.channel_success(channel)?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        self.children.insert(channel, tx);
        let handle = session.handle();
        let max = self.state.cfg.pty_max_runtime.0;
        let state = self.state.clone();
        let gone = self
            .workspace
            .as_deref()
            .map(|w| state.agent_gone(w))
            .unwrap_or_default();
        tokio::spawn(async move {
            let mut faults = super::faults::Session::new(&state.cfg.sessions, &state.injected);
            let mut stdin = child.stdin.take();
            let mut stdout = child.stdout.take().expect("piped");
            let mut stderr = child.stderr.take().expect("piped");
            let (mut ob, mut eb) = ([0u8; 8192], [0u8; 8192]);
            let (mut out_open, mut err_open) = (true, true);
            let run = async {
                while out_open || err_open {
                    tokio::select! {
                        n = stdout.read(&mut ob), if out_open => match n {
                            Ok(0) | Err(_) => out_open = false,
                            Ok(n) => {
                                if faults.before_output().await.is_err() {
                                    let _ = handle.close(channel).await; // cut: no exit status
                                    return false;
                                }
                                if handle.data(channel, ob[..n].to_vec()).await.is_err() { return false }
                            }
                        },
                        n = stderr.read(&mut eb), if err_open => match n {
                            Ok(0) | Err(_) => err_open = false,
                            Ok(n) => if handle.extended_data(channel, 1, eb[..n].to_vec()).await.is_err() { return false },
                        },
                        input = rx.recv(), if stdin.is_some() => match input {
                            Some(bytes) => {
                                if let Some(s) = stdin.as_mut()
                                    && s.write_all(&bytes).await.is_err()
                                {
                                    stdin = None;
                                }
                            }
                            None => stdin = None, // EOF from the client closes the command's stdin
                        },
                    }
                }
                true
            };
            // Only a command that ended by itself gets an exit status; a cut or a timeout
            // drops it (kill_on_drop) and leaves the channel without one.
            let ended = tokio::select! {
                r = tokio::time::timeout(max, run) => matches!(r, Ok(true)),
                _ = gone.cancelled() => {
                    let _ = handle.close(channel).await; // the agent went away
                    false
                }
            };
            if !ended {
                return;
            }
            let code = child
                .wait()
                .await
                .ok()
                .and_then(|s| s.code())
                .unwrap_or(255);
            let _ = handle.exit_status_request(channel, code as u32).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.children.get(&channel) {
            let _ = tx.send(data.to_vec()).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.children.remove(&channel);
        Ok(())
    }
}
