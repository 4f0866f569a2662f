//! Where a build spent its time, read once it finished: the job's queue wait (`started_at -
//! created_at`) and, from Coder's build timings, the provisioner stages and the agent's
//! connection and start-up scripts, each with Coder's own timestamps; reported as
//! [`StageTiming`]s and as spans under the phases that waited. Shared by every phase that
//! waits for a build ([`super::PhaseDef::build`]); not a phase itself.

use std::time::Duration;

use serde::Serialize;

use crate::coder::{Client, ProvisionerJob, Time, TimingStage, WorkspaceBuildTimings};

/// One stage of a build, with Coder's start and end times.
#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    /// `queue`, `init`, `plan`, `graph`, `apply`, `agent_connect` or `agent_startup`.
    pub stage: &'static str,
    /// The build's transition: `start` (the first build, and `start` after `stop`) or `stop`.
    pub transition: &'static str,
    pub started_at: Time,
    pub ended_at: Time,
    /// A script's name, for `agent_startup`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl StageTiming {
    pub fn duration(&self) -> Duration {
        (self.ended_at - self.started_at)
            .to_std()
            .unwrap_or_default()
    }
}

/// The stages of a start build: the queue wait from the job, then Coder's build timings
/// with each stage's resources merged into one span from its first start to its last end.
pub fn stages(
    job: &ProvisionerJob,
    timings: &WorkspaceBuildTimings,
    transition: &'static str,
) -> Vec<StageTiming> {
    let mut out = Vec::new();
    if let Some(started) = job.started_at {
        out.push(StageTiming {
            stage: "queue",
            transition,
            started_at: job.created_at,
            ended_at: started,
            name: String::new(),
        });
    }
    for (stage, name) in [
        (TimingStage::Init, "init"),
        (TimingStage::Plan, "plan"),
        (TimingStage::Graph, "graph"),
        (TimingStage::Apply, "apply"),
    ] {
        let of_stage = timings
            .provisioner_timings
            .iter()
            .filter(|t| t.stage == stage);
        let start = of_stage.clone().map(|t| t.started_at).min();
        let end = of_stage.map(|t| t.ended_at).max();
        if let (Some(started_at), Some(ended_at)) = (start, end) {
            out.push(StageTiming {
                stage: name,
                transition,
                started_at,
                ended_at,
                name: String::new(),
            });
        }
    }
    for t in &timings.agent_connection_timings {
        out.push(StageTiming {
            stage: "agent_connect",
            transition,
            started_at: t.started_at,
            ended_at: t.ended_at,
            name: t.workspace_agent_name.clone(),
        });
    }
    for t in timings
        .agent_script_timings
        .iter()
        .filter(|t| t.stage == TimingStage::Start)
    {
        out.push(StageTiming {
            stage: "agent_startup",
            transition,
            started_at: t.started_at,
            ended_at: t.ended_at,
            name: t.display_name.clone(),
        });
    }
    out
}

/// Reads a build's timings; a failure here is logged, never a failed phase.
pub async fn fetch(
    client: &Client,
    build: uuid::Uuid,
    job: &ProvisionerJob,
    transition: &'static str,
) -> Vec<StageTiming> {
    match client.build_timings(build).await {
        Ok(t) => stages(job, &t, transition),
        Err(e) => {
            tracing::warn!(build.id = %build, error = %e, "cannot read build timings");
            stages(job, &WorkspaceBuildTimings::default(), transition)
        }
    }
}

/// Emits the stages as spans with Coder's own start and end times: the queue wait and the
/// provisioner stages under `phase.build`, the agent's connection and start-up scripts under
/// `phase.agent` (or `phase.build` when the scenario has no agent phase).
pub fn spans(
    build: &opentelemetry::Context,
    agent: Option<&opentelemetry::Context>,
    stages: &[StageTiming],
) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
    let tracer = opentelemetry::global::tracer("scaletestd");
    for st in stages {
        let (name, parent) = match st.stage {
            "agent_connect" => ("agent.connect", agent.unwrap_or(build)),
            "agent_startup" => ("agent.script", agent.unwrap_or(build)),
            other => (other, build),
        };
        let name = if name.starts_with("agent.") {
            name.to_string()
        } else {
            format!("build.{name}")
        };
        let mut attrs = vec![KeyValue::new("coder.stage", st.stage)];
        if !st.name.is_empty() {
            attrs.push(KeyValue::new("coder.name", st.name.clone()));
        }
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(std::time::SystemTime::from(st.started_at))
            .with_attributes(attrs)
            .start_with_context(&tracer, parent);
        span.end_with_timestamp(std::time::SystemTime::from(st.ended_at));
    }
}
