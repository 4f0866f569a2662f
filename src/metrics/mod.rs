//! The Prometheus series of DESIGN.md, and their exposition.
//!
//! Built on `prometheus-client` rather than the `prometheus` crate because the design needs
//! trace-id exemplars on histograms, which only the former supports. It encodes OpenMetrics
//! only; the classic text format (the default for scrapers that do not ask for OpenMetrics,
//! and what `promtool check metrics` reads) is derived from it by [`to_classic_text`].
//!
//! Every series a dashboard or an absence alert needs exists from start-up with value 0.

mod observe;
mod process;
mod text;

use process::Process;
pub use process::{ProcStat, live_heap_bytes, read_proc_stat, read_proc_stat_of};
pub use text::to_classic_text;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::Scenario;
use crate::phases::{PhaseRecord, Reason};
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
    /// The build's transition: `start` (first builds and restarts) or `stop`.
    pub transition: String,
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
    /// Absent until Coder's answers tell (a family with one unlabelled series once set).
    pub coder_tracing: Family<Vec<(String, String)>, Gauge>,
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
        let coder_tracing = Family::default();
        r.register(
            "scaletest_coder_tracing",
            "1 when Coder records server spans for our requests (its X-Span-ID is its own), 0 when it only echoes ours",
            coder_tracing.clone(),
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
            coder_tracing,
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
        // The transitions of the builds the scenario's phases wait for (the registry says).
        let mut transitions: Vec<&str> = sc.phases.iter().filter_map(|p| p.def().build).collect();
        transitions.sort_unstable();
        transitions.dedup();
        for transition in transitions {
            for stage in STAGES {
                // A stop build connects no agent.
                if transition == "stop" && stage.starts_with("agent_") {
                    continue;
                }
                let _ = self.build_stage.get_or_create(&StageLabels {
                    scenario: s(name),
                    stage: s(stage),
                    transition: s(transition),
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
    /// What `scaletest_coder_tracing` says: none until Coder's answers told.
    pub fn coder_traces_seen(&self) -> Option<bool> {
        self.coder_tracing.get(&Vec::new()).map(|g| g.get() == 1)
    }

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

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::phases::Phase;

    #[test]
    fn coder_tracing_is_absent_until_an_answer_tells() {
        use crate::coder::ApiObserver;
        let m = Metrics::new();
        for openmetrics in [false, true] {
            let text = m.encode(openmetrics);
            assert!(!text.contains("scaletest_coder_tracing"), "{text}");
        }
        m.coder_tracing(false);
        assert!(m.encode(false).contains("\nscaletest_coder_tracing 0\n"));
        m.coder_tracing(true);
        assert!(m.encode(true).contains("\nscaletest_coder_tracing 1\n"));
    }

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
            event_at: None,
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
}
