//! Following one workspace's state as it changes.
//!
//! [`WatchStream`] reads Coder's `/watch` event stream: a `ping`, then the whole workspace,
//! then the whole workspace again on every change. [`Updates`] is what the phases wait on: the
//! stream when it can be had (each change arrives the moment Coder publishes it), polling at
//! the intervals Coder's own harness uses when it cannot, re-opening a broken stream once
//! before falling back, and saying so in the log.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Method;
use uuid::Uuid;

use super::sse::{Event, Parser};
use super::{ApiError, Client, Response, Workspace};
use crate::config::WaitMode;

/// Coder pings every 15 s; three missed pings mean the stream is dead.
pub const STREAM_IDLE: Duration = Duration::from_secs(45);
/// The largest event we accept: a workspace with many resources is tens of KiB.
const MAX_EVENT: usize = 4 << 20;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct WatchStream {
    body: ByteStream,
    parser: Parser,
    queued: std::collections::VecDeque<Event>,
    path: String,
    idle: Duration,
}

impl WatchStream {
    pub(super) fn new(resp: reqwest::Response, path: String) -> Self {
        WatchStream {
            body: Box::pin(resp.bytes_stream()),
            parser: Parser::new(MAX_EVENT),
            queued: Default::default(),
            path,
            idle: STREAM_IDLE,
        }
    }

    fn protocol(&self, detail: impl Into<String>) -> ApiError {
        ApiError::Protocol {
            method: Method::GET,
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// The next workspace state; `Ok(None)` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Workspace>, ApiError> {
        loop {
            while let Some(ev) = self.queued.pop_front() {
                match ev.kind.as_str() {
                    "data" => {
                        return super::decode_json(ev.data.as_bytes())
                            .map(Some)
                            .map_err(|e| self.protocol(format!("workspace event: {e}")));
                    }
                    "error" => {
                        let body: Response = serde_json::from_str(&ev.data).unwrap_or_default();
                        return Err(self.protocol(format!("error event: {}", body.message)));
                    }
                    _ => {} // ping, and event types of newer Coder versions
                }
            }
            let chunk = match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    return Err(ApiError::Timeout {
                        method: Method::GET,
                        path: self.path.clone(),
                        after: self.idle,
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(ApiError::Connect {
                        method: Method::GET,
                        path: self.path.clone(),
                        detail: e.without_url().to_string(),
                    });
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let events = self
                .parser
                .push(&chunk)
                .map_err(|e| self.protocol(e.to_string()))?;
            self.queued.extend(events);
        }
    }
}

enum Source {
    /// Not opened yet: the first wait opens it, so the time it takes (and Coder's trace of
    /// it) belongs to the phase that waits.
    Unopened(WaitMode),
    Stream(WatchStream),
    Poll {
        first: bool,
    },
}

/// A workspace's successive states, from the stream or by polling.
pub struct Updates {
    client: Client,
    id: Uuid,
    mode: WaitMode,
    source: Source,
    reopened: bool,
    /// The most recent state seen.
    pub latest: Option<Workspace>,
}

impl Updates {
    /// Follows a workspace in the given mode, from the first wait on.
    pub fn new(client: &Client, id: Uuid, mode: WaitMode) -> Updates {
        Updates {
            client: client.clone(),
            id,
            mode,
            source: Source::Unopened(mode),
            reopened: false,
            latest: None,
        }
    }

    async fn open(&mut self, mode: WaitMode) {
        self.source = match mode {
            WaitMode::Poll => Source::Poll { first: true },
            WaitMode::Watch => match self.client.watch_workspace(self.id).await {
                Ok(s) => Source::Stream(s),
                Err(e) => {
                    tracing::warn!(workspace.id = %self.id, error = %e, "cannot open the watch stream; polling instead");
                    Source::Poll { first: true }
                }
            },
        };
    }
    /// Drops the stream so that the next wait opens a new one. Called after a phase failed
    /// while following it: that stream may be the one that stalled or lied, and delete must
    /// not inherit it.
    pub fn reset(&mut self) {
        self.source = Source::Unopened(self.mode);
        self.reopened = false;
    }

    /// The next state. `poll_every` is the interval used when polling.
    pub async fn next(&mut self, poll_every: Duration) -> Result<Workspace, ApiError> {
        loop {
            match &mut self.source {
                Source::Unopened(mode) => {
                    let mode = *mode;
                    self.open(mode).await;
                }
                Source::Stream(s) => match s.next().await {
                    Ok(Some(ws)) => {
                        self.latest = Some(ws.clone());
                        return Ok(ws);
                    }
                    Ok(None) | Err(ApiError::Connect { .. } | ApiError::Timeout { .. })
                        if !self.reopened =>
                    {
                        // One re-open: a restarted coderd or a proxy's idle cut.
                        self.reopened = true;
                        self.source = match self.client.watch_workspace(self.id).await {
                            Ok(s) => Source::Stream(s),
                            // Gone: the caller decides what that means (delete expects it).
                            Err(e) if e.is_gone() => return Err(e),
                            Err(e) => {
                                tracing::warn!(workspace.id = %self.id, error = %e, "watch stream lost; polling instead");
                                Source::Poll { first: true }
                            }
                        };
                    }
                    Ok(None) => {
                        tracing::warn!(workspace.id = %self.id, "watch stream closed again; polling instead");
                        self.source = Source::Poll { first: true };
                    }
                    Err(e) => return Err(e),
                },
                Source::Poll { first } => {
                    if !*first {
                        tokio::time::sleep(poll_every).await;
                    }
                    *first = false;
                    let ws = self.client.workspace(self.id).await?;
                    self.latest = Some(ws.clone());
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
        loop {
            let ws = self.next(poll_every).await?;
            if let Some(r) = check(&ws) {
                return Ok(r);
            }
        }
    }
}
