//! The autostart herd: every stopped workspace of a run given the same autostart minute, and
//! what Coder's lifecycle executor then does with each, measured from that minute.
//!
//! Four phases, one event sequence, so one file: `autostart.created` (the start build with
//! `reason: "autostart"` exists; its `created_at`), `autostart.acquired` (a provisioner took
//! its job; `started_at`), `autostart.built` (the job succeeded; `completed_at`) and
//! `autostart.ready` (every agent ready; the agents' `ready_at`). Each phase is the interval
//! from the scheduled minute to Coder's own timestamp, not the phase's own wall time, so the
//! numbers are the start-of-day latency a user sees whatever the daemon was doing; its
//! record's `started_at`, its duration and its span all describe that interval
//! ([`super::Clock::Coders`]).
//!
//! How Coder does it (coderd/autobuild/lifecycle_executor.go): once a minute the executor
//! truncates the tick to the minute and starts every workspace whose latest build is a
//! succeeded stop and whose schedule's next time after that stop build's creation has come;
//! ten at a time, then the builds queue for provisioners. So `created` is up to a minute
//! plus the executor's own work after the scheduled minute; that spread is what this
//! measures. Schedules are set with `PUT /workspaces/{id}/autostart` (coderd/workspaces.go
//! `putWorkspaceAutostart`, `CRON_TZ=UTC m h * * *`) and cleared once the build is seen.
//!
//! The herd: a run's workspaces reach `autostart.created` at different times (their
//! creates, builds and stops differ); the minute is chosen when the last has arrived (or
//! failed before), so every schedule names the same minute and every stop build is older
//! than it. A workspace waiting for the herd gives back its `concurrency` slot, or a run of
//! more workspaces than `concurrency` could never gather.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Timelike, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::{Clock, Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::{ProvisionerJob, ProvisionerJobStatus, WorkspaceTransition};

pub const CREATED: PhaseDef = PhaseDef {
    // The herd's gathering, up to a minute to the schedule and the executor's minute.
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[Stage::Stopped],
    leaves: Leaves::Stage(Stage::Autostarting),
    clock: Clock::Coders,
    run: |ctx, walk| Box::pin(created(ctx, walk)),
    ..PhaseDef::BASE
};

pub const ACQUIRED: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[Stage::Autostarting],
    leaves: Leaves::Same,
    clock: Clock::Coders,
    run: |_, walk| Box::pin(acquired(walk)),
    ..PhaseDef::BASE
};

pub const BUILT: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(15 * 60),
    runs_in: &[Stage::Autostarting],
    leaves: Leaves::Stage(Stage::Autostarted),
    clock: Clock::Coders,
    build: Some("start"),
    run: |ctx, walk| Box::pin(built(ctx, walk)),
    ..PhaseDef::BASE
};

pub const READY: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(10 * 60),
    runs_in: &[Stage::Autostarted],
    leaves: Leaves::Stage(Stage::AgentReady),
    clock: Clock::Coders,
    agents: true,
    run: |ctx, walk| Box::pin(ready(ctx, walk)),
    ..PhaseDef::BASE
};

/// Least time from the herd's gathering to its minute: every workspace's schedule must be
/// written before the minute comes (one `PUT` each).
const LEAD: Duration = Duration::from_secs(10);

/// What a workspace's walk knows of its autostart.
#[derive(Debug, Clone)]
pub struct Autostart {
    /// The scheduled minute.
    pub due: DateTime<Utc>,
    /// The autostart build, once seen.
    pub build: Option<Uuid>,
    pub job: Option<ProvisionerJob>,
}

/// The run's workspaces gathering for one autostart minute.
pub struct Herd {
    expected: u32,
    /// (arrived, left without arriving).
    count: Mutex<(u32, u32)>,
    due: watch::Sender<Option<DateTime<Utc>>>,
}

impl Herd {
    /// A herd of the run's `expected` workspaces.
    pub fn new(expected: u32) -> Herd {
        Herd {
            expected,
            count: Mutex::new((0, 0)),
            due: watch::Sender::new(None),
        }
    }

    /// Joins the herd; returns its minute once every workspace has arrived or left.
    pub async fn arrive(&self) -> DateTime<Utc> {
        let mut rx = self.due.subscribe();
        self.count_in(true);
        let due = rx
            .wait_for(|d| d.is_some())
            .await
            .expect("the herd outlives its walks");
        due.expect("waited for")
    }

    /// A workspace that will never arrive (it failed earlier, or has no autostart phase).
    pub fn leave(&self) {
        self.count_in(false);
    }

    fn count_in(&self, arrived: bool) {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if arrived {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        if c.0 > 0 && c.0 + c.1 >= self.expected && self.due.borrow().is_none() {
            let lead = LEAD.max(Duration::from_millis(20) * c.0);
            self.due.send_replace(Some(minute_after(Utc::now(), lead)));
        }
    }
}

/// The first whole minute at least `lead` after `now`.
fn minute_after(now: DateTime<Utc>, lead: Duration) -> DateTime<Utc> {
    let earliest = now + chrono::Duration::from_std(lead).unwrap_or_default();
    let floor = earliest
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(earliest);
    if floor == earliest {
        floor
    } else {
        floor + chrono::Duration::minutes(1)
    }
}

/// Coder's weekly schedule for every day at `due`'s minute, UTC.
pub fn schedule_for(due: DateTime<Utc>) -> String {
    format!("CRON_TZ=UTC {} {} * * *", due.minute(), due.hour())
}

/// Reports the phase as the interval from the scheduled minute to Coder's `at`.
fn since_due(walk: &Walk, at: DateTime<Utc>) {
    let due = walk.autostart.as_ref().map_or(at, |a| a.due);
    super::measured_between(due, at);
}

fn state(walk: &mut Walk) -> Result<&mut Autostart, PhaseError> {
    walk.autostart
        .as_mut()
        .ok_or_else(|| PhaseError::new(Reason::ProtocolError, "no autostart scheduled"))
}

async fn created(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let id = walk
        .id
        .ok_or_else(|| PhaseError::new(Reason::ProtocolError, "no workspace"))?;
    // From here Coder does the work: the slot goes to a workspace still being created.
    walk.permit = None;
    let due = ctx.run.herd.arrive().await;
    walk.autostart = Some(Autostart {
        due,
        build: None,
        job: None,
    });
    let stop_build = walk.updates()?.latest.as_ref().map(|w| w.latest_build.id);
    ctx.client
        .set_autostart(id, Some(&schedule_for(due)))
        .await
        .map_err(|e| PhaseError::new(e.reason(), format!("setting the autostart schedule: {e}")))?;
    let build = walk
        .updates()?
        .wait_for(super::build::POLL_EVERY, |ws| {
            let b = &ws.latest_build;
            (Some(b.id) != stop_build && b.transition == WorkspaceTransition::Start)
                .then(|| b.clone())
        })
        .await?;
    if build.reason != "autostart" {
        return Err(PhaseError::new(
            Reason::ProtocolError,
            format!(
                "a start build with reason {:?} came before the autostart: something else started the workspace",
                build.reason
            ),
        ));
    }
    let a = state(walk)?;
    a.build = Some(build.id);
    a.job = Some(build.job.clone());
    let at = build.created_at.unwrap_or(build.job.created_at);
    since_due(walk, at);
    walk.builds.push(build.id);
    Ok(())
}

/// Waits on the autostart build's job until `done` picks something from it.
async fn follow<T>(
    walk: &mut Walk,
    done: impl Fn(&ProvisionerJob) -> Option<T>,
) -> Result<T, PhaseError> {
    let build = state(walk)?.build;
    let out = walk
        .updates()?
        .wait_for(super::build::POLL_EVERY, |ws| {
            let b = &ws.latest_build;
            (Some(b.id) == build).then(|| done(&b.job)).flatten()
        })
        .await?;
    Ok(out)
}

async fn acquired(walk: &mut Walk) -> Result<(), PhaseError> {
    let job = follow(walk, |j| {
        (j.started_at.is_some() || j.status.is_terminal()).then(|| j.clone())
    })
    .await?;
    match job.started_at {
        Some(at) => {
            since_due(walk, at);
            Ok(())
        }
        None => Err(failed_job(&job)),
    }
}

async fn built(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let job = follow(walk, |j| j.status.is_terminal().then(|| j.clone())).await;
    // Cleared whatever the build did: the schedule was this run's, not the workspace's.
    if let Some(id) = walk.id {
        ctx.client.set_autostart(id, None).await.map_err(|e| {
            PhaseError::new(e.reason(), format!("clearing the autostart schedule: {e}"))
        })?;
    }
    let job = job?;
    if job.status != ProvisionerJobStatus::Succeeded {
        return Err(failed_job(&job));
    }
    if let Some(at) = job.completed_at {
        since_due(walk, at);
    }
    Ok(())
}

async fn ready(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let agents = super::agent::run(walk.updates()?, ctx.settings.agent.as_deref()).await?;
    // The agents' own `ready_at` when Coder gives it, else when we saw them ready.
    let ids: Vec<Uuid> = agents.iter().map(|(id, _)| *id).collect();
    let ready_at = walk.updates()?.latest.as_ref().and_then(|ws| {
        ws.latest_build
            .agents()
            .filter(|a| ids.contains(&a.id))
            .map(|a| a.ready_at)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max())
    });
    since_due(walk, ready_at.unwrap_or_else(Utc::now));
    walk.agent = agents.into_iter().next();
    Ok(())
}

fn failed_job(job: &ProvisionerJob) -> PhaseError {
    match job.status {
        ProvisionerJobStatus::Canceled => {
            PhaseError::new(Reason::BuildCanceled, "the autostart build was canceled")
        }
        _ => PhaseError::new(
            Reason::BuildFailed,
            if job.error.is_empty() {
                "the autostart build failed".to_string()
            } else {
                job.error.clone()
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_is_whole_and_at_least_the_lead_away() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let lead = Duration::from_secs(10);
        assert_eq!(
            minute_after(t("2026-11-29T09:29:49Z"), lead),
            t("2026-11-29T09:30:00Z")
        );
        assert_eq!(
            minute_after(t("2026-11-29T09:29:51Z"), lead),
            t("2026-11-29T09:31:00Z")
        );
        assert_eq!(
            schedule_for(t("2026-11-29T23:05:00Z")),
            "CRON_TZ=UTC 5 23 * * *"
        );
    }

    #[tokio::test]
    async fn the_herd_gathers_those_that_arrive_and_counts_those_that_leave() {
        let herd = std::sync::Arc::new(Herd::new(3));
        let h = herd.clone();
        let first = tokio::spawn(async move { h.arrive().await });
        tokio::task::yield_now().await;
        assert!(herd.due.borrow().is_none(), "one of three has come");
        herd.leave();
        assert!(herd.due.borrow().is_none(), "two of three");
        let second = herd.arrive().await;
        assert_eq!(first.await.unwrap(), second, "one minute for all");
        assert!(second > Utc::now() + chrono::Duration::seconds(9));
    }
}
