//! A Coder behind a front that does not behave like Coder (issue 24): bare 429s without
//! `Retry-After`, event streams closed on the front's own terms, deleted workspaces' streams
//! refused with 404, and streams that stay open saying nothing. A run's progress must never
//! depend on one stream or one answer; `scaletestd once` stops within `shutdown_grace`.
//! Loopback only, every wait bounded.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::daemon::tmpdir;
use crate::common::*;
use scaletestd::config::HumanDuration;
use scaletestd::phases::Phase;
use scaletestd::report;
use scaletestd::sim::config::{Front, WatchEndpoints};

const PHASES: &str = r#"phases = ["create", "build", "agent", "pty", "delete"]"#;

/// 20 workspaces at concurrency 10 (two waves) behind the front, over each way a Coder
/// serves its events and creates: all 20 succeed, the run keeps the transport it started
/// with (a deleted workspace's 404 is not a missing route), and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waves_behind_a_shedding_front_all_succeed() {
    let cases = [
        (WatchEndpoints::Both, false, "watch-ws"),
        (WatchEndpoints::Sse, false, "sse"),
        (WatchEndpoints::Both, true, "watch-ws"),
        (WatchEndpoints::None, false, "poll"),
    ];
    for (endpoints, legacy, want) in cases {
        let mut sc = fast_sim();
        sc.watch_endpoints = endpoints;
        sc.legacy_create_only = legacy;
        sc.front = Front {
            throttle: 0.05,
            stream_lifetime: Some(HumanDuration(Duration::from_millis(150))),
            deleted_streams_404: true,
            ..Default::default()
        };
        let sim = start(sc).await;
        let cfg = config(&sim, 20, 10, PHASES);
        let client = client(&cfg);
        let r = tokio::time::timeout(Duration::from_secs(120), run_with(&cfg, &client))
            .await
            .expect("the run ends");
        let line = report::summary_line(&r);
        assert_eq!(r.succeeded(), 20, "{endpoints:?} legacy={legacy}: {line}");
        assert_eq!(
            r.watch_transport,
            Some(want),
            "{endpoints:?} legacy={legacy}"
        );
        assert!(settle(&sim).await.is_empty(), "{:?}", sim.live_workspaces());
        let shed = sim.throttled();
        assert!(
            shed > 0,
            "the front refused nothing: the test tested nothing"
        );
        println!(
            "behind the front, {endpoints:?} legacy create={legacy}: {line}; {shed} requests refused with a bare 429, {} client retries",
            client.retries()
        );
    }
}

/// A deleted workspace's stream refused with 404 "Resource not found" says nothing about
/// the server's routes: the follower reports the workspace gone and the run keeps watch-ws.
/// Only chi's "Route not found." moves the run to the next transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_workspaces_404_does_not_change_the_transport() {
    use scaletestd::coder::watch::Updates;
    use scaletestd::coder::{Dialect, WatchTransport};
    use std::sync::Arc;

    let mut sc = fast_sim();
    sc.front.deleted_streams_404 = true;
    let sim = start(sc).await;
    let cfg = config(&sim, 1, 1, "");
    let c = client(&cfg);
    let ws = create_workspace(&c, "front-deleted").await;
    scaletestd::phases::delete::run(&c, ws.id, None)
        .await
        .expect("deleted");
    let dialect = Arc::new(Dialect::default());
    let mut follow = Updates::new(&c, ws.id, dialect.clone());
    let err = follow
        .next(Duration::from_millis(100))
        .await
        .expect_err("a deleted workspace's stream is refused");
    // The stream's 404 says no more than "not found": the GET that settles it says 410.
    assert_eq!(err.status(), Some(410), "{err}");
    assert!(err.is_gone(), "{err}");
    assert_eq!(dialect.watch(), WatchTransport::WatchWs);
    assert_eq!(dialect.chosen_watch(), None);

    // A server without the route: the run falls back, for good.
    let mut sc = fast_sim();
    sc.watch_endpoints = WatchEndpoints::Sse;
    let sim = start(sc).await;
    let cfg = config(&sim, 1, 1, "");
    let c = client(&cfg);
    let ws = create_workspace(&c, "front-sse").await;
    let dialect = Arc::new(Dialect::default());
    let mut follow = Updates::new(&c, ws.id, dialect.clone());
    follow
        .next(Duration::from_millis(100))
        .await
        .expect("a state");
    assert_eq!(dialect.chosen_watch(), Some(WatchTransport::Sse));
    scaletestd::phases::delete::run(&c, ws.id, Some(&mut follow))
        .await
        .expect("deleted");
    assert!(settle(&sim).await.is_empty());
}

/// A server without `watch-ws` whose refusal's body comes after its headers (a proxy that
/// flushes the status line first): the handshake reads no "Route not found.", so the body
/// cannot decide. A GET that finds the workspace alive does: every workspace moves to SSE,
/// none fails (before: 3 of 20 failed in `build` with "websocket upgrade refused with 404").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_watch_ws_whose_404_body_comes_late_still_moves_the_run_to_sse() {
    let mut sc = fast_sim();
    sc.watch_endpoints = WatchEndpoints::Sse;
    sc.front.split_refusals = Some(HumanDuration(Duration::from_millis(80)));
    let sim = start(sc).await;

    // The refusal as a client meets it: headers at once, the body 80 ms later.
    let c = client(&config(&sim, 1, 1, ""));
    let ws = create_workspace(&c, "split-probe").await;
    let mut stream = tokio::net::TcpStream::connect(sim.url().socket_addrs(|| None).unwrap()[0])
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!(
                "GET /api/v2/workspaces/{}/watch-ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCoder-Session-Token: {TOKEN}\r\n\r\n",
                ws.id
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = stream.read(&mut first).await.unwrap();
    let head = String::from_utf8_lossy(&first[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(
        !head.contains("Route not found."),
        "the first read has no body: {head}"
    );
    let mut rest = vec![0u8; 4096];
    let n = stream.read(&mut rest).await.unwrap();
    assert!(
        String::from_utf8_lossy(&rest[..n]).contains("Route not found."),
        "the body comes in a later read"
    );
    drop(stream);
    scaletestd::phases::delete::run(&c, ws.id, None)
        .await
        .expect("deleted");

    let cfg = config(&sim, 20, 10, PHASES);
    let client = client(&cfg);
    let r = tokio::time::timeout(Duration::from_secs(120), run_with(&cfg, &client))
        .await
        .expect("the run ends");
    assert_eq!(
        report::summary_line(&r),
        "20 workspaces: 20 succeeded, 0 failed"
    );
    assert!(
        sim.request_count("GET /api/v2/workspaces/{workspace}/watch") >= 20,
        "every workspace followed over SSE"
    );
    assert!(settle(&sim).await.is_empty());
}

/// The hang of issue 24: coderd's pubsub drops events under load and `watchWorkspace` skips
/// them, so a stream stays open and pinging without the state a wait needs. A `delete`
/// waiting for its build's end then held its `concurrency` slot until the phase's timeout
/// (15 min by default; SIGTERM does not cancel deletes), and the next wave never started.
/// Every wait is backed by a GET after `SAFETY_POLL` now: two waves, 20/20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waves_finish_when_coderd_drops_events() {
    let mut sc = fast_sim();
    sc.watch_endpoints = WatchEndpoints::WatchWs;
    sc.failures.watch_dropped = 0.3;
    let sim = start(sc).await;
    let mut cfg = config(&sim, 20, 10, PHASES);
    let t = &mut cfg.scenarios[0].timeouts;
    for phase in [Phase::Build, Phase::Agent, Phase::Delete] {
        t.set(phase, Duration::from_secs(90));
    }
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(240), run(&cfg))
        .await
        .expect("the run ends");
    let line = report::summary_line(&r);
    assert_eq!(r.succeeded(), 20, "{line}");
    assert!(settle(&sim).await.is_empty(), "{:?}", sim.live_workspaces());
    let dropped = sim.dropped_events();
    assert!(dropped > 0, "nothing was dropped: the test tested nothing");
    println!(
        "coderd dropping events: {line} in {:.1?}; {dropped} states left out of streams",
        started.elapsed()
    );
}

/// Streams that stay open and only ping (an event bus that lost its publishes): every wait
/// is backed by a GET after `SAFETY_POLL`, so the walk ends well inside its timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_only_pings_does_not_hold_a_walk() {
    let mut sc = fast_sim();
    sc.watch_endpoints = WatchEndpoints::WatchWs;
    sc.failures.watch_silent = 1.0;
    let sim = start(sc).await;
    let mut cfg = config(&sim, 4, 4, r#"phases = ["create", "build", "delete"]"#);
    let t = &mut cfg.scenarios[0].timeouts;
    t.set(Phase::Build, Duration::from_secs(60));
    let started = Instant::now();
    let r = run(&cfg).await;
    assert_eq!(r.succeeded(), 4, "{}", report::summary_line(&r));
    for w in &r.workspaces {
        let build = w.phases.iter().find(|p| p.phase == Phase::Build).unwrap();
        // It waited for the safety poll, not for its timeout.
        assert!(
            build.duration >= scaletestd::coder::watch::SAFETY_POLL,
            "{}: {:?}",
            w.name,
            build.duration
        );
        assert!(
            build.duration < Duration::from_secs(40),
            "{}: {:?}",
            w.name,
            build.duration
        );
    }
    assert!(settle(&sim).await.is_empty());
    println!(
        "silent streams: {} in {:.1?}",
        report::summary_line(&r),
        started.elapsed()
    );
}

/// `scaletestd once` as a child process, its stderr collected.
fn once(cfg: &std::path::Path) -> std::process::Child {
    Bin::new(&["once", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits (bounded by `within`) for `child` to exit: its exit code and how long it took.
fn exit_within(child: &mut std::process::Child, within: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "still running {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One SIGTERM while every build is stuck: the phases are canceled, what was created is
/// deleted, and the process exits well inside `shutdown_grace`. When deletes cannot finish,
/// it exits at `shutdown_grace` (plus a few seconds), not when a second signal comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stuck_wait_exits_within_shutdown_grace() {
    for (destroy_ms, grace) in [(30, 20u64), (60_000, 3)] {
        let mut sc = fast_sim();
        sc.failures.build_stuck = 1.0;
        sc.latency.destroy = ms(destroy_ms);
        let sim = start(sc).await;
        let dir = tmpdir("front-sigterm");
        let cfg = ConfigText::new(sim.url())
            .server(&format!("shutdown_grace = \"{grace}s\""))
            .scenario(
                ScenarioText::new("stuck", 6)
                    .key(r#"phases = ["create", "build", "delete"]"#)
                    .timeout("build", "10m")
                    .timeout("delete", "10m"),
            )
            .write(&dir, "run.toml");
        let mut child = once(&cfg);
        eventually(Duration::from_secs(20), || sim.live_workspaces().len() == 6).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sigterm(&child);
        let (code, took) =
            tokio::task::block_in_place(|| exit_within(&mut child, Duration::from_secs(grace + 5)));
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stdout.contains("6 workspaces"), "{stdout}");
        if destroy_ms < 1000 {
            // Deletes finished: nothing left, and well before the grace ran out.
            assert!(settle(&sim).await.is_empty(), "{:?}", sim.live_workspaces());
            assert!(took < Duration::from_secs(grace), "{took:?}");
        } else {
            assert!(took >= Duration::from_secs(grace), "{took:?}");
        }
        println!(
            "SIGTERM with destroy {destroy_ms} ms, grace {grace}s: exit {code:?} after {took:.1?}; {}",
            stdout.lines().next().unwrap_or_default()
        );
    }
}
