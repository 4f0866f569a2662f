//! The thread that reads workspace event streams.
//!
//! A phase that ends on an event (a build finishing, an agent becoming ready) is only as
//! exact as the moment we read that event. On the shared runtime, a stream's readiness waits
//! for a worker to poll the I/O driver and then for the workspace's task to come up in the
//! run queue; with a thousand workspaces firing their deletes as their agents become ready,
//! that was tens of milliseconds. So every `watch-ws` socket is opened and read on a runtime
//! of its own, on one thread that does nothing else: it reads each message with the moment
//! it reached this machine (the kernel's stamp, [`super::arrival`]) and hands both to the
//! workspace's task through a small channel, which decodes it when it gets round to it; the
//! phase ends at the stamp. The stamp alone makes the moment exact; this thread keeps the
//! workspaces' tasks from waiting for their events behind everything else the runtime does.
//!
//! SSE streams stay on the shared runtime: they ride reqwest's connection pool, whose
//! connections belong to the runtime that opened them.

use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::trace::{PHASE_DEADLINE, PHASE_TRACES};
use super::watch::WatchStream;
use super::{ApiError, Client};
use tokio_tungstenite::tungstenite::Message;

/// What the reader hands over: the stream's next data message's bytes (undecoded: decoding a
/// burst here would delay the rest), and when it reached this machine.
///
/// Kept small: the channel allocates 32 of these at once for every stream, whatever its
/// bound (an unboxed error and a whole `Message` made that 4.6 KiB a workspace).
pub(super) struct Read {
    pub(super) data: Result<Option<bytes::Bytes>, Box<ApiError>>,
    pub(super) at: Instant,
}

/// States queued for a workspace's task before the reader waits for it: a workspace changes
/// a handful of times a minute.
const QUEUED: usize = 8;

fn runtime() -> &'static tokio::runtime::Handle {
    static READERS: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    READERS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the event-stream runtime starts");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("scaletestd-watch".into())
            .spawn(move || {
                ask_for_short_slice();
                rt.block_on(std::future::pending::<()>())
            })
            .expect("the event-stream thread starts");
        handle
    })
}

/// Asks the kernel for a short time slice for this thread (a fair task's `sched_runtime`,
/// Linux 6.12 and later): sharing a core with busy runtime workers, it then runs soon after
/// it wakes rather than when a worker's slice ends, which had left one agent stamp in ten a
/// few milliseconds late. Best effort and unprivileged; older kernels refuse it.
fn ask_for_short_slice() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed sched_attr is valid; the call only reads it, for this thread.
        let refused = unsafe {
            let mut attr: libc::sched_attr = std::mem::zeroed();
            attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
            attr.sched_policy = libc::SCHED_OTHER as u32;
            attr.sched_runtime = 100_000; // 0.1 ms, the shortest the kernel takes
            libc::syscall(
                libc::SYS_sched_setattr,
                0,
                &attr as *const libc::sched_attr,
                0,
            ) != 0
        };
        if refused {
            tracing::debug!(error = %std::io::Error::last_os_error(), "the event-stream thread keeps the default time slice");
        }
    }
}

/// A data message's bytes, copied: they point into the socket's read buffer and would keep
/// all of it alive while the message waits in the channel; a copy of the few KiB lets the
/// buffer go. Other messages never reach here ([`WatchStream::frame`] skips them).
fn detach(m: Message) -> Option<bytes::Bytes> {
    match m {
        Message::Text(t) => Some(bytes::Bytes::copy_from_slice(t.as_bytes())),
        Message::Binary(b) => Some(bytes::Bytes::copy_from_slice(&b)),
        _ => None,
    }
}

/// Opens the workspace's `watch-ws` stream on the reader thread and reads it there until the
/// returned stream is dropped. The upgrade is traced and counted as any call of the phase
/// that opens it.
pub(super) async fn open_ws(client: &Client, id: Uuid) -> Result<WatchStream, ApiError> {
    let (tx, rx) = mpsc::channel::<Read>(QUEUED);
    let (opened_tx, opened_rx) = oneshot::channel();
    let client = client.clone();
    // The phase's task-locals and span travel with the upgrade, as they would on this task.
    let traces = PHASE_TRACES.try_with(|t| super::trace::PhaseTraces(t.0.clone()));
    let deadline = PHASE_DEADLINE.try_with(|d| *d);
    // Boxed at each layer: a future captured or moved into another keeps its storage in both
    // (rustc does not reuse a moved-from local's), and unboxed the upgrade took 41 KiB, for
    // each of 10,000 streams opened at once.
    let open = Box::pin(async move { client.watch_workspace_ws(id).await });
    let open = async move {
        match (traces, deadline) {
            (Ok(t), Ok(d)) => PHASE_TRACES.scope(t, PHASE_DEADLINE.scope(d, open)).await,
            (Ok(t), Err(_)) => PHASE_TRACES.scope(t, open).await,
            (Err(_), Ok(d)) => PHASE_DEADLINE.scope(d, open).await,
            (Err(_), Err(_)) => open.await,
        }
    }
    .instrument(tracing::Span::current());
    // Boxed before the task takes it too: a future captured unboxed sizes the task for the
    // stream's whole life; boxed, its state goes once it is done.
    let open = Box::pin(open);
    runtime().spawn(async move {
        let mut stream = match open.await {
            Ok(s) => s,
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        if opened_tx.send(Ok(stream.path().to_string())).is_err() {
            return; // the phase gave up waiting
        }
        loop {
            let item = tokio::select! {
                item = stream.frame() => item,
                _ = tx.closed() => return,
            };
            let last = !matches!(item, Ok(Some(_)));
            let at = stream.received_at();
            let data = item.map(|m| m.and_then(detach)).map_err(Box::new);
            if tx.send(Read { data, at }).await.is_err() || last {
                return;
            }
        }
    });
    let path = opened_rx.await.map_err(|_| ApiError::Protocol {
        method: reqwest::Method::GET,
        path: format!("/api/v2/workspaces/{id}/watch-ws"),
        detail: "the event-stream thread stopped".into(),
    })??;
    Ok(WatchStream::relayed(rx, path))
}
