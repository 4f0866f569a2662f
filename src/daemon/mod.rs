//! The long-running daemon, as a library: [`start`] binds and sweeps, [`Handle::run`] schedules
//! and serves until told to stop.
//!
//! It sweeps leftovers at start-up, schedules every scenario on its cron (skipping, never
//! stacking, a run that would overlap the scenario's previous one), serves `/metrics` and the
//! status page, sweeps after every run, takes each configuration that `reloads` yields, and
//! when `shutdown` resolves stops scheduling, cancels the phases in flight and deletes what it
//! created within `shutdown_grace`. Signals, exit codes and console output are the caller's
//! (`cli`); tests drive it in-process and trigger runs with [`Daemon::run_now`].
//!
//! Its traffic pools and their reloads are in `pools`, what it shows through HTTP (the run
//! API, the status page) in `served`.

mod pools;
mod served;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rand::Rng;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coder::Client;
use crate::config::{Config, Scenario};
use crate::metrics::Metrics;
use crate::runner::{self, RunReport};
use crate::shard::Shard;
use crate::status::History;

/// A callback for every finished run.
pub type OnRun = Box<dyn Fn(&RunReport) + Send + Sync>;

/// How often Coder is probed between runs, so `scaletest_coder_up` stays true to life.
pub const PROBE_EVERY: Duration = Duration::from_secs(15);

pub struct Daemon {
    cfg: RwLock<Arc<Config>>,
    client: RwLock<Client>,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    shard: Shard,
    /// Scenarios with a run in flight.
    running: Mutex<HashSet<String>>,
    /// Cancels phases in flight (shutdown); deletes go on.
    stop: CancellationToken,
    /// Cancels everything (the grace period ran out).
    abort: CancellationToken,
    runs: TaskTracker,
    /// Called with every finished run (tests, the demo's console).
    on_run: Option<OnRun>,
    /// Live statistics of traffic scenarios, for the status page.
    pub traffic: Mutex<std::collections::BTreeMap<String, Arc<crate::traffic::TrafficStats>>>,
    /// The traffic pools running, by scenario.
    pools: Mutex<std::collections::BTreeMap<String, pools::Pool>>,
    /// Scenarios' test users and their tokens, kept across runs.
    users: crate::users::Pools,
    /// True once the start-up sweep is over: a run asked for before then waits, or the
    /// sweep would take its new workspaces for an earlier process's leftovers.
    swept: tokio::sync::watch::Sender<bool>,
    /// Runs started through the run API, newest last: `None` while running, then the
    /// `once --output json` document. Bounded (`served::DEMANDED_KEPT`).
    demanded: Mutex<std::collections::VecDeque<(String, String, Option<serde_json::Value>)>>,
    /// Itself, for the run API to spawn runs from a `&self`.
    me: std::sync::Weak<Daemon>,
}

/// What the daemon needs beyond the configuration.
#[derive(Default)]
pub struct Options {
    pub shard: Shard,
    /// Called with every finished run (the demo's console, tests).
    pub on_run: Option<OnRun>,
}

/// Why the daemon could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source} (set [server] listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Schedule(String),
}

fn client_for(cfg: &Config, metrics: &Arc<Metrics>) -> Client {
    Client::observed(
        cfg.coder.url.clone(),
        cfg.coder.token.clone(),
        cfg.coder.client_options(cfg.telemetry.propagate),
        metrics.clone(),
    )
}

impl Daemon {
    pub fn config(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn scenario(&self, name: &str) -> Option<Scenario> {
        let cfg = self.config();
        let mut sc = cfg.scenarios.iter().find(|s| s.name == name)?.clone();
        let slice = self.shard.slice(sc.count);
        sc.concurrency = self
            .shard
            .concurrency(sc.concurrency)
            .min(slice.count.max(1));
        Some(sc)
    }

    /// A scheduled tick of a scenario: start a run unless one is in flight or we are stopping.
    pub fn trigger(self: &Arc<Self>, name: &str) {
        let d = self.clone();
        let name = name.to_string();
        self.runs.spawn(async move { d.run_now(&name).await });
    }

    /// Runs a scenario now and returns its report: `None` when it is not configured, one of
    /// its runs is in flight (counted as skipped, `overlap`), or the daemon is stopping. It
    /// starts once the start-up sweep is over.
    pub async fn run_now(self: &Arc<Self>, name: &str) -> Option<RunReport> {
        if self.stop.is_cancelled() {
            self.metrics.run_skipped(name, "shutdown");
            return None;
        }
        let sc = self.scenario(name)?;
        if !self.wait_for_sweep(name).await {
            return None;
        }
        if !self.claim(name) {
            return None;
        }
        let report = self.run_scenario(&sc, None).await;
        self.release(&sc.name);
        report
    }

    /// Waits for the start-up sweep; false when the daemon stops first (counted).
    async fn wait_for_sweep(&self, name: &str) -> bool {
        let mut swept = self.swept.subscribe();
        tokio::select! {
            _ = swept.wait_for(|done| *done) => true,
            _ = self.stop.cancelled() => {
                self.metrics.run_skipped(name, "shutdown");
                false
            }
        }
    }

    /// Marks a run of `name` in flight; false (counted as skipped, `overlap`) when one is.
    fn claim(&self, name: &str) -> bool {
        let claimed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        if !claimed {
            tracing::warn!(scenario = %name, "previous run still in flight: skipping this one");
            self.metrics.run_skipped(name, "overlap");
        }
        claimed
    }

    fn release(&self, name: &str) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    async fn run_scenario(
        self: &Arc<Self>,
        sc: &Scenario,
        run_id: Option<&str>,
    ) -> Option<RunReport> {
        if !sc.jitter.is_zero() {
            let wait =
                Duration::from_millis(rand::rng().random_range(0..=sc.jitter.as_millis() as u64));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => {
                    self.metrics.run_skipped(&sc.name, "shutdown");
                    return None;
                }
            }
        }
        let slice = self.shard.slice(sc.count);
        if slice.count == 0 {
            return None;
        }
        let cfg = self.config();
        let client = self.client();
        let report = runner::run(
            &client,
            sc,
            runner::Setup {
                organization: cfg.coder.organization.as_deref(),
                users: Some(&self.users),
                run_id,
            },
            slice,
            self.metrics.clone(),
            self.stop.child_token(),
            self.abort.child_token(),
        )
        .await;
        tracing::info!(scenario = %sc.name, run.id = %report.run_id, result = report.result().as_str(), "{}", crate::report::summary_line(&report));
        self.metrics.run_done(&report);
        if let Some(f) = &self.on_run {
            f(&report);
        }
        self.history
            .push(&sc.name, crate::status::RunSummary::of(&report));
        if !self.abort.is_cancelled() {
            self.sweep(sc).await;
        }
        Some(report)
    }

    /// Deletes the scenario's leftovers (of this shard) and sets the orphan gauge.
    pub async fn sweep(&self, sc: &Scenario) {
        let client = self.client();
        match crate::sweep::sweep(&client, sc, Some(self.shard), &HashSet::new(), false).await {
            Ok(r) => {
                if !r.found.is_empty() {
                    tracing::warn!(scenario = %sc.name, found = r.found.len(), deleted = r.deleted, "sweep deleted leftover workspaces");
                }
                self.metrics.swept(&sc.name, r.found.len(), r.deleted);
            }
            Err(e) => {
                tracing::warn!(scenario = %sc.name, error = %e, "sweep failed; will try after the next run")
            }
        }
    }
}

/// A daemon that listens and has swept; [`Handle::run`] schedules and serves.
pub struct Handle {
    d: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

/// Binds the listen address, declares every series and sweeps what an earlier process left.
pub async fn start(cfg: Config, opts: Options) -> Result<Handle, DaemonError> {
    let metrics = Metrics::new();
    for sc in &cfg.scenarios {
        metrics.declare(sc);
    }
    let client = client_for(&cfg, &metrics);
    let listen = cfg.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    let d = Arc::new_cyclic(|me| Daemon {
        cfg: RwLock::new(Arc::new(cfg)),
        client: RwLock::new(client),
        metrics: metrics.clone(),
        history: Arc::new(History::default()),
        shard: opts.shard,
        running: Mutex::new(HashSet::new()),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        runs: TaskTracker::new(),
        on_run: opts.on_run,
        traffic: Default::default(),
        pools: Default::default(),
        swept: tokio::sync::watch::channel(false).0,
        users: Default::default(),
        demanded: Default::default(),
        me: me.clone(),
    });
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz and the status page");
    Ok(Handle { d, listener, addr })
}

/// [`start`], then [`Handle::run`].
pub async fn run(
    cfg: Config,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
    reloads: impl Stream<Item = Config>,
) -> Result<(), DaemonError> {
    start(cfg, opts).await?.run(shutdown, reloads).await
}

impl Handle {
    /// Where `/metrics` and the status page are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The daemon itself: [`Daemon::run_now`], its metrics and history.
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.d
    }

    /// Sweeps, starts the traffic pools and the schedule, and serves until `shutdown`
    /// resolves; then stops scheduling, cancels phases and deletes what it created within
    /// the grace period. Each configuration `reloads` yields replaces the one in force.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        reloads: impl Stream<Item = Config>,
    ) -> Result<(), DaemonError> {
        let Handle { d, listener, addr } = self;
        let server_stop = CancellationToken::new();
        let server = {
            let stop = server_stop.clone();
            let app = crate::server::router(d.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            })
        };
        let prober = tokio::spawn(probe(d.clone()));

        // The start-up sweep: whatever an earlier process left.
        for sc in d.config().scenarios.clone() {
            d.sweep(&sc).await;
        }
        d.swept.send_replace(true);

        d.reload_traffic();

        let mut sched = schedule(&d).await.map_err(DaemonError::Schedule)?;
        let mut reloads = std::pin::pin!(reloads);
        let mut shutdown = std::pin::pin!(shutdown);
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                Some(new) = reloads.next() => {
                    if new.server.listen != d.config().server.listen {
                        tracing::warn!(listen = %new.server.listen, serving = %addr, "[server] listen changed: a restart is needed for it; still serving on the address bound at start-up");
                    }
                    // The configuration first, its series after: whoever sees a new
                    // scenario's series finds the page and the API already serving it.
                    let new = Arc::new(new);
                    *d.client.write().unwrap_or_else(|p| p.into_inner()) = client_for(&new, &d.metrics);
                    *d.cfg.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
                    for sc in &new.scenarios {
                        d.metrics.declare(sc);
                    }
                    let _ = sched.shutdown().await;
                    sched = match schedule(&d).await {
                        Ok(s) => s,
                        Err(e) => break Err(DaemonError::Schedule(format!("cannot schedule the reloaded configuration: {e}"))),
                    };
                    d.reload_traffic();
                    tracing::info!("configuration reloaded");
                }
            }
        };

        // Shutdown: stop scheduling, cancel phases, let deletes finish within the grace period.
        let grace = d.config().server.shutdown_grace;
        tracing::info!(grace = %humantime::format_duration(grace), "stopping: canceling phases and deleting what this process created");
        d.stop.cancel();
        let _ = sched.shutdown().await;
        d.runs.close();
        if tokio::time::timeout(grace, d.runs.wait()).await.is_err() {
            tracing::error!("shutdown grace period over: abandoning deletes still in flight");
            d.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), d.runs.wait()).await;
        }
        prober.abort();
        server_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        result
    }
}

/// Registers a cron job per scheduled scenario and starts the scheduler.
async fn schedule(d: &Arc<Daemon>) -> Result<JobScheduler, String> {
    let sched = JobScheduler::new()
        .await
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    for sc in &d.config().scenarios {
        if sc.kind == crate::config::ScenarioKind::Traffic {
            continue; // runs all the time, started above
        }
        let Some(cron) = &sc.schedule else {
            tracing::warn!(scenario = %sc.name, "no schedule: this scenario runs only with `scaletestd once`");
            continue;
        };
        let (dd, name) = (d.clone(), sc.name.clone());
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let (dd, name) = (dd.clone(), name.clone());
            Box::pin(async move { dd.trigger(&name) })
        })
        .map_err(|e| format!("scenario {:?}: cannot schedule {cron:?}: {e}", sc.name))?;
        sched
            .add(job)
            .await
            .map_err(|e| format!("cannot add a job: {e}"))?;
    }
    sched
        .start()
        .await
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    Ok(sched)
}

/// Asks Coder for its version now and then, so `coder_up` and `build_info` stay current
/// between runs.
async fn probe(d: Arc<Daemon>) {
    loop {
        match d.client().build_info().await {
            Ok(b) => d.metrics.set_build_info(&b.version),
            Err(e) => tracing::debug!(error = %e, "Coder did not answer the probe"),
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
