//! The cases, each run in a child process (`SCALE_BENCH_CASE`), and the orchestration that
//! runs them one after another against one simulator process and gathers their figures.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use scaletestd::coder::{ApiObserver, Client, ClientOptions};
use scaletestd::config::{Config, Env};
use scaletestd::metrics::Metrics;
use scaletestd::phases::Phase;
use scaletestd::runner::{self, Slice};

use crate::report::{AccuracyRow, Table, pct};
use crate::sim::SimProcess;
use crate::toolkit::{ConfigText, ScenarioText};
use crate::*;

/// Counts API requests, and feeds the daemon's metrics as the daemon does.
struct Counting {
    n: AtomicU64,
    metrics: Arc<Metrics>,
}

impl ApiObserver for Counting {
    fn on_response(
        &self,
        method: &reqwest::Method,
        route: &'static str,
        code: Option<u16>,
        elapsed: Duration,
    ) {
        self.n.fetch_add(1, Ordering::Relaxed);
        self.metrics.on_response(method, route, code, elapsed);
    }
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is set by the orchestrator"))
}

/// One case, in this (child) process.
pub async fn run_child(case: &str) -> Value {
    let parts: Vec<&str> = case.split(':').collect();
    let num = |i: usize| parts[i].parse::<u32>().expect("a number");
    let out = match parts[0] {
        "ours" => ours(parts[1], num(2), num(3), parts[4] == "full").await,
        "raw" => {
            raw::run(
                num(1),
                num(2),
                &env("SCALE_BENCH_URL"),
                &env("SCALE_BENCH_SSH"),
            )
            .await
        }
        "traffic" => traffic(num(1), num(2), num(3)).await,
        other => panic!("unknown case {other}"),
    };
    let (peak, _) = rss_mib("self");
    let mut out = out;
    out["peak_rss_mib"] = json!(peak);
    out
}

/// scaletestd's runner, metrics and span export as the daemon runs them.
async fn ours(mode: &str, n: u32, concurrency: u32, full: bool) -> Value {
    let telemetry = scaletestd::telemetry::init(
        "warn",
        Default::default(),
        &scaletestd::telemetry::TraceExport {
            endpoint: Some(env("SCALE_BENCH_OTLP")),
            protocol: Some("http/protobuf".into()),
        },
        None,
    )
    .expect("telemetry starts");
    let phases: &[&str] = if full {
        &["create", "build", "agent", "ssh", "pty", "delete"]
    } else {
        &["create", "build", "agent", "delete"]
    };
    let mut config = ConfigText::new(env("SCALE_BENCH_URL")).coder("request_timeout = \"120s\"");
    // A simulator behind TLS: trust its authority (and speak HTTP/2 to it).
    if let Ok(path) = std::env::var("SCALE_BENCH_CA")
        && !path.is_empty()
    {
        config = config.coder(&format!("ca_file = {path:?}"));
    }
    let text = config
        .scenario(
            ScenarioText::new("bench", n)
                .prefix(&format!("b{}", &mode[..1]))
                .key(&format!("concurrency = {concurrency}"))
                .phases(phases)
                .key(&format!("wait = \"{mode}\""))
                .command("echo bench-ok", "bench-ok")
                .timeout("create", "10m")
                .timeout("build", "10m")
                .timeout("agent", "10m")
                .timeout("delete", "10m")
                .table(
                    "ssh",
                    &format!(
                        "transport = \"tcp\"\naddress = \"{}\"\nuser = \"{{workspace}}\"",
                        env("SCALE_BENCH_SSH")
                    ),
                ),
        )
        .text();
    let envs = Env {
        coder_session_token: Some(TOKEN.into()),
        ..Default::default()
    };
    let cfg = Config::parse("bench.toml", &text, &envs).expect("the bench configuration");
    let s = &cfg.scenarios[0];
    let metrics = Metrics::new();
    metrics.declare(s);
    let counting = Arc::new(Counting {
        n: AtomicU64::new(0),
        metrics: metrics.clone(),
    });
    let client = Client::observed(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        cfg.coder.client_options(true),
        counting.clone(),
    );
    let (_, rss0) = rss_mib("self");
    let cpu0 = cpu_seconds("self");
    let heap = HeapPeak::start();
    let t = Instant::now();
    let report = runner::run(
        &client,
        s,
        Default::default(),
        Slice { first: 1, count: n },
        metrics.clone(),
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await;
    let wall = t.elapsed();
    let peak_heap = heap.stop();
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    let cpu = cpu_seconds("self") - cpu0;

    // Timing error two ways: against the latency injected, and against Coder's own
    // timestamps of when the build finished and the agent was ready.
    let (mut build_inj, mut build_coder, mut agent_inj, mut agent_coder) =
        (vec![], vec![], vec![], vec![]);
    // Split at the moment the simulator sent the event that ended the phase (its delivery
    // log, same machine and clock): the simulator's part (state written → event sent) and
    // ours (event sent → phase ended).
    let sent = deliveries().await;
    let (mut build_sim, mut agent_sim, mut build_ours, mut agent_ours) =
        (vec![], vec![], vec![], vec![]);
    for w in &report.workspaces {
        let split = |p: Phase| {
            let r = w.phases.iter().find(|r| r.phase == p && r.ok)?;
            let written = r.event_at?;
            let sent = *sent.get(&(w.id?, written))?;
            let end = (r.started_at + r.duration).timestamp_micros();
            Some((
                (sent - written.timestamp_micros()) as f64 / 1000.0,
                (end - sent) as f64 / 1000.0,
            ))
        };
        if let Some((sim, ours)) = split(Phase::Build) {
            build_sim.push(sim);
            build_ours.push(ours);
        }
        if let Some((sim, ours)) = split(Phase::Agent) {
            agent_sim.push(sim);
            agent_ours.push(ours);
        }
    }
    for w in &report.workspaces {
        let end = |p: Phase| {
            w.phases
                .iter()
                .find(|r| r.phase == p && r.ok)
                .map(|r| (r.duration, r.started_at + r.duration))
        };
        let stage_end = |stage: &str| {
            w.build_stages
                .iter()
                .filter(|s| s.stage == stage)
                .map(|s| s.ended_at)
                .max()
        };
        if let (Some((d, at)), Some(truth)) = (end(Phase::Build), stage_end("apply")) {
            build_inj.push(ms(d) - BUILD_MS as f64);
            build_coder.push((at - truth).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        if let (Some((d, at)), Some(truth)) = (end(Phase::Agent), stage_end("agent_startup")) {
            agent_inj.push(ms(d) - AGENT_MS as f64);
            agent_coder.push((at - truth).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    json!({
        "ok": report.succeeded(),
        "n": n,
        "wall_s": wall.as_secs_f64(),
        "cpu_s": cpu,
        "requests": counting.n.load(Ordering::Relaxed),
        "rss_start_mib": rss0,
        "peak_heap_mib": peak_heap,
        "build_inj": [pct(&build_inj, 50.0), pct(&build_inj, 99.0)],
        "build_coder": [pct(&build_coder, 50.0), pct(&build_coder, 99.0)],
        "agent_inj": [pct(&agent_inj, 50.0), pct(&agent_inj, 99.0)],
        "agent_coder": [pct(&agent_coder, 50.0), pct(&agent_coder, 99.0)],
        "build_sim": [pct(&build_sim, 50.0), pct(&build_sim, 99.0)],
        "agent_sim": [pct(&agent_sim, 50.0), pct(&agent_sim, 99.0)],
        "build_ours": [pct(&build_ours, 50.0), pct(&build_ours, 99.0)],
        "agent_ours": [pct(&agent_ours, 50.0), pct(&agent_ours, 99.0)],
        "split": build_ours.len() + agent_ours.len(),
        "summary": scaletestd::report::summary_line(&report),
    })
}

/// The most malloc held for live objects while a case ran (`live_heap_bytes`, read every
/// 100 ms: each read takes malloc's locks), in MiB: what of the peak RSS is live data.
struct HeapPeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl HeapPeak {
    /// Not under callgrind (`SCALE_BENCH_HEAP=off`): each read walks malloc's free lists,
    /// and at valgrind's pace that would be counted as the daemon's work.
    fn start() -> HeapPeak {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let off = std::env::var("SCALE_BENCH_HEAP").is_ok_and(|v| v == "off");
        let thread = std::thread::spawn(move || {
            let mut peak = 0u64;
            while !off && !flag.load(Ordering::Relaxed) {
                if let Some(b) = scaletestd::metrics::live_heap_bytes() {
                    peak = peak.max(b);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if off {
                return f64::NAN;
            }
            peak as f64 / 1048576.0
        });
        HeapPeak { stop, thread }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(f64::NAN)
    }
}

/// When the simulator sent each (workspace, state): the earliest line of its delivery log,
/// read once the log's writer has flushed (every 100 ms).
async fn deliveries() -> std::collections::HashMap<(uuid::Uuid, chrono::DateTime<chrono::Utc>), i64>
{
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(env("SCALE_BENCH_DELIVERIES")).unwrap_or_default();
    let mut sent = std::collections::HashMap::new();
    for (id, updated, at) in text
        .lines()
        .filter_map(scaletestd::sim::deliveries::parse_line)
    {
        sent.entry((id, updated))
            .and_modify(|t: &mut i64| *t = (*t).min(at))
            .or_insert(at);
    }
    sent
}

/// A traffic pool of `sessions` web-terminal sessions (10 per workspace) ticking every
/// `tick_ms` for `seconds`: ticks a second, echo latency, errors, CPU.
async fn traffic(tick_ms: u32, sessions: u32, seconds: u32) -> Value {
    let workspaces = sessions.div_ceil(10);
    let text = ConfigText::new(env("SCALE_BENCH_URL"))
        .scenario(
            ScenarioText::new("t", workspaces)
                .key("kind = \"traffic\"")
                .key(&format!("concurrency = {workspaces}"))
                .phases(&["create", "build", "agent", "delete"])
                .table(
                    "traffic",
                    &format!(
                        "sessions_per_workspace = {}\nbytes_per_tick = 64\ntick_interval = \"{tick_ms}ms\"",
                        sessions / workspaces
                    ),
                ),
        )
        .text();
    let env = Env {
        coder_session_token: Some(TOKEN.into()),
        ..Default::default()
    };
    let cfg = Config::parse("traffic.toml", &text, &env).expect("the traffic configuration");
    let sc = &cfg.scenarios[0];
    let metrics = Metrics::new();
    metrics.declare(sc);
    let client = Client::observed(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        ClientOptions::default(),
        metrics.clone(),
    );
    let stop = CancellationToken::new();
    let ctx = scaletestd::traffic::context(
        &client,
        sc,
        Default::default(),
        metrics.clone(),
        stop.clone(),
        CancellationToken::new(),
    )
    .await
    .expect("the pool starts");
    let stats = Arc::new(scaletestd::traffic::TrafficStats::default());
    let control = scaletestd::traffic::PoolControl::fixed(
        Slice {
            first: 1,
            count: workspaces,
        },
        sc.traffic.clone(),
    );
    let pool = tokio::spawn(scaletestd::traffic::run(
        ctx,
        control,
        metrics.clone(),
        stats.clone(),
    ));
    let open = || stats.snapshot().values().map(|s| s.open_now).sum::<i64>();
    let t = Instant::now();
    while open() < sessions as i64 && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if open() < sessions as i64 {
        stop.cancel();
        let _ = pool.await;
        return json!({"error": format!("only {} of {sessions} sessions opened", open())});
    }
    // Measure from here: a fresh histogram of what the window echoes.
    let before = stats.snapshot();
    let cpu0 = cpu_seconds("self");
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") - cpu0;
    let after = stats.snapshot();
    let ticks = |s: &std::collections::BTreeMap<&str, scaletestd::traffic::TransportStats>| {
        s.values().map(|x| x.ticks).sum::<u64>()
    };
    let errors: u64 = after.values().flat_map(|x| x.errors.values()).sum::<u64>()
        - before.values().flat_map(|x| x.errors.values()).sum::<u64>();
    let lat = after.values().next().map(|x| x.latency.clone());
    stop.cancel();
    let _ = pool.await;
    json!({
        "summary": format!("{sessions} sessions at {tick_ms} ms"),
        "ticks_per_second": (ticks(&after) - ticks(&before)) as f64 / elapsed,
        "p50_ms": lat.as_ref().and_then(|l| l.quantile(0.5)).map(|v| v * 1e3),
        "p99_ms": lat.as_ref().and_then(|l| l.quantile(0.99)).map(|v| v * 1e3),
        "errors": errors,
        "cpu_percent": cpu / elapsed * 100.0,
    })
}

/// Runs a case in a child process against `sim`; its JSON line, or an error string.
fn child(case: &str, sim: &SimProcess, otlp: &str, within: Duration) -> Value {
    child_under(case, sim, otlp, within, &[])
}

/// [`child`] under a wrapping command (`taskset -c 1`, `valgrind …`) when `wrap` has one.
pub fn child_under(
    case: &str,
    sim: &SimProcess,
    otlp: &str,
    within: Duration,
    wrap: &[&str],
) -> Value {
    eprintln!("== {case} {}", wrap.join(" "));
    let exe = std::env::current_exe().expect("this binary");
    let mut cmd = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut c = cmd
        .env("SCALE_BENCH_CASE", case)
        .env("SCALE_BENCH_URL", &sim.url)
        .env("SCALE_BENCH_SSH", &sim.ssh)
        .env("SCALE_BENCH_OTLP", otlp)
        .env("SCALE_BENCH_DELIVERIES", &sim.deliveries)
        .env(
            "SCALE_BENCH_CA",
            sim.ca.as_deref().unwrap_or(std::path::Path::new("")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the bench binary re-runs itself");
    let t = Instant::now();
    loop {
        match c.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t.elapsed() > within => {
                let _ = c.kill();
                let _ = c.wait();
                return json!({"error": format!("did not finish within {within:?}")});
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let mut out = String::new();
    use std::io::Read;
    let _ = c.stdout.take().expect("piped").read_to_string(&mut out);
    let v: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| json!({"error": format!("no figures: {out}")}));
    eprintln!("   {}", v["summary"].as_str().unwrap_or(""));
    v
}

/// Traffic: how many sessions one instance holds at a 100 ms and a 1 s tick, growing until
/// the p99 echo passes 50 ms or a session fails.
fn traffic_section(t: &mut Table, quick: bool, sim: &SimProcess, otlp: &str) {
    let mut traffic = Vec::new();
    let steps: &[(u32, &[u32])] = if quick {
        &[(100, &[50, 200]), (1000, &[50, 200])]
    } else {
        &[
            (100, &[50, 100, 150, 200, 400, 800]),
            (1000, &[50, 100, 200, 500, 1000, 2000, 4000]),
        ]
    };
    for (tick, sizes) in steps {
        for &n in *sizes {
            let v = child(
                &format!("traffic:{tick}:{n}:20"),
                sim,
                otlp,
                Duration::from_secs(600),
            );
            let held = v["p99_ms"].as_f64().is_some_and(|p| p < 50.0) && v["errors"] == 0;
            traffic.push((*tick, n, v));
            if !held {
                break;
            }
        }
    }
    t.traffic(&traffic);
}

/// scaletestd on Locust's create / wait / delete flow at Locust's concurrency, events and
/// polling, over about as many lifecycles as Locust completes in its run (~1,200 in 40 s):
/// a run's fixed costs (looking up the user, the template, probing the watch) then weigh
/// alike in both per-lifecycle figures.
fn peer_rows(
    sim: &SimProcess,
    otlp: &str,
    within: Duration,
    concurrency: u32,
    quick: bool,
) -> Vec<AccuracyRow> {
    let lifecycles = if quick { 300 } else { 1000 };
    let ours = |mode: &str| {
        child(
            &format!("ours:{mode}:{lifecycles}:{concurrency}:wait"),
            sim,
            otlp,
            within,
        )
    };
    vec![AccuracyRow {
        n: concurrency,
        watch: ours("watch"),
        pinned: None,
        tls: None,
        poll: ours("poll"),
    }]
}

/// Every case, one after another; the table.
pub async fn run_all(quick: bool) -> String {
    let otlp = report::OtlpSink::start().await;
    let sim = SimProcess::start(crate::sim::FAST);
    let mut t = Table::default();
    // 10 and 30 find where the error stays under 5 ms; 100 to 10,000 are the sizes.
    // `SCALE_BENCH_SIZES=10000` (comma-separated): the accuracy cases at those sizes only.
    let chosen: Option<Vec<u32>> = std::env::var("SCALE_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let sizes: &[u32] = match &chosen {
        Some(v) => v,
        None if quick => &[10, 100, 1000],
        None => &[10, 30, 100, 1000, 10_000],
    };
    let within = Duration::from_secs(600);
    // Events twice: sharing both cores with the simulator as a deployment might, then with
    // the simulator on CPU 0 and scaletestd on CPU 1 so neither steals from the other.
    let pinning = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
        && Command::new("taskset").arg("-V").output().is_ok();
    // The same simulator behind TLS, as most Coders are: calls then share HTTP/2.
    let tls = SimProcess::start_tls(crate::sim::FAST);
    let accuracy = || -> Vec<AccuracyRow> {
        sizes
            .iter()
            .map(|&n| {
                let case = format!("ours:watch:{n}:{n}:wait");
                let watch = child(&case, &sim, &otlp.url, within);
                let pinned = pinning.then(|| {
                    sim.pin("0");
                    let v = child_under(&case, &sim, &otlp.url, within, &["taskset", "-c", "1"]);
                    sim.unpin();
                    v
                });
                let tls = (n >= 1000).then(|| child(&case, &tls, &otlp.url, within));
                let poll = child(&format!("ours:poll:{n}:{n}:wait"), &sim, &otlp.url, within);
                AccuracyRow {
                    n,
                    watch,
                    pinned,
                    tls,
                    poll,
                }
            })
            .collect()
    };
    // `SCALE_BENCH_ONLY=traffic` (or `coder-peer`, `page`, `accuracy`, `peer`,
    // `instructions`, `idle`): only those sections.
    if let Ok(only) = std::env::var("SCALE_BENCH_ONLY") {
        let has = |name: &str| only.split(',').any(|s| s.trim() == name);
        if has("coder-peer") {
            t.section(&crate::coder_peer::run(quick));
        }
        if has("accuracy") {
            t.accuracy(&accuracy());
        }
        if has("peer") {
            // scaletestd at Locust's concurrency, then Locust on the same flow.
            let n = 100;
            let rows = peer_rows(&sim, &otlp.url, within, n, quick);
            let locust = crate::report::locust(&sim, n, if quick { 20 } else { 40 });
            t.peer(n, &rows, &locust);
        }
        if has("traffic") {
            traffic_section(&mut t, quick, &sim, &otlp.url);
        }
        if has("instructions") {
            t.instructions(&crate::instructions::count(&otlp.url));
        }
        if has("idle") {
            t.section(&crate::footprint::idle(&sim).await);
        }
        if has("page") {
            t.section(&crate::footprint::status_page());
        }
        return t.render();
    }
    // Coder's own harness first: the comparison users make.
    t.section(&crate::coder_peer::run(quick));
    let accuracy = accuracy();
    t.accuracy(&accuracy);

    let n = if quick { 300 } else { 1000 };
    let concurrency = 100;
    let ours = child(
        &format!("ours:watch:{n}:{concurrency}:full"),
        &sim,
        &otlp.url,
        within,
    );
    let floor = child(&format!("raw:{n}:{concurrency}"), &sim, &otlp.url, within);
    let peer = peer_rows(&sim, &otlp.url, within, concurrency, quick);
    let locust = crate::report::locust(&sim, concurrency, if quick { 20 } else { 40 });
    drop(sim);
    // Requests per lifecycle depend on how long builds take when polling: once more with
    // durations like a real template's.
    let slow = SimProcess::start(crate::sim::CODER_LIKE);
    let m = if quick { 50 } else { 100 };
    let long = (
        m,
        child(
            &format!("ours:watch:{m}:{m}:wait"),
            &slow,
            &otlp.url,
            within,
        ),
        child(&format!("ours:poll:{m}:{m}:wait"), &slow, &otlp.url, within),
    );
    drop(slow);
    let sim = SimProcess::start(crate::sim::FAST);
    let capacity = report::Capacity {
        n,
        concurrency,
        ours,
        floor,
        peer,
        locust,
        long,
    };
    t.capacity(&capacity, &accuracy);
    t.instructions(&crate::instructions::count(&otlp.url));
    traffic_section(&mut t, quick, &sim, &otlp.url);
    t.section(&crate::footprint::scrape_time());
    t.section(&crate::footprint::status_page());
    t.section(&crate::footprint::idle(&sim).await);
    t.render()
}
