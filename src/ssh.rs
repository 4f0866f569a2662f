//! SSH to a workspace with russh: over a ProxyCommand's stdin/stdout (the path to a real
//! Coder agent, whose SSH server lives only inside Coder's tailnet, reached with
//! `coder ssh --stdio`), or over TCP where the template runs its own sshd.
//!
//! Authentication tries `none` first (what Coder's agent accepts), then the configured
//! private key. Host keys are accepted and their fingerprint logged (Coder agents make
//! theirs), or checked against `known_hosts` when one is configured. A ProxyCommand child is
//! killed when the session ends, fails or times out.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tracing::Instrument;

use crate::reason::{PhaseError, Reason};
use crate::secret::Secret;

/// How the `ssh` phase reaches a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshTransport {
    /// A command speaking SSH on its stdin/stdout, as OpenSSH's ProxyCommand (run with
    /// `sh -c`; `CODER_URL` and `CODER_SESSION_TOKEN` in its environment).
    ProxyCommand(String),
    /// A TCP address, `host:port`.
    Tcp(String),
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    pub transport: SshTransport,
    pub user: String,
    pub identity_file: Option<PathBuf>,
    /// When set, server keys are checked against this file; otherwise accepted and logged.
    pub known_hosts: Option<PathBuf>,
}

/// Coder's CLI as an OpenSSH ProxyCommand, naming the workspace as `coder ssh` reads it
/// (cli/ssh.go: no `coder.` prefix unless `--ssh-host-prefix coder.` says to strip it).
pub const DEFAULT_PROXY_COMMAND: &str = "coder ssh --stdio {workspace}";

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            transport: SshTransport::ProxyCommand(DEFAULT_PROXY_COMMAND.into()),
            user: "coder".into(),
            identity_file: None,
            known_hosts: None,
        }
    }
}

/// Where a session goes: the values of `{workspace}`, `{owner}` and `{agent}`.
#[derive(Debug, Clone)]
pub struct Target {
    pub workspace: String,
    pub owner: String,
    pub agent: String,
}

impl Target {
    pub fn expand(&self, template: &str) -> String {
        template
            .replace("{workspace}", &self.workspace)
            .replace("{owner}", &self.owner)
            .replace("{agent}", &self.agent)
    }
}

/// What Coder's deployment is, for the ProxyCommand's environment.
#[derive(Debug, Clone)]
pub struct CoderEnv {
    pub url: url::Url,
    pub token: Secret,
}

/// Timings inside the `ssh` phase.
#[derive(Debug, Clone, Default)]
pub struct SshTimings {
    /// Connect, SSH handshake and authentication.
    pub handshake: Duration,
    /// From spawning the ProxyCommand to its first byte (the server's SSH version line).
    pub proxy_startup: Option<Duration>,
}

/// Bytes of stderr kept from a ProxyCommand for error messages.
const STDERR_TAIL: usize = 2048;

/// An AsyncRead that notes when its first byte arrived.
struct FirstByte<R> {
    inner: R,
    at: Arc<OnceLock<Instant>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for FirstByte<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let _ = self.at.set(Instant::now());
        }
        r
    }
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A connected byte stream to an SSH server, and the child behind it if any.
struct Transport {
    stream: Option<Box<dyn Duplex>>,
    child: Option<tokio::process::Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    first_byte: Arc<OnceLock<Instant>>,
    spawned: Option<Instant>,
    /// The task collecting the proxy's stderr.
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// `host` and `port` for known_hosts.
    host: String,
    port: u16,
}

impl Transport {
    fn stderr_tail(&self) -> String {
        let b = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b).trim().to_string()
    }

    /// Why the proxy is gone, if it is (with what it wrote to stderr).
    async fn proxy_exit(&mut self, token: &Secret) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        let tail = token.scrub(&self.stderr_tail());
        Some(if tail.is_empty() {
            format!("the proxy command exited with {status}")
        } else {
            format!("the proxy command exited with {status}: {tail}")
        })
    }
}

async fn connect(
    cfg: &SshConfig,
    target: &Target,
    coder: &CoderEnv,
) -> Result<Transport, PhaseError> {
    let first_byte = Arc::new(OnceLock::new());
    let stderr = Arc::new(Mutex::new(Vec::new()));
    match &cfg.transport {
        SshTransport::Tcp(template) => {
            let addr = target.expand(template);
            let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
                PhaseError::new(
                    Reason::ConnectError,
                    format!("cannot connect to {addr}: {e}"),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            let (host, port) = match addr.rsplit_once(':') {
                Some((h, p)) => (
                    h.trim_matches(['[', ']']).to_string(),
                    p.parse().unwrap_or(22),
                ),
                None => (addr.clone(), 22),
            };
            Ok(Transport {
                stream: Some(Box::new(tcp)),
                child: None,
                stderr,
                first_byte,
                spawned: None,
                stderr_task: None,
                host,
                port,
            })
        }
        SshTransport::ProxyCommand(template) => {
            let cmd = target.expand(template);
            let spawned = Instant::now();
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .env("CODER_URL", coder.url.as_str())
                .env("CODER_SESSION_TOKEN", coder.token.expose())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    PhaseError::new(
                        Reason::ConnectError,
                        format!("cannot start the proxy command {cmd:?}: {e}"),
                    )
                })?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let mut err = child.stderr.take().expect("piped");
            let tail = stderr.clone();
            let stderr_task = tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            });
            let reader = FirstByte {
                inner: stdout,
                at: first_byte.clone(),
            };
            Ok(Transport {
                stream: Some(Box::new(tokio::io::join(reader, stdin))),
                child: Some(child),
                stderr,
                first_byte,
                spawned: Some(spawned),
                stderr_task: Some(stderr_task),
                host: target.workspace.clone(),
                port: 22,
            })
        }
    }
}

/// Accepts and logs the server's key, or checks it against a known_hosts file.
struct HostKeys {
    known_hosts: Option<std::path::PathBuf>,
    host: String,
    port: u16,
    /// Why the key was refused, for the workspace's error (russh only says "unknown key").
    refused: Arc<Mutex<Option<String>>>,
}

impl HostKeys {
    /// How known_hosts names this host: `host`, or `[host]:port` off port 22.
    fn lookup_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    fn refuse(&self, why: String) -> russh::Error {
        tracing::warn!(host = %self.lookup_name(), "{why}");
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        russh::Error::UnknownKey
    }
}

impl russh::client::Handler for HostKeys {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(self.known_hosts.is_none());
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        let Some(path) = &self.known_hosts else {
            tracing::debug!(host = %self.host, %fingerprint, "accepting the workspace's host key");
            return Ok(true);
        };
        let name = self.lookup_name();
        let offered = format!("{} {fingerprint}", key.algorithm());
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
            Ok(true) => Ok(true),
            Ok(false) => {
                let recorded = recorded_algorithms(&self.host, self.port, path);
                let why = if recorded.is_empty() {
                    format!(
                        "host {name} is unknown: {} has no key for it (the server offered {offered})",
                        path.display()
                    )
                } else {
                    let names: Vec<String> = recorded.iter().map(|a| a.to_string()).collect();
                    format!(
                        "host {name} offered {offered}, and {} holds only {} for it",
                        path.display(),
                        names.join(", ")
                    )
                };
                Err(self.refuse(why))
            }
            Err(russh::keys::Error::KeyChanged { line }) => Err(self.refuse(format!(
                "the host key of {name} changed: {} line {line} holds another {} key (the server offered {offered})",
                path.display(),
                key.algorithm()
            ))),
            Err(e) => Err(self.refuse(format!(
                "cannot check the host key of {name} against {}: {e}",
                path.display()
            ))),
        }
    }
}

/// The key types `path` records for `host:port`, in file order.
fn recorded_algorithms(
    host: &str,
    port: u16,
    path: &std::path::Path,
) -> Vec<russh::keys::Algorithm> {
    let mut out: Vec<russh::keys::Algorithm> = Vec::new();
    for (_, key) in
        russh::keys::known_hosts::known_host_keys_path(host, port, path).unwrap_or_default()
    {
        if !out.contains(&key.algorithm()) {
            out.push(key.algorithm());
        }
    }
    out
}

/// The host-key algorithms to offer, as OpenSSH orders them: the types known_hosts holds for
/// this host first, so a server with several host keys shows the one we can check (russh's
/// default prefers Ed25519 and would be refused by a known_hosts holding only the RSA key).
fn host_key_preference(recorded: &[russh::keys::Algorithm]) -> Vec<russh::keys::Algorithm> {
    let default = russh::Preferred::DEFAULT.key.to_vec();
    let known = |a: &russh::keys::Algorithm| {
        recorded
            .iter()
            .any(|r| r == a || (r.clone().is_rsa() && a.clone().is_rsa()))
    };
    let (first, rest): (Vec<_>, Vec<_>) = default.into_iter().partition(known);
    first.into_iter().chain(rest).collect()
}

fn classify(e: &russh::Error) -> Reason {
    match e {
        russh::Error::IO(_)
        | russh::Error::Disconnect
        | russh::Error::HUP
        | russh::Error::SendError => Reason::ConnectError,
        russh::Error::ConnectionTimeout
        | russh::Error::InactivityTimeout
        | russh::Error::KeepaliveTimeout => Reason::Timeout,
        russh::Error::UnknownKey
        | russh::Error::KeyChanged { .. }
        | russh::Error::NotAuthenticated => Reason::AuthError,
        _ => Reason::ProtocolError,
    }
}

/// An SSH session with `command` started on an exec channel; the proxy command, if any,
/// lives as long as this.
pub struct Exec {
    session: russh::client::Handle<HostKeys>,
    pub channel: russh::Channel<russh::client::Msg>,
    transport: Transport,
}

impl Exec {
    /// Ends the session and the proxy command.
    pub async fn close(self) {
        let _ = self
            .session
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        drop(self.transport);
    }
}

/// Connects, authenticates and starts `command` on an exec channel.
pub async fn open_exec(
    cfg: &SshConfig,
    target: &Target,
    coder: &CoderEnv,
    command: &str,
) -> Result<(Exec, SshTimings), PhaseError> {
    let start = Instant::now();
    let user = target.expand(&cfg.user);
    let mut t = connect(cfg, target, coder).await?;
    let refused = Arc::new(Mutex::new(None));
    let handler = HostKeys {
        known_hosts: cfg.known_hosts.clone(),
        host: t.host.clone(),
        port: t.port,
        refused: refused.clone(),
    };
    let mut preferred = russh::Preferred::default();
    if let Some(path) = &cfg.known_hosts {
        preferred.key = host_key_preference(&recorded_algorithms(&t.host, t.port, path)).into();
    }
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: None,
        preferred,
        ..Default::default()
    });
    let stream = t.stream.take().expect("a fresh transport has its stream");
    let handshake = async {
        let mut session = russh::client::connect_stream(config, stream, handler).await?;
        let mut ok = session.authenticate_none(&user).await?.success();
        if !ok && let Some(path) = &cfg.identity_file {
            let key = russh::keys::load_secret_key(path, None).map_err(russh::Error::from)?;
            let hash = session.best_supported_rsa_hash().await?.flatten();
            let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            ok = session.authenticate_publickey(&user, key).await?.success();
        }
        Ok::<_, russh::Error>((session, ok))
    };
    let result = handshake
        .instrument(tracing::info_span!(
            "ssh.handshake",
            otel.name = "ssh.handshake"
        ))
        .await;
    let (session, authenticated) = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(exit) = t.proxy_exit(&coder.token).await {
                return Err(PhaseError::new(Reason::ConnectError, exit));
            }
            if let Some(why) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(PhaseError::new(
                    Reason::AuthError,
                    format!("SSH handshake failed: {why}"),
                ));
            }
            let mut msg = format!("SSH handshake failed: {e}");
            let tail = coder.token.scrub(&t.stderr_tail());
            if !tail.is_empty() {
                msg.push_str(&format!(" (proxy stderr: {tail})"));
            }
            return Err(PhaseError::new(classify(&e), msg));
        }
    };
    if !authenticated && session.is_closed() {
        let why = t
            .proxy_exit(&coder.token)
            .await
            .unwrap_or_else(|| "the connection closed".into());
        return Err(PhaseError::new(
            Reason::ConnectError,
            format!("SSH authentication did not finish: {why}"),
        ));
    }
    if !authenticated {
        let how = if cfg.identity_file.is_some() {
            "none or the identity file"
        } else {
            "none"
        };
        return Err(PhaseError::new(
            Reason::AuthError,
            format!("the SSH server refused user {user:?} with {how}"),
        ));
    }
    let timings = SshTimings {
        handshake: start.elapsed(),
        proxy_startup: t
            .spawned
            .zip(t.first_byte.get().copied())
            .map(|(s, f)| f.duration_since(s)),
    };

    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| PhaseError::new(classify(&e), format!("cannot open an SSH session: {e}")))?;
    channel
        .exec(true, command)
        .await
        .map_err(|e| PhaseError::new(classify(&e), format!("exec failed: {e}")))?;
    Ok((
        Exec {
            session,
            channel,
            transport: t,
        },
        timings,
    ))
}

/// Runs `command` over SSH and checks its output contains `expect`.
pub async fn run(
    cfg: &SshConfig,
    target: &Target,
    coder: &CoderEnv,
    command: &str,
    expect: &str,
) -> Result<SshTimings, PhaseError> {
    let (mut ex, timings) = open_exec(cfg, target, coder, command).await?;
    let channel = &mut ex.channel;
    let mut out = Vec::new();
    let mut code = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => out.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            _ => {}
        }
        if out.len() > 1 << 20 {
            out.drain(..out.len() - (1 << 20));
        }
    }
    ex.close().await; // and kills the proxy command, if any
    let seen = || String::from_utf8_lossy(&out[..out.len().min(200)]).into_owned();
    if code.is_none() && out.is_empty() {
        return Err(PhaseError::new(
            Reason::ConnectError,
            "the SSH session closed before the command ran",
        ));
    }
    if !crate::reason::contains(&out, expect.as_bytes()) {
        return Err(PhaseError::new(
            Reason::OutputMismatch,
            format!("expected {expect:?} in the output; it printed {:?}", seen()),
        ));
    }
    if let Some(c) = code.filter(|c| *c != 0) {
        return Err(PhaseError::new(
            Reason::OutputMismatch,
            format!("the command exited with {c}: {:?}", seen()),
        ));
    }
    Ok(timings)
}
