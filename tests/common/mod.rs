//! Helpers shared by the integration tests: a fast simulator on port 0, configurations
//! pointing at it, and a client.
#![allow(dead_code)]

pub mod daemon;
pub mod otlp;

use std::sync::Arc;
use std::time::Duration;

use scaletestd::config::{Config, Env, HumanDuration};
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
            agent_connect: ms(30),
            agent_startup: ms(40),
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

/// A scenario against `sim`, with extra TOML lines for the scenario table.
pub fn config(sim: &Sim, count: u32, concurrency: u32, extra: &str) -> Config {
    let text = format!(
        r#"
[coder]
url = "{url}"

[[scenario]]
name = "test"
template = "docker"
parameters = {{ image = "codercom/enterprise-base:ubuntu" }}
count = {count}
concurrency = {concurrency}
run_command = "echo hello-$((40+2))"
expect_output = "hello-42"
{extra}

[scenario.timeouts]
create = "10s"
build = "20s"
agent = "20s"
ssh = "5s"
pty = "10s"
delete = "20s"
"#,
        url = sim.url()
    );
    let env = Env {
        coder_session_token: Some(TOKEN.into()),
        ..Default::default()
    };
    Config::parse("test.toml", &text, &env).expect("the test configuration is valid")
}

pub fn client(cfg: &Config) -> scaletestd::coder::Client {
    scaletestd::coder::Client::new(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        scaletestd::coder::ClientOptions {
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..Default::default()
        },
    )
}

pub async fn run(cfg: &Config) -> RunReport {
    run_with(cfg, &client(cfg)).await
}

/// [`run`] with a given client (to look at its retries afterwards).
pub async fn run_with(cfg: &Config, client: &scaletestd::coder::Client) -> RunReport {
    let s = &cfg.scenarios[0];
    runner::run(
        client,
        s,
        None,
        Slice {
            first: 1,
            count: s.count,
        },
        Arc::new(NoObserver),
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
}

/// Waits until `condition` holds, checking every 20 ms; panics after `within`. The one way
/// the tests wait for something to happen (never a fixed sleep).
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the simulator holds no workspace, and returns what is left.
pub async fn settle(sim: &Sim) -> Vec<String> {
    for _ in 0..50 {
        if sim.live_workspaces().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.live_workspaces()
}
