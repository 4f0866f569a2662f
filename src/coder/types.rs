//! Coder's API types as scaletestd reads them: only the fields it uses, with Coder's names and
//! enums (codersdk, checked against Coder's OpenAPI spec in shared/coder-api/swagger.json).
//!
//! A tolerant reader. Coder adds fields and enum values every month, so nothing here fails on
//! what it does not use: unknown fields are skipped, and a field scaletestd never looks at is
//! not declared at all. The fields it decides on are strict: a missing or malformed job status,
//! transition or agent state is a decode error naming its JSON path, which the phases report as
//! `protocol_error`. Where a value is read but only displayed or filtered on (a workspace's
//! status, a timing's stage), an unknown value decodes to `Other`.
//!
//! The request bodies scaletestd sends live here too; the simulator reads them with these
//! types and answers with the fuller shapes in `crate::sim::types`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub type Time = DateTime<Utc>;

/// `codersdk.Response`: the body of every error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<ValidationError>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub field: String,
    pub detail: String,
}

/// `codersdk.BuildInfoResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BuildInfo {
    #[serde(default)]
    pub version: String,
}

/// `codersdk.User`.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    #[serde(default)]
    pub organization_ids: Vec<Uuid>,
}

/// `codersdk.Organization`.
#[derive(Debug, Clone, Deserialize)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
}

/// `codersdk.Template`.
#[derive(Debug, Clone, Deserialize)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    pub organization_id: Uuid,
    pub active_version_id: Uuid,
    /// Absent before Coder v2.24, which had only the classic flow.
    #[serde(default)]
    pub use_classic_parameter_flow: Option<bool>,
}

impl Template {
    /// Whether Coder checks new workspaces' parameters with the classic rules rather than
    /// by evaluating the template (see [`super::parameters`]).
    pub fn classic_parameters(&self) -> bool {
        self.use_classic_parameter_flow.unwrap_or(true)
    }
}

pub use super::parameters::TemplateVersionParameter;

/// `codersdk.WorkspaceBuildParameter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceBuildParameter {
    pub name: String,
    pub value: String,
}

/// `codersdk.CreateWorkspaceRequest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateWorkspaceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart_schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    #[serde(default)]
    pub rich_parameter_values: Vec<WorkspaceBuildParameter>,
}

/// `codersdk.CreateWorkspaceBuildRequest` (the fields we send).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWorkspaceBuildRequest {
    pub transition: WorkspaceTransition,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub orphan: bool,
}

/// `codersdk.WorkspaceTransition`: decided on, so strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceTransition {
    Start,
    Stop,
    Delete,
}

/// `codersdk.WorkspaceStatus`: shown and checked against one value at a time, so a status
/// from a newer Coder is `Other` rather than an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceStatus {
    Pending,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
    Canceling,
    Canceled,
    Deleting,
    Deleted,
    #[serde(other, skip_serializing)]
    Other,
}

/// `codersdk.ProvisionerJobStatus`: decided on, so strict (`unknown` is Coder's own value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionerJobStatus {
    Pending,
    Running,
    Succeeded,
    Canceling,
    Canceled,
    Failed,
    Unknown,
}

impl ProvisionerJobStatus {
    /// True once the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ProvisionerJobStatus::Succeeded
                | ProvisionerJobStatus::Canceled
                | ProvisionerJobStatus::Failed
        )
    }

    /// True while a cancel would still do something.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ProvisionerJobStatus::Pending | ProvisionerJobStatus::Running
        )
    }
}

/// `codersdk.WorkspaceAgentStatus`: decided on, so strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAgentStatus {
    Connecting,
    Connected,
    Disconnected,
    Timeout,
}

/// `codersdk.WorkspaceAgentLifecycle`: decided on, so strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceAgentLifecycle {
    Created,
    Starting,
    StartTimeout,
    StartError,
    Ready,
    ShuttingDown,
    ShutdownTimeout,
    ShutdownError,
    Off,
}

/// `codersdk.ProvisionerJob`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvisionerJob {
    pub created_at: Time,
    #[serde(default)]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub completed_at: Option<Time>,
    #[serde(default)]
    pub error: String,
    pub status: ProvisionerJobStatus,
}

impl ProvisionerJob {
    /// Time spent waiting for a provisioner (`started_at - created_at`).
    pub fn queue_wait(&self) -> Option<std::time::Duration> {
        self.started_at
            .and_then(|s| (s - self.created_at).to_std().ok())
    }
}

/// `codersdk.WorkspaceAgent`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceAgent {
    pub id: Uuid,
    pub name: String,
    pub status: WorkspaceAgentStatus,
    pub lifecycle_state: WorkspaceAgentLifecycle,
    /// Set on a devcontainer sub-agent: the agent it runs under.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// When its start-up scripts finished (lifecycle `ready`).
    #[serde(default)]
    pub ready_at: Option<Time>,
    #[serde(default)]
    pub apps: Vec<WorkspaceApp>,
}

/// `codersdk.WorkspaceApp`: what the `app` phase reads of an agent's app.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceApp {
    pub slug: String,
    /// The dashboard opens it on a subdomain (when the deployment has a wildcard host).
    #[serde(default)]
    pub subdomain: bool,
    /// Opened by the browser directly, never through Coder's proxy.
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub health: WorkspaceAppHealth,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
}

/// `codersdk.Healthcheck`: how the agent checks an app (`interval` in seconds, `threshold`
/// failed checks in a row before `unhealthy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub interval: i32,
    #[serde(default)]
    pub threshold: i32,
}

/// `codersdk.WorkspaceAppHealth`: waited on, but a value of a newer Coder is `Other` (and
/// waited through) rather than an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceAppHealth {
    /// No health check: usable as soon as the agent is.
    #[default]
    Disabled,
    Initializing,
    Healthy,
    Unhealthy,
    #[serde(other)]
    Other,
}

/// `codersdk.WorkspaceResource`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceResource {
    #[serde(default)]
    pub agents: Vec<WorkspaceAgent>,
}

/// `codersdk.WorkspaceBuild`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceBuild {
    pub id: Uuid,
    #[serde(default)]
    pub created_at: Option<Time>,
    /// `initiator`, `autostart`, `autostop`, … (codersdk `BuildReason`): open-ended, so text.
    #[serde(default)]
    pub reason: String,
    pub transition: WorkspaceTransition,
    pub job: ProvisionerJob,
    pub status: WorkspaceStatus,
    #[serde(default)]
    pub resources: Vec<WorkspaceResource>,
}

impl WorkspaceBuild {
    /// Every agent of every resource of this build.
    pub fn agents(&self) -> impl Iterator<Item = &WorkspaceAgent> {
        self.resources.iter().flat_map(|r| r.agents.iter())
    }
}

/// `codersdk.Workspace`.
#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    /// When the server last wrote the workspace (each event on its stream restamps it).
    #[serde(default)]
    pub updated_at: Option<Time>,
    pub owner_id: Uuid,
    #[serde(default)]
    pub owner_name: String,
    pub latest_build: WorkspaceBuild,
}

/// `codersdk.WorkspacesResponse`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspacesResponse {
    #[serde(default)]
    pub workspaces: Vec<Workspace>,
}

/// `codersdk.TimingStage`: filtered on, so a stage of a newer Coder is `Other` (skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimingStage {
    Init,
    Plan,
    Graph,
    Apply,
    Start,
    Stop,
    Cron,
    Connect,
    #[serde(other, skip_serializing)]
    Other,
}

/// `codersdk.ProvisionerTiming`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvisionerTiming {
    pub started_at: Time,
    pub ended_at: Time,
    pub stage: TimingStage,
}

/// `codersdk.AgentScriptTiming`.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentScriptTiming {
    pub started_at: Time,
    pub ended_at: Time,
    pub stage: TimingStage,
    #[serde(default)]
    pub display_name: String,
}

/// `codersdk.AgentConnectionTiming`.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentConnectionTiming {
    pub started_at: Time,
    pub ended_at: Time,
    #[serde(default)]
    pub workspace_agent_name: String,
}

/// `codersdk.WorkspaceBuildTimings`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkspaceBuildTimings {
    #[serde(default)]
    pub provisioner_timings: Vec<ProvisionerTiming>,
    #[serde(default)]
    pub agent_script_timings: Vec<AgentScriptTiming>,
    #[serde(default)]
    pub agent_connection_timings: Vec<AgentConnectionTiming>,
}

/// `codersdk.ReconnectingPTYRequest`: what a client sends on the web terminal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconnectingPtyRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u16>,
}

/// Decodes JSON into `T`; on failure, the message names the JSON path of the bad value
/// (`latest_build.job.status: unknown variant ...`).
pub fn decode_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    // The plain decoder first: tracking the path keeps a copy of every key on the way, which
    // made decoding a third of all our instructions. Only a failure is decoded again, for
    // its path.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace as Coder sends it (shape from Coder's OpenAPI example), with a field and
    /// enum values from a newer release in places scaletestd does not decide on.
    const WORKSPACE: &str = r#"{
      "id": "497f6eca-6276-4993-bfeb-53cbbbba6f08",
      "created_at": "2025-04-16T10:00:00.123456Z",
      "owner_id": "8826ee2e-7933-4665-aef2-2393f84a0d05",
      "owner_name": "admin",
      "template_id": "c6d67e98-83ea-49f0-8812-e4abae2b68bc",
      "name": "scaletest-abc123-1",
      "a_field_from_the_future": {"x": 1},
      "latest_build": {
        "id": "bcdbd7f4-2b47-4a17-a7a4-58a2ac1ec1c6",
        "build_number": "not a number, and never read",
        "transition": "start",
        "status": "hibernating",
        "job": {
          "created_at": "2025-04-16T10:00:00Z",
          "started_at": "2025-04-16T10:00:02Z",
          "status": "running",
          "logs_overflowed": false
        },
        "resources": [{
          "workspace_transition": "teleport",
          "agents": [{
            "id": "a1b2c3d4-0000-4000-8000-000000000002",
            "name": "main",
            "status": "connecting",
            "lifecycle_state": "created",
            "subsystems": ["a-subsystem-from-the-future"]
          }]
        }]
      }
    }"#;

    #[test]
    fn decodes_coder_shaped_workspace_and_ignores_what_it_does_not_read() {
        let ws: Workspace = decode_json(WORKSPACE.as_bytes()).unwrap();
        assert_eq!(ws.name, "scaletest-abc123-1");
        assert_eq!(ws.latest_build.status, WorkspaceStatus::Other);
        assert_eq!(
            ws.latest_build.job.queue_wait(),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(ws.latest_build.agents().count(), 1);
    }

    #[test]
    fn a_bad_value_where_we_decide_names_its_path() {
        let bad = WORKSPACE.replace(r#""status": "running""#, r#""status": "exploded""#);
        let err = decode_json::<Workspace>(bad.as_bytes()).unwrap_err();
        assert!(err.starts_with("latest_build.job.status: "), "{err}");
        let missing = WORKSPACE.replace(r#""lifecycle_state": "created","#, "");
        let err = decode_json::<Workspace>(missing.as_bytes()).unwrap_err();
        assert!(
            err.starts_with("latest_build.resources[0].agents[0]: missing field `lifecycle_state`"),
            "{err}"
        );
    }
}
