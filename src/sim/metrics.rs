//! coderd's own Prometheus series, as a real Coder serves them on `CODER_PROMETHEUS_ADDRESS`
//! (names and labels from Coder's docs/admin/integrations/prometheus.md), so dashboards'
//! "Coder server" panels are tested against the simulator like the rest.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::{Buckets, PHASE_BUCKETS, REQUEST_BUCKETS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Processed {
    pub code: String,
    pub method: String,
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodPath {
    pub method: String,
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Path {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Provisioner {
    pub provisioner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobTiming {
    pub provisioner: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentsUp {
    pub template_name: String,
    pub template_version: String,
    pub username: String,
    pub workspace_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Builds {
    pub status: String,
    pub template_name: String,
    pub template_version: String,
    pub workspace_name: String,
    pub workspace_owner: String,
    pub workspace_transition: String,
}

pub struct CoderdMetrics {
    registry: Registry,
    pub requests: Family<Processed, Counter>,
    pub latencies: Family<MethodPath, Histogram, Buckets>,
    pub concurrent: Family<MethodPath, Gauge>,
    pub websockets: Family<Path, Gauge>,
    pub jobs_current: Family<Provisioner, Gauge>,
    pub daemons: Gauge,
    pub job_timings: Family<JobTiming, Histogram, Buckets>,
    pub agents_up: Family<AgentsUp, Gauge>,
    pub builds: Family<Builds, Counter>,
}

impl CoderdMetrics {
    pub fn new(provisioners: usize) -> CoderdMetrics {
        let mut r = Registry::default();
        let requests = Family::default();
        r.register(
            "coderd_api_requests_processed",
            "The total number of processed API requests",
            requests.clone(),
        );
        let latencies = Family::new_with_constructor(Buckets::of(&REQUEST_BUCKETS));
        r.register(
            "coderd_api_request_latencies_seconds",
            "Latency distribution of requests in seconds.",
            latencies.clone(),
        );
        let concurrent = Family::default();
        r.register(
            "coderd_api_concurrent_requests",
            "The number of concurrent API requests.",
            concurrent.clone(),
        );
        let websockets = Family::default();
        r.register(
            "coderd_api_concurrent_websockets",
            "The total number of concurrent API websockets.",
            websockets.clone(),
        );
        let jobs_current = Family::default();
        r.register(
            "coderd_provisionerd_jobs_current",
            "The number of currently running provisioner jobs.",
            jobs_current.clone(),
        );
        let daemons = Gauge::default();
        r.register(
            "coderd_provisionerd_num_daemons",
            "The number of provisioner daemons.",
            daemons.clone(),
        );
        let job_timings = Family::new_with_constructor(Buckets::of(&PHASE_BUCKETS));
        r.register(
            "coderd_provisionerd_job_timings_seconds",
            "The provisioner job time duration in seconds.",
            job_timings.clone(),
        );
        let agents_up = Family::default();
        r.register(
            "coderd_agents_up",
            "The number of active agents per workspace.",
            agents_up.clone(),
        );
        let builds = Family::default();
        r.register(
            "coderd_workspace_builds",
            "The number of workspaces started, updated, or deleted.",
            builds.clone(),
        );
        daemons.set(provisioners as i64);
        let _ = jobs_current.get_or_create(&Provisioner {
            provisioner: "terraform".into(),
        });
        CoderdMetrics {
            registry: r,
            requests,
            latencies,
            concurrent,
            websockets,
            jobs_current,
            daemons,
            job_timings,
            agents_up,
            builds,
        }
    }

    /// A job got a provisioner (`+1`) or finished (`-1`).
    pub fn jobs_running(&self, delta: i64) {
        self.jobs_current
            .get_or_create(&Provisioner {
                provisioner: "terraform".into(),
            })
            .inc_by(delta);
    }

    /// The classic text exposition, as Coder's Go client serves it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        crate::metrics::to_classic_text(&out)
    }
}
