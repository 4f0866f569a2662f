//! A misbehaving Coder, bounded in count and time, loopback only: Coder gone mid-run and
//! back on the same port, streams and builds and terminals that stall, and answers that are
//! malformed. Each must end in the right failure reason with nothing left behind.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::daemon::{spawn, tmpdir};
use common::*;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coder_down_mid_run_then_back_on_the_same_port() {
    let mut sc = fast_sim();
    sc.latency.apply = ms(1500);
    let mut sim = start(sc).await;
    let dir = tmpdir("coder-down");
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[coder]
url = "{url}"
max_retries = 1
request_timeout = "2s"

[server]
listen = "127.0.0.1:0"

[[scenario]]
name = "d"
workspace_prefix = "stdown"
schedule = "* * * * * *"
template = "docker"
count = 6
run_command = "echo hi"
expect_output = "hi"

[scenario.timeouts]
build = "20s"
delete = "3s"
"#,
            url = sim.url()
        ),
    )
    .unwrap();
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);

    // A run in flight, its builds running.
    let t = Instant::now();
    while sim.live_workspaces().len() < 6 {
        assert!(t.elapsed() < Duration::from_secs(20), "no run started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let interrupted = sim.live_workspaces();
    sim.crash().await;

    // Coder is gone: the daemon says so, keeps serving /metrics, and the in-flight
    // workspaces fail to reach it.
    let s = d
        .wait_for(Duration::from_secs(30), |s| {
            s.sum("scaletest_coder_up", &[]) == 0.0
                && s.sum("scaletest_runs", &[("result", "failure")]) >= 1.0
        })
        .await;
    let connect = s.sum(
        "scaletest_phase_failures",
        &[("phase", "build"), ("reason", "connect_error")],
    );
    assert_eq!(connect, 6.0, "{}", s.text);
    assert_eq!(s.sum("scaletest_runs", &[("result", "success")]), 0.0);

    // Back on the same port with the same world: the next run succeeds and a sweep
    // deletes what the interrupted run left.
    sim.restart().await.expect("the simulator comes back");
    let s = d
        .wait_for(Duration::from_secs(40), |s| {
            s.sum("scaletest_coder_up", &[]) == 1.0
                && s.sum("scaletest_runs", &[("result", "success")]) >= 1.0
        })
        .await;
    let t = Instant::now();
    loop {
        let live = sim.live_workspaces();
        let left: Vec<_> = interrupted.iter().filter(|n| live.contains(n)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "left behind: {left:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let swept = d.scrape().await.sum("scaletest_cleanup_deleted", &[]);
    println!(
        "coder down: 6 in flight failed connect_error, runs {} failed then succeeded, {swept} swept, 0 of the interrupted run left",
        s.sum("scaletest_runs", &[("result", "failure")]),
    );
}

/// Reason of each workspace's failed phase, and what the simulator says it did to it.
fn outcomes(r: &scaletestd::runner::RunReport) -> BTreeMap<String, (Phase, Reason)> {
    r.workspaces
        .iter()
        .filter_map(|w| w.failure().map(|(p, reason, _)| (w.name.clone(), (p, reason))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_end_at_their_phase_timeout_and_delete_still_runs() {
    let mut sc = fast_sim();
    sc.ping_interval = scaletestd::config::HumanDuration(Duration::from_millis(200));
    sc.failures.watch_silent = 0.2;
    sc.failures.build_stuck = 0.2;
    sc.failures.pty_silent = 0.2;
    let sim = start(sc).await;
    let mut cfg = config(&sim, 40, 40, "");
    let t = &mut cfg.scenarios[0].timeouts;
    t.build = Duration::from_secs(3);
    t.pty = Duration::from_secs(2);
    let r = run(&cfg).await;
    assert!(r.setup_error.is_none());
    let got = outcomes(&r);
    let mut kinds = BTreeMap::new();
    for l in sim.ledger() {
        let want = match l.stalled {
            Some("watch" | "build") => Some((Phase::Build, Reason::Timeout)),
            Some("pty") => Some((Phase::Pty, Reason::Timeout)),
            _ => None,
        };
        assert_eq!(got.get(&l.name).copied(), want, "{}: {:?}", l.name, l.stalled);
        if let Some((phase, _)) = want {
            // It ended at its phase's timeout, not before.
            let w = r.workspaces.iter().find(|w| w.name == l.name).unwrap();
            let rec = w.phases.iter().find(|p| p.phase == phase).unwrap();
            let limit = cfg.scenarios[0].timeouts.of(phase);
            assert!(rec.duration >= limit, "{}: {:?}", l.name, rec.duration);
        }
        if let Some(k) = l.stalled {
            *kinds.entry(k).or_insert(0) += 1;
        }
    }
    assert_eq!(kinds.len(), 3, "every stall kind was tried: {kinds:?}");
    // Delete ran and succeeded for every workspace, stalled or not.
    for w in &r.workspaces {
        let del = w.phases.iter().find(|p| p.phase == Phase::Delete);
        assert!(del.is_some_and(|p| p.ok), "{}: {:?}", w.name, w.phases);
    }
    assert!(settle(&sim).await.is_empty(), "{:?}", sim.live_workspaces());
    println!("stalls {kinds:?}: {}", report::summary_line(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_watch_events_are_protocol_errors_and_delete_still_runs() {
    let mut sc = fast_sim();
    sc.failures.malformed = 1.0;
    let sim = start(sc).await;
    let cfg = config(&sim, 40, 40, r#"phases = ["create", "build", "delete"]"#);
    let r = run(&cfg).await;
    let got = outcomes(&r);
    let mut kinds = BTreeMap::new();
    for l in sim.ledger() {
        let kind = l.malformed.expect("every first stream was malformed");
        *kinds.entry(kind).or_insert(0) += 1;
        assert_eq!(
            got.get(&l.name).copied(),
            Some((Phase::Build, Reason::ProtocolError)),
            "{}: {kind}",
            l.name
        );
    }
    assert_eq!(kinds.len(), 4, "every malformation was tried: {kinds:?}");
    for w in &r.workspaces {
        let del = w.phases.iter().find(|p| p.phase == Phase::Delete);
        assert!(del.is_some_and(|p| p.ok), "{}: {:?}", w.name, w.phases);
    }
    assert!(settle(&sim).await.is_empty());
    println!("malformed {kinds:?}: {}", report::summary_line(&r));
}
