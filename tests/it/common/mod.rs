//! Helpers shared by the integration tests: a fast simulator on port 0, configurations
//! pointing at it, and a client.
#![allow(dead_code)]

pub mod daemon;
pub mod otlp;
pub mod prom;
pub mod real;
pub mod shape;
pub mod toolkit;

pub use toolkit::*;

use std::sync::Arc;
use std::time::Duration;

use scaletestd::config::{Config, HumanDuration};
use scaletestd::runner::{self, NoObserver, RunReport, Slice};
use scaletestd::sim::config::{Latencies, Latency};
use scaletestd::sim::{Sim, SimConfig};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "sim-token-0123456789abcdef";

pub fn ms(n: u64) -> Latency {
    Latency::fixed(Duration::from_millis(n))
}

/// A simulator with short, fixed latencies so a test of 50 workspaces takes seconds.
pub fn fast_sim() -> SimConfig {
    SimConfig {
        provisioners: 20,
        latency: Latencies {
            api: ms(0),
            init: ms(10),
            plan: ms(20),
            graph: ms(5),
            apply: ms(40),
            destroy: ms(30),
            stop: ms(30),
            agent_connect: ms(30),
            agent_startup: ms(40),
            app_health: ms(30),
            app: ms(1),
            form: ms(5),
            notification: ms(50),
        },
        ping_interval: HumanDuration(Duration::from_secs(15)),
        ..Default::default()
    }
}

pub async fn start(cfg: SimConfig) -> Sim {
    Sim::start(cfg, TOKEN, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the simulator starts")
}

/// The usual test scenario against `sim`: `count` workspaces at `concurrency`, a command that
/// prints `hello-42`, short timeouts, and `extra` lines for the scenario table.
pub fn config_text(sim: &Sim, count: u32, concurrency: u32, extra: &str) -> ConfigText {
    ConfigText::new(sim.url()).scenario(
        ScenarioText::new("test", count)
            .key("parameters = { image = \"codercom/enterprise-base:ubuntu\" }")
            .key(&format!("concurrency = {concurrency}"))
            .key("run_command = \"echo hello-$((40+2))\"")
            .key("expect_output = \"hello-42\"")
            .keys(extra)
            .timeout("create", "10s")
            .timeout("build", "20s")
            .timeout("agent", "20s")
            .timeout("ssh", "5s")
            .timeout("pty", "10s")
            .timeout("delete", "20s"),
    )
}

/// [`config_text`], parsed.
pub fn config(sim: &Sim, count: u32, concurrency: u32, extra: &str) -> Config {
    config_text(sim, count, concurrency, extra).parse()
}

pub fn client(cfg: &Config) -> scaletestd::coder::Client {
    scaletestd::coder::Client::new(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        scaletestd::coder::ClientOptions {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..cfg.coder.client_options(cfg.telemetry.propagate)
        },
    )
}

/// Creates a workspace named `name` from the simulator's `docker` template, as a user would
/// (a workspace the run did not make, or one a test drives by hand).
pub async fn create_workspace(
    c: &scaletestd::coder::Client,
    name: &str,
) -> scaletestd::coder::Workspace {
    let tpl = c.template_by_name("coder", "docker").await.unwrap();
    let req = scaletestd::coder::CreateWorkspaceRequest {
        template_id: Some(tpl.id),
        name: name.into(),
        ..Default::default()
    };
    c.create_workspace(tpl.organization_id, &req, &Default::default())
        .await
        .unwrap()
}

pub async fn run(cfg: &Config) -> RunReport {
    run_with(cfg, &client(cfg)).await
}

/// [`run`] with a given client (to look at its retries afterwards).
pub async fn run_with(cfg: &Config, client: &scaletestd::coder::Client) -> RunReport {
    run_in(cfg, client, Default::default()).await
}

/// [`run_with`] with what the run is set up with (test-user pools).
pub async fn run_in(
    cfg: &Config,
    client: &scaletestd::coder::Client,
    setup: runner::Setup<'_>,
) -> RunReport {
    run_full(cfg, client, setup, Arc::new(NoObserver)).await
}

/// [`run_with`] reporting to `observer` (the daemon's metrics).
pub async fn run_observed(
    cfg: &Config,
    client: &scaletestd::coder::Client,
    observer: Arc<dyn runner::RunObserver>,
) -> RunReport {
    run_full(cfg, client, Default::default(), observer).await
}

async fn run_full(
    cfg: &Config,
    client: &scaletestd::coder::Client,
    setup: runner::Setup<'_>,
    observer: Arc<dyn runner::RunObserver>,
) -> RunReport {
    let s = &cfg.scenarios[0];
    runner::run(
        client,
        s,
        setup,
        Slice {
            first: 1,
            count: s.count,
        },
        observer,
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
}

/// Waits (bounded) until the simulator holds no workspace, and returns what is left.
pub async fn settle(sim: &Sim) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sim.live_workspaces().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.live_workspaces()
}

/// What a failure knob should have done to a run.
pub struct Injected<'a> {
    /// The knob's name, as the simulator decides per workspace (`failures.<knob>`).
    pub knob: &'a str,
    pub rate: f64,
    pub phase: scaletestd::phases::Phase,
    pub reason: scaletestd::phases::Reason,
    /// Words the failure's message must contain.
    pub says: &'a str,
}

impl Injected<'_> {
    /// Checks that exactly the workspaces the knob picked failed, each in `phase` with
    /// `reason` saying `says`, that at least one did, that the summary line counts them, and
    /// that every workspace was deleted; returns how many failed.
    pub fn check(&self, sim: &Sim, r: &RunReport) -> usize {
        let knob = self.knob;
        let mut failed = 0;
        for w in &r.workspaces {
            let injected = sim.app.state.cfg.inject(knob, &w.name, self.rate);
            match w.failure() {
                Some((phase, reason, msg)) => {
                    assert!(injected, "{knob}: {}: {msg}", w.name);
                    assert_eq!((phase, reason), (self.phase, self.reason), "{knob}: {msg}");
                    assert!(msg.contains(self.says), "{knob}: {msg}");
                    failed += 1;
                }
                None => assert!(!injected, "{knob}: {}", w.name),
            }
            assert!(
                w.record(scaletestd::phases::Phase::Delete)
                    .is_some_and(|d| d.ok),
                "{knob}: {} deleted",
                w.name
            );
        }
        assert!(failed > 0, "{knob}: no workspace was picked");
        let line = scaletestd::report::summary_line(r);
        let counted = format!("{failed} {}: {}", self.phase, self.reason);
        assert!(line.contains(&counted), "{knob}: {line}");
        failed
    }
}
