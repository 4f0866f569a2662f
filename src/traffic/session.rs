//! One session on one transport: opened, held with ticks on a fixed cadence and each echo
//! timed from when it was due, reopened with backoff, counted while open.

use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;
use uuid::Uuid;

use crate::config::{TrafficConfig, Transport};
use crate::reason::{PhaseError, Reason};

use super::*;

/// An open session on either transport.
pub(super) enum Conn {
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

pub(super) async fn backoff(stop: &CancellationToken, attempt: u32) {
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
pub(super) enum Ended {
    Stopped,
    CannotOpen,
}

/// Holds one session open, reopening it with backoff, until stopped or it cannot be opened.
pub(super) async fn hold(
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
pub(super) struct OpenSession<'a> {
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

pub(super) fn failure(
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

pub(super) async fn open(seat: &Seat, transport: Transport) -> Result<Conn, PhaseError> {
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
pub(super) fn payload(n: u32) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| rng.random_range(b'!'..=b'~') as char)
        .collect()
}

pub(super) async fn ticks(
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
pub(super) fn spread(interval: Duration) -> Duration {
    let us = interval.as_micros().min(u64::MAX as u128) as u64;
    Duration::from_micros(rand::rng().random_range(0..us.max(1)))
}

/// Reads until `payload` has come back, scanning each received byte once; what follows it
/// stays in `buf` for the next tick.
pub(super) async fn echo(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    payload: &[u8],
) -> Result<(), PhaseError> {
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
