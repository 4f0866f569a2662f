//! The daemon's configuration: one TOML file, filled in from the environment, checked once.
//!
//! Every mistake is reported as `FILE:LINE:COLUMN: what was wrong, what was expected`, so an
//! operator can fix a file without guessing. The raw structs mirror the file (with spans for
//! values that need checks beyond their type); [`Config`] is what the rest of the program uses.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::phases::{Phase, Timeouts};
use crate::secret::Secret;
pub use crate::ssh::{DEFAULT_PROXY_COMMAND, SshConfig, SshTransport};

/// A configuration mistake, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

impl ConfigError {
    fn at(src: &Source<'_>, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let location = match span {
            Some(span) => {
                let (line, col) = line_col(src.text, span.start);
                format!("{}:{line}:{col}", src.name)
            }
            None => src.name.to_string(),
        };
        ConfigError {
            location,
            message: message.into(),
        }
    }
}

struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// A human duration ("30s", "15m", "1h 30m") as it appears in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}): expected a duration such as \"500ms\", \"30s\", \"15m\" or \"1h\""
                ))
            })
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    coder: Option<Spanned<RawCoder>>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default, rename = "scenario")]
    scenarios: Vec<Spanned<RawScenario>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCoder {
    url: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    organization: Option<String>,
    #[serde(default)]
    bypass_ratelimit: bool,
    request_timeout: Option<HumanDuration>,
    max_retries: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    shutdown_grace: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    propagate: Option<bool>,
    trace_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    schedule: Option<Spanned<String>>,
    template: String,
    #[serde(default)]
    parameters: BTreeMap<String, toml::Value>,
    count: Spanned<u32>,
    concurrency: Option<Spanned<u32>>,
    phases: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "default_command")]
    run_command: String,
    expect_output: Option<String>,
    agent: Option<Spanned<String>>,
    workspace_prefix: Option<Spanned<String>>,
    #[serde(default)]
    timeouts: BTreeMap<Spanned<String>, Spanned<HumanDuration>>,
    #[serde(default)]
    wait: WaitMode,
    jitter: Option<HumanDuration>,
    ssh: Option<Spanned<RawSsh>>,
    #[serde(default)]
    kind: ScenarioKind,
    sessions_per_workspace: Option<Spanned<u32>>,
    transports: Option<Spanned<Vec<Transport>>>,
    bytes_per_tick: Option<Spanned<u32>>,
    tick_interval: Option<HumanDuration>,
    echo: Option<bool>,
}

/// What a scenario does with its workspaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// Create, use and delete `count` workspaces on every scheduled run.
    #[default]
    Lifecycle,
    /// Keep `count` workspaces running with sessions open, sending traffic all the time.
    Traffic,
}

/// A way into a workspace for traffic sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Pty,
    Ssh,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Pty => "pty",
            Transport::Ssh => "ssh",
        }
    }
}

/// The traffic of a `kind = "traffic"` scenario.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    pub sessions_per_workspace: u32,
    pub transports: Vec<Transport>,
    pub bytes_per_tick: u32,
    pub tick_interval: Duration,
    /// Wait for each tick's bytes to come back (and time it); off: send only.
    pub echo: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    transport: Option<SshTransportKind>,
    proxy_command: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    identity_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SshTransportKind {
    ProxyCommand,
    Tcp,
}

fn default_command() -> String {
    "echo scaletest-ok".into()
}

// ---------------------------------------------------------------------------------------------
// The configuration in force.

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file came from, for messages.
    pub path: PathBuf,
    pub coder: CoderConfig,
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Clone)]
pub struct CoderConfig {
    pub url: url::Url,
    pub token: Secret,
    /// Organization name or id; `None` uses the user's first organization.
    pub organization: Option<String>,
    pub bypass_ratelimit: bool,
    pub request_timeout: Duration,
    pub max_retries: u32,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    pub otlp_endpoint: Option<String>,
    pub propagate: bool,
    pub trace_link: Option<String>,
}

/// How a workspace's progress is followed: the watch stream (the product) or polling at the
/// intervals Coder's own harness uses (a baseline for comparisons).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMode {
    #[default]
    Watch,
    Poll,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub schedule: Option<String>,
    pub template: String,
    pub parameters: BTreeMap<String, String>,
    pub count: u32,
    pub concurrency: u32,
    pub phases: Vec<Phase>,
    pub run_command: String,
    pub expect_output: String,
    /// The agent to wait for and connect to; `None`: every top-level agent is waited for
    /// and the first is used (devcontainer sub-agents are not waited for).
    pub agent: Option<String>,
    pub workspace_prefix: String,
    pub timeouts: Timeouts,
    pub wait: WaitMode,
    /// A random delay from 0 to this before each scheduled run, to spread load.
    pub jitter: Duration,
    pub ssh: SshConfig,
    pub kind: ScenarioKind,
    pub traffic: TrafficConfig,
}

/// The environment the configuration reads, passed in so tests need not mutate the process's.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub coder_url: Option<String>,
    pub coder_session_token: Option<String>,
    pub otlp_endpoint: Option<String>,
}

impl Env {
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Env {
            coder_url: get("CODER_URL"),
            coder_session_token: get("CODER_SESSION_TOKEN"),
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(&path.display().to_string(), &text, env).map(|mut c| {
            c.path = path.to_path_buf();
            c
        })
    }

    /// Parses and checks configuration text; `name` is used in error locations.
    pub fn parse(name: &str, text: &str, env: &Env) -> Result<Config, ConfigError> {
        let src = Source { name, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message starts with a multi-line excerpt; keep only its sentence.
            let msg = e.message().trim().to_string();
            ConfigError::at(&src, e.span(), msg)
        })?;
        validate(&src, raw, env)
    }
}

fn validate(src: &Source<'_>, raw: RawConfig, env: &Env) -> Result<Config, ConfigError> {
    let (coder_raw, coder_span) = match raw.coder {
        Some(c) => {
            let span = c.span();
            (c.into_inner(), Some(span))
        }
        None => (RawCoder::default(), None),
    };
    let missing_coder = |what: &str| {
        ConfigError::at(
            src,
            coder_span.clone(),
            format!(
                "{what}{}",
                if coder_span.is_none() {
                    " (there is no [coder] table)"
                } else {
                    ""
                }
            ),
        )
    };

    let (url_text, url_span) = match (&coder_raw.url, &env.coder_url) {
        (Some(u), _) => (u.get_ref().clone(), Some(u.span())),
        (None, Some(u)) => (u.clone(), None),
        (None, None) => {
            return Err(missing_coder(
                "missing Coder URL: expected `url = \"https://coder.example.com\"` in [coder] or CODER_URL in the environment",
            ));
        }
    };
    let url = url::Url::parse(&url_text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            let at = if url_span.is_some() {
                None
            } else {
                Some("CODER_URL: ")
            };
            let mut e = ConfigError::at(
                src,
                url_span.clone(),
                format!(
                    "{}invalid Coder URL {url_text:?}: expected an http:// or https:// URL",
                    at.unwrap_or("")
                ),
            );
            if url_span.is_none() {
                e.location = "environment".into();
            }
            e
        })?;

    let token = match &coder_raw.token_file {
        Some(file) => {
            let path = file.get_ref();
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::at(
                    src,
                    Some(file.span()),
                    format!("cannot read token_file {}: {e}", path.display()),
                )
            })?;
            let t = text.trim().to_string();
            if t.is_empty() {
                return Err(ConfigError::at(
                    src,
                    Some(file.span()),
                    format!(
                        "token_file {} is empty: expected a Coder session token",
                        path.display()
                    ),
                ));
            }
            Secret::new(t)
        }
        None => match &env.coder_session_token {
            Some(t) => Secret::new(t.trim().to_string()),
            None => {
                return Err(missing_coder(
                    "missing session token: expected `token_file = \"/path/to/token\"` in [coder] or CODER_SESSION_TOKEN in the environment",
                ));
            }
        },
    };

    let coder = CoderConfig {
        url,
        token,
        organization: coder_raw.organization.filter(|o| !o.is_empty()),
        bypass_ratelimit: coder_raw.bypass_ratelimit,
        request_timeout: coder_raw
            .request_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        max_retries: coder_raw.max_retries.unwrap_or(4),
    };

    let listen = match &raw.server.listen {
        Some(l) => l.get_ref().parse().map_err(|_| {
            ConfigError::at(
                src,
                Some(l.span()),
                format!(
                    "invalid listen address {:?}: expected IP:PORT such as \"127.0.0.1:9464\"",
                    l.get_ref()
                ),
            )
        })?,
        None => "127.0.0.1:9464".parse().expect("literal address"),
    };
    let server = ServerConfig {
        listen,
        shutdown_grace: raw
            .server
            .shutdown_grace
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(120)),
    };

    let telemetry = TelemetryConfig {
        otlp_endpoint: raw
            .telemetry
            .otlp_endpoint
            .or_else(|| env.otlp_endpoint.clone())
            .filter(|e| !e.is_empty() && e != "none"),
        propagate: raw.telemetry.propagate.unwrap_or(true),
        trace_link: raw.telemetry.trace_link,
    };

    if raw.scenarios.is_empty() {
        return Err(ConfigError::at(
            src,
            None,
            "no scenario: expected at least one [[scenario]] table with name, template and count",
        ));
    }
    let mut scenarios = Vec::with_capacity(raw.scenarios.len());
    for s in raw.scenarios {
        let span = s.span();
        let scenario = validate_scenario(src, s.into_inner())?;
        if scenarios.iter().any(|o: &Scenario| o.name == scenario.name) {
            return Err(ConfigError::at(
                src,
                Some(span),
                format!(
                    "scenario name {:?} is used twice: expected unique names",
                    scenario.name
                ),
            ));
        }
        if let Some(o) = scenarios
            .iter()
            .find(|o| o.workspace_prefix == scenario.workspace_prefix)
        {
            return Err(ConfigError::at(
                src,
                Some(span),
                format!(
                    "scenarios {:?} and {:?} both use workspace_prefix {:?}: give each scenario its own, so sweeps tell their workspaces apart",
                    o.name, scenario.name, scenario.workspace_prefix
                ),
            ));
        }
        scenarios.push(scenario);
    }

    Ok(Config {
        path: PathBuf::from(src.name),
        coder,
        server,
        telemetry,
        scenarios,
    })
}

fn validate_scenario(src: &Source<'_>, s: RawScenario) -> Result<Scenario, ConfigError> {
    let name = s.name.get_ref().clone();
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(ConfigError::at(
            src,
            Some(s.name.span()),
            format!("invalid scenario name {name:?}: expected letters, digits, '-' or '_'"),
        ));
    }
    let count = *s.count.get_ref();
    let prefix = match &s.workspace_prefix {
        Some(p) => {
            crate::naming::check_prefix(p.get_ref())
                .map_err(|e| ConfigError::at(src, Some(p.span()), e))?;
            p.get_ref().clone()
        }
        None => "scaletest".into(),
    };
    crate::naming::check_count(&prefix, count)
        .map_err(|e| ConfigError::at(src, Some(s.count.span()), e))?;
    let concurrency = match &s.concurrency {
        Some(c) => {
            let v = *c.get_ref();
            if v == 0 || v > count {
                return Err(ConfigError::at(
                    src,
                    Some(c.span()),
                    format!("concurrency is {v}: expected a number from 1 to count ({count})"),
                ));
            }
            v
        }
        None => count.min(20),
    };
    let phases = match s.phases {
        Some(p) => {
            let span = p.span();
            let mut list = Vec::new();
            for name in p.into_inner() {
                let phase = Phase::parse(name.get_ref())
                    .map_err(|e| ConfigError::at(src, Some(name.span()), e))?;
                list.push(phase);
            }
            crate::phases::check_order(&list).map_err(|e| ConfigError::at(src, Some(span), e))?;
            list
        }
        None => vec![
            Phase::Create,
            Phase::Build,
            Phase::Agent,
            Phase::Pty,
            Phase::Delete,
        ],
    };

    let mut parameters = BTreeMap::new();
    for (k, v) in s.parameters {
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) => {
                // Coder's list(string) parameters take a JSON array in a string.
                let items: Option<Vec<String>> = a
                    .into_iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                match items {
                    Some(items) => serde_json::to_string(&items).expect("strings serialize"),
                    None => {
                        return Err(ConfigError::at(
                            src,
                            Some(s.name.span()),
                            format!(
                                "parameter {k:?} of scenario {name:?}: a list must hold strings only"
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(ConfigError::at(
                    src,
                    Some(s.name.span()),
                    format!(
                        "parameter {k:?} of scenario {name:?} is a {}: expected a string, number, boolean or list of strings",
                        other.type_str()
                    ),
                ));
            }
        };
        parameters.insert(k, text);
    }
    if let Some(sched) = &s.schedule {
        crate::schedule::check_cron(sched.get_ref())
            .map_err(|e| ConfigError::at(src, Some(sched.span()), e))?;
    }
    // A zero timeout would fail every phase at once: refuse it where it was written.
    let mut timeouts = Timeouts::default();
    for (name, limit) in &s.timeouts {
        let phase = Phase::parse(name.get_ref()).map_err(|e| {
            ConfigError::at(src, Some(name.span()), format!("[scenario.timeouts]: {e}"))
        })?;
        if limit.get_ref().0.is_zero() {
            return Err(ConfigError::at(
                src,
                Some(limit.span()),
                "a timeout of zero: expected a duration of more than zero, such as \"90s\"",
            ));
        }
        timeouts.set(phase, limit.get_ref().0);
    }
    let traffic = TrafficConfig {
        sessions_per_workspace: match &s.sessions_per_workspace {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1000 => {
                return Err(ConfigError::at(
                    src,
                    Some(n.span()),
                    "sessions_per_workspace: expected 1 to 1000",
                ));
            }
            Some(n) => *n.get_ref(),
            None => 1,
        },
        transports: match s.transports {
            Some(t) if t.get_ref().is_empty() => {
                return Err(ConfigError::at(
                    src,
                    Some(t.span()),
                    "transports: expected at least one of \"pty\", \"ssh\"",
                ));
            }
            Some(t) => t.into_inner(),
            None => vec![Transport::Pty],
        },
        bytes_per_tick: match &s.bytes_per_tick {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1 << 20 => {
                return Err(ConfigError::at(
                    src,
                    Some(n.span()),
                    "bytes_per_tick: expected 1 to 1048576",
                ));
            }
            Some(n) => *n.get_ref(),
            None => 1024,
        },
        tick_interval: s
            .tick_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_millis(100)),
        echo: s.echo.unwrap_or(true),
    };
    if s.kind == ScenarioKind::Traffic && traffic.tick_interval < Duration::from_millis(1) {
        return Err(ConfigError::at(
            src,
            Some(s.name.span()),
            "tick_interval: expected at least 1ms",
        ));
    }
    let expect_output = s.expect_output.unwrap_or_else(|| {
        // With the default command, expect what it prints.
        if s.run_command == default_command() {
            "scaletest-ok".into()
        } else {
            String::new()
        }
    });
    Ok(Scenario {
        name,
        schedule: s.schedule.map(|s| s.into_inner()),
        template: s.template,
        parameters,
        count,
        concurrency,
        phases,
        run_command: s.run_command,
        expect_output,
        agent: match s.agent {
            Some(a) if a.get_ref().trim().is_empty() => {
                return Err(ConfigError::at(
                    src,
                    Some(a.span()),
                    "agent is empty: expected an agent name of the template, such as \"main\"",
                ));
            }
            a => a.map(|a| a.into_inner()),
        },
        workspace_prefix: prefix,
        timeouts,
        wait: s.wait,
        jitter: s.jitter.map(|j| j.0).unwrap_or_default(),
        ssh: ssh_config(src, s.ssh)?,
        kind: s.kind,
        traffic,
    })
}

impl fmt::Display for WaitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitMode::Watch => "watch",
            WaitMode::Poll => "poll",
        })
    }
}

/// Checks that a template uses only `{workspace}`, `{owner}` and `{agent}`.
fn check_placeholders(
    src: &Source<'_>,
    v: &Spanned<String>,
    what: &str,
) -> Result<(), ConfigError> {
    let mut rest = v.get_ref().as_str();
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        let name = &rest[i + 1..i + j];
        if !matches!(name, "workspace" | "owner" | "agent") {
            return Err(ConfigError::at(
                src,
                Some(v.span()),
                format!(
                    "{what}: unknown placeholder {{{name}}}: expected {{workspace}}, {{owner}} or {{agent}}"
                ),
            ));
        }
        rest = &rest[i + j + 1..];
    }
    Ok(())
}

fn ssh_config(src: &Source<'_>, raw: Option<Spanned<RawSsh>>) -> Result<SshConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SshConfig::default());
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let kind = raw.transport.unwrap_or(SshTransportKind::ProxyCommand);
    let transport = match kind {
        SshTransportKind::ProxyCommand => {
            let cmd = raw
                .proxy_command
                .map(|c| check_placeholders(src, &c, "proxy_command").map(|_| c.into_inner()));
            SshTransport::ProxyCommand(
                cmd.transpose()?
                    .unwrap_or_else(|| DEFAULT_PROXY_COMMAND.into()),
            )
        }
        SshTransportKind::Tcp => {
            let Some(addr) = raw.address else {
                return Err(ConfigError::at(
                    src,
                    Some(span),
                    "transport \"tcp\" needs `address = \"{workspace}.ssh.example.internal:22\"`",
                ));
            };
            check_placeholders(src, &addr, "address")?;
            SshTransport::Tcp(addr.into_inner())
        }
    };
    Ok(SshConfig {
        transport,
        user: match raw.user {
            Some(u) => {
                check_placeholders(src, &u, "user")?;
                u.into_inner()
            }
            None => "coder".into(),
        },
        identity_file: raw.identity_file,
        known_hosts: raw.known_hosts,
    })
}
