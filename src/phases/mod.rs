//! The phases of a workspace's walk: one file each, all with one signature, and the registry
//! that names them.
//!
//! A phase is a [`PhaseDef`]: its default timeout, what state the workspace must be in for it
//! to run and what state it leaves it in (checked when the configuration is loaded, so an
//! order that cannot work is refused before any run), and its `run`, which reads and adds to
//! the [`Walk`] (what is known of the workspace so far). [`crate::runner`] runs a scenario's
//! phases in the order written and always ends with `delete` for a workspace that was
//! created.
//!
//! Everything the runner needs of a phase is in its [`PhaseDef`]: the stages it runs in and
//! leaves, whose clock its interval is on, the transition of the build it waits for (whose
//! stages are then reported under it) and whether it waits for agents. State a phase shares
//! across a run's workspaces goes in [`RunState`]. The runner names no phase
//! (`tests/it/process/layers.rs` fails if it does).
//!
//! Adding a phase: its own file here, one line in the registry below, its config section if
//! it has settings, its latency budget in `alerts/`, the simulator if Coder must do something
//! new for it, the README, and its test.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::coder::watch::Updates;
use crate::coder::{Client, Dialect};
pub use crate::reason::{PhaseError, Reason};
use crate::ssh::SshConfig;

pub mod agent;
pub mod app;
pub mod autostart;
pub mod build;
pub mod create;
pub mod delete;
pub mod notify;
pub mod parameters;
pub mod pty;
pub mod ssh;
pub mod stages;
pub mod start;
pub mod stop;

pub use create::Blueprint;

/// The registry: every phase, its name, and its definition. One line per phase.
macro_rules! registry {
    ($($variant:ident => $name:literal, $def:path;)*) => {
        /// A phase of the walk.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Phase {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Phase {
            /// Every phase, in registry order.
            pub const ALL: &'static [Phase] = &[$(Phase::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Phase::$variant => $name,)*
                }
            }

            /// What this phase is and does.
            pub fn def(self) -> &'static PhaseDef {
                match self {
                    $(Phase::$variant => &$def,)*
                }
            }
        }
    };
}

registry! {
    Parameters => "parameters", parameters::DEF;
    Create => "create", create::DEF;
    Notify => "notify", notify::DEF;
    Build => "build", build::DEF;
    Agent => "agent", agent::DEF;
    Ssh => "ssh", ssh::DEF;
    Pty => "pty", pty::DEF;
    App => "app", app::DEF;
    Stop => "stop", stop::DEF;
    Start => "start", start::DEF;
    AutostartCreated => "autostart.created", autostart::CREATED;
    AutostartAcquired => "autostart.acquired", autostart::ACQUIRED;
    AutostartBuilt => "autostart.built", autostart::BUILT;
    AutostartReady => "autostart.ready", autostart::READY;
    Delete => "delete", delete::DEF;
}

/// Phases a configuration may name that are not built yet, with what to say about them.
pub const NOT_YET: &[(&str, &str)] = &[];

impl Phase {
    /// The phase named `s`, or what to tell the user.
    pub fn parse(s: &str) -> Result<Phase, String> {
        if let Some(p) = Phase::ALL.iter().find(|p| p.as_str() == s) {
            return Ok(*p);
        }
        if let Some((_, why)) = NOT_YET.iter().find(|(n, _)| *n == s) {
            return Err(why.to_string());
        }
        let names: Vec<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        Err(format!(
            "unknown phase {s:?}: expected one of {}",
            names.join(", ")
        ))
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a workspace stands between phases, as far as the order of phases goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Nothing created yet.
    None,
    /// Created; its first build may still be running.
    Created,
    /// Its latest start build succeeded; agents not waited for.
    Started,
    /// Started, and an agent is known ready (terminals and SSH can open).
    AgentReady,
    /// Stopped by a succeeded stop build.
    Stopped,
    /// An autostart build exists and has not finished.
    Autostarting,
    /// An autostart build succeeded; agents not waited for.
    Autostarted,
    /// Deleted.
    Gone,
}

impl Stage {
    /// What a phase that runs in this stage needs.
    fn needed(self) -> &'static str {
        match self {
            Stage::None => "no workspace yet",
            Stage::Created => "a workspace still building",
            Stage::Started => "a started workspace",
            Stage::AgentReady => "an agent ready",
            Stage::Stopped => "a stopped workspace",
            Stage::Autostarting => "an autostart build seen (after \"autostart.created\")",
            Stage::Autostarted => "an autostart build done (after \"autostart.built\")",
            Stage::Gone => "a deleted workspace",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::None => "before \"create\" there is no workspace",
            Stage::Created => "the workspace is still building (put \"build\" before it)",
            Stage::Started => "no agent is known ready yet (put \"agent\" before it)",
            Stage::AgentReady => "the workspace is running with its agent ready",
            Stage::Stopped => "the workspace is stopped (put \"start\" before it)",
            Stage::Autostarting => "the autostart build is still running",
            Stage::Autostarted => {
                "the autostart build is done but no agent is known ready (put \"autostart.ready\" next)"
            }
            Stage::Gone => "the workspace is deleted",
        }
    }
}

/// One phase: everything the walk and the configuration need to know of it.
pub struct PhaseDef {
    /// Its timeout unless `[scenario.timeouts]` says otherwise.
    pub default_timeout: Duration,
    /// The stages it can run in, and the stage it leaves the workspace in when it succeeds.
    pub runs_in: &'static [Stage],
    pub leaves: Leaves,
    /// Whose clock its interval is on.
    pub clock: Clock,
    /// The transition of the build it waits for (`start`, `stop`), whose stages are then
    /// reported under its span ([`stages`]); none: it waits for no build.
    pub build: Option<&'static str>,
    /// It waits for agents: the agent stages of the build before it go under its span.
    pub agents: bool,
    /// Per-run setup, once before the run's first walk, with the first owner's context:
    /// what the run's walks then share through [`RunState`] (the `notify` phase opens the
    /// watcher's inbox). A failure stops the run before it starts.
    pub prepare: Option<Prepare>,
    /// It judges the scenario's parameter values itself (the `parameters` phase), so a run
    /// does not refuse them at its start as it otherwise does (`runner::prepare`).
    pub judges_parameters: bool,
    /// Runs it on one workspace.
    pub run: for<'a> fn(&'a Ctx, &'a mut Walk) -> BoxFuture<'a, Result<(), PhaseError>>,
}

impl PhaseDef {
    /// What a phase is unless its definition says otherwise (`..PhaseDef::BASE`): on our
    /// clock, waiting for no build and no agent, with no per-run setup.
    pub const BASE: PhaseDef = PhaseDef {
        default_timeout: Duration::from_secs(60),
        runs_in: &[],
        leaves: Leaves::Same,
        clock: Clock::Ours,
        build: None,
        agents: false,
        prepare: None,
        judges_parameters: false,
        run: |_, _| Box::pin(async { Err(PhaseError::new(Reason::ProtocolError, "not a phase")) }),
    };
}

/// A phase's per-run setup ([`PhaseDef::prepare`]).
pub type Prepare = for<'a> fn(&'a Ctx) -> BoxFuture<'a, Result<(), PhaseError>>;

/// Whose clock a phase's interval is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Ours: from when it started to when it returned (or its event arrived).
    Ours,
    /// Coder's timestamps ([`measured_between`]), such as the autostart phases' scheduled
    /// minute and build times: its record and its `phase.<name>` span carry that interval,
    /// and the time we spent waiting for it gets a `wait.<name>` span of its own.
    Coders,
}

/// The stage a phase leaves the workspace in.
#[derive(Debug, Clone, Copy)]
pub enum Leaves {
    /// This stage.
    Stage(Stage),
    /// The stage it found.
    Same,
}

/// Checks that `phases` can run in this order: each phase in a stage it can run in, `create`
/// first, `delete` last and once. The message names the first phase that cannot.
pub fn check_order(phases: &[Phase]) -> Result<(), String> {
    // A walk that creates a workspace ends by deleting it; one that creates nothing is form
    // loads only (phases that run before any workspace and leave none).
    let creates = phases
        .iter()
        .any(|p| matches!(p.def().leaves, Leaves::Stage(Stage::Created)));
    let form_only = |p: &Phase| {
        let d = p.def();
        d.runs_in.contains(&Stage::None) && matches!(d.leaves, Leaves::Same)
    };
    let starts = phases
        .first()
        .is_some_and(|p| p.def().runs_in.contains(&Stage::None));
    if !starts || (!creates && !phases.iter().all(form_only)) {
        return Err("phases must start with \"create\" (\"parameters\" may come first, or stand alone as a form load)".into());
    }
    if creates && cleanup(phases).is_none() {
        return Err(
            "phases must end with \"delete\": scaletestd never leaves workspaces behind".into(),
        );
    }
    let mut stage = Stage::None;
    for (i, p) in phases.iter().enumerate() {
        let def = p.def();
        if !def.runs_in.contains(&stage) {
            let after = match i {
                0 => String::new(),
                _ => format!(" after \"{}\"", phases[i - 1]),
            };
            let needs: Vec<&str> = def.runs_in.iter().map(|s| s.needed()).collect();
            return Err(format!(
                "phase \"{p}\" (number {}) cannot run{after}: {}; it needs {}",
                i + 1,
                stage.describe(),
                needs.join(" or ")
            ));
        }
        if let Leaves::Stage(s) = def.leaves {
            stage = s;
        }
    }
    Ok(())
}

/// The walk's closing phase, when it has one: the last, when it deletes the workspace.
pub fn cleanup(phases: &[Phase]) -> Option<Phase> {
    phases
        .last()
        .copied()
        .filter(|p| matches!(p.def().leaves, Leaves::Stage(Stage::Gone)))
}

/// What the phases take from the scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What `ssh` and `pty` run, and what its output must contain.
    pub run_command: String,
    pub expect_output: String,
    /// The agent to wait for and connect to; `None`: every top-level agent, the first one.
    pub agent: Option<String>,
    pub ssh: SshConfig,
    /// What `app` reaches and expects; set whenever the scenario has an `app` phase.
    pub app: Option<app::AppSettings>,
}

/// What the walks of one owner's workspaces share in a run, resolved once per run.
pub struct Ctx {
    pub client: Client,
    pub settings: Settings,
    pub blueprint: Blueprint,
    /// What this Coder speaks, learnt by the first workspaces of the run.
    pub dialect: Arc<Dialect>,
    /// What the run's phases share beyond one workspace.
    pub run: Arc<RunState>,
}

/// What a run's phases share beyond one workspace, made once per run; the runner knows it
/// only as a whole, so a phase that needs per-run state adds it here and nowhere above.
pub struct RunState {
    /// The token's user's client (not a test user's): the `notify` phase's watcher.
    pub main: Client,
    /// The wildcard app host, asked once per run by the first `app` phase that needs it.
    pub app_host: tokio::sync::OnceCell<Option<String>>,
    /// The run's workspaces gathering for one autostart minute.
    pub herd: autostart::Herd,
    /// The watcher's inbox, opened by `notify`'s [`PhaseDef::prepare`].
    pub inbox: notify::Inbox,
}

impl RunState {
    /// For a run of `workspaces` workspaces by the token's user `main` (or its test users).
    pub fn new(workspaces: u32, main: Client) -> Arc<RunState> {
        Arc::new(RunState {
            main,
            app_host: tokio::sync::OnceCell::new(),
            herd: autostart::Herd::new(workspaces),
            inbox: Default::default(),
        })
    }

    /// A walk is over (`None`: its workspace was never created): it lets go of what it held
    /// of the run's shared state, so that the others do not wait for it.
    pub fn walk_ended(&self, walk: Option<&Walk>) {
        if walk.is_none_or(|w| w.autostart.is_none()) {
            self.herd.leave();
        }
    }
}

/// What the walk knows of one workspace so far: what phases read, and what they add.
pub struct Walk {
    /// `<prefix>-<run>-<n>`.
    pub name: String,
    /// Set by `create`.
    pub id: Option<Uuid>,
    /// When Coder answered the create (set by `create`).
    pub created: Option<std::time::Instant>,
    /// The workspace's owner, for `{owner}` in SSH settings.
    pub owner: String,
    /// The workspace's changes as they come (set by `create`).
    pub updates: Option<Updates>,
    /// The agent terminals and SSH go to (set by `agent`; cleared by `stop`).
    pub agent: Option<(Uuid, String)>,
    /// The builds whose stages are reported, as they were made or seen: each goes under the
    /// phase that waits for it ([`PhaseDef::build`]), the one that made it or the next.
    pub builds: Vec<Uuid>,
    /// Parts of the phase in progress timed apart, in milliseconds (moved to its record).
    pub sub_timings: BTreeMap<&'static str, f64>,
    /// The workspace's `concurrency` slot; a phase that only waits on Coder may give it
    /// back (`autostart.created` does).
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The autostart minute and build (set by `autostart.created`).
    pub autostart: Option<autostart::Autostart>,
}

impl Walk {
    pub fn new(name: String) -> Walk {
        Walk {
            name,
            id: None,
            created: None,
            owner: String::new(),
            updates: None,
            agent: None,
            builds: Vec::new(),
            sub_timings: BTreeMap::new(),
            permit: None,
            autostart: None,
        }
    }

    /// The workspace's follower; every phase after `create` has one.
    pub fn updates(&mut self) -> Result<&mut Updates, PhaseError> {
        self.updates
            .as_mut()
            .ok_or_else(|| PhaseError::new(Reason::ProtocolError, "no workspace to follow"))
    }

    /// Ends the phase when the state it just waited for arrived, not when its task got
    /// round to noticing: call it right after the wait that decided the phase. The next
    /// phase starts there, so the time the task took to go on is not lost between them.
    pub fn ended_on_event(&self) {
        if let Some(at) = self.updates.as_ref().and_then(|u| u.latest_at) {
            let _ = MEASURED.try_with(|m| {
                if m.get().is_none() {
                    m.set(Some(Ended::At(at)));
                }
            });
        }
    }

    /// Ends the phase at `at`: when what it waited for arrived.
    pub fn ended_at(&self, at: std::time::Instant) {
        let _ = MEASURED.try_with(|m| m.set(Some(Ended::At(at))));
    }

    /// The agent phases connect to.
    pub fn agent(&self) -> Result<(Uuid, String), PhaseError> {
        self.agent.clone().ok_or_else(|| {
            PhaseError::new(
                Reason::AgentUnhealthy,
                "the workspace has no agent to connect to",
            )
        })
    }
}

/// How a phase said its duration should be taken, other than from its start to its return.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    /// Between these instants of Coder's clock ([`measured_between`]).
    Between(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    /// At this instant: when the event that decided it arrived ([`Walk::ended_on_event`]).
    At(std::time::Instant),
}

tokio::task_local! {
    static MEASURED: std::cell::Cell<Option<Ended>>;
}

/// The interval a phase reports when it is not its own wait (a [`Clock::Coders`] phase: the
/// autostart phases, from the scheduled minute to Coder's timestamp).
pub fn measured_between(start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) {
    let _ = MEASURED.try_with(|m| m.set(Some(Ended::Between(start, end.max(start)))));
}

/// Runs a phase, returning what it gave [`measured`] or [`Walk::ended_on_event`], if anything.
pub async fn measuring<F: std::future::Future>(fut: F) -> (F::Output, Option<Ended>) {
    MEASURED
        .scope(std::cell::Cell::new(None), async {
            let out = fut.await;
            (out, MEASURED.with(|m| m.get()))
        })
        .await
}

/// Timeouts per phase: the phases' defaults, overridden by `[scenario.timeouts]`.
#[derive(Debug, Clone, Default)]
pub struct Timeouts(BTreeMap<Phase, Duration>);

impl Timeouts {
    pub fn of(&self, phase: Phase) -> Duration {
        self.0
            .get(&phase)
            .copied()
            .unwrap_or(phase.def().default_timeout)
    }

    pub fn set(&mut self, phase: Phase, limit: Duration) {
        self.0.insert(phase, limit);
    }
}

/// What one phase of one workspace did.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub started_at: chrono::DateTime<chrono::Utc>,
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trace this phase's span belongs to, for exemplars and links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Coder's trace id for this phase's calls (`X-Trace-ID`), when Coder traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coder_trace_id: Option<String>,
    /// Parts of the phase timed apart (`ssh`: `handshake`, `proxy_startup`), milliseconds.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sub_timings_ms: std::collections::BTreeMap<&'static str, f64>,
    /// When the server wrote the workspace state that ended the phase (its `updated_at`),
    /// for a phase that ended on an event: the phase's end minus this is our own lateness,
    /// apart from the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub(crate) fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}
