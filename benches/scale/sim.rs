//! The simulator in a process of its own (`scaletestd sim`), with the benchmark's fixed
//! latencies, as many provisioners as workspaces (no queue) and no rate limit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::toolkit::{Kill, free_port};
use crate::*;

pub struct SimProcess {
    child: Kill,
    pub url: String,
    pub ssh: String,
    /// The simulator's delivery log: when it sent each workspace event.
    pub deliveries: std::path::PathBuf,
    /// Behind TLS: its authority's certificate, for `[coder] ca_file`.
    pub ca: Option<std::path::PathBuf>,
}

/// Latencies in ms: init, plan, graph, apply, destroy, agent connect, agent start-up.
pub type Profile = [u64; 7];

/// The benchmark's short fixed latencies (a 1 s build, a 0.8 s agent).
pub const FAST: Profile = [
    INIT_MS, PLAN_MS, GRAPH_MS, APPLY_MS, DESTROY_MS, CONNECT_MS, STARTUP_MS,
];

/// Durations like a real template's: a 30 s build, a 15 s agent start.
pub const CODER_LIKE: Profile = [2000, 5000, 500, 22500, 5000, 5000, 10000];

impl SimProcess {
    /// Puts every thread of the simulator on `cpus` (`taskset` syntax).
    pub fn pin(&self, cpus: &str) {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &self.child.id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset pins the simulator to CPU {cpus}");
    }

    /// Lets the simulator run on every CPU again.
    pub fn unpin(&self) {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.pin(&format!("0-{}", all - 1));
    }

    pub fn start(p: Profile) -> SimProcess {
        SimProcess::start_with(p, "")
    }

    /// [`SimProcess::start`] behind TLS, with a certificate authority of its own.
    pub fn start_tls(p: Profile) -> SimProcess {
        let ca =
            std::env::temp_dir().join(format!("scaletestd-bench-ca-{}.pem", std::process::id()));
        let _ = std::fs::remove_file(&ca);
        let mut sim = SimProcess::start_with(p, &format!("tls_ca_out = {ca:?}"));
        // Written once its port is bound: wait for it, briefly.
        for _ in 0..100 {
            if ca.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sim.url = sim.url.replacen("http://", "https://", 1);
        sim.ca = Some(ca);
        sim
    }

    /// [`SimProcess::start`] with more top-level configuration (`watch_endpoints = "sse"`).
    pub fn start_with(p: Profile, extra: &str) -> SimProcess {
        let [init, plan, graph, apply, destroy, connect, startup] = p;
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "scaletestd-bench-{}-{apply}-{nth}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let cfg = dir.join("sim.toml");
        let deliveries = dir.join("deliveries.log");
        std::fs::write(
            &cfg,
            format!(
                r#"provisioners = 20000
rate_limit = 0
pty_max_runtime = "60s"
delivery_log = "{log}"
{extra}

[tracing]
enabled = false

[latency]
api = "0ms"
init = "{init}ms"
plan = "{plan}ms"
graph = "{graph}ms"
apply = "{apply}ms"
destroy = "{destroy}ms"
agent_connect = "{connect}ms"
agent_startup = "{startup}ms"
"#,
                log = deliveries.display()
            ),
        )
        .expect("the simulator's configuration is written");
        let (api, ssh) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_scaletestd"))
            .args([
                "sim",
                "--listen",
                &format!("127.0.0.1:{api}"),
                "--ssh-listen",
                &format!("127.0.0.1:{ssh}"),
                "--config",
                cfg.to_str().expect("a UTF-8 path"),
            ])
            .env("CODER_SESSION_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the simulator starts");
        // Wait until it answers.
        let url = format!("http://127.0.0.1:{api}");
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains("listening") {
                    eprintln!("sim: {line}");
                }
            }
        });
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", api)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        SimProcess {
            child: Kill(child),
            url,
            ssh: format!("127.0.0.1:{ssh}"),
            deliveries,
            ca: None,
        }
    }
}
