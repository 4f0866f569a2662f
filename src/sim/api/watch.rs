//! The workspace event streams: `/watch` (server-sent events, deprecated in Coder) and
//! `/watch-ws` (a one-way websocket of JSON events), fed by the same events, and the faults
//! injected into a workspace's first stream (silence, malformed states).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as Ax};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as AxResponse};
use futures_util::Stream;

use super::routes::{parse_id, path_id};
use super::{App, Shared, error, resource_not_found};
use crate::sim::types::Workspace;

/// A workspace's watchers: the receiver, its name, and whether this is its first stream.
/// Deleted workspaces are still watchable (see `Grave::tx`), as in Coder: its
/// `ExtractWorkspaceParam` reads `workspaces_expanded`, deleted rows included, and
/// `watchWorkspace` streams whatever it finds (coderd/workspaces.go, v2.36.1); unless a front
/// refuses them (`front.deleted_streams_404`).
fn subscribe(
    app: &App,
    id: &str,
) -> Option<(tokio::sync::watch::Receiver<Arc<Workspace>>, String, bool)> {
    let id = parse_id(id)?;
    let mut w = app.state.lock();
    if let Some(e) = w.live.get_mut(&id) {
        e.watches += 1;
        Some((e.tx.subscribe(), e.ws.name.clone(), e.watches == 1))
    } else {
        let g = w.deleted.get(&id)?;
        if app.state.cfg.front.deleted_streams_404 {
            return None;
        }
        Some((g.tx.subscribe(), g.ws.name.clone(), false))
    }
}

/// The fault, if any, injected into a workspace's stream: faults hit its first stream only,
/// over whichever transport: pings and never a state (`watch_silent`), or a malformed first
/// state (`malformed`).
fn stream_fault(app: &App, name: &str, first: bool) -> Option<StreamFault> {
    let cfg = &app.state.cfg;
    if !first {
        None
    } else if cfg.inject("watch_silent", name, cfg.failures.watch_silent) {
        app.state.note_stall(name, "watch");
        Some(StreamFault::Silent)
    } else if cfg.inject("malformed", name, cfg.failures.malformed) {
        let kind = MALFORMATIONS[cfg.pick("malformation", name, MALFORMATIONS.len())];
        app.state.note_malformed(name, kind);
        Some(StreamFault::Malformed(kind))
    } else {
        None
    }
}

/// `/watch` (server-sent events; deprecated in Coder, still served): a `ping`, the whole
/// workspace, then the whole workspace on every change, `ping` events every 15 s.
pub(super) async fn watch(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    if let Err(resp) = path_id(&id) {
        return resp.into_response();
    }
    let Some((rx, name, first)) = subscribe(&app, &id) else {
        return resource_not_found();
    };
    let fault = stream_fault(&app, &name, first);
    let ping = app.state.cfg.ping_interval.0;
    let deliveries = app.deliveries.clone();
    let events = cut_after(
        events(rx, fault, dropping(&app)),
        app.state.cfg.front.stream_lifetime,
    );
    // The body pulls an event just before writing it: as close to "sent" as SSE gets.
    let events = futures_util::StreamExt::map(events, move |e| {
        Ok::<_, Infallible>(match e {
            WatchEvent::Ping => Event::default().event("ping"),
            WatchEvent::Data(data, ws) => {
                if let Some(log) = &deliveries {
                    log.sent(&ws);
                }
                Event::default().event("data").data(data)
            }
        })
    });
    Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(ping)
                .event(Event::default().event("ping")),
        )
        .into_response()
}

/// `/watch-ws`: the same events as JSON text messages `{"type": "ping"|"data", "data": …}`
/// (a ping's `data` is `null`), then websocket control pings every 15 s as keep-alive. One
/// way: a data message from the client closes the socket with 1002 (coderd/workspaces.go
/// `watchWorkspaceWS`; coderd/httpapi/httpapi.go `OneWayWebSocketEventSender`).
pub(super) async fn watch_ws(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> AxResponse {
    // The workspace's middleware answers before the handler looks at the upgrade.
    if let Err(resp) = path_id(&id) {
        return resp.into_response();
    }
    let Ok(ws) = ws else {
        return error(
            StatusCode::BAD_REQUEST,
            "Upgrade to a websocket is required.",
        );
    };
    let Some((rx, name, first)) = subscribe(&app, &id) else {
        return resource_not_found();
    };
    let fault = stream_fault(&app, &name, first);
    let ping = app.state.cfg.ping_interval.0;
    let crash = app.until_crash();
    let deliveries = app.deliveries.clone();
    let lifetime = app.state.cfg.front.stream_lifetime;
    let dropping = dropping(&app);
    // A one-way socket reads only pongs and a close: no need for tungstenite's 128 KiB read
    // buffer, which it zero-fills at every read.
    ws.read_buffer_size(4 << 10)
        .on_upgrade(move |socket| async move {
            tokio::select! {
                _ = one_way(socket, cut_after(events(rx, fault, dropping), lifetime), ping, deliveries) => {}
                _ = crash.cancelled() => {} // coderd went away: no close frame
            }
        })
        .into_response()
}

/// Sends `events` as watch-ws messages, with control pings, until either side goes away.
async fn one_way(
    mut socket: axum::extract::ws::WebSocket,
    events: impl Stream<Item = WatchEvent>,
    ping: Duration,
    deliveries: Option<Arc<crate::sim::deliveries::DeliveryLog>>,
) {
    use axum::extract::ws::{CloseFrame, Message};
    let mut events = std::pin::pin!(events);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    loop {
        tokio::select! {
            ev = futures_util::StreamExt::next(&mut events) => {
                let (text, ws) = match ev {
                    Some(WatchEvent::Ping) => (r#"{"type":"ping","data":null}"#.to_string(), None),
                    Some(WatchEvent::Data(d, ws)) => {
                        (format!(r#"{{"type":"data","data":{d}}}"#), Some(ws))
                    }
                    None => {
                        // The stream ended (a front's lifetime): a clean close.
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame {
                                code: 1000,
                                reason: "".into(),
                            })))
                            .await;
                        return;
                    }
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
                // Sent: the frame is in the kernel's socket buffer.
                if let (Some(log), Some(ws)) = (&deliveries, ws) {
                    log.sent(&ws);
                }
            }
            _ = keepalive.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1002,
                            reason: "one-way websocket: the client may not send data".into(),
                        })))
                        .await;
                    return;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {} // pongs
            },
        }
    }
}

/// What a faulty stream does instead of telling the truth.
#[derive(Debug, Clone, Copy)]
enum StreamFault {
    Silent,
    Malformed(&'static str),
}

/// One event of a workspace's stream, whatever the transport.
enum WatchEvent {
    Ping,
    /// The workspace as JSON (or as the injected malformation of it), and the state it was
    /// made from.
    Data(String, Arc<Workspace>),
}

/// The malformations `failures.malformed` chooses from.
pub const MALFORMATIONS: [&str; 4] = ["truncated", "wrong_type", "unknown_enum", "huge"];

/// A workspace's JSON spoilt in the named way.
fn malform(ws: &Workspace, kind: &str) -> String {
    let mut v = serde_json::to_value(ws).expect("workspaces serialize");
    match kind {
        "truncated" => {
            let s = v.to_string();
            let mut half = s.len() / 2;
            while !s.is_char_boundary(half) {
                half -= 1;
            }
            return s[..half].to_string();
        }
        "wrong_type" => v["id"] = serde_json::json!(42),
        "unknown_enum" => v["latest_build"]["job"]["status"] = serde_json::json!("exploding"),
        _ => v["padding"] = serde_json::json!("x".repeat(5 << 20)),
    }
    v.to_string()
}

/// How often a stream leaves a change out (`failures.watch_dropped`), and where it counts
/// what it left out.
#[derive(Clone)]
struct Dropping {
    rate: f64,
    count: Arc<std::sync::atomic::AtomicU64>,
}

fn dropping(app: &App) -> Dropping {
    Dropping {
        rate: app.state.cfg.failures.watch_dropped,
        count: app.dropped_events.clone(),
    }
}

/// A ping, the workspace as it is now, then the workspace at every change. A change is left
/// out with `dropping.rate`, as coderd leaves out what its pubsub dropped: a subscriber's
/// queue holds `BufferSize` messages and past that it gets `ErrDroppedMessages`
/// (coderd/database/pubsub/pubsub.go), and `watchWorkspace`'s callback returns on any error
/// (coderd/workspaces.go, v2.36.1), so the stream stays open, pinging, without that state.
/// Every watcher subscribes to the owner's channel and gets all of the owner's workspaces'
/// events, so a run's own burst of builds fills the queue.
fn events(
    mut rx: tokio::sync::watch::Receiver<Arc<Workspace>>,
    fault: Option<StreamFault>,
    dropping: Dropping,
) -> impl Stream<Item = WatchEvent> {
    async_stream(move |tx| async move {
        if tx.send(WatchEvent::Ping).await.is_err() {
            return;
        }
        if let Some(StreamFault::Silent) = fault {
            // Only the keep-alive's pings from now on, until the client goes away.
            tx.closed().await;
            return;
        }
        let mut malformed = match fault {
            Some(StreamFault::Malformed(kind)) => Some(kind),
            _ => None,
        };
        // The state sent at the start is read from the database, not published: never dropped.
        let mut first = true;
        loop {
            let ws = rx.borrow_and_update().clone();
            let dropped = !first
                && dropping.rate > 0.0
                && rand::Rng::random_bool(&mut rand::rng(), dropping.rate.min(1.0));
            first = false;
            if dropped {
                dropping
                    .count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                let data = match malformed.take() {
                    Some(kind) => malform(&ws, kind),
                    None => serde_json::to_string(&*ws).expect("workspaces serialize"),
                };
                if tx.send(WatchEvent::Data(data, ws)).await.is_err() {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// `events` until `lifetime` has passed (`front.stream_lifetime`): then the stream ends,
/// and the transport closes it (the SSE body ends, watch-ws sends a close frame).
fn cut_after(
    events: impl Stream<Item = WatchEvent>,
    lifetime: Option<crate::config::HumanDuration>,
) -> impl Stream<Item = WatchEvent> {
    let end = async move {
        match lifetime {
            Some(d) => tokio::time::sleep(d.0).await,
            None => std::future::pending().await,
        }
    };
    futures_util::StreamExt::take_until(events, Box::pin(end))
}

/// A stream fed by a task through a small channel (no extra crate for one generator).
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}
