//! The benchmark: how exact scaletestd's timings are and what one instance can drive.
//!
//! `cargo bench --bench scale` (or `scripts/bench`, which also installs Locust) starts the
//! simulator as a separate process with fixed latencies, then runs each case in a child
//! process of its own (so peak RSS and CPU belong to that case alone) and prints one table:
//! accuracy at 10 to 10,000 concurrent workspaces, event-driven vs Coder's polling
//! intervals; CPU and memory per 1,000 full lifecycles against a raw client with no metrics or
//! tracing; Locust on the same flow; `/metrics` encode time; the daemon's idle footprint.
//!
//! First of all, scaletestd against Coder's own harness on a real coderd (`coder_peer`, as
//! root): the comparison users make.
//!
//! Figures are printed, never asserted: the machines are shared and noisy.

mod cases;
mod coder_peer;
mod footprint;
mod instructions;
mod raw;
mod report;
mod sim;
/// The tests' configuration writer (`ConfigText`), so the benchmark's scenarios are written
/// as the tests' are.
#[allow(dead_code)]
#[path = "../../tests/it/common/toolkit.rs"]
mod toolkit;

use std::time::Duration;

/// Latencies the simulator injects, fixed so that "measured − injected" means something.
pub const INIT_MS: u64 = 100;
pub const PLAN_MS: u64 = 200;
pub const GRAPH_MS: u64 = 50;
pub const APPLY_MS: u64 = 650;
pub const CONNECT_MS: u64 = 300;
pub const STARTUP_MS: u64 = 500;
pub const DESTROY_MS: u64 = 400;
pub const BUILD_MS: u64 = INIT_MS + PLAN_MS + GRAPH_MS + APPLY_MS;
pub const AGENT_MS: u64 = CONNECT_MS + STARTUP_MS;
pub const TOKEN: &str = "bench-token-0123456789";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // A child: run one case and print its figures as a JSON line.
    if let Ok(case) = std::env::var("SCALE_BENCH_CASE") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let out = rt.block_on(cases::run_child(&case));
        println!(
            "{}",
            serde_json::to_string(&out).expect("figures serialize")
        );
        return;
    }
    // `cargo test --all-targets` builds and runs bench targets too: only `cargo bench`
    // (which passes --bench) runs the benchmark.
    if !args.iter().any(|a| a == "--bench") {
        println!("scale: run with `cargo bench --bench scale` or scripts/bench");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick") || std::env::var("SCALE_BENCH_QUICK").is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let table = cases::run_all(quick).await;
        println!("\n{table}");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("results.md"), &table);
        eprintln!("written to target/bench/results.md");
    });
}

/// Peak and current RSS (MiB) of a process, from /proc.
pub fn rss_mib(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) a process has used, from /proc; 0 once it is gone.
pub fn cpu_seconds(pid: &str) -> f64 {
    scaletestd::metrics::read_proc_stat_of(pid).map_or(0.0, |s| s.cpu_seconds)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
