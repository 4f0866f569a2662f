//! `kind = "traffic"`: a pool of `count` running workspaces, each holding
//! `sessions_per_workspace` sessions per transport open, sending `bytes_per_tick` every
//! `tick_interval` to `cat` and timing each echo, until told to stop; then the pool is deleted.
//!
//! Ticks follow a fixed cadence from the session's start: tick k is due at `start + k·interval`
//! whatever the previous round trips took, and its latency is measured from when it was due, so
//! a slow echo makes the following ticks late and their latency shows it (no coordinated
//! omission). A session that errors is counted by reason and reopened with backoff; a workspace
//! whose sessions keep failing to open is deleted and replaced through the lifecycle phases.
//!
//! Memory is constant per session however long it runs: latencies go into fixed-size HDR
//! histograms (per session for its span's p50, per transport for the status page), and each
//! received byte is scanned once for the echo. Observations leave through a
//! [`TrafficObserver`] (the metrics), as the runner's go through its observer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::config::{Scenario, TrafficConfig, Transport};
use crate::reason::{PhaseError, Reason};
use crate::runner::{self, RunCtx, Slice};

/// Opening a session failing this many times in a row replaces the workspace.
const REPLACE_AFTER: u32 = 3;

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
    /// The workspace's number: whose client its sessions use.
    index: u32,
    workspace: String,
    owner: String,
    agent: (Uuid, String),
    /// Ends this workspace's sessions: the pool stops, or shrank past this place.
    stop: CancellationToken,
    /// What a reload can change while sessions run.
    settings: watch::Receiver<TrafficConfig>,
}

/// What a reload changes in a running pool (see [`run`]).
pub struct PoolControl {
    /// This shard's part of the pool: it grows or shrinks to it.
    pub slice: watch::Receiver<Slice>,
    /// Ticks of sessions already open take the new interval, size and echo at their next
    /// tick; a change of transports or sessions per workspace reopens the sessions.
    pub settings: watch::Receiver<TrafficConfig>,
}

impl PoolControl {
    /// A pool of one size and settings for its whole life.
    pub fn fixed(slice: Slice, settings: TrafficConfig) -> PoolControl {
        PoolControl {
            slice: watch::channel(slice).1,
            settings: watch::channel(settings).1,
        }
    }
}

/// Keeps the scenario's pool (this shard's part of it) running with traffic until the
/// context's `stop`; then deletes it. `abort` also cancels the deletes. The pool follows
/// `control`: places added when the slice grows, workspaces deleted when it shrinks.
pub async fn run(
    ctx: Arc<RunCtx>,
    mut control: PoolControl,
    observer: Arc<dyn TrafficObserver>,
    stats: Arc<TrafficStats>,
) -> Vec<runner::WorkspaceReport> {
    let mut slots: BTreeMap<u32, CancellationToken> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let want = *control.slice.borrow_and_update();
        let range = want.first..want.first + want.count;
        for index in range.clone() {
            slots.entry(index).or_insert_with(|| {
                let stop = ctx.stop.child_token();
                let (ctx, observer, stats) = (ctx.clone(), observer.clone(), stats.clone());
                let settings = control.settings.clone();
                tasks.spawn(slot(ctx, index, stop.clone(), settings, observer, stats));
                stop
            });
        }
        slots.retain(|index, stop| {
            let keep = range.contains(index);
            if !keep {
                stop.cancel(); // its workspace is deleted
            }
            keep
        });
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            changed = control.slice.changed() => if changed.is_err() {
                // Nobody can resize it any more: it keeps its size until it stops.
                ctx.stop.cancelled().await;
                break;
            },
        }
    }
    let mut reports = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            reports.extend(r);
        }
    }
    reports
}

/// One place in the pool: bring a workspace up, hold its sessions, replace it when it breaks,
/// reopen them when a reload changes their shape; delete it when `stop` fires.
async fn slot(
    ctx: Arc<RunCtx>,
    index: u32,
    stop: CancellationToken,
    mut settings: watch::Receiver<TrafficConfig>,
    observer: Arc<dyn TrafficObserver>,
    stats: Arc<TrafficStats>,
) -> Vec<runner::WorkspaceReport> {
    let mut reports = Vec::new();
    let mut generation = 0u32;
    while !stop.is_cancelled() {
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
        let up = match runner::bring_up(&ctx, index, name.clone(), None).await {
            Ok(up) => up,
            Err(report) => {
                reports.push(report);
                backoff(&stop, generation).await;
                continue;
            }
        };
        let Some(agent) = up.agent().filter(|_| up.ok) else {
            reports.push(runner::tear_down(&ctx, up).await);
            backoff(&stop, generation).await;
            continue;
        };
        stats
            .workspaces_up
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seat = Seat {
            ctx: ctx.clone(),
            index: up.report.index,
            workspace: name,
            owner: up.walk.owner.clone(),
            agent,
            stop: stop.clone(),
            settings: settings.clone(),
        };
        hold_all(&seat, &mut settings, &observer, &stats).await;
        stats
            .workspaces_up
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        reports.push(runner::tear_down(&ctx, up).await);
    }
    reports
}

/// Holds a workspace's sessions until it must go: the slot stops (`seat.stop`) or they keep
/// failing to open (the workspace is replaced). A reload that changes transports or sessions
/// per workspace reopens them all.
async fn hold_all(
    seat: &Seat,
    settings: &mut watch::Receiver<TrafficConfig>,
    observer: &Arc<dyn TrafficObserver>,
    stats: &Arc<TrafficStats>,
) {
    loop {
        let shape = {
            let t = settings.borrow_and_update();
            (t.transports.clone(), t.sessions_per_workspace)
        };
        let broken = CancellationToken::new();
        let sessions_stop = seat.stop.child_token();
        let mut sessions = tokio::task::JoinSet::new();
        for transport in &shape.0 {
            for n in 0..shape.1 {
                let mut seat = seat.clone();
                seat.stop = sessions_stop.clone();
                let (stats, broken, transport) = (stats.clone(), broken.clone(), *transport);
                let observer = observer.clone();
                sessions.spawn(async move {
                    if hold(&seat, transport, n, &*observer, &stats).await == Ended::CannotOpen {
                        broken.cancel();
                    }
                });
            }
        }
        let mut live = settings.has_changed().is_ok();
        let reopen = loop {
            tokio::select! {
                _ = seat.stop.cancelled() => break false,
                _ = broken.cancelled() => {
                    tracing::warn!(scenario = %seat.ctx.scenario.name, workspace = %seat.workspace, "sessions keep failing to open: replacing the workspace");
                    stats.replaced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break false;
                }
                changed = settings.changed(), if live => {
                    if changed.is_err() {
                        live = false; // fixed settings from now on
                        continue;
                    }
                    let t = settings.borrow();
                    if (t.transports.clone(), t.sessions_per_workspace) != shape {
                        break true;
                    }
                }
            }
        };
        // Sessions end after their current tick (stop) or at once (replacement, reshaping).
        if !seat.stop.is_cancelled() {
            sessions.abort_all();
        }
        sessions_stop.cancel();
        while sessions.join_next().await.is_some() {}
        if !reopen {
            return;
        }
        tracing::info!(scenario = %seat.ctx.scenario.name, workspace = %seat.workspace, "reloaded traffic settings: reopening the sessions");
    }
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
    observer: &dyn TrafficObserver,
    stats: &TrafficStats,
) -> Ended {
    let ctx = &seat.ctx;
    let scenario = &ctx.scenario.name;
    let mut failures = 0u32;
    while !seat.stop.is_cancelled() {
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
        let obs = observer.session(scenario, transport, crate::telemetry::trace_id(&span));
        let opened = open(seat, transport).instrument(span.clone()).await;
        let conn = match opened {
            Ok(c) => c,
            Err(e) => {
                failure(&*obs, stats, transport, &span, &e);
                failures += 1;
                if failures >= REPLACE_AFTER {
                    return Ended::CannotOpen;
                }
                backoff(&seat.stop, failures).await;
                continue;
            }
        };
        failures = 0;
        let open = OpenSession::new(&*obs, stats, transport);
        let result = ticks(
            conn,
            &seat.settings,
            &seat.stop,
            transport,
            &*obs,
            stats,
            &span,
        )
        .await;
        drop(open);
        if let Err(e) = result {
            failure(&*obs, stats, transport, &span, &e);
            backoff(&seat.stop, 1).await;
        }
    }
    Ended::Stopped
}

/// An open session as counted (the sessions gauge, `open_now`): counted out when dropped,
/// so a session whose task is aborted (a replacement, a reload) is counted out too.
struct OpenSession<'a> {
    obs: &'a dyn SessionObserver,
    stats: &'a TrafficStats,
    transport: Transport,
}

impl<'a> OpenSession<'a> {
    fn new(obs: &'a dyn SessionObserver, stats: &'a TrafficStats, transport: Transport) -> Self {
        stats.with(transport, |s| {
            s.sessions_opened += 1;
            s.open_now += 1;
        });
        obs.opened();
        OpenSession {
            obs,
            stats,
            transport,
        }
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.obs.closed();
        self.stats.with(self.transport, |s| s.open_now -= 1);
    }
}

fn failure(
    obs: &dyn SessionObserver,
    stats: &TrafficStats,
    t: Transport,
    span: &tracing::Span,
    e: &PhaseError,
) {
    obs.failed(e.reason);
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
                    .client(seat.index)
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
                    url: ctx.client(seat.index).base_url().clone(),
                    token: ctx.client(seat.index).token().clone(),
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

async fn ticks(
    mut conn: Conn,
    settings: &watch::Receiver<TrafficConfig>,
    stop: &CancellationToken,
    transport: Transport,
    obs: &dyn SessionObserver,
    stats: &TrafficStats,
    span: &tracing::Span,
) -> Result<(), PhaseError> {
    let mut interval = settings.borrow().tick_interval;
    // Each session starts its cadence at a random point of the interval: sessions opened
    // together would otherwise tick in unison, and the burst (not the server) would set the
    // tail of the latency.
    let mut start = tokio::time::Instant::now() + spread(interval);
    let (mut k, mut late, mut done) = (0u64, 0u64, 0u64);
    let mut buf: Vec<u8> = Vec::new();
    let mut lat = Latencies::new();
    let result = loop {
        // What a reload set applies from this tick on; a new interval starts a new cadence.
        let (tick_interval, bytes_per_tick, wait_echo) = {
            let t = settings.borrow();
            (t.tick_interval, t.bytes_per_tick, t.echo)
        };
        if tick_interval != interval {
            (start, interval, k) = (
                tokio::time::Instant::now() + spread(tick_interval),
                tick_interval,
                0,
            );
        }
        // A tick that has not come back within this is a stall.
        let stall = (interval * 20).max(Duration::from_secs(5));
        let due = start + interval * k as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.cancelled() => break Ok(()),
        }
        if tokio::time::Instant::now() > due + Duration::from_millis(1) {
            late += 1;
        }
        let mut p = payload(bytes_per_tick);
        let sent = p.len() as u64 + 1;
        p.push('\n');
        if let Err(e) = conn.send(&p).await {
            break Err(e);
        }
        p.pop();
        obs.sent(sent);
        stats.with(transport, |s| s.bytes_sent += sent);
        k += 1;
        if !wait_echo {
            continue;
        }
        let echoed = tokio::time::timeout_at(
            tokio::time::Instant::now() + stall,
            echo(&mut conn, &mut buf, p.as_bytes()),
        )
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
        obs.echoed(sent, latency);
        lat.record(latency);
        stats.with(transport, |s| {
            s.ticks += 1;
            s.bytes_echoed += sent;
            s.latency.record(latency);
        });
    };
    stats.with(transport, |s| s.late_ticks += late);
    span.record("ticks", done);
    span.record("late_ticks", late);
    if let Some(p50) = lat.quantile(0.5) {
        span.record("latency.p50_ms", p50 * 1e3);
    }
    conn.close().await;
    result
}

/// A random offset within one tick interval.
fn spread(interval: Duration) -> Duration {
    let us = interval.as_micros().min(u64::MAX as u128) as u64;
    Duration::from_micros(rand::rng().random_range(0..us.max(1)))
}

/// Reads until `payload` has come back, scanning each received byte once; what follows it
/// stays in `buf` for the next tick.
async fn echo(conn: &mut Conn, buf: &mut Vec<u8>, payload: &[u8]) -> Result<(), PhaseError> {
    let finder = memchr::memmem::Finder::new(payload);
    // No match can start before this: earlier bytes were searched already.
    let mut from = 0;
    loop {
        if let Some(i) = finder.find(&buf[from..]) {
            buf.drain(..from + i + payload.len());
            return Ok(());
        }
        from = buf.len().saturating_sub(payload.len().saturating_sub(1));
        let chunk = conn.recv().await?;
        buf.extend_from_slice(&chunk);
        if buf.len() > 4 << 20 {
            return Err(PhaseError::new(
                Reason::ProtocolError,
                "echo never came back in 4 MiB of output",
            ));
        }
    }
}

/// The pool's context: what [`runner`] needs to bring workspaces up and delete them.
pub async fn context(
    client: &crate::coder::Client,
    scenario: &Scenario,
    setup: runner::Setup<'_>,
    observer: Arc<dyn runner::RunObserver>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Result<Arc<RunCtx>, PhaseError> {
    let blueprint = runner::prepare(client, scenario, setup.organization).await?;
    let owners = runner::owners(client, scenario, setup, blueprint.organization_id).await?;
    Ok(Arc::new(RunCtx::new(
        client.clone(),
        owners,
        scenario.clone(),
        blueprint,
        crate::naming::new_run_id(),
        observer,
        stop,
        abort,
        // A traffic pool never autostarts: no herd to gather.
        0,
    )))
}
