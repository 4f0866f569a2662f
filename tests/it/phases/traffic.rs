//! Sustained traffic against the simulator: 20 workspaces × 2 sessions × 2 transports at a
//! 100 ms tick, echo accounting, injected latency, faults and recovery, and shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use scaletestd::metrics::Metrics;
use scaletestd::phases::Reason;
use scaletestd::traffic::{self, TrafficStats};
use tokio_util::sync::CancellationToken;

fn traffic_config(sim: &scaletestd::sim::Sim, count: u32) -> scaletestd::config::Config {
    traffic_config_with(sim, count, 2)
}

fn traffic_config_with(
    sim: &scaletestd::sim::Sim,
    count: u32,
    sessions: u32,
) -> scaletestd::config::Config {
    config(
        sim,
        count,
        count,
        &format!(
            r#"kind = "traffic"
phases = ["create", "build", "agent", "delete"]
[scenario.traffic]
sessions_per_workspace = {sessions}
transports = ["pty", "ssh"]
bytes_per_tick = 256
tick_interval = "100ms"
[scenario.ssh]
transport = "tcp"
address = "{}"
user = "{{workspace}}""#,
            sim.ssh_addr()
        ),
    )
}

struct Running {
    stop: CancellationToken,
    stats: Arc<TrafficStats>,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<Vec<scaletestd::runner::WorkspaceReport>>,
}

async fn start_pool(cfg: &scaletestd::config::Config) -> Running {
    let sc = &cfg.scenarios[0];
    let metrics = Metrics::new();
    metrics.declare(sc);
    let stop = CancellationToken::new();
    let ctx = traffic::context(
        &client(cfg),
        sc,
        Default::default(),
        metrics.clone(),
        stop.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let stats = Arc::new(TrafficStats::default());
    let slice = scaletestd::runner::Slice {
        first: 1,
        count: sc.count,
    };
    let control = traffic::PoolControl::fixed(slice, sc.traffic.clone());
    let task = tokio::spawn(traffic::run(ctx, control, metrics.clone(), stats.clone()));
    Running {
        stop,
        stats,
        metrics,
        task,
    }
}

impl Running {
    /// Stops the pool and waits (bounded) for it: what each workspace's deletion reported.
    async fn finish_reports(&mut self) -> Vec<scaletestd::runner::WorkspaceReport> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("the pool stops")
            .unwrap()
    }

    /// [`Running::finish_reports`], and nothing left in the simulator.
    async fn finish(&mut self, sim: &scaletestd::sim::Sim) {
        self.finish_reports().await;
        assert!(
            settle(sim).await.is_empty(),
            "nothing left in the simulator"
        );
    }
}

/// Waits (bounded) until `n` sessions are open.
async fn wait_open(stats: &TrafficStats, n: i64, within_secs: u64) {
    eventually(Duration::from_secs(within_secs), || open_now(stats) >= n).await;
}

/// Waits (bounded) until each of the two transports has echoed `ticks` (at 10 a second a
/// session, the window a test measures over).
async fn wait_ticks(stats: &TrafficStats, ticks: u64) {
    eventually(Duration::from_secs(30), || {
        let snap = stats.snapshot();
        snap.len() == 2 && snap.values().all(|s| s.ticks >= ticks)
    })
    .await;
}

fn open_now(stats: &TrafficStats) -> i64 {
    stats.snapshot().values().map(|s| s.open_now).sum()
}

/// The value of a `scaletest_traffic_*` sample in the exposition.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_sessions_echo_every_byte_with_the_injected_latency() {
    let _turn = exclusive();
    let mut sc = fast_sim();
    sc.sessions.latency = ms(20);
    let sim = start(sc).await;
    let cfg = traffic_config(&sim, 20);
    let mut pool = start_pool(&cfg).await;
    wait_open(&pool.stats, 80, 60).await;
    // Each transport's 40 sessions, 30 ticks each.
    wait_ticks(&pool.stats, 40 * 30).await;
    let reports = pool.finish_reports().await;
    assert_eq!(reports.len(), 20);
    assert!(
        reports.iter().all(|r| r.ok),
        "every pool workspace was deleted cleanly"
    );
    assert!(
        settle(&sim).await.is_empty(),
        "nothing left in the simulator"
    );

    let text = pool.metrics.encode(false);
    for (name, s) in pool.stats.snapshot() {
        assert_eq!(s.sessions_opened, 40, "{name}: 20 workspaces × 2 sessions");
        assert!(s.errors.is_empty(), "{name}: {:?}", s.errors);
        assert!(
            s.ticks >= 40 * 30,
            "{name}: {} ticks, 30 a session at least",
            s.ticks
        );
        assert_eq!(
            s.bytes_sent, s.bytes_echoed,
            "{name}: every byte sent came back"
        );
        assert_eq!(
            s.bytes_sent,
            s.ticks * 257,
            "{name}: 256 bytes and a newline per tick"
        );
        // 80 sessions and their `cat`s on two cores add load of their own: the injected
        // latency must show; the 5 ms bound is checked on a light pool below.
        let p50 = s.percentile(0.5).unwrap();
        assert!(p50 >= 0.020, "{name}: p50 {p50:.4}s, 20 ms injected");
        let count = sample(
            &text,
            &format!(
                "scaletest_traffic_latency_seconds_count{{scenario=\"test\",transport=\"{name}\"}}"
            ),
        );
        assert_eq!(
            count, s.ticks as f64,
            "{name}: histogram count equals ticks completed"
        );
        let sent = sample(
            &text,
            &format!(
                "scaletest_traffic_bytes_total{{scenario=\"test\",transport=\"{name}\",direction=\"sent\"}}"
            ),
        );
        let received = sample(
            &text,
            &format!(
                "scaletest_traffic_bytes_total{{scenario=\"test\",transport=\"{name}\",direction=\"received\"}}"
            ),
        );
        assert_eq!(sent, received, "{name}");
        assert_eq!(sent, s.bytes_sent as f64);
        println!(
            "{name}: {} ticks, p50 {:.2} ms, p99 {:.2} ms, late {}",
            s.ticks,
            p50 * 1e3,
            s.percentile(0.99).unwrap() * 1e3,
            s.late_ticks
        );
    }
    assert_eq!(
        sample(
            &text,
            "scaletest_traffic_sessions{scenario=\"test\",transport=\"pty\"}"
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_and_disconnects_are_counted_by_reason_and_recover() {
    let _turn = exclusive();
    let mut sc = fast_sim();
    sc.sessions.disconnect_rate = 0.3;
    sc.sessions.stall_rate = 0.15;
    sc.sessions.stall_for = scaletestd::config::HumanDuration(Duration::from_secs(7));
    let sim = start(sc).await;
    let cfg = traffic_config(&sim, 5);
    let mut pool = start_pool(&cfg).await;
    // Until both kinds of fault were seen and sessions were reopened after them (bounded).
    eventually(Duration::from_secs(60), || {
        let snap = pool.stats.snapshot();
        let errors = |r: Reason| {
            snap.values()
                .map(|s| s.errors.get(&r).copied().unwrap_or(0))
                .sum::<u64>()
        };
        let reopened = snap.values().map(|s| s.sessions_opened).sum::<u64>() > 20;
        errors(Reason::ConnectError) > 0 && errors(Reason::Timeout) > 0 && reopened
    })
    .await;
    // Traffic goes on after the faults.
    let ticks = || pool.stats.snapshot().values().map(|s| s.ticks).sum::<u64>();
    let ticks_before = ticks();
    eventually(Duration::from_secs(20), || ticks() > ticks_before).await;
    let injected = &sim.app.state.injected;
    let disconnects = injected
        .disconnects
        .load(std::sync::atomic::Ordering::Relaxed);
    let stalls = injected.stalls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(disconnects > 0 && stalls > 0);
    let text = pool.metrics.encode(false);
    let errs = |transport: &str, reason: &str| {
        sample(
            &text,
            &format!(
                "scaletest_traffic_errors_total{{scenario=\"test\",transport=\"{transport}\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert!(errs("pty", "connect_error") + errs("ssh", "connect_error") > 0.0);
    assert!(errs("pty", "timeout") + errs("ssh", "timeout") > 0.0);
    pool.finish(&sim).await;
}

/// p50 echo latency per transport of a light pool (4 workspaces, 8 sessions) with `injected`.
async fn light_pool_p50(injected: u64) -> std::collections::BTreeMap<&'static str, f64> {
    let mut sc = fast_sim();
    sc.sessions.latency = ms(injected);
    let sim = start(sc).await;
    let cfg = traffic_config_with(&sim, 4, 1);
    let mut pool = start_pool(&cfg).await;
    wait_open(&pool.stats, 8, 30).await;
    // Each transport's 4 sessions, 30 ticks each.
    wait_ticks(&pool.stats, 4 * 30).await;
    pool.finish(&sim).await;
    pool.stats
        .snapshot()
        .into_iter()
        .map(|(t, s)| (t, s.percentile(0.5).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_latency_shows_within_5ms_at_p50() {
    // These tests measure latency: one at a time, with no heavy test beside them.
    let _turn = exclusive();
    // The machine's own round trip, then the same with 20 ms injected: the difference is
    // what the histogram attributes to the injection.
    let base = light_pool_p50(0).await;
    let with = light_pool_p50(20).await;
    for (t, p50) in &with {
        let added = p50 - base[t];
        println!(
            "{t}: p50 {:.2} ms with 20 ms injected, {:.2} ms without: {:.2} ms added",
            p50 * 1e3,
            base[t] * 1e3,
            added * 1e3
        );
        assert!(
            (added - 0.020).abs() < 0.005,
            "{t}: {:.2} ms added for 20 ms injected",
            added * 1e3
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_whose_agent_disconnects_is_replaced() {
    let _turn = exclusive();
    let sim = start(fast_sim()).await;
    let cfg = traffic_config_with(&sim, 2, 1);
    let mut pool = start_pool(&cfg).await;
    wait_open(&pool.stats, 4, 30).await;
    let victim = sim.live_workspaces()[0].clone();
    assert!(sim.app.state.disconnect_agents(&victim));
    // Sessions fail, cannot reopen, the workspace is deleted and a new one takes its place.
    eventually(Duration::from_secs(60), || {
        let live = sim.live_workspaces();
        let replaced = pool
            .stats
            .replaced
            .load(std::sync::atomic::Ordering::Relaxed);
        replaced == 1 && !live.contains(&victim) && live.len() == 2 && open_now(&pool.stats) == 4
    })
    .await;
    let snap = pool.stats.snapshot();
    assert!(
        snap.values()
            .any(|s| s.errors.contains_key(&Reason::ConnectError)),
        "{snap:?}"
    );
    // Traffic flows on the replacement.
    let ticks: u64 = snap.values().map(|s| s.ticks).sum();
    eventually(Duration::from_secs(20), || {
        pool.stats.snapshot().values().map(|s| s.ticks).sum::<u64>() > ticks
    })
    .await;
    pool.finish(&sim).await;
}
