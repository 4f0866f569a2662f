//! `[scenario.ssh]`: how the `ssh` phase (and SSH traffic) reaches a workspace: a proxy
//! command (default `coder ssh --stdio {workspace}`) or TCP, the user, keys and known_hosts.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};
use crate::ssh::{DEFAULT_PROXY_COMMAND, SshConfig, SshTransport};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    pub(super) transport: Option<SshTransportKind>,
    pub(super) proxy_command: Option<Spanned<String>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) identity_file: Option<PathBuf>,
    pub(super) known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum SshTransportKind {
    ProxyCommand,
    Tcp,
}

/// Checks that a template uses only `{workspace}`, `{owner}` and `{agent}`.
fn check_placeholders(
    src: &Source<'_>,
    v: &Spanned<String>,
    what: &str,
) -> Result<(), ConfigError> {
    let mut rest = v.get_ref().as_str();
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        let name = &rest[i + 1..i + j];
        if !matches!(name, "workspace" | "owner" | "agent") {
            return Err(ConfigError::at(
                src,
                Some(v.span()),
                format!(
                    "{what}: unknown placeholder {{{name}}}: expected {{workspace}}, {{owner}} or {{agent}}"
                ),
            ));
        }
        rest = &rest[i + j + 1..];
    }
    Ok(())
}

pub(super) fn validate(
    src: &Source<'_>,
    raw: Option<Spanned<RawSsh>>,
) -> Result<SshConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SshConfig::default());
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let kind = raw.transport.unwrap_or(SshTransportKind::ProxyCommand);
    let transport = match kind {
        SshTransportKind::ProxyCommand => {
            let cmd = raw
                .proxy_command
                .map(|c| check_placeholders(src, &c, "proxy_command").map(|_| c.into_inner()));
            SshTransport::ProxyCommand(
                cmd.transpose()?
                    .unwrap_or_else(|| DEFAULT_PROXY_COMMAND.into()),
            )
        }
        SshTransportKind::Tcp => {
            let Some(addr) = raw.address else {
                return Err(ConfigError::at(
                    src,
                    Some(span),
                    "transport \"tcp\" needs `address = \"{workspace}.ssh.example.internal:22\"`",
                ));
            };
            check_placeholders(src, &addr, "address")?;
            SshTransport::Tcp(addr.into_inner())
        }
    };
    Ok(SshConfig {
        transport,
        user: match raw.user {
            Some(u) => {
                check_placeholders(src, &u, "user")?;
                u.into_inner()
            }
            None => "coder".into(),
        },
        identity_file: raw.identity_file,
        known_hosts: raw.known_hosts,
    })
}
