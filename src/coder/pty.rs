//! The web terminal: Coder's reconnecting-PTY websocket.
//!
//! `GET /api/v2/workspaceagents/{agent}/pty?reconnect=<uuid>&width=&height=&command=`,
//! upgraded to a websocket. Client frames are JSON `ReconnectingPTYRequest`s; server frames
//! are raw terminal bytes. The session token travels in a header, never in the URL.

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

use super::{ApiError, Client, ReconnectingPtyRequest, Response, TOKEN_HEADER};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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
        let route_path = format!("/api/v2/workspaceagents/{agent}/pty");
        let mut url = self.url(&route_path);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("reconnect", &reconnect.to_string())
                .append_pair("width", &width.to_string())
                .append_pair("height", &height.to_string());
            if !command.is_empty() {
                q.append_pair("command", command);
            }
        }
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .expect("ws and wss are valid schemes");

        let get = Method::GET;
        let protocol = |detail: String| ApiError::Protocol {
            method: get.clone(),
            path: route_path.clone(),
            detail,
        };
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| protocol(e.to_string()))?;
        req.headers_mut().insert(
            TOKEN_HEADER,
            self.token()
                .expose()
                .parse()
                .map_err(|_| protocol("the session token is not a valid header value".into()))?,
        );
        let route = "/api/v2/workspaceagents/{workspaceagent}/pty";
        let span = super::trace::client_span(&get, route, &url, 0);
        if self.inner.opts.propagate {
            let mut h = reqwest::header::HeaderMap::new();
            crate::telemetry::inject(&span, &mut h);
            req.headers_mut().extend(h);
        }
        let start = std::time::Instant::now();
        let connect =
            tracing::Instrument::instrument(tokio_tungstenite::connect_async(req), span.clone());
        let result = tokio::time::timeout(self.inner.opts.request_timeout, connect).await;
        let result = match result {
            Err(_) => {
                self.observe(&get, route, None, start);
                let e = ApiError::Timeout {
                    method: get,
                    path: route_path,
                    after: self.inner.opts.request_timeout,
                };
                super::trace::failed(&span, &e);
                return Err(e);
            }
            Ok(r) => r,
        };
        match result {
            Ok((ws, resp)) => {
                self.observe(&get, route, Some(resp.status().as_u16()), start);
                super::trace::answered(&span, resp.status().as_u16(), resp.headers());
                Ok(Pty {
                    ws,
                    path: route_path,
                })
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                self.observe(&get, route, Some(status), start);
                super::trace::answered(&span, status, resp.headers());
                let bytes = resp.body().clone().unwrap_or_default();
                let mut body: Response = serde_json::from_slice(&bytes).unwrap_or_default();
                if body.message.is_empty() {
                    body.message = format!("websocket upgrade refused with {status}");
                }
                body.message = self.token().scrub(&body.message);
                body.detail = self.token().scrub(&body.detail);
                Err(ApiError::Status {
                    method: get,
                    path: route_path,
                    status,
                    body,
                })
            }
            Err(e @ (tungstenite::Error::Io(_) | tungstenite::Error::Tls(_))) => {
                self.observe(&get, route, None, start);
                Err(ApiError::Connect {
                    method: get,
                    path: route_path,
                    detail: self.token().scrub(&e.to_string()),
                })
            }
            Err(e) => {
                self.observe(&get, route, None, start);
                Err(protocol(self.token().scrub(&e.to_string())))
            }
        }
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
