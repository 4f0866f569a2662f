//! The dashboards and the rules against a real Prometheus (Debian's `prometheus`, installed by
//! the test command): it scrapes `scaletestd demo` and the simulator's coderd metrics with the
//! rules loaded; then every PromQL expression of every dashboard panel and every rule is
//! evaluated through Prometheus's HTTP API, and must neither error nor return no series.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::prom::{
    Prometheus, check_series, dashboards, get_json, query, series, substitute, targets,
};
use crate::common::{Bin, Kill, TempDir, eventually_async, exclusive, free_port};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// An alert's condition as a query that returns its subject series whatever their values:
/// comparisons become `bool` comparisons and `absent(x)` becomes `x`.
fn condition_series(expr: &str) -> String {
    let mut e = expr.trim().to_string();
    if let Some(inner) = e.strip_prefix("absent(").and_then(|r| r.strip_suffix(')')) {
        e = inner.to_string();
    }
    for op in [" >= ", " <= ", " == ", " != ", " > ", " < "] {
        e = e.replace(op, &format!("{}bool ", op));
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_rule_returns_series_from_a_real_prometheus() {
    let _turn = exclusive();
    let (daemon_port, coderd_port) = (free_port(), free_port());
    let dir = TempDir::new("prom");
    let _demo = Kill(
        Bin::new(&[
            "demo",
            "--schedule",
            "*/3 * * * * *",
            "--herd-schedule",
            "*/20 * * * * *",
            "--count",
            "3",
        ])
        .no_token()
        .arg("--listen")
        .arg(format!("127.0.0.1:{daemon_port}"))
        .arg("--sim-metrics-listen")
        .arg(format!("127.0.0.1:{coderd_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn(),
    );
    let rules = format!("{ROOT}/alerts/scaletestd.rules.yml");
    let prometheus = Prometheus::start(
        &dir,
        &[
            ("scaletestd", &format!("127.0.0.1:{daemon_port}")),
            ("coder", &format!("127.0.0.1:{coderd_port}")),
        ],
        Some(rules.as_ref()),
    )
    .await;
    let prom = prometheus.addr.clone();

    // Two runs, one of them fully successful, seen by Prometheus (bounded wait).
    let n = |v: &serde_json::Value| {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The autostart herd waits for a whole minute at least 10 s away: up to 70 s after its
    // first run gathers.
    eventually_async(Duration::from_secs(150), || async {
        let runs = query(&prom, "sum(scaletest_runs_total)").await;
        let ok = query(&prom, "sum(scaletest_runs_total{result=\"success\"})").await;
        let herd = query(
            &prom,
            "sum(scaletest_phase_duration_seconds_count{phase=\"autostart.ready\"})",
        )
        .await;
        (n(&runs) >= 2.0 && n(&ok) >= 1.0 && n(&herd) >= 1.0).then_some(())
    })
    .await;
    // Two more scrapes of the daemon since (rate() needs two samples of what it counts).
    let last_scrape = "max(timestamp(up{job=\"scaletestd\"}))";
    let before = n(&query(&prom, last_scrape).await);
    eventually_async(Duration::from_secs(20), || async {
        (n(&query(&prom, last_scrape).await) >= before + 2.0).then_some(())
    })
    .await;

    // Every panel query of every dashboard.
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, dash) in dashboards() {
        let vars: Vec<&str> = dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            vars.contains(&"datasource") && vars.contains(&"scenario"),
            "{}",
            path.display()
        );
        for (title, t) in targets(&dash) {
            assert_eq!(
                t["datasource"]["uid"],
                "${datasource}",
                "{}: {title}",
                path.display(),
            );
            let q = substitute(t["expr"].as_str().unwrap());
            checked += 1;
            check_series(&prom, &title.to_string(), &q, &mut failures).await;
        }
    }
    assert!(checked >= 20, "{checked} panel queries");

    // Every rule, as Prometheus loaded it.
    let rules = get_json(&format!("http://{prom}/api/v1/rules")).await;
    let mut alerts = 0;
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if r["health"] != "ok" {
                failures.push(format!(
                    "rule {name}: health {} {}",
                    r["health"], r["lastError"]
                ));
            }
            let q = r["query"].as_str().unwrap();
            let q = if r["type"] == "alerting" {
                alerts += 1;
                for k in ["summary", "description", "runbook_url"] {
                    assert!(r["annotations"][k].is_string(), "alert {name} lacks {k}");
                }
                assert!(
                    r["labels"]["severity"].is_string(),
                    "alert {name} lacks a severity"
                );
                condition_series(q)
            } else {
                q.to_string()
            };
            match series(&prom, &q).await {
                Ok(0) => failures.push(format!("rule {name}: no series: {q}")),
                Ok(_) => {}
                Err(e) => failures.push(format!("rule {name}: {e}: {q}")),
            }
        }
    }
    assert!(alerts >= 12, "{alerts} alerts");

    // The demo's walk has an app and a restart: their series, and the rules over them.
    for q in [
        "scaletest_phase_duration_seconds_count{phase=\"app\",outcome=\"success\"} > 0",
        "scaletest_phase_duration_seconds_count{phase=\"stop\",outcome=\"success\"} > 0",
        "scaletest_phase_duration_seconds_count{phase=\"start\",outcome=\"success\"} > 0",
        "scaletest:phase_duration_seconds:p95{phase=\"app\"}",
        "scaletest:phase_duration_seconds:p95{phase=\"start\"}",
        "scaletest:build_stage_duration_seconds:p95{transition=\"stop\",stage=\"apply\"}",
        "scaletest:phase_p95_budget_seconds{phase=\"app\"}",
        "scaletest_phase_duration_seconds_count{scenario=\"demo-autostart\",phase=\"autostart.ready\",outcome=\"success\"} > 0",
        "scaletest:autostart_ready_seconds:p95{scenario=\"demo-autostart\"}",
        "scaletest:autostart_p95_budget_seconds",
        "scaletest_coder_requests_duration_seconds_count{route=\"/@{user}/{workspace_and_agent}/apps/{workspaceapp}/*\"} > 0",
    ] {
        match series(&prom, q).await {
            Ok(0) => failures.push(format!("no series: {q}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{e}: {q}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Exemplars reached Prometheus's exemplar storage with their trace ids.
    let now = chrono::Utc::now().timestamp();
    let url = format!(
        "http://{prom}/api/v1/query_exemplars?query=scaletest_phase_duration_seconds_bucket&start={}&end={}",
        now - 600,
        now + 10
    );
    let ex = get_json(&url).await;
    let ids: Vec<String> = ex["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["exemplars"].as_array().unwrap().iter())
        .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
        .collect();
    assert!(!ids.is_empty(), "exemplars stored: {ex}");
    assert!(
        ids.iter()
            .all(|i| i.len() == 32 && i.chars().all(|c| c.is_ascii_hexdigit()))
    );
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(format!("{ROOT}/alerts/scaletestd.rules.yml"))
        .output()
        .expect("promtool is installed (the test command installs Debian's prometheus package)");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && out.contains("SUCCESS"),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules"])
        .arg(format!("{ROOT}/alerts/tests/scaletestd_test.yml"))
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(
        test.status.success() && out.contains("SUCCESS") && !out.contains("FAILED"),
        "{out}"
    );
}
