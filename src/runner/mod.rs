//! One run of one scenario: `count` workspaces, at most `concurrency` at a time, each walked
//! through the scenario's phases and always deleted once created.
//!
//! The runner knows nothing of terminals, metrics or schedules: it reports what happens to a
//! [`RunObserver`] and returns a [`RunReport`]; `once`, the daemon and the tests decide what
//! to do with them.

mod prepare;
mod report;

pub(crate) use prepare::owners;
pub use prepare::{Setup, prepare};
pub use report::{FailureBudget, RunReport, RunResult, WallClock, WorkspaceReport};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field::Empty, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::coder::trace::{PHASE_TRACES, PhaseTraces};
use crate::coder::{Client, Dialect, WatchTransport};
use crate::config::Scenario;
use crate::phases::Blueprint;
use crate::phases::{self, Phase, PhaseError, PhaseRecord, Reason, Walk};

/// What the runner tells the outside world as it goes.
pub trait RunObserver: Send + Sync {
    fn workspace_started(&self, _scenario: &str, _workspace: &str) {}
    fn phase_done(&self, _scenario: &str, _workspace: &str, _record: &PhaseRecord) {}
    fn workspace_done(&self, _scenario: &str, _report: &WorkspaceReport) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl RunObserver for NoObserver {}

/// Which workspaces of a scenario this run drives: `first..first+count` of the numbering.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub first: u32,
    pub count: u32,
}

/// What every walk of a run (or a traffic pool) shares.
pub struct RunCtx {
    /// What the phases read: the client, their settings, the blueprint, the dialect. One
    /// per owner: the token's user, or each test user (workspace `n` goes to owner
    /// `(n - 1) % owners`).
    pub(crate) owners: Vec<phases::Ctx>,
    pub(crate) scenario: Scenario,
    pub(crate) run_id: String,
    pub(crate) observer: Arc<dyn RunObserver>,
    /// Cancels phases (shutdown); never cancels `delete`.
    pub(crate) stop: CancellationToken,
    /// Cancels everything, deletes included (the grace period ran out).
    pub(crate) abort: CancellationToken,
}

impl RunCtx {
    /// `owners`: clients acting as the scenario's test users; empty: `client`'s user owns
    /// every workspace.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        owners: Vec<Client>,
        scenario: Scenario,
        blueprint: Blueprint,
        run_id: String,
        observer: Arc<dyn RunObserver>,
        stop: CancellationToken,
        abort: CancellationToken,
        workspaces: u32,
    ) -> RunCtx {
        let run = phases::RunState::new(workspaces, client.clone());
        let clients = if owners.is_empty() {
            vec![client]
        } else {
            owners
        };
        // Learnt once per run, whoever asks.
        let dialect = Arc::new(Dialect::new(first_transport(&scenario)));
        let settings = settings(&scenario);
        RunCtx {
            owners: clients
                .into_iter()
                .map(|client| phases::Ctx {
                    client,
                    settings: settings.clone(),
                    blueprint: blueprint.clone(),
                    dialect: dialect.clone(),
                    run: run.clone(),
                })
                .collect(),
            scenario,
            run_id,
            observer,
            stop,
            abort,
        }
    }

    /// What the walk of workspace `index` reads: its owner's.
    pub(crate) fn phases(&self, index: u32) -> &phases::Ctx {
        &self.owners[crate::users::owner_index(index, self.owners.len())]
    }

    /// The client of workspace `index`'s owner.
    pub(crate) fn client(&self, index: u32) -> &Client {
        &self.phases(index).client
    }

    /// What the run learnt of the server, for its report.
    pub(crate) fn dialect_report(&self) -> (Option<&'static str>, &'static str) {
        let d = &self.owners[0].dialect;
        (
            d.chosen_watch().map(|t| t.as_str()),
            d.create_route().as_str(),
        )
    }

    /// `<prefix>-<run>-<n>`.
    pub(crate) fn workspace_name(&self, index: u32) -> String {
        crate::naming::workspace_name(&self.scenario.workspace_prefix, &self.run_id, index)
    }
}

/// What the phases take from a scenario.
fn settings(s: &Scenario) -> phases::Settings {
    phases::Settings {
        run_command: s.run_command.clone(),
        expect_output: s.expect_output.clone(),
        agent: s.agent.clone(),
        ssh: s.ssh.clone(),
        app: s.app.clone(),
    }
}

/// Where a run starts looking for a watch transport: the newest, unless the scenario polls.
fn first_transport(s: &Scenario) -> WatchTransport {
    match s.wait {
        crate::config::WaitMode::Watch => WatchTransport::WatchWs,
        crate::config::WaitMode::Poll => WatchTransport::Poll,
    }
}

/// Runs one scenario once. `stop` cancels phases in flight (then every created workspace is
/// still deleted); `abort` cancels the deletes too.
pub async fn run(
    client: &Client,
    scenario: &Scenario,
    setup: Setup<'_>,
    slice: Slice,
    observer: Arc<dyn RunObserver>,
    stop: CancellationToken,
    abort: CancellationToken,
) -> RunReport {
    let run_id = setup
        .run_id
        .map(str::to_string)
        .unwrap_or_else(crate::naming::new_run_id);
    let run_span = info_span!(
        "scaletest.run",
        otel.name = "scaletest.run",
        scenario = %scenario.name,
        run.id = %run_id,
        workspace.count = slice.count,
        coder.url = %client.base_url(),
        otel.status_code = Empty,
    );
    // The whole run happens inside its span.
    let span = run_span.clone();
    async move {
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut report = RunReport {
            scenario: scenario.name.clone(),
            run_id: run_id.clone(),
            started_at,
            elapsed: Duration::ZERO,
            setup_error: None,
            aborted: false,
            watch_transport: None,
            create_route: None,
            workspaces: Vec::new(),
            budget: scenario.budget,
        };
        let prepared = match prepare(client, scenario, setup.organization).await {
            Ok(b) => owners(client, scenario, setup, b.organization_id)
                .await
                .map(|o| (b, o)),
            Err(e) => Err(e),
        };
        let (blueprint, owners) = match prepared {
            Ok(p) => p,
            Err(e) => {
                run_span.record("otel.status_code", "ERROR");
                tracing::error!(scenario = %scenario.name, reason = %e.reason, error = %e.message, "the run could not start");
                report.setup_error = Some(e);
                report.elapsed = clock.elapsed();
                return report;
            }
        };
        let ctx = Arc::new(RunCtx::new(
            client.clone(),
            owners,
            scenario.clone(),
            blueprint,
            run_id,
            observer,
            stop.clone(),
            abort,
            slice.count,
        ));
        // What the walk's phases set up once per run, before the first walk.
        if let Err(e) = prepare_phases(&ctx).await {
            run_span.record("otel.status_code", "ERROR");
            tracing::error!(scenario = %scenario.name, reason = %e.reason, error = %e.message, "the run could not start");
            report.setup_error = Some(e);
            report.elapsed = clock.elapsed();
            return report;
        }
        let permits = Arc::new(Semaphore::new(scenario.concurrency as usize));
        let mut tasks = tokio::task::JoinSet::new();
        for index in slice.first..slice.first + slice.count {
            let ctx = ctx.clone();
            let permits = permits.clone();
            let name = ctx.workspace_name(index);
            let span = info_span!(
                parent: &run_span,
                "scaletest.workspace",
                otel.name = "scaletest.workspace",
                workspace.name = %name,
                workspace.id = Empty,
                template.name = %ctx.owners[0].blueprint.template_name,
                otel.status_code = Empty,
            );
            tasks.spawn(
                async move {
                    let permit = permits
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    walk(&ctx, index, name, permit).await
                }
                .instrument(span),
            );
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(w) => report.workspaces.push(w),
                Err(e) => tracing::error!(error = %e, "a workspace task panicked"),
            }
        }
        report.workspaces.sort_by_key(|w| w.index);
        (report.watch_transport, report.create_route) = {
            let (w, c) = ctx.dialect_report();
            (w, Some(c))
        };
        report.aborted = stop.is_cancelled();
        report.elapsed = clock.elapsed();
        if report.result() != RunResult::Success {
            run_span.record("otel.status_code", "ERROR");
        }
        report
    }
    .instrument(span)
    .await
}

/// Runs each phase's [`phases::PhaseDef::prepare`] of the scenario's walk once.
pub(crate) async fn prepare_phases(ctx: &RunCtx) -> Result<(), PhaseError> {
    let mut seen = Vec::new();
    for p in &ctx.scenario.phases {
        if seen.contains(p) {
            continue;
        }
        seen.push(*p);
        if let Some(prepare) = p.def().prepare {
            prepare(&ctx.owners[0]).await?;
        }
    }
    Ok(())
}

/// One workspace, phase by phase, ending with `delete` once it exists.
async fn walk(
    ctx: &RunCtx,
    index: u32,
    name: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> WorkspaceReport {
    let run = &ctx.owners[0].run;
    match bring_up(ctx, index, name, Some(permit)).await {
        Ok(up) => {
            run.walk_ended(Some(&up.walk));
            tear_down(ctx, up).await
        }
        Err(report) => {
            run.walk_ended(None);
            report
        }
    }
}

/// A workspace that went through its phases and is still there.
pub(crate) struct Up {
    pub report: WorkspaceReport,
    pub walk: Walk,
    /// Whether every phase so far succeeded.
    pub ok: bool,
}

impl Up {
    /// The agent terminals and SSH go to, when the scenario waited for one.
    pub fn agent(&self) -> Option<(Uuid, String)> {
        self.walk.agent.clone()
    }
}

/// Walks a workspace through the scenario's phases in the order written, up to (not
/// including) the final `delete`, stopping at the first that fails. `Err` when it was never
/// created (nothing to delete).
pub(crate) async fn bring_up(
    ctx: &RunCtx,
    index: u32,
    name: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Up, WorkspaceReport> {
    let s = &ctx.scenario;
    let mut report = WorkspaceReport {
        index,
        name: name.clone(),
        id: None,
        ok: false,
        phases: Vec::new(),
        build_stages: Vec::new(),
        last_coder_trace: None,
        clock: WallClock::default(),
    };
    if ctx.stop.is_cancelled() {
        // Never started: nothing was created, nothing to report as a failure of Coder.
        report.phases.push(skipped(s.phases[0]));
        return Err(report);
    }
    ctx.observer.workspace_started(&s.name, &name);
    let mut walk = Walk::new(name);
    walk.permit = permit;
    // Each phase's span by its place in the walk, and the place each build was made or
    // seen at, for the builds' stage spans.
    let mut spans: Vec<opentelemetry::Context> = Vec::new();
    let mut builds: Vec<(Uuid, usize)> = Vec::new();
    let mut ok = true;
    // Where the previous phase ended on an event: the next one starts there.
    let mut since = None;
    // Every phase but the closing delete, which [`tear_down`] runs.
    let upto = s.phases.len() - usize::from(phases::cleanup(&s.phases).is_some());
    for (at, &phase) in s.phases[..upto].iter().enumerate() {
        let span = phase_span(phase);
        spans.push(span.context());
        let had_id = walk.id.is_some();
        let had_builds = walk.builds.len();
        let seen = last_event(&walk);
        let run = (phase.def().run)(ctx.phases(index), &mut walk);
        let end = timed(ctx, &mut report, (phase, span), &ctx.stop, since, run).await;
        since = end.on_event;
        let done = end.ok;
        builds.extend(walk.builds[had_builds..].iter().map(|b| (*b, at)));
        keep_sub_timings(&mut report, &mut walk);
        if let Some(rec) = report.phases.last_mut()
            && last_event(&walk) != seen
        {
            rec.event_at = last_event(&walk);
        }
        if let (false, Some(id)) = (had_id, walk.id) {
            tracing::Span::current().record("workspace.id", tracing::field::display(id));
        }
        if !done {
            ok = false;
            break;
        }
    }
    report.id = walk.id;
    if walk.id.is_none() {
        // Nothing to delete: a form load that went through, or a create that failed.
        report.ok = ok && phases::cleanup(&s.phases).is_none();
        ctx.observer.workspace_done(&s.name, &report);
        return Err(report);
    }
    // The latest build's job is in hand; an earlier one's is read back (one call).
    let latest = walk
        .updates
        .as_ref()
        .and_then(|u| u.latest.as_ref())
        .map(|w| (w.latest_build.id, w.latest_build.job.clone()));
    build_stages(ctx, &mut report, latest, builds, &spans).await;
    Ok(Up { report, walk, ok })
}

/// Where each build the walk waited for spent its time, once its job has finished (failed
/// builds too), as spans with Coder's own timestamps: under the phase that waits for it (the
/// first at or after the place it was made or seen whose [`phases::PhaseDef::build`] is
/// set), its agent's stages under the next phase that waits for agents.
async fn build_stages(
    ctx: &RunCtx,
    report: &mut WorkspaceReport,
    latest: Option<(Uuid, crate::coder::ProvisionerJob)>,
    builds: Vec<(Uuid, usize)>,
    spans: &[opentelemetry::Context],
) {
    let walked = &ctx.scenario.phases[..spans.len()];
    for (build, made_at) in builds {
        let Some((waited_at, transition)) = walked
            .iter()
            .enumerate()
            .skip(made_at)
            .find_map(|(i, p)| p.def().build.map(|t| (i, t)))
        else {
            continue;
        };
        let job = match &latest {
            Some((id, job)) if *id == build => Some(job.clone()),
            _ => ctx
                .client(report.index)
                .workspace_build(build)
                .await
                .ok()
                .map(|b| b.job),
        };
        let Some(job) = job.filter(|j| j.status.is_terminal()) else {
            continue;
        };
        let stages = Box::pin(phases::stages::fetch(
            ctx.client(report.index),
            build,
            &job,
            transition,
        ))
        .await;
        let agent_span = walked
            .iter()
            .enumerate()
            .skip(waited_at + 1)
            .find(|(_, p)| p.def().agents)
            .map(|(i, _)| &spans[i]);
        phases::stages::spans(&spans[waited_at], agent_span, &stages);
        report.build_stages.extend(stages);
    }
}

/// Deletes a workspace that [`bring_up`] made, and reports it.
pub(crate) async fn tear_down(ctx: &RunCtx, up: Up) -> WorkspaceReport {
    let Up {
        mut report,
        mut walk,
        ok,
    } = up;
    if !ok && let Some(u) = walk.updates.as_mut() {
        u.reset();
    }
    // A walk that created a workspace ends with one (checked with its configuration).
    let cleanup = phases::cleanup(&ctx.scenario.phases).expect("a walk that creates deletes");
    let run = (cleanup.def().run)(ctx.phases(report.index), &mut walk);
    let deleted = timed(
        ctx,
        &mut report,
        (cleanup, phase_span(cleanup)),
        &ctx.abort,
        None,
        run,
    )
    .await
    .ok;
    report.ok = ok && deleted;
    if !report.ok {
        tracing::Span::current().record("otel.status_code", "ERROR");
    }
    ctx.observer.workspace_done(&ctx.scenario.name, &report);
    report
}

fn skipped(phase: Phase) -> PhaseRecord {
    PhaseRecord {
        phase,
        started_at: Utc::now(),
        duration: Duration::ZERO,
        ok: false,
        reason: Some(Reason::Canceled),
        error: Some("not started: the run was stopped".into()),
        trace_id: None,
        coder_trace_id: None,
        sub_timings_ms: Default::default(),
        event_at: None,
    }
}

/// The span of one phase, `phase.<name>`.
/// The span a phase runs in: `phase.<name>`, or for a phase on Coder's clock `wait.<name>`,
/// our wait for it (its `phase.<name>` span is made at its end, see [`coders_interval`]).
fn phase_span(phase: Phase) -> tracing::Span {
    let name = match phase.def().clock {
        phases::Clock::Ours => format!("phase.{phase}"),
        phases::Clock::Coders => format!("wait.{phase}"),
    };
    info_span!(
        "phase",
        otel.name = name,
        error.reason = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// The `phase.<name>` span of a phase on Coder's clock: the interval its record holds (from
/// its `started_at`, for its duration), beside `wait` (the span of our wait for it) under the
/// workspace's span, with the same status and reason.
fn coders_interval(wait: &tracing::Span, record: &phases::PhaseRecord) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let tracer = opentelemetry::global::tracer("scaletestd");
    // Beside the wait, under the workspace's span: the span this runs in.
    let parent = tracing::Span::current().context();
    let mut attrs = vec![KeyValue::new(
        "scaletest.wait_span_id",
        wait.context().span().span_context().span_id().to_string(),
    )];
    if let Some(r) = record.reason {
        attrs.push(KeyValue::new("error.reason", r.as_str()));
    }
    let start = std::time::SystemTime::from(record.started_at);
    let mut span = tracer
        .span_builder(format!("phase.{}", record.phase))
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attrs)
        .start_with_context(&tracer, &parent);
    if let Some(e) = &record.error {
        span.set_status(Status::error(e.clone()));
    }
    span.end_with_timestamp(start + record.duration);
}

/// When the server wrote the newest workspace state the walk has seen.
fn last_event(walk: &Walk) -> Option<chrono::DateTime<Utc>> {
    walk.updates
        .as_ref()
        .and_then(|u| u.latest.as_ref())
        .and_then(|w| w.updated_at)
}

/// Moves the parts a phase timed apart (`ssh`: handshake, proxy start-up) onto its record.
fn keep_sub_timings(report: &mut WorkspaceReport, walk: &mut Walk) {
    if let Some(rec) = report.phases.last_mut() {
        rec.sub_timings_ms.append(&mut walk.sub_timings);
    }
}

/// Runs one phase under its timeout and the given cancellation, in `span` (from
/// [`phase_span`]), records it, and says how it ended. `since`: where the previous phase
/// ended on an event, so that phases tile the workspace's timeline.
///
/// Boxed: a workspace's task then holds only the phase running now, not room for the largest
/// phase all along (30 KiB a workspace otherwise, 300 MiB at 10,000 concurrent).
/// How a phase ended, for the walk to go on.
struct PhaseEnd {
    ok: bool,
    /// The instant the phase ended, when the event that decided it set that
    /// ([`Walk::ended_on_event`](phases::Walk::ended_on_event)).
    on_event: Option<Instant>,
}

fn timed<'a>(
    ctx: &'a RunCtx,
    report: &'a mut WorkspaceReport,
    phase: (Phase, tracing::Span),
    cancel: &'a CancellationToken,
    since: Option<Instant>,
    fut: impl std::future::Future<Output = Result<(), PhaseError>> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = PhaseEnd> + Send + 'a>> {
    Box::pin(timed_unboxed(ctx, report, phase, cancel, since, fut))
}

async fn timed_unboxed(
    ctx: &RunCtx,
    report: &mut WorkspaceReport,
    (phase, span): (Phase, tracing::Span),
    cancel: &CancellationToken,
    since: Option<Instant>,
    fut: impl std::future::Future<Output = Result<(), PhaseError>>,
) -> PhaseEnd {
    let limit = ctx.scenario.timeouts.of(phase);
    let trace_id = crate::telemetry::trace_id(&span);
    let coder = PhaseTraces(std::sync::Arc::new(std::sync::Mutex::new(
        report.last_coder_trace.clone(),
    )));
    let now = Instant::now();
    let clock = since.filter(|s| *s <= now).unwrap_or(now);
    let started_at = report.clock.at(clock);
    let fut = PHASE_TRACES.scope(
        coder.clone(),
        crate::coder::trace::PHASE_DEADLINE.scope(
            tokio::time::Instant::now() + limit,
            tokio::time::timeout(limit, phases::measuring(fut)),
        ),
    );
    let mut measured = None;
    let result = tokio::select! {
        r = fut.instrument(span.clone()) => match r {
            Ok((r, m)) => {
                measured = m;
                r
            }
            Err(_) => Err(PhaseError::new(
                Reason::Timeout,
                format!("{phase} did not finish within {}", humantime::format_duration(limit)),
            )),
        },
        _ = cancel.cancelled() => Err(PhaseError::new(Reason::Canceled, format!("{phase} was canceled: scaletestd is stopping"))),
    };
    let (started_at, duration) = match measured {
        Some(phases::Ended::Between(from, to)) => (from, (to - from).to_std().unwrap_or_default()),
        Some(phases::Ended::At(at)) => (started_at, at.saturating_duration_since(clock)),
        None => (started_at, clock.elapsed()),
    };
    let coder_trace_id = coder.get();
    report.last_coder_trace = coder_trace_id.clone();
    let record = match &result {
        Ok(_) => PhaseRecord {
            phase,
            started_at,
            duration,
            ok: true,
            reason: None,
            error: None,
            trace_id,
            coder_trace_id,
            sub_timings_ms: Default::default(),
            event_at: None,
        },
        Err(e) => {
            span.record("error.reason", e.reason.as_str());
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", e.message.as_str());
            tracing::warn!(parent: &span, scenario = %ctx.scenario.name, workspace = %report.name, %phase, reason = %e.reason, error = %e.message, "failed");
            PhaseRecord {
                phase,
                started_at,
                duration,
                ok: false,
                reason: Some(e.reason),
                error: Some(e.message.clone()),
                trace_id,
                coder_trace_id,
                sub_timings_ms: Default::default(),
                event_at: None,
            }
        }
    };
    if phase.def().clock == phases::Clock::Coders {
        coders_interval(&span, &record);
    }
    drop(span); // ends the phase's span now, not when a clone goes away
    ctx.observer
        .phase_done(&ctx.scenario.name, &report.name, &record);
    report.phases.push(record);
    PhaseEnd {
        ok: result.is_ok(),
        on_event: matches!(measured, Some(phases::Ended::At(_))).then(|| clock + duration),
    }
}
