//! A bounded span queue with its own export thread, counting what it drops.
//!
//! The SDK's batch processor drops spans silently when its queue is full; operators need to
//! see that (`scaletest_spans_dropped_total`), so this processor owns the queue. A full
//! queue drops the span at once (a phase never waits on telemetry), and a failed export (the
//! collector down) drops its batch; both are counted in [`dropped`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped since the process started.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

pub const MAX_QUEUE: usize = 8192;
const MAX_BATCH: usize = 512;
const EVERY: Duration = Duration::from_millis(500);

enum Msg {
    Span(Box<SpanData>),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

#[derive(Debug)]
pub struct QueueProcessor {
    tx: SyncSender<Msg>,
    /// Flush and shutdown requests go on their own channel so a full span queue never
    /// blocks them.
    ctl: SyncSender<Msg>,
}

impl QueueProcessor {
    /// Starts the export thread; `make` builds the exporter inside the thread's own runtime
    /// (gRPC channels belong to the runtime they were made in).
    pub fn start<E, F>(
        make: F,
        resource: opentelemetry_sdk::Resource,
    ) -> Result<QueueProcessor, String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Msg>(MAX_QUEUE);
        let (ctl, ctl_rx) = sync_channel::<Msg>(4);
        let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut exporter = match rt.block_on(async { make() }) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // The resource (service.name, OTEL_RESOURCE_ATTRIBUTES) goes out with every batch.
                exporter.set_resource(&resource);
                let _ = ready_tx.send(Ok(()));
                export_loop(&rt, exporter, rx, ctl_rx);
            })
            .map_err(|e| e.to_string())?;
        ready_rx.recv().map_err(|e| e.to_string())??;
        Ok(QueueProcessor { tx, ctl })
    }

    fn request(
        &self,
        make: impl FnOnce(SyncSender<OTelSdkResult>) -> Msg,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done_tx, done_rx) = sync_channel(1);
        self.ctl
            .send(make(done_tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done_rx
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

fn export_loop<E: SpanExporter>(
    rt: &tokio::runtime::Runtime,
    exporter: E,
    rx: Receiver<Msg>,
    ctl: Receiver<Msg>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut last = Instant::now();
    let export = |batch: &mut Vec<SpanData>| -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let spans = std::mem::take(batch);
        let n = spans.len() as u64;
        let r = rt.block_on(exporter.export(spans));
        if r.is_err() {
            DROPPED.fetch_add(n, Ordering::Relaxed);
        }
        r
    };
    loop {
        // Control first: a flush must see every span queued before it.
        if let Ok(msg) = ctl.try_recv() {
            while let Ok(Msg::Span(s)) = rx.try_recv() {
                batch.push(*s);
            }
            match msg {
                Msg::Flush(done) => {
                    let _ = done.send(export(&mut batch));
                }
                Msg::Shutdown(done) => {
                    let r = export(&mut batch);
                    let _ = exporter.shutdown();
                    let _ = done.send(r);
                    return;
                }
                Msg::Span(_) => {}
            }
            continue;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Span(s)) => batch.push(*s),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if batch.len() >= MAX_BATCH || (last.elapsed() >= EVERY && !batch.is_empty()) {
            let _ = export(&mut batch);
            last = Instant::now();
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.request(Msg::Flush, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.request(Msg::Shutdown, timeout)
    }
}
