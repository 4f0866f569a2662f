//! Soak: scheduled runs back to back against the simulator, with the daemon's RSS, open fds
//! and live tasks sampled between runs. After warm-up none may grow beyond a small bound.
//!
//! 40 runs here; `SCALETESTD_FULL=1` (or `SCALETESTD_SOAK_RUNS=N`) for the full 300.

use std::time::{Duration, Instant};

use crate::common::daemon::{spawn, tmpdir, write_config};
use crate::common::*;

/// One sample, taken when no workspace is in flight.
#[derive(Debug, Clone, Copy)]
struct Sample {
    runs: f64,
    rss: f64,
    fds: f64,
    tasks: f64,
}

fn runs_wanted() -> usize {
    if let Some(n) = std::env::var("SCALETESTD_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("SCALETESTD_FULL").is_ok_and(|v| v == "1") {
        300
    } else {
        40
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_back_to_back_do_not_grow() {
    let _turn = exclusive();
    let runs = runs_wanted();
    let warm_up = (runs / 5).max(10);
    let sim = start(fast_sim()).await;
    let dir = tmpdir("soak");
    let cfg = dir.join("run.toml");
    let ssh = sim.ssh_addr();
    write_config(
        &cfg,
        sim.url().as_str(),
        &[ScenarioText::new("soak", 4)
            .prefix("stsoak")
            .schedule("* * * * * *")
            .phases(&["create", "build", "agent", "ssh", "pty", "delete"])
            .command("echo soak", "soak")
            .table(
                "ssh",
                &format!("transport = \"tcp\"\naddress = \"{ssh}\"\nuser = \"{{workspace}}\""),
            )],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let deadline = Duration::from_secs(runs as u64 * 3 + 60);
    let t = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_runs = 0.0;
    while samples.last().is_none_or(|s| s.runs < runs as f64) {
        assert!(
            t.elapsed() < deadline,
            "{} runs in {deadline:?}; log:\n{}",
            last_runs,
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = d.scrape().await;
        let done = s.sum("scaletest_runs", &[]);
        if done > last_runs && s.sum("scaletest_workspaces_in_flight", &[]) == 0.0 {
            last_runs = done;
            samples.push(Sample {
                runs: done,
                rss: s.sum("process_resident_memory_bytes", &[]),
                fds: s.sum("process_open_fds", &[]),
                tasks: s.sum("scaletest_runtime_tasks", &[]),
            });
        }
    }
    let s = d.scrape().await;
    let ok = s.sum("scaletest_runs", &[("result", "success")]);
    let all = s.sum("scaletest_runs", &[]);
    assert_eq!(ok, all, "every run succeeded:\n{}", d.log());

    let base = *samples
        .iter()
        .find(|s| s.runs >= warm_up as f64)
        .expect("samples after warm-up");
    let after: Vec<&Sample> = samples.iter().filter(|s| s.runs >= base.runs).collect();
    let max = |f: fn(&Sample) -> f64| after.iter().map(|s| f(s)).fold(f64::MIN, f64::max);
    let (rss_max, fds_max, tasks_max) = (max(|s| s.rss), max(|s| s.fds), max(|s| s.tasks));
    let last = samples.last().unwrap();
    println!(
        "soak: {all} runs ({} workspaces), warm-up {} runs; RSS {:.1} MiB after warm-up, {:.1} MiB max, {:.1} MiB at the end; fds {} → max {}; tasks {} → max {}",
        all * 4.0,
        base.runs,
        base.rss / 1048576.0,
        rss_max / 1048576.0,
        last.rss / 1048576.0,
        base.fds,
        fds_max,
        base.tasks,
        tasks_max,
    );
    assert!(
        rss_max - base.rss < 8.0 * 1048576.0,
        "RSS grew by {:.1} MiB: {samples:?}",
        (rss_max - base.rss) / 1048576.0
    );
    assert!(fds_max - base.fds <= 4.0, "fds grew: {samples:?}");
    assert!(tasks_max - base.tasks <= 4.0, "tasks grew: {samples:?}");
    assert!(settle(&sim).await.is_empty());
}
