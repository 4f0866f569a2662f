//! Why a call to Coder failed: Coder's `Response` body as a typed error, and its failure
//! reason.

use reqwest::Method;
use std::time::Duration;

use super::Response;
use crate::reason::{PhaseError, Reason};

/// Why a call to Coder failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Coder answered with an error status and (usually) its `Response` body.
    #[error("{method} {path}: {status} {}", describe(.body))]
    Status {
        method: Method,
        path: String,
        status: u16,
        body: Response,
    },
    /// No connection, or it broke before an answer.
    #[error("{method} {path}: cannot reach Coder: {detail}")]
    Connect {
        method: Method,
        path: String,
        detail: String,
    },
    /// No answer within the request timeout.
    #[error("{method} {path}: no answer within {}", humantime::format_duration(*.after))]
    Timeout {
        method: Method,
        path: String,
        after: Duration,
    },
    /// An answer that is not what Coder's API says it should be.
    #[error("{method} {path}: malformed response: {detail}")]
    Protocol {
        method: Method,
        path: String,
        detail: String,
    },
}

fn describe(body: &Response) -> String {
    let mut s = body.message.clone();
    if !body.detail.is_empty() {
        s.push_str(": ");
        s.push_str(&body.detail);
    }
    for v in &body.validations {
        s.push_str(&format!(" [{}: {}]", v.field, v.detail));
    }
    s
}

impl ApiError {
    /// The closed-set failure reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            ApiError::Status { status, .. } => match *status {
                401 | 403 => Reason::AuthError,
                429 => Reason::RateLimited,
                400..=499 => Reason::Http4xx,
                _ => Reason::Http5xx,
            },
            ApiError::Connect { .. } => Reason::ConnectError,
            ApiError::Timeout { .. } => Reason::Timeout,
            ApiError::Protocol { .. } => Reason::ProtocolError,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether Coder says the thing asked for does not exist (any more): **410 Gone** for a
    /// workspace once its delete build succeeded (coderd/workspaces.go, handler `workspace`:
    /// `if workspace.Deleted && !showDeleted`), 404 for one that never existed or that this
    /// user may not see. Every caller that asks "is it gone?" asks this, never one status.
    pub fn is_gone(&self) -> bool {
        matches!(self.status(), Some(404 | 410))
    }

    /// Coder's answer for a route it does not have (`httpapi.RouteNotFound`): how an older
    /// server says it lacks an endpoint a newer one has.
    pub fn is_route_missing(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, body, .. } if body.message.trim() == "Route not found.")
    }
}

impl From<ApiError> for PhaseError {
    fn from(e: ApiError) -> Self {
        PhaseError {
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_status() {
        let e = |status| ApiError::Status {
            method: Method::GET,
            path: "/".into(),
            status,
            body: Response::default(),
        };
        assert_eq!(e(401).reason(), Reason::AuthError);
        assert_eq!(e(404).reason(), Reason::Http4xx);
        assert_eq!(e(429).reason(), Reason::RateLimited);
        assert_eq!(e(503).reason(), Reason::Http5xx);
    }
}
