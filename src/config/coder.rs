//! `[coder]`: the deployment (`url` or `CODER_URL`), the session token (`token_file` or
//! `CODER_SESSION_TOKEN`), the organization, the client's retries, and `ca_file` (the
//! certificates of a private CA that signed Coder's, trusted besides the system's).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Env, HumanDuration, Source};
use crate::secret::Secret;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoder {
    pub(super) url: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<PathBuf>>,
    pub(super) organization: Option<String>,
    #[serde(default)]
    pub(super) bypass_ratelimit: bool,
    pub(super) request_timeout: Option<HumanDuration>,
    pub(super) max_retries: Option<u32>,
    pub(super) apps_address: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<PathBuf>>,
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
    /// Where app requests to a wildcard app host connect, instead of resolving its name.
    pub apps_address: Option<std::net::IpAddr>,
    /// `ca_file`'s certificates.
    pub extra_roots: crate::coder::tls::ExtraRoots,
}

impl CoderConfig {
    /// The API client's settings from this table; `propagate` from `[telemetry]`.
    pub fn client_options(&self, propagate: bool) -> crate::coder::ClientOptions {
        crate::coder::ClientOptions {
            request_timeout: self.request_timeout,
            max_retries: self.max_retries,
            bypass_ratelimit: self.bypass_ratelimit,
            propagate,
            apps_address: self.apps_address,
            extra_roots: self.extra_roots.clone(),
            ..Default::default()
        }
    }
}

pub(super) fn validate(
    src: &Source<'_>,
    raw: Option<Spanned<RawCoder>>,
    env: &Env,
) -> Result<CoderConfig, ConfigError> {
    let (coder_raw, coder_span) = match raw {
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
        Some(file) => super::read_secret_file(src, file, "token_file", 1, "a Coder session token")?,
        None => match &env.coder_session_token {
            Some(t) => Secret::new(t.trim().to_string()),
            None => {
                return Err(missing_coder(
                    "missing session token: expected `token_file = \"/path/to/token\"` in [coder] or CODER_SESSION_TOKEN in the environment",
                ));
            }
        },
    };

    let apps_address = match &coder_raw.apps_address {
        Some(a) => Some(a.get_ref().trim().parse().map_err(|_| {
            ConfigError::at(
                src,
                Some(a.span()),
                format!(
                    "apps_address {:?}: expected an IP address such as \"10.0.0.5\" (where the wildcard app host's names should connect)",
                    a.get_ref()
                ),
            )
        })?),
        None => None,
    };

    let extra_roots = match &coder_raw.ca_file {
        Some(file) => {
            let path = file.get_ref();
            let at = |e: String| {
                ConfigError::at(
                    src,
                    Some(file.span()),
                    format!("ca_file {}: {e}", path.display()),
                )
            };
            crate::coder::tls::ExtraRoots::from_file(path).map_err(at)?
        }
        None => Default::default(),
    };

    Ok(CoderConfig {
        apps_address,
        extra_roots,
        url,
        token,
        organization: coder_raw.organization.filter(|o| !o.is_empty()),
        bypass_ratelimit: coder_raw.bypass_ratelimit,
        request_timeout: coder_raw
            .request_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        max_retries: coder_raw.max_retries.unwrap_or(4),
    })
}
