//! What a run reports: each workspace's phases, the run's result against its failure budget,
//! and the wall clock its phases read time from. Below the walk: `once`, the daemon, the
//! status page and the outputs read these types without knowing how a run goes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::phases::stages::StageTiming;
use crate::phases::{self, Phase, PhaseError, PhaseRecord, Reason};

/// Everything one workspace went through.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceReport {
    pub index: u32,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub ok: bool,
    pub phases: Vec<PhaseRecord>,
    /// Where the build spent its time, from the job and Coder's build timings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub build_stages: Vec<StageTiming>,
    /// Coder's trace id of the workspace's latest call: a phase that makes no call of its
    /// own (its events came over the watch stream) is in that one.
    #[serde(skip)]
    pub last_coder_trace: Option<String>,
    /// Where the workspace's phases read wall-clock time from (see [`WallClock`]).
    #[serde(skip)]
    pub clock: WallClock,
}

/// The wall-clock time of a monotonic instant, from one reading of both clocks: phases
/// that tile the timeline (one ends at the instant the next starts) then also meet exactly
/// on the wall clock, which two separate readings would not promise (a thread preempted
/// between them, the wall clock slewed).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    wall: chrono::DateTime<Utc>,
    mono: Instant,
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock {
            wall: Utc::now(),
            mono: Instant::now(),
        }
    }
}

impl WallClock {
    pub fn at(&self, t: Instant) -> chrono::DateTime<Utc> {
        match t.checked_duration_since(self.mono) {
            Some(d) => self.wall + d,
            None => self.wall - (self.mono - t),
        }
    }
}

impl WorkspaceReport {
    /// The first failed phase and its error.
    pub fn failure(&self) -> Option<(Phase, Reason, &str)> {
        self.phases.iter().find(|p| !p.ok).map(|p| {
            (
                p.phase,
                p.reason.unwrap_or(Reason::ProtocolError),
                p.error.as_deref().unwrap_or(""),
            )
        })
    }

    pub fn record(&self, phase: Phase) -> Option<&PhaseRecord> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// How a run ended, as `scaletest_runs_total{result}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Success,
    Partial,
    Failure,
    Aborted,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Partial => "partial",
            RunResult::Failure => "failure",
            RunResult::Aborted => "aborted",
        }
    }
}

pub use crate::config::FailureBudget;

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub run_id: String,
    pub started_at: chrono::DateTime<Utc>,
    #[serde(rename = "elapsed_ms", serialize_with = "phases::ser_ms")]
    pub elapsed: Duration,
    /// Set when the run could not start (template missing, token refused, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_error: Option<PhaseError>,
    pub aborted: bool,
    /// How workspaces were followed (`watch-ws`, `sse`, `poll`), once a stream was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_transport: Option<&'static str>,
    /// The route workspaces were created through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_route: Option<&'static str>,
    pub workspaces: Vec<WorkspaceReport>,
    /// The scenario's failure budget: within it, a run with failures is still a success.
    #[serde(skip_serializing_if = "is_no_budget")]
    pub budget: FailureBudget,
}

fn is_no_budget(b: &FailureBudget) -> bool {
    *b == FailureBudget::None
}

impl RunReport {
    pub fn succeeded(&self) -> usize {
        self.workspaces.iter().filter(|w| w.ok).count()
    }

    pub fn failed(&self) -> usize {
        self.workspaces.len() - self.succeeded()
    }

    pub fn result(&self) -> RunResult {
        if self.aborted {
            RunResult::Aborted
        } else if self.setup_error.is_some() || self.succeeded() == 0 {
            RunResult::Failure
        } else if !self.budget.allows(self.failed(), self.workspaces.len()) {
            RunResult::Partial
        } else {
            RunResult::Success
        }
    }

    /// Failures counted by the phase and reason of each workspace's first failure.
    pub fn failures_by_phase(&self) -> BTreeMap<(Phase, Reason), usize> {
        let mut m = BTreeMap::new();
        for w in &self.workspaces {
            if let Some((p, r, _)) = w.failure() {
                *m.entry((p, r)).or_default() += 1;
            }
        }
        m
    }
}
