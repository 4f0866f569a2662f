//! `[server]`: where the daemon serves `/metrics` and the status page, how long it gives
//! deletes at shutdown, and the token of its run API (`api_token_file`; no file, no API).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, HumanDuration, Source};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<HumanDuration>,
    pub(super) api_token_file: Option<Spanned<std::path::PathBuf>>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub shutdown_grace: Duration,
    /// The bearer token `POST /api/v1/runs` and `GET /api/v1/runs/{id}` require; `None`:
    /// the run API is off (404).
    pub api_token: Option<crate::secret::Secret>,
}

pub(super) fn validate(src: &Source<'_>, raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = match &raw.listen {
        Some(l) => l.get_ref().parse().map_err(|_| {
            ConfigError::at(
                src,
                Some(l.span()),
                format!(
                    "invalid listen address {:?}: expected IP:PORT such as \"127.0.0.1:9464\"",
                    l.get_ref()
                ),
            )
        })?,
        None => "127.0.0.1:9464".parse().expect("literal address"),
    };
    let api_token = match &raw.api_token_file {
        Some(file) => Some(super::read_secret_file(
            src,
            file,
            "api_token_file",
            16,
            "a token of at least 16 characters (e.g. `openssl rand -hex 32`)",
        )?),
        None => None,
    };
    Ok(ServerConfig {
        api_token,
        listen,
        shutdown_grace: raw
            .shutdown_grace
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(120)),
    })
}
