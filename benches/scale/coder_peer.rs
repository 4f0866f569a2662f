//! scaletestd against Coder's own harness (`coder exp scaletest create-workspaces`), both on
//! the same real coderd that `scripts/real-coder` runs, in one run: the comparison a platform
//! team makes before choosing a tool (issue 31).
//!
//! Each workload runs the two tools alternately (A B A B …), so drift in the machine or in
//! coderd's database falls on both. A tool's CPU comes from `wait4` on its process (its
//! whole tree: the kernel folds reaped children into it), its peak RSS from the process's
//! `VmHWM` (neither tool starts processes of its own in these workloads); the requests it cost
//! coderd come from coderd's own `coderd_api_requests_processed_total`, read before and after,
//! without the routes coderd's agents call (`/api/v2/workspaceagents/me/…`, `/derp`), which
//! are the same whoever drives the test.
//!
//! Needs root, as `scripts/real-coder` does. `SCALE_BENCH_ONLY=coder-peer` runs this alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../tests/it/common/real.rs"]
mod real;

use crate::toolkit::{ConfigText, ScenarioText};
use real::RealCoder;

/// One workload: `count` workspaces at `concurrency`; `agents`: coderd starts a real agent
/// per build and the tools wait for it and open a web terminal.
#[derive(Clone, Copy)]
struct Workload {
    title: &'static str,
    count: u32,
    concurrency: u32,
    agents: bool,
}

/// Which tool, and how it makes its workspaces' owners.
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    /// scaletestd as the token's user.
    Ours,
    /// scaletestd with `[scenario.users]`: one test user per workspace.
    OursUsers,
    /// Coder's harness as the token's user (`--use-host-login`).
    Coders,
    /// Coder's harness as it runs by default: a new user per workspace.
    CodersUsers,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "scaletestd",
            Tool::OursUsers => "scaletestd, a test user per workspace",
            Tool::Coders => "Coder's harness (`--use-host-login`)",
            Tool::CodersUsers => "Coder's harness, a user per workspace (its default)",
        }
    }
}

/// One tool's run: what it did and what it cost.
#[derive(Default, Clone)]
struct Figures {
    succeeded: u32,
    cpu_s: f64,
    peak_rss_mib: f64,
    requests: f64,
    wall_s: f64,
    /// Requests by coderd's route, for the README's account of each call.
    routes: BTreeMap<String, f64>,
    /// scaletestd's per-phase p50 / p95, ms.
    phases: Vec<(String, f64, f64)>,
    /// The first lines of why it failed, when it did.
    error: Option<String>,
}

/// Runs the comparison and returns its section of the table.
pub fn run(quick: bool) -> String {
    // The helper moves its thread into coderd's namespace: a thread of its own, gone after.
    std::thread::spawn(move || section(quick))
        .join()
        .unwrap_or_else(|_| {
            "### scaletestd and Coder's harness\n\nthe comparison panicked (see stderr)\n".into()
        })
}

fn section(quick: bool) -> String {
    let mut out = String::new();
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        let _ = writeln!(
            out,
            "### scaletestd and Coder's harness on the same real coderd\n\nnot run: `scripts/real-coder` needs root (network namespaces); run scripts/bench as root\n"
        );
        return out;
    }
    let runs = if quick { 2 } else { 3 };
    let _ = writeln!(
        out,
        "### scaletestd and Coder's harness on the same real coderd\n\n{}\n",
        coder_version()
    );
    let max = std::env::var("SCALE_BENCH_PEER_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 60 } else { 200 });
    let with_agents = [
        Workload {
            title: "full lifecycles with real agents",
            count: 40,
            concurrency: 20,
            agents: true,
        },
        Workload {
            title: "full lifecycles with real agents, the larger count",
            count: max,
            concurrency: max / 2,
            agents: true,
        },
    ];
    let churn = Workload {
        title: "build churn without agents",
        count: if quick { 100 } else { 300 },
        concurrency: 50,
        agents: false,
    };
    let mut summary = vec![];
    {
        let coder = up("scpeer-agents", true);
        for w in with_agents {
            let (a, b) = alternate(&coder, w, runs, Tool::Ours, Tool::Coders);
            render(&mut out, w, &[(Tool::Ours, &a), (Tool::Coders, &b)]);
            summary.push((w, a, b));
        }
        // Each tool's multi-user mode, once: what happens to it.
        let w = with_agents[0];
        let ours = measure(&coder, w, Tool::OursUsers, 0);
        let theirs = measure(&coder, w, Tool::CodersUsers, 0);
        render_once(
            &mut out,
            w,
            &[(Tool::OursUsers, &ours), (Tool::CodersUsers, &theirs)],
        );
    }
    {
        let coder = up("scpeer-churn", false);
        let (a, b) = alternate(&coder, churn, runs, Tool::Ours, Tool::Coders);
        render(&mut out, churn, &[(Tool::Ours, &a), (Tool::Coders, &b)]);
        summary.push((churn, a, b));
    }
    targets(&mut out, &summary);
    out
}

/// A coderd of the bench's own, this thread moved into its namespace.
fn up(name: &str, agents: bool) -> RealCoder {
    let name = format!("{name}-{}", std::process::id());
    let coder = RealCoder::up_with(&name, None, agents);
    real::join_netns(&name);
    coder
}

/// `runs` runs of each tool, `a` then `b`, alternating.
fn alternate(
    coder: &RealCoder,
    w: Workload,
    runs: u32,
    a: Tool,
    b: Tool,
) -> (Vec<Figures>, Vec<Figures>) {
    let (mut fa, mut fb) = (vec![], vec![]);
    for i in 0..runs {
        fa.push(measure(coder, w, a, i));
        fb.push(measure(coder, w, b, i));
    }
    (fa, fb)
}

/// One run of `tool` on `w`, measured.
fn measure(coder: &RealCoder, w: Workload, tool: Tool, i: u32) -> Figures {
    eprintln!(
        "== coder-peer: {} on {} workspaces at {} ({}), run {}",
        tool.name(),
        w.count,
        w.concurrency,
        w.title,
        i + 1
    );
    let dir = scratch(&format!("{}-{i}", w.count));
    let before = requests(coder);
    let (mut cmd, report) = match tool {
        Tool::Ours | Tool::OursUsers => ours(coder, w, tool == Tool::OursUsers, &dir, i),
        Tool::Coders | Tool::CodersUsers => coders(coder, w, tool == Tool::Coders, &dir),
    };
    let started = Instant::now();
    let ran = wait4_within(&mut cmd, Duration::from_secs(1800));
    let wall_s = started.elapsed().as_secs_f64();
    // coderd counts a websocket when it closes, and the harness's cleanup may still be
    // closing: let coderd's counters settle.
    std::thread::sleep(Duration::from_secs(2));
    let after = requests(coder);
    let mut routes = BTreeMap::new();
    for (route, n) in &after {
        let d = n - before.get(route).copied().unwrap_or(0.0);
        if d > 0.0 {
            routes.insert(route.clone(), d);
        }
    }
    let mut f = Figures {
        cpu_s: ran.cpu_s,
        peak_rss_mib: ran.peak_rss_mib,
        requests: routes.values().sum(),
        routes,
        wall_s,
        ..Default::default()
    };
    let parsed = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    match parsed {
        Some(v) => {
            f.succeeded = v["total_pass"].as_u64().unwrap_or(0) as u32;
            for p in v["phases"].as_array().into_iter().flatten() {
                f.phases.push((
                    p["name"].as_str().unwrap_or("").to_string(),
                    p["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    p["p95_ms"].as_f64().unwrap_or(f64::NAN),
                ));
            }
            if f.succeeded < w.count {
                f.error = first_error(&v).or_else(|| tail(&ran.stderr));
            }
        }
        None => f.error = tail(&ran.stderr).or(Some(format!("exit {}", ran.code))),
    }
    eprintln!(
        "   {}/{} succeeded, CPU {:.2} s, peak RSS {:.0} MiB, {:.0} requests, {:.1} s{}",
        f.succeeded,
        w.count,
        f.cpu_s,
        f.peak_rss_mib,
        f.requests,
        f.wall_s,
        f.error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
    f
}

/// `scaletestd once` on the workload; its JSON report.
fn ours(coder: &RealCoder, w: Workload, users: bool, dir: &Path, i: u32) -> (Command, PathBuf) {
    let phases: &[&str] = if w.agents {
        &["create", "build", "agent", "pty", "delete"]
    } else {
        &["create", "build", "delete"]
    };
    let mut scenario = ScenarioText::new("peer", w.count)
        .template(coder.get("CODER_TEMPLATE"))
        .prefix(&format!("stp{i}"))
        .key(&format!("concurrency = {}", w.concurrency))
        .phases(phases)
        .command("echo hello", "hello")
        .timeout("build", "10m")
        .timeout("agent", "10m")
        .timeout("pty", "2m")
        .timeout("delete", "10m");
    if users {
        scenario = scenario.table("users", &format!("count = {}", w.count));
    }
    let cfg = ConfigText::new(coder.get("CODER_URL"))
        .scenario(scenario)
        .write(dir, "peer.toml");
    let report = dir.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scaletestd"));
    cmd.args(["once", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(format!("json:{}", report.display()))
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .env("RUST_LOG", "warn");
    (cmd, report)
}

/// `coder exp scaletest create-workspaces` on the workload, as its docs show it; its JSON
/// results.
fn coders(coder: &RealCoder, w: Workload, host_login: bool, dir: &Path) -> (Command, PathBuf) {
    let report = dir.join("results.json");
    let mut cmd = Command::new(coder.get("CODER_BIN"));
    cmd.args(["exp", "scaletest", "create-workspaces"])
        .args(["--count", &w.count.to_string()])
        .args(["--template", coder.get("CODER_TEMPLATE")])
        .args(["--concurrency", &w.concurrency.to_string()])
        .args(["--cleanup-concurrency", &w.concurrency.to_string()])
        .args(["--output", &format!("json:{}", report.display())]);
    if w.agents {
        cmd.args([
            "--run-command",
            "echo hello",
            "--run-expect-output",
            "hello",
        ]);
    } else {
        cmd.arg("--no-wait-for-agents");
    }
    if host_login {
        cmd.arg("--use-host-login");
    }
    cmd.env("CODER_URL", coder.get("CODER_URL"))
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .env("CODER_CONFIG_DIR", dir.join("coder-config"))
        .env("HOME", dir);
    (cmd, report)
}

/// What a finished process cost.
struct Ran {
    code: i32,
    cpu_s: f64,
    peak_rss_mib: f64,
    stderr: String,
}

/// Runs `cmd` to its end (killed after `within`): user + system CPU of it and the children
/// it reaped from `wait4`, and its peak resident set from its own `VmHWM`, read as it runs.
/// Not `ru_maxrss`: Linux carries the spawning process's resident set through `execve` into
/// the child's (`exec_mmap`), so every tool would have reported at least the bench's own.
fn wait4_within(cmd: &mut Command, within: Duration) -> Ran {
    let errs = std::env::temp_dir().join(format!("scaletestd-peer-{}.err", std::process::id()));
    let file = std::fs::File::create(&errs).expect("a scratch file");
    // Reaped below by wait4, which alone gives the child's rusage.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("the tool starts");
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut peak_rss_mib = 0.0_f64;
    loop {
        // The high-water mark only grows, and the tools peak mid-run, not in their last 50 ms.
        peak_rss_mib = peak_rss_mib.max(crate::rss_mib(&pid.to_string()).0);
        // SAFETY: pid is our own unreaped child; status and usage outlive the call.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid {
            break;
        }
        if rc < 0 {
            panic!("wait4: {}", std::io::Error::last_os_error());
        }
        if started.elapsed() > within {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let stderr = std::fs::read_to_string(&errs).unwrap_or_default();
    let _ = std::fs::remove_file(&errs);
    Ran {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_rss_mib,
        stderr,
    }
}

/// coderd's request counters by route (`path` label), without its agents' own routes.
fn requests(coder: &RealCoder) -> BTreeMap<String, f64> {
    let url = coder.get("CODER_PROMETHEUS");
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10", url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut by_route = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("coderd_api_requests_processed_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let path = label("path");
        if path.starts_with("/api/v2/workspaceagents/me") || path.starts_with("/derp") {
            continue;
        }
        let key = format!("{} {path}", label("method"));
        *by_route.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    by_route
}

fn coder_version() -> String {
    let v = std::env::var("SCALETESTD_CODER_VERSION").unwrap_or_else(|_| "v2.36.1".into());
    format!(
        "coderd {v} from `scripts/real-coder` (PostgreSQL, the echo provisioner, a real `coder agent` per build), coderd and both tools on this machine's cores; Coder's harness is the `coder` binary of the same build. Medians of alternating runs, each run's figures beside them; requests are coderd's `coderd_api_requests_processed_total` without its agents' own routes."
    )
}

fn median(v: &[f64]) -> f64 {
    crate::report::pct(v, 50.0)
}

/// "median (run 1, run 2, …)".
fn runs_of(fs: &[Figures], get: impl Fn(&Figures) -> f64, digits: usize) -> String {
    let all: Vec<f64> = fs.iter().map(&get).collect();
    let each: Vec<String> = all.iter().map(|v| format!("{v:.digits$}")).collect();
    format!("{:.digits$} ({})", median(&all), each.join(", "))
}

fn render(out: &mut String, w: Workload, tools: &[(Tool, &Vec<Figures>)]) {
    let _ = writeln!(
        out,
        "#### {}: {} workspaces at concurrency {}\n",
        capital(w.title),
        w.count,
        w.concurrency
    );
    let _ = writeln!(
        out,
        "| tool | succeeded | CPU s | peak RSS MiB | requests to coderd | per workspace | wall s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (tool, fs) in tools {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            tool.name(),
            runs_of(fs, |f| f.succeeded as f64, 0),
            runs_of(fs, |f| f.cpu_s, 2),
            runs_of(fs, |f| f.peak_rss_mib, 0),
            runs_of(fs, |f| f.requests, 0),
            runs_of(fs, |f| f.requests / w.count as f64, 1),
            runs_of(fs, |f| f.wall_s, 1),
        );
    }
    errors(out, tools);
    phases(out, tools);
    routes(out, w, tools);
}

fn render_once(out: &mut String, w: Workload, tools: &[(Tool, &Figures)]) {
    let owned: Vec<(Tool, Vec<Figures>)> = tools
        .iter()
        .map(|(t, f)| (*t, vec![(*f).clone()]))
        .collect();
    let refs: Vec<(Tool, &Vec<Figures>)> = owned.iter().map(|(t, f)| (*t, f)).collect();
    let w = Workload {
        title: "each tool's multi-user mode, once: full lifecycles with real agents",
        ..w
    };
    render(out, w, &refs);
}

/// Why runs failed, one line a tool.
fn errors(out: &mut String, tools: &[(Tool, &Vec<Figures>)]) {
    for (tool, fs) in tools {
        if let Some(e) = fs.iter().find_map(|f| f.error.as_deref()) {
            let _ = writeln!(out, "\n{} failed: `{}`", tool.name(), e.replace('`', "'"));
        }
    }
}

/// scaletestd's per-phase p50 / p95 (medians over runs).
fn phases(out: &mut String, tools: &[(Tool, &Vec<Figures>)]) {
    for (tool, fs) in tools {
        let Some(first) = fs.first().filter(|f| !f.phases.is_empty()) else {
            continue;
        };
        let cells: Vec<String> = first
            .phases
            .iter()
            .map(|(name, ..)| {
                let of = |i: usize| -> Vec<f64> {
                    fs.iter()
                        .filter_map(|f| f.phases.iter().find(|p| &p.0 == name))
                        .map(|p| if i == 0 { p.1 } else { p.2 })
                        .collect()
                };
                format!("{name} {:.0} / {:.0}", median(&of(0)), median(&of(1)))
            })
            .collect();
        let _ = writeln!(
            out,
            "\n{}, per phase, p50 / p95 ms: {}",
            tool.name(),
            cells.join(" · ")
        );
    }
}

/// Requests per workspace by route, the median run's counts divided by the workspaces.
fn routes(out: &mut String, w: Workload, tools: &[(Tool, &Vec<Figures>)]) {
    for (tool, fs) in tools {
        let Some(f) = fs.first() else { continue };
        let mut rows: Vec<(&String, &f64)> = f.routes.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1));
        let cells: Vec<String> = rows
            .iter()
            .map(|(r, n)| format!("`{r}` {:.2}", *n / w.count as f64))
            .collect();
        let _ = writeln!(
            out,
            "\n{}, requests per workspace by route (run 1): {}",
            tool.name(),
            cells.join(" · ")
        );
    }
    let _ = writeln!(out);
}

/// The targets, met or missed, from the medians.
fn targets(out: &mut String, summary: &[(Workload, Vec<Figures>, Vec<Figures>)]) {
    let _ = writeln!(out, "#### Targets (medians)\n");
    let _ = writeln!(
        out,
        "| workload | success ≥ Coder's | CPU per lifecycle ≤ 1/5 | peak RSS ≤ 1/10 | requests per workspace ≤ 1/3 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (w, ours, theirs) in summary {
        let m = |fs: &[Figures], get: fn(&Figures) -> f64| {
            median(&fs.iter().map(get).collect::<Vec<_>>())
        };
        let ok = |met: bool| if met { "met" } else { "missed" };
        let (os, ts) = (
            m(ours, |f| f.succeeded as f64),
            m(theirs, |f| f.succeeded as f64),
        );
        let cpu = m(ours, |f| f.cpu_s) / m(theirs, |f| f.cpu_s);
        let rss = m(ours, |f| f.peak_rss_mib) / m(theirs, |f| f.peak_rss_mib);
        let req = m(ours, |f| f.requests) / m(theirs, |f| f.requests);
        let _ = writeln!(
            out,
            "| {} ({}) | {} ({os:.0} vs {ts:.0}) | {} (1/{:.1}) | {} (1/{:.1}) | {} (1/{:.1}) |",
            w.title,
            w.count,
            ok(os >= ts),
            ok(cpu <= 0.2),
            1.0 / cpu,
            ok(rss <= 0.1),
            1.0 / rss,
            ok(req <= 1.0 / 3.0),
            1.0 / req,
        );
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The first failed run's error from a report (ours or Coder's), one line.
fn first_error(v: &Value) -> Option<String> {
    // Coder's harness: runs.{id}.error; ours: workspaces[].phases[].error.
    if let Some(runs) = v["runs"].as_object() {
        for r in runs.values() {
            // A run that passed says "<nil>"; a failed one is a Go error chain whose
            // interesting end is coderd's answer ("unexpected status code 428: ...").
            if let Some(e) = r["error"]
                .as_str()
                .filter(|e| !e.is_empty() && *e != "<nil>")
            {
                // Without one, the innermost message follows xerrors' last frame (" - ").
                let e = match e.find("status code") {
                    Some(at) => &e[at..],
                    None => e.rsplit(" - ").next().unwrap_or(e),
                };
                return Some(one_line(e));
            }
        }
    }
    for w in v["workspaces"].as_array().into_iter().flatten() {
        for p in w["phases"].as_array().into_iter().flatten() {
            if let Some(e) = p["error"].as_str() {
                return Some(one_line(&format!(
                    "{}: {e}",
                    p["phase"].as_str().unwrap_or("")
                )));
            }
        }
    }
    None
}

fn tail(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(one_line)
}

fn one_line(s: &str) -> String {
    let line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scaletestd-peer-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a scratch directory");
    d
}
