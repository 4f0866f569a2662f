//! The simulator's knobs: identities, provisioner capacity, latencies per stage and failure
//! rates per phase, all optional in one TOML file.
//!
//! Failures are decided per workspace by a hash of the seed and the workspace's name, so a
//! given seed fails the same workspaces whatever order requests arrive in.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::config::HumanDuration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    pub seed: u64,
    pub organization: String,
    pub user: String,
    pub template: String,
    /// Version reported by `/buildinfo` and `X-Coder-Build-Version`.
    pub version: String,
    /// Provisioner daemons: builds beyond this many wait in a queue.
    pub provisioners: usize,
    pub agents_per_workspace: usize,
    /// A devcontainer sub-agent (`parent_id` set, named `devcontainer`) under each
    /// workspace's first agent, appearing once that agent is ready: `none`, `ready` (it
    /// connects and becomes ready too) or `stuck` (it stays `connecting`/`created`).
    pub subagent: SubAgent,
    /// Requests per user per endpoint in each `rate_window` (Coder: 512 a minute); 0
    /// disables.
    pub rate_limit: u32,
    /// The rate limiter's window (Coder's is one minute; shorter makes tests quick).
    pub rate_window: HumanDuration,
    /// Seconds to put in a `Retry-After` on 429s, as a proxy in front of Coder might (Coder
    /// itself sends none).
    pub retry_after: Option<u64>,
    /// How often the lifecycle executor looks for workspaces due to autostart (Coder: once a
    /// minute, `CODER_AUTOBUILD_POLL_INTERVAL`); schedules stay at minute resolution.
    pub autostart_tick: HumanDuration,
    /// Interval of the watch stream's pings (Coder: 15 s).
    pub ping_interval: HumanDuration,
    /// Longest a web-terminal or SSH command may run.
    pub pty_max_runtime: HumanDuration,
    /// Where the SSH server listens; default: the API's host, any free port.
    pub ssh_listen: Option<std::net::SocketAddr>,
    /// Refuse auth `none` and take keys only (an sshd of the template's own).
    pub ssh_require_key: bool,
    /// Where coderd's Prometheus metrics are served; default: the API's host, any free port.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Which workspace event streams the server has: `both` (Coder ≥ 2.22), `sse` (an older
    /// Coder without `watch-ws`), `watch-ws` (a future one without the deprecated SSE
    /// `watch`), `none` (clients must poll). A missing route answers 404 "Route not found.".
    pub watch_endpoints: WatchEndpoints,
    /// The deployment is licensed for service accounts (a Premium feature; coderd/users.go
    /// `postUser` answers 403 without it). False: as an unlicensed Coder.
    pub service_accounts: bool,
    /// No `POST /users/{user}/workspaces` (Coder older than mid-2024): workspaces are created
    /// only through `POST /organizations/{org}/members/{user}/workspaces`.
    pub legacy_create_only: bool,
    /// The wildcard app host (`CODER_WILDCARD_ACCESS_URL`), such as `*.apps.sim.test`:
    /// apps also answer on `{slug}--{agent}--{workspace}--{user}.apps.sim.test` at the API's
    /// port, and are marked `subdomain`. None: path-based apps only.
    pub wildcard_host: Option<String>,
    /// Path-based apps served; false: as `CODER_DISABLE_PATH_APPS`, they answer 403.
    pub path_apps: bool,
    pub latency: Latencies,
    pub failures: Failures,
    pub tracing: SimTracing,
    /// Faults in long-lived terminal and SSH sessions.
    pub sessions: super::faults::SessionFaults,
    /// A file to note in when each workspace event went out on a stream (the benchmark's
    /// split of lateness; see `sim::deliveries`). None: nothing is noted.
    pub delivery_log: Option<std::path::PathBuf>,
    /// Serve TLS (HTTP/2 or HTTP/1.1 by ALPN, see `sim::tls`) with a certificate made at
    /// start-up; its authority's certificate is written to this file (PEM), for clients'
    /// `[coder] ca_file`. None: plain HTTP.
    pub tls_ca_out: Option<std::path::PathBuf>,
    /// With `tls_ca_out`: serve one self-signed certificate that is its own authority
    /// (`CA:TRUE`), as `openssl req -x509` makes, and write that one out.
    pub tls_self_signed: bool,
    /// What a load balancer or proxy in front of Coder does on its own terms.
    pub front: Front,
}

/// What a load balancer or proxy in front of Coder does of its own accord: none of it is
/// Coder's behaviour (coderd's limiter always sends its `X-Ratelimit-*` headers, and
/// coderd/workspaces.go `watchWorkspace` keeps streaming a deleted workspace), but a client
/// meets all of it in the field, and none of it may stall a run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Front {
    /// Chance that an API request is refused with a bare 429 (no `Retry-After`, no
    /// rate-limit headers) before it reaches Coder.
    pub throttle: f64,
    /// Event streams (`watch`, `watch-ws`) are closed this long after they opened.
    pub stream_lifetime: Option<HumanDuration>,
    /// The event streams of a deleted workspace answer 404 "Resource not found" instead of
    /// streaming it.
    pub deleted_streams_404: bool,
    /// A refused websocket upgrade's body is written this long after its status and
    /// headers, in a write of its own: a client must not decide on a body it has not read
    /// yet (a proxy that flushes headers first does this).
    pub split_refusals: Option<HumanDuration>,
}

/// See [`SimConfig::subagent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubAgent {
    None,
    Ready,
    Stuck,
}

/// See [`SimConfig::watch_endpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchEndpoints {
    Both,
    Sse,
    WatchWs,
    None,
}

impl WatchEndpoints {
    pub fn sse(self) -> bool {
        matches!(self, WatchEndpoints::Both | WatchEndpoints::Sse)
    }

    pub fn websocket(self) -> bool {
        matches!(self, WatchEndpoints::Both | WatchEndpoints::WatchWs)
    }
}

/// The simulator's own tracing, as coderd's with `CODER_TRACE_ENABLE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimTracing {
    /// Server spans and `X-Trace-ID`/`X-Span-ID` answers naming them; off: as a Coder that
    /// does not trace, no spans, and the caller's own ids echoed (see `sim::trace`).
    pub enabled: bool,
    /// Where to export `coderd` spans (OTLP); none: spans are made but not exported.
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
}

impl Default for SimTracing {
    fn default() -> Self {
        SimTracing {
            enabled: true,
            otlp_endpoint: None,
            protocol: None,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            organization: "coder".into(),
            user: "admin".into(),
            template: "docker".into(),
            version: concat!("v2.22.0+scaletestd-sim-", env!("CARGO_PKG_VERSION")).into(),
            provisioners: 10,
            agents_per_workspace: 1,
            subagent: SubAgent::None,
            rate_limit: 512,
            rate_window: HumanDuration(Duration::from_secs(60)),
            retry_after: None,
            autostart_tick: HumanDuration(Duration::from_secs(60)),
            ping_interval: HumanDuration(Duration::from_secs(15)),
            pty_max_runtime: HumanDuration(Duration::from_secs(300)),
            ssh_listen: None,
            ssh_require_key: false,
            metrics_listen: None,
            watch_endpoints: WatchEndpoints::Both,
            service_accounts: false,
            legacy_create_only: false,
            wildcard_host: None,
            path_apps: true,
            latency: Latencies::default(),
            failures: Failures::default(),
            tracing: SimTracing::default(),
            sessions: Default::default(),
            delivery_log: None,
            tls_ca_out: None,
            tls_self_signed: false,
            front: Front::default(),
        }
    }
}

/// A latency: a fixed `"200ms"`, or a uniform range `{ min = "100ms", max = "300ms" }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Latency {
    Fixed(HumanDuration),
    Range {
        min: HumanDuration,
        max: HumanDuration,
    },
}

impl Latency {
    pub fn fixed(d: Duration) -> Self {
        Latency::Fixed(HumanDuration(d))
    }

    pub fn sample(&self) -> Duration {
        match *self {
            Latency::Fixed(d) => d.0,
            Latency::Range { min, max } if max.0 > min.0 => {
                let span = (max.0 - min.0).as_micros() as u64;
                min.0 + Duration::from_micros(rand::rng().random_range(0..=span))
            }
            Latency::Range { min, .. } => min.0,
        }
    }
}

/// Latency of each stage of a workspace's life.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latencies {
    /// Added to every API answer.
    pub api: Latency,
    pub init: Latency,
    pub plan: Latency,
    pub graph: Latency,
    pub apply: Latency,
    /// The delete build's apply (terraform destroy).
    pub destroy: Latency,
    /// The stop build's apply (the workspace's compute destroyed, its volumes kept).
    pub stop: Latency,
    pub agent_connect: Latency,
    pub agent_startup: Latency,
    /// From the agent ready to its `echo` app's health check passing (`initializing` →
    /// `healthy`).
    pub app_health: Latency,
    /// The app's own answer through the proxy.
    pub app: Latency,
    /// One evaluation of the create form (coderd runs coder/preview on the template's
    /// Terraform for each).
    pub form: Latency,
    /// From a create to its "Workspace Created" inbox notification (coderd's notifier
    /// fetches queued messages every 15 s).
    pub notification: Latency,
}

impl Default for Latencies {
    fn default() -> Self {
        let ms = |a: u64, b: u64| Latency::Range {
            min: HumanDuration(Duration::from_millis(a)),
            max: HumanDuration(Duration::from_millis(b)),
        };
        Latencies {
            api: Latency::fixed(Duration::ZERO),
            init: ms(100, 300),
            plan: ms(200, 600),
            graph: ms(20, 60),
            apply: ms(400, 1200),
            destroy: ms(300, 900),
            stop: ms(300, 900),
            agent_connect: ms(300, 900),
            agent_startup: ms(200, 800),
            app_health: ms(200, 600),
            app: ms(2, 10),
            form: ms(20, 80),
            notification: ms(1000, 15000),
        }
    }
}

/// Probability of each injected failure, from 0 to 1.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failures {
    /// The first start build's job fails (`build_failed`).
    pub build: f64,
    /// A stop build's job fails (`build_failed` in `stop`).
    pub stop: f64,
    /// The agent never connects and goes to `timeout` (`agent_timeout`).
    pub agent_timeout: f64,
    /// The agent's start-up script fails: lifecycle `start_error` (`agent_unhealthy`).
    pub agent_start_error: f64,
    /// The web terminal drops without output (`connect_error`).
    pub pty_drop: f64,
    /// Any API request answers 500 (`http_5xx`).
    pub http_5xx: f64,
    /// The SSH connection is cut before the handshake (`connect_error`).
    pub ssh_refuse: f64,
    /// SSH authentication is refused (`auth_error`).
    pub ssh_auth: f64,
    /// The SSH server accepts the connection and never answers (`timeout`).
    pub ssh_stall: f64,
    /// The workspace's first watch stream sends pings and never a state (`timeout` in
    /// build): a coderd whose pubsub subscription was lost behind a live connection.
    pub watch_silent: f64,
    /// Each change of a workspace after a stream's first state is left out of that stream,
    /// which stays open and pings: coderd's pubsub dropping messages under load. A wait
    /// whose deciding state was dropped is ended by the client's own GET (`SAFETY_POLL`).
    pub watch_dropped: f64,
    /// The start build's apply never finishes until canceled (`timeout` in build).
    pub build_stuck: f64,
    /// The web terminal accepts the connection and never prints (`timeout` in pty).
    pub pty_silent: f64,
    /// The first state on the workspace's first watch stream is malformed: truncated JSON,
    /// a field of the wrong type, an unknown enum value or a 5 MiB event, chosen per
    /// workspace (`protocol_error` in build).
    pub malformed: f64,
    /// The proxy cannot reach the workspace's apps: 502 "Bad Gateway" (`http_5xx` in app).
    pub app_502: f64,
    /// The `echo` app's health check never passes: `initializing` → `unhealthy`
    /// (`agent_unhealthy` in app).
    pub app_unhealthy: f64,
    /// The lifecycle executor never starts the workspace, as Coder skips one when no
    /// provisioner can take its build (`timeout` in autostart.created).
    pub autostart_skip: f64,
}

impl SimConfig {
    pub fn load(path: &Path) -> Result<SimConfig, crate::config::ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::config::ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read the simulator configuration: {e}"),
        })?;
        toml::from_str(&text).map_err(|e| {
            let location = match e.span() {
                Some(s) => {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                    format!("{}:{line}:{col}", path.display())
                }
                None => path.display().to_string(),
            };
            crate::config::ConfigError {
                location,
                message: e.message().to_string(),
            }
        })
    }

    /// Whether the failure of kind `what` is injected for workspace `name`.
    pub fn inject(&self, what: &str, name: &str, rate: f64) -> bool {
        rate > 0.0 && unit_hash(self.seed, what, name) < rate
    }

    /// One of `n` choices for workspace `name`, fixed by the seed.
    pub fn pick(&self, what: &str, name: &str, n: usize) -> usize {
        ((unit_hash(self.seed, what, name) * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// A number in [0, 1) from the seed, the failure kind and the workspace name (FNV-1a, then
/// a finalizer so neighbouring names spread evenly).
fn unit_hash(seed: u64, what: &str, name: &str) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325 ^ seed;
    for b in what.bytes().chain([0]).chain(name.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_rate_is_close_to_asked_and_deterministic() {
        let cfg = SimConfig {
            seed: 7,
            ..Default::default()
        };
        let hits = (0..10_000)
            .filter(|i| cfg.inject("build", &format!("scaletest-abc-{i}"), 0.2))
            .count();
        assert!((1800..2200).contains(&hits), "{hits}");
        let again = (0..10_000)
            .filter(|i| cfg.inject("build", &format!("scaletest-abc-{i}"), 0.2))
            .count();
        assert_eq!(hits, again);
    }

    #[test]
    fn parses_latency_forms() {
        let c: SimConfig = toml::from_str(
            "provisioners = 2\n[latency]\napply = \"50ms\"\nplan = { min = \"10ms\", max = \"20ms\" }\n[failures]\nbuild = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.latency.apply.sample(), Duration::from_millis(50));
        let p = c.latency.plan.sample();
        assert!(p >= Duration::from_millis(10) && p <= Duration::from_millis(20));
        assert_eq!(c.failures.build, 0.5);
    }
}
