//! `kind = "traffic"`: a pool of `count` running workspaces, each holding
//! `sessions_per_workspace` sessions per transport open, sending `bytes_per_tick` every
//! `tick_interval` to `cat` and timing each echo, until told to stop; then the pool is deleted.
//!
//! Ticks follow a fixed cadence from the session's start: tick k is due at `start + k·interval`
//! whatever the previous round trips took, and its latency is measured from when it was due, so
//! a slow echo makes the following ticks late and their latency shows it (no coordinated
//! omission). A session that errors is counted by reason and reopened with backoff; a workspace
//! whose sessions keep failing to open is deleted and replaced through the lifecycle phases.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::config::{Scenario, TrafficConfig, Transport};
use crate::metrics::{DirectionLabels, Metrics, TrafficErrorLabels, TransportLabels};
use crate::reason::{PhaseError, Reason};
use crate::runner::{self, RunCtx, Slice};

/// Opening a session failing this many times in a row replaces the workspace.
const REPLACE_AFTER: u32 = 3;

/// What one transport's sessions did.
#[derive(Debug, Default, Clone)]
pub struct TransportStats {
    pub sessions_opened: u64,
    pub open_now: i64,
    pub ticks: u64,
    pub late_ticks: u64,
    pub bytes_sent: u64,
    pub bytes_echoed: u64,
    /// Echo latencies (seconds), the most recent [`KEEP`].
    pub latencies: Vec<f64>,
    pub errors: BTreeMap<Reason, u64>,
}

/// Latency samples kept per transport for percentiles.
pub const KEEP: usize = 100_000;

impl TransportStats {
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }
}

/// Live statistics of a traffic scenario, shared with the status page.
#[derive(Debug, Default)]
pub struct TrafficStats {
    pub by_transport: Mutex<BTreeMap<&'static str, TransportStats>>,
    pub workspaces_up: std::sync::atomic::AtomicI64,
    pub replaced: std::sync::atomic::AtomicU64,
}

impl TrafficStats {
    fn with(&self, t: Transport, f: impl FnOnce(&mut TransportStats)) {
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

/// An open session on either transport.
enum Conn {
    Pty(Box<crate::coder::pty::Pty>),
    Ssh(Box<crate::ssh::Exec>),
}

impl Conn {
    async fn send(&mut self, data: &str) -> Result<(), PhaseError> {
        match self {
            Conn::Pty(p) => p.send(data).await.map_err(PhaseError::from),
            Conn::Ssh(s) => s
                .channel
                .data(data.as_bytes())
                .await
                .map_err(|e| PhaseError::new(Reason::ConnectError, format!("ssh send: {e}"))),
        }
    }

    async fn recv(&mut self) -> Result<Vec<u8>, PhaseError> {
        match self {
            Conn::Pty(p) => p.recv().await.map_err(|e| {
                PhaseError::new(
                    Reason::ConnectError,
                    format!("the web terminal ended: {e:?}"),
                )
            }),
            Conn::Ssh(s) => loop {
                match s.channel.wait().await {
                    Some(russh::ChannelMsg::Data { data }) => return Ok(data.to_vec()),
                    Some(russh::ChannelMsg::ExtendedData { data, .. }) => return Ok(data.to_vec()),
                    Some(russh::ChannelMsg::Eof | russh::ChannelMsg::Close) | None => {
                        return Err(PhaseError::new(
                            Reason::ConnectError,
                            "the SSH session ended",
                        ));
                    }
                    Some(_) => continue,
                }
            },
        }
    }

    async fn close(self) {
        match self {
            Conn::Pty(p) => p.close().await,
            Conn::Ssh(s) => (*s).close().await,
        }
    }
}

/// Where a workspace's sessions go.
#[derive(Clone)]
struct Seat {
    ctx: Arc<RunCtx>,
    workspace: String,
    owner: String,
    agent: (Uuid, String),
}

/// Keeps the scenario's pool (this shard's part of it) running with traffic until `stop`;
/// then deletes it. `abort` also cancels the deletes.
pub async fn run(
    ctx: Arc<RunCtx>,
    slice: Slice,
    metrics: Arc<Metrics>,
    stats: Arc<TrafficStats>,
) -> Vec<runner::WorkspaceReport> {
    let mut slots = tokio::task::JoinSet::new();
    for index in slice.first..slice.first + slice.count {
        let (ctx, metrics, stats) = (ctx.clone(), metrics.clone(), stats.clone());
        slots.spawn(slot(ctx, index, metrics, stats));
    }
    let mut reports = Vec::new();
    while let Some(r) = slots.join_next().await {
        if let Ok(r) = r {
            reports.extend(r);
        }
    }
    reports
}

/// One place in the pool: bring a workspace up, hold its sessions, replace it when it breaks.
async fn slot(
    ctx: Arc<RunCtx>,
    index: u32,
    metrics: Arc<Metrics>,
    stats: Arc<TrafficStats>,
) -> Vec<runner::WorkspaceReport> {
    let mut reports = Vec::new();
    let mut generation = 0u32;
    while !ctx.stop.is_cancelled() {
        // A replacement gets a fresh run id, so its name never collides with the one going.
        let name = if generation == 0 {
            ctx.workspace_name(index)
        } else {
            format!(
                "{}-{}-{index}",
                ctx.scenario.workspace_prefix,
                crate::naming::new_run_id()
            )
        };
        generation += 1;
        let up = match runner::bring_up(&ctx, index, name.clone()).await {
            Ok(up) => up,
            Err(report) => {
                reports.push(report);
                backoff(&ctx.stop, generation).await;
                continue;
            }
        };
        let Some(agent) = up.agent().filter(|_| up.ok) else {
            reports.push(runner::tear_down(&ctx, up).await);
            backoff(&ctx.stop, generation).await;
            continue;
        };
        stats
            .workspaces_up
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seat = Seat {
            ctx: ctx.clone(),
            workspace: name,
            owner: up.walk.owner.clone(),
            agent,
        };
        let broken = CancellationToken::new();
        let mut sessions = tokio::task::JoinSet::new();
        let t = &ctx.scenario.traffic;
        for transport in &t.transports {
            for n in 0..t.sessions_per_workspace {
                let (seat, metrics, stats, broken) =
                    (seat.clone(), metrics.clone(), stats.clone(), broken.clone());
                let transport = *transport;
                sessions.spawn(async move {
                    if hold(&seat, transport, n, &metrics, &stats).await == Ended::CannotOpen {
                        broken.cancel();
                    }
                });
            }
        }
        tokio::select! {
            _ = ctx.stop.cancelled() => {}
            _ = broken.cancelled() => {
                tracing::warn!(scenario = %ctx.scenario.name, workspace = %seat.workspace, "sessions keep failing to open: replacing the workspace");
                stats.replaced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // Sessions end after their current tick (stop) or at once (replacement).
        if !ctx.stop.is_cancelled() {
            sessions.abort_all();
        }
        while sessions.join_next().await.is_some() {}
        stats
            .workspaces_up
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        reports.push(runner::tear_down(&ctx, up).await);
    }
    reports
}

async fn backoff(stop: &CancellationToken, attempt: u32) {
    let d = crate::coder::backoff(
        Duration::from_millis(200),
        Duration::from_secs(10),
        attempt.min(10),
    );
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.cancelled() => {}
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Stopped,
    CannotOpen,
}

/// Holds one session open, reopening it with backoff, until stopped or it cannot be opened.
async fn hold(
    seat: &Seat,
    transport: Transport,
    n: u32,
    metrics: &Metrics,
    stats: &TrafficStats,
) -> Ended {
    let ctx = &seat.ctx;
    let scenario = &ctx.scenario.name;
    let tl = TransportLabels {
        scenario: scenario.clone(),
        transport: transport.as_str().into(),
    };
    let mut failures = 0u32;
    while !ctx.stop.is_cancelled() {
        let span = tracing::info_span!(
            "traffic.session",
            otel.name = "traffic.session",
            scenario = %scenario,
            transport = transport.as_str(),
            workspace.name = %seat.workspace,
            session = n,
            ticks = Empty,
            late_ticks = Empty,
            latency.p50_ms = Empty,
            error.reason = Empty,
            otel.status_code = Empty,
        );
        let opened = open(seat, transport).instrument(span.clone()).await;
        let conn = match opened {
            Ok(c) => c,
            Err(e) => {
                failure(metrics, stats, &tl, transport, &span, &e);
                failures += 1;
                if failures >= REPLACE_AFTER {
                    return Ended::CannotOpen;
                }
                backoff(&ctx.stop, failures).await;
                continue;
            }
        };
        failures = 0;
        stats.with(transport, |s| {
            s.sessions_opened += 1;
            s.open_now += 1;
        });
        metrics.traffic_sessions.get_or_create(&tl).inc();
        let result = ticks(
            conn,
            &ctx.scenario.traffic,
            &ctx.stop,
            transport,
            metrics,
            stats,
            &tl,
            &span,
        )
        .await;
        metrics.traffic_sessions.get_or_create(&tl).dec();
        stats.with(transport, |s| s.open_now -= 1);
        if let Err(e) = result {
            failure(metrics, stats, &tl, transport, &span, &e);
            backoff(&ctx.stop, 1).await;
        }
    }
    Ended::Stopped
}

fn failure(
    metrics: &Metrics,
    stats: &TrafficStats,
    tl: &TransportLabels,
    t: Transport,
    span: &tracing::Span,
    e: &PhaseError,
) {
    metrics
        .traffic_errors
        .get_or_create(&TrafficErrorLabels {
            scenario: tl.scenario.clone(),
            transport: tl.transport.clone(),
            reason: e.reason.to_string(),
        })
        .inc();
    stats.with(t, |s| *s.errors.entry(e.reason).or_default() += 1);
    span.record("error.reason", e.reason.as_str());
    span.record("otel.status_code", "ERROR");
    // A span for every error, inside the session's trace.
    let err = tracing::info_span!(parent: span, "traffic.error", otel.name = "traffic.error", error.reason = e.reason.as_str(), otel.status_code = "ERROR");
    let _ = err.enter();
    tracing::warn!(parent: span, transport = t.as_str(), reason = %e.reason, error = %e.message, "traffic session error");
}

async fn open(seat: &Seat, transport: Transport) -> Result<Conn, PhaseError> {
    let ctx = &seat.ctx;
    let limit = ctx.scenario.timeouts.of(match transport {
        Transport::Pty => crate::phases::Phase::Pty,
        Transport::Ssh => crate::phases::Phase::Ssh,
    });
    let fut = async {
        match transport {
            Transport::Pty => {
                let pty = ctx
                    .client()
                    .open_pty(
                        seat.agent.0,
                        Uuid::new_v4(),
                        "cat",
                        crate::phases::pty::SIZE,
                    )
                    .await?;
                Ok(Conn::Pty(Box::new(pty)))
            }
            Transport::Ssh => {
                let target = crate::ssh::Target {
                    workspace: seat.workspace.clone(),
                    owner: seat.owner.clone(),
                    agent: seat.agent.1.clone(),
                };
                let coder = crate::ssh::CoderEnv {
                    url: ctx.client().base_url().clone(),
                    token: ctx.client().token().clone(),
                };
                let (ex, _) =
                    crate::ssh::open_exec(&ctx.scenario.ssh, &target, &coder, "cat").await?;
                Ok(Conn::Ssh(Box::new(ex)))
            }
        }
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(PhaseError::new(
            Reason::Timeout,
            format!(
                "opening a {} session took over {limit:?}",
                transport.as_str()
            ),
        )),
    }
}

/// Random printable bytes (no spaces or newlines, so one line and one word).
fn payload(n: u32) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| rng.random_range(b'!'..=b'~') as char)
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn ticks(
    mut conn: Conn,
    t: &TrafficConfig,
    stop: &CancellationToken,
    transport: Transport,
    metrics: &Metrics,
    stats: &TrafficStats,
    tl: &TransportLabels,
    span: &tracing::Span,
) -> Result<(), PhaseError> {
    let bytes = |direction: &str| {
        metrics.traffic_bytes.get_or_create(&DirectionLabels {
            scenario: tl.scenario.clone(),
            transport: tl.transport.clone(),
            direction: direction.into(),
        })
    };
    let trace =
        crate::telemetry::trace_id(span).map(|trace_id| crate::metrics::TraceExemplar { trace_id });
    // A tick that has not come back within this is a stall.
    let stall = (t.tick_interval * 20).max(Duration::from_secs(5));
    let start = tokio::time::Instant::now();
    let (mut k, mut late, mut done) = (0u64, 0u64, 0u64);
    let mut buf: Vec<u8> = Vec::new();
    let mut lat = Vec::new();
    let result = loop {
        let due = start + t.tick_interval * k as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.cancelled() => break Ok(()),
        }
        if tokio::time::Instant::now() > due + Duration::from_millis(1) {
            late += 1;
        }
        let p = payload(t.bytes_per_tick);
        if let Err(e) = conn.send(&format!("{p}\n")).await {
            break Err(e);
        }
        bytes("sent").inc_by(p.len() as u64 + 1);
        stats.with(transport, |s| s.bytes_sent += p.len() as u64 + 1);
        k += 1;
        if !t.echo {
            continue;
        }
        // Read until the payload is back.
        let echoed = tokio::time::timeout_at(tokio::time::Instant::now() + stall, async {
            loop {
                if let Some(i) = find(&buf, p.as_bytes()) {
                    buf.drain(..i + p.len());
                    return Ok(());
                }
                let chunk = conn.recv().await?;
                buf.extend_from_slice(&chunk);
                if buf.len() > 4 << 20 {
                    return Err(PhaseError::new(
                        Reason::ProtocolError,
                        "echo never came back in 4 MiB of output",
                    ));
                }
            }
        })
        .await;
        match echoed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => {
                break Err(PhaseError::new(
                    Reason::Timeout,
                    format!("no echo within {stall:?}"),
                ));
            }
        }
        let latency = due.elapsed().as_secs_f64();
        done += 1;
        bytes("received").inc_by(p.len() as u64 + 1);
        metrics
            .traffic_latency
            .get_or_create(tl)
            .observe(latency, trace.clone(), None);
        lat.push(latency);
        stats.with(transport, |s| {
            s.ticks += 1;
            s.bytes_echoed += p.len() as u64 + 1;
            if s.latencies.len() >= KEEP {
                s.latencies.remove(0);
            }
            s.latencies.push(latency);
        });
    };
    stats.with(transport, |s| s.late_ticks += late);
    span.record("ticks", done);
    span.record("late_ticks", late);
    if !lat.is_empty() {
        lat.sort_by(|a, b| a.total_cmp(b));
        span.record("latency.p50_ms", lat[lat.len() / 2] * 1e3);
    }
    conn.close().await;
    result
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The pool's context: what [`runner`] needs to bring workspaces up and delete them.
pub async fn context(
    client: &crate::coder::Client,
    scenario: &Scenario,
    organization: Option<&str>,
    observer: Arc<dyn runner::RunObserver>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<Arc<RunCtx>, PhaseError> {
    let blueprint = runner::prepare(client, scenario, organization).await?;
    Ok(Arc::new(RunCtx::new(
        client.clone(),
        scenario.clone(),
        blueprint,
        crate::naming::new_run_id(),
        observer,
        stop,
        abort,
    )))
}
