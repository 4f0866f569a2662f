//! The table, and Locust, measured from the orchestrator itself (the daemon's own figures
//! are in `footprint`).

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::sim::SimProcess;
use crate::*;

/// The `p`th percentile (nearest rank) of `v`; NaN when empty.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// An OTLP/HTTP endpoint that takes every export and answers 200, so span export costs what
/// it costs against a real collector.
pub struct OtlpSink {
    pub url: String,
}

impl OtlpSink {
    pub async fn start() -> OtlpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}/v1/traces", listener.local_addr().expect("bound"));
        let app = axum::Router::new().fallback(|| async {
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        OtlpSink { url }
    }
}

/// The capacity cases' figures: `n` full lifecycles at `concurrency`, ours and the raw
/// client's; Locust's; and `m` workspaces with Coder-like durations, events and polling.
pub struct Capacity {
    pub n: u32,
    pub concurrency: u32,
    pub ours: Value,
    pub floor: Value,
    /// scaletestd on Locust's flow (see `peer_rows`).
    pub peer: Vec<AccuracyRow>,
    pub locust: Value,
    pub long: (u32, Value, Value),
}

#[derive(Default)]
pub struct Table {
    out: String,
}

fn pair(v: &Value, key: &str) -> String {
    match (v[key][0].as_f64(), v[key][1].as_f64()) {
        (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
        _ => "—".into(),
    }
}

/// A section's title, a table's header row and the separator row under it.
fn table_head(o: &mut String, title: &str, header: &str) {
    let columns = header.matches('|').count().saturating_sub(1);
    let _ = writeln!(o, "### {title}\n");
    let _ = writeln!(o, "{header}");
    let _ = writeln!(o, "|{}", "---|".repeat(columns));
}

/// [`pair`] to the hundredth: our own part is sub-millisecond.
fn pair2(v: &Value, key: &str) -> String {
    match (v[key][0].as_f64(), v[key][1].as_f64()) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() => format!("{a:.2} / {b:.2}"),
        _ => "—".into(),
    }
}

/// One concurrency's accuracy cases: events, events with the simulator and us on separate
/// CPUs (when there are two and `taskset`), polling.
pub struct AccuracyRow {
    pub n: u32,
    pub watch: Value,
    pub pinned: Option<Value>,
    /// Events against the simulator behind TLS: calls on HTTP/2, `watch-ws` on HTTP/1.1
    /// (at 1,000 and more).
    pub tls: Option<Value>,
    pub poll: Value,
}

fn per_lifecycle(v: &Value) -> f64 {
    v["requests"].as_f64().unwrap_or(f64::NAN) / v["n"].as_f64().unwrap_or(f64::NAN)
}

impl Table {
    pub fn accuracy(&mut self, rows: &[AccuracyRow]) {
        let o = &mut self.out;
        let _ = writeln!(
            o,
            "### Accuracy: timing error in ms, p50 / p99 (build injected {BUILD_MS} ms, agent {AGENT_MS} ms)\n"
        );
        let _ = writeln!(
            o,
            "| concurrent workspaces | waiting | build − injected | build − Coder's own end | build: simulator, written → sent | build: ours, sent → seen | agent − injected | agent − Coder's own end | agent: simulator | agent: ours | API requests per lifecycle | succeeded | wall s | peak RSS MiB (live heap) |"
        );
        let _ = writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let n = r.n;
            let mut modes = vec![("events (watch)", &r.watch)];
            if let Some(p) = &r.pinned {
                modes.push(("events, pinned (simulator CPU 0, scaletestd CPU 1)", p));
            }
            if let Some(v) = &r.tls {
                modes.push(("events over TLS (calls on HTTP/2, watch-ws on HTTP/1.1)", v));
            }
            modes.push(("polling 500 ms / 1 s", &r.poll));
            for (mode, v) in modes {
                if let Some(e) = v["error"].as_str() {
                    let _ = writeln!(o, "| {n} | {mode} | {e} | | | | | | | | | | | |");
                    continue;
                }
                let _ = writeln!(
                    o,
                    "| {n} | {mode} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {}/{n} | {:.1} | {:.0} ({:.0}) |",
                    pair(v, "build_inj"),
                    pair(v, "build_coder"),
                    pair2(v, "build_sim"),
                    pair2(v, "build_ours"),
                    pair(v, "agent_inj"),
                    pair(v, "agent_coder"),
                    pair2(v, "agent_sim"),
                    pair2(v, "agent_ours"),
                    per_lifecycle(v),
                    v["ok"],
                    v["wall_s"].as_f64().unwrap_or(0.0),
                    v["peak_rss_mib"].as_f64().unwrap_or(0.0),
                    v["peak_heap_mib"].as_f64().unwrap_or(f64::NAN),
                );
            }
        }
        let _ = writeln!(
            o,
            "\n\"Coder's own end\" compares when we saw the build finish (the agent ready) with the \
             timestamp the server recorded for it: the server's lateness in publishing plus ours. \
             The simulator notes when it sent each event (its delivery log; same machine and \
             clock), which splits that into \"simulator\" (state written → event on the socket) \
             and \"ours\" (event on the socket → phase ended: the kernel, our reading and \
             decoding, and the runtime waking the workspace's task). Polling rows have no split: \
             no event ended their phases. \"− injected\" also holds the simulator's own slowness \
             under load.\n"
        );
        if let Some(r) = rows.iter().find(|r| r.n == 1000) {
            for (name, v) in [("unpinned", Some(&r.watch)), ("pinned", r.pinned.as_ref())] {
                let Some(v) = v else { continue };
                let _ = writeln!(
                    o,
                    "Ours alone at 1,000 concurrent, {name}: p99 build {:.2} ms, agent {:.2} ms (target < 2 ms).\n",
                    v["build_ours"][1].as_f64().unwrap_or(f64::NAN),
                    v["agent_ours"][1].as_f64().unwrap_or(f64::NAN),
                );
            }
        }
    }

    pub fn capacity(&mut self, c: &Capacity, accuracy: &[AccuracyRow]) {
        let Capacity {
            n,
            concurrency,
            ours,
            floor,
            peer,
            locust,
            long: (m, long_watch, long_poll),
        } = c;
        let (n, concurrency) = (*n, *concurrency);
        let o = &mut self.out;
        let cpu_per_1000 = |v: &Value| v["cpu_s"].as_f64().unwrap_or(f64::NAN) * 1000.0 / n as f64;
        let (ours_cpu, raw_cpu) = (cpu_per_1000(ours), cpu_per_1000(floor));
        let _ = writeln!(o, "### Capacity and overhead\n");
        let _ = writeln!(o, "| figure | measured | target |");
        let _ = writeln!(o, "|---|---|---|");
        let _ = writeln!(
            o,
            "| CPU-seconds per 1,000 full lifecycles (create, build, agent, SSH, PTY, delete; {n} at concurrency {concurrency}) | {ours_cpu:.2} s ({}) | — |",
            ours["summary"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            o,
            "| the raw client (same calls, no metrics, tracing or retries) | {raw_cpu:.2} s ({} ok) | floor |",
            floor["ok"]
        );
        let _ = writeln!(
            o,
            "| scaletestd ÷ raw client, CPU per lifecycle | {:.2}× | ≤ 1.5× |",
            ours_cpu / raw_cpu
        );
        let _ = writeln!(
            o,
            "| peak RSS, full lifecycles at concurrency {concurrency} | {:.0} MiB (raw client {:.0} MiB) | — |",
            ours["peak_rss_mib"].as_f64().unwrap_or(0.0),
            floor["peak_rss_mib"].as_f64().unwrap_or(0.0)
        );
        if let Some(AccuracyRow {
            n: big,
            watch: w,
            tls,
            ..
        }) = accuracy.last()
        {
            let rss = |v: &Value| v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                o,
                "| peak RSS at {big} concurrent workspaces, events, plain HTTP (HTTP/1.1: a connection per call in flight) | {:.0} MiB | < 512 MiB |",
                rss(w)
            );
            if let Some(t) = tls {
                let _ = writeln!(
                    o,
                    "| peak RSS at {big} concurrent workspaces, events, Coder behind TLS (calls share HTTP/2) | {:.0} MiB ({:.0} KiB a workspace) | < 512 MiB |",
                    rss(t),
                    rss(t) * 1024.0 / f64::from(*big)
                );
            }
        }
        let under5 = accuracy
            .iter()
            .filter(|r| {
                let p99 = |k: &str| r.watch[k][1].as_f64().unwrap_or(f64::INFINITY);
                p99("build_coder") < 5.0 && p99("agent_coder") < 5.0
            })
            .map(|r| r.n)
            .max();
        let _ = writeln!(
            o,
            "| largest tested concurrency with p99 error (vs Coder's timestamps) under 5 ms | {} | — |",
            under5.map_or("none of those tested".to_string(), |n| n.to_string())
        );
        if let Some(AccuracyRow {
            watch: w, poll: p, ..
        }) = accuracy.iter().find(|r| r.n == 1000)
        {
            let _ = writeln!(
                o,
                "| p99 timing error at 1,000 concurrent (build / agent vs Coder's end) | {:.1} / {:.1} ms | < 2 ms |",
                w["build_coder"][1].as_f64().unwrap_or(f64::NAN),
                w["agent_coder"][1].as_f64().unwrap_or(f64::NAN)
            );
            let _ = writeln!(
                o,
                "| API requests per lifecycle at 1,000: events vs polling | {:.1} vs {:.1} ({:.1}× fewer) | ≥ 10× fewer |",
                per_lifecycle(w),
                per_lifecycle(p),
                per_lifecycle(p) / per_lifecycle(w)
            );
        }
        let _ = writeln!(
            o,
            "| API requests per lifecycle, {m} workspaces with a 30 s build and a 15 s agent start: events vs polling | {:.1} vs {:.1} ({:.1}× fewer; {} and {}) | ≥ 10× fewer |",
            per_lifecycle(long_watch),
            per_lifecycle(long_poll),
            per_lifecycle(long_poll) / per_lifecycle(long_watch),
            long_watch["summary"].as_str().unwrap_or("—"),
            long_poll["summary"].as_str().unwrap_or("—"),
        );
        self.peer(concurrency, peer, locust);
        let _ = writeln!(self.out);
    }

    /// Traffic: sessions held open at a tick interval with p99 echo under 50 ms.
    pub fn traffic(&mut self, rows: &[(u32, u32, Value)]) {
        let o = &mut self.out;
        table_head(
            o,
            "Traffic: web-terminal sessions echoing 64 bytes a tick, 20 s each (sessions held while p99 echo < 50 ms)",
            "| tick | sessions | ticks per second | echo p50 / p99 ms | errors | CPU % of a core (ours) | peak RSS MiB (ours) | held |",
        );
        for (tick, sessions, v) in rows {
            if let Some(e) = v["error"].as_str() {
                let _ = writeln!(o, "| {tick} ms | {sessions} | {e} | | | | | no |");
                continue;
            }
            let p99 = v["p99_ms"].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                o,
                "| {tick} ms | {sessions} | {:.0} | {:.1} / {p99:.1} | {} | {:.0} | {:.0} | {} |",
                v["ticks_per_second"].as_f64().unwrap_or(0.0),
                v["p50_ms"].as_f64().unwrap_or(f64::NAN),
                v["errors"],
                v["cpu_percent"].as_f64().unwrap_or(0.0),
                v["peak_rss_mib"].as_f64().unwrap_or(0.0),
                if p99 < 50.0 && v["errors"].as_u64() == Some(0) {
                    "yes"
                } else {
                    "no"
                }
            );
        }
        o.push('\n');
    }

    /// Locust against scaletestd on the same create / wait / delete flow at `concurrency`:
    /// requests and CPU, and per completed lifecycle (what a user compares).
    pub fn peer(&mut self, concurrency: u32, ours: &[AccuracyRow], locust: &Value) {
        let o = &mut self.out;
        let _ = writeln!(
            o,
            "\n### Peer: Locust on the same create / wait / delete flow, {concurrency} users\n"
        );
        let _ = writeln!(
            o,
            "| tool | requests | lifecycles | CPU s | CPU ms per lifecycle | requests per CPU-second | peak RSS MiB | RSS per user KiB |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
        let row = |o: &mut String, name: &str, v: &Value, lifecycles: f64| {
            let req = v["requests"].as_f64().unwrap_or(f64::NAN);
            let cpu = v["cpu_s"].as_f64().unwrap_or(f64::NAN);
            let rss = v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                o,
                "| {name} | {req:.0} | {lifecycles:.0} | {cpu:.2} | {:.1} | {:.0} | {rss:.0} | {:.0} |",
                cpu * 1000.0 / lifecycles,
                req / cpu,
                rss * 1024.0 / concurrency as f64
            );
        };
        let mut ours_ms = f64::NAN;
        if let Some(AccuracyRow {
            watch: w, poll: p, ..
        }) = ours.iter().find(|r| r.n == concurrency)
        {
            for (name, v) in [("scaletestd, events", w), ("scaletestd, polling", p)] {
                let done = v["ok"].as_f64().unwrap_or(f64::NAN);
                if name.ends_with("events") {
                    ours_ms = v["cpu_s"].as_f64().unwrap_or(f64::NAN) * 1000.0 / done;
                }
                row(o, name, v, done);
            }
        }
        match locust["error"].as_str() {
            Some(e) => {
                let _ = writeln!(o, "| Locust | {e} | | | | | | |");
            }
            None => {
                let name = format!(
                    "Locust {} (polling, {} s)",
                    locust["version"].as_str().unwrap_or(""),
                    locust["seconds"]
                );
                let done = locust["lifecycles"].as_f64().unwrap_or(f64::NAN);
                row(o, &name, locust, done);
                let theirs = locust["cpu_s"].as_f64().unwrap_or(f64::NAN) * 1000.0 / done;
                let _ = writeln!(
                    o,
                    "\nCPU per completed lifecycle: scaletestd (events) {ours_ms:.1} ms, Locust {theirs:.1} ms: {:.1}× less (target ≥ 10×).",
                    theirs / ours_ms
                );
            }
        }
    }

    /// Instructions per lifecycle (callgrind): scaletestd both ways and the raw client.
    pub fn instructions(&mut self, counted: &[crate::instructions::Counted]) {
        let o = &mut self.out;
        table_head(
            o,
            "Instructions per full lifecycle (valgrind callgrind; repeatable)",
            "| tool | instructions per lifecycle | ÷ raw client | where they go (own instructions by crate, larger run) |",
        );
        let raw = counted
            .iter()
            .find(|c| c.tool.starts_with("raw"))
            .and_then(|c| c.per_lifecycle.as_ref().ok().copied());
        for c in counted {
            let top: Vec<String> = c
                .by_crate
                .iter()
                .take(8)
                .map(|(k, share)| format!("{k} {:.0}%", share * 100.0))
                .collect();
            match &c.per_lifecycle {
                Ok(ir) => {
                    let ratio = raw.map_or("—".to_string(), |r| format!("{:.2}×", ir / r));
                    let _ = writeln!(
                        o,
                        "| {} | {:.2} M | {ratio} | {} |",
                        c.tool,
                        ir / 1e6,
                        top.join(", ")
                    );
                }
                Err(e) => {
                    let _ = writeln!(o, "| {} | {e} | | |", c.tool);
                }
            }
        }
        let _ = writeln!(
            o,
            "\nTarget: scaletestd ≤ 1.3× the raw client. The raw client makes the same calls with \
             no metrics, spans, retries or classification; \"SSE\" rows run against a simulator \
             serving only the SSE watch, so both read the same stream.\n"
        );
    }

    /// A section written elsewhere, as it is.
    pub fn section(&mut self, text: &str) {
        self.out.push_str(text);
    }

    pub fn render(self) -> String {
        let machine = machine();
        format!("## Benchmark\n\nMachine: {machine}\n\n{}", self.out)
    }
}

/// Locust running the same create / wait / delete flow (polling at Coder's harness
/// intervals, as it has no event streams) with `users` users for `seconds`.
pub fn locust(sim: &SimProcess, users: u32, seconds: u32) -> Value {
    let version = Command::new("locust").arg("--version").output();
    let Ok(version) = version else {
        return serde_json::json!({"error": "locust not installed (scripts/bench installs it)"});
    };
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    eprintln!("== locust {version}: {users} users for {seconds} s");
    let dir = std::env::temp_dir().join(format!("scaletestd-bench-locust-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let csv = dir.join("locust");
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/locustfile.py");
    let mut c = Command::new("locust")
        .args([
            "-f",
            file.to_str().expect("UTF-8"),
            "--headless",
            "--only-summary",
            "-u",
            &users.to_string(),
            "-r",
            &users.to_string(),
            "--run-time",
            &format!("{seconds}s"),
            "--host",
            &sim.url,
            "--csv",
            csv.to_str().expect("UTF-8"),
        ])
        .env("CODER_SESSION_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("locust starts");
    let pid = c.id().to_string();
    let (mut cpu, mut peak) = (0.0, 0.0f64);
    while c.try_wait().ok().flatten().is_none() {
        cpu = cpu_seconds(&pid).max(cpu);
        peak = peak.max(rss_mib(&pid).0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = std::fs::read_to_string(format!("{}_stats.csv", csv.display())).unwrap_or_default();
    // Columns: Type, Name, Request Count, Failure Count, ...
    let count = |name: &str| {
        stats
            .lines()
            .find(|l| l.split(',').nth(1) == Some(name))
            .and_then(|l| l.split(',').nth(2))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The locustfile reports each completed lifecycle as a pseudo-request named "lifecycle".
    let lifecycles = count("lifecycle");
    serde_json::json!({
        "version": version,
        "seconds": seconds,
        "requests": count("Aggregated") - lifecycles,
        "lifecycles": lifecycles,
        "creates": count("create"),
        "cpu_s": cpu,
        "peak_rss_mib": peak,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1048576.0);
    format!(
        "{cores} cores ({cpu}), {mem:.0} GiB, {} — the simulator, scaletestd and the peers share these cores",
        chrono::Utc::now().format("%Y-%m-%d")
    )
}
