//! `notify`: the workspace's "Workspace Created" inbox notification reaches the scenario's
//! watcher — the token's user, a template admin — timed from the create's 201 to the
//! notification's arrival. Runs right after `create`.
//!
//! coderd sends "Workspace Created" to every template admin except the initiator
//! (coderd/workspaces.go `notifyWorkspaceCreated`), through its notifier, which fetches
//! queued messages every 15 s by default (`CODER_NOTIFICATIONS_FETCH_INTERVAL`): a stuck
//! notifier shows here before anyone misses an email. So the workspaces must be created by
//! test users (`[scenario.users]`, checked with the configuration) while the token's user
//! watches.
//!
//! One inbox websocket per run (`GET /notifications/inbox/watch?templates=<Workspace
//! Created>`), opened before the run's first walk ([`PhaseDef::prepare`]) and shared by its
//! workspaces: each notification is routed to its workspace by its targets. Coder's
//! `created_at` on the notification splits the time apart: `notify.queue` (201 to Coder
//! putting it in the inbox) and `notify.delivery` (inbox to this machine), as build stages
//! split a build.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::inbox::WORKSPACE_CREATED;

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(120),
    runs_in: &[Stage::Created],
    leaves: Leaves::Same,
    prepare: Some(|ctx| Box::pin(open(ctx))),
    run: |ctx, walk| Box::pin(run(ctx, walk)),
    ..PhaseDef::BASE
};

/// A notification as it arrived.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    /// When Coder put it in the inbox.
    created_at: DateTime<Utc>,
}

/// The run's inbox watcher: what arrived, by workspace, and a task reading the stream.
pub struct Watcher {
    arrived: Mutex<HashMap<Uuid, Arrival>>,
    news: Notify,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Watcher {
    fn new() -> Watcher {
        Watcher {
            arrived: Mutex::new(HashMap::new()),
            news: Notify::new(),
            reader: Mutex::new(None),
        }
    }

    fn note(&self, targets: &[Uuid], a: Arrival) {
        let mut m = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        for t in targets {
            m.entry(*t).or_insert(a);
        }
        drop(m);
        self.news.notify_waiters();
    }

    /// Waits until the notification of `workspace` has arrived.
    async fn wait(&self, workspace: Uuid) -> Arrival {
        loop {
            let notified = self.news.notified();
            if let Some(a) = self
                .arrived
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&workspace)
            {
                return *a;
            }
            notified.await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(t) = self
            .reader
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

/// Opens the watcher's inbox for the run (once, whichever owner's walk asks first): as the
/// token's user, before any workspace is created, so that no notification comes before it.
async fn open(ctx: &Ctx) -> Result<(), PhaseError> {
    let watcher = ctx
        .run
        .inbox
        .get_or_try_init(|| async {
            let main = ctx.run.main.clone();
            let who = |e: crate::coder::ApiError, doing: &str| {
                PhaseError::new(e.reason(), format!("{doing} of the token's user: {e}"))
            };
            if main
                .enable_workspace_created()
                .await
                .map_err(|e| who(e, "reading the notification preferences"))?
            {
                tracing::warn!(
                    "notify: turned on \"Workspace Created\" notifications for the token's user (Coder has them off by default): the phase waits for them"
                );
            }
            let mut inbox = main.watch_inbox(WORKSPACE_CREATED).await.map_err(|e| {
                PhaseError::new(e.reason(), format!("opening the inbox of the token's user: {e}"))
            })?;
            let watcher = Arc::new(Watcher::new());
            let w = Arc::downgrade(&watcher);
            let task = tokio::spawn(async move {
                // Read until the run ends; a broken stream is reopened (after a pause).
                loop {
                    match inbox.next().await {
                        Ok(Some(msg)) => {
                            let Some(w) = w.upgrade() else { return };
                            let n = msg.notification;
                            let at = inbox.arrived().unwrap_or_else(Instant::now);
                            w.note(
                                &n.targets,
                                Arrival {
                                    at,
                                    created_at: n.created_at,
                                },
                            );
                        }
                        Ok(None) | Err(_) => {
                            if w.strong_count() == 0 {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            match main.watch_inbox(WORKSPACE_CREATED).await {
                                Ok(i) => inbox = i,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot reopen the inbox; trying again");
                                }
                            }
                        }
                    }
                }
            });
            *watcher.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
            Ok::<_, PhaseError>(watcher)
        })
        .await?;
    let _ = watcher;
    Ok(())
}

async fn run(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let (Some(id), Some(created)) = (walk.id, walk.created) else {
        return Err(PhaseError::new(
            Reason::ProtocolError,
            "no workspace created",
        ));
    };
    let Some(watcher) = ctx.run.inbox.get() else {
        return Err(PhaseError::new(
            Reason::ProtocolError,
            "the inbox was not opened for this run",
        ));
    };
    let a = watcher.wait(id).await;
    // Coder's clock for the split: its `created_at` against the wall time of the 201.
    let wall_201 = Utc::now() - chrono::TimeDelta::from_std(created.elapsed()).unwrap_or_default();
    let queue = (a.created_at - wall_201).to_std().unwrap_or_default();
    let total = a.at.saturating_duration_since(created);
    walk.sub_timings
        .insert("queue", queue.min(total).as_secs_f64() * 1e3);
    walk.sub_timings
        .insert("delivery", total.saturating_sub(queue).as_secs_f64() * 1e3);
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        tracing::Span::current()
            .set_attribute("coder.notification.created_at", a.created_at.to_rfc3339());
    }
    walk.ended_at(a.at);
    Ok(())
}

/// What a run's notify phases share (in [`super::RunState`]).
pub type Inbox = tokio::sync::OnceCell<Arc<Watcher>>;
