//! Runs on demand: the daemon's run API (`POST /api/v1/runs`, `GET /api/v1/runs/{id}`) with
//! a missing, wrong and right token, a second start refused while the first runs (and
//! counted as skipped), the finished run's JSON, bad requests, the API off without a token
//! file, and `scaletestd trigger --wait` as a deploy pipeline would call it.

use std::time::Duration;

use crate::common::daemon::{spawn, tmpdir};
use crate::common::*;

const API_TOKEN: &str = "3f1c2a9be0d84f6aa1c07e55d2b9c4e1";

async fn post(
    addr: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/runs"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.expect("the daemon answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let doc = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default();
    (status, headers, doc)
}

async fn state(addr: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("the daemon answers");
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default(),
    )
}

fn config(
    dir: &std::path::Path,
    sim: &scaletestd::sim::Sim,
    token_file: Option<&std::path::Path>,
) -> std::path::PathBuf {
    let mut c = ConfigText::new(sim.url()).daemon();
    if let Some(f) = token_file {
        c = c.server(&format!("api_token_file = \"{}\"", f.display()));
    }
    // No schedule: this scenario runs only when asked.
    c.scenario(
        ScenarioText::new("smoke", 5)
            .key("phases = [\"create\", \"build\", \"agent\", \"delete\"]"),
    )
    .write(dir, "daemon.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_on_demand_with_the_right_token_only() {
    let mut sc = fast_sim();
    // Builds long enough for a second request to find the first run in flight.
    sc.latency.apply = ms(1500);
    let sim = start(sc).await;
    let dir = tmpdir("trigger");
    let token_file = dir.join("api-token");
    std::fs::write(&token_file, format!("{API_TOKEN}\n")).unwrap();
    let cfg = config(&dir, &sim, Some(&token_file));
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let addr = d.addr.clone();
    let body = r#"{"scenario": "smoke", "count": 3}"#;

    // Missing and wrong tokens.
    let (status, headers, _) = post(&addr, None, body).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, doc) = post(&addr, Some("not-the-token-at-all-000000000000"), body).await;
    assert_eq!(status, 401, "{doc}");
    let (status, _, _) = post(&addr, Some(&API_TOKEN[..31]), body).await;
    assert_eq!(status, 401, "a prefix of the token is not the token");

    // The right one: 202, the run's id and where to follow it.
    let (status, headers, doc) = post(&addr, Some(API_TOKEN), body).await;
    assert_eq!(status, 202, "{doc}");
    let id = doc["id"].as_str().unwrap().to_string();
    let location = headers["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/runs/{id}"));

    // A second start while it runs: 409, counted as a skipped run.
    let (status, _, doc) = post(&addr, Some(API_TOKEN), body).await;
    assert_eq!(status, 409, "{doc}");
    d.wait_for(Duration::from_secs(10), |s| {
        s.sum(
            "scaletest_runs_skipped",
            &[("scenario", "smoke"), ("reason", "overlap")],
        ) == 1.0
    })
    .await;
    let (status, doc) = state(&addr, &location, API_TOKEN).await;
    assert_eq!(
        (status, doc["state"].as_str()),
        (200, Some("running")),
        "{doc}"
    );

    // Done: the same document as `once --output json`, for the count asked.
    let done = eventually_async(Duration::from_secs(60), || async {
        let (_, doc) = state(&addr, &location, API_TOKEN).await;
        (doc["state"] == "done").then_some(doc)
    })
    .await;
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["run_id"], id.as_str(), "the report is of this run");
    assert_eq!(done["total_runs"], 3);
    assert_eq!(done["total_pass"], 3);
    assert_eq!(done["result"], "success");
    assert_eq!(done["summary"], "3 workspaces: 3 succeeded, 0 failed");
    d.wait_for(Duration::from_secs(10), |s| {
        s.sum(
            "scaletest_runs",
            &[("scenario", "smoke"), ("result", "success")],
        ) == 1.0
    })
    .await;

    // What cannot be started, and what is not known.
    let (status, _, doc) = post(&addr, Some(API_TOKEN), r#"{"scenario": "nope"}"#).await;
    assert_eq!(status, 404);
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("runs can start: \"smoke\""),
        "{doc}"
    );
    let (status, _, doc) = post(
        &addr,
        Some(API_TOKEN),
        r#"{"scenario": "smoke", "count": 0}"#,
    )
    .await;
    assert_eq!(status, 400, "{doc}");
    let (status, _, doc) = post(&addr, Some(API_TOKEN), r#"{"scenaria": "smoke"}"#).await;
    assert_eq!(status, 400, "{doc}");
    let (status, _) = state(&addr, "/api/v1/runs/nosuchrun", API_TOKEN).await;
    assert_eq!(status, 404);
    let (status, _) = state(&addr, &location, "wrong-token-wrong-token-wrong-tok").await;
    assert_eq!(status, 401);

    // The pipeline's step: trigger --wait, exit 0 with the summary line.
    let url = format!("http://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Bin::new(&["trigger", "--scenario", "smoke", "--wait", "--url", &url])
            .env("SCALETESTD_API_TOKEN", API_TOKEN)
            .run()
    })
    .await
    .unwrap()
    .expect_code(0);
    assert!(
        out.stdout.contains("5 workspaces: 5 succeeded, 0 failed"),
        "{out}"
    );
    let url = format!("http://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Bin::new(&["trigger", "--scenario", "smoke", "--url", &url])
            .env("SCALETESTD_API_TOKEN", "wrong-token-wrong-token-wrong-tok")
            .run()
    })
    .await
    .unwrap()
    .expect_code(2);
    assert!(out.stderr.contains("401"), "{out}");
    assert!(
        !d.log().contains(API_TOKEN),
        "the API token reached the log"
    );
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_the_run_api_is_off() {
    let sim = start(fast_sim()).await;
    let dir = tmpdir("trigger-off");
    let cfg = config(&dir, &sim, None);
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let (status, _, doc) = post(&d.addr, Some(API_TOKEN), r#"{"scenario": "smoke"}"#).await;
    assert_eq!(status, 404);
    assert!(
        doc["message"].as_str().unwrap().contains("api_token_file"),
        "{doc}"
    );
    assert!(sim.live_workspaces().is_empty());
}

/// A token file that holds no token (the TOML file given by mistake, an empty file) is
/// named for what it is, not taken for a network failure ("builder error" before), and its
/// contents are never echoed.
#[test]
fn a_token_file_that_holds_no_token_says_so() {
    let dir = tmpdir("trigger-bad-file");
    let toml = dir.join("scaletestd.toml");
    std::fs::write(
        &toml,
        "[server]\nlisten = \"127.0.0.1:9464\"\napi_token_file = \"/etc/x\"\n",
    )
    .unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let spaced = dir.join("spaced");
    std::fs::write(&spaced, "secret with-space\n").unwrap();
    let cases = [
        (
            &toml,
            "it has 3 lines, a token has one (is it the configuration file?",
        ),
        (&empty, "it is empty"),
        (&spaced, "it holds a space"),
    ];
    for (file, why) in cases {
        let out = Bin::new(&[
            "trigger",
            "--scenario",
            "smoke",
            "--url",
            "http://127.0.0.1:9",
        ])
        .arg("--token-file")
        .arg(file)
        .run()
        .expect_code(2);
        assert!(
            out.stderr.contains(&format!(
                "error: --token-file {} does not hold an API token: {why}",
                file.display()
            )),
            "{out}"
        );
        assert!(!out.all().contains("cannot reach"), "{out}");
        assert!(!out.all().contains("with-space"), "{out}");
    }
}
