//! The status history is bounded by size: ten runs of 2,000 workspaces, half of them failing
//! with an error each, leave the daemon's live heap where four runs left it, and the
//! page lists at most 50 failed workspaces (the newest) with "and N more".

use std::time::Duration;

use crate::common::daemon::{spawn, tmpdir, write_config};
use crate::common::*;

/// The live heap (malloc's count of allocated bytes, exported as
/// `scaletest_heap_allocated_bytes`) may move this much from the fourth run (warmed up) to
/// the least of the eighth to tenth. The history holds about 20 KiB a run now; full reports
/// of 2,000 workspaces held about 1.5 MiB a run, which would put the eighth run 6 MiB above.
/// What moves besides: idle pooled connections to Coder (up to 400 here, a few MiB) until
/// they time out, and a sample catching the next run starting; hence the least of three.
/// Seen: 0.3 MiB (glibc, 10 runs); 0.7 to 2.6 MiB over 24-run trials with jemalloc.
const HEAP_BOUND_MIB: f64 = 5.0;

/// RSS also carries pages the allocator has not handed back yet and wanders by several MiB
/// from run to run on a shared machine (glibc's malloc: 9.8 MiB from run 4 to run 10 on CI),
/// so it is only a backstop against growth outside the heap (threads, mappings).
const RSS_BOUND_MIB: f64 = 24.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_runs_of_two_thousand_workspaces_hold_memory_flat() {
    let _turn = exclusive();
    let mut sc = fast_sim();
    sc.provisioners = 400;
    sc.rate_limit = 0;
    sc.latency.init = ms(1);
    sc.latency.plan = ms(1);
    sc.latency.graph = ms(1);
    sc.latency.apply = ms(5);
    sc.latency.destroy = ms(5);
    sc.failures.build = 0.5;
    let sim = start(sc).await;
    let dir = tmpdir("history");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[ScenarioText::new("big", 2000)
            .prefix("sthist")
            .schedule("* * * * * *")
            .key("concurrency = 400")
            .phases(&["create", "build", "delete"])],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let rss_after = |runs: f64| {
        let d = &d;
        async move {
            let s = d
                .wait_for(Duration::from_secs(300), |s| {
                    s.sum("scaletest_runs", &[("scenario", "big")]) >= runs
                        && s.sum("scaletest_workspaces_in_flight", &[]) == 0.0
                })
                .await;
            (
                s.sum("process_resident_memory_bytes", &[]) / 1048576.0,
                s.sum("scaletest_heap_allocated_bytes", &[]) / 1048576.0,
            )
        }
    };
    let mut each = Vec::new();
    for n in 1..=10 {
        each.push(rss_after(n as f64).await);
    }
    let heap: Vec<f64> = each.iter().map(|e| e.1).collect();
    let each: Vec<f64> = each.iter().map(|e| e.0).collect();
    let (base, last) = (each[3], each[9]);
    println!("RSS after runs 1..=10: {each:.1?}");
    println!("live heap after runs 1..=10: {heap:.2?}");
    let (_, page) = d.get("/", None).await;
    println!(
        "history: RSS {base:.1} MiB after 4 runs of 2,000 workspaces, {last:.1} MiB after 10; page {} KiB",
        page.len() / 1024
    );
    assert!(heap[0] > 1.0, "scaletest_heap_allocated_bytes is exported");
    let later = heap[7..10].iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        later - heap[3] < HEAP_BOUND_MIB,
        "live heap grew {:.2} MiB from run 4 to the least of runs 8 to 10",
        later - heap[3]
    );
    assert!(
        last - base < RSS_BOUND_MIB,
        "RSS grew {:.1} MiB from run 4 to run 10",
        last - base
    );
    // 10 runs listed, 50 failed workspaces at most (the newest), the rest counted.
    let rows = page.matches("<tr><td><code>").count();
    assert!(rows <= 10 + 50 + 10, "{rows} rows");
    assert!(page.contains(" more in older runs</td></tr>"), "and N more");
    assert!(page.len() < 2 << 20, "{} bytes", page.len());
}
