//! The traffic of a `kind = "traffic"` scenario: sessions per workspace, transports, bytes and
//! interval of a tick. Its keys belong to that kind only.

use std::time::Duration;

use serde::Deserialize;

use super::scenario::{RawScenario, ScenarioKind};
use super::{ConfigError, Source};

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

pub(super) fn validate(src: &Source<'_>, s: &RawScenario) -> Result<TrafficConfig, ConfigError> {
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
        transports: match &s.transports {
            Some(t) if t.get_ref().is_empty() => {
                return Err(ConfigError::at(
                    src,
                    Some(t.span()),
                    "transports: expected at least one of \"pty\", \"ssh\"",
                ));
            }
            Some(t) => t.get_ref().clone(),
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
        tick_interval: match &s.tick_interval {
            Some(d) if d.get_ref().0 < Duration::from_millis(1) => {
                return Err(ConfigError::at(
                    src,
                    Some(d.span()),
                    "tick_interval: expected at least 1ms",
                ));
            }
            Some(d) => d.get_ref().0,
            None => Duration::from_millis(100),
        },
        echo: s.echo.as_ref().is_none_or(|e| *e.get_ref()),
    };
    Ok(traffic)
}

/// Refuses a key of the other kind, where it is written: a traffic key on a lifecycle
/// scenario would be ignored, and so would a schedule on a traffic pool (it runs all the
/// time).
pub(super) fn check_kind(src: &Source<'_>, s: &RawScenario) -> Result<(), ConfigError> {
    let span = |v: Option<std::ops::Range<usize>>| v;
    let (other, keys) = match s.kind {
        ScenarioKind::Lifecycle | ScenarioKind::Autostart => (
            "traffic",
            [
                (
                    "sessions_per_workspace",
                    span(s.sessions_per_workspace.as_ref().map(|v| v.span())),
                ),
                ("transports", span(s.transports.as_ref().map(|v| v.span()))),
                (
                    "bytes_per_tick",
                    span(s.bytes_per_tick.as_ref().map(|v| v.span())),
                ),
                (
                    "tick_interval",
                    span(s.tick_interval.as_ref().map(|v| v.span())),
                ),
                ("echo", span(s.echo.as_ref().map(|v| v.span()))),
            ]
            .to_vec(),
        ),
        ScenarioKind::Traffic => (
            "lifecycle",
            [
                ("schedule", span(s.schedule.as_ref().map(|v| v.span()))),
                ("jitter", span(s.jitter.as_ref().map(|v| v.span()))),
            ]
            .to_vec(),
        ),
    };
    let this = match s.kind {
        ScenarioKind::Lifecycle => "lifecycle",
        ScenarioKind::Traffic => "traffic",
        ScenarioKind::Autostart => "autostart",
    };
    match keys.into_iter().find_map(|(k, at)| at.map(|at| (k, at))) {
        Some((key, at)) => Err(ConfigError::at(
            src,
            Some(at),
            format!(
                "{key} belongs to kind = \"{other}\" scenarios, and scenario {:?} is kind = \"{this}\": remove it{}",
                s.name.get_ref(),
                if this != "traffic" {
                    " or set kind = \"traffic\""
                } else {
                    " (a traffic pool runs all the time)"
                }
            ),
        )),
        None => Ok(()),
    }
}
