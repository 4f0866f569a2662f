//! Restarts: `stop` and `start` phases in the order a scenario writes them, a stop build that
//! fails as injected, and the stages of every build reported with its transition.

use crate::common::*;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;

const RESTART: &str =
    r#"phases = ["create", "build", "agent", "stop", "start", "agent", "pty", "delete"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_workspaces_stop_start_and_reach_their_new_agent() {
    let sim = start(fast_sim()).await;
    let r = run(&config(&sim, 20, 20, RESTART)).await;
    assert_eq!(
        report::summary_line(&r),
        "20 workspaces: 20 succeeded, 0 failed"
    );
    for w in &r.workspaces {
        let phases: Vec<Phase> = w.phases.iter().map(|p| p.phase).collect();
        assert_eq!(
            phases,
            [
                Phase::Create,
                Phase::Build,
                Phase::Agent,
                Phase::Stop,
                Phase::Start,
                Phase::Agent,
                Phase::Pty,
                Phase::Delete
            ],
            "{}",
            w.name
        );
        // Stages of the first build, the stop and the restart, each with its transition.
        let stages: Vec<(&str, &str)> = w
            .build_stages
            .iter()
            .map(|s| (s.transition, s.stage))
            .collect();
        for want in [
            ("start", "apply"),
            ("start", "agent_connect"),
            ("stop", "queue"),
            ("stop", "apply"),
        ] {
            assert!(stages.contains(&want), "{}: {want:?} in {stages:?}", w.name);
        }
        assert_eq!(
            stages
                .iter()
                .filter(|(t, s)| *t == "start" && *s == "apply")
                .count(),
            2,
            "the first build and the restart: {stages:?}"
        );
    }
    // Phases that end on an event carry when the simulator wrote it: inside the phase, and
    // the phase ends after it (our own lateness is what lies between).
    for w in &r.workspaces {
        for p in [Phase::Build, Phase::Agent, Phase::Stop, Phase::Start] {
            let rec = w.record(p).unwrap();
            let at = rec
                .event_at
                .unwrap_or_else(|| panic!("{}: {p} has no event_at", w.name));
            let end = rec.started_at + rec.duration;
            assert!(
                rec.started_at <= at && at <= end,
                "{}: {p} event at {at}, phase {} to {end}",
                w.name,
                rec.started_at
            );
        }
    }
    for l in sim.ledger() {
        assert_eq!((l.stops, l.restarts), (1, 1), "{}", l.name);
        assert!(l.deleted, "{}", l.name);
    }
    // Exactly one stop and one start build posted per workspace, besides the deletes.
    assert_eq!(
        sim.request_count("POST /api/v2/workspaces/{workspace}/builds"),
        60
    );
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stop_build_is_build_failed_in_stop_and_still_deleted() {
    let mut sc = fast_sim();
    sc.seed = 5;
    sc.failures.stop = 0.3;
    let sim = start(sc).await;
    let r = run(&config(&sim, 30, 30, RESTART)).await;
    Injected {
        knob: "stop",
        rate: 0.3,
        phase: Phase::Stop,
        reason: Reason::BuildFailed,
        says: "the stop build failed",
    }
    .check(&sim, &r);
    assert!(settle(&sim).await.is_empty());
}

/// The metrics of a restart scenario: stop and start phases, and build stages by transition,
/// from start-up (zero) and after a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_series_exist_from_start_up_and_count_the_run() {
    let sim = start(fast_sim()).await;
    let cfg = config(&sim, 3, 3, RESTART);
    let m = scaletestd::metrics::Metrics::new();
    m.declare(&cfg.scenarios[0]);
    let before = m.encode(false);
    for want in [
        "scaletest_phase_duration_seconds_count{scenario=\"test\",phase=\"stop\",outcome=\"success\"} 0",
        "scaletest_phase_duration_seconds_count{scenario=\"test\",phase=\"start\",outcome=\"success\"} 0",
        "scaletest_build_stage_duration_seconds_count{scenario=\"test\",stage=\"apply\",transition=\"stop\"} 0",
        "scaletest_build_stage_duration_seconds_count{scenario=\"test\",stage=\"apply\",transition=\"start\"} 0",
    ] {
        assert!(before.contains(want), "{want}");
    }
    assert!(!before.contains("stage=\"agent_connect\",transition=\"stop\""));
    let r = run_observed(&cfg, &client(&cfg), m.clone()).await;
    assert_eq!(r.failed(), 0, "{}", report::summary_line(&r));
    let after = m.encode(false);
    for want in [
        "scaletest_phase_duration_seconds_count{scenario=\"test\",phase=\"stop\",outcome=\"success\"} 3",
        "scaletest_phase_duration_seconds_count{scenario=\"test\",phase=\"agent\",outcome=\"success\"} 6",
        "scaletest_build_stage_duration_seconds_count{scenario=\"test\",stage=\"apply\",transition=\"stop\"} 3",
        "scaletest_build_stage_duration_seconds_count{scenario=\"test\",stage=\"apply\",transition=\"start\"} 6",
    ] {
        assert!(after.contains(want), "{want}\n{after}");
    }
    assert!(settle(&sim).await.is_empty());
}
