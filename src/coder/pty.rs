//! The web terminal: Coder's reconnecting-PTY websocket.
//!
//! `GET /api/v2/workspaceagents/{agent}/pty?reconnect=<uuid>&width=&height=&command=
//! &backend_type=buffered`, upgraded to a websocket. Client frames are JSON
//! `ReconnectingPTYRequest`s; server frames are raw terminal bytes. `backend_type=buffered`
//! asks newer Coder to pass output through as the command wrote it (the default `screen`
//! backend redraws and can add bytes, coder/coder#11175); older servers ignore it.

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

use super::ws::Ws;
use super::{ApiError, Client, ReconnectingPtyRequest};

/// An open web terminal.
pub struct Pty {
    ws: Ws,
    path: String,
}

/// How a terminal's output ended.
#[derive(Debug)]
pub enum PtyEnd {
    /// The server closed the session normally (the command exited).
    Closed,
    /// The connection broke without a close (a dropped session).
    Dropped(String),
}

impl Client {
    /// Opens a web terminal on `agent` running `command` (or the login shell when empty).
    pub async fn open_pty(
        &self,
        agent: Uuid,
        reconnect: Uuid,
        command: &str,
        (width, height): (u16, u16),
    ) -> Result<Pty, ApiError> {
        let path = format!("/api/v2/workspaceagents/{agent}/pty");
        let (reconnect, width, height) =
            (reconnect.to_string(), width.to_string(), height.to_string());
        let mut query = vec![
            ("reconnect", reconnect.as_str()),
            ("width", width.as_str()),
            ("height", height.as_str()),
            ("backend_type", "buffered"),
        ];
        if !command.is_empty() {
            query.push(("command", command));
        }
        let ws = self
            .open_websocket(
                "/api/v2/workspaceagents/{workspaceagent}/pty",
                &path,
                &query,
                None,
            )
            .await?;
        Ok(Pty { ws, path })
    }
}

impl Pty {
    /// Sends keystrokes.
    pub async fn send(&mut self, data: &str) -> Result<(), ApiError> {
        let frame = serde_json::to_vec(&ReconnectingPtyRequest {
            data: data.to_string(),
            ..Default::default()
        })
        .expect("request serializes");
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .map_err(|e| self.dropped(e))
    }

    /// The next chunk of terminal output, or how the session ended.
    pub async fn recv(&mut self) -> Result<Vec<u8>, PtyEnd> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f)
                            if f.code
                                != tungstenite::protocol::frame::coding::CloseCode::Normal =>
                        {
                            Err(PtyEnd::Dropped(format!(
                                "closed with {}: {}",
                                u16::from(f.code),
                                f.reason
                            )))
                        }
                        _ => Err(PtyEnd::Closed),
                    };
                }
                Some(Ok(_)) => continue, // ping/pong, handled by tungstenite
                Some(Err(e)) => return Err(PtyEnd::Dropped(e.to_string())),
                None => {
                    return Err(PtyEnd::Dropped(
                        "connection ended without a close frame".into(),
                    ));
                }
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    fn dropped(&self, e: tungstenite::Error) -> ApiError {
        ApiError::Connect {
            method: Method::GET,
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }
}
