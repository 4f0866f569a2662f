//! Instructions per lifecycle, counted by valgrind's callgrind: unlike CPU seconds they do
//! not move with what else the machine runs, so "scaletestd ÷ raw client" is repeatable.
//!
//! Each tool runs the full lifecycle (create, build, agent, SSH, PTY, delete) twice, for
//! `SMALL` and `LARGE` workspaces, and the difference divided by `LARGE − SMALL` is the
//! cost of one lifecycle without start-up. The larger run's profile, its own (exclusive)
//! instructions summed by crate, names where scaletestd's go.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cases::child_under;
use crate::sim::{FAST, SimProcess};

const SMALL: u32 = 10;
const LARGE: u32 = 60;
const CONCURRENCY: u32 = 10;

/// One tool's figures.
pub struct Counted {
    pub tool: &'static str,
    /// Instructions per lifecycle; an error when a run failed.
    pub per_lifecycle: Result<f64, String>,
    /// Share of the larger run's instructions, by crate, largest first.
    pub by_crate: Vec<(String, f64)>,
}

/// Counts scaletestd over watch-ws and over SSE, and the raw client (SSE), each against a
/// simulator of its own that serves what it needs.
pub fn count(otlp: &str) -> Vec<Counted> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return vec![Counted {
            tool: "valgrind",
            per_lifecycle: Err("valgrind not installed (apt-get install valgrind)".into()),
            by_crate: vec![],
        }];
    }
    let dir = std::env::temp_dir().join(format!("scaletestd-bench-ir-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut out = Vec::new();
    for (tool, endpoints, case) in [
        ("scaletestd, watch-ws", "both", "ours:watch:{n}:{c}:full"),
        ("scaletestd, SSE", "sse", "ours:watch:{n}:{c}:full"),
        ("raw client, SSE", "sse", "raw:{n}:{c}"),
    ] {
        let sim = SimProcess::start_with(FAST, &format!("watch_endpoints = \"{endpoints}\""));
        let mut totals = Vec::new();
        let mut by_crate = vec![];
        for n in [SMALL, LARGE] {
            let file = dir.join(format!("{}-{n}.out", tool.replace([',', ' '], "")));
            let arg = format!("--callgrind-out-file={}", file.display());
            let case = case
                .replace("{n}", &n.to_string())
                .replace("{c}", &CONCURRENCY.to_string());
            let v = child_under(
                &case,
                &sim,
                otlp,
                Duration::from_secs(900),
                &[
                    "env",
                    "SCALE_BENCH_HEAP=off",
                    "valgrind",
                    "--tool=callgrind",
                    "--dump-instr=no",
                    &arg,
                ],
            );
            totals.push(total(&v, n, &file));
            if n == LARGE {
                by_crate = crates(&file);
            }
        }
        let per_lifecycle = match (&totals[0], &totals[1]) {
            (Ok(a), Ok(b)) => Ok((b - a) / (LARGE - SMALL) as f64),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        out.push(Counted {
            tool,
            per_lifecycle,
            by_crate,
        });
    }
    out
}

/// The run's total instructions, when every lifecycle succeeded.
fn total(v: &Value, n: u32, file: &Path) -> Result<f64, String> {
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_string());
    }
    if v["ok"].as_u64() != Some(n as u64) {
        return Err(format!("{} of {n} succeeded", v["ok"]));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary: ").or(l.strip_prefix("totals: ")))
        .and_then(|t| t.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("{}: no totals", file.display()))
}

/// Exclusive instructions summed by the crate of each function (the symbol's first path
/// segment; `libc` and the loader by object), as shares of the whole.
fn crates(file: &Path) -> Vec<(String, f64)> {
    let Ok(out) = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--show-percs=no"])
        .arg(file)
        .output()
    else {
        return vec![];
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut all = 0.0;
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<f64>() else {
            continue;
        };
        // "file:function [object]"; the file is often "???".
        let Some((_, function)) = rest.trim().split_once(':') else {
            continue;
        };
        all += count;
        sums.entry(crate_of(function))
            .or_default()
            .add_assign(count);
    }
    if all == 0.0 {
        return vec![];
    }
    let mut v: Vec<(String, f64)> = sums.into_iter().map(|(k, c)| (k, c / all)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

use std::ops::AddAssign;

fn crate_of(function: &str) -> String {
    let f = function.trim();
    // Generic code is named after its impl: `<T as core::…>::f` or `<tokio::…>::f`.
    let f = f.strip_prefix('<').unwrap_or(f);
    let f = f.strip_prefix("&").unwrap_or(f);
    let object = f.rsplit_once(" [").map(|(_, o)| o.trim_end_matches(']'));
    let name = f.split(" [").next().unwrap_or(f);
    if let Some((first, _)) = name.split_once("::") {
        return first.to_string();
    }
    match object {
        Some(o) if o.contains("libc") => "libc".into(),
        Some(o) if o.contains("ld-linux") => "ld.so".into(),
        _ => "other".into(),
    }
}
