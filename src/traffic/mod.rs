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
//!
//! [`stats`] holds what the sessions did, [`session`] one session; this file the pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Scenario, TrafficConfig};
use crate::reason::PhaseError;
use crate::runner::{self, RunCtx, Slice};

mod session;
mod stats;

use session::*;
pub use stats::*;

/// Opening a session failing this many times in a row replaces the workspace.
const REPLACE_AFTER: u32 = 3;

/// Where a workspace's sessions go.
#[derive(Clone)]
pub(super) struct Seat {
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
