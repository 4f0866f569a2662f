//! Test users: a scenario's workspaces spread over `[scenario.users]`, each called with its
//! owner's token (the simulator records who called), the pool found again on the next run
//! and by a new process, removed by `cleanup --users` except a user that still owns a
//! workspace, and Coder's per-user rate limit met and waited out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use scaletestd::config::Config;
use scaletestd::report;
use scaletestd::runner::{self, NoObserver, RunReport, Setup, Slice};
use scaletestd::users::Pools;
use tokio_util::sync::CancellationToken;

const USERS: &str = "[scenario.users]\ncount = 8\nprefix = \"st-user\"\ntoken_lifetime = \"2h\"";

async fn run_as(cfg: &Config, pools: &Pools) -> RunReport {
    let setup = Setup {
        users: Some(pools),
        ..Default::default()
    };
    run_in(cfg, &client(cfg), setup).await
}

fn users_config(sim: &scaletestd::sim::Sim, count: u32, users: &str) -> Config {
    // The table's lines go after the scenario's keys, so it is a `[scenario.users]` table.
    config(sim, count, count, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_workspaces_over_eight_users_each_called_with_its_owners_token() {
    let sim = start(fast_sim()).await;
    let cfg = users_config(&sim, 40, USERS);
    let pools = Pools::default();
    let r = run_as(&cfg, &pools).await;
    assert_eq!(
        report::summary_line(&r),
        "40 workspaces: 40 succeeded, 0 failed"
    );
    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 40);
    for l in &ledger {
        // scaletest-<run>-<n>: workspace n belongs to user (n-1) % 8 + 1.
        let n: u32 = l.name.rsplit('-').next().unwrap().parse().unwrap();
        let owner = format!("st-user-{}", (n - 1) % 8 + 1);
        assert_eq!(l.owner, owner, "{}", l.name);
        // Every call about it (create, builds, event streams, agents, SSH, terminal,
        // delete) came with the owner's token, none with the main one.
        assert_eq!(
            l.callers,
            BTreeSet::from([owner.clone()]),
            "{}: who called",
            l.name
        );
        assert!(l.deleted, "{}", l.name);
    }
    // Users and tokens created so far.
    let created = || {
        (
            sim.request_count("POST /api/v2/users"),
            sim.request_count("POST /api/v2/users/{user}/keys/tokens"),
        )
    };
    assert_eq!(created(), (8, 8));
    let calls = sim.app.state.accounts.calls();
    for n in 1..=8 {
        assert!(calls[&format!("st-user-{n}")] > 5, "st-user-{n}: {calls:?}");
    }

    // The next run of the same process: the same users and tokens. Then a new process
    // (its own pools): the users are found by name, only tokens are new.
    for (pools, want) in [(&pools, (8, 8)), (&Pools::default(), (8, 16))] {
        let r = run_as(&cfg, pools).await;
        assert_eq!(
            report::summary_line(&r),
            "40 workspaces: 40 succeeded, 0 failed"
        );
        assert_eq!(created(), want);
    }
    assert_eq!(sim.app.state.accounts.issued_tokens().len(), 16);
    assert!(settle(&sim).await.is_empty());

    // st-user-3 still owns a workspace (not one of ours by name, so no sweep takes it):
    // cleanup --users deletes the other seven and says why it kept that one.
    let users = Pools::default()
        .clients(
            &client(&cfg),
            cfg.scenarios[0].users.as_ref().unwrap(),
            sim.app.state.id.org.id,
        )
        .await
        .unwrap();
    let c3 = &users[2];
    create_workspace(c3, "kept-by-st-user-3").await;
    let dir = TempDir::new("users_cleanup");
    let file = config_text(&sim, 40, 40, USERS).write(dir.path(), "users.toml");
    let dry = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            Bin::new(&["cleanup", "--users", "--dry-run", "--config"])
                .arg(&file)
                .run()
        })
        .await
        .unwrap()
        .expect_code(0)
    };
    assert!(dry.stdout.contains("would delete user st-user-8"), "{dry}");
    assert_eq!(sim.app.state.accounts.search("st-user").len(), 8, "{dry}");
    let out = tokio::task::spawn_blocking(move || {
        Bin::new(&["cleanup", "--users", "--config"])
            .arg(&file)
            .run()
    })
    .await
    .unwrap()
    .expect_code(0);
    for n in [1, 2, 4, 5, 6, 7, 8] {
        assert!(
            out.stdout.contains(&format!("deleted user st-user-{n}\n")),
            "{out}"
        );
    }
    assert!(out.stdout.contains("kept user st-user-3: "), "{out}");
    assert!(out.stdout.contains("7 test users deleted, 1 kept"), "{out}");
    let left: Vec<String> = sim
        .app
        .state
        .accounts
        .search("st-user")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(left, ["st-user-3"]);
    // No token of a test user reached the output.
    for token in sim.app.state.accounts.issued_tokens() {
        assert!(!out.all().contains(&token) && !dry.all().contains(&token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_rate_limits_are_met_waited_out_and_only_test_users_meet_them() {
    let mut sc = fast_sim();
    // Two requests per user per route a second: each user's four creates collide.
    sc.rate_limit = 2;
    sc.rate_window = scaletestd::config::HumanDuration(Duration::from_secs(1));
    let sim = start(sc).await;
    // The main token is the owner's and sends the bypass header, which Coder honours for
    // owners only; the test users' clients never send it.
    let cfg = config_text(
        &sim,
        16,
        16,
        "[scenario.users]\ncount = 4\nprefix = \"rl-user\"",
    )
    .coder("bypass_ratelimit = true")
    .parse();
    let r = run_as(&cfg, &Pools::default()).await;
    assert_eq!(
        report::summary_line(&r),
        "16 workspaces: 16 succeeded, 0 failed"
    );
    let limited = sim.app.state.accounts.limited();
    assert!(!limited.is_empty(), "no 429 was met");
    for user in limited.keys() {
        assert!(
            user.starts_with("rl-user-"),
            "{user} was limited: {limited:?}"
        );
    }
    for l in sim.ledger() {
        assert_eq!(l.callers.len(), 1, "{}: {:?}", l.name, l.callers);
        assert!(l.deleted);
    }
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_manage_users_fails_the_run_saying_what_role_it_needs() {
    let sim = start(fast_sim()).await;
    // A member's token (a user of a pool) as the main token.
    let admin_cfg = users_config(&sim, 1, "[scenario.users]\ncount = 1\nprefix = \"member\"");
    let member = Pools::default()
        .clients(
            &client(&admin_cfg),
            admin_cfg.scenarios[0].users.as_ref().unwrap(),
            sim.app.state.id.org.id,
        )
        .await
        .unwrap()
        .remove(0);
    let cfg = users_config(&sim, 4, USERS);
    let r = runner::run(
        &member,
        &cfg.scenarios[0],
        Setup::default(),
        Slice { first: 1, count: 4 },
        Arc::new(NoObserver),
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await;
    let e = r.setup_error.expect("the run cannot start");
    let msg = e.message;
    assert_eq!(e.reason, scaletestd::phases::Reason::AuthError, "{msg}");
    assert!(
        msg.contains("creating test user st-user-1") && msg.contains("owner or user-admin"),
        "{msg}"
    );
    assert!(sim.live_workspaces().is_empty());
}

/// A test user as the simulator holds it: (login type, service account, email).
fn made(sim: &scaletestd::sim::Sim, name: &str) -> (String, bool, String) {
    let u = sim.app.state.accounts.find(name).expect("the user exists");
    (u.login_type, u.is_service_account, u.email)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_made_as_the_deployment_allows_password_users_unless_licensed() {
    // Unlicensed (coderd/users.go `postUser`: login type `none` is for service accounts,
    // a Premium feature): password users, with the scenario's email domain. Licensed for
    // service accounts: no email, no password, login type `none`.
    type Made = fn(u32) -> (String, bool, String);
    let cases: [(bool, &str, &str, Made); 2] = [
        (
            false,
            "pw-user",
            "\nemail_domain = \"Staging.Example.com\"",
            |n| {
                (
                    "password".into(),
                    false,
                    format!("pw-user-{n}@staging.example.com"),
                )
            },
        ),
        (true, "sa-user", "", |_| {
            ("none".into(), true, String::new())
        }),
    ];
    for (licensed, prefix, extra, want) in cases {
        let mut sc = fast_sim();
        sc.service_accounts = licensed;
        let sim = start(sc).await;
        let cfg = users_config(
            &sim,
            4,
            &format!("[scenario.users]\ncount = 2\nprefix = \"{prefix}\"{extra}"),
        );
        let r = run_as(&cfg, &Pools::default()).await;
        assert_eq!(
            report::summary_line(&r),
            "4 workspaces: 4 succeeded, 0 failed"
        );
        for n in 1..=2 {
            assert_eq!(made(&sim, &format!("{prefix}-{n}")), want(n));
        }
        let passwords = sim.app.state.accounts.received_passwords();
        if licensed {
            assert!(passwords.is_empty());
        } else {
            assert_eq!(passwords.len(), 2);
            assert_ne!(passwords[0], passwords[1], "one password per user");
            assert!(passwords.iter().all(|p| p.len() == 40));
        }
        assert_eq!(sim.request_count("GET /api/v2/entitlements"), 1);
        assert!(settle(&sim).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_refuses_users_as_an_unlicensed_coderd_does() {
    let sim = start(fast_sim()).await;
    let org = sim.app.state.id.org.id;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        let req = http
            .post(format!("{}api/v2/users", sim.url()))
            .header("Coder-Session-Token", TOKEN)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            (
                status,
                body["message"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let cases = [
        (
            serde_json::json!({"username": "u-none", "email": "u@x.test", "login_type": "none", "organization_ids": [org]}),
            400,
            "Login type 'none' requires a service account.",
        ),
        (
            serde_json::json!({"username": "u-sa", "service_account": true, "organization_ids": [org]}),
            403,
            "Service Accounts is a Premium feature. Contact sales!",
        ),
        (
            serde_json::json!({"username": "u-sa", "service_account": true, "email": "u@x.test", "organization_ids": [org]}),
            400,
            "Email cannot be set for service accounts.",
        ),
        (
            serde_json::json!({"username": "u-weak", "email": "w@x.test", "password": "password1", "organization_ids": [org]}),
            400,
            "Password is invalid",
        ),
        (
            serde_json::json!({"username": "u-ok", "email": "ok@x.test", "password": "Xk3-p9Lq-Zr7w-Tb2m", "organization_ids": [org]}),
            201,
            "",
        ),
    ];
    for (body, status, message) in cases {
        assert_eq!(
            post(body.clone()).await,
            (status, message.to_string()),
            "{body}"
        );
    }
}
