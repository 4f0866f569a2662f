//! `[scenario.traffic]`: the traffic of a `kind = "traffic"` scenario — sessions per
//! workspace, transports, bytes and interval of a tick. Its keys belong to that kind only.
//!
//! Earlier releases spelled them flat on the scenario (`sessions_per_workspace = 2`, …); those
//! still work, each with a warning naming its new spelling and where it was written.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::scenario::{RawScenario, ScenarioKind};
use super::{ConfigError, HumanDuration, Source};

/// `[scenario.traffic]`, or what its deprecated flat keys say.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraffic {
    sessions_per_workspace: Option<Spanned<u32>>,
    transports: Option<Spanned<Vec<Transport>>>,
    bytes_per_tick: Option<Spanned<u32>>,
    tick_interval: Option<Spanned<HumanDuration>>,
    echo: Option<Spanned<bool>>,
}

impl RawTraffic {
    /// Where each key that is set was written.
    fn set(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        [
            (
                "sessions_per_workspace",
                self.sessions_per_workspace.as_ref().map(|v| v.span()),
            ),
            ("transports", self.transports.as_ref().map(|v| v.span())),
            (
                "bytes_per_tick",
                self.bytes_per_tick.as_ref().map(|v| v.span()),
            ),
            (
                "tick_interval",
                self.tick_interval.as_ref().map(|v| v.span()),
            ),
            ("echo", self.echo.as_ref().map(|v| v.span())),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|at| (k, at)))
        .collect()
    }
}

/// The traffic settings as written, in either spelling (a warning for each flat key).
fn gather(
    src: &Source<'_>,
    s: &RawScenario,
    warnings: &mut Vec<String>,
) -> Result<RawTraffic, ConfigError> {
    let flat = RawTraffic {
        sessions_per_workspace: s.sessions_per_workspace.clone(),
        transports: s.transports.clone(),
        bytes_per_tick: s.bytes_per_tick.clone(),
        tick_interval: s.tick_interval.clone(),
        echo: s.echo.clone(),
    };
    match &s.traffic {
        Some(table) => {
            if let Some((old, at)) = flat.set().into_iter().next() {
                return Err(ConfigError::at(
                    src,
                    Some(at),
                    format!(
                        "{old} is the old spelling of a [scenario.traffic] key, and this scenario has [scenario.traffic] (line {}): write every traffic setting in the table",
                        super::line_of(src, table.span().start)
                    ),
                ));
            }
            Ok(table.get_ref().clone())
        }
        None => {
            for (old, at) in flat.set() {
                super::deprecated(src, warnings, at, old, old, "traffic");
            }
            Ok(flat)
        }
    }
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

pub(super) fn validate(
    src: &Source<'_>,
    raw: &RawScenario,
    warnings: &mut Vec<String>,
) -> Result<TrafficConfig, ConfigError> {
    let s = gather(src, raw, warnings)?;
    check_kind(src, raw, &s)?;
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
fn check_kind(src: &Source<'_>, s: &RawScenario, traffic: &RawTraffic) -> Result<(), ConfigError> {
    let (other, keys) = match s.kind {
        ScenarioKind::Lifecycle | ScenarioKind::Autostart => {
            let mut keys = traffic.set();
            if let Some(t) = &s.traffic {
                keys.insert(0, ("[scenario.traffic]", t.span()));
            }
            ("traffic", keys)
        }
        ScenarioKind::Traffic => (
            "lifecycle",
            [
                ("schedule", s.schedule.as_ref().map(|v| v.span())),
                ("jitter", s.jitter.as_ref().map(|v| v.span())),
            ]
            .into_iter()
            .filter_map(|(k, at)| at.map(|at| (k, at)))
            .collect(),
        ),
    };
    let this = match s.kind {
        ScenarioKind::Lifecycle => "lifecycle",
        ScenarioKind::Traffic => "traffic",
        ScenarioKind::Autostart => "autostart",
    };
    match keys.into_iter().next() {
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
