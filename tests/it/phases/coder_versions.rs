//! Speaking Coder as it is: deleted workspaces answer 410 Gone, and every caller that asks
//! "is it gone?" takes 404 and 410 alike.

use crate::common::*;
use scaletestd::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_workspaces_are_410_and_deletes_succeed_on_it() {
    let sim = start(fast_sim()).await;
    let cfg = config(&sim, 6, 6, "");
    let r = run(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "6 workspaces: 6 succeeded, 0 failed"
    );

    // What a real Coder answers for each of them now (coderd/workspaces.go, v2.36.1).
    let c = client(&cfg);
    for w in &r.workspaces {
        let id = w.id.expect("created");
        let err = c.workspace(id).await.expect_err("deleted");
        assert_eq!(err.status(), Some(410), "{err}");
        assert!(err.is_gone());
        assert!(
            err.to_string().contains(&format!(
                "Workspace \"{id}\" was deleted, you can view this workspace by specifying '?include_deleted=true' and trying again."
            )),
            "{err}"
        );
    }
    // Never existed: 404, gone too.
    let err = c
        .workspace(uuid::Uuid::new_v4())
        .await
        .expect_err("unknown");
    assert_eq!(err.status(), Some(404));
    assert!(err.is_gone());

    // `include_deleted=true` still shows it, with its succeeded delete build.
    let id = r.workspaces[0].id.unwrap();
    let text = reqwest::Client::new()
        .get(format!(
            "{}api/v2/workspaces/{id}?include_deleted=true",
            sim.url()
        ))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["latest_build"]["transition"], "delete");
    assert_eq!(body["latest_build"]["status"], "deleted");
    let bad = reqwest::Client::new()
        .get(format!(
            "{}api/v2/workspaces/{id}?include_deleted=maybe",
            sim.url()
        ))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // A second delete of a deleted workspace finds it gone and posts nothing.
    let posts = sim.request_count("POST /api/v2/workspaces/{workspace}/builds");
    scaletestd::phases::delete::run(&c, id, None)
        .await
        .expect("deleting a deleted workspace is done at once");
    assert_eq!(
        sim.request_count("POST /api/v2/workspaces/{workspace}/builds"),
        posts
    );
    assert!(settle(&sim).await.is_empty());
}

/// A `coder` on PATH that is the simulator's stand-in, so the default proxy command
/// (`coder ssh --stdio {workspace}`) runs as written.
fn coder_on_path(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("coder");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec '{}' sim-coder \"$@\"\n", BIN),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `scaletestd once` on 8 workspaces, 2 at a time, through every phase, with the default
/// proxy command; its exit code, stdout and JSON report.
fn once_every_phase(sim: &scaletestd::sim::Sim, test: &str) -> (i32, String, serde_json::Value) {
    let dir = TempDir::new(test);
    let cfg = ConfigText::new(sim.url())
        .scenario(
            ScenarioText::new("all", 8)
                .key("concurrency = 2")
                .key("phases = [\"create\", \"build\", \"agent\", \"ssh\", \"pty\", \"delete\"]")
                .key("run_command = \"echo every-phase\"")
                .key("expect_output = \"every-phase\""),
        )
        .write(&dir, "every-phase.toml");
    let json = dir.join("report.json");
    let ran = Bin::new(&["once", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(format!("json:{}", json.display()))
        .env("PATH", coder_on_path(&dir))
        .run();
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (ran.code.unwrap_or(-1), ran.all(), report)
}

/// Requests the simulator saw whose `METHOD /path` satisfies `f` (routes it lacks are
/// counted under their concrete path).
fn requests(sim: &scaletestd::sim::Sim, f: impl Fn(&str) -> bool) -> u64 {
    sim.app
        .counts
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| f(k))
        .map(|(_, n)| n)
        .sum()
}

/// Every phase, the default proxy command, against a Coder with both streams, one without
/// watch-ws (older), one without the SSE watch (future) and one with neither: the run picks
/// the best transport there is, paying a 404 for each it lacks only in the first wave (at
/// most `concurrency` = 2 workspaces ask before the first 404 is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_over_each_watch_transport() {
    use scaletestd::sim::config::WatchEndpoints;
    for (endpoints, chosen) in [
        (WatchEndpoints::Both, "watch-ws"),
        (WatchEndpoints::Sse, "sse"),
        (WatchEndpoints::WatchWs, "watch-ws"),
        (WatchEndpoints::None, "poll"),
    ] {
        let mut sc = fast_sim();
        sc.watch_endpoints = endpoints;
        let sim = start(sc).await;
        let (code, out, report) =
            tokio::task::block_in_place(|| once_every_phase(&sim, "transports"));
        assert_eq!(code, 0, "{endpoints:?}: {out}");
        assert!(
            out.starts_with("8 workspaces: 8 succeeded, 0 failed"),
            "{endpoints:?}: {out}"
        );
        assert_eq!(report["watch_transport"], chosen, "{endpoints:?}");
        let ws_upgrades = requests(&sim, |r| r.starts_with("GET ") && r.ends_with("/watch-ws"));
        let sse = requests(&sim, |r| r.starts_with("GET ") && r.ends_with("/watch"));
        let (ws_range, sse_range) = match endpoints {
            WatchEndpoints::Both | WatchEndpoints::WatchWs => (8..=8, 0..=0),
            WatchEndpoints::Sse => (1..=2, 8..=8),
            WatchEndpoints::None => (1..=2, 1..=2),
        };
        assert!(
            ws_range.contains(&ws_upgrades) && sse_range.contains(&sse),
            "{endpoints:?}: {ws_upgrades} watch-ws and {sse} SSE requests; a missing one costs at most one 404 per workspace of the first wave"
        );
        if endpoints == WatchEndpoints::None {
            assert!(sim.request_count("GET /api/v2/workspaces/{workspace}") > 16);
        }
        for l in sim.ledger() {
            assert_eq!(l.pty_backend.as_deref(), Some("buffered"), "{}", l.name);
        }
        assert!(settle(&sim).await.is_empty(), "{endpoints:?}");
        sim.stop().await;
    }
}

/// A Coder older than mid-2024 has no `POST /users/{user}/workspaces`: a 404 in the first
/// wave, then every workspace through the organization-member route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_against_a_server_without_the_user_create_route() {
    let mut sc = fast_sim();
    sc.legacy_create_only = true;
    sc.watch_endpoints = scaletestd::sim::config::WatchEndpoints::Sse;
    let sim = start(sc).await;
    let (code, out, report) = tokio::task::block_in_place(|| once_every_phase(&sim, "legacy"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("8 workspaces: 8 succeeded, 0 failed"),
        "{out}"
    );
    assert_eq!(
        report["create_route"],
        "/api/v2/organizations/{organization}/members/{user}/workspaces"
    );
    let missing = sim.request_count("POST /api/v2/users/{user}/workspaces");
    assert!(
        (1..=2).contains(&missing),
        "{missing} 404s: at most one per workspace of the first wave"
    );
    assert_eq!(
        sim.request_count("POST /api/v2/organizations/{organization}/members/{user}/workspaces"),
        8
    );
    assert!(settle(&sim).await.is_empty());
}

/// A devcontainer sub-agent (`parent_id`) that never becomes ready does not hold up the
/// agent phase (Coder's workspace health leaves sub-agents out); named, it is waited for
/// alone, and the web terminal opens on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devcontainer_sub_agents_are_waited_for_only_when_named() {
    use scaletestd::phases::{Phase, Reason};
    use scaletestd::sim::config::SubAgent;

    let mut sc = fast_sim();
    sc.subagent = SubAgent::Stuck;
    let sim = start(sc).await;
    let r = run(&config(&sim, 6, 6, "")).await;
    assert_eq!(
        report::summary_line(&r),
        "6 workspaces: 6 succeeded, 0 failed"
    );
    for l in sim.ledger() {
        assert_eq!(l.pty_agent.as_deref(), Some("main"), "{}", l.name);
    }
    let mut cfg = config(&sim, 4, 4, "agent = \"devcontainer\"");
    cfg.scenarios[0]
        .timeouts
        .set(Phase::Agent, std::time::Duration::from_secs(1));
    let r = run(&cfg).await;
    for w in &r.workspaces {
        let (phase, reason, _) = w.failure().expect("the stuck sub-agent times out");
        assert_eq!(
            (phase, reason),
            (Phase::Agent, Reason::Timeout),
            "{}",
            w.name
        );
        assert!(w.record(Phase::Delete).is_some_and(|d| d.ok));
    }
    assert!(settle(&sim).await.is_empty());
    sim.stop().await;

    let mut sc = fast_sim();
    sc.subagent = SubAgent::Ready;
    let sim = start(sc).await;
    let r = run(&config(&sim, 4, 4, "agent = \"devcontainer\"")).await;
    assert_eq!(
        report::summary_line(&r),
        "4 workspaces: 4 succeeded, 0 failed"
    );
    for l in sim.ledger() {
        assert_eq!(l.pty_agent.as_deref(), Some("devcontainer"), "{}", l.name);
    }
    assert!(settle(&sim).await.is_empty());
}

/// A watch-ws stream is read on a thread of its own: a state that arrives while the
/// workspace's task is busy is stamped when it came off the socket, not when the task got
/// round to it, so a phase that ends on it is not late by the task's delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ws_states_are_stamped_on_arrival_not_when_read() {
    let mut sc = fast_sim();
    sc.latency.init = ms(100);
    sc.latency.plan = ms(100);
    let sim = start(sc).await;
    let cfg = config(&sim, 1, 1, "");
    let c = client(&cfg);
    let ws = create_workspace(&c, "ststamp").await;
    let dialect = std::sync::Arc::new(scaletestd::coder::Dialect::new(
        scaletestd::coder::WatchTransport::WatchWs,
    ));
    let mut updates = scaletestd::coder::watch::Updates::new(&c, ws.id, dialect.clone());
    let first = updates
        .next(std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(first.id, ws.id);
    assert_eq!(
        dialect.chosen_watch(),
        Some(scaletestd::coder::WatchTransport::WatchWs)
    );
    // Busy elsewhere while the build moves on (init and plan take 200 ms).
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let reading = std::time::Instant::now();
    let next = updates
        .next(std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let stamped = updates.latest_at.expect("a stamp");
    assert_ne!(next.updated_at, first.updated_at, "a later state");
    let early = reading.saturating_duration_since(stamped);
    assert!(
        early >= std::time::Duration::from_millis(300),
        "the state was stamped {early:?} before it was read; it arrived ~600 ms before"
    );
    println!("a queued state was stamped {early:?} before its task read it");
}
