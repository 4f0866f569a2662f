//! What a pool's sessions did: per-transport counts and echo latencies in fixed-size HDR
//! histograms, live for the status page, and the observers metrics implement.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::config::Transport;
use crate::reason::Reason;

/// What one transport's sessions did.
#[derive(Debug, Clone, Default)]
pub struct TransportStats {
    pub sessions_opened: u64,
    pub open_now: i64,
    pub ticks: u64,
    pub late_ticks: u64,
    pub bytes_sent: u64,
    pub bytes_echoed: u64,
    /// Echo latencies, in microseconds, of the sessions' whole life (fixed size).
    pub latency: Latencies,
    pub errors: BTreeMap<Reason, u64>,
}

impl TransportStats {
    /// The `q` quantile of echo latencies, in seconds.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        self.latency.quantile(q)
    }
}

/// Echo latencies in a fixed-size HDR histogram: 1 µs to 10 min at two significant digits
/// (±1%), whatever the number of ticks.
#[derive(Clone)]
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("count", &self.0.len())
            .field("p50_s", &self.quantile(0.5))
            .field("p99_s", &self.quantile(0.99))
            .finish()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies(
            hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 2)
                .expect("static histogram bounds are valid"),
        )
    }

    pub fn record(&mut self, seconds: f64) {
        self.0.saturating_record((seconds * 1e6).max(1.0) as u64);
    }

    /// The `q` quantile, in seconds; `None` before the first sample.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1e6)
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

/// Where one session's observations go, resolved once when it opens.
pub trait SessionObserver: Send + Sync {
    fn opened(&self);
    fn closed(&self);
    fn sent(&self, bytes: u64);
    fn echoed(&self, bytes: u64, latency_seconds: f64);
    fn failed(&self, reason: Reason);
}

/// Where traffic observations go (the metrics).
pub trait TrafficObserver: Send + Sync {
    /// The observer of one session of `scenario` over `transport`, whose latencies carry
    /// `trace_id` as their exemplar.
    fn session(
        &self,
        scenario: &str,
        transport: Transport,
        trace_id: Option<String>,
    ) -> Box<dyn SessionObserver>;
}

/// Live statistics of a traffic scenario, shared with the status page.
#[derive(Debug, Default)]
pub struct TrafficStats {
    pub by_transport: Mutex<BTreeMap<&'static str, TransportStats>>,
    pub workspaces_up: std::sync::atomic::AtomicI64,
    pub replaced: std::sync::atomic::AtomicU64,
}

impl TrafficStats {
    pub(super) fn with(&self, t: Transport, f: impl FnOnce(&mut TransportStats)) {
        let mut m = self.by_transport.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(t.as_str()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, TransportStats> {
        self.by_transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
