//! The create form and the inbox (issue 30) against the simulator: `parameters` before
//! `create` as each owner, a bad value failing there in Coder's words, a form load that
//! creates nothing, and `notify` timing "Workspace Created" to the watcher's inbox.

use std::collections::BTreeSet;

use crate::common::*;
use scaletestd::config::Config;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;
use scaletestd::users::Pools;

fn scenario(sim: &scaletestd::sim::Sim, count: u32, concurrency: u32, extra: &str) -> Config {
    ConfigText::new(sim.url())
        .scenario(
            ScenarioText::new("form", count)
                .key(&format!("concurrency = {concurrency}"))
                .key("run_command = \"echo hello-$((40+2))\"")
                .key("expect_output = \"hello-42\"")
                .keys(extra)
                .timeout("build", "20s")
                .timeout("agent", "20s")
                .timeout("delete", "20s"),
        )
        .parse()
}

/// A run whose workspaces are spread over the scenario's test users.
async fn run_as_users(cfg: &Config) -> scaletestd::runner::RunReport {
    let setup = scaletestd::runner::Setup {
        users: Some(&Pools::default()),
        ..Default::default()
    };
    run_in(cfg, &client(cfg), setup).await
}

const FORM_ROUTE: &str = "GET /api/v2/templateversions/{templateversion}/dynamic-parameters";
const CREATE_ROUTE: &str = "POST /api/v2/users/{user}/workspaces";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_is_loaded_before_create_as_each_owner_and_timed_apart() {
    let sim = start(fast_sim()).await;
    let cfg = scenario(
        &sim,
        10,
        5,
        "parameters = { region = \"us\", cpu = \"4\" }\nphases = [\"parameters\", \"create\", \"build\", \"agent\", \"pty\", \"delete\"]\n[scenario.users]\ncount = 2\nprefix = \"form-user\"",
    );
    let r = run_as_users(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "10 workspaces: 10 succeeded, 0 failed"
    );
    assert_eq!(sim.request_count(FORM_ROUTE), 10, "one form per workspace");
    for w in &r.workspaces {
        let rec = w.record(Phase::Parameters).expect("the form was loaded");
        let parts: BTreeSet<&str> = rec.sub_timings_ms.keys().copied().collect();
        assert_eq!(parts, BTreeSet::from(["change", "initial"]), "{}", w.name);
    }
    // Loaded as the workspace's owner: each ledger entry was called by its owner only.
    for l in sim.ledger() {
        assert_eq!(l.callers.len(), 1, "{}: {:?}", l.name, l.callers);
    }
    // The per-phase table shows the parts.
    let table = report::phase_table(&r);
    assert!(
        table.contains("parameters.initial") && table.contains("parameters.change"),
        "{table}"
    );
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_fails_in_parameters_with_coders_words_and_nothing_is_created() {
    let sim = start(fast_sim()).await;
    let cfg = scenario(
        &sim,
        3,
        3,
        "parameters = { region = \"mars\" }\nphases = [\"parameters\", \"create\", \"build\", \"delete\"]",
    );
    let r = run(&cfg).await;
    assert!(
        r.setup_error.is_none(),
        "the form judges the values, not the run's start"
    );
    assert_eq!(
        report::summary_line(&r),
        "3 workspaces: 0 succeeded, 3 failed (3 parameters: invalid_parameters)"
    );
    let (phase, reason, error) = r.workspaces[0].failure().unwrap();
    assert_eq!(
        (phase, reason),
        (Phase::Parameters, Reason::InvalidParameters)
    );
    assert_eq!(
        error,
        "parameter \"region\": Value must be a valid option; the value \"mars\" must be defined as one of options"
    );
    assert_eq!(sim.request_count(CREATE_ROUTE), 0, "nothing created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_load_of_fifty_evaluations_creates_nothing() {
    let sim = start(fast_sim()).await;
    let cfg = scenario(
        &sim,
        50,
        25,
        "parameters = { region = \"eu\", cpu = \"8\" }\nphases = [\"parameters\"]",
    );
    let r = run(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "50 workspaces: 50 succeeded, 0 failed"
    );
    assert_eq!(sim.request_count(FORM_ROUTE), 50);
    assert_eq!(sim.request_count(CREATE_ROUTE), 0);
    assert!(sim.live_workspaces().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_created_reaches_the_watchers_inbox_for_each_workspace() {
    let sim = start(fast_sim()).await;
    let cfg = scenario(
        &sim,
        8,
        8,
        "phases = [\"create\", \"notify\", \"build\", \"delete\"]\n[scenario.users]\ncount = 4\nprefix = \"inbox-user\"",
    );
    let r = run_as_users(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "8 workspaces: 8 succeeded, 0 failed"
    );
    // The watcher (the token's user) turned the notification on once, watched one inbox,
    // and was sent one notification per workspace.
    assert_eq!(
        sim.request_count("PUT /api/v2/users/{user}/notifications/preferences"),
        1
    );
    assert_eq!(
        sim.request_count("GET /api/v2/notifications/inbox/watch"),
        1,
        "one inbox per run"
    );
    let sent = sim.app.state.inboxes.sent();
    let admin = sim.app.state.id.user.id;
    assert_eq!(sent.len(), 8);
    assert!(sent.iter().all(|(user, _)| *user == admin));
    for w in &r.workspaces {
        let rec = w.record(Phase::Notify).unwrap();
        assert!(sent.iter().any(|(_, ws)| Some(*ws) == w.id), "{}", w.name);
        // The simulator's notifier takes 50 ms from its create handler, whose 201 the phase
        // starts from a few milliseconds later.
        assert!(
            (25..1000).contains(&rec.duration.as_millis()),
            "{}: {:?}",
            w.name,
            rec.duration
        );
        let parts: BTreeSet<&str> = rec.sub_timings_ms.keys().copied().collect();
        assert_eq!(parts, BTreeSet::from(["delivery", "queue"]), "{}", w.name);
    }
    assert!(settle(&sim).await.is_empty());
}

#[test]
fn notify_without_test_users_is_refused_with_the_reason() {
    let e = Config::parse(
        "n.toml",
        &ConfigText::new("http://127.0.0.1:1")
            .scenario(
                ScenarioText::new("n", 2)
                    .key("phases = [\"create\", \"notify\", \"build\", \"delete\"]"),
            )
            .text(),
        &scaletestd::config::Env {
            coder_session_token: Some(TOKEN.into()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("phase \"notify\" needs [scenario.users]: Coder notifies template admins of a new workspace except the user who created it"),
        "{e}"
    );
}
