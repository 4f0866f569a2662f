//! Secrets: a canary token never appears in logs (every level, every crate), metrics, spans
//! (as an OTLP receiver gets them), the status page, the JSON output or error messages, even
//! when something in front of Coder echoes it back; nor do the tokens and passwords of test
//! users.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::{BIN, cron_at, spawn_logging, tmpdir, write_config};
use common::eventually;
use common::otlp;
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
    let mut sc = common::fast_sim();
    sc.failures.build = 0.3;
    sc.failures.pty_drop = 0.3;
    sc.tracing.otlp_endpoint = Some(endpoint.clone());
    let sim = Sim::start(sc, CANARY, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tmpdir("secrets");
    let mut seen = String::new();

    // The daemon at every log level, in JSON, exporting spans.
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &format!(
            "[[scenario]]\nname = \"sec\"\nworkspace_prefix = \"stsec\"\nschedule = \"{}\"\ntemplate = \"docker\"\ncount = 6\nphases = [\"create\", \"build\", \"agent\", \"ssh\", \"pty\", \"delete\"]\nrun_command = \"echo hi\"\nexpect_output = \"hi\"\n[scenario.ssh]\ntransport = \"proxy-command\"\nproxy_command = \"{BIN} sim-coder ssh --stdio {{workspace}}\"\n[scenario.users]\ncount = 2\nprefix = \"stsec-user\"\n",
            cron_at(&[4])
        ),
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[telemetry]\n",
        &format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
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
    let once_cfg = dir.join("once.toml");
    std::fs::write(&once_cfg, format!("[coder]\nurl = \"{}\"\n[[scenario]]\nname = \"o\"\ntemplate = \"docker\"\ncount = 4\nrun_command = \"echo hi\"\nexpect_output = \"hi\"\n", sim.url())).unwrap();
    let json = dir.join("out.json");
    let out = Command::new(BIN)
        .args(["once", "--log", "trace", "--config"])
        .arg(&once_cfg)
        .arg("--output")
        .arg(format!("json:{}", json.display()))
        .env("CODER_SESSION_TOKEN", CANARY)
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&out.stdout));
    seen.push_str(&String::from_utf8_lossy(&out.stderr));
    seen.push_str(&std::fs::read_to_string(&json).unwrap());

    // Through a proxy that echoes the token: the errors must not carry it.
    let proxy = echoing_proxy().await;
    let proxy_cfg = dir.join("proxy.toml");
    std::fs::write(&proxy_cfg, format!("[coder]\nurl = \"{proxy}\"\n[[scenario]]\nname = \"p\"\ntemplate = \"docker\"\ncount = 1\n")).unwrap();
    for args in [
        vec!["once", "--log", "trace", "--config"],
        vec!["check", "--log", "trace", "--config"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg(&proxy_cfg)
            .env("CODER_SESSION_TOKEN", CANARY)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
    assert!(common::settle(&sim).await.is_empty());
}
