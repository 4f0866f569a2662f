//! `[scenario.users]`: test users the scenario's workspaces are spread over (see
//! [`crate::users`]).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, HumanDuration, Source};
use crate::users::UserSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsers {
    count: Spanned<u32>,
    prefix: Option<Spanned<String>>,
    token_lifetime: Option<Spanned<HumanDuration>>,
    email_domain: Option<Spanned<String>>,
}

/// Our own bound: a test user's token is replaced at half its life, so a longer one buys
/// nothing (coderd v2.36.1 grants a member up to `CODER_MAX_TOKEN_LIFETIME`, 100 years by
/// default; Coder releases before it, 30 days).
const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

pub(super) fn validate(
    src: &Source<'_>,
    raw: Option<Spanned<RawUsers>>,
) -> Result<Option<UserSpec>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let raw = raw.into_inner();
    let count = *raw.count.get_ref();
    if !(1..=10_000).contains(&count) {
        return Err(ConfigError::at(
            src,
            Some(raw.count.span()),
            format!("[scenario.users] count is {count}: expected 1 to 10000"),
        ));
    }
    let (prefix, span) = match &raw.prefix {
        Some(p) => (p.get_ref().clone(), Some(p.span())),
        None => ("st-user".to_string(), Some(raw.count.span())),
    };
    // Coder's username rule: letters and digits, single hyphens inside, 32 at most.
    let longest = format!("{prefix}-{count}");
    let ok = longest.len() <= 32
        && prefix
            .split('-')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !ok {
        return Err(ConfigError::at(
            src,
            span,
            format!(
                "[scenario.users] prefix {prefix:?}: user names {prefix:?}-1 to {longest:?} must be Coder user names (letters, digits, single hyphens inside, 32 characters at most)"
            ),
        ));
    }
    let token_lifetime = match &raw.token_lifetime {
        Some(t) if t.get_ref().0.is_zero() || t.get_ref().0 > LONGEST => {
            return Err(ConfigError::at(
                src,
                Some(t.span()),
                "[scenario.users] token_lifetime: expected more than zero and at most 30 days (a token is replaced at half its life; older Coder releases grant no longer)",
            ));
        }
        Some(t) => t.get_ref().0,
        None => Duration::from_secs(24 * 3600),
    };
    let email_domain = match &raw.email_domain {
        None => crate::users::EMAIL_DOMAIN.to_string(),
        Some(d) => {
            let domain = d.get_ref().trim().to_ascii_lowercase();
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if !domain.contains('.') || !domain.split('.').all(label_ok) {
                return Err(ConfigError::at(
                    src,
                    Some(d.span()),
                    format!(
                        "[scenario.users] email_domain {:?}: expected a domain name such as \"example.com\" (the users' emails are <name>@<domain>)",
                        d.get_ref()
                    ),
                ));
            }
            domain
        }
    };
    Ok(Some(UserSpec {
        count,
        prefix,
        token_lifetime,
        email_domain,
    }))
}
