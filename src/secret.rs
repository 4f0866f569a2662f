//! A secret string (the Coder session token) that cannot be printed by accident.
//!
//! `Debug` and `Display` show `[redacted]`; the only way to the text is [`Secret::expose`],
//! which the few places that put the token on the wire call by name.

use std::fmt;
use std::sync::Arc;

/// Shortest secret [`Secret::scrub`] looks for (Coder's tokens are 33 characters).
pub const MIN_SCRUB: usize = 6;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Arc::from(s.into()))
    }

    /// The secret itself, for a request header or a child's environment only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Removes every occurrence of the secret from a text that came from elsewhere
    /// (a server's error message, a child's stderr) before it is logged or stored.
    ///
    /// Secrets shorter than [`MIN_SCRUB`] are left alone: a one-letter test token would
    /// otherwise blank that letter out of every message, and real tokens are far longer.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < MIN_SCRUB {
            return text.to_string();
        }
        text.replace(&*self.0, "[redacted]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.scrub("bad token tok-123!"), "bad token [redacted]!");
        assert_eq!(s.expose(), "tok-123");
        assert_eq!(Secret::new("t").scrub("not it"), "not it");
    }
}
