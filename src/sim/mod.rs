//! The Coder simulator: a real HTTP server speaking the part of Coder's API scaletestd uses,
//! with provisioner queueing, per-stage latencies, agents, a web terminal that runs commands,
//! rate limiting and failure injection. It is what the demo and the tests run against; the
//! daemon talks to it over sockets exactly as it talks to Coder.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub mod accounts;
pub mod api;
pub mod apps;
pub mod autostart;
pub mod config;
pub mod deliveries;
pub mod faults;
pub mod forms;
pub mod inbox;
pub mod metrics;
pub mod parameters;
pub mod pty;
pub mod ssh;
pub mod tls;
pub mod trace;
pub mod types;
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
    /// Stops everything: the API, the SSH server and the metrics listener.
    stop: CancellationToken,
    /// What the API's accept loop serves with; kept for a restart.
    serving: Serving,
    /// The API's accept loop and its connections, and what stops them.
    http: (CancellationToken, tokio::task::JoinHandle<()>),
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
        let deliveries = match &cfg.delivery_log {
            Some(path) => Some(Arc::new(deliveries::DeliveryLog::create(path)?)),
            None => None,
        };
        let state = world::State::new(cfg);
        state.accounts.add_owner(state.id.user.clone(), token);
        let wildcard = match &state.cfg.wildcard_host {
            Some(w) => Some(
                apps::Wildcard::parse(w)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let tls = match &state.cfg.tls_ca_out {
            Some(path) => Some(tls::acceptor(addr, path, state.cfg.tls_self_signed)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let access_url =
            url::Url::parse(&format!("{scheme}://{addr}")).expect("an address is a URL");
        let app = api::App::new(api::AppParts {
            state: state.clone(),
            token: token.to_string(),
            tracer,
            ssh_addr,
            access_url,
            wildcard,
            deliveries: deliveries.clone(),
        });
        let router = api::router(app.clone());
        let stop = CancellationToken::new();
        if let Some(log) = deliveries {
            tokio::spawn(log.keep_flushing(stop.clone()));
        }
        let host_key = ssh::host_key();
        let ssh_host_key = host_key
            .public_key()
            .to_openssh()
            .map_err(std::io::Error::other)?;
        tokio::spawn(autostart::executor(
            state.clone(),
            state.cfg.autostart_tick.0,
            stop.clone(),
        ));
        tokio::spawn(ssh::serve(
            state.clone(),
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
        let http_stop = stop.child_token();
        let serving = Serving {
            router,
            tls,
            connections: Default::default(),
        };
        let task = tokio::spawn(serve_http(listener, serving.clone(), http_stop.clone()));
        Ok(Sim {
            addr,
            app,
            stop,
            serving,
            http: (http_stop, task),
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
        self.app.access_url.clone()
    }

    /// Connections accepted so far: (HTTP/1.1, HTTP/2).
    pub fn connections(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.serving.connections.http1.load(Relaxed),
            self.serving.connections.http2.load(Relaxed),
        )
    }

    /// Requests the front refused with a bare 429 (`front.throttle`).
    pub fn throttled(&self) -> u64 {
        self.app
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Workspace states left out of watch streams (`failures.watch_dropped`).
    pub fn dropped_events(&self) -> u64 {
        self.app
            .dropped_events
            .load(std::sync::atomic::Ordering::Relaxed)
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

    /// Coder goes away: the API stops listening and every open connection is cut, event
    /// streams and terminals included, without a goodbye. The world (workspaces, builds in
    /// progress, agents) is kept, as a database is across a coderd restart.
    pub async fn crash(&mut self) {
        self.http.0.cancel();
        let task = &mut self.http.1;
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut *task)
            .await
            .is_err()
        {
            task.abort();
        }
        self.app.cut_connections();
    }

    /// Coder comes back on the same address with the same world.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 && e.kind() == std::io::ErrorKind::AddrInUse => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let http_stop = self.stop.child_token();
        let task = tokio::spawn(serve_http(
            listener,
            self.serving.clone(),
            http_stop.clone(),
        ));
        self.http = (http_stop, task);
        Ok(())
    }

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
        self.app.cut_connections();
        let mut task = self.http.1;
        if tokio::time::timeout(std::time::Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Connections accepted, by protocol.
#[derive(Default)]
struct Connections {
    http1: std::sync::atomic::AtomicU64,
    http2: std::sync::atomic::AtomicU64,
}

/// What the accept loop serves connections with.
#[derive(Clone)]
struct Serving {
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<Connections>,
}

/// Serves the API until `stop`; then every connection still open is aborted (dropping the
/// set), which is what tells a crash from a graceful shutdown. Our own accept loop, because
/// `axum::serve` detaches connections where nothing can cut them. Behind TLS, a connection
/// whose client chose `h2` (ALPN) is served HTTP/2, any other HTTP/1.1 with upgrades.
async fn serve_http(listener: tokio::net::TcpListener, serving: Serving, stop: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let sock = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => match a {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "simulator cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(serving.router.clone());
        let tls = serving.tls.clone();
        let connections = serving.connections.clone();
        conns.spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let Some(tls) = tls else {
                connections.http1.fetch_add(1, Relaxed);
                let _ = http1(hyper_util::rt::TokioIo::new(sock), svc).await;
                return;
            };
            let Ok(stream) = tls.accept(sock).await else {
                return; // a client that does not trust us, or a port scan
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                connections.http2.fetch_add(1, Relaxed);
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            } else {
                connections.http1.fetch_add(1, Relaxed);
                let _ = http1(hyper_util::rt::TokioIo::new(stream), svc).await;
            }
        });
    }
}

/// One HTTP/1.1 connection, upgrades (websockets) included.
async fn http1<I>(
    io: I,
    svc: hyper_util::service::TowerToHyperService<axum::Router>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .with_upgrades()
        .await
}
