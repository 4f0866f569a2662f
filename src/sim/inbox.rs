//! The simulator's inbox notifications, as far as "Workspace Created" goes:
//!
//! - a workspace created by a user notifies every owner but that user, after
//!   `latency.notification` (coderd/workspaces.go `notifyWorkspaceCreated` sends it to every
//!   template admin but the initiator; the notifier fetches queued messages every 15 s);
//! - only to an owner who turned "Workspace Created" on: it is off by default since the
//!   template stopped being `enabled_by_default` (coderd/database/migrations/000285_*);
//! - `GET /notifications/inbox/watch` pushes each one live to its user as
//!   `codersdk.GetInboxNotificationResponse` (coderd/inboxnotifications.go), filtered by
//!   `templates`;
//! - `GET`/`PUT /users/{user}/notifications/preferences` read and set the preference
//!   (coderd/notifications.go).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query, State as Ax};
use axum::response::{IntoResponse, Response as AxResponse};
use axum::{Extension, Json};
use serde::Deserialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::accounts::Caller;
use super::api::App;
use super::types::Workspace;
use crate::coder::inbox::WORKSPACE_CREATED;

/// Every user's live inbox streams and notification preferences.
#[derive(Default)]
pub struct Inboxes(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    streams: HashMap<Uuid, broadcast::Sender<Arc<str>>>,
    /// Users who turned "Workspace Created" on.
    enabled: HashSet<Uuid>,
    unread: HashMap<Uuid, i64>,
    /// Notifications sent, for tests: (user, workspace).
    sent: Vec<(Uuid, Uuid)>,
}

impl Inboxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, user: Uuid) -> broadcast::Receiver<Arc<str>> {
        self.lock()
            .streams
            .entry(user)
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }

    /// Notifications delivered so far, as (user, workspace).
    pub fn sent(&self) -> Vec<(Uuid, Uuid)> {
        self.lock().sent.clone()
    }
}

impl App {
    /// A workspace was created by `initiator`: each owner but it who turned the notification
    /// on gets it, after the notifier's delay.
    pub fn notify_created(self: &Arc<Self>, ws: &Workspace, initiator: Uuid) {
        let st = &self.state;
        let receivers: Vec<Uuid> = {
            let inbox = st.inboxes.lock();
            st.accounts
                .owners()
                .into_iter()
                .filter(|o| *o != initiator && inbox.enabled.contains(o))
                .collect()
        };
        if receivers.is_empty() {
            return;
        }
        let delay = st.cfg.latency.notification.sample();
        let ws = ws.clone();
        let app = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let st = &app.state;
            for user in receivers {
                let mut inbox = st.inboxes.lock();
                let unread = {
                    let n = inbox.unread.entry(user).or_default();
                    *n += 1;
                    *n
                };
                inbox.sent.push((user, ws.id));
                let msg = serde_json::json!({
                    "notification": {
                        "id": Uuid::new_v4(),
                        "user_id": user,
                        "template_id": WORKSPACE_CREATED,
                        "targets": [ws.id, ws.owner_id, ws.template_id, ws.organization_id],
                        "title": format!("Workspace '{}' has been created", ws.name),
                        "content": format!(
                            "The workspace **{}** has been created from the template **{}** using version **{}**.",
                            ws.name, ws.template_name, ws.latest_build.template_version_name
                        ),
                        "icon": "DEFAULT_ICON_WORKSPACE",
                        "actions": [{
                            "label": "See workspace",
                            "url": format!("{}@{}/{}", app.access_url, ws.owner_name, ws.name),
                        }],
                        "read_at": null,
                        "created_at": chrono::Utc::now(),
                    },
                    "unread_count": unread,
                });
                if let Some(tx) = inbox.streams.get(&user) {
                    let _ = tx.send(msg.to_string().into());
                }
            }
        });
    }
}

#[derive(Deserialize)]
pub struct WatchQuery {
    #[serde(default)]
    templates: String,
}

/// `GET /notifications/inbox/watch`: the caller's notifications, live.
pub async fn watch(
    Ax(app): Ax<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<WatchQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> AxResponse {
    let ws = match super::api::upgrade(ws) {
        Ok(ws) => ws,
        Err(refused) => return *refused,
    };
    let wanted: Vec<Uuid> = q
        .templates
        .split(',')
        .filter(|t| !t.is_empty())
        .filter_map(|t| Uuid::parse_str(t).ok())
        .collect();
    if !wanted.is_empty() && !wanted.contains(&WORKSPACE_CREATED) {
        // Only "Workspace Created" is ever sent here: nothing would pass the filter.
        return ws.on_upgrade(|_socket| async {});
    }
    let mut rx = app.state.inboxes.subscribe(caller.id);
    let cut = app.until_crash();
    ws.on_upgrade(move |mut socket| async move {
        loop {
            tokio::select! {
                _ = cut.cancelled() => return,
                m = rx.recv() => match m {
                    Ok(text) => {
                        if socket.send(Message::Text(text.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                r = socket.recv() => match r {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
            }
        }
    })
}

/// `GET /users/{user}/notifications/preferences`: the caller's explicit choices; `null` when
/// there are none, as coderd answers a nil slice (seen from coderd v2.36.1).
pub async fn preferences(
    Ax(app): Ax<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> AxResponse {
    if !caller.is(&user) {
        return super::api::resource_not_found();
    }
    let on = app.state.inboxes.lock().enabled.contains(&caller.id);
    let prefs = if on {
        serde_json::json!([{
            "id": WORKSPACE_CREATED,
            "disabled": false,
            "updated_at": chrono::Utc::now(),
        }])
    } else {
        serde_json::Value::Null
    };
    Json(prefs).into_response()
}

#[derive(Deserialize)]
pub struct UpdatePreferences {
    #[serde(default)]
    template_disabled_map: HashMap<String, bool>,
}

/// `PUT /users/{user}/notifications/preferences`.
pub async fn put_preferences(
    Ax(app): Ax<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    Json(req): Json<UpdatePreferences>,
) -> AxResponse {
    if !caller.is(&user) {
        return super::api::resource_not_found();
    }
    let mut inbox = app.state.inboxes.lock();
    let mut out = Vec::new();
    for (template, disabled) in &req.template_disabled_map {
        if *template != WORKSPACE_CREATED.to_string() {
            continue;
        }
        if *disabled {
            inbox.enabled.remove(&caller.id);
        } else {
            inbox.enabled.insert(caller.id);
        }
        out.push(serde_json::json!({
            "id": template,
            "disabled": disabled,
            "updated_at": chrono::Utc::now(),
        }));
    }
    Json(out).into_response()
}
