//! scaletestd against a real Coder (issue 23): coderd built from Coder's own module at the
//! release `scripts/real-coder` pins, with PostgreSQL, echo provisioners and one real
//! `coder agent` per workspace, all in a network namespace of this test's own. The test's
//! thread joins that namespace before it starts its runtime, so everything it starts
//! (the daemon, Prometheus, the OTLP receiver, `coder ssh`) sees only that loopback.
//!
//! If Coder cannot be built or started, the test fails with the reason: nothing is skipped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{ECHO, real_coder_here};
use crate::common::daemon::{cron_at, spawn, tmpdir};
use crate::common::prom::{
    Prometheus, check_series, dashboards, query, series, substitute, targets,
};
use crate::common::real::{OTLP, RealCoder, listed};
use crate::common::{Bin, ConfigText, ScenarioText, eventually_async};
use scaletestd::phases::Reason;

const WALK: &str =
    r#"["create", "build", "agent", "ssh", "pty", "app", "stop", "start", "agent", "delete"]"#;

#[test]
fn scaletestd_walks_a_real_coder() {
    let (_turn, coder, rt) = real_coder_here("sctest", Some(OTLP));
    rt.block_on(walk(&coder));
}

/// The configuration for a run of `count` at concurrency 10 through `phases`.
fn config(
    coder: &RealCoder,
    prefix: &str,
    schedule: Option<&str>,
    count: u32,
    phases: &str,
    command: &str,
) -> String {
    let mut scenario = ScenarioText::new("real", count)
        .template(coder.get("CODER_TEMPLATE"))
        .prefix(prefix)
        .key("concurrency = 10")
        .key(&format!("phases = {phases}"))
        .command(command, "hello-42")
        .timeout("build", "90s")
        .timeout("agent", "90s")
        .timeout("pty", "60s")
        .timeout("delete", "90s")
        .table(
            "ssh",
            &format!(
                "proxy_command = \"{} --disable-direct-connections ssh --stdio {{workspace}}\"",
                coder.get("CODER_BIN")
            ),
        );
    if let Some(s) = schedule {
        scenario = scenario.schedule(s);
    }
    // The app's keys are refused on a scenario without the phase.
    if phases.contains("\"app\"") {
        scenario = scenario.table(
            "app",
            &format!(
                "slug = \"{}\"\nexpect = \"hello from the real-coder app\"",
                coder.get("CODER_APP")
            ),
        );
    }
    ConfigText::new(coder.get("CODER_URL"))
        .server("listen = \"127.0.0.1:0\"")
        .server("shutdown_grace = \"60s\"")
        .telemetry(&format!("otlp_endpoint = \"http://{OTLP}\""))
        .scenario(scenario)
        .text()
}

async fn walk(coder: &RealCoder) {
    let (_, spans) = crate::common::otlp::grpc_at(OTLP).await;
    let dir = tmpdir("real-coder");

    // 1. The whole walk, 20 workspaces at concurrency 10, by the daemon on a schedule that
    //    fires once, scraped by a real Prometheus along with coderd.
    let prefix = "strc";
    let cfg_path: PathBuf = dir.join("run.toml");
    std::fs::write(
        &cfg_path,
        config(coder, prefix, Some(&cron_at(&[8])), 20, WALK, ECHO),
    )
    .unwrap();
    let d = spawn(
        &["run", "--config", cfg_path.to_str().unwrap()],
        coder.get("CODER_SESSION_TOKEN"),
    );
    let prometheus = Prometheus::start(
        &dir,
        &[("scaletestd", &d.addr), ("coder", "127.0.0.1:2112")],
        None,
    )
    .await;
    let prom = prometheus.addr.clone();
    let s = d
        .wait_for(Duration::from_secs(600), |s| {
            s.sum("scaletest_runs", &[]) >= 1.0
        })
        .await;
    let failures = s.sum("scaletest_phase_failures", &[]);
    let ok = s.sum("scaletest_runs", &[("result", "success")]);
    let count = |phase: &str| s.sum("scaletest_phase_duration_seconds", &[("phase", phase)]);
    let log = d.log();
    assert_eq!(failures, 0.0, "phase failures:\n{}", s.text);
    assert_eq!(ok, 1.0, "{log}");
    for (phase, want) in [
        ("create", 20.0),
        ("build", 20.0),
        ("agent", 40.0),
        ("ssh", 20.0),
        ("pty", 20.0),
        ("app", 20.0),
        ("stop", 20.0),
        ("start", 20.0),
        ("delete", 20.0),
    ] {
        assert_eq!(count(phase), want, "{phase} observations:\n{}", s.text);
    }
    let left = listed(coder, prefix).await;
    assert!(left.is_empty(), "Coder still lists {left:?}");
    println!("real coder walk: 20/20 through {WALK}, Coder lists none of them afterwards");
    // This coderd traces (CODER_TRACE_ENABLE with --otlp): the gauge and check say so.
    assert_eq!(s.sum("scaletest_coder_tracing", &[]), 1.0, "{}", s.text);
    let check = tokio::task::block_in_place(|| {
        crate::common::Bin::new(&["check", "--config", cfg_path.to_str().unwrap()])
            .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
            .run()
    });
    assert!(
        check.stdout.contains(
            "ok   Coder records server spans for our requests (its X-Span-ID is its own): they join our traces"
        ) && check.stdout.contains("ok   Coder's deployment config agrees: trace.enable = true"),
        "{check}"
    );

    // 2. Traces: coderd's server spans are children of our client spans.
    let ours: HashMap<(String, String), String> = spans
        .of("scaletestd")
        .iter()
        .map(|g| ((g.trace_id(), g.span_id()), g.name().to_string()))
        .collect();
    let joined = eventually_async(Duration::from_secs(60), || async {
        let children: Vec<_> = spans
            .of("coderd")
            .into_iter()
            .filter(|g| ours.contains_key(&(g.trace_id(), g.parent_id())))
            .collect();
        (children.len() >= 20).then_some(children)
    })
    .await;
    let example = &joined[0];
    println!(
        "traces: {} coderd spans are children of scaletestd spans, e.g. coderd {:?} under ours {:?} in trace {}",
        joined.len(),
        example.name(),
        ours[&(example.trace_id(), example.parent_id())],
        example.trace_id()
    );

    // 3. Metrics: every coderd_* query of the dashboards returns data.
    eventually_async(Duration::from_secs(30), || async {
        let up = series(&prom, "up{job=~\"coder|scaletestd\"} == 1").await;
        (up == Ok(2)).then_some(())
    })
    .await;
    let mut checked = 0;
    let mut empty = Vec::new();
    for (_, dash) in dashboards() {
        for (title, t) in targets(&dash) {
            let expr = t["expr"].as_str().unwrap_or_default();
            if !expr.contains("coderd_") {
                continue;
            }
            let q = substitute(expr).replace("20s", "5m");
            checked += 1;
            check_series(&prom, &title.to_string(), &q, &mut empty).await;
        }
    }
    assert!(checked >= 5, "{checked} coderd queries");
    assert!(empty.is_empty(), "{empty:#?}");
    let builds = query(&prom, "sum(coderd_workspace_builds_total)").await;
    println!(
        "prometheus: {checked} coderd_* dashboard queries return data; coderd counted {} builds",
        builds["data"]["result"][0]["value"][1]
    );
    d.signal("TERM");
    drop(d);

    // 4. coderd killed (SIGKILL) and restarted mid-run: the run ends, every failure has a
    //    reason from our set, and after a sweep nothing is left.
    let prefix = "strk";
    let cfg_path = dir.join("crash.toml");
    std::fs::write(
        &cfg_path,
        config(
            coder,
            prefix,
            None,
            10,
            r#"["create", "build", "agent", "pty", "delete"]"#,
            // Long enough that every walk is in its terminal when coderd goes.
            "sleep 20; echo hello-$((40+2))",
        ),
    )
    .unwrap();
    let report = dir.join("crash.json");
    let mut once = Bin::new(&["once", "--config", cfg_path.to_str().unwrap(), "--output"])
        .arg(format!("json:{}", report.display()))
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    // Once every build is done (a provisioner job in flight would stay "running" until
    // coderd's hung-job reaper, minutes later), coderd goes away without a word.
    let once_pid = once.id();
    eventually_async(Duration::from_secs(120), || async move {
        assert!(
            std::path::Path::new(&format!("/proc/{once_pid}/cmdline")).exists()
                && !std::fs::read_to_string(format!("/proc/{once_pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "scaletestd once ended before coderd was killed"
        );
        let ws = listed(coder, prefix).await;
        (ws.len() == 10
            && ws.iter().all(|w| {
                w["latest_build"]["transition"] == "start"
                    && w["latest_build"]["job"]["status"] == "succeeded"
            }))
        .then_some(())
    })
    .await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| coder.restart_coderd());
    println!("coderd killed and back in {:.1?}", killed_at.elapsed());
    let out = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(420);
        while once.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "scaletestd once did not end within 7 min"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        once.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let mut reasons = Vec::new();
    collect_reasons(&json, &mut reasons);
    for r in &reasons {
        serde_json::from_value::<Reason>(serde_json::Value::String(r.clone()))
            .unwrap_or_else(|e| panic!("{r:?} is not one of our reasons: {e}"));
    }
    Bin::new(&["cleanup", "--config", cfg_path.to_str().unwrap()])
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .run()
        .expect_code(0);
    let left = eventually_async(Duration::from_secs(120), || async {
        let ws = listed(coder, prefix).await;
        ws.is_empty().then_some(ws)
    })
    .await;
    assert!(left.is_empty());
    println!(
        "coderd restart mid-run: {}; reasons {reasons:?}; after the sweep Coder lists none",
        stdout.lines().next().unwrap_or_default()
    );
}

/// Every `"reason"` string anywhere in the JSON report.
fn collect_reasons(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("reason", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_reasons(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_reasons(v, out)),
        _ => {}
    }
}
