//! The simulator's web terminal: Coder's reconnecting-PTY websocket, running the command for
//! real with `sh -c` (or an interactive `sh` when no command is given).
//!
//! Output goes out as binary frames with `\n` turned into `\r\n`, as a terminal would show
//! it; input frames are Coder's JSON `ReconnectingPTYRequest`s. A command is bounded by
//! `pty_max_runtime`. An injected drop cuts the connection without a close frame.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State as Ax};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxResponse};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::api::{App, error};
use crate::coder::{ReconnectingPtyRequest, WorkspaceAgentStatus};

const ROUTE: &str = "/api/v2/workspaceagents/{workspaceagent}/pty";

#[derive(Deserialize)]
pub struct PtyQuery {
    #[serde(default)]
    pub reconnect: Option<Uuid>,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub width: Option<u16>,
    #[serde(default)]
    pub height: Option<u16>,
    /// `screen` (Coder's default) or `buffered` (output passed through as written); older
    /// Coder ignores it. Recorded in the ledger.
    #[serde(default)]
    pub backend_type: String,
}

pub async fn handler(
    Ax(app): Ax<Arc<App>>,
    Path(agent): Path<String>,
    Query(q): Query<PtyQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> AxResponse {
    let ws = match super::api::upgrade(ws) {
        Ok(ws) => ws,
        Err(refused) => return *refused,
    };
    let Some((workspace, a)) = Uuid::parse_str(&agent)
        .ok()
        .and_then(|id| app.state.agent(id))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "Resource not found or you do not have access to this resource",
        );
    };
    if a.status != WorkspaceAgentStatus::Connected {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "Agent state is {:?}, it must be in the \"connected\" state.",
                a.status
            ),
        );
    }
    let st = app.state.clone();
    st.note_pty(&workspace.name, &q.backend_type, &a.name);
    let drop_it = st
        .cfg
        .inject("pty_drop", &workspace.name, st.cfg.failures.pty_drop);
    let silent = st
        .cfg
        .inject("pty_silent", &workspace.name, st.cfg.failures.pty_silent);
    let max = st.cfg.pty_max_runtime.0;
    let crash = app.until_crash();
    ws.on_upgrade(move |mut socket| async move {
        if drop_it {
            st.note_pty_drop(&workspace.name);
            drop(socket); // no close frame: the client sees the connection cut
            return;
        }
        if silent {
            // Accepted, and never a byte back: read (and ignore) until the client leaves.
            st.note_stall(&workspace.name, "pty");
            let read = tokio::time::timeout(max, async {
                while let Some(Ok(m)) = socket.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            });
            tokio::select! {
                _ = read => {}
                _ = crash.cancelled() => {}
            }
            return;
        }
        let gauge = st.metrics.websockets.get_or_create(&crate::sim::metrics::Path { path: ROUTE.into() }).clone();
        gauge.inc();
        let gone = st.agent_gone(&workspace.name);
        tokio::select! {
            r = tokio::time::timeout(max, session(socket, &q.command, &st)) => {
                if r.is_err() {
                    tracing::debug!(workspace = %workspace.name, "web terminal command hit pty_max_runtime");
                }
            }
            _ = gone.cancelled() => {} // the agent went away: the connection drops
            _ = crash.cancelled() => {} // coderd went away
        }
        gauge.dec();
    })
    .into_response()
}

async fn session(mut socket: WebSocket, command: &str, st: &crate::sim::world::State) {
    let mut faults = crate::sim::faults::Session::new(&st.cfg.sessions, &st.injected);
    let child = super::shell(command);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = socket
                .send(Message::Binary(format!("sh: {e}\r\n").into_bytes().into()))
                .await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    if faults.before_output().await.is_err() {
                        return; // cut: no close frame
                    }
                    if socket.send(Message::Binary(crlf(&out_buf[..n]).into())).await.is_err() { return }
                }
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    if faults.before_output().await.is_err() {
                        return;
                    }
                    if socket.send(Message::Binary(crlf(&err_buf[..n]).into())).await.is_err() { return }
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => write_input(&mut stdin, &b).await,
                Some(Ok(Message::Text(t))) => write_input(&mut stdin, t.as_bytes()).await,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return, // client went away; kill_on_drop ends the command
            },
        }
    }
    let _ = child.wait().await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn write_input(stdin: &mut Option<tokio::process::ChildStdin>, frame: &[u8]) {
    let Ok(req) = serde_json::from_slice::<ReconnectingPtyRequest>(frame) else {
        return;
    };
    if req.data.is_empty() {
        return; // a resize
    }
    if let Some(s) = stdin
        && s.write_all(req.data.as_bytes()).await.is_err()
    {
        *stdin = None;
    }
}

/// A terminal shows `\n` as `\r\n`.
fn crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 8);
    for &c in b {
        if c == b'\n' {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}
