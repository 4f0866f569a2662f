//! What the benchmark measures of the daemon itself rather than of a run: `/metrics`
//! encoding with many series, the status page over a long history, and the footprint idle
//! between runs. Each returns its section of the table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sim::SimProcess;
use crate::toolkit::{ConfigText, ScenarioText};
use crate::*;

/// `/metrics` with 20 scenarios' series, every phase, outcome and failure reason.
pub fn scrape_time() -> String {
    use scaletestd::phases::{Phase, PhaseRecord, Reason};
    use scaletestd::runner::RunObserver;
    let text = (0..20)
        .fold(ConfigText::new("http://127.0.0.1:1"), |c, i| {
            c.scenario(
                ScenarioText::new(&format!("s{i}"), 10)
                    .template("t")
                    .prefix(&format!("p{i}")),
            )
        })
        .text();
    let env = scaletestd::config::Env {
        coder_session_token: Some(TOKEN.into()),
        ..Default::default()
    };
    let cfg = scaletestd::config::Config::parse("scrape.toml", &text, &env)
        .expect("the scrape configuration");
    let m = scaletestd::metrics::Metrics::new();
    for s in &cfg.scenarios {
        m.declare(s);
        for &phase in Phase::ALL {
            for (i, reason) in std::iter::once(None)
                .chain(Reason::ALL.into_iter().map(Some))
                .enumerate()
            {
                let record = PhaseRecord {
                    phase,
                    started_at: chrono::Utc::now(),
                    duration: Duration::from_millis(10 + i as u64 * 37),
                    ok: reason.is_none(),
                    reason,
                    error: reason.map(|r| r.as_str().to_string()),
                    trace_id: Some(format!("{:032x}", i + 1)),
                    coder_trace_id: None,
                    sub_timings_ms: Default::default(),
                    event_at: None,
                };
                m.phase_done(&s.name, "w", &record);
            }
        }
    }
    let time = |om: bool| {
        let _ = m.encode(om);
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..50 {
            bytes = m.encode(om).len();
        }
        (ms(t.elapsed()) / 50.0, bytes)
    };
    let ((text_ms, text_b), (om_ms, om_b)) = (time(false), time(true));
    let series = m
        .encode(false)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "### `/metrics` with 20 scenarios, every phase, outcome and reason\n"
    );
    let _ = writeln!(o, "| format | series | bytes | encode time |");
    let _ = writeln!(o, "|---|---|---|---|");
    let _ = writeln!(
        o,
        "| Prometheus text 0.0.4 | {series} | {text_b} | {text_ms:.2} ms |"
    );
    let _ = writeln!(
        o,
        "| OpenMetrics (with exemplars) | {series} | {om_b} | {om_ms:.2} ms |\n"
    );
    out
}

/// The status page with 20 scenarios, each with 20 runs of 10,000 workspaces of which a
/// tenth failed: what the history keeps, how long a render takes.
pub fn status_page() -> String {
    use scaletestd::phases::{Phase, PhaseRecord, Reason};
    use scaletestd::runner::{RunReport, WorkspaceReport};
    use scaletestd::status::{History, PageInfo, RunSummary};
    let record = |phase, ok: bool, i: u32| PhaseRecord {
        phase,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(100 + u64::from(i % 997)),
        ok,
        reason: (!ok).then_some(Reason::BuildFailed),
        error: (!ok).then(|| {
            "terraform apply: docker_container.workspace[0]: injected failure".to_string()
        }),
        trace_id: Some(format!("{i:032x}")),
        coder_trace_id: None,
        sub_timings_ms: Default::default(),
        event_at: None,
    };
    let report = RunReport {
        scenario: "s".into(),
        run_id: "abc123".into(),
        started_at: chrono::Utc::now(),
        elapsed: Duration::from_secs(300),
        setup_error: None,
        aborted: false,
        watch_transport: Some("watch-ws"),
        create_route: Some("/api/v2/users/{user}/workspaces"),
        budget: Default::default(),
        workspaces: (1..=10_000)
            .map(|i| {
                let ok = i % 10 != 0;
                WorkspaceReport {
                    index: i,
                    name: format!("scaletest-abc123-{i}"),
                    id: None,
                    ok,
                    phases: vec![
                        record(Phase::Create, true, i),
                        record(Phase::Build, ok, i),
                        record(Phase::Delete, true, i),
                    ],
                    build_stages: vec![],
                    last_coder_trace: None,
                    clock: Default::default(),
                }
            })
            .collect(),
    };
    let t = Instant::now();
    let summary = RunSummary::of(&report);
    let summarize_ms = ms(t.elapsed());
    drop(report);
    let history = History::default();
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for name in &names {
        for _ in 0..20 {
            history.push(name, summary.clone());
        }
    }
    let info = PageInfo {
        scenarios: names
            .iter()
            .map(|n| (n.as_str(), Some("0 */15 * * * *")))
            .collect(),
        coder_url: "https://coder.example.com",
        coder_up: true,
        coder_traces: Some(true),
        trace_link: Some("https://grafana.example.com/explore?traceId={trace_id}"),
        traffic: vec![],
    };
    let _ = scaletestd::status::render(&history, &info);
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..10 {
        bytes = scaletestd::status::render(&history, &info).len();
    }
    let render_ms = ms(t.elapsed()) / 10.0;
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "### Status page: 20 scenarios × 20 runs of 10,000 workspaces (1,000 failed each)\n"
    );
    let _ = writeln!(o, "| figure | measured | target |");
    let _ = writeln!(o, "|---|---|---|");
    let _ = writeln!(
        o,
        "| a run's summary (kept instead of its report) | {} failed workspaces kept, {} more counted; {summarize_ms:.1} ms to make | ≤ 50 kept |",
        summary.failed.len(),
        summary.failed_more
    );
    let _ = writeln!(
        o,
        "| page render | {render_ms:.1} ms, {} KiB | < 50 ms |\n",
        bytes / 1024
    );
    out
}

/// The daemon between runs: one scheduled run of 50 full lifecycles, then 10 s of idle.
pub async fn idle(sim: &SimProcess) -> String {
    let dir = std::env::temp_dir().join(format!("scaletestd-bench-idle-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let cfg = dir.join("idle.toml");
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    use chrono::Timelike;
    let _ = std::fs::write(
        &cfg,
        ConfigText::new(&sim.url)
            .server("listen = \"127.0.0.1:0\"")
            .scenario(
                ScenarioText::new("idle", 50)
                    .prefix("bidle")
                    .schedule(&format!(
                        "{} {} {} * * *",
                        at.second(),
                        at.minute(),
                        at.hour()
                    ))
                    .key("concurrency = 50")
                    .phases(&["create", "build", "agent", "ssh", "pty", "delete"])
                    .command("echo ok", "ok")
                    .table(
                        "ssh",
                        &format!(
                            "transport = \"tcp\"\naddress = \"{}\"\nuser = \"{{workspace}}\"",
                            sim.ssh
                        ),
                    ),
            )
            .text(),
    );
    let mut d = Command::new(env!("CARGO_BIN_EXE_scaletestd"))
        .args(["run", "--config", cfg.to_str().expect("UTF-8")])
        .env("CODER_SESSION_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let pid = d.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = d.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" workspaces: ") {
                let _ = tx.send(line);
            }
        }
    });
    let summary = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, t) = (cpu_seconds(&pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = cpu_seconds(&pid) - cpu0;
    let (peak, rss) = rss_mib(&pid);
    let secs = t.elapsed().as_secs_f64();
    let _ = d.kill();
    let _ = d.wait();
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "### The daemon idle between runs (release build)\n");
    let _ = writeln!(o, "| figure | measured | target |");
    let _ = writeln!(o, "|---|---|---|");
    let _ = writeln!(
        o,
        "| RSS after a run of 50 full lifecycles | {rss:.1} MiB (peak {peak:.1} MiB) | < 30 MiB |"
    );
    let _ = writeln!(
        o,
        "| CPU while idle | {:.2}% of a core over {secs:.0} s | ~0 |",
        cpu / secs * 100.0
    );
    let run = summary
        .split(" workspaces: ")
        .nth(1)
        .unwrap_or("no run seen");
    let _ = writeln!(
        o,
        "| the run before | 50 workspaces: {} | |\n",
        run.split(" scenario=").next().unwrap_or(run)
    );
    out
}
