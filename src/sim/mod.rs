//! The Coder simulator: a real HTTP server speaking the part of Coder's API scaletestd uses,
//! with provisioner queueing, per-stage latencies, agents, a web terminal that runs commands,
//! rate limiting and failure injection. It is what the demo and the tests run against; the
//! daemon talks to it over sockets exactly as it talks to Coder.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub mod api;
pub mod config;
pub mod faults;
pub mod metrics;
pub mod pty;
pub mod ssh;
pub mod trace;
pub mod world;

pub use config::SimConfig;
pub use world::Ledger;

/// Runs a workspace command for real: `sh -c COMMAND`, or an interactive `sh` when empty,
/// with piped stdio, killed when dropped.
pub fn shell(command: &str) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new("sh");
    if command.is_empty() {
        cmd.arg("-i");
    } else {
        cmd.arg("-c").arg(command);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// A running simulator.
pub struct Sim {
    pub addr: SocketAddr,
    pub app: Arc<api::App>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    metrics_addr: SocketAddr,
    ssh_host_key: String,
}

impl Sim {
    /// Binds `listen` (port 0 for any) and serves until [`Sim::stop`] or the token is cancelled.
    pub async fn start(cfg: SimConfig, token: &str, listen: SocketAddr) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let provider = if cfg.tracing.enabled {
            let export = crate::telemetry::TraceExport {
                endpoint: cfg.tracing.otlp_endpoint.clone(),
                protocol: cfg.tracing.protocol.clone(),
            };
            Some(crate::telemetry::provider("coderd", &export).map_err(std::io::Error::other)?)
        } else {
            None
        };
        let tracer = provider.as_ref().map(|p| {
            use opentelemetry::trace::TracerProvider as _;
            p.tracer("coderd")
        });
        let ssh_listen = cfg
            .ssh_listen
            .unwrap_or_else(|| SocketAddr::new(addr.ip(), 0));
        let ssh_listener = tokio::net::TcpListener::bind(ssh_listen).await?;
        let ssh_addr = ssh_listener.local_addr()?;
        let metrics_listen = cfg
            .metrics_listen
            .unwrap_or_else(|| SocketAddr::new(addr.ip(), 0));
        let metrics_listener = tokio::net::TcpListener::bind(metrics_listen).await?;
        let metrics_addr = metrics_listener.local_addr()?;
        let state = world::State::new(cfg);
        let app = api::App::new(state.clone(), token.to_string(), tracer, ssh_addr);
        let router = api::router(app.clone());
        let stop = CancellationToken::new();
        let host_key = ssh::host_key();
        let ssh_host_key = host_key
            .public_key()
            .to_openssh()
            .map_err(std::io::Error::other)?;
        tokio::spawn(ssh::serve(
            state.clone(),
            token.to_string(),
            ssh_listener,
            host_key,
            stop.clone(),
        ));
        {
            let state = state.clone();
            let stop = stop.clone();
            let handler = move || {
                let state = state.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        state.metrics.encode(),
                    )
                }
            };
            let app = axum::Router::new()
                .route("/", axum::routing::get(handler.clone()))
                .route("/metrics", axum::routing::get(handler));
            tokio::spawn(async move {
                let _ = axum::serve(metrics_listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            });
        }
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { s.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        Ok(Sim {
            addr,
            app,
            stop,
            task,
            provider,
            metrics_addr,
            ssh_host_key,
        })
    }

    /// Where coderd's own Prometheus metrics are served (Coder's `CODER_PROMETHEUS_ADDRESS`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The SSH server's public host key, OpenSSH format (`ssh-ed25519 AAAA…`).
    pub fn ssh_host_key(&self) -> &str {
        &self.ssh_host_key
    }

    /// Where the simulated agents' SSH server listens.
    pub fn ssh_addr(&self) -> SocketAddr {
        self.app.ssh_addr
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).expect("socket addresses make URLs")
    }

    /// What was injected and measured per workspace.
    pub fn ledger(&self) -> Vec<Ledger> {
        self.app.state.ledger()
    }

    /// Names of the workspaces that exist now.
    pub fn live_workspaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .app
            .state
            .lock()
            .live
            .values()
            .map(|e| e.ws.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Requests seen per `METHOD /route/{pattern}`.
    pub fn request_count(&self, route: &str) -> u64 {
        self.app
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Stops serving: open event streams and terminals are cut after a moment, as when a
    /// real coderd goes away.
    /// Exports every server span made so far (blocking; call from `spawn_blocking`).
    pub fn flush_spans(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    pub async fn stop(self) {
        if let Some(p) = self.provider.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = p.force_flush();
                let _ = p.shutdown_with_timeout(std::time::Duration::from_secs(3));
            })
            .await;
        }
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(std::time::Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}
