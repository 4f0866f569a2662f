//! The daemon against the real coderd: the autostart herd started by coderd's lifecycle
//! executor, and `run` with a scheduled scenario, the run API and a traffic pool reloaded and
//! stopped (parts of `features`' one coderd).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{ECHO, coder_ssh, here, once_all, scenario, slow, write};
use crate::common::daemon::{cron_at, spawn};
use crate::common::real::{RealCoder, listed};
use crate::common::{Bin, eventually_async};

/// Our own spans go here (coderd exports none: it does not trace).
const OUR_OTLP: &str = "127.0.0.1:4318";

/// The autostart herd: 8 stopped workspaces scheduled for one minute, started by coderd's
/// lifecycle executor; each autostart phase's record and span are one interval from that
/// minute.
pub(super) async fn autostart(coder: &RealCoder, dir: &Path) {
    let (_, spans) = crate::common::otlp::grpc_at(OUR_OTLP).await;
    let cfg = write(
        dir,
        "autostart.toml",
        here(coder)
            .telemetry(&format!("otlp_endpoint = \"http://{OUR_OTLP}\""))
            .scenario(
                slow(scenario(coder, "CODER_TEMPLATE", "herd", "sta", 8))
                    .key("kind = \"autostart\"")
                    .key("concurrency = 8"),
            ),
    );
    let report = dir.join("autostart.json");
    once_all(
        coder,
        &cfg,
        8,
        &["--output", &format!("json:{}", report.display())],
    )
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let mut due = None;
    for w in json["workspaces"].as_array().unwrap() {
        for p in w["phases"].as_array().unwrap() {
            let phase = p["phase"].as_str().unwrap();
            if !phase.starts_with("autostart.") {
                continue;
            }
            let started: chrono::DateTime<chrono::Utc> =
                p["started_at"].as_str().unwrap().parse().unwrap();
            assert_eq!(started.timestamp() % 60, 0, "{phase} starts at a minute");
            assert_eq!(*due.get_or_insert(started), started, "one minute for all");
        }
    }
    let due = due.expect("autostart phases");
    assert!(
        !json.to_string().contains("coder_trace_id"),
        "no Coder trace is claimed where Coder does not trace"
    );
    // Our phase spans: each from the minute, for the phase's duration.
    let phase_spans = eventually_async(Duration::from_secs(30), || async {
        let got: Vec<_> = spans
            .of("scaletestd")
            .into_iter()
            .filter(|g| g.name() == "phase.autostart.built")
            .collect();
        (got.len() == 8).then_some(got)
    })
    .await;
    for g in &phase_spans {
        let start = g.span.start_time_unix_nano as i64;
        assert_eq!(
            start,
            due.timestamp_nanos_opt().unwrap(),
            "phase.autostart.built starts at the scheduled minute"
        );
    }
    assert!(listed(coder, "sta-").await.is_empty());
    println!("real coder, autostart: 8/8 at {due}, records and spans from that minute");
}

/// The daemon with a traffic pool (pty and SSH sessions) and a scheduled lifecycle scenario
/// with the run API: the schedule fires, `trigger --wait` runs it again, the pool carries
/// traffic for 30 s without an error, shrinks on SIGHUP, and SIGTERM leaves nothing.
pub(super) async fn daemon_with_traffic_and_a_schedule(coder: &RealCoder, dir: &Path) {
    let token_file = dir.join("api-token");
    std::fs::write(&token_file, "real-coder-api-token-0123456789abcdef\n").unwrap();
    let schedule = cron_at(&[10]);
    let text = |pool: u32| {
        here(coder)
            .server(&format!("api_token_file = \"{}\"", token_file.display()))
            .scenario(
                slow(scenario(coder, "CODER_TEMPLATE", "pool", "stt", pool))
                    .key("kind = \"traffic\"")
                    .phases(&["create", "build", "agent", "delete"])
                    .table(
                        "traffic",
                        "sessions_per_workspace = 1\ntransports = [\"pty\", \"ssh\"]\nbytes_per_tick = 64\ntick_interval = \"500ms\"",
                    )
                    .table("ssh", &coder_ssh(coder)),
            )
            .scenario(
                scenario(coder, "CODER_TEMPLATE", "sched", "sts", 4)
                    .schedule(&schedule)
                    .key("concurrency = 4")
                    .phases(&["create", "build", "agent", "pty", "delete"])
                    .command(ECHO, "hello-42"),
            )
    };
    let cfg = write(dir, "daemon.toml", text(3));
    let mut d = spawn(&["run", "--config", &cfg], coder.get("CODER_SESSION_TOKEN"));
    // The schedule fires once; the pool comes up beside it.
    let s = d
        .wait_for(Duration::from_secs(240), |s| {
            s.sum("scaletest_runs", &[("scenario", "sched")]) >= 1.0
                && s.sum("scaletest_traffic_sessions", &[("scenario", "pool")]) == 6.0
        })
        .await;
    assert_eq!(
        s.sum(
            "scaletest_runs",
            &[("scenario", "sched"), ("result", "success")]
        ),
        1.0,
        "{}",
        d.log()
    );
    // Coder does not trace: the gauge says so, and the page labels the links as ours.
    assert_eq!(s.sum("scaletest_coder_tracing", &[]), 0.0, "{}", s.text);
    let (_, page) = d.get("/", None).await;
    assert!(
        page.contains("it records no traces (CODER_TRACE_ENABLE is off)"),
        "{page}"
    );
    // The pipeline's step.
    let url = format!("http://{}", d.addr);
    let out = tokio::task::block_in_place(|| {
        Bin::new(&["trigger", "--scenario", "sched", "--wait", "--url", &url])
            .arg("--token-file")
            .arg(&token_file)
            .run()
    });
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains("4 workspaces: 4 succeeded, 0 failed"),
        "{out}"
    );
    // 30 s of traffic from the pool's first full scrape: echoes timed, no error.
    let from = Instant::now();
    let first = d.scrape().await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(from.elapsed())).await;
    let s = d.scrape().await;
    for transport in ["pty", "ssh"] {
        let echoes = s.sum(
            "scaletest_traffic_latency_seconds",
            &[("scenario", "pool"), ("transport", transport)],
        ) - first.sum(
            "scaletest_traffic_latency_seconds",
            &[("scenario", "pool"), ("transport", transport)],
        );
        assert!(echoes >= 3.0 * 40.0, "{transport}: {echoes} echoes in 30 s");
    }
    assert_eq!(
        s.sum("scaletest_traffic_errors", &[("scenario", "pool")]),
        0.0,
        "{}",
        s.text
    );
    // SIGHUP with a pool of one: two of three workspaces deleted, two sessions left.
    write(dir, "daemon.toml", text(1));
    d.signal("HUP");
    d.wait_for(Duration::from_secs(120), |s| {
        s.sum("scaletest_traffic_sessions", &[("scenario", "pool")]) == 2.0
    })
    .await;
    eventually_async(Duration::from_secs(120), || async {
        (listed(coder, "stt-").await.len() == 1).then_some(())
    })
    .await;
    // SIGTERM: the pool is deleted, the daemon exits 0, Coder lists nothing of ours.
    d.signal("TERM");
    let code = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(120)));
    assert_eq!(code, Some(0), "{}", d.log());
    for prefix in ["stt-", "sts-"] {
        let left = listed(coder, prefix).await;
        assert!(left.is_empty(), "{prefix}: {left:?}");
    }
    println!(
        "real coder, daemon: scheduled run 4/4, trigger --wait 4/4, 30 s of pty+ssh traffic without an error, SIGHUP shrank the pool to 1, SIGTERM left nothing"
    );
}
