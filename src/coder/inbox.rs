//! Inbox notifications as `GET /api/v2/notifications/inbox/watch` pushes them
//! (coderd/inboxnotifications.go `watchInboxNotifications`: one
//! `codersdk.GetInboxNotificationResponse` per message, for the token's user only).

use serde::Deserialize;
use uuid::Uuid;

use super::Time;

/// `codersdk.GetInboxNotificationResponse`, the fields we read.
#[derive(Debug, Clone, Deserialize)]
pub struct InboxMessage {
    pub notification: InboxNotification,
}

/// `codersdk.InboxNotification`, the fields we read.
#[derive(Debug, Clone, Deserialize)]
pub struct InboxNotification {
    pub id: Uuid,
    pub template_id: Uuid,
    /// The entities it is about: for "Workspace Created", the workspace, its owner, its
    /// template and its organization (coderd/workspaces.go `notifyWorkspaceCreated`).
    #[serde(default)]
    pub targets: Vec<Uuid>,
    #[serde(default)]
    pub title: String,
    /// When Coder's notifier put it in the inbox.
    pub created_at: Time,
}

/// The "Workspace Created" notification template (coderd/notifications/events.go
/// `TemplateWorkspaceCreated`).
pub const WORKSPACE_CREATED: Uuid = Uuid::from_u128(0x281fdf73_c6d6_4cbb_8ff5_888baf8a2fff);

impl super::Client {
    /// Turns "Workspace Created" notifications on for this client's user unless they are on
    /// already: Coder has them off by default (coderd/database/migrations/000285_*: the
    /// template is not `enabled_by_default`). Returns whether it turned them on.
    pub async fn enable_workspace_created(&self) -> Result<bool, super::ApiError> {
        #[derive(Deserialize)]
        struct Preference {
            id: Uuid,
            #[serde(default)]
            disabled: bool,
        }
        const ROUTE: &str = "/api/v2/users/{user}/notifications/preferences";
        const PATH: &str = "/api/v2/users/me/notifications/preferences";
        // `null` when the user chose nothing (a Go nil slice).
        let prefs: Option<Vec<Preference>> = self.get(ROUTE, PATH).await?;
        if prefs
            .unwrap_or_default()
            .iter()
            .any(|p| p.id == WORKSPACE_CREATED && !p.disabled)
        {
            return Ok(false);
        }
        let body = serde_json::json!({
            "template_disabled_map": { WORKSPACE_CREATED.to_string(): false },
        });
        self.send(
            reqwest::Method::PUT,
            ROUTE,
            PATH,
            Some(serde_json::to_vec(&body).expect("JSON serializes")),
        )
        .await?;
        Ok(true)
    }
}
