//! The simulator's state: workspaces, their builds and jobs, the provisioner queue, agents.
//!
//! Builds run as tasks that move a job through Coder's states with the configured latencies:
//! `pending` in a FIFO queue until one of `provisioners` daemons is free (so `queue_position`
//! moves and `started_at - created_at` grows with load), then `running` through init, plan,
//! graph and apply, then `succeeded` or `failed`. A start build's agents then go
//! `connecting`→`connected` and `created`→`starting`→`ready`. Every change is published to
//! the workspace's watchers as the whole workspace, as Coder's `/watch` does.
//!
//! Here: the world and its look-ups; `provisioner`: builds and the queue; `agents`:
//! agents and sub-agents; `ledger`: what was injected, for tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::config::SimConfig;
use super::types::*;
use crate::coder::WorkspaceBuildParameter;

mod agents;
mod ledger;
mod provisioner;

pub use ledger::Ledger;

pub struct WsEntry {
    pub ws: Workspace,
    pub builds: Vec<WorkspaceBuild>,
    pub timings: HashMap<Uuid, WorkspaceBuildTimings>,
    /// Watchers get the newest workspace; kept in the [`Grave`] after deletion, so streams
    /// go on showing the deleted workspace until the client closes them, as Coder's do.
    pub tx: watch::Sender<Arc<Workspace>>,
    pub cancel: HashMap<Uuid, CancellationToken>,
    /// Cancelled when the workspace's agents disconnect: their sessions end with them.
    pub agent_gone: CancellationToken,
    /// Watch streams opened so far: injected stream faults hit the first one only.
    pub watches: u32,
}

impl World {
    /// Sets a build's `queue_position` (1-based, 0 once started) and `queue_size`, computed
    /// when read so that a queue move costs nothing per waiting job.
    pub fn stamp_queue(&self, b: &mut WorkspaceBuild) {
        b.job.queue_size = self.queue.len() as i64;
        b.job.queue_position = match b.job.status {
            ProvisionerJobStatus::Pending => self
                .queue
                .iter()
                .position(|(id, _)| *id == b.id)
                .map_or(0, |p| p as i64 + 1),
            _ => 0,
        };
    }

    /// Sends a live workspace as it stands, its queue position stamped, to its watchers.
    pub fn publish(&self, ws_id: Uuid) {
        if let Some(e) = self.live.get(&ws_id) {
            let mut ws = e.ws.clone();
            self.stamp_queue(&mut ws.latest_build);
            e.tx.send_replace(Arc::new(ws));
        }
    }
}

/// What is kept of a deleted workspace: Coder keeps the row (`deleted = true`) and its
/// builds, so `?include_deleted=true`, build look-ups and watch streams still find it.
pub struct Grave {
    pub ws: Workspace,
    pub builds: Vec<WorkspaceBuild>,
    pub timings: HashMap<Uuid, WorkspaceBuildTimings>,
    /// Still open to watchers: Coder's watch handlers load the workspace with
    /// `GetWorkspaceByID`, which finds deleted ones, and never end a stream on deletion
    /// (coderd/workspaces.go `watchWorkspace`; coderd/httpmw/workspaceparam.go).
    pub tx: watch::Sender<Arc<Workspace>>,
}

#[derive(Default)]
pub struct World {
    pub live: HashMap<Uuid, WsEntry>,
    pub names: HashMap<String, Uuid>,
    /// Build id → workspace id, kept after deletion.
    pub build_owner: HashMap<Uuid, Uuid>,
    /// Agent id → workspace id.
    pub agent_owner: HashMap<Uuid, Uuid>,
    /// Deleted workspaces, for `include_deleted` and build look-ups.
    pub deleted: HashMap<Uuid, Grave>,
    /// Pending jobs in queue order: (build id, workspace id).
    pub queue: VecDeque<(Uuid, Uuid)>,
    pub ledger: BTreeMap<String, Ledger>,
}

pub struct Identity {
    pub user: User,
    pub org: Organization,
    pub template: Template,
    pub params: Vec<TemplateVersionParameter>,
}

pub struct State {
    pub cfg: SimConfig,
    /// coderd's own Prometheus series.
    pub metrics: super::metrics::CoderdMetrics,
    /// Session faults injected so far.
    pub injected: super::faults::Injected,
    pub id: Identity,
    /// Users and their tokens: who each request is from.
    pub accounts: crate::sim::accounts::Accounts,
    /// Inbox notifications: live streams and preferences.
    pub inboxes: crate::sim::inbox::Inboxes,
    pub world: Mutex<World>,
    provisioners: Arc<Semaphore>,
}

impl State {
    pub fn new(cfg: SimConfig) -> Arc<State> {
        let now = Utc::now();
        let org = Organization {
            id: Uuid::new_v4(),
            name: cfg.organization.clone(),
            display_name: cfg.organization.clone(),
            is_default: true,
            icon: String::new(),
            description: "Builtin default organization.".into(),
            created_at: now,
            updated_at: now,
            default_org_member_roles: vec!["organization-workspace-access".into()],
        };
        let user = User {
            id: Uuid::new_v4(),
            username: cfg.user.clone(),
            name: String::new(),
            email: format!("{}@coder.sim", cfg.user),
            created_at: now,
            updated_at: now,
            last_seen_at: now,
            status: "active".into(),
            login_type: "password".into(),
            is_service_account: false,
            organization_ids: vec![org.id],
            roles: vec![SlimRole {
                name: "owner".into(),
                display_name: "Owner".into(),
                organization_id: String::new(),
            }],
            has_ai_seat: false,
        };
        let template = Template {
            id: Uuid::new_v4(),
            name: cfg.template.clone(),
            display_name: cfg.template.clone(),
            organization_id: org.id,
            organization_name: org.name.clone(),
            active_version_id: Uuid::new_v4(),
            provisioner: "terraform".into(),
            created_at: now,
            updated_at: now,
            created_by_id: user.id,
            created_by_name: user.username.clone(),
            inert: crate::sim::types::InertTemplateFields::new(&org.display_name),
        };
        let params = crate::sim::parameters::docker_template();
        Arc::new(State {
            provisioners: Arc::new(Semaphore::new(cfg.provisioners.max(1))),
            metrics: super::metrics::CoderdMetrics::new(cfg.provisioners.max(1)),
            injected: Default::default(),
            cfg,
            id: Identity {
                user,
                org,
                template,
                params,
            },
            accounts: Default::default(),
            inboxes: Default::default(),
            world: Mutex::new(World::default()),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `owner`'s workspace and starts its first build. The caller checked the
    /// request.
    pub fn create_workspace(
        self: &Arc<Self>,
        name: &str,
        owner: &User,
        params: Vec<WorkspaceBuildParameter>,
    ) -> Workspace {
        let now = Utc::now();
        let ws_id = Uuid::new_v4();
        let build = self.new_build(
            ws_id,
            name,
            (owner.id, &owner.username),
            1,
            WorkspaceTransition::Start,
        );
        let ws = Workspace {
            id: ws_id,
            created_at: now,
            updated_at: now,
            owner_id: owner.id,
            owner_name: owner.username.clone(),
            organization_id: self.id.org.id,
            organization_name: self.id.org.name.clone(),
            template_id: self.id.template.id,
            template_name: self.id.template.name.clone(),
            template_display_name: self.id.template.display_name.clone(),
            template_active_version_id: self.id.template.active_version_id,
            latest_build: build.clone(),
            outdated: false,
            name: name.to_string(),
            ttl_ms: None,
            autostart_schedule: None,
            next_start_at: None,
            last_used_at: Some(now),
            health: WorkspaceHealth {
                healthy: true,
                failing_agents: vec![],
            },
            automatic_updates: "never".into(),
            inert: Default::default(),
        };
        let _ = params; // values are accepted as given; the template has no behaviour per value
        let (tx, _) = watch::channel(Arc::new(ws.clone()));
        {
            let mut w = self.lock();
            w.names.insert(name.to_string(), ws_id);
            w.build_owner.insert(build.id, ws_id);
            w.ledger.insert(
                name.to_string(),
                Ledger {
                    name: name.to_string(),
                    owner: owner.username.clone(),
                    ..Default::default()
                },
            );
            let cancel = CancellationToken::new();
            w.live.insert(
                ws_id,
                WsEntry {
                    ws: ws.clone(),
                    builds: vec![build.clone()],
                    timings: HashMap::new(),
                    tx,
                    cancel: HashMap::from([(build.id, cancel)]),
                    agent_gone: CancellationToken::new(),
                    watches: 0,
                },
            );
            w.queue.push_back((build.id, ws_id));
        }
        tokio::spawn(self.clone().run_job(ws_id, build.id));
        self.current(ws_id).unwrap_or(ws)
    }

    /// The owner of the workspace named `name` (live or deleted), for metric labels. Takes
    /// the world's lock.
    pub fn owner_name(&self, name: &str) -> String {
        let w = self.lock();
        let live = w
            .names
            .get(name)
            .and_then(|id| w.live.get(id))
            .map(|e| &e.ws);
        live.or_else(|| w.deleted.values().map(|g| &g.ws).find(|ws| ws.name == name))
            .map(|ws| ws.owner_name.clone())
            .unwrap_or_else(|| self.id.user.username.clone())
    }

    /// The owner of the workspace a workspace, build or agent id belongs to (live or
    /// deleted), and the workspace's name.
    pub fn owner_of(&self, id: Uuid) -> Option<(Uuid, String)> {
        let w = self.lock();
        let ws_id = if w.live.contains_key(&id) || w.deleted.contains_key(&id) {
            id
        } else {
            *w.build_owner.get(&id).or_else(|| w.agent_owner.get(&id))?
        };
        let ws = w
            .live
            .get(&ws_id)
            .map(|e| &e.ws)
            .or_else(|| w.deleted.get(&ws_id).map(|g| &g.ws))?;
        Some((ws.owner_id, ws.name.clone()))
    }

    pub fn current(&self, ws_id: Uuid) -> Option<Workspace> {
        let w = self.lock();
        let mut ws = w.live.get(&ws_id)?.ws.clone();
        w.stamp_queue(&mut ws.latest_build);
        Some(ws)
    }

    pub fn build(&self, build_id: Uuid) -> Option<WorkspaceBuild> {
        let w = self.lock();
        let ws_id = w.build_owner.get(&build_id)?;
        let builds = match w.live.get(ws_id) {
            Some(e) => &e.builds,
            None => &w.deleted.get(ws_id)?.builds,
        };
        let mut b = builds.iter().find(|b| b.id == build_id).cloned()?;
        w.stamp_queue(&mut b);
        Some(b)
    }

    pub fn timings(&self, build_id: Uuid) -> Option<WorkspaceBuildTimings> {
        let w = self.lock();
        let ws_id = w.build_owner.get(&build_id)?;
        let t = match w.live.get(ws_id) {
            Some(e) => &e.timings,
            None => &w.deleted.get(ws_id)?.timings,
        };
        Some(t.get(&build_id).cloned().unwrap_or_default())
    }

    /// Applies `f` to a live workspace's entry and publishes the result.
    fn update(&self, ws_id: Uuid, f: impl FnOnce(&mut World, Uuid)) {
        let mut w = self.lock();
        if !w.live.contains_key(&ws_id) {
            return;
        }
        f(&mut w, ws_id);
        if let Some(e) = w.live.get_mut(&ws_id) {
            e.ws.updated_at = Utc::now();
        }
        w.publish(ws_id);
    }

    /// Moves a deleted workspace out of the live set; its watch streams stay open.
    fn bury(&self, ws_id: Uuid) {
        let mut w = self.lock();
        let Some(mut e) = w.live.remove(&ws_id) else {
            return;
        };
        e.ws.updated_at = Utc::now();
        e.tx.send_replace(Arc::new(e.ws.clone()));
        w.names.remove(&e.ws.name);
        let agents: Vec<Uuid> = e
            .builds
            .iter()
            .flat_map(|b| b.agents().map(|a| a.id))
            .collect();
        for a in agents {
            w.agent_owner.remove(&a);
        }
        if let Some(l) = w.ledger.get_mut(&e.ws.name) {
            l.deleted = true;
        }
        self.metrics
            .agents_up
            .remove(&self.agents_up_labels(&e.ws.name, &e.ws.owner_name));
        w.deleted.insert(
            ws_id,
            Grave {
                ws: e.ws,
                builds: e.builds,
                timings: e.timings,
                tx: e.tx,
            },
        );
    }

    /// The workspace and agent behind an agent id, if the agent can take a terminal.
    pub fn agent(&self, agent: Uuid) -> Option<(Workspace, WorkspaceAgent)> {
        let w = self.lock();
        let ws = &w.live.get(w.agent_owner.get(&agent)?)?.ws;
        let a = ws.latest_build.agents().find(|a| a.id == agent)?.clone();
        Some((ws.clone(), a))
    }
}

/// Changes one build (in the history and, when latest, on the workspace) and keeps its
/// derived status in step, the way Coder computes `WorkspaceBuild.status`.
fn mutate_build(e: &mut WsEntry, build_id: Uuid, f: impl FnOnce(&mut WorkspaceBuild)) {
    let Some(b) = e.builds.iter_mut().find(|b| b.id == build_id) else {
        return;
    };
    f(b);
    b.status = build_status(b);
    b.updated_at = Utc::now();
    if e.ws.latest_build.id == build_id {
        e.ws.latest_build = b.clone();
    }
}

/// Coder's mapping of job status and transition to workspace status.
pub fn build_status(b: &WorkspaceBuild) -> WorkspaceStatus {
    use ProvisionerJobStatus as J;
    use WorkspaceStatus as S;
    use WorkspaceTransition as T;
    match (b.job.status, b.transition) {
        (J::Pending, _) => S::Pending,
        (J::Running, T::Start) => S::Starting,
        (J::Running, T::Stop) => S::Stopping,
        (J::Running, T::Delete) => S::Deleting,
        (J::Succeeded, T::Start) => S::Running,
        (J::Succeeded, T::Stop) => S::Stopped,
        (J::Succeeded, T::Delete) => S::Deleted,
        (J::Canceling, _) => S::Canceling,
        (J::Canceled, _) => S::Canceled,
        (J::Failed | J::Unknown, _) => S::Failed,
    }
}
