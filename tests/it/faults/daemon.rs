//! Faults, bounded in count and time, loopback only: 5xx and 429 storms (without and with a
//! `Retry-After`), and the daemon SIGKILLed at random points ten times in a row.

use std::time::{Duration, Instant};

use crate::common::daemon::{spawn, tmpdir, write_config};
use crate::common::*;
use rand::Rng;
use scaletestd::phases::Reason;
use scaletestd::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_storm_is_retried_a_bounded_number_of_times() {
    let mut sc = fast_sim();
    sc.failures.http_5xx = 1.0;
    let sim = start(sc).await;
    let cfg = config(&sim, 5, 5, "");
    let r = run(&cfg).await;
    let e = r.setup_error.expect("nothing answers");
    assert_eq!(e.reason, Reason::Http5xx, "{}", e.message);
    // GET is retried: one try and four retries, no more.
    assert_eq!(sim.request_count("GET /api/v2/users/{user}"), 5);
    assert!(sim.live_workspaces().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermittent_5xx_fail_only_unretried_calls_and_nothing_is_left() {
    let mut sc = fast_sim();
    sc.failures.http_5xx = 0.2;
    let sim = start(sc).await;
    let cfg = config(&sim, 30, 15, "");
    let r = run(&cfg).await;
    if let Some(e) = &r.setup_error {
        // Four retries of a setup read all failing at 20% each is 1 in 3000.
        panic!("setup failed: {}", e.message);
    }
    let by = r.failures_by_phase();
    assert!(
        by.keys().all(|(_, reason)| *reason == Reason::Http5xx),
        "only 5xx failures: {by:?}"
    );
    // Creates are POSTs: never retried, so about one in five fails.
    let creates = sim.request_count("POST /api/v2/users/{user}/workspaces");
    assert_eq!(creates, 30, "a create is never retried");
    // Every created workspace got deleted despite the storm (the delete's reads are retried).
    assert!(settle(&sim).await.is_empty(), "{:?}", sim.live_workspaces());
    println!("{}", report::summary_line(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_honours_a_proxys_retry_after() {
    let mut sc = fast_sim();
    sc.rate_limit = 3;
    sc.retry_after = Some(1);
    let sim = start(sc).await;
    let cfg = config(&sim, 6, 6, r#"phases = ["create", "delete"]"#);
    let client = client(&cfg);
    let t = Instant::now();
    let r = run_with(&cfg, &client).await;
    let creates = sim.request_count("POST /api/v2/users/{user}/workspaces");
    // Each create: at most one try and four retries, each retry after the proxy's second.
    assert!(creates > 3 && creates <= 6 * 5, "{creates}");
    assert!(client.retries() > 0);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After was waited for"
    );
    let limited = r
        .workspaces
        .iter()
        .filter(|w| w.failure().is_some_and(|f| f.1 == Reason::RateLimited))
        .count();
    assert_eq!(r.succeeded() + limited, 6, "{}", report::summary_line(&r));
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ten_times_at_random_points_then_the_start_up_sweep_leaves_nothing() {
    let mut sc = fast_sim();
    sc.latency.apply = ms(600);
    sc.latency.destroy = ms(300);
    let sim = start(sc).await;
    let dir = tmpdir("crashes");
    let cfg = dir.join("run.toml");
    let scenario = |schedule: &str| {
        [ScenarioText::new("k", 8)
            .prefix("stcrash")
            .schedule(schedule)
            .command("echo hi", "hi")]
    };
    write_config(&cfg, sim.url().as_str(), &scenario("* * * * * *"));
    let mut most = 0;
    let creates = || sim.request_count("POST /api/v2/users/{user}/workspaces");
    for _ in 0..10 {
        let before = creates();
        let mut d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
        // A random point of a run, not of the process start: on a loaded machine a debug
        // build may take seconds to reach its first create.
        eventually(Duration::from_secs(20), || creates() > before).await;
        let wait = rand::rng().random_range(0..2000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        most = most.max(sim.live_workspaces().len());
        d.signal("KILL");
        d.wait_exit(Duration::from_secs(5));
    }
    assert!(most > 0, "the killed daemons had workspaces in flight");
    write_config(&cfg, sim.url().as_str(), &scenario("0 0 0 1 1 *"));
    let _d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    eventually(Duration::from_secs(60), || sim.live_workspaces().is_empty()).await;
    println!(
        "10 SIGKILLs, up to {most} workspaces in flight at a kill, 0 left after the start-up sweep"
    );
}
