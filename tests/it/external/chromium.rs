//! The status page in a real headless browser (Debian's chromium, installed by the test
//! command): it renders, its chart has one mark per run, every trace link resolves, a
//! traffic pool is listed once; and `/api/v1/status` serves the same runs as JSON.

use std::process::Command;
use std::time::Duration;

use crate::common::daemon::{cron_at, spawn, tmpdir};
use crate::common::*;

/// `chromium --headless` on `url`: the DOM after rendering, and a screenshot's bytes.
fn chromium(url: &str, dir: &std::path::Path) -> (String, Vec<u8>) {
    let run = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium is installed (the test command installs Debian's chromium)")
    };
    let dom = run(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = dir.join("page.png");
    let png = run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,2000",
    ]);
    assert!(
        png.status.success(),
        "{}",
        String::from_utf8_lossy(&png.stderr)
    );
    (
        String::from_utf8_lossy(&dom.stdout).into_owned(),
        std::fs::read(&shot).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_in_a_browser_with_one_mark_per_run_and_working_links() {
    let mut sc = fast_sim();
    sc.failures.build = 0.5;
    let sim = start(sc).await;
    let dir = tmpdir("status-page");
    let port = free_port();
    let cfg = ConfigText::new(sim.url())
        .server(&format!("listen = \"127.0.0.1:{port}\""))
        .server("shutdown_grace = \"30s\"")
        .telemetry(&format!(
            "trace_link = \"http://127.0.0.1:{port}/api/v1/traces/{{trace_id}}\""
        ))
        .scenario(
            ScenarioText::new("page", 4)
                .key(&format!("schedule = \"{}\"", cron_at(&[4, 6, 8])))
                .key("phases = [\"create\", \"build\", \"delete\"]"),
        )
        .scenario(
            ScenarioText::new("pool", 1)
                .key("kind = \"traffic\"")
                .key("workspace_prefix = \"stpool\"")
                .key("phases = [\"create\", \"build\", \"agent\", \"delete\"]")
                .key("tick_interval = \"500ms\""),
        )
        .write(dir.path(), "daemon.toml");
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    d.wait_for(Duration::from_secs(60), |s| {
        s.sum("scaletest_runs", &[("scenario", "page")]) == 3.0
            && s.sum("scaletest_workspaces_in_flight", &[("scenario", "page")]) == 0.0
    })
    .await;

    // The JSON: three runs, in the recent list and the last 24 hours.
    let (code, body) = d.get("/api/v1/status", None).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let page = status["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "page")
        .expect("the lifecycle scenario");
    assert_eq!(page["runs"].as_array().unwrap().len(), 3);
    assert_eq!(page["last_24h"].as_array().unwrap().len(), 3);
    let failed: u64 = page["last_24h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["failed"].as_u64().unwrap())
        .sum();
    assert!(failed > 0, "half the builds fail: {body}");
    assert_eq!(
        status["traffic"][0]["name"], "pool",
        "the pool's live numbers: {body}"
    );

    // The page in a browser.
    let url = format!("http://127.0.0.1:{port}/");
    let (dom, png) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || chromium(&url, &dir)
    })
    .await
    .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot of {} bytes",
        png.len()
    );
    assert!(dom.contains("<svg class=\"chart\""), "{dom}");
    assert_eq!(
        dom.matches("<circle class=\"run").count(),
        3,
        "one mark per run"
    );
    assert!(dom.matches("<circle class=\"run failed\"").count() >= 1);
    assert!(dom.contains("http-equiv=\"refresh\" content=\"30\""));
    assert_eq!(
        dom.matches("<h2>pool").count(),
        1,
        "the traffic pool is listed once"
    );
    assert!(
        !dom.contains("<h2>pool</h2><p>schedule"),
        "not as a lifecycle scenario"
    );

    // Every link resolves: the trace links answer with the workspace they name.
    let links: Vec<String> = dom
        .split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"))
        .collect();
    assert!(
        !links.is_empty(),
        "failed workspaces link their traces: {dom}"
    );
    for link in &links {
        let resp = reqwest::get(link).await.unwrap();
        assert_eq!(resp.status(), 200, "{link}");
        let doc: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(doc["scenario"], "page", "{link}: {doc}");
        assert_eq!(doc["reason"], "build_failed", "{link}: {doc}");
    }
}
