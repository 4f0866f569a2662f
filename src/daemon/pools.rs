//! The daemon's traffic pools: each `kind = "traffic"` scenario kept up from start to
//! shutdown, and a reload brought to the pools running (resized, retuned, or replaced).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::config::Scenario;

/// A running traffic pool, and what a reload can tell it.
pub(super) struct Pool {
    /// Everything of its scenario but its size and traffic settings: when this changes, the
    /// pool is deleted and started again.
    identity: String,
    slice: tokio::sync::watch::Sender<crate::runner::Slice>,
    settings: tokio::sync::watch::Sender<crate::config::TrafficConfig>,
    stop: CancellationToken,
}

/// See [`Pool::identity`].
fn pool_identity(sc: &Scenario) -> String {
    let mut s = sc.clone();
    s.count = 0;
    s.concurrency = 0;
    s.traffic.transports.clear();
    s.traffic.sessions_per_workspace = 0;
    s.traffic.bytes_per_tick = 0;
    s.traffic.tick_interval = Duration::ZERO;
    s.traffic.echo = false;
    format!("{s:?}")
}

impl Daemon {
    /// Keeps a traffic scenario's pool up until shutdown or until a reload stops it
    /// (retrying its set-up while Coder cannot be reached), then deletes it. A reload that
    /// changes only the pool's size or its traffic settings reaches it through its
    /// [`traffic::PoolControl`](crate::traffic::PoolControl).
    async fn keep_traffic(self: &Arc<Self>, sc: Scenario) {
        let stats = Arc::new(crate::traffic::TrafficStats::default());
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sc.name.clone(), stats.clone());
        let (slice_tx, slice) = tokio::sync::watch::channel(self.shard.slice(sc.count));
        let (settings_tx, settings) = tokio::sync::watch::channel(sc.traffic.clone());
        let stop = self.stop.child_token();
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).insert(
            sc.name.clone(),
            Pool {
                identity: pool_identity(&sc),
                slice: slice_tx,
                settings: settings_tx,
                stop: stop.clone(),
            },
        );
        let mut attempt = 0;
        let ctx = loop {
            let cfg = self.config();
            let started = crate::traffic::context(
                &self.client(),
                &sc,
                crate::runner::Setup {
                    organization: cfg.coder.organization.as_deref(),
                    users: Some(&self.users),
                    run_id: None,
                },
                self.metrics.clone(),
                stop.clone(),
                self.abort.child_token(),
            )
            .await;
            match started {
                Ok(ctx) => break ctx,
                Err(e) => {
                    tracing::warn!(scenario = %sc.name, reason = %e.reason, error = %e.message, "cannot start the traffic pool; retrying");
                    attempt += 1;
                    let wait = crate::coder::backoff(
                        Duration::from_secs(1),
                        Duration::from_secs(60),
                        attempt,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        };
        let control = crate::traffic::PoolControl { slice, settings };
        let reports = crate::traffic::run(ctx, control, self.metrics.clone(), stats).await;
        tracing::info!(scenario = %sc.name, workspaces = reports.len(), "traffic pool deleted");
    }

    /// Brings the traffic pools in line with the configuration now in force: new scenarios
    /// start, removed ones are deleted, a changed count or traffic setting reaches the running
    /// pool, and any other change (template, parameters, prefix, phases, SSH settings)
    /// deletes the pool and starts it again.
    pub(super) fn reload_traffic(self: &Arc<Self>) {
        let cfg = self.config();
        let wanted: std::collections::BTreeMap<&str, &Scenario> = cfg
            .scenarios
            .iter()
            .filter(|s| s.kind == crate::config::ScenarioKind::Traffic)
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut start = Vec::new();
        {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.retain(|name, pool| match wanted.get(name.as_str()) {
                Some(sc) if pool_identity(sc) == pool.identity => true,
                changed => {
                    tracing::info!(scenario = %name, "traffic pool {}: deleting it", if changed.is_some() { "changed beyond its size and traffic settings" } else { "removed from the configuration" });
                    pool.stop.cancel();
                    false
                }
            });
            for (name, sc) in &wanted {
                match pools.get(*name) {
                    Some(pool) => {
                        pool.slice.send_replace(self.shard.slice(sc.count));
                        pool.settings.send_replace(sc.traffic.clone());
                    }
                    None => start.push((*sc).clone()),
                }
            }
        }
        for sc in start {
            tracing::info!(scenario = %sc.name, "starting the traffic pool");
            let d = self.clone();
            self.runs.spawn(async move { d.keep_traffic(sc).await });
        }
    }
}
