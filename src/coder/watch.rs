//! Following one workspace's state as it changes.
//!
//! [`WatchStream`] reads one of Coder's two event streams: `watch-ws`, a websocket whose text
//! messages are `{"type": "ping"|"data"|"error", "data": …}` (coderd/workspaces.go
//! `watchWorkspaceWS`, coderd/httpapi/httpapi.go `OneWayWebSocketEventSender`), or the
//! deprecated server-sent-events `watch`. Both send a ping, then the whole workspace, then the
//! whole workspace again on every change, and neither ends when the workspace is deleted.
//!
//! [`Updates`] is what the phases wait on: a stream over the transport the run's [`Dialect`]
//! says this Coder has (watch-ws, else SSE, else polling at the intervals Coder's own harness
//! uses), re-opening a broken stream once before polling, and saying so in the log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Method;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::dialect::{Dialect, WatchTransport};
use super::sse::{Event, Parser};
use super::ws::Ws;
use super::{ApiError, Client, Response, Workspace};

/// Coder pings every 15 s; three missed pings mean the stream is dead.
pub const STREAM_IDLE: Duration = Duration::from_secs(45);
/// A stream that stays open without a state for this long is backed by one GET: a
/// server whose event bus lost a publish (coderd's pubsub drops messages when a
/// subscriber's queue is full, and `watchWorkspace` skips them) keeps pinging.
pub const SAFETY_POLL: Duration = Duration::from_secs(15);
/// The longest quiet spell between those GETs: each one without a stream event since
/// doubles the next wait, so that 10,000 workspaces in a ten-minute build ask Coder a few
/// times each, not forty.
pub const SAFETY_POLL_MAX: Duration = Duration::from_secs(120);
/// The largest event we accept: a workspace with many resources is tens of KiB.
pub const MAX_EVENT: usize = 4 << 20;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Inner {
    Sse {
        body: ByteStream,
        parser: Parser,
        queued: std::collections::VecDeque<Event>,
    },
    Ws(Box<Ws>),
    /// Read on the event-stream thread ([`super::readers`]), which relays what it read.
    Relayed(tokio::sync::mpsc::Receiver<super::readers::Read>),
}

/// One open event stream of one workspace.
pub struct WatchStream {
    inner: Inner,
    path: String,
    idle: Duration,
    /// When the latest message (or chunk) came off the socket.
    received: Instant,
}

/// A `watch-ws` message (`codersdk.ServerSentEvent`).
#[derive(Deserialize)]
struct WsEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

impl WatchStream {
    pub(super) fn sse(resp: reqwest::Response, path: String) -> Self {
        WatchStream {
            inner: Inner::Sse {
                body: Box::pin(resp.bytes_stream()),
                parser: Parser::new(MAX_EVENT),
                queued: Default::default(),
            },
            path,
            idle: STREAM_IDLE,
            received: Instant::now(),
        }
    }

    pub(super) fn websocket(ws: Ws, path: String) -> Self {
        WatchStream {
            inner: Inner::Ws(Box::new(ws)),
            path,
            idle: STREAM_IDLE,
            received: Instant::now(),
        }
    }

    pub(super) fn relayed(
        rx: tokio::sync::mpsc::Receiver<super::readers::Read>,
        path: String,
    ) -> Self {
        WatchStream {
            inner: Inner::Relayed(rx),
            path,
            idle: STREAM_IDLE,
            received: Instant::now(),
        }
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    /// When the state [`WatchStream::next`] returned last came off the socket.
    pub fn received_at(&self) -> Instant {
        self.received
    }

    fn protocol(&self, detail: impl Into<String>) -> ApiError {
        ApiError::Protocol {
            method: Method::GET,
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn idle_timeout(&self) -> ApiError {
        ApiError::Timeout {
            method: Method::GET,
            path: self.path.clone(),
            after: self.idle,
        }
    }

    fn dropped(&self, detail: String) -> ApiError {
        ApiError::Connect {
            method: Method::GET,
            path: self.path.clone(),
            detail,
        }
    }

    /// What one event says: `Some` workspace for `data`, an error for `error`, `None` for a
    /// ping or an event type of a newer Coder.
    fn event(&self, kind: &str, data: &[u8]) -> Result<Option<Workspace>, ApiError> {
        match kind {
            "data" => super::decode_json(data)
                .map(Some)
                .map_err(|e| self.protocol(format!("workspace event: {e}"))),
            "error" => {
                let body: Response = serde_json::from_slice(data).unwrap_or_default();
                Err(self.protocol(format!("error event: {}", body.message)))
            }
            _ => Ok(None),
        }
    }

    /// The next workspace state; `Ok(None)` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Workspace>, ApiError> {
        loop {
            let idle = self.idle;
            match &mut self.inner {
                Inner::Sse {
                    body,
                    parser,
                    queued,
                } => {
                    if let Some(ev) = queued.pop_front() {
                        match self.event(&ev.kind, ev.data.as_bytes())? {
                            Some(ws) => return Ok(Some(ws)),
                            None => continue,
                        }
                    }
                    let chunk = match tokio::time::timeout(idle, body.next()).await {
                        Err(_) => return Err(self.idle_timeout()),
                        Ok(None) => return Ok(None),
                        Ok(Some(Err(e))) => return Err(self.dropped(e.without_url().to_string())),
                        Ok(Some(Ok(chunk))) => chunk,
                    };
                    self.received = Instant::now();
                    match parser.push(&chunk) {
                        Ok(events) => queued.extend(events),
                        Err(e) => return Err(self.protocol(e.to_string())),
                    }
                }
                Inner::Ws(_) => {
                    let Some(msg) = self.frame().await? else {
                        return Ok(None);
                    };
                    if let Some(w) = self.decode_frame(&msg)? {
                        return Ok(Some(w));
                    }
                }
                // The reader ends after relaying the stream's end or error.
                Inner::Relayed(rx) => {
                    let (data, at) = match rx.recv().await {
                        Some(super::readers::Read {
                            data: Ok(Some(data)),
                            at,
                        }) => (data, at),
                        Some(super::readers::Read { data: Ok(None), .. }) | None => {
                            return Ok(None);
                        }
                        Some(super::readers::Read { data: Err(e), .. }) => return Err(*e),
                    };
                    self.received = at;
                    if let Some(w) = self.decode_message(&data)? {
                        return Ok(Some(w));
                    }
                }
            }
        }
    }

    /// The next data message of a websocket stream, undecoded, and when it came off the
    /// socket ([`WatchStream::received_at`]); `None` when the server closed it. What the
    /// event-stream thread does for each stream: the decoding is left to the workspace's
    /// task, so that a burst of events is stamped as it arrives.
    pub(super) async fn frame(&mut self) -> Result<Option<Message>, ApiError> {
        let idle = self.idle;
        let Inner::Ws(ws) = &mut self.inner else {
            return Err(self.protocol("not a websocket stream"));
        };
        loop {
            // Control pings (Coder's keep-alive after the first JSON ping) count as life;
            // reading them is what sends the pongs.
            let msg = match tokio::time::timeout(idle, ws.next()).await {
                Err(_) => return Err(self.idle_timeout()),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(None),
                Ok(Some(Err(e))) => {
                    use tokio_tungstenite::tungstenite::Error as E;
                    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
                    // A cut connection is a drop; a frame we cannot take is Coder's (or a
                    // proxy's) fault.
                    return Err(match e {
                        E::Protocol(P::ResetWithoutClosingHandshake) => self.dropped(e.to_string()),
                        E::Capacity(_) | E::Protocol(_) | E::Utf8(_) => {
                            self.protocol(e.to_string())
                        }
                        e => self.dropped(e.to_string()),
                    });
                }
                Ok(Some(Ok(m))) => m,
            };
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                self.received = super::ws::arrived(ws).unwrap_or_else(Instant::now);
                return Ok(Some(msg));
            }
        }
    }

    /// A watch-ws message's workspace; `None` for a ping or an event of a newer Coder.
    fn decode_frame(&self, msg: &Message) -> Result<Option<Workspace>, ApiError> {
        match msg {
            Message::Text(t) => self.decode_message(t.as_bytes()),
            Message::Binary(b) => self.decode_message(b),
            _ => Ok(None),
        }
    }

    /// [`WatchStream::decode_frame`] of a data message's bytes.
    fn decode_message(&self, text: &[u8]) -> Result<Option<Workspace>, ApiError> {
        let ev: WsEvent = super::decode_json(text)
            .map_err(|e| self.protocol(format!("watch-ws message: {e}")))?;
        let data = ev.data.map(|d| d.get().as_bytes()).unwrap_or(b"null");
        self.event(&ev.kind, data)
    }
}

enum Source {
    /// Not opened yet: the first wait opens it, so the time it takes (and Coder's trace of
    /// it) belongs to the phase that waits.
    Unopened,
    Stream(WatchStream),
    Poll {
        first: bool,
    },
}

/// A workspace's successive states, from a stream or by polling.
pub struct Updates {
    client: Client,
    id: Uuid,
    dialect: Arc<Dialect>,
    source: Source,
    reopened: bool,
    /// How long the stream may stay quiet before the next safety GET.
    quiet: Duration,
    /// The most recent state seen.
    pub latest: Option<Workspace>,
    /// When that state came off the socket (or the poll's answer arrived).
    pub latest_at: Option<Instant>,
}

impl Updates {
    /// Follows a workspace over the transport `dialect` settles on, from the first wait on.
    pub fn new(client: &Client, id: Uuid, dialect: Arc<Dialect>) -> Updates {
        Updates {
            client: client.clone(),
            id,
            dialect,
            source: Source::Unopened,
            reopened: false,
            quiet: SAFETY_POLL,
            latest: None,
            latest_at: None,
        }
    }

    /// Opens a stream over the run's transport, falling back (for the whole run) past each
    /// one this server answers with 404, down to polling.
    async fn open(&mut self) -> Result<(), ApiError> {
        loop {
            let t = self.dialect.watch();
            let opened = match t {
                WatchTransport::Poll => {
                    self.source = Source::Poll { first: true };
                    return Ok(());
                }
                WatchTransport::WatchWs => super::readers::open_ws(&self.client, self.id).await,
                WatchTransport::Sse => self.client.watch_workspace_sse(self.id).await,
            };
            match opened {
                Ok(s) => {
                    self.dialect.watch_works(t);
                    self.source = Source::Stream(s);
                    return Ok(());
                }
                // Only chi's own "Route not found." says this Coder lacks the transport. A
                // 404 "Resource not found" (or a 410) is about the workspace: a deleted one
                // behind a proxy that refuses its streams, or one deleted under us. Taking
                // it for a missing route switched the whole run's transport while deletes
                // were in flight (issue 24).
                Err(e) if e.is_route_missing() => {
                    self.dialect.watch_missing(t);
                }
                // A 404 whose body did not say which: a refused upgrade's body may come after
                // its headers, and the handshake keeps only what it read with them. Ask the
                // workspace itself: alive means the route is what is missing.
                Err(e) if e.status() == Some(404) => match self.client.workspace(self.id).await {
                    Ok(_) => {
                        tracing::debug!(workspace.id = %self.id, transport = t.as_str(), error = %e, "the stream answered 404 for a live workspace: this Coder lacks the route");
                        self.dialect.watch_missing(t);
                    }
                    Err(g) if g.is_gone() => return Err(g),
                    Err(_) => return Err(e),
                },
                Err(e) if e.is_gone() => return Err(e),
                Err(e) => {
                    tracing::warn!(workspace.id = %self.id, transport = t.as_str(), error = %e, "cannot open the watch stream; polling this workspace instead");
                    self.source = Source::Poll { first: true };
                    return Ok(());
                }
            }
        }
    }

    /// Opens a stream the way a run would and says over which transport (`scaletestd check`).
    pub async fn probe(&mut self) -> Result<WatchTransport, ApiError> {
        self.open().await?;
        Ok(match self.source {
            Source::Stream(_) => self.dialect.watch(),
            _ => WatchTransport::Poll,
        })
    }

    /// Drops the stream so that the next wait opens a new one. Called after a phase failed
    /// while following it: that stream may be the one that stalled or lied, and delete must
    /// not inherit it.
    pub fn reset(&mut self) {
        self.source = Source::Unopened;
        self.reopened = false;
        self.quiet = SAFETY_POLL;
    }

    /// The next state. `poll_every` is the interval used when polling.
    pub async fn next(&mut self, poll_every: Duration) -> Result<Workspace, ApiError> {
        loop {
            match &mut self.source {
                Source::Unopened => self.open().await?,
                Source::Stream(s) => match tokio::time::timeout(self.quiet, s.next()).await {
                    // Alive but telling nothing (pings only): ask once, so that progress
                    // never hangs on one stream. The stream stays open.
                    Err(_) => {
                        self.quiet = (self.quiet * 2).min(SAFETY_POLL_MAX);
                        let ws = self.client.workspace(self.id).await?;
                        self.latest = Some(ws.clone());
                        self.latest_at = Some(Instant::now());
                        return Ok(ws);
                    }
                    Ok(Ok(Some(ws))) => {
                        self.quiet = SAFETY_POLL;
                        self.latest = Some(ws.clone());
                        self.latest_at = Some(s.received_at());
                        return Ok(ws);
                    }
                    Ok(Ok(None) | Err(ApiError::Connect { .. } | ApiError::Timeout { .. }))
                        if !self.reopened =>
                    {
                        // One re-open: a restarted coderd or a proxy's idle cut.
                        self.reopened = true;
                        // Gone: the caller decides what that means (delete expects it).
                        self.open().await?;
                        if matches!(self.source, Source::Poll { .. }) {
                            tracing::warn!(workspace.id = %self.id, "watch stream lost; polling instead");
                        }
                    }
                    Ok(Ok(None)) => {
                        tracing::warn!(workspace.id = %self.id, "watch stream closed again; polling instead");
                        self.source = Source::Poll { first: true };
                    }
                    Ok(Err(e)) => return Err(e),
                },
                Source::Poll { first } => {
                    if !*first {
                        tokio::time::sleep(poll_every).await;
                    }
                    *first = false;
                    let ws = self.client.workspace(self.id).await?;
                    self.latest = Some(ws.clone());
                    self.latest_at = Some(Instant::now());
                    return Ok(ws);
                }
            }
        }
    }

    /// Waits until `check` returns `Some` for a state, and returns that.
    pub async fn wait_for<R>(
        &mut self,
        poll_every: Duration,
        mut check: impl FnMut(&Workspace) -> Option<R>,
    ) -> Result<R, ApiError> {
        if let Some(r) = self.latest.as_ref().and_then(&mut check) {
            return Ok(r);
        }
        // Each wait starts from the short spell: a delete must not inherit the long one a
        // quiet build grew to.
        self.quiet = SAFETY_POLL;
        loop {
            let ws = self.next(poll_every).await?;
            if let Some(r) = check(&ws) {
                return Ok(r);
            }
        }
    }
}
