//! Why something failed, as a closed set: the `reason` label of every failure counter, the
//! `error.reason` of every span, and the reason in the JSON output and on the status page.
//!
//! At the bottom of the crate: the API client, the SSH transport and the phases all speak it,
//! and it imports nothing of theirs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a phase failed: a closed set, so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Timeout,
    Http4xx,
    Http5xx,
    RateLimited,
    BuildFailed,
    BuildCanceled,
    AgentTimeout,
    AgentUnhealthy,
    ConnectError,
    AuthError,
    OutputMismatch,
    ProtocolError,
    Canceled,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Timeout,
        Reason::Http4xx,
        Reason::Http5xx,
        Reason::RateLimited,
        Reason::BuildFailed,
        Reason::BuildCanceled,
        Reason::AgentTimeout,
        Reason::AgentUnhealthy,
        Reason::ConnectError,
        Reason::AuthError,
        Reason::OutputMismatch,
        Reason::ProtocolError,
        Reason::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Http4xx => "http_4xx",
            Reason::Http5xx => "http_5xx",
            Reason::RateLimited => "rate_limited",
            Reason::BuildFailed => "build_failed",
            Reason::BuildCanceled => "build_canceled",
            Reason::AgentTimeout => "agent_timeout",
            Reason::AgentUnhealthy => "agent_unhealthy",
            Reason::ConnectError => "connect_error",
            Reason::AuthError => "auth_error",
            Reason::OutputMismatch => "output_mismatch",
            Reason::ProtocolError => "protocol_error",
            Reason::Canceled => "canceled",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase's failure: the label-safe reason and the human message (which may name the
/// workspace; it goes on spans, logs and the JSON output, never on a metric label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct PhaseError {
    pub reason: Reason,
    pub message: String,
}

impl PhaseError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        PhaseError {
            reason,
            message: message.into(),
        }
    }
}

/// Whether `needle` occurs in `hay` (the output checks of `pty` and `ssh`, the log scrubber).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || memchr::memmem::find(hay, needle).is_some()
}
