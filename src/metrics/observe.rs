//! The metrics as an observer: of runs and phases ([`RunObserver`]), of every API call
//! ([`ApiObserver`]) and of traffic sessions ([`TrafficObserver`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::*;
use crate::coder::ApiObserver;
use crate::traffic::{SessionObserver, TrafficObserver};

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
                    transition: s(st.transition),
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

impl SessionObserver for SessionInstruments {
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

impl TrafficObserver for Metrics {
    fn session(
        &self,
        scenario: &str,
        transport: crate::config::Transport,
        trace_id: Option<String>,
    ) -> Box<dyn SessionObserver> {
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

impl ApiObserver for Metrics {
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

    fn coder_tracing(&self, traces: bool) {
        self.coder_tracing
            .get_or_create(&Vec::new())
            .set(i64::from(traces));
    }
}
