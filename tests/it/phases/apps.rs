//! Workspace apps: the `app` phase over path-based and subdomain apps, in a walk with a
//! restart; every app failure knob classified as injected; and the simulator's app proxy
//! answering as Coder's does (redirects, cookies, error pages).

use std::time::Duration;

use crate::common::*;
use scaletestd::coder::WorkspaceAppHealth;
use scaletestd::phases::{Phase, Reason};
use scaletestd::report;
use scaletestd::sim::SimConfig;

const WALK: &str =
    r#"phases = ["create", "build", "agent", "app", "stop", "start", "agent", "pty", "delete"]"#;
const WILDCARD: &str = "*.apps.sim.test";

fn wildcard_sim() -> SimConfig {
    SimConfig {
        wildcard_host: Some(WILDCARD.into()),
        ..fast_sim()
    }
}

/// [`config`] with `[coder] apps_address` so the wildcard names reach the simulator.
fn app_config(sim: &scaletestd::sim::Sim, count: u32, extra: &str) -> scaletestd::config::Config {
    config_text(sim, count, count, extra)
        .coder("apps_address = \"127.0.0.1\"")
        .parse()
}

fn walk_of(w: &scaletestd::runner::WorkspaceReport) -> Vec<Phase> {
    w.phases.iter().map(|p| p.phase).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_workspaces_reach_a_path_app_then_restart() {
    let sim = start(fast_sim()).await;
    let cfg = app_config(
        &sim,
        20,
        &format!("{WALK}\napp = \"echo\"\napp_expect = \"echo app on\""),
    );
    let r = run(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "20 workspaces: 20 succeeded, 0 failed"
    );
    for w in &r.workspaces {
        assert_eq!(
            walk_of(w),
            [
                Phase::Create,
                Phase::Build,
                Phase::Agent,
                Phase::App,
                Phase::Stop,
                Phase::Start,
                Phase::Agent,
                Phase::Pty,
                Phase::Delete
            ]
        );
        let app = w.record(Phase::App).unwrap();
        assert!(app.ok);
        // The health wait and the request, timed apart.
        for part in ["health", "http"] {
            assert!(app.sub_timings_ms.contains_key(part), "{part}: {app:?}");
        }
        assert!(!app.sub_timings_ms.contains_key("websocket_echo"));
    }
    for l in sim.ledger() {
        assert_eq!(
            (l.app_requests, l.app_access, l.app_signed),
            (1, Some("path"), 0),
            "{}",
            l.name
        );
        assert_eq!((l.stops, l.restarts), (1, 1), "{}", l.name);
        assert!(l.deleted, "{}", l.name);
    }
    assert_eq!(
        sim.request_count("GET /@{user}/{workspace_and_agent}/apps/{workspaceapp}/*"),
        20
    );
    // No wildcard asked for: the apps are not marked `subdomain`.
    assert_eq!(sim.request_count("GET /api/v2/applications/host"), 0);
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_workspaces_reach_a_subdomain_app_and_its_websocket_echo() {
    let sim = start(wildcard_sim()).await;
    let cfg = app_config(
        &sim,
        20,
        &format!("{WALK}\napp = \"ws-echo\"\napp_expect = \"ws-echo\"\napp_websocket = true"),
    );
    let r = run(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "20 workspaces: 20 succeeded, 0 failed"
    );
    for w in &r.workspaces {
        let app = w.record(Phase::App).unwrap();
        assert!(app.sub_timings_ms.contains_key("websocket_echo"), "{app:?}");
    }
    for l in sim.ledger() {
        // The GET with the session token, then the websocket on the signed app token alone.
        assert_eq!(
            (l.app_requests, l.app_access, l.app_signed, l.app_echoes),
            (2, Some("subdomain"), 1, 1),
            "{}",
            l.name
        );
        assert!(l.deleted, "{}", l.name);
    }
    // The wildcard host is asked once per run, not once per workspace.
    assert_eq!(sim.request_count("GET /api/v2/applications/host"), 1);
    assert_eq!(
        sim.request_count("GET {app}--{agent}--{workspace}--{user}.{wildcard}/*"),
        40
    );
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_access_path_is_kept_on_a_wildcard_deployment() {
    let sim = start(wildcard_sim()).await;
    let cfg = app_config(
        &sim,
        3,
        &format!("{WALK}\napp = \"echo\"\napp_access = \"path\""),
    );
    let r = run(&cfg).await;
    assert_eq!(r.failed(), 0, "{}", report::summary_line(&r));
    for l in sim.ledger() {
        assert_eq!(l.app_access, Some("path"), "{}", l.name);
    }
    assert_eq!(sim.request_count("GET /api/v2/applications/host"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subdomain_access_without_a_wildcard_says_what_to_set() {
    let sim = start(fast_sim()).await;
    let cfg = app_config(
        &sim,
        2,
        &format!("{WALK}\napp = \"echo\"\napp_access = \"subdomain\""),
    );
    let r = run(&cfg).await;
    for w in &r.workspaces {
        let (phase, reason, msg) = w.failure().expect("no wildcard host");
        assert_eq!((phase, reason), (Phase::App, Reason::ConnectError), "{msg}");
        assert!(msg.contains("CODER_WILDCARD_ACCESS_URL"), "{msg}");
        assert!(w.record(Phase::Delete).is_some_and(|d| d.ok));
    }
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_slug_is_the_proxys_404_naming_the_apps_there_are() {
    let sim = start(fast_sim()).await;
    let cfg = app_config(&sim, 2, &format!("{WALK}\napp = \"code-server\""));
    let r = run(&cfg).await;
    for w in &r.workspaces {
        let (phase, reason, msg) = w.failure().expect("no such app");
        assert_eq!((phase, reason), (Phase::App, Reason::Http4xx), "{msg}");
        assert!(
            msg.contains("answered 404 (Application Not Found)"),
            "{msg}"
        );
        assert!(msg.contains("the agent lists apps: echo, ws-echo"), "{msg}");
    }
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_failure_knobs_are_classified_as_injected() {
    for (knob, reason) in [
        ("app_502", Reason::Http5xx),
        ("app_unhealthy", Reason::AgentUnhealthy),
    ] {
        let mut sc = fast_sim();
        sc.seed = 11;
        match knob {
            "app_502" => sc.failures.app_502 = 0.3,
            _ => sc.failures.app_unhealthy = 0.3,
        }
        let sim = start(sc).await;
        let cfg = app_config(&sim, 24, &format!("{WALK}\napp = \"echo\""));
        let r = run(&cfg).await;
        Injected {
            knob,
            rate: 0.3,
            phase: Phase::App,
            reason,
            says: match knob {
                "app_502" => "answered 502 (Bad Gateway)",
                _ => "is unhealthy",
            },
        }
        .check(&sim, &r);
        for l in sim.ledger() {
            let injected = match knob {
                "app_502" => l.app_502,
                _ => l.app_unhealthy,
            };
            assert_eq!(
                injected,
                sim.app.state.cfg.inject(knob, &l.name, 0.3),
                "{}",
                l.name
            );
        }
        assert!(settle(&sim).await.is_empty(), "{knob}");
    }
}

/// The simulator's proxy, asked directly: what Coder's answers for each way of asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_proxy_answers_as_coder_does() {
    let sim = start(wildcard_sim()).await;
    let cfg = app_config(&sim, 1, "");
    let api = client(&cfg);
    let admin = sim.app.state.id.user.clone();
    let ws = sim.app.state.create_workspace("probe-1", &admin, vec![]);
    let ws = eventually_async(Duration::from_secs(10), || async {
        let w = api.workspace(ws.id).await.ok()?;
        let healthy = w
            .latest_build
            .agents()
            .flat_map(|a| a.apps.iter())
            .any(|p| p.slug == "echo" && p.health == WorkspaceAppHealth::Healthy);
        healthy.then_some(w)
    })
    .await;
    let agent = ws.latest_build.agents().next().unwrap();
    let apps: Vec<(&str, bool, WorkspaceAppHealth)> = agent
        .apps
        .iter()
        .map(|a| (a.slug.as_str(), a.subdomain, a.health))
        .collect();
    assert_eq!(
        apps,
        [
            ("echo", true, WorkspaceAppHealth::Healthy),
            ("ws-echo", true, WorkspaceAppHealth::Disabled)
        ]
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(
            "echo--main--probe-1--admin.apps.sim.test",
            sim.url().socket_addrs(|| None).unwrap()[0],
        )
        .build()
        .unwrap();
    let base = sim.url();
    let path = |p: &str| base.join(p).unwrap();
    let port = base.port().unwrap();

    // The wildcard host, with the access URL's port.
    let host = http
        .get(path("/api/v2/applications/host"))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let host: serde_json::Value = serde_json::from_str(&host).unwrap();
    assert_eq!(host["host"], format!("{WILDCARD}:{port}"));

    // Signed in: the app, and a signed app token on the app's base path.
    let r = http
        .get(path("/@admin/probe-1.main/apps/echo/hello"))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("coder_signed_app_token=")
            && cookie.contains("Path=/@admin/probe-1.main/apps/echo/"),
        "{cookie}"
    );
    let signed = cookie.split(';').next().unwrap().to_string();
    assert_eq!(
        r.text().await.unwrap(),
        "echo app on probe-1.main (path): GET /hello\n"
    );

    // The signed token alone lets the next request in; for another app it does not.
    let r = http
        .get(path("/@admin/probe-1.main/apps/echo/"))
        .header("Cookie", &signed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .get(path("/@admin/probe-1.main/apps/ws-echo/"))
        .header("Cookie", &signed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // Not signed in (no token, or a wrong one): 303 to the login page.
    for token in [None, Some("wrong")] {
        let mut req = http.get(path("/@admin/probe-1.main/apps/echo/"));
        if let Some(t) = token {
            req = req.header("Coder-Session-Token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 303, "{token:?}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with(&format!("{base}login?")), "{to}");
        assert!(
            to.contains("redirect=%2F%40admin%2Fprobe-1.main%2Fapps%2Fecho%2F"),
            "{to}"
        );
    }

    // No trailing slash: 307 to add it (after the token check, with the cookie).
    let r = http
        .get(path("/@admin/probe-1.main/apps/echo"))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], "/@admin/probe-1.main/apps/echo/");

    // `@me`, an unknown app, another agent's name: Coder's HTML 404 page.
    for p in [
        "/@me/probe-1.main/apps/echo/",
        "/@admin/probe-1.main/apps/nope/",
        "/@admin/probe-1.other/apps/echo/",
        "/@admin/nope-1.main/apps/echo/",
    ] {
        let r = http
            .get(path(p))
            .header("Coder-Session-Token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{p}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("<title>Application Not Found</title>"),
            "{p}"
        );
    }

    // Subdomain: the same app by host name; not signed in, 303 to the app auth endpoint.
    let sub = format!("http://echo--main--probe-1--admin.apps.sim.test:{port}/x");
    let r = http
        .get(&sub)
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "echo app on probe-1.main (subdomain): GET /x\n"
    );
    let r = http.get(&sub).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(
        to.starts_with(&format!(
            "{base}api/v2/applications/auth-redirect?redirect_uri="
        )),
        "{to}"
    );

    // A stopped workspace: 400 "Workspace Offline".
    let stop = scaletestd::coder::CreateWorkspaceBuildRequest {
        transition: scaletestd::coder::WorkspaceTransition::Stop,
        orphan: false,
    };
    api.create_build(ws.id, &stop).await.unwrap();
    eventually_async(Duration::from_secs(10), || async {
        let w = api.workspace(ws.id).await.ok()?;
        (w.latest_build.job.status == scaletestd::coder::ProvisionerJobStatus::Succeeded)
            .then_some(())
    })
    .await;
    let r = http
        .get(path("/@admin/probe-1.main/apps/echo/"))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Workspace Offline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_apps_disabled_is_403_with_a_hint() {
    let sim = start(SimConfig {
        path_apps: false,
        ..fast_sim()
    })
    .await;
    let cfg = app_config(&sim, 2, &format!("{WALK}\napp = \"echo\""));
    let r = run(&cfg).await;
    for w in &r.workspaces {
        let (phase, reason, msg) = w.failure().expect("path apps are off");
        assert_eq!((phase, reason), (Phase::App, Reason::Http4xx), "{msg}");
        assert!(msg.contains("answered 403 (Forbidden)"), "{msg}");
        assert!(msg.contains("try app_access = \"subdomain\""), "{msg}");
    }
    assert!(settle(&sim).await.is_empty());
}

/// The `app` phase's series exist from start-up and count a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_series_exist_from_start_up_and_count_the_run() {
    let sim = start(fast_sim()).await;
    let cfg = app_config(&sim, 3, &format!("{WALK}\napp = \"echo\""));
    let m = scaletestd::metrics::Metrics::new();
    m.declare(&cfg.scenarios[0]);
    let zero = "scaletest_phase_duration_seconds_count{scenario=\"test\",phase=\"app\",outcome=\"success\"} 0";
    assert!(m.encode(false).contains(zero));
    let observed = scaletestd::coder::Client::observed(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        cfg.coder.client_options(true),
        m.clone(),
    );
    let r = run_observed(&cfg, &observed, m.clone()).await;
    assert_eq!(r.failed(), 0, "{}", report::summary_line(&r));
    let after = m.encode(false);
    let three = zero.replace("} 0", "} 3");
    assert!(after.contains(&three), "{after}");
    // The proxied request is an API call like any other, under the proxy's route pattern.
    assert!(
        after.contains(
            "route=\"/@{user}/{workspace_and_agent}/apps/{workspaceapp}/*\",code=\"200\""
        ),
        "{after}"
    );
    assert!(settle(&sim).await.is_empty());
}
