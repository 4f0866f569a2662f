//! Traffic soak: a pool of 2 workspaces × 2 web-terminal sessions echoing 16 bytes every 2 ms,
//! as a new user would try it, with the daemon's RSS, open fds and live tasks sampled as the
//! echoed ticks add up. After warm-up (the first fifth) none may grow beyond a small bound.
//!
//! 60,000 echoed ticks here; `SCALETESTD_FULL=1` (or `SCALETESTD_TRAFFIC_TICKS=N`) for
//! 500,000.

use std::time::Duration;

use crate::common::daemon::{spawn, tmpdir, write_config};
use crate::common::*;

#[derive(Debug, Clone, Copy)]
struct Sample {
    ticks: f64,
    rss: f64,
    fds: f64,
    tasks: f64,
}

fn ticks_wanted() -> f64 {
    if let Some(n) = std::env::var("SCALETESTD_TRAFFIC_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("SCALETESTD_FULL").is_ok_and(|v| v == "1") {
        500_000.0
    } else {
        60_000.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_traffic_pool_holds_memory_flat() {
    let _turn = exclusive();
    let wanted = ticks_wanted();
    let warm_up = wanted / 5.0;
    let sim = start(fast_sim()).await;
    let dir = tmpdir("soak-traffic");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[ScenarioText::new("tsoak", 2)
            .key("kind = \"traffic\"")
            .prefix("sttsoak")
            .phases(&["create", "build", "agent", "delete"])
            .table(
                "traffic",
                "sessions_per_workspace = 2\ntransports = [\"pty\"]\nbytes_per_tick = 16\ntick_interval = \"2ms\"",
            )],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let echoed = |s: &crate::common::daemon::Scrape| {
        s.sum(
            "scaletest_traffic_latency_seconds",
            &[("scenario", "tsoak")],
        )
    };
    let deadline = Duration::from_secs((wanted / 300.0) as u64 + 60);
    let started = std::time::Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    loop {
        let s = d.scrape().await;
        let ticks = echoed(&s);
        samples.push(Sample {
            ticks,
            rss: s.sum("process_resident_memory_bytes", &[]),
            fds: s.sum("process_open_fds", &[]),
            tasks: s.sum("scaletest_runtime_tasks", &[]),
        });
        if ticks >= wanted {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "{ticks} echoed ticks in {deadline:?}; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let base = *samples
        .iter()
        .find(|s| s.ticks >= warm_up)
        .expect("samples after warm-up");
    let after: Vec<&Sample> = samples.iter().filter(|s| s.ticks >= base.ticks).collect();
    let max = |f: fn(&Sample) -> f64| after.iter().map(|s| f(s)).fold(f64::MIN, f64::max);
    let min = |f: fn(&Sample) -> f64| after.iter().map(|s| f(s)).fold(f64::MAX, f64::min);
    let (rss_max, rss_min) = (max(|s| s.rss), min(|s| s.rss));
    let last = samples.last().unwrap();
    let errors = d
        .scrape()
        .await
        .sum("scaletest_traffic_errors", &[("scenario", "tsoak")]);
    println!(
        "traffic soak: {:.0} echoed ticks in {elapsed:.0} s ({:.0} a second), {errors} errors; RSS {:.2} MiB at {:.0} ticks, {:.2}..{:.2} MiB after, {:.2} MiB at the end; fds {} → max {}; tasks {} → max {}",
        last.ticks,
        last.ticks / elapsed,
        base.rss / 1048576.0,
        base.ticks,
        rss_min / 1048576.0,
        rss_max / 1048576.0,
        last.rss / 1048576.0,
        base.fds,
        max(|s| s.fds),
        base.tasks,
        max(|s| s.tasks),
    );
    assert!(
        rss_max - base.rss < 1048576.0,
        "RSS grew {:.2} MiB after warm-up: {samples:?}",
        (rss_max - base.rss) / 1048576.0
    );
    assert!(max(|s| s.fds) - base.fds <= 2.0, "fds grew: {samples:?}");
    assert!(
        max(|s| s.tasks) - base.tasks <= 4.0,
        "tasks grew: {samples:?}"
    );
}
