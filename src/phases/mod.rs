//! The phases of a workspace's walk, the closed set of failure reasons, and what one phase
//! of one workspace produced.
//!
//! Each phase lives in its own module; [`crate::runner`] drives them in order for every
//! workspace and always ends with `delete` for a workspace that was created.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::reason::{PhaseError, Reason};

pub mod agent;
pub mod build;
pub mod create;
pub mod delete;
pub mod pty;
pub mod ssh;

/// A phase of the walk, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Create,
    Build,
    Agent,
    Ssh,
    Pty,
    App,
    Delete,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Create,
        Phase::Build,
        Phase::Agent,
        Phase::Ssh,
        Phase::Pty,
        Phase::App,
        Phase::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Build => "build",
            Phase::Agent => "agent",
            Phase::Ssh => "ssh",
            Phase::Pty => "pty",
            Phase::App => "app",
            Phase::Delete => "delete",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one phase of one workspace did.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub started_at: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trace this phase's span belongs to, for exemplars and links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Coder's trace id for this phase's calls (`X-Trace-ID`), when Coder traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coder_trace_id: Option<String>,
    /// Parts of the phase timed apart (`ssh`: `handshake`, `proxy_startup`), milliseconds.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sub_timings_ms: std::collections::BTreeMap<&'static str, f64>,
}

pub(crate) fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}
