//! Secrets: a canary token never appears in logs (every level, every crate), metrics, spans
//! (as an OTLP receiver gets them), the status page, the JSON output or error messages, even
//! when something in front of Coder echoes it back; nor do the tokens and passwords of test
//! users.

use std::time::Duration;

use crate::common::daemon::{cron_at, daemon_config, spawn_logging, tmpdir};
use crate::common::eventually;
use crate::common::otlp;
use crate::common::{BIN, Bin, ConfigText, ScenarioText};
use scaletestd::sim::Sim;

const CANARY: &str = "canary-SECRET-7d1f0e3b5a9c";

/// A proxy in front of Coder that echoes the presented token in its error body.
async fn echoing_proxy() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let token = headers
            .get("coder-session-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            axum::http::StatusCode::BAD_GATEWAY,
            format!(r#"{{"message":"upstream refused token {token}","detail":"token={token}"}}"#),
        )
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_token_appears_nowhere() {
    let (endpoint, got) = otlp::grpc().await;
    let mut sc = crate::common::fast_sim();
    sc.failures.build = 0.3;
    sc.failures.pty_drop = 0.3;
    sc.tracing.otlp_endpoint = Some(endpoint.clone());
    let sim = Sim::start(sc, CANARY, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tmpdir("secrets");
    let mut seen = String::new();

    // The daemon at every log level, in JSON, exporting spans.
    let cfg = daemon_config(sim.url().as_str())
        .telemetry(&format!("otlp_endpoint = \"{endpoint}\""))
        .scenario(
            ScenarioText::new("sec", 6)
                .prefix("stsec")
                .schedule(&cron_at(&[4]))
                .phases(&["create", "build", "agent", "ssh", "pty", "delete"])
                .command("echo hi", "hi")
                .table(
                    "ssh",
                    &format!(
                        "transport = \"proxy-command\"\nproxy_command = \"{BIN} sim-coder ssh --stdio {{workspace}}\""
                    ),
                )
                .table("users", "count = 2\nprefix = \"stsec-user\""),
        )
        .write(&dir, "run.toml");
    let mut daemon = spawn_logging(
        &[
            "run",
            "--log-format",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        CANARY,
        "trace",
    );
    let s = daemon
        .wait_for(Duration::from_secs(40), |s| {
            s.sum("scaletest_runs", &[("scenario", "sec")]) == 1.0
        })
        .await;
    seen.push_str(&s.text);
    seen.push_str(&daemon.get("/metrics", None).await.1);
    seen.push_str(&daemon.get("/", None).await.1);
    seen.push_str(&daemon.get("/readyz", None).await.1);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
    seen.push_str(&daemon.log());
    assert!(
        daemon.log().lines().count() > 100,
        "trace-level logs were written"
    );

    // once, with JSON output and a failing phase.
    let once_cfg = ConfigText::new(sim.url())
        .scenario(ScenarioText::new("o", 4).command("echo hi", "hi"))
        .write(&dir, "once.toml");
    let json = dir.join("out.json");
    let out = Bin::new(&["once", "--log", "trace", "--config"])
        .arg(&once_cfg)
        .arg("--output")
        .arg(format!("json:{}", json.display()))
        .env("CODER_SESSION_TOKEN", CANARY)
        .run();
    seen.push_str(&out.all());
    seen.push_str(&std::fs::read_to_string(&json).unwrap());

    // Through a proxy that echoes the token: the errors must not carry it.
    let proxy = echoing_proxy().await;
    let proxy_cfg = ConfigText::new(&proxy)
        .scenario(ScenarioText::new("p", 1))
        .write(&dir, "proxy.toml");
    for args in [
        vec!["once", "--log", "trace", "--config"],
        vec!["check", "--log", "trace", "--config"],
    ] {
        let text = Bin::new(&args)
            .arg(&proxy_cfg)
            .env("CODER_SESSION_TOKEN", CANARY)
            .run()
            .all();
        assert!(
            text.contains("upstream refused token [redacted]"),
            "the proxy's message is kept, scrubbed: {text}"
        );
        seen.push_str(&text);
    }

    // Spans, ours and the simulator's.
    tokio::task::block_in_place(|| sim.flush_spans());
    eventually(Duration::from_secs(10), || got.spans().len() > 50).await;
    let spans = got.spans();
    assert!(spans.len() > 50, "spans were captured: {}", spans.len());
    for g in &spans {
        seen.push_str(&format!("{:?}", g.span));
    }

    for (i, _) in seen.match_indices(CANARY).take(6) {
        let lo = seen.floor_char_boundary(i.saturating_sub(300));
        let hi = seen.ceil_char_boundary((i + 80).min(seen.len()));
        println!("LEAK: ...{}...", &seen[lo..hi]);
    }
    let leaks = seen.matches(CANARY).count();
    assert_eq!(leaks, 0, "the token leaked {leaks} times");
    // The test users' tokens, issued to the daemon by the simulator, likewise.
    let user_tokens = sim.app.state.accounts.issued_tokens();
    assert_eq!(user_tokens.len(), 2, "one token per test user");
    for t in &user_tokens {
        assert_eq!(
            seen.matches(t.as_str()).count(),
            0,
            "a test user's token leaked"
        );
    }
    // And their passwords (an unlicensed deployment: password users), which the daemon made
    // up and sent once.
    let passwords = sim.app.state.accounts.received_passwords();
    assert_eq!(passwords.len(), 2, "one password per test user");
    for p in &passwords {
        assert!(p.len() >= 32, "a password of {} characters", p.len());
        assert_eq!(
            seen.matches(p.as_str()).count(),
            0,
            "a test user's password leaked"
        );
    }
    println!(
        "canary checked across {} bytes of logs, metrics, pages, JSON, errors and spans: 0 leaks",
        seen.len()
    );
    assert!(crate::common::settle(&sim).await.is_empty());
}
