//! scaletestd against a real Coder (issue 23): coderd built from Coder's own module at the
//! release `scripts/real-coder` pins, with PostgreSQL, echo provisioners and one real
//! `coder agent` per workspace, all in a network namespace of this test's own. The test's
//! thread joins that namespace before it starts its runtime, so everything it starts
//! (the daemon, Prometheus, the OTLP receiver, `coder ssh`) sees only that loopback.
//!
//! If Coder cannot be built or started, the test fails with the reason: nothing is skipped.

mod common;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{cron_at, spawn, tmpdir};
use common::prom::{Kill, query, series, substitute};
use common::{BIN, eventually_async};
use scaletestd::phases::Reason;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// coderd exports its spans here (set before it starts; the port is the namespace's own).
const OTLP: &str = "127.0.0.1:4317";
/// The command both transports run; its output is matched on `hello-42`, which the
/// command line itself does not contain.
const ECHO: &str = "echo hello-$((40+2))";
const WALK: &str =
    r#"["create", "build", "agent", "ssh", "pty", "app", "stop", "start", "agent", "delete"]"#;

/// A running `scripts/real-coder` instance; `down` when dropped.
struct RealCoder {
    name: String,
    env: HashMap<String, String>,
    /// The namespace this process started in, to go back to before `down`.
    host: std::fs::File,
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new(format!("{ROOT}/scripts/real-coder"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/real-coder runs")
}

impl RealCoder {
    fn up(name: &str) -> RealCoder {
        let started = Instant::now();
        let out = script(&["up", "--name", name, "--otlp", OTLP]);
        assert!(
            out.status.success(),
            "scripts/real-coder up failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(format!("{ROOT}/target/real-coder/run/{name}/env"))
            .expect("scripts/real-coder up wrote its env file");
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        println!(
            "real coder {name} up in {:.1?} (the build included when it was not cached)",
            started.elapsed()
        );
        RealCoder {
            name: name.to_string(),
            env,
            host: std::fs::File::open("/proc/thread-self/ns/net").expect("this thread's namespace"),
        }
    }

    fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from scripts/real-coder's env"))
    }

    /// SIGKILL coderd and start it again on the same database (bounded by the script).
    fn restart_coderd(&self) {
        let out = script(&["restart-coderd", "--name", &self.name]);
        assert!(
            out.status.success(),
            "restart-coderd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for RealCoder {
    fn drop(&mut self) {
        // From inside, the script's sweep of the namespace's processes would see ours.
        // SAFETY: as in `join_netns`.
        unsafe { libc::setns(self.host.as_raw_fd(), libc::CLONE_NEWNET) };
        let out = script(&["down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!(
                "down failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Moves this thread into the named network namespace; threads and processes it starts
/// afterwards are born there.
fn join_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("the namespace exists");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

#[test]
fn scaletestd_walks_a_real_coder() {
    let name = format!("sctest-{}", std::process::id());
    let coder = RealCoder::up(&name);
    join_netns(&name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(walk(&coder));
}

/// The configuration for a run of `count` at `concurrency` through `phases`.
fn config(
    coder: &RealCoder,
    prefix: &str,
    schedule: Option<&str>,
    count: u32,
    phases: &str,
    command: &str,
) -> String {
    let schedule = schedule
        .map(|s| format!("schedule = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[coder]
url = "{url}"

[server]
listen = "127.0.0.1:0"
shutdown_grace = "60s"

[telemetry]
otlp_endpoint = "http://{OTLP}"

[[scenario]]
name = "real"
template = "{template}"
workspace_prefix = "{prefix}"
count = {count}
concurrency = 10
{schedule}phases = {phases}
run_command = "{command}"
expect_output = "hello-42"
{app}
[scenario.timeouts]
build = "90s"
agent = "90s"
pty = "60s"
delete = "90s"

[scenario.ssh]
proxy_command = "{bin} --disable-direct-connections ssh --stdio {{workspace}}"
"#,
        url = coder.get("CODER_URL"),
        template = coder.get("CODER_TEMPLATE"),
        // The app's keys are refused on a scenario without the phase.
        app = if phases.contains("\"app\"") {
            format!(
                "app = \"{}\"\napp_expect = \"hello from the real-coder app\"\n",
                coder.get("CODER_APP")
            )
        } else {
            String::new()
        },
        bin = coder.get("CODER_BIN"),
    )
}

/// Coder's own answer: the workspaces whose name starts with `prefix`, deleted ones excluded.
async fn listed(coder: &RealCoder, prefix: &str) -> Vec<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get({
            let mut u = url::Url::parse(coder.get("CODER_URL")).unwrap();
            u.set_path("/api/v2/workspaces");
            u.query_pairs_mut()
                .append_pair("q", &format!("owner:me name:{prefix}"))
                .append_pair("limit", "200");
            u
        })
        .header("Coder-Session-Token", coder.get("CODER_SESSION_TOKEN"))
        // The test's own polling must not eat the run's rate-limit window (coderd lets an
        // owner skip it: coderd/httpmw/ratelimit.go).
        .header("X-Coder-Bypass-Ratelimit", "true")
        .send()
        .await
        .expect("coderd answers");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    body["workspaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

fn start_prometheus(dir: &std::path::Path, daemon: &str) -> (Kill, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            r#"global:
  scrape_interval: 1s
scrape_configs:
  - job_name: scaletestd
    static_configs:
      - targets: ["{daemon}"]
  - job_name: coder
    static_configs:
      - targets: ["127.0.0.1:2112"]
"#
        ),
    )
    .unwrap();
    let addr = "127.0.0.1:9090".to_string();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus is installed (the test command installs Debian's prometheus package)");
    (Kill(child), addr)
}

async fn walk(coder: &RealCoder) {
    let (_, spans) = common::otlp::grpc_at(OTLP).await;
    let dir = tmpdir("real-coder");

    // 1. The whole walk, 20 workspaces at concurrency 10, by the daemon on a schedule that
    //    fires once, scraped by a real Prometheus along with coderd.
    let prefix = "strc";
    let cfg_path: PathBuf = dir.join("run.toml");
    std::fs::write(
        &cfg_path,
        config(coder, prefix, Some(&cron_at(&[8])), 20, WALK, ECHO),
    )
    .unwrap();
    let d = spawn(
        &["run", "--config", cfg_path.to_str().unwrap()],
        coder.get("CODER_SESSION_TOKEN"),
    );
    let (_prom, prom) = start_prometheus(dir.path(), &d.addr);
    let s = d
        .wait_for(Duration::from_secs(600), |s| {
            s.sum("scaletest_runs", &[]) >= 1.0
        })
        .await;
    let failures = s.sum("scaletest_phase_failures", &[]);
    let ok = s.sum("scaletest_runs", &[("result", "success")]);
    let count = |phase: &str| s.sum("scaletest_phase_duration_seconds", &[("phase", phase)]);
    let log = d.log();
    assert_eq!(failures, 0.0, "phase failures:\n{}", s.text);
    assert_eq!(ok, 1.0, "{log}");
    for (phase, want) in [
        ("create", 20.0),
        ("build", 20.0),
        ("agent", 40.0),
        ("ssh", 20.0),
        ("pty", 20.0),
        ("app", 20.0),
        ("stop", 20.0),
        ("start", 20.0),
        ("delete", 20.0),
    ] {
        assert_eq!(count(phase), want, "{phase} observations:\n{}", s.text);
    }
    let left = listed(coder, prefix).await;
    assert!(left.is_empty(), "Coder still lists {left:?}");
    println!("real coder walk: 20/20 through {WALK}, Coder lists none of them afterwards");

    // 2. Traces: coderd's server spans are children of our client spans.
    let ours: HashMap<(String, String), String> = spans
        .of("scaletestd")
        .iter()
        .map(|g| ((g.trace_id(), g.span_id()), g.name().to_string()))
        .collect();
    let joined = eventually_async(Duration::from_secs(60), || async {
        let children: Vec<_> = spans
            .of("coderd")
            .into_iter()
            .filter(|g| ours.contains_key(&(g.trace_id(), g.parent_id())))
            .collect();
        (children.len() >= 20).then_some(children)
    })
    .await;
    let example = &joined[0];
    println!(
        "traces: {} coderd spans are children of scaletestd spans, e.g. coderd {:?} under ours {:?} in trace {}",
        joined.len(),
        example.name(),
        ours[&(example.trace_id(), example.parent_id())],
        example.trace_id()
    );

    // 3. Metrics: every coderd_* query of the dashboards returns data.
    eventually_async(Duration::from_secs(30), || async {
        let up = series(&prom, "up{job=~\"coder|scaletestd\"} == 1").await;
        (up == Ok(2)).then_some(())
    })
    .await;
    let mut checked = 0;
    let mut empty = Vec::new();
    for entry in std::fs::read_dir(format!("{ROOT}/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                if !expr.contains("coderd_") {
                    continue;
                }
                let q = substitute(expr).replace("20s", "5m");
                checked += 1;
                match series(&prom, &q).await {
                    Ok(0) => empty.push(format!("{}: no series: {q}", p["title"])),
                    Ok(_) => {}
                    Err(e) => empty.push(format!("{}: {e}: {q}", p["title"])),
                }
            }
        }
    }
    assert!(checked >= 5, "{checked} coderd queries");
    assert!(empty.is_empty(), "{empty:#?}");
    let builds = query(&prom, "sum(coderd_workspace_builds_total)").await;
    println!(
        "prometheus: {checked} coderd_* dashboard queries return data; coderd counted {} builds",
        builds["data"]["result"][0]["value"][1]
    );
    d.signal("TERM");
    drop(d);

    // 4. coderd killed (SIGKILL) and restarted mid-run: the run ends, every failure has a
    //    reason from our set, and after a sweep nothing is left.
    let prefix = "strk";
    let cfg_path = dir.join("crash.toml");
    std::fs::write(
        &cfg_path,
        config(
            coder,
            prefix,
            None,
            10,
            r#"["create", "build", "agent", "pty", "delete"]"#,
            // Long enough that every walk is in its terminal when coderd goes.
            "sleep 20; echo hello-$((40+2))",
        ),
    )
    .unwrap();
    let report = dir.join("crash.json");
    let mut once = Command::new(BIN)
        .args(["once", "--config", cfg_path.to_str().unwrap(), "--output"])
        .arg(format!("json:{}", report.display()))
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once every build is done (a provisioner job in flight would stay "running" until
    // coderd's hung-job reaper, minutes later), coderd goes away without a word.
    let once_pid = once.id();
    eventually_async(Duration::from_secs(120), || async move {
        assert!(
            std::path::Path::new(&format!("/proc/{once_pid}/cmdline")).exists()
                && !std::fs::read_to_string(format!("/proc/{once_pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z "),
            "scaletestd once ended before coderd was killed"
        );
        let ws = listed(coder, prefix).await;
        (ws.len() == 10
            && ws.iter().all(|w| {
                w["latest_build"]["transition"] == "start"
                    && w["latest_build"]["job"]["status"] == "succeeded"
            }))
        .then_some(())
    })
    .await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| coder.restart_coderd());
    println!("coderd killed and back in {:.1?}", killed_at.elapsed());
    let out = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(420);
        while once.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "scaletestd once did not end within 7 min"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        once.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let mut reasons = Vec::new();
    collect_reasons(&json, &mut reasons);
    for r in &reasons {
        serde_json::from_value::<Reason>(serde_json::Value::String(r.clone()))
            .unwrap_or_else(|e| panic!("{r:?} is not one of our reasons: {e}"));
    }
    let sweep = Command::new(BIN)
        .args(["cleanup", "--config", cfg_path.to_str().unwrap()])
        .env("CODER_SESSION_TOKEN", coder.get("CODER_SESSION_TOKEN"))
        .output()
        .unwrap();
    assert!(
        sweep.status.success(),
        "cleanup: {}{}",
        String::from_utf8_lossy(&sweep.stdout),
        String::from_utf8_lossy(&sweep.stderr)
    );
    let left = eventually_async(Duration::from_secs(120), || async {
        let ws = listed(coder, prefix).await;
        ws.is_empty().then_some(ws)
    })
    .await;
    assert!(left.is_empty());
    println!(
        "coderd restart mid-run: {}; reasons {reasons:?}; after the sweep Coder lists none",
        stdout.lines().next().unwrap_or_default()
    );
}

/// Every `"reason"` string anywhere in the JSON report.
fn collect_reasons(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("reason", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_reasons(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_reasons(v, out)),
        _ => {}
    }
}
