//! Traces that join Coder's: the real binary exports to an OTLP receiver built on the
//! official protobufs, and so does the simulator (as `coderd`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::daemon::{cron_at, daemon_config, spawn, tmpdir};
use crate::common::otlp::{self, Got, Received};
use crate::common::*;

const CLIENT: i32 = 3;

fn once_config(
    dir: &std::path::Path,
    sim_url: &str,
    otlp: &str,
    count: u32,
    propagate: bool,
) -> std::path::PathBuf {
    once_text(sim_url, otlp, count, propagate, "").write(dir, "once.toml")
}

/// The traced scenario, with `extra` lines in its table.
fn once_text(sim_url: &str, otlp: &str, count: u32, propagate: bool, extra: &str) -> ConfigText {
    ConfigText::new(sim_url)
        .telemetry(&format!("otlp_endpoint = \"{otlp}\""))
        .telemetry(&format!("propagate = {propagate}"))
        .scenario(
            ScenarioText::new("tr", count)
                .key(&format!("concurrency = {count}"))
                .command("echo hello", "hello")
                .keys(extra),
        )
}

fn once(cfg: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = env
        .iter()
        .fold(
            Bin::new(&["once", "--log-format", "json", "--config"]).arg(cfg),
            |b, (k, v)| b.env(k, v),
        )
        .run();
    (out.code.unwrap_or(-1), out.stdout, out.stderr)
}

/// Waits (bounded) until the receiver holds spans satisfying `enough`.
async fn collect(
    got: &Received,
    sim: &scaletestd::sim::Sim,
    enough: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        eventually_async(Duration::from_secs(10), || async {
            tokio::task::block_in_place(|| sim.flush_spans());
            enough(&got.spans()).then_some(())
        }),
    )
    .await;
    // Too few is for the caller to say, with what it got.
    let _ = waited;
    got.spans()
}

fn traced_sim(endpoint: &str) -> scaletestd::sim::SimConfig {
    let mut sc = fast_sim();
    sc.tracing.otlp_endpoint = Some(endpoint.to_string());
    sc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_spans_and_coders_spans_form_one_tree() {
    let (endpoint, got) = otlp::grpc().await;
    let mut sc = traced_sim(&endpoint);
    sc.seed = 3;
    sc.failures.build = 0.5;
    let sim = start(sc).await;
    let dir = tmpdir("traces-tree");
    // With an app and its websocket: the proxy's requests join the tree like API calls.
    let extra = r#"phases = ["create", "build", "agent", "app", "pty", "delete"]
app = "ws-echo"
app_websocket = true"#;
    let cfg = once_text(sim.url().as_str(), &endpoint, 20, true, extra).write(&dir, "once.toml");
    let (code, stdout, stderr) = once(&cfg, &[]);
    let injected = sim.ledger().iter().filter(|l| l.build_failed).count();
    assert!(injected > 0, "seed 3 fails some builds");
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!("20 workspaces: {} succeeded", 20 - injected)),
        "{stdout}"
    );

    let spans = collect(&got, &sim, |s| {
        s.iter().any(|g| g.name() == "scaletest.run")
    })
    .await;
    let ours: Vec<&Got> = spans.iter().filter(|g| g.service == "scaletestd").collect();
    let theirs: Vec<&Got> = spans.iter().filter(|g| g.service == "coderd").collect();
    let by_id: HashMap<String, &Got> = ours.iter().map(|g| (g.span_id(), *g)).collect();

    // The tree: run → workspace → phase → client call → Coder's server span.
    let runs: Vec<_> = ours
        .iter()
        .filter(|g| g.name() == "scaletest.run")
        .collect();
    assert_eq!(runs.len(), 1);
    let run = runs[0];
    assert!(
        run.span.parent_span_id.iter().all(|b| *b == 0),
        "the run span is a root"
    );
    assert_eq!(run.attr("workspace.count").as_deref(), Some("20"));
    let workspaces: Vec<_> = ours
        .iter()
        .filter(|g| g.name() == "scaletest.workspace")
        .collect();
    assert_eq!(workspaces.len(), 20);
    assert!(
        workspaces
            .iter()
            .all(|w| w.parent_id() == run.span_id() && w.trace_id() == run.trace_id())
    );
    assert!(workspaces.iter().all(|w| w.attr("workspace.id").is_some()
        && w.attr("template.name").as_deref() == Some("docker")));
    let ws_ids: HashSet<String> = workspaces.iter().map(|w| w.span_id()).collect();
    let phases: Vec<_> = ours
        .iter()
        .filter(|g| g.name().starts_with("phase."))
        .collect();
    assert!(
        phases.iter().all(|p| ws_ids.contains(&p.parent_id())),
        "phases nest under workspaces"
    );
    assert_eq!(
        phases.iter().filter(|p| p.name() == "phase.create").count(),
        20
    );
    assert_eq!(
        phases.iter().filter(|p| p.name() == "phase.delete").count(),
        20
    );

    // A failed phase carries its reason.
    let failed_builds: Vec<_> = phases
        .iter()
        .filter(|p| p.name() == "phase.build" && p.attr("error.reason").is_some())
        .collect();
    assert_eq!(failed_builds.len(), injected);
    assert!(
        failed_builds
            .iter()
            .all(|p| p.attr("error.reason").as_deref() == Some("build_failed"))
    );
    assert!(
        failed_builds
            .iter()
            .all(|p| p.span.status.as_ref().is_some_and(|s| s.code == 2)),
        "status error"
    );

    // Every client span has exactly one coderd server span as its child, in the same trace.
    let clients: Vec<_> = ours.iter().filter(|g| g.kind() == CLIENT).collect();
    assert!(clients.len() >= 20 * 5, "{} client spans", clients.len());
    for c in &clients {
        let children: Vec<_> = theirs
            .iter()
            .filter(|s| s.parent_id() == c.span_id())
            .collect();
        assert_eq!(
            children.len(),
            1,
            "{} {}",
            c.name(),
            c.attr("url.full").unwrap_or_default()
        );
        assert_eq!(children[0].trace_id(), c.trace_id());
        assert_eq!(children[0].kind(), 2, "a server span");
        assert_eq!(
            c.attr("coder.trace_id"),
            Some(c.trace_id()),
            "X-Trace-ID recorded"
        );
        assert!(c.attr("http.request.method").is_some() && c.attr("url.template").is_some());
        assert!(
            by_id.contains_key(&c.parent_id()),
            "client spans have our parent"
        );
    }
    assert!(
        theirs
            .iter()
            .all(|s| clients.iter().any(|c| c.span_id() == s.parent_id())),
        "no orphan coderd span"
    );
    assert!(
        theirs
            .iter()
            .any(|s| s.name() == "GET /api/v2/workspaceagents/{workspaceagent}/pty"),
        "the websocket upgrade is traced"
    );
    assert!(
        theirs
            .iter()
            .any(|s| s.name() == "GET /api/v2/workspaces/{workspace}/watch-ws"),
        "the watch-ws upgrade carries traceparent"
    );
    assert!(
        theirs
            .iter()
            .any(|s| s.name() == "POST /api/v2/users/{user}/workspaces")
    );
    // The app's GET and websocket: client spans under `phase.app`, Coder's proxy spans
    // under them, two per workspace that got that far.
    let app_route = "/@{user}/{workspace_and_agent}/apps/{workspaceapp}/*";
    let app_calls: Vec<_> = clients
        .iter()
        .filter(|c| c.attr("url.template").as_deref() == Some(app_route))
        .collect();
    assert_eq!(app_calls.len(), 2 * (20 - injected));
    assert!(
        app_calls
            .iter()
            .all(|c| by_id[&c.parent_id()].name() == "phase.app")
    );
    assert_eq!(
        theirs
            .iter()
            .filter(|s| s.name() == format!("GET {app_route}"))
            .count(),
        2 * (20 - injected)
    );

    // Build stages carry the simulator's own timestamps.
    let mut sim_apply: HashSet<(i64, i64)> = HashSet::new();
    {
        let w = sim.app.state.lock();
        for g in w.deleted.values() {
            for t in g
                .timings
                .values()
                .flat_map(|t| t.provisioner_timings.iter())
            {
                if t.stage == scaletestd::coder::TimingStage::Apply && t.action == "create" {
                    sim_apply.insert((
                        t.started_at.timestamp_nanos_opt().unwrap(),
                        t.ended_at.timestamp_nanos_opt().unwrap(),
                    ));
                }
            }
        }
    }
    let applies: Vec<_> = ours.iter().filter(|g| g.name() == "build.apply").collect();
    assert_eq!(applies.len(), 20);
    for a in &applies {
        let pair = (
            a.span.start_time_unix_nano as i64,
            a.span.end_time_unix_nano as i64,
        );
        assert!(
            sim_apply.contains(&pair),
            "build.apply {pair:?} matches a simulator timing"
        );
        assert_eq!(by_id[&a.parent_id()].name(), "phase.build");
    }
    assert_eq!(
        ours.iter().filter(|g| g.name() == "build.queue").count(),
        20
    );
    assert_eq!(
        ours.iter().filter(|g| g.name() == "agent.connect").count(),
        20 - injected
    );

    // Log lines carry trace and span ids of the trace they belong to.
    let failed_log: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "failed")
        .collect();
    assert_eq!(failed_log.len(), injected, "{stderr}");
    assert!(
        failed_log
            .iter()
            .all(|v| v["trace_id"] == run.trace_id().as_str()
                && v["span_id"].as_str().is_some_and(|s| by_id.contains_key(s)))
    );
    assert!(!stderr.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_propagation_client_spans_link_to_coders_trace() {
    let (endpoint, got) = otlp::grpc().await;
    let mut sc = traced_sim(&endpoint);
    sc.seed = 5;
    sc.failures.build = 0.5;
    let sim = start(sc).await;
    let dir = tmpdir("traces-nopropagate");
    let cfg = once_config(&dir, sim.url().as_str(), &endpoint, 16, false);
    let json = dir.join("out.json");
    // Some builds fail.
    Bin::new(&["once", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(format!("json:{}", json.display()))
        .run()
        .expect_code(1);
    // The JSON output names Coder's trace beside ours for every failure.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let failed: Vec<&serde_json::Value> = doc["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["phases"].as_array().unwrap().iter())
        .filter(|p| p["ok"] == false)
        .collect();
    assert!(!failed.is_empty());
    for p in &failed {
        let (ours, coder) = (
            p["trace_id"].as_str().unwrap(),
            p["coder_trace_id"].as_str().unwrap(),
        );
        assert!(
            ours.len() == 32 && coder.len() == 32 && ours != coder,
            "{p}"
        );
    }
    let spans = collect(&got, &sim, |s| {
        s.iter().any(|g| g.name() == "scaletest.run")
    })
    .await;
    let ours: HashSet<String> = spans
        .iter()
        .filter(|g| g.service == "scaletestd")
        .map(|g| g.trace_id())
        .collect();
    let theirs: HashSet<String> = spans
        .iter()
        .filter(|g| g.service == "coderd")
        .map(|g| g.trace_id())
        .collect();
    assert!(!theirs.is_empty());
    assert!(
        ours.is_disjoint(&theirs),
        "no shared trace ids without propagation"
    );
    let clients: Vec<_> = spans
        .iter()
        .filter(|g| g.service == "scaletestd" && g.kind() == CLIENT)
        .collect();
    assert!(!clients.is_empty());
    for c in clients {
        let coder = c
            .attr("coder.trace_id")
            .expect("every client span records Coder's trace");
        assert!(theirs.contains(&coder));
        assert!(
            c.links().iter().any(|(t, _)| *t == coder),
            "a link to Coder's trace"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coder_records_exactly_the_traces_we_sample() {
    let (endpoint, got) = otlp::grpc().await;
    let sim = start(traced_sim(&endpoint)).await;
    let dir = tmpdir("traces-ratio");
    let cfg = once_config(&dir, sim.url().as_str(), &endpoint, 1, true);
    let env = [
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ];
    let mut runs = 0;
    // Until both a kept and a dropped run were seen (each run is one trace), at most 20.
    loop {
        let (code, stdout, _) = once(&cfg, &env);
        assert_eq!(code, 0, "{stdout}");
        runs += 1;
        tokio::task::block_in_place(|| sim.flush_spans());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exported = got
            .of("scaletestd")
            .iter()
            .filter(|g| g.name() == "scaletest.run")
            .count();
        if (exported > 0 && exported < runs) || runs == 20 {
            break;
        }
    }
    let ours: HashSet<String> = got.of("scaletestd").iter().map(|g| g.trace_id()).collect();
    let theirs: HashSet<String> = got.of("coderd").iter().map(|g| g.trace_id()).collect();
    assert!(
        !ours.is_empty() && ours.len() < runs,
        "sampling kept {} of {runs} runs",
        ours.len()
    );
    assert_eq!(ours, theirs, "Coder records exactly the traces we keep");
}

/// `check` tells a Coder that records our traces from one that only echoes our ids
/// (coderd with tracing off), and from one we send no `traceparent` to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_whether_coders_spans_join_ours() {
    let dir = tmpdir("traces-check");
    // Tracing on (spans made, exported nowhere).
    let sim = start(fast_sim()).await;
    let client = scaletestd::coder::Client::new(
        sim.url(),
        scaletestd::secret::Secret::new(TOKEN),
        Default::default(),
    );
    assert_eq!(client.probe_tracing(true).await.unwrap(), Some(true));
    assert_eq!(client.probe_tracing(false).await.unwrap(), Some(true));
    let cfg = once_text(sim.url().as_str(), "none", 1, true, "").write(&dir, "on.toml");
    let check = crate::common::Bin::new(&["check", "--config"])
        .arg(&cfg)
        .run();
    assert!(
        check.stdout.contains(
            "ok   Coder records server spans for our requests (its X-Span-ID is its own): they join our traces"
        ),
        "{check}"
    );
    let cfg = once_text(sim.url().as_str(), "none", 1, false, "").write(&dir, "nopropagate.toml");
    let check = crate::common::Bin::new(&["check", "--config"])
        .arg(&cfg)
        .run();
    assert!(
        check
            .stdout
            .contains("note Coder traces requests (X-Trace-ID), but [telemetry] propagate = false"),
        "{check}"
    );
    // Tracing off, without propagation: nothing comes back, and check says so.
    let mut sc = fast_sim();
    sc.tracing.enabled = false;
    let off = start(sc).await;
    let cfg = once_text(off.url().as_str(), "none", 1, false, "").write(&dir, "off.toml");
    let check = crate::common::Bin::new(&["check", "--config"])
        .arg(&cfg)
        .run();
    assert!(
        check.stdout.contains("warn Coder does not trace requests (no X-Trace-ID); set CODER_TRACE_ENABLE=true on coderd"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coder_that_does_not_trace_breaks_nothing() {
    let (endpoint, got) = otlp::grpc().await;
    let mut sc = fast_sim();
    sc.tracing.enabled = false;
    let sim = start(sc).await;
    let client = scaletestd::coder::Client::new(
        sim.url(),
        scaletestd::secret::Secret::new(TOKEN),
        Default::default(),
    );
    // As coderd with tracing off: our own span id echoed when we send one, nothing without.
    assert_eq!(client.probe_tracing(true).await.unwrap(), Some(false));
    assert_eq!(client.probe_tracing(false).await.unwrap(), Some(false));
    let dir = tmpdir("traces-off");
    let cfg = once_config(&dir, sim.url().as_str(), &endpoint, 3, true);
    let check = crate::common::Bin::new(&["check", "--config"])
        .arg(&cfg)
        .run();
    assert!(
        check
            .stdout
            .contains("warn Coder does not record traces: it echoes our span id (X-Span-ID)")
            && check
                .stdout
                .contains("set CODER_TRACE_ENABLE=true on coderd"),
        "{check}"
    );
    assert!(!check.stdout.contains("join our traces"), "{check}");
    let report = dir.join("off.json");
    Bin::new(&["once", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(format!("json:{}", report.display()))
        .run()
        .expect_code(0);
    // No output claims a Coder trace: no phase carries coder_trace_id.
    let json = std::fs::read_to_string(&report).unwrap();
    assert!(!json.contains("coder_trace_id"), "{json}");
    assert!(json.contains("\"trace_id\""), "our own ids are kept");
    let spans = collect(&got, &sim, |s| {
        s.iter().any(|g| g.name() == "scaletest.run")
    })
    .await;
    let clients: Vec<_> = spans.iter().filter(|g| g.kind() == CLIENT).collect();
    assert!(!clients.is_empty());
    assert!(clients.iter().all(|c| c.attr("coder.trace_id").is_none()));
    let svc: HashSet<(String, String)> = spans
        .iter()
        .map(|g| (g.service.clone(), g.name().to_string()))
        .collect();
    assert!(spans.iter().all(|g| g.service == "scaletestd"), "{svc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_over_http_protobuf() {
    let (endpoint, got) = otlp::http().await;
    let sim = start(traced_sim(&endpoint)).await;
    let dir = tmpdir("traces-http");
    let cfg = once_config(&dir, sim.url().as_str(), &endpoint, 2, true);
    let (code, stdout, _) = once(&cfg, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
    assert_eq!(code, 0, "{stdout}");
    let spans = collect(&got, &sim, |s| {
        s.iter().any(|g| g.name() == "scaletest.run")
    })
    .await;
    assert_eq!(
        spans
            .iter()
            .filter(|g| g.name() == "scaletest.workspace")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_changes_no_result_and_exemplars_name_exported_traces() {
    // A collector that is not there: the scale test's result is the same.
    let sim = start(fast_sim()).await;
    let dir = tmpdir("traces-dead");
    let cfg = once_config(&dir, sim.url().as_str(), "http://127.0.0.1:9", 5, true);
    let (code, stdout, _) = once(&cfg, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout.lines().next(),
        Some("5 workspaces: 5 succeeded, 0 failed")
    );

    // The daemon with a live receiver: every exemplar's trace id is a trace it got.
    let (endpoint, got) = otlp::grpc().await;
    let cfgd = daemon_config(sim.url().as_str())
        .telemetry(&format!("otlp_endpoint = \"{endpoint}\""))
        .scenario(
            ScenarioText::new("ex", 3)
                .prefix("stx")
                .schedule(&cron_at(&[4, 8]))
                .command("echo hi", "hi"),
        )
        .write(&dir, "run.toml");
    let mut d = spawn(&["run", "--config", cfgd.to_str().unwrap()], TOKEN);
    let s = d
        .wait_for(Duration::from_secs(30), |s| {
            s.sum("scaletest_runs", &[("scenario", "ex")]) == 2.0
        })
        .await;
    let exemplars: HashSet<String> = s
        .matching("scaletest_phase_duration_seconds", &[])
        .flat_map(|x| x.exemplar_trace_ids.iter().cloned())
        .collect();
    assert!(!exemplars.is_empty());
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    let traces: HashSet<String> = got.spans().iter().map(|g| g.trace_id()).collect();
    assert!(
        exemplars.is_subset(&traces),
        "exemplars {exemplars:?} not all exported ({} traces)",
        traces.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_the_collector_never_got_are_counted() {
    let sim = start(fast_sim()).await;
    let dir = tmpdir("traces-dropped");
    let cfgd = daemon_config(sim.url().as_str())
        .telemetry("otlp_endpoint = \"http://127.0.0.1:9\"")
        .scenario(
            ScenarioText::new("dr", 2)
                .prefix("std")
                .schedule(&cron_at(&[4]))
                .command("echo hi", "hi"),
        )
        .write(&dir, "run.toml");
    let d = spawn(&["run", "--config", cfgd.to_str().unwrap()], TOKEN);
    let s = d
        .wait_for(Duration::from_secs(30), |s| {
            s.sum("scaletest_runs", &[("result", "success")]) == 1.0
                && s.sum("scaletest_spans_dropped", &[]) >= 10.0
        })
        .await;
    assert!(
        s.sum("scaletest_spans_dropped", &[]) >= 10.0,
        "a run's spans were dropped and counted"
    );
}
