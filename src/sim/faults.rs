//! Faults injected into long-lived terminal and SSH sessions: latency (with jitter, as a
//! range) before each chunk of output, stalls, and disconnects, each at a rate per second of
//! session time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;

use super::config::Latency;
use crate::config::HumanDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionFaults {
    /// Added before each chunk of output ("20ms", or a range for jitter).
    pub latency: Latency,
    /// Chance per second that a session is cut.
    pub disconnect_rate: f64,
    /// Chance per second that a session stops echoing for `stall_for`.
    pub stall_rate: f64,
    pub stall_for: HumanDuration,
}

impl Default for SessionFaults {
    fn default() -> Self {
        SessionFaults {
            latency: Latency::fixed(Duration::ZERO),
            disconnect_rate: 0.0,
            stall_rate: 0.0,
            stall_for: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// What was injected, for tests to compare with.
#[derive(Debug, Default)]
pub struct Injected {
    pub disconnects: AtomicU64,
    pub stalls: AtomicU64,
}

/// The fault state of one session.
pub struct Session<'a> {
    cfg: &'a SessionFaults,
    counts: &'a Injected,
    last: Instant,
}

/// The session is to be cut.
pub struct Cut;

impl<'a> Session<'a> {
    pub fn new(cfg: &'a SessionFaults, counts: &'a Injected) -> Self {
        Session {
            cfg,
            counts,
            last: Instant::now(),
        }
    }

    /// Call before sending a chunk of output: waits the injected latency (and a stall, if one
    /// falls now), or says the session is to be cut.
    pub async fn before_output(&mut self) -> Result<(), Cut> {
        let dt = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let (cut, stall) = {
            let mut rng = rand::rng();
            (
                self.cfg.disconnect_rate > 0.0
                    && rng.random_bool((self.cfg.disconnect_rate * dt).min(1.0)),
                self.cfg.stall_rate > 0.0 && rng.random_bool((self.cfg.stall_rate * dt).min(1.0)),
            )
        };
        if cut {
            self.counts.disconnects.fetch_add(1, Ordering::Relaxed);
            return Err(Cut);
        }
        if stall {
            self.counts.stalls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.cfg.stall_for.0).await;
            self.last = Instant::now();
        }
        let d = self.cfg.latency.sample();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
}
