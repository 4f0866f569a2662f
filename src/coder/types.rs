//! Coder's API types, as the subset scaletestd uses, with Coder's field names and enums
//! (codersdk, checked against Coder's OpenAPI spec in shared/coder-api/swagger.json).
//!
//! The simulator serializes these same types, so client and simulator cannot drift apart.
//! Unknown fields are ignored (Coder adds fields every release); unknown enum values are a
//! decode error, which the phases report as `protocol_error`.

use std::collections::BTreeMap;

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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildInfo {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub external_url: String,
    #[serde(default)]
    pub dashboard_url: String,
    #[serde(default)]
    pub deployment_id: String,
}

/// `codersdk.User` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub created_at: Time,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub organization_ids: Vec<Uuid>,
    #[serde(default)]
    pub roles: Vec<SlimRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlimRole {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub organization_id: String,
}

/// `codersdk.Organization` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub is_default: bool,
}

/// `codersdk.Template` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// `codersdk.TemplateVersionParameter` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersionParameter {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    /// `string`, `number`, `bool` or `list(string)`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mutable: bool,
    #[serde(default)]
    pub default_value: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub options: Vec<TemplateVersionParameterOption>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersionParameterOption {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub value: String,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceTransition {
    Start,
    Stop,
    Delete,
}

/// `codersdk.WorkspaceStatus`.
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
}

/// `codersdk.ProvisionerJobStatus`.
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

/// `codersdk.WorkspaceAgentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAgentStatus {
    Connecting,
    Connected,
    Disconnected,
    Timeout,
}

/// `codersdk.WorkspaceAgentLifecycle`.
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkspaceAgentHealth {
    #[serde(default)]
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `codersdk.WorkspaceApp` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceApp {
    pub id: Uuid,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub subdomain: bool,
    #[serde(default)]
    pub sharing_level: String,
    #[serde(default)]
    pub health: String,
}

/// `codersdk.WorkspaceAgent` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(default)]
    pub apps: Vec<WorkspaceApp>,
    #[serde(default)]
    pub health: WorkspaceAgentHealth,
    #[serde(default)]
    pub connection_timeout_seconds: i64,
    #[serde(default)]
    pub troubleshooting_url: String,
}

/// `codersdk.WorkspaceResource` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    pub status: WorkspaceStatus,
    #[serde(default)]
    pub daily_cost: i64,
}

impl WorkspaceBuild {
    /// Every agent of every resource of this build.
    pub fn agents(&self) -> impl Iterator<Item = &WorkspaceAgent> {
        self.resources.iter().flat_map(|r| r.agents.iter())
    }
}

/// `codersdk.WorkspaceHealth`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkspaceHealth {
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub failing_agents: Vec<Uuid>,
}

/// `codersdk.Workspace` (the fields we read).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    #[serde(default)]
    pub health: WorkspaceHealth,
    #[serde(default)]
    pub automatic_updates: String,
}

/// `codersdk.WorkspacesResponse`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspacesResponse {
    #[serde(default)]
    pub workspaces: Vec<Workspace>,
    #[serde(default)]
    pub count: i64,
}

/// `codersdk.TimingStage`.
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
}

/// `codersdk.ProvisionerTiming`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace as Coder sends it (shape from Coder's OpenAPI example), with a field from
    /// a newer release that must be ignored.
    #[test]
    fn decodes_coder_shaped_workspace_and_ignores_unknown_fields() {
        let json = r#"{
          "id": "497f6eca-6276-4993-bfeb-53cbbbba6f08",
          "created_at": "2025-04-16T10:00:00.123456Z",
          "updated_at": "2025-04-16T10:00:01Z",
          "owner_id": "8826ee2e-7933-4665-aef2-2393f84a0d05",
          "owner_name": "admin",
          "template_id": "c6d67e98-83ea-49f0-8812-e4abae2b68bc",
          "name": "scaletest-abc123-1",
          "a_field_from_the_future": {"x": 1},
          "latest_build": {
            "id": "bcdbd7f4-2b47-4a17-a7a4-58a2ac1ec1c6",
            "created_at": "2025-04-16T10:00:00Z",
            "updated_at": "2025-04-16T10:00:00Z",
            "workspace_id": "497f6eca-6276-4993-bfeb-53cbbbba6f08",
            "build_number": 1,
            "transition": "start",
            "status": "starting",
            "job": {
              "id": "453bd7d7-5355-4d6d-a38e-d9e7eb218c3f",
              "created_at": "2025-04-16T10:00:00Z",
              "started_at": "2025-04-16T10:00:02Z",
              "status": "running",
              "queue_position": 0, "queue_size": 0,
              "worker_id": null
            },
            "resources": [{
              "id": "a1b2c3d4-0000-4000-8000-000000000001",
              "created_at": "2025-04-16T10:00:00Z",
              "job_id": "453bd7d7-5355-4d6d-a38e-d9e7eb218c3f",
              "workspace_transition": "start",
              "type": "docker_container", "name": "main",
              "agents": [{
                "id": "a1b2c3d4-0000-4000-8000-000000000002",
                "name": "main",
                "created_at": "2025-04-16T10:00:00Z",
                "updated_at": "2025-04-16T10:00:00Z",
                "status": "connecting",
                "lifecycle_state": "created"
              }]
            }]
          }
        }"#;
        let ws: Workspace = serde_json::from_str(json).unwrap();
        assert_eq!(ws.name, "scaletest-abc123-1");
        assert_eq!(
            ws.latest_build.job.queue_wait(),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(ws.latest_build.agents().count(), 1);
    }

    #[test]
    fn unknown_enum_value_is_an_error() {
        let r: Result<ProvisionerJobStatus, _> = serde_json::from_str("\"exploded\"");
        assert!(r.is_err());
    }
}
