//! Why something failed, as a closed set: the `reason` label of every failure counter, the
//! `error.reason` of every span, and the reason in the JSON output and on the status page.
//!
//! At the bottom of the crate: the API client, the SSH transport and the phases all speak it,
//! and it imports nothing of theirs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a phase failed: a closed set, so it can be a metric label. Spelled one way
/// everywhere (metrics, spans, logs, the page, JSON): [`Reason::as_str`], which serde uses
/// too (serde's own snake_case would write `http4xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// Coder's parameter evaluation refused the scenario's values.
    InvalidParameters,
}

impl Reason {
    pub const ALL: [Reason; 14] = [
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
        Reason::InvalidParameters,
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
            Reason::InvalidParameters => "invalid_parameters",
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown reason {s:?}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_spelled_one_way_in_json_and_back() {
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Reason::Http4xx.as_str(), "http_4xx");
    }
}
