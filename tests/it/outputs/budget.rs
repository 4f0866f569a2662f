//! Failure budgets: `max_failures` and `max_failure_ratio` at their edges, what the summary
//! line says, and `once` exiting 0 within budget and 1 beyond it; and every failure reason
//! spelled the same in metrics, the JSON report and the JUnit report.

use std::time::Duration;

use crate::common::*;
use scaletestd::phases::{Phase, PhaseRecord, Reason};
use scaletestd::report::summary_line;
use scaletestd::runner::{FailureBudget, RunReport, RunResult, WorkspaceReport};

/// A run of `total` workspaces of which the first `failed` failed in `build`.
fn report(total: u32, failed: u32, budget: FailureBudget) -> RunReport {
    RunReport {
        scenario: "s".into(),
        run_id: "abc123".into(),
        started_at: chrono::Utc::now(),
        elapsed: Duration::from_secs(1),
        setup_error: None,
        aborted: false,
        watch_transport: None,
        create_route: None,
        budget,
        workspaces: (1..=total)
            .map(|i| {
                let ok = i > failed;
                WorkspaceReport {
                    index: i,
                    name: format!("scaletest-abc123-{i}"),
                    id: None,
                    ok,
                    phases: vec![PhaseRecord {
                        phase: Phase::Build,
                        started_at: chrono::Utc::now(),
                        duration: Duration::from_secs(1),
                        ok,
                        reason: (!ok).then_some(Reason::BuildFailed),
                        error: (!ok).then(|| "injected".to_string()),
                        trace_id: None,
                        coder_trace_id: None,
                        sub_timings_ms: Default::default(),
                        event_at: None,
                    }],
                    build_stages: vec![],
                    last_coder_trace: None,
                    clock: Default::default(),
                }
            })
            .collect(),
    }
}

#[test]
fn budgets_at_their_edges() {
    use FailureBudget::*;
    for (total, failed, budget, want) in [
        (100, 0, None, RunResult::Success),
        (100, 1, None, RunResult::Partial),
        (100, 2, Count(2), RunResult::Success),
        (100, 3, Count(2), RunResult::Partial),
        (100, 10, Ratio(0.1), RunResult::Success),
        (100, 11, Ratio(0.1), RunResult::Partial),
        (1000, 1, Ratio(0.001), RunResult::Success),
        (1000, 2, Ratio(0.001), RunResult::Partial),
        // Every workspace failing is a failure whatever the budget.
        (5, 5, Count(10), RunResult::Failure),
        (5, 5, Ratio(0.99), RunResult::Failure),
    ] {
        let r = report(total, failed, budget);
        assert_eq!(r.result(), want, "{failed} of {total} with {budget:?}");
    }
    assert_eq!(
        summary_line(&report(100, 2, FailureBudget::Count(2))),
        "100 workspaces: 98 succeeded, 2 failed (2 build: build_failed); within the failure budget (max_failures = 2)"
    );
    assert_eq!(
        summary_line(&report(100, 3, FailureBudget::Count(2))),
        "100 workspaces: 97 succeeded, 3 failed (3 build: build_failed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_zero_within_budget_and_one_beyond() {
    let dir = TempDir::new("budget_once");
    let mut sc = fast_sim();
    sc.failures.build = 0.3;
    let sim = start(sc).await;
    // Thirty workspaces at 0.3: some fail (all but 0.7^30 of the time), not all.
    let file = |budget: &str| {
        ConfigText::new(sim.url())
            .scenario(
                ScenarioText::new("budget", 30)
                    .key("phases = [\"create\", \"build\", \"delete\"]")
                    .key(budget),
            )
            .write(dir.path(), "budget.toml")
    };
    // Generous: within budget unless every workspace failed.
    let json = dir.join("out.json");
    let cmd = Bin::new(&["once", "--config"])
        .arg(file("max_failure_ratio = 0.95"))
        .arg("--output")
        .arg(format!("json:{}", json.display()));
    let out = tokio::task::spawn_blocking(move || cmd.run())
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let failed = 30 - doc["total_pass"].as_u64().unwrap();
    assert!(failed > 0, "the simulator failed no build: {out}");
    if failed < 30 {
        assert_eq!(out.code, Some(0), "{failed} failed within 0.95: {out}");
        assert!(
            out.stdout
                .contains("within the failure budget (max_failure_ratio = 0.95)"),
            "{out}"
        );
    }
    // None allowed: the same failures exit 1.
    let cmd = Bin::new(&["once", "--config"]).arg(file("max_failures = 0"));
    let out = tokio::task::spawn_blocking(move || cmd.run())
        .await
        .unwrap();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(settle(&sim).await.is_empty());
    assert!(!out.stdout.contains("within the failure budget"), "{out}");
}

#[test]
fn every_reason_is_spelled_one_way_in_metrics_json_and_junit() {
    use scaletestd::runner::RunObserver;
    for reason in Reason::ALL {
        let mut r = report(2, 1, FailureBudget::None);
        r.workspaces[0].phases[0].reason = Some(reason);
        let word = reason.as_str();
        let json = scaletestd::report::to_json(&r);
        assert!(
            json.contains(&format!("\"reason\": \"{word}\"")),
            "{word}: {json}"
        );
        let junit = scaletestd::report::to_junit(&r);
        assert!(
            junit.contains(&format!("<failure type=\"{word}\"")),
            "{word}: {junit}"
        );
        let metrics = scaletestd::metrics::Metrics::new();
        metrics.phase_done("s", "w", &r.workspaces[0].phases[0]);
        let text = metrics.encode(false);
        assert!(
            text.contains(&format!("reason=\"{word}\"")),
            "{word}: {text}"
        );
        assert!(summary_line(&r).contains(&format!("build: {word}")));
    }
}
