//! The daemon's configuration: one TOML file, filled in from the environment, checked once.
//!
//! Every mistake is reported as `FILE:LINE:COLUMN: what was wrong, what was expected`, so an
//! operator can fix a file without guessing. One module per section of the file: the raw
//! structs mirror it (with spans for values that need checks beyond their type) and each
//! section's `validate` turns its raw struct into what the rest of the program uses.
//!
//! - [`coder`]: `[coder]`, the deployment and the token.
//! - [`server`]: `[server]`, the daemon's listen address and shutdown grace.
//! - [`telemetry`]: `[telemetry]`, OTLP export, propagation, trace links.
//! - [`scenario`]: `[[scenario]]`, and [`traffic`] and [`ssh`] for its kind and its SSH table.
//! - [`duration`]: humane durations ("30s"); cron schedules are checked by [`crate::schedule`].

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod app;
pub mod coder;
pub mod duration;
pub mod scenario;
pub mod server;
pub mod ssh;
pub mod telemetry;
pub mod traffic;
mod users;

pub use crate::ssh::{DEFAULT_PROXY_COMMAND, SshConfig, SshTransport};
pub use coder::CoderConfig;
pub use duration::HumanDuration;
pub use scenario::{FailureBudget, Scenario, ScenarioKind, WaitMode};
pub use server::ServerConfig;
pub use telemetry::TelemetryConfig;
pub use traffic::{TrafficConfig, Transport};

/// A configuration mistake, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(
        src: &Source<'_>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
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

pub(crate) struct Source<'a> {
    pub(crate) name: &'a str,
    pub(crate) text: &'a str,
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    coder: Option<Spanned<coder::RawCoder>>,
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
    #[serde(default, rename = "scenario")]
    scenarios: Vec<Spanned<scenario::RawScenario>>,
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
    /// What is accepted but should be written otherwise (deprecated spellings), each
    /// `FILE:LINE:COLUMN: what and how to write it now`; printed when the file is loaded.
    pub warnings: Vec<String>,
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
    let coder = coder::validate(src, raw.coder, env)?;
    let server = server::validate(src, raw.server)?;
    let telemetry = telemetry::validate(raw.telemetry, env);
    if raw.scenarios.is_empty() {
        return Err(ConfigError::at(
            src,
            None,
            "no scenario: expected at least one [[scenario]] table with name, template and count",
        ));
    }
    let mut scenarios = Vec::with_capacity(raw.scenarios.len());
    let mut warnings = Vec::new();
    for s in raw.scenarios {
        let span = s.span();
        let scenario = scenario::validate(src, s.into_inner(), &mut warnings)?;
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
        warnings,
    })
}

/// The 1-based line of a byte offset.
pub(crate) fn line_of(src: &Source<'_>, offset: usize) -> usize {
    line_col(src.text, offset).0
}

/// Notes a deprecated key: `old` (written at `at`) is now `new` in `[scenario.<table>]`.
pub(crate) fn deprecated(
    src: &Source<'_>,
    warnings: &mut Vec<String>,
    at: Range<usize>,
    old: &str,
    new: &str,
    table: &str,
) {
    let e = ConfigError::at(
        src,
        Some(at),
        format!(
            "{old} is deprecated: write it as `{new}` in [scenario.{table}] (it still works for now)"
        ),
    );
    warnings.push(e.to_string());
}

/// A secret read from the file `key` names, trimmed; refused (where `key` is written) when
/// unreadable or shorter than `least` characters. The error never holds the file's text.
pub(crate) fn read_secret_file(
    src: &Source<'_>,
    file: &toml::Spanned<std::path::PathBuf>,
    key: &str,
    least: usize,
    expected: &str,
) -> Result<crate::secret::Secret, ConfigError> {
    let path = file.get_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::at(
            src,
            Some(file.span()),
            format!("cannot read {key} {}: {e}", path.display()),
        )
    })?;
    let t = text.trim();
    if t.len() < least.max(1) {
        let what = if t.is_empty() {
            "is empty".to_string()
        } else {
            format!("holds {} characters", t.len())
        };
        return Err(ConfigError::at(
            src,
            Some(file.span()),
            format!("{key} {} {what}: expected {expected}", path.display()),
        ));
    }
    Ok(crate::secret::Secret::new(t))
}
