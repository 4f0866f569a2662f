//! The Prometheus series of DESIGN.md, and their exposition.
//!
//! Built on `prometheus-client` rather than the `prometheus` crate because the design needs
//! trace-id exemplars on histograms, which only the former supports. It encodes OpenMetrics
//! only; the classic text format (the default for scrapers that do not ask for OpenMetrics,
//! and what `promtool check metrics` reads) is derived from it by [`to_classic_text`].
//!
//! Every series a dashboard or an absence alert needs exists from start-up with value 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::Scenario;
use crate::phases::{Phase, PhaseRecord, Reason};
use crate::runner::{RunObserver, RunReport, RunResult, WorkspaceReport};

/// 5 ms to 30 min, as DESIGN.md asks.
pub const PHASE_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1200.0, 1800.0,
];
/// API calls: 1 ms to 1 min.
pub const REQUEST_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];
/// Echo round trips: 0.5 ms to 10 s.
pub const TRAFFIC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Build stages as labelled in `scaletest_build_stage_duration_seconds`.
pub const STAGES: [&str; 7] = [
    "queue",
    "init",
    "plan",
    "graph",
    "apply",
    "agent_connect",
    "agent_startup",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub scenario: String,
    pub phase: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub scenario: String,
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub scenario: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub scenario: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub scenario: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScenarioLabel {
    pub scenario: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfoLabels {
    pub version: String,
    pub coder_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub scenario: String,
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub scenario: String,
    pub transport: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficErrorLabels {
    pub scenario: String,
    pub transport: String,
    pub reason: String,
}

/// The exemplar of an observation: the trace it belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

/// Builds histograms with fixed buckets for a family.
#[derive(Clone)]
pub struct Buckets(&'static [f64]);

impl Buckets {
    pub fn of(b: &'static [f64]) -> Buckets {
        Buckets(b)
    }
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl MetricConstructor<HistogramWithExemplars<TraceExemplar>> for Buckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceExemplar> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every series of the daemon.
pub struct Metrics {
    registry: Registry,
    pub phase_duration: Family<PhaseLabels, HistogramWithExemplars<TraceExemplar>, Buckets>,
    pub phase_failures: Family<FailureLabels, Counter>,
    pub build_stage: Family<StageLabels, Histogram, Buckets>,
    pub runs: Family<ResultLabels, Counter>,
    pub runs_skipped: Family<SkipLabels, Counter>,
    pub run_duration: Family<ScenarioLabel, Histogram, Buckets>,
    pub workspaces: Family<ResultLabels, Counter>,
    pub in_flight: Family<ScenarioLabel, Gauge>,
    pub last_run: Family<ScenarioLabel, FGauge>,
    pub last_success: Family<ScenarioLabel, FGauge>,
    pub orphaned: Family<ScenarioLabel, Gauge>,
    pub cleanup_deleted: Family<ScenarioLabel, Counter>,
    pub coder_requests: Family<RequestLabels, Histogram, Buckets>,
    pub coder_up: Gauge,
    pub build_info: Family<BuildInfoLabels, Gauge>,
    pub spans_dropped: Counter,
    pub traffic_sessions: Family<TransportLabels, Gauge>,
    pub traffic_bytes: Family<DirectionLabels, Counter>,
    pub traffic_latency: Family<TransportLabels, HistogramWithExemplars<TraceExemplar>, Buckets>,
    pub traffic_errors: Family<TrafficErrorLabels, Counter>,
    process: Process,
    /// Unix milliseconds of the last answer from Coder (any status).
    last_answer_ms: AtomicI64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::default();
        let phase_duration = Family::new_with_constructor(Buckets(&PHASE_BUCKETS));
        r.register(
            "scaletest_phase_duration_seconds",
            "Duration of one phase of one workspace",
            phase_duration.clone(),
        );
        let phase_failures = Family::default();
        r.register(
            "scaletest_phase_failures",
            "Failed phases by reason",
            phase_failures.clone(),
        );
        let build_stage = Family::new_with_constructor(Buckets(&PHASE_BUCKETS));
        r.register(
            "scaletest_build_stage_duration_seconds",
            "Duration of a build stage, from Coder's build timings and the job's queue wait",
            build_stage.clone(),
        );
        let runs = Family::default();
        r.register("scaletest_runs", "Runs by result", runs.clone());
        let runs_skipped = Family::default();
        r.register(
            "scaletest_runs_skipped",
            "Scheduled runs not started, by reason",
            runs_skipped.clone(),
        );
        let run_duration = Family::new_with_constructor(Buckets(&PHASE_BUCKETS));
        r.register(
            "scaletest_run_duration_seconds",
            "Duration of a whole run",
            run_duration.clone(),
        );
        let workspaces = Family::default();
        r.register(
            "scaletest_workspaces",
            "Workspaces walked, by result",
            workspaces.clone(),
        );
        let in_flight = Family::default();
        r.register(
            "scaletest_workspaces_in_flight",
            "Workspaces being walked now",
            in_flight.clone(),
        );
        let last_run = Family::default();
        r.register(
            "scaletest_last_run_timestamp_seconds",
            "Unix time the last run of the scenario ended",
            last_run.clone(),
        );
        let last_success = Family::default();
        r.register(
            "scaletest_last_success_timestamp_seconds",
            "Unix time the last fully successful run of the scenario ended",
            last_success.clone(),
        );
        let orphaned = Family::default();
        r.register(
            "scaletest_orphaned_workspaces",
            "Workspaces of ours left behind, found by the last sweep",
            orphaned.clone(),
        );
        let cleanup_deleted = Family::default();
        r.register(
            "scaletest_cleanup_deleted",
            "Leftover workspaces deleted by sweeps",
            cleanup_deleted.clone(),
        );
        let coder_requests = Family::new_with_constructor(Buckets(&REQUEST_BUCKETS));
        r.register(
            "scaletest_coder_requests_duration_seconds",
            "Coder API calls seen from scaletestd, by templated route",
            coder_requests.clone(),
        );
        let coder_up = Gauge::default();
        r.register(
            "scaletest_coder_up",
            "1 when the last call to Coder got an answer",
            coder_up.clone(),
        );
        let build_info = Family::default();
        r.register(
            "scaletest_build_info",
            "scaletestd and Coder versions",
            build_info.clone(),
        );
        let spans_dropped = Counter::default();
        r.register(
            "scaletest_spans_dropped",
            "Spans dropped because the export queue was full or the collector failed",
            spans_dropped.clone(),
        );
        let traffic_sessions = Family::default();
        r.register(
            "scaletest_traffic_sessions",
            "Open traffic sessions",
            traffic_sessions.clone(),
        );
        let traffic_bytes = Family::default();
        r.register(
            "scaletest_traffic_bytes",
            "Traffic bytes by direction",
            traffic_bytes.clone(),
        );
        let traffic_latency = Family::new_with_constructor(Buckets(&TRAFFIC_BUCKETS));
        r.register(
            "scaletest_traffic_latency_seconds",
            "Echo round trip of one traffic tick",
            traffic_latency.clone(),
        );
        let traffic_errors = Family::default();
        r.register(
            "scaletest_traffic_errors",
            "Traffic session errors by reason",
            traffic_errors.clone(),
        );
        let process = Process::register(&mut r);

        let m = Metrics {
            registry: r,
            phase_duration,
            phase_failures,
            build_stage,
            runs,
            runs_skipped,
            run_duration,
            workspaces,
            in_flight,
            last_run,
            last_success,
            orphaned,
            cleanup_deleted,
            coder_requests,
            coder_up,
            build_info,
            spans_dropped,
            traffic_sessions,
            traffic_bytes,
            traffic_latency,
            traffic_errors,
            process,
            last_answer_ms: AtomicI64::new(0),
        };
        m.set_build_info("unknown");
        Arc::new(m)
    }

    /// Creates every series of the scenario at zero, so `rate()` and absence alerts work
    /// before the first run.
    pub fn declare(&self, sc: &Scenario) {
        let name = &sc.name;
        let label = ScenarioLabel { scenario: s(name) };
        for p in &sc.phases {
            for outcome in ["success", "failure"] {
                let _ = self.phase_duration.get_or_create(&PhaseLabels {
                    scenario: s(name),
                    phase: s(p),
                    outcome: s(outcome),
                });
            }
            for reason in Reason::ALL {
                let _ = self.phase_failures.get_or_create(&FailureLabels {
                    scenario: s(name),
                    phase: s(p),
                    reason: s(reason),
                });
            }
        }
        if sc.phases.contains(&Phase::Build) {
            for stage in STAGES {
                let _ = self.build_stage.get_or_create(&StageLabels {
                    scenario: s(name),
                    stage: s(stage),
                });
            }
        }
        for result in ["success", "partial", "failure", "aborted"] {
            let _ = self.runs.get_or_create(&ResultLabels {
                scenario: s(name),
                result: s(result),
            });
        }
        for reason in ["overlap", "shutdown"] {
            let _ = self.runs_skipped.get_or_create(&SkipLabels {
                scenario: s(name),
                reason: s(reason),
            });
        }
        for result in ["succeeded", "failed"] {
            let _ = self.workspaces.get_or_create(&ResultLabels {
                scenario: s(name),
                result: s(result),
            });
        }
        if sc.kind == crate::config::ScenarioKind::Traffic {
            for t in &sc.traffic.transports {
                let tl = TransportLabels {
                    scenario: s(name),
                    transport: s(t.as_str()),
                };
                let _ = self.traffic_sessions.get_or_create(&tl);
                let _ = self.traffic_latency.get_or_create(&tl);
                for direction in ["sent", "received"] {
                    let _ = self.traffic_bytes.get_or_create(&DirectionLabels {
                        scenario: s(name),
                        transport: s(t.as_str()),
                        direction: s(direction),
                    });
                }
                for reason in Reason::ALL {
                    let _ = self.traffic_errors.get_or_create(&TrafficErrorLabels {
                        scenario: s(name),
                        transport: s(t.as_str()),
                        reason: s(reason),
                    });
                }
            }
        }
        let _ = self.run_duration.get_or_create(&label);
        let _ = self.in_flight.get_or_create(&label);
        let _ = self.last_run.get_or_create(&label);
        let _ = self.last_success.get_or_create(&label);
        let _ = self.orphaned.get_or_create(&label);
        let _ = self.cleanup_deleted.get_or_create(&label);
    }

    pub fn set_build_info(&self, coder_version: &str) {
        self.build_info.clear();
        self.build_info
            .get_or_create(&BuildInfoLabels {
                version: s(env!("CARGO_PKG_VERSION")),
                coder_version: s(coder_version),
            })
            .set(1);
    }

    /// A run ended.
    pub fn run_done(&self, r: &RunReport) {
        let label = ScenarioLabel {
            scenario: r.scenario.clone(),
        };
        self.runs
            .get_or_create(&ResultLabels {
                scenario: r.scenario.clone(),
                result: s(r.result().as_str()),
            })
            .inc();
        self.run_duration
            .get_or_create(&label)
            .observe(r.elapsed.as_secs_f64());
        let now = unix_now();
        self.last_run.get_or_create(&label).set(now);
        if r.result() == RunResult::Success {
            self.last_success.get_or_create(&label).set(now);
        }
    }

    pub fn run_skipped(&self, scenario: &str, reason: &str) {
        self.runs_skipped
            .get_or_create(&SkipLabels {
                scenario: s(scenario),
                reason: s(reason),
            })
            .inc();
    }

    pub fn swept(&self, scenario: &str, found: usize, deleted: usize) {
        let label = ScenarioLabel {
            scenario: s(scenario),
        };
        self.orphaned.get_or_create(&label).set(found as i64);
        self.cleanup_deleted
            .get_or_create(&label)
            .inc_by(deleted as u64);
    }

    /// When Coder last answered, if ever.
    pub fn last_answer(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let ms = self.last_answer_ms.load(Ordering::Relaxed);
        (ms > 0)
            .then(|| chrono::DateTime::from_timestamp_millis(ms))
            .flatten()
    }

    /// The exposition: OpenMetrics with exemplars, or the classic text format.
    pub fn encode(&self, openmetrics: bool) -> String {
        self.process.refresh();
        let dropped = crate::telemetry::spans_dropped();
        let seen = self.spans_dropped.get();
        if dropped > seen {
            self.spans_dropped.inc_by(dropped - seen);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        if openmetrics {
            out
        } else {
            to_classic_text(&out)
        }
    }
}

impl RunObserver for Metrics {
    fn workspace_started(&self, scenario: &str, _workspace: &str) {
        self.in_flight
            .get_or_create(&ScenarioLabel {
                scenario: s(scenario),
            })
            .inc();
    }

    fn phase_done(&self, scenario: &str, _workspace: &str, r: &PhaseRecord) {
        let outcome = if r.ok { "success" } else { "failure" };
        let exemplar = r
            .trace_id
            .clone()
            .map(|trace_id| TraceExemplar { trace_id });
        self.phase_duration
            .get_or_create(&PhaseLabels {
                scenario: s(scenario),
                phase: s(r.phase),
                outcome: s(outcome),
            })
            .observe(r.duration.as_secs_f64(), exemplar, None);
        if let Some(reason) = r.reason {
            self.phase_failures
                .get_or_create(&FailureLabels {
                    scenario: s(scenario),
                    phase: s(r.phase),
                    reason: s(reason),
                })
                .inc();
        }
    }

    fn workspace_done(&self, scenario: &str, w: &WorkspaceReport) {
        let result = if w.ok { "succeeded" } else { "failed" };
        self.workspaces
            .get_or_create(&ResultLabels {
                scenario: s(scenario),
                result: s(result),
            })
            .inc();
        self.in_flight
            .get_or_create(&ScenarioLabel {
                scenario: s(scenario),
            })
            .dec();
        for st in &w.build_stages {
            self.build_stage
                .get_or_create(&StageLabels {
                    scenario: s(scenario),
                    stage: s(st.stage),
                })
                .observe(st.duration().as_secs_f64());
        }
    }
}

/// A traffic session's instruments, resolved once: each tick only adds to them.
struct SessionInstruments {
    scenario: String,
    transport: crate::config::Transport,
    sessions: Gauge,
    sent: Counter,
    received: Counter,
    latency: HistogramWithExemplars<TraceExemplar>,
    exemplar: Option<TraceExemplar>,
    errors: Family<TrafficErrorLabels, Counter>,
}

impl crate::traffic::SessionObserver for SessionInstruments {
    fn opened(&self) {
        self.sessions.inc();
    }

    fn closed(&self) {
        self.sessions.dec();
    }

    fn sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }

    fn echoed(&self, bytes: u64, latency_seconds: f64) {
        self.received.inc_by(bytes);
        self.latency
            .observe(latency_seconds, self.exemplar.clone(), None);
    }

    fn failed(&self, reason: Reason) {
        self.errors
            .get_or_create(&TrafficErrorLabels {
                scenario: self.scenario.clone(),
                transport: self.transport.as_str().into(),
                reason: reason.as_str().into(),
            })
            .inc();
    }
}

impl crate::traffic::TrafficObserver for Metrics {
    fn session(
        &self,
        scenario: &str,
        transport: crate::config::Transport,
        trace_id: Option<String>,
    ) -> Box<dyn crate::traffic::SessionObserver> {
        let tl = TransportLabels {
            scenario: scenario.into(),
            transport: transport.as_str().into(),
        };
        let bytes = |direction: &str| {
            self.traffic_bytes
                .get_or_create(&DirectionLabels {
                    scenario: scenario.into(),
                    transport: transport.as_str().into(),
                    direction: direction.into(),
                })
                .clone()
        };
        Box::new(SessionInstruments {
            scenario: scenario.into(),
            transport,
            sessions: self.traffic_sessions.get_or_create(&tl).clone(),
            sent: bytes("sent"),
            received: bytes("received"),
            latency: self.traffic_latency.get_or_create(&tl).clone(),
            exemplar: trace_id.map(|trace_id| TraceExemplar { trace_id }),
            errors: self.traffic_errors.clone(),
        })
    }
}

impl crate::coder::ApiObserver for Metrics {
    fn on_response(
        &self,
        method: &reqwest::Method,
        route: &'static str,
        code: Option<u16>,
        elapsed: Duration,
    ) {
        let code_label = code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "error".into());
        self.coder_requests
            .get_or_create(&RequestLabels {
                method: s(method),
                route: s(route),
                code: code_label,
            })
            .observe(elapsed.as_secs_f64());
        if code.is_some() {
            self.coder_up.set(1);
            self.last_answer_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        } else {
            self.coder_up.set(0);
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// OpenMetrics text → Prometheus classic text (format 0.0.4): no exemplars, no `# EOF`, no
/// `# UNIT`, and counter families named with their `_total` suffix as classic parsers expect.
pub fn to_classic_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut lines = om.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // HELP comes right before its TYPE: look at the next line.
            let counter = lines
                .peek()
                .and_then(|l| l.strip_prefix("# TYPE "))
                .is_some_and(|t| t.strip_suffix(" counter") == Some(name));
            if counter {
                out.push_str(&format!("# HELP {name}_total {help}\n"));
                continue;
            }
        }
        // Drop an exemplar: ` # {labels} value [timestamp]` after the sample.
        let sample = match line.find(" # {") {
            Some(i) if !line.starts_with('#') => &line[..i],
            _ => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// Process series (Linux: from /proc/self), refreshed at every scrape.
struct Process {
    rss: Gauge,
    vsize: Gauge,
    fds: Gauge,
    cpu: Counter<f64, AtomicU64>,
    start: FGauge,
    threads: Gauge,
    /// Tasks alive in the async runtime: a leak of tasks shows here before it shows in RSS.
    tasks: Gauge,
}

impl Process {
    fn register(r: &mut Registry) -> Process {
        let p = Process {
            rss: Gauge::default(),
            vsize: Gauge::default(),
            fds: Gauge::default(),
            cpu: Counter::default(),
            start: Gauge::default(),
            threads: Gauge::default(),
            tasks: Gauge::default(),
        };
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.rss.clone(),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.vsize.clone(),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.fds.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time in seconds",
            p.cpu.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            p.start.clone(),
        );
        r.register("process_threads", "Number of OS threads", p.threads.clone());
        r.register(
            "scaletest_runtime_tasks",
            "Tasks alive in scaletestd's async runtime",
            p.tasks.clone(),
        );
        p.start.set(unix_now());
        p
    }

    fn refresh(&self) {
        let Some(stat) = read_proc_stat() else { return };
        self.rss.set(stat.rss_bytes as i64);
        self.vsize.set(stat.vsize_bytes as i64);
        self.threads.set(stat.threads as i64);
        let delta = stat.cpu_seconds - self.cpu.get();
        if delta > 0.0 {
            self.cpu.inc_by(delta);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(dir.count() as i64);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
    }
}

/// What /proc/<pid>/stat says of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub rss_bytes: u64,
    pub vsize_bytes: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
}

pub fn read_proc_stat() -> Option<ProcStat> {
    read_proc_stat_of("self")
}

/// [`read_proc_stat`] of another process (`pid`, or `self`).
pub fn read_proc_stat_of(pid: &str) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, threads 20, vsize 23, rss 24.
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    let ticks = 100.0; // USER_HZ is 100 on every Linux this runs on
    let page = 4096;
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / ticks,
        threads: num(20)?,
        vsize_bytes: num(23)?,
        rss_bytes: num(24)? * page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_drops_exemplars_and_names_counters_with_total() {
        let m = Metrics::new();
        let rec = PhaseRecord {
            phase: Phase::Build,
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(1500),
            ok: false,
            reason: Some(Reason::BuildFailed),
            error: Some("x".into()),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            coder_trace_id: None,
            sub_timings_ms: Default::default(),
        };
        m.phase_done("s", "w", &rec);
        let om = m.encode(true);
        assert!(
            om.contains("# {trace_id=\"0af7651916cd43dd8448eb211c80319c\"} 1.5"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        let text = m.encode(false);
        assert!(
            !text.contains("trace_id") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE scaletest_phase_failures_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "scaletest_phase_failures_total{scenario=\"s\",phase=\"build\",reason=\"build_failed\"} 1\n"
        ));
        assert!(text.contains("scaletest_phase_duration_seconds_count{scenario=\"s\",phase=\"build\",outcome=\"failure\"} 1\n"));
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let st = read_proc_stat().expect("Linux /proc");
        assert!(st.rss_bytes > 1 << 20 && st.threads >= 1);
    }
}
