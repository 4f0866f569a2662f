//! `scaletestd run` as a real process against the simulator: scheduled runs and their
//! metrics (parsed, and checked by promtool), exemplars, shutdown, crash recovery, overlap,
//! reload and the status page.

use std::time::Duration;

use crate::common::daemon::*;
use crate::common::*;
use scaletestd::report;

fn scenario(name: &str, prefix: &str, schedule: &str, count: u32) -> ScenarioText {
    ScenarioText::new(name, count)
        .prefix(prefix)
        .schedule(schedule)
        .key(&format!("concurrency = {count}"))
        .command("echo hello", "hello")
        .timeout("build", "30s")
        .timeout("agent", "30s")
        .timeout("pty", "10s")
        .timeout("delete", "30s")
}

fn is_trace_id(s: &str) -> bool {
    s.len() == 32
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && s != "0".repeat(32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduled_runs_show_up_exactly_in_metrics() {
    let mut sc = fast_sim();
    sc.seed = 9;
    sc.failures.build = 0.3;
    sc.failures.pty_drop = 0.3;
    let sim = start(sc).await;
    let dir = tmpdir("metrics");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("m", "stm", &cron_at(&[4, 9]), 10)],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);

    // Series exist from start-up, zero-valued, before any run.
    let first = d.scrape().await;
    assert_eq!(
        first.sum(
            "scaletest_phase_failures",
            &[
                ("scenario", "m"),
                ("phase", "build"),
                ("reason", "build_failed")
            ]
        ),
        0.0
    );
    assert!(first.has(
        "scaletest_last_success_timestamp_seconds",
        &[("scenario", "m")]
    ));

    let s = d
        .wait_for(Duration::from_secs(40), |s| {
            s.sum("scaletest_runs", &[("scenario", "m")]) == 2.0
                && s.sum("scaletest_workspaces_in_flight", &[]) == 0.0
        })
        .await;
    assert!(
        settle(&sim).await.is_empty(),
        "nothing left in the simulator"
    );

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 20);
    let build_failed = ledger.iter().filter(|l| l.build_failed).count() as f64;
    let pty_dropped = ledger.iter().filter(|l| l.pty_dropped).count() as f64;
    assert!(
        build_failed + pty_dropped > 0.0,
        "failures were injected: {build_failed} {pty_dropped}"
    );
    let through = |phase: &str| {
        s.sum(
            "scaletest_phase_duration_seconds",
            &[("scenario", "m"), ("phase", phase)],
        )
    };
    assert_eq!(through("create"), 20.0);
    assert_eq!(through("build"), 20.0);
    assert_eq!(through("agent"), 20.0 - build_failed);
    assert_eq!(through("pty"), 20.0 - build_failed);
    assert_eq!(through("delete"), 20.0);
    let failures = |phase: &str, reason: &str| {
        s.sum(
            "scaletest_phase_failures",
            &[("scenario", "m"), ("phase", phase), ("reason", reason)],
        )
    };
    assert_eq!(failures("build", "build_failed"), build_failed);
    assert_eq!(failures("pty", "connect_error"), pty_dropped);
    assert_eq!(
        s.sum("scaletest_phase_failures", &[("scenario", "m")]),
        build_failed + pty_dropped
    );
    assert_eq!(
        s.sum("scaletest_workspaces", &[("result", "failed")]),
        build_failed + pty_dropped
    );
    assert_eq!(
        s.sum(
            "scaletest_build_stage_duration_seconds",
            &[("stage", "queue")]
        ),
        20.0
    );
    assert_eq!(s.sum("scaletest_coder_up", &[]), 1.0);
    // At `info`, 20 web terminals log nothing of their websocket handshakes.
    assert!(!d.log().contains("tungstenite"), "{}", d.log());
    assert!(
        s.sum(
            "scaletest_coder_requests_duration_seconds",
            &[
                ("route", "/api/v2/users/{user}/workspaces"),
                ("code", "201")
            ]
        ) >= 20.0
    );

    let ids: Vec<&String> = s
        .matching("scaletest_phase_duration_seconds", &[("scenario", "m")])
        .flat_map(|x| x.exemplar_trace_ids.iter())
        .collect();
    assert!(!ids.is_empty(), "exemplars are present");
    assert!(ids.iter().all(|t| is_trace_id(t)), "{ids:?}");

    // The plain text format passes promtool's lint.
    let (_, text) = d.get("/metrics", None).await;
    assert!(!text.contains("# EOF") && !text.contains("trace_id"));
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (the test command installs Debian's prometheus package)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_deletes_everything_and_exits_zero() {
    let mut sc = fast_sim();
    sc.provisioners = 40;
    sc.latency.apply = ms(1500);
    let sim = start(sc).await;
    let dir = tmpdir("sigterm");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("t", "stt", "* * * * * *", 40)],
    );
    let mut d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    d.wait_for(Duration::from_secs(20), |s| {
        s.sum("scaletest_workspaces_in_flight", &[("scenario", "t")]) == 40.0
    })
    .await;
    assert_eq!(sim.live_workspaces().len(), 40);
    d.signal("TERM");
    let code = d.wait_exit(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "exit within the grace period; log:\n{}",
        d.log()
    );
    assert!(
        sim.live_workspaces().is_empty(),
        "left: {:?}",
        sim.live_workspaces()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_restart_sweeps_the_leftovers() {
    let mut sc = fast_sim();
    sc.latency.apply = ms(1500);
    let sim = start(sc).await;
    let dir = tmpdir("sigkill");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("k", "stk", "* * * * * *", 12)],
    );
    let mut d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    d.wait_for(Duration::from_secs(20), |s| {
        s.sum("scaletest_workspaces_in_flight", &[("scenario", "k")]) == 12.0
    })
    .await;
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    let left = sim.live_workspaces().len();
    assert_eq!(left, 12, "the killed process left its workspaces");

    // A workspace that is not ours (another prefix) must survive the sweep.
    let client = scaletestd::coder::Client::new(
        sim.url(),
        scaletestd::secret::Secret::new(TOKEN),
        Default::default(),
    );
    create_workspace(&client, "stk-someone-else").await;

    // Restarted with no run due soon: the start-up sweep alone must clean up.
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("k", "stk", "0 0 0 1 1 *", 12)],
    );
    let d2 = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let s = d2
        .wait_for(Duration::from_secs(30), |s| {
            s.sum("scaletest_cleanup_deleted", &[("scenario", "k")]) == 12.0
        })
        .await;
    assert_eq!(
        s.sum("scaletest_orphaned_workspaces", &[("scenario", "k")]),
        12.0
    );
    assert_eq!(sim.live_workspaces(), vec!["stk-someone-else".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_are_skipped_and_counted() {
    let mut sc = fast_sim();
    sc.latency.apply = ms(1200);
    let sim = start(sc).await;
    let dir = tmpdir("overlap");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("o", "sto", "* * * * * *", 5)],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let mut most = 0;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        most = most.max(sim.live_workspaces().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = d.scrape().await;
    assert!(
        s.sum(
            "scaletest_runs_skipped",
            &[("scenario", "o"), ("reason", "overlap")]
        ) >= 1.0,
        "{}",
        d.log()
    );
    assert!(s.sum("scaletest_runs", &[("scenario", "o")]) >= 1.0);
    assert!(
        most <= 5,
        "runs never stack: at most one run's 5 workspaces at a time, saw {most}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_bad_file_and_applies_a_good_one() {
    let sim = start(fast_sim()).await;
    let dir = tmpdir("reload");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("a", "sta", "0 0 0 1 1 *", 2)],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    assert!(d.scrape().await.has("scaletest_runs", &[("scenario", "a")]));

    std::fs::write(&cfg, "[coder]\nurl = 12\n").unwrap();
    d.signal("HUP");
    eventually(Duration::from_secs(10), || {
        d.log().contains("configuration reload refused")
    })
    .await;
    assert!(
        d.log().contains("run.toml:2:7"),
        "the refusal names line and column: {}",
        d.log()
    );
    let (code, _) = d.get("/healthz", None).await;
    assert_eq!(code, 200, "still serving");

    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("b", "stb", "0 0 0 1 1 *", 2)],
    );
    d.signal("HUP");
    d.wait_for(Duration::from_secs(10), |s| {
        s.has("scaletest_runs", &[("scenario", "b")])
    })
    .await;
    let (_, page) = d.get("/", None).await;
    assert!(
        page.contains("<h2>b</h2>") && !page.contains("<h2>a</h2>"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_failed_workspaces_with_error_and_trace_link() {
    let mut sc = fast_sim();
    sc.failures.build = 1.0;
    let sim = start(sc).await;
    let dir = tmpdir("status");
    let cfg = dir.join("run.toml");
    write_config(
        &cfg,
        sim.url().as_str(),
        &[scenario("p", "stp", &cron_at(&[4]), 3)],
    );
    let d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    d.wait_for(Duration::from_secs(30), |s| {
        s.sum(
            "scaletest_runs",
            &[("scenario", "p"), ("result", "failure")],
        ) == 1.0
    })
    .await;
    let (code, page) = d.get("/", None).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("3 workspaces: 0 succeeded, 3 failed (3 build: build_failed)"),
        "{page}"
    );
    assert!(
        page.contains("injected failure (scaletestd simulator)"),
        "the error is shown: {page}"
    );
    assert!(
        page.contains("workspaces followed over <code>watch-ws</code>, created through <code>/api/v2/users/{user}/workspaces</code>"),
        "the transport the run chose: {page}"
    );
    let link = "href=\"https://grafana.example.com/explore?traceId=";
    let at = page
        .find(link)
        .unwrap_or_else(|| panic!("a trace link: {page}"));
    let id = &page[at + link.len()..at + link.len() + 32];
    assert!(is_trace_id(id), "{id}");
    let (ready, _) = d.get("/readyz", None).await;
    assert_eq!(ready, 200);
    assert!(settle(&sim).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traffic_pool_runs_until_sigterm_and_leaves_nothing() {
    let sim = start(fast_sim()).await;
    let dir = tmpdir("traffic");
    let cfg = dir.join("run.toml");
    let scenario = ScenarioText::new("tr", 4)
        .key("kind = \"traffic\"")
        .prefix("sttr")
        .phases(&["create", "build", "agent", "delete"])
        .table(
            "traffic",
            "sessions_per_workspace = 1\ntransports = [\"pty\", \"ssh\"]\nbytes_per_tick = 128\ntick_interval = \"100ms\"",
        )
        .table(
            "ssh",
            &format!(
                "transport = \"tcp\"\naddress = \"{}\"\nuser = \"{{workspace}}\"",
                sim.ssh_addr()
            ),
        );
    write_config(&cfg, sim.url().as_str(), &[scenario]);
    let mut d = spawn(&["run", "--config", cfg.to_str().unwrap()], TOKEN);
    let s = d
        .wait_for(Duration::from_secs(30), |s| {
            s.sum("scaletest_traffic_sessions", &[("scenario", "tr")]) == 8.0
                && s.sum("scaletest_traffic_latency_seconds", &[("scenario", "tr")]) >= 80.0
        })
        .await;
    assert!(
        s.sum(
            "scaletest_traffic_bytes",
            &[("scenario", "tr"), ("direction", "received")]
        ) > 0.0
    );
    let traces: Vec<&String> = s
        .matching("scaletest_traffic_latency_seconds", &[])
        .flat_map(|x| x.exemplar_trace_ids.iter())
        .collect();
    assert!(!traces.is_empty(), "echo latencies carry exemplars");
    let (_, page) = d.get("/", None).await;
    assert!(
        page.contains("tr (traffic)")
            && page.contains("<td>pty</td>")
            && page.contains("<td>ssh</td>"),
        "{page}"
    );
    assert_eq!(sim.live_workspaces().len(), 4);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0), "{}", d.log());
    assert!(
        sim.live_workspaces().is_empty(),
        "the pool was deleted: {:?}",
        sim.live_workspaces()
    );
}

/// The daemon started in-process: its address, the daemon, a sender of reloaded
/// configurations, and the shutdown signal with the task to wait for.
struct InProcess {
    addr: std::net::SocketAddr,
    d: std::sync::Arc<scaletestd::daemon::Daemon>,
    reload: tokio::sync::mpsc::Sender<scaletestd::config::Config>,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), scaletestd::daemon::DaemonError>>,
}

impl InProcess {
    async fn start(cfg: scaletestd::config::Config) -> InProcess {
        let handle = scaletestd::daemon::start(cfg, Default::default())
            .await
            .expect("the daemon starts");
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        InProcess {
            addr: handle.addr(),
            d: handle.daemon().clone(),
            reload,
            stop,
            running: tokio::spawn(handle.run(
                async move {
                    let _ = stopped.await;
                },
                futures_util::stream::unfold(reloads, |mut rx| async move {
                    rx.recv().await.map(|c| (c, rx))
                }),
            )),
        }
    }

    /// Signals shutdown and waits (bounded) for a clean stop.
    async fn stop(
        stop: tokio::sync::oneshot::Sender<()>,
        running: tokio::task::JoinHandle<Result<(), scaletestd::daemon::DaemonError>>,
    ) {
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the daemon stops")
            .unwrap()
            .expect("cleanly");
    }
}

/// The daemon as a library, in-process: a run on demand (no cron to wait for), its series on
/// `/metrics`, a reloaded configuration taking effect on the next run, and shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_in_process_on_demand_and_takes_reloads() {
    let sim = start(fast_sim()).await;
    let mut cfg = config(&sim, 4, 4, "");
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    let InProcess {
        addr,
        d,
        reload,
        stop,
        running,
    } = InProcess::start(cfg.clone()).await;

    let r = d.run_now("test").await.expect("a run");
    assert_eq!(
        report::summary_line(&r),
        "4 workspaces: 4 succeeded, 0 failed"
    );
    assert!(d.run_now("no-such-scenario").await.is_none());
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("scaletest_workspaces_total{scenario=\"test\",result=\"succeeded\"} 4"),
        "{text}"
    );

    cfg.scenarios[0].count = 2;
    cfg.scenarios[0].concurrency = 2;
    reload.send(cfg).await.unwrap();
    eventually(Duration::from_secs(10), || {
        d.config().scenarios[0].count == 2
    })
    .await;
    let r = d.run_now("test").await.expect("a run");
    assert_eq!(
        report::summary_line(&r),
        "2 workspaces: 2 succeeded, 0 failed"
    );

    InProcess::stop(stop, running).await;
    assert!(settle(&sim).await.is_empty());
}

/// A reload reaches a running traffic pool: its size grows and shrinks, a new tick interval
/// applies to the sessions already open, new transports reopen them, a changed prefix starts
/// the pool again, a removed scenario deletes it, and a new `[server] listen` waits for a
/// restart while the old address keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_a_running_traffic_pool() {
    let sim = start(fast_sim()).await;
    let ssh = format!(
        "transport = \"tcp\"\naddress = \"{}\"\nuser = \"{{workspace}}\"",
        sim.ssh_addr()
    );
    let pool = |count: u32, tick: &str, transports: &str, prefix: &str| {
        ConfigText::new(sim.url())
            .daemon()
            .scenario(
                ScenarioText::new("pool", count)
                    .key("kind = \"traffic\"")
                    .key(&format!("workspace_prefix = \"{prefix}\""))
                    .key("phases = [\"create\", \"build\", \"agent\", \"delete\"]")
                    .key(&format!("transports = {transports}"))
                    .key("bytes_per_tick = 16")
                    .key(&format!("tick_interval = \"{tick}\""))
                    .table("ssh", &ssh),
            )
            .parse()
    };
    let cfg = pool(2, "100ms", "[\"pty\"]", "stpool");
    let InProcess {
        addr,
        d,
        reload,
        stop,
        running,
    } = InProcess::start(cfg).await;
    let stats = || d.traffic.lock().unwrap().get("pool").cloned();
    let open = |t: &str| stats().map_or(0, |s| s.snapshot().get(t).map_or(0, |x| x.open_now));
    let ticks = || stats().map_or(0, |s| s.snapshot().values().map(|x| x.ticks).sum::<u64>());
    let live = || sim.live_workspaces();
    let within = Duration::from_secs(30);
    eventually(within, || live().len() == 2 && open("pty") == 2).await;

    reload
        .send(pool(3, "100ms", "[\"pty\"]", "stpool"))
        .await
        .unwrap();
    eventually(within, || live().len() == 3 && open("pty") == 3).await;
    reload
        .send(pool(1, "100ms", "[\"pty\"]", "stpool"))
        .await
        .unwrap();
    eventually(within, || live().len() == 1 && open("pty") == 1).await;
    let kept = live();

    // Ticks per second of one session, at 100 ms and then at 10 ms.
    let rate = || async {
        let before = ticks();
        tokio::time::sleep(Duration::from_secs(2)).await;
        (ticks() - before) as f64 / 2.0
    };
    let slow = rate().await;
    reload
        .send(pool(1, "10ms", "[\"pty\"]", "stpool"))
        .await
        .unwrap();
    // Once the reload reaches the session, 3 times the rate at least (10 times, ideally).
    let fast = eventually_async(Duration::from_secs(20), || async {
        let r = rate().await;
        (r > slow * 3.0).then_some(r)
    })
    .await;
    println!("{slow} ticks/s at 100 ms, {fast} at 10 ms");
    assert_eq!(live(), kept, "the same workspace: only the ticks changed");

    reload
        .send(pool(1, "10ms", "[\"pty\", \"ssh\"]", "stpool"))
        .await
        .unwrap();
    eventually(within, || open("ssh") == 1 && open("pty") == 1).await;
    assert_eq!(live(), kept, "sessions reopened on the same workspace");

    // A new prefix is a new pool: the old workspace goes, one of the new prefix comes.
    reload
        .send(pool(1, "10ms", "[\"pty\"]", "stpool-b"))
        .await
        .unwrap();
    eventually(within, || {
        let l = live();
        l.len() == 1 && l[0].starts_with("stpool-b-")
    })
    .await;

    // The scenario gone: its pool deleted. A new listen address: the old one keeps serving.
    let mut other = ConfigText::new(sim.url())
        .server("listen = \"127.0.0.1:1\"")
        .scenario(ScenarioText::new("lifecycle", 1))
        .parse();
    other.server.shutdown_grace = Duration::from_secs(30);
    reload.send(other).await.unwrap();
    eventually(within, || live().is_empty()).await;
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    InProcess::stop(stop, running).await;
    assert!(settle(&sim).await.is_empty());
}
