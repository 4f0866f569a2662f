//! `[server]`: where the daemon serves `/metrics` and the status page, and how long it gives
//! deletes at shutdown.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, HumanDuration, Source};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<HumanDuration>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub shutdown_grace: Duration,
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
    Ok(ServerConfig {
        listen,
        shutdown_grace: raw
            .shutdown_grace
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(120)),
    })
}
