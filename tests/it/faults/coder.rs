//! A misbehaving Coder, bounded in count and time, loopback only: Coder gone mid-run and
//! back on the same port, streams and builds and terminals that stall, and answers that are
//! malformed. Each must end in the right failure reason with nothing left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::daemon::{spawn, tmpdir};
use crate::common::*;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;
use scaletestd::sim::config::WatchEndpoints;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coder_down_mid_run_then_back_on_the_same_port() {
    let mut sc = fast_sim();
    sc.latency.apply = ms(1500);
    let mut sim = start(sc).await;
    let dir = tmpdir("coder-down");
    let cfg = ConfigText::new(sim.url())
        .coder("max_retries = 1")
        .coder("request_timeout = \"2s\"")
        .server("listen = \"127.0.0.1:0\"")
        .scenario(
            ScenarioText::new("d", 6)
                .key("workspace_prefix = \"stdown\"")
                .key("schedule = \"* * * * * *\"")
                .key("run_command = \"echo hi\"")
                .key("expect_output = \"hi\"")
                .timeout("build", "20s")
                .timeout("delete", "3s"),
        )
        .write(&dir, "run.toml");
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);

    // A run in flight, its builds running.
    eventually(Duration::from_secs(20), || sim.live_workspaces().len() >= 6).await;
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
    eventually(Duration::from_secs(30), || {
        let live = sim.live_workspaces();
        !interrupted.iter().any(|n| live.contains(n))
    })
    .await;
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
        .filter_map(|w| {
            w.failure()
                .map(|(p, reason, _)| (w.name.clone(), (p, reason)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_end_at_their_phase_timeout_and_delete_still_runs() {
    for endpoints in [WatchEndpoints::WatchWs, WatchEndpoints::Sse] {
        stalls_over(endpoints).await;
    }
}

/// Stalls on one watch transport (the other not served).
async fn stalls_over(endpoints: WatchEndpoints) {
    let mut sc = fast_sim();
    sc.watch_endpoints = endpoints;
    sc.ping_interval = scaletestd::config::HumanDuration(Duration::from_millis(200));
    sc.failures.watch_silent = 0.2;
    sc.failures.build_stuck = 0.2;
    sc.failures.pty_silent = 0.2;
    let sim = start(sc).await;
    // 60 workspaces: every kind is then tried but for one run in about 5,000 (40 left a pty
    // stall untried about once in 300: 26 walks reach the terminal, 0.8^26).
    let mut cfg = config(&sim, 60, 60, "");
    let t = &mut cfg.scenarios[0].timeouts;
    t.set(Phase::Build, Duration::from_secs(3));
    t.set(Phase::Pty, Duration::from_secs(2));
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
        assert_eq!(
            got.get(&l.name).copied(),
            want,
            "{}: {:?}",
            l.name,
            l.stalled
        );
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
    assert_eq!(r.watch_transport, Some(transport(endpoints)));
    println!(
        "stalls over {endpoints:?} {kinds:?}: {}",
        report::summary_line(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_watch_events_are_protocol_errors_and_delete_still_runs() {
    for endpoints in [WatchEndpoints::WatchWs, WatchEndpoints::Sse] {
        malformed_over(endpoints).await;
    }
}

/// Malformed events on one watch transport (the other not served).
async fn malformed_over(endpoints: WatchEndpoints) {
    let mut sc = fast_sim();
    sc.watch_endpoints = endpoints;
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
    assert_eq!(r.watch_transport, Some(transport(endpoints)));
    println!(
        "malformed over {endpoints:?} {kinds:?}: {}",
        report::summary_line(&r)
    );
}

fn transport(endpoints: WatchEndpoints) -> &'static str {
    match endpoints {
        WatchEndpoints::Sse => "sse",
        _ => "watch-ws",
    }
}

/// A server answering every request with the next of `bodies` (status 200, JSON), and how
/// the client took each. A value the client decides on that is missing or malformed is a
/// `protocol_error` naming the URL path and the JSON path, never a panic; what the client does
/// not read (a field or an enum value of a newer Coder) must not fail anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_table() {
    // A real workspace from the simulator, as the simulator sends it, to spoil in each way.
    let sim = start(fast_sim()).await;
    let cfg = config(&sim, 1, 1, "");
    let c = client(&cfg);
    let ws = create_workspace(&c, "malformed-source").await;
    // Wait for its agent, so the spoilt copies have one to spoil.
    let mut good = serde_json::Value::Null;
    for _ in 0..100 {
        let w = sim.app.state.current(ws.id).unwrap();
        if w.latest_build.agents().count() > 0 {
            good = serde_json::to_value(&w).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!good.is_null(), "the workspace got an agent");
    let spoilt = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    let agent = |v: &mut serde_json::Value| -> serde_json::Value {
        v["latest_build"]["resources"][0]["agents"][0].clone()
    };
    let huge = "x".repeat(17 << 20);
    // (what, body, chunked, Err(what the message must name) or Ok)
    type Expect = Result<(), &'static str>;
    let cases: Vec<(&str, Vec<u8>, bool, Expect)> = vec![
        (
            "truncated JSON",
            good.to_string()[..100].into(),
            false,
            Err("EOF"),
        ),
        ("empty body", vec![], false, Err("EOF")),
        ("null", b"null".to_vec(), false, Err("invalid type: null")),
        (
            "HTML page",
            b"<html><body>Sign in</body></html>".to_vec(),
            false,
            Err("expected value"),
        ),
        (
            "id of the wrong type",
            spoilt(&|v| v["id"] = 42.into()),
            false,
            Err("id: invalid type"),
        ),
        (
            "unknown job status",
            spoilt(&|v| v["latest_build"]["job"]["status"] = "exploding".into()),
            false,
            Err("latest_build.job.status: unknown variant `exploding`"),
        ),
        (
            "unknown transition",
            spoilt(&|v| v["latest_build"]["transition"] = "levitate".into()),
            false,
            Err("latest_build.transition: unknown variant `levitate`"),
        ),
        (
            "latest_build missing",
            spoilt(&|v| {
                v.as_object_mut().unwrap().remove("latest_build");
            }),
            false,
            Err("missing field `latest_build`"),
        ),
        (
            "agent lifecycle missing",
            spoilt(&|v| {
                let mut a = agent(v);
                a.as_object_mut().unwrap().remove("lifecycle_state");
                v["latest_build"]["resources"][0]["agents"][0] = a;
            }),
            false,
            Err("latest_build.resources[0].agents[0]: missing field `lifecycle_state`"),
        ),
        (
            "17 MiB with a length",
            huge.clone().into(),
            false,
            Err("over 16 MiB"),
        ),
        ("17 MiB chunked", huge.into(), true, Err("over 16 MiB")),
        // What a newer Coder may send where scaletestd does not decide: accepted.
        (
            "build number as a string",
            spoilt(&|v| v["latest_build"]["build_number"] = "seven".into()),
            false,
            Ok(()),
        ),
        (
            "unknown workspace status",
            spoilt(&|v| v["latest_build"]["status"] = "hibernating".into()),
            false,
            Ok(()),
        ),
        (
            "unknown resource transition",
            spoilt(&|v| v["latest_build"]["resources"][0]["workspace_transition"] = "warp".into()),
            false,
            Ok(()),
        ),
        (
            "new fields everywhere",
            spoilt(&|v| {
                v["a_new_field"] = serde_json::json!({"nested": [1, 2, 3]});
                v["latest_build"]["job"]["logs_overflowed"] = true.into();
                let mut a = agent(v);
                a["subsystems"] = serde_json::json!(["envbox", "a-future-one"]);
                a["health"] = "an object in today's Coder".into();
                v["latest_build"]["resources"][0]["agents"][0] = a;
            }),
            false,
            Ok(()),
        ),
        (
            "unknown enum in an unread agent field",
            spoilt(&|v| {
                let mut a = agent(v);
                a["startup_script_behavior"] = "teleport".into();
                a["display_apps"] = serde_json::json!(["hologram"]);
                v["latest_build"]["resources"][0]["agents"][0] = a;
            }),
            false,
            Ok(()),
        ),
    ];
    let bodies: std::sync::Arc<Vec<(Vec<u8>, bool)>> =
        std::sync::Arc::new(cases.iter().map(|(_, b, c, _)| (b.clone(), *c)).collect());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().fallback({
        let (bodies, next) = (bodies.clone(), next.clone());
        move || {
            let (bodies, next) = (bodies.clone(), next.clone());
            async move {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (body, chunked) = bodies[i].clone();
                let body = if chunked {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                } else {
                    axum::body::Body::from(body)
                };
                ([("content-type", "application/json")], body)
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let fake = scaletestd::coder::Client::new(
        url.parse().unwrap(),
        cfg.coder.token.clone(),
        Default::default(),
    );
    let mut failed = 0;
    for (what, _, _, expect) in &cases {
        let got = fake.workspace(ws.id).await;
        match (expect, got) {
            (Ok(()), Ok(w)) => assert_eq!(w.id, ws.id, "{what}"),
            (Ok(()), Err(e)) => panic!("{what}: refused: {e}"),
            (Err(_), Ok(_)) => panic!("{what}: accepted"),
            (Err(names), Err(err)) => {
                failed += 1;
                assert_eq!(err.reason(), Reason::ProtocolError, "{what}: {err}");
                let msg = err.to_string();
                assert!(
                    msg.contains(&format!("/api/v2/workspaces/{}", ws.id)),
                    "{what}: {msg}"
                );
                assert!(msg.contains(names), "{what}: {msg} does not name {names:?}");
                assert!(!msg.contains(TOKEN), "{what}: the token leaked");
                assert!(
                    msg.len() < 2000,
                    "{what}: an error message of {} bytes",
                    msg.len()
                );
            }
        }
    }
    assert_eq!(
        next.load(std::sync::atomic::Ordering::SeqCst),
        cases.len(),
        "one request each: protocol errors are not retried"
    );
    println!(
        "{failed} malformed answers, each a protocol_error; {} unknown values accepted",
        cases.len() - failed
    );

    // Over watch-ws: events larger than the client's 8 KiB read buffer arrive whole, in one
    // frame or in many TCP segments, and one past MAX_EVENT is refused by name.
    let sizes = [64usize << 10, 1 << 20, 5 << 20];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_good = good.clone();
    tokio::spawn(async move {
        for size in sizes {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut v = server_good.clone();
            v["padding"] = "x".repeat(size).into();
            let msg = serde_json::json!({"type": "data", "data": v}).to_string();
            use futures_util::SinkExt;
            let _ = ws
                .send(tokio_tungstenite::tungstenite::Message::Text(msg.into()))
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let direct = scaletestd::coder::Client::new(
        format!("http://{addr}").parse().unwrap(),
        scaletestd::secret::Secret::new(TOKEN),
        Default::default(),
    );
    for size in sizes {
        let mut stream = direct.watch_workspace_ws(ws.id).await.unwrap();
        let got = stream.next().await;
        if size <= scaletestd::coder::watch::MAX_EVENT {
            let got = got.unwrap_or_else(|e| panic!("a {size}-byte event: {e}"));
            assert_eq!(got.map(|w| w.id), Some(ws.id), "a {size}-byte event");
        } else {
            let e = got.expect_err("an event past MAX_EVENT");
            assert!(e.to_string().contains("watch-ws"), "{e}");
        }
    }
}
