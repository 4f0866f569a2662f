//! What the simulator sends: Coder's API types with the fields a real coderd fills in
//! (codersdk, checked against Coder's OpenAPI spec in shared/coder-api/swagger.json), so the
//! client meets the whole shape it meets in production, not only the fields it reads.
//!
//! The client's own types (`crate::coder::types`) are a read model of these: the tests decode
//! everything the simulator sends with them, so the two cannot drift apart unnoticed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

// The enums are the client's own: one spelling of each value on both sides (the client's
// `Other` fallbacks are never sent).
pub use crate::coder::types::{
    Healthcheck, ProvisionerJobStatus, TimingStage, WorkspaceAgentLifecycle, WorkspaceAgentStatus,
    WorkspaceAppHealth, WorkspaceStatus, WorkspaceTransition,
};

pub type Time = DateTime<Utc>;

/// `codersdk.BuildInfoResponse`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildInfo {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub external_url: String,
    #[serde(default)]
    pub dashboard_url: String,
    #[serde(default)]
    pub deployment_id: String,
    pub telemetry: bool,
    pub workspace_proxy: bool,
    pub agent_api_version: String,
    pub provisioner_api_version: String,
    pub upgrade_message: String,
    pub webpush_public_key: String,
}

/// `codersdk.User` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    /// codersdk.MinimalUser `name,omitempty`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub email: String,
    pub created_at: Time,
    pub updated_at: Time,
    pub last_seen_at: Time,
    #[serde(default)]
    pub status: String,
    /// `password`, or `none` for a service account.
    pub login_type: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_service_account: bool,
    #[serde(default)]
    pub organization_ids: Vec<Uuid>,
    #[serde(default)]
    pub roles: Vec<SlimRole>,
    pub has_ai_seat: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlimRole {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub organization_id: String,
}

/// `codersdk.Organization` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub is_default: bool,
    pub icon: String,
    pub description: String,
    pub created_at: Time,
    pub updated_at: Time,
    pub default_org_member_roles: Vec<String>,
}

/// `codersdk.Template` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    pub organization_id: Uuid,
    #[serde(default)]
    pub organization_name: String,
    pub active_version_id: Uuid,
    #[serde(default)]
    pub provisioner: String,
    pub created_at: Time,
    pub updated_at: Time,
    pub created_by_id: Uuid,
    pub created_by_name: String,
    #[serde(flatten)]
    pub inert: InertTemplateFields,
}

/// Fields of `codersdk.Template` (v2.36.1) the simulator has no behaviour for, at a new
/// template's values as a real coderd sends them (compared by tests/it/external/coder/walk.rs).
#[derive(Debug, Clone, Serialize)]
pub struct InertTemplateFields {
    pub organization_display_name: String,
    pub organization_icon: String,
    pub active_user_count: i64,
    pub build_time_stats: BTreeMap<&'static str, BuildTimeStat>,
    pub description: String,
    pub deprecated: bool,
    pub deprecation_message: String,
    pub deleted: bool,
    pub icon: String,
    pub default_ttl_ms: i64,
    pub activity_bump_ms: i64,
    pub time_til_autostop_notify_ms: i64,
    pub autostop_requirement: AutostopRequirement,
    pub autostart_requirement: AutostartRequirement,
    pub allow_user_autostart: bool,
    pub allow_user_autostop: bool,
    pub allow_user_cancel_workspace_jobs: bool,
    pub failure_ttl_ms: i64,
    pub time_til_dormant_ms: i64,
    pub time_til_dormant_autodelete_ms: i64,
    pub require_active_version: bool,
    pub max_port_share_level: &'static str,
    pub cors_behavior: &'static str,
    pub use_classic_parameter_flow: bool,
    pub disable_module_cache: bool,
}

/// `codersdk.TransitionStats`: no builds measured yet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BuildTimeStat {
    #[serde(rename = "P50")]
    pub p50: Option<i64>,
    #[serde(rename = "P95")]
    pub p95: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutostopRequirement {
    pub days_of_week: Vec<&'static str>,
    pub weeks: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AutostartRequirement {
    pub days_of_week: Vec<&'static str>,
}

impl InertTemplateFields {
    pub fn new(org_display_name: &str) -> InertTemplateFields {
        InertTemplateFields {
            organization_display_name: org_display_name.to_string(),
            organization_icon: String::new(),
            active_user_count: 0,
            build_time_stats: ["delete", "start", "stop"]
                .into_iter()
                .map(|t| (t, BuildTimeStat::default()))
                .collect(),
            description: String::new(),
            deprecated: false,
            deprecation_message: String::new(),
            deleted: false,
            icon: String::new(),
            default_ttl_ms: 0,
            activity_bump_ms: 3_600_000,
            time_til_autostop_notify_ms: 0,
            autostop_requirement: AutostopRequirement {
                days_of_week: vec![],
                weeks: 1,
            },
            autostart_requirement: AutostartRequirement {
                days_of_week: vec![
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday",
                ],
            },
            allow_user_autostart: true,
            allow_user_autostop: true,
            allow_user_cancel_workspace_jobs: false,
            failure_ttl_ms: 0,
            time_til_dormant_ms: 0,
            time_til_dormant_autodelete_ms: 0,
            require_active_version: false,
            max_port_share_level: "public",
            cors_behavior: "simple",
            use_classic_parameter_flow: false,
            disable_module_cache: false,
        }
    }
}

/// `codersdk.TemplateVersionParameter` (codersdk/templateversions.go).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateVersionParameter {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    pub description: String,
    pub description_plaintext: String,
    /// `string`, `number`, `bool` or `list(string)`.
    #[serde(rename = "type")]
    pub kind: String,
    pub form_type: String,
    pub mutable: bool,
    pub default_value: String,
    pub icon: String,
    pub options: Vec<TemplateVersionParameterOption>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub validation_error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub validation_regex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_max: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub validation_monotonic: String,
    pub required: bool,
    pub ephemeral: bool,
}

impl TemplateVersionParameter {
    /// A parameter with only its name, for `..` in literals.
    pub fn named(name: &str) -> Self {
        TemplateVersionParameter {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Whether it has a `validation` block (any rule in it).
    pub fn has_validation(&self) -> bool {
        !self.validation_regex.is_empty()
            || !self.validation_error.is_empty()
            || self.validation_min.is_some()
            || self.validation_max.is_some()
            || !self.validation_monotonic.is_empty()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateVersionParameterOption {
    pub name: String,
    pub description: String,
    pub value: String,
    pub icon: String,
}

/// `codersdk.ProvisionerJob`.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionerJob {
    pub id: Uuid,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_code: String,
    pub status: ProvisionerJobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<Uuid>,
    #[serde(default)]
    pub file_id: Uuid,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub queue_position: i64,
    #[serde(default)]
    pub queue_size: i64,
    #[serde(default)]
    pub organization_id: Uuid,
    #[serde(default, rename = "type")]
    pub kind: String,
    pub initiator_id: Uuid,
    pub input: JobInput,
    pub metadata: JobMetadata,
    pub logs_overflowed: bool,
}

/// `codersdk.ProvisionerJobInput` of a workspace build's job.
#[derive(Debug, Clone, Serialize)]
pub struct JobInput {
    pub workspace_build_id: Uuid,
}

/// `codersdk.ProvisionerJobMetadata`.
#[derive(Debug, Clone, Serialize)]
pub struct JobMetadata {
    pub template_version_name: String,
    pub template_id: Uuid,
    pub template_name: String,
    pub template_display_name: String,
    pub template_icon: String,
}

impl ProvisionerJob {
    /// Time spent waiting for a provisioner (`started_at - created_at`).
    pub fn queue_wait(&self) -> Option<std::time::Duration> {
        self.started_at
            .and_then(|s| (s - self.created_at).to_std().ok())
    }

    /// Time spent provisioning (`completed_at - started_at`).
    pub fn provisioning(&self) -> Option<std::time::Duration> {
        match (self.started_at, self.completed_at) {
            (Some(s), Some(c)) => (c - s).to_std().ok(),
            _ => None,
        }
    }
}

/// `codersdk.WorkspaceAgentHealth`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkspaceAgentHealth {
    #[serde(default)]
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `codersdk.WorkspaceApp` (codersdk/workspaceapps.go).
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceApp {
    pub id: Uuid,
    /// Where the agent reaches it; the proxy forwards there.
    pub url: String,
    pub external: bool,
    pub slug: String,
    pub display_name: String,
    pub subdomain: bool,
    /// The app's host under the wildcard, when the deployment has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subdomain_name: String,
    pub sharing_level: String,
    pub healthcheck: Healthcheck,
    pub health: WorkspaceAppHealth,
    pub hidden: bool,
    pub open_in: String,
    pub statuses: Vec<serde_json::Value>,
}

/// `codersdk.WorkspaceAgent` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceAgent {
    pub id: Uuid,
    pub name: String,
    pub created_at: Time,
    pub updated_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_connected_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
    pub status: WorkspaceAgentStatus,
    pub lifecycle_state: WorkspaceAgentLifecycle,
    #[serde(default)]
    pub resource_id: Uuid,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub directory: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub api_version: String,
    /// Set on a devcontainer sub-agent: the agent it runs under (codersdk.WorkspaceAgent
    /// `parent_id`, a `uuid.NullUUID`: null on a top-level agent, as a real coderd sends it;
    /// Coder's workspace health ignores such agents).
    pub parent_id: Option<Uuid>,
    #[serde(default)]
    pub apps: Vec<WorkspaceApp>,
    #[serde(default)]
    pub health: WorkspaceAgentHealth,
    #[serde(default)]
    pub connection_timeout_seconds: i64,
    #[serde(default)]
    pub troubleshooting_url: String,
    /// DERP latencies, once the agent has reported stats (omitted before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<BTreeMap<String, DerpRegion>>,
    #[serde(flatten)]
    pub inert: InertAgentFields,
}

/// `codersdk.DERPRegion`.
#[derive(Debug, Clone, Serialize)]
pub struct DerpRegion {
    pub preferred: bool,
    pub latency_ms: f64,
}

/// Fields of `codersdk.WorkspaceAgent` (v2.36.1) the simulator has no behaviour for, at the
/// values a real coderd sends for an agent without scripts or logs (compared key by key
/// against one, scripts/real-coder).
#[derive(Debug, Clone, Serialize)]
pub struct InertAgentFields {
    pub display_apps: Vec<String>,
    pub environment_variables: Option<BTreeMap<String, String>>,
    pub log_sources: Vec<()>,
    pub logs_length: i64,
    pub logs_overflowed: bool,
    pub scripts: Vec<()>,
    pub startup_script_behavior: &'static str,
    pub subsystems: Vec<String>,
}

impl Default for InertAgentFields {
    fn default() -> Self {
        InertAgentFields {
            display_apps: vec![],
            environment_variables: None,
            log_sources: vec![],
            logs_length: 0,
            logs_overflowed: false,
            scripts: vec![],
            startup_script_behavior: "non-blocking",
            subsystems: vec![],
        }
    }
}

/// `codersdk.WorkspaceResource` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceResource {
    pub id: Uuid,
    pub created_at: Time,
    pub job_id: Uuid,
    pub workspace_transition: WorkspaceTransition,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub hide: bool,
    #[serde(default)]
    pub icon: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<WorkspaceAgent>,
    #[serde(default)]
    pub daily_cost: i64,
}

/// `codersdk.WorkspaceBuild` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceBuild {
    pub id: Uuid,
    pub created_at: Time,
    pub updated_at: Time,
    pub workspace_id: Uuid,
    #[serde(default)]
    pub workspace_name: String,
    #[serde(default)]
    pub workspace_owner_id: Uuid,
    #[serde(default)]
    pub workspace_owner_name: String,
    #[serde(default)]
    pub template_version_id: Uuid,
    #[serde(default)]
    pub template_version_name: String,
    pub build_number: i64,
    pub transition: WorkspaceTransition,
    #[serde(default)]
    pub initiator_id: Uuid,
    #[serde(default)]
    pub initiator_name: String,
    pub job: ProvisionerJob,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub resources: Vec<WorkspaceResource>,
    /// Null unless the template sets a TTL (coderd sends the key either way).
    pub deadline: Option<Time>,
    pub max_deadline: Option<Time>,
    pub status: WorkspaceStatus,
    #[serde(default)]
    pub daily_cost: i64,
    pub matched_provisioners: MatchedProvisioners,
    pub template_version_preset_id: Option<Uuid>,
    /// Known once the build's job has finished (`*bool`, omitted before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_ai_task: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_external_agent: Option<bool>,
}

/// `codersdk.MatchedProvisioners`: the provisioners that can take the build's job.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedProvisioners {
    pub count: i64,
    pub available: i64,
    pub most_recently_seen: Option<Time>,
}

impl WorkspaceBuild {
    /// Every agent of every resource of this build.
    pub fn agents(&self) -> impl Iterator<Item = &WorkspaceAgent> {
        self.resources.iter().flat_map(|r| r.agents.iter())
    }
}

/// `codersdk.WorkspaceHealth`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkspaceHealth {
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub failing_agents: Vec<Uuid>,
}

/// `codersdk.Workspace` (the fields we read).
#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub id: Uuid,
    pub created_at: Time,
    pub updated_at: Time,
    pub owner_id: Uuid,
    #[serde(default)]
    pub owner_name: String,
    #[serde(default)]
    pub organization_id: Uuid,
    #[serde(default)]
    pub organization_name: String,
    pub template_id: Uuid,
    #[serde(default)]
    pub template_name: String,
    #[serde(default)]
    pub template_display_name: String,
    #[serde(default)]
    pub template_active_version_id: Uuid,
    pub latest_build: WorkspaceBuild,
    #[serde(default)]
    pub outdated: bool,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    /// `CRON_TZ=UTC m h * * dow`, when autostart is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart_schedule: Option<String>,
    pub next_start_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    #[serde(default)]
    pub health: WorkspaceHealth,
    #[serde(default)]
    pub automatic_updates: String,
    /// The fields a real Coder sends that the simulator has no behaviour for.
    #[serde(flatten)]
    pub inert: InertWorkspaceFields,
}

/// Fields of `codersdk.Workspace` (v2.36.1) that the simulator keeps at a fresh
/// workspace's values, sent so that a client decoding the real server's shape decodes
/// ours: compared key by key against a real coderd's answer (scripts/real-coder).
#[derive(Debug, Clone, Serialize)]
pub struct InertWorkspaceFields {
    pub owner_avatar_url: String,
    pub template_icon: String,
    pub template_allow_user_cancel_workspace_jobs: bool,
    pub dormant_at: Option<Time>,
    pub deleting_at: Option<Time>,
    pub favorite: bool,
    pub allow_renames: bool,
    pub is_prebuild: bool,
    pub latest_app_status: Option<()>,
    pub task_id: Option<Uuid>,
    pub template_require_active_version: bool,
    pub template_use_classic_parameter_flow: bool,
}

impl Default for InertWorkspaceFields {
    fn default() -> Self {
        InertWorkspaceFields {
            owner_avatar_url: String::new(),
            template_icon: String::new(),
            template_allow_user_cancel_workspace_jobs: true,
            dormant_at: None,
            deleting_at: None,
            favorite: false,
            allow_renames: false,
            is_prebuild: false,
            latest_app_status: None,
            task_id: None,
            template_require_active_version: false,
            template_use_classic_parameter_flow: false,
        }
    }
}

/// `codersdk.WorkspacesResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspacesResponse {
    #[serde(default)]
    pub workspaces: Vec<Workspace>,
    #[serde(default)]
    pub count: i64,
}

/// `codersdk.ProvisionerTiming`.
#[derive(Debug, Clone, Serialize)]
pub struct ProvisionerTiming {
    pub job_id: Uuid,
    pub started_at: Time,
    pub ended_at: Time,
    pub stage: TimingStage,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub resource: String,
}

/// `codersdk.AgentScriptTiming`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentScriptTiming {
    pub started_at: Time,
    pub ended_at: Time,
    #[serde(default)]
    pub exit_code: i32,
    pub stage: TimingStage,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub workspace_agent_id: String,
    #[serde(default)]
    pub workspace_agent_name: String,
}

/// `codersdk.AgentConnectionTiming`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConnectionTiming {
    pub started_at: Time,
    pub ended_at: Time,
    pub stage: TimingStage,
    #[serde(default)]
    pub workspace_agent_id: String,
    #[serde(default)]
    pub workspace_agent_name: String,
}

/// `codersdk.WorkspaceBuildTimings`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkspaceBuildTimings {
    #[serde(default)]
    pub provisioner_timings: Vec<ProvisionerTiming>,
    #[serde(default)]
    pub agent_script_timings: Vec<AgentScriptTiming>,
    #[serde(default)]
    pub agent_connection_timings: Vec<AgentConnectionTiming>,
}
