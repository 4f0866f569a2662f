//! The simulator's state: workspaces, their builds and jobs, the provisioner queue, agents.
//!
//! Builds run as tasks that move a job through Coder's states with the configured latencies:
//! `pending` in a FIFO queue until one of `provisioners` daemons is free (so `queue_position`
//! moves and `started_at - created_at` grows with load), then `running` through init, plan,
//! graph and apply, then `succeeded` or `failed`. A start build's agents then go
//! `connecting`→`connected` and `created`→`starting`→`ready`. Every change is published to
//! the workspace's watchers as the whole workspace, as Coder's `/watch` does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::config::{SimConfig, SubAgent};
use super::types::*;
use crate::coder::WorkspaceBuildParameter;

/// What the simulator injected and measured for one workspace, for tests to compare with.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub name: String,
    /// Start job: created → started.
    pub queue: Option<Duration>,
    /// Start job: created → completed.
    pub build: Option<Duration>,
    /// Start job completed → last agent ready.
    pub agent: Option<Duration>,
    pub build_failed: bool,
    pub agent_timeout: bool,
    pub agent_start_error: bool,
    pub pty_dropped: bool,
    /// The `backend_type` the last web terminal asked for (empty: none given).
    pub pty_backend: Option<String>,
    /// The agent the last web terminal was opened on.
    pub pty_agent: Option<String>,
    /// `watch`, `build` or `pty`: where an injected stall was served.
    pub stalled: Option<&'static str>,
    /// Which malformation the watch stream served.
    pub malformed: Option<&'static str>,
    pub deleted: bool,
}

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
        };
        let user = User {
            id: Uuid::new_v4(),
            username: cfg.user.clone(),
            email: format!("{}@coder.sim", cfg.user),
            created_at: now,
            status: "active".into(),
            organization_ids: vec![org.id],
            roles: vec![SlimRole {
                name: "owner".into(),
                display_name: "Owner".into(),
                organization_id: String::new(),
            }],
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
        };
        let params = vec![TemplateVersionParameter {
            name: "image".into(),
            display_name: "Image".into(),
            description: "Container image of the workspace".into(),
            kind: "string".into(),
            mutable: false,
            default_value: "codercom/enterprise-base:ubuntu".into(),
            required: false,
            ephemeral: false,
            options: vec![],
        }];
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
            world: Mutex::new(World::default()),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a workspace and starts its first build. The caller checked the request.
    pub fn create_workspace(
        self: &Arc<Self>,
        name: &str,
        params: Vec<WorkspaceBuildParameter>,
    ) -> Workspace {
        let now = Utc::now();
        let ws_id = Uuid::new_v4();
        let build = self.new_build(ws_id, name, 1, WorkspaceTransition::Start);
        let ws = Workspace {
            id: ws_id,
            created_at: now,
            updated_at: now,
            owner_id: self.id.user.id,
            owner_name: self.id.user.username.clone(),
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
            last_used_at: Some(now),
            health: WorkspaceHealth {
                healthy: true,
                failing_agents: vec![],
            },
            automatic_updates: "never".into(),
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

    /// Starts a delete build; `Err` with Coder's status and message when it cannot.
    pub fn start_delete(self: &Arc<Self>, ws_id: Uuid) -> Result<WorkspaceBuild, (u16, String)> {
        let build = {
            let mut w = self.lock();
            if w.deleted.contains_key(&ws_id) {
                // Coder's route middleware finds deleted workspaces too
                // (coderd/httpmw/workspaceparam.go), so the answer is not a 404; which error
                // wsbuilder gives is not pinned down here. A 400 keeps the simulator strict: a
                // client that posts a build without first reading the workspace (410) fails.
                return Err((400, "The workspace has been deleted.".into()));
            }
            let Some(e) = w.live.get_mut(&ws_id) else {
                return Err((
                    404,
                    "Resource not found or you do not have access to this resource".into(),
                ));
            };
            if !e.ws.latest_build.job.status.is_terminal() {
                return Err((409, "A workspace build is already active.".into()));
            }
            let number = e.ws.latest_build.build_number + 1;
            let name = e.ws.name.clone();
            let build = self.new_build(ws_id, &name, number, WorkspaceTransition::Delete);
            e.builds.push(build.clone());
            e.ws.latest_build = build.clone();
            e.ws.updated_at = Utc::now();
            e.cancel.insert(build.id, CancellationToken::new());
            w.build_owner.insert(build.id, ws_id);
            w.queue.push_back((build.id, ws_id));
            build
        };
        tokio::spawn(self.clone().run_job(ws_id, build.id));
        Ok(self.build(build.id).unwrap_or(build))
    }

    /// Cancels a build's job if it is still active.
    pub fn cancel(&self, build_id: Uuid) -> Result<(), (u16, String)> {
        let mut w = self.lock();
        let ws_id = *w
            .build_owner
            .get(&build_id)
            .ok_or((404, "Resource not found".to_string()))?;
        let Some(e) = w.live.get_mut(&ws_id) else {
            return Err((400, "Job has already completed!".into()));
        };
        if e.ws.latest_build.id != build_id || !e.ws.latest_build.job.status.is_active() {
            return Err((400, "Job has already completed!".into()));
        }
        if let Some(c) = e.cancel.get(&build_id) {
            c.cancel();
        }
        let now = Utc::now();
        mutate_build(e, build_id, |b| {
            b.job.status = ProvisionerJobStatus::Canceling;
            b.job.canceled_at = Some(now);
        });
        Ok(())
    }

    fn new_build(
        &self,
        ws_id: Uuid,
        name: &str,
        number: i64,
        transition: WorkspaceTransition,
    ) -> WorkspaceBuild {
        let now = Utc::now();
        WorkspaceBuild {
            id: Uuid::new_v4(),
            created_at: now,
            updated_at: now,
            workspace_id: ws_id,
            workspace_name: name.to_string(),
            workspace_owner_id: self.id.user.id,
            workspace_owner_name: self.id.user.username.clone(),
            template_version_id: self.id.template.active_version_id,
            template_version_name: "v1".into(),
            build_number: number,
            transition,
            initiator_id: self.id.user.id,
            initiator_name: self.id.user.username.clone(),
            job: ProvisionerJob {
                id: Uuid::new_v4(),
                created_at: now,
                started_at: None,
                completed_at: None,
                canceled_at: None,
                error: String::new(),
                error_code: String::new(),
                status: ProvisionerJobStatus::Pending,
                worker_id: None,
                file_id: Uuid::nil(),
                tags: BTreeMap::from([("scope".to_string(), "organization".to_string())]),
                queue_position: 0,
                queue_size: 0,
                organization_id: self.id.org.id,
                kind: "workspace_build".into(),
            },
            reason: "initiator".into(),
            resources: vec![],
            deadline: None,
            status: WorkspaceStatus::Pending,
            daily_cost: 0,
        }
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

    pub fn ledger(&self) -> Vec<Ledger> {
        self.lock().ledger.values().cloned().collect()
    }

    /// Applies `f` to a live workspace's entry and publishes the result.
    fn update(&self, ws_id: Uuid, f: impl FnOnce(&mut World, Uuid)) {
        let mut w = self.lock();
        if !w.live.contains_key(&ws_id) {
            return;
        }
        f(&mut w, ws_id);
        let Some(mut ws) = w.live.get_mut(&ws_id).map(|e| {
            e.ws.updated_at = Utc::now();
            e.ws.clone()
        }) else {
            return;
        };
        w.stamp_queue(&mut ws.latest_build);
        if let Some(e) = w.live.get(&ws_id) {
            e.tx.send_replace(Arc::new(ws));
        }
    }

    /// A build's job from queue to completion, then (start builds) its agents.
    async fn run_job(self: Arc<Self>, ws_id: Uuid, build_id: Uuid) {
        let cancel = {
            let w = self.lock();
            match w.live.get(&ws_id).and_then(|e| e.cancel.get(&build_id)) {
                Some(c) => c.clone(),
                None => return,
            }
        };
        // Queue: wait for a provisioner, or be canceled while pending.
        let permit = tokio::select! {
            p = self.provisioners.clone().acquire_owned() => p.expect("never closed"),
            _ = cancel.cancelled() => {
                self.update(ws_id, |w, id| {
                    w.queue.retain(|(b, _)| *b != build_id);
                    let now = Utc::now();
                    if let Some(e) = w.live.get_mut(&id) {
                        mutate_build(e, build_id, |b| {
                            b.job.status = ProvisionerJobStatus::Canceled;
                            b.job.completed_at = Some(now);
                        });
                    }
                });
                return;
            }
        };
        let worker = Uuid::new_v4();
        let started = Utc::now();
        self.metrics.jobs_running(1);
        let mut transition = WorkspaceTransition::Start;
        let mut name = String::new();
        let mut job_id = Uuid::nil();
        self.update(ws_id, |w, id| {
            w.queue.retain(|(b, _)| *b != build_id);
            if let Some(e) = w.live.get_mut(&id) {
                name = e.ws.name.clone();
                mutate_build(e, build_id, |b| {
                    transition = b.transition;
                    job_id = b.job.id;
                    b.job.status = ProvisionerJobStatus::Running;
                    b.job.started_at = Some(started);
                    b.job.worker_id = Some(worker);
                });
            }
        });

        let lat = &self.cfg.latency;
        let apply = if transition == WorkspaceTransition::Delete {
            lat.destroy
        } else {
            lat.apply
        };
        let stuck = transition == WorkspaceTransition::Start
            && self
                .cfg
                .inject("build_stuck", &name, self.cfg.failures.build_stuck);
        if stuck {
            self.note_stall(&name, "build");
        }
        let mut timings = Vec::new();
        let mut canceled = false;
        for (stage, latency) in [
            (TimingStage::Init, lat.init),
            (TimingStage::Plan, lat.plan),
            (TimingStage::Graph, lat.graph),
            (TimingStage::Apply, apply),
        ] {
            let t0 = Utc::now();
            let wait = if stuck && stage == TimingStage::Apply {
                Duration::from_secs(86_400) // until canceled
            } else {
                latency.sample()
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => { canceled = true; }
            }
            timings.push(ProvisionerTiming {
                job_id,
                started_at: t0,
                ended_at: Utc::now(),
                stage,
                source: "docker".into(),
                action: if transition == WorkspaceTransition::Delete {
                    "delete"
                } else {
                    "create"
                }
                .into(),
                resource: "docker_container.workspace[0]".into(),
            });
            if canceled {
                break;
            }
        }
        let failed = !canceled
            && transition == WorkspaceTransition::Start
            && self.cfg.inject("build", &name, self.cfg.failures.build);
        drop(permit);

        let done = Utc::now();
        self.job_metrics(&name, transition, canceled, failed, done - started);
        let agents = if transition == WorkspaceTransition::Start && !canceled && !failed {
            (0..self.cfg.agents_per_workspace.max(1))
                .map(|i| new_agent(i, done))
                .collect()
        } else {
            vec![]
        };
        let agent_ids: Vec<Uuid> = agents.iter().map(|a: &WorkspaceAgent| a.id).collect();
        self.update(ws_id, |w, id| {
            for a in &agent_ids {
                w.agent_owner.insert(*a, id);
            }
            let Some(e) = w.live.get_mut(&id) else { return };
            e.timings.insert(build_id, WorkspaceBuildTimings { provisioner_timings: timings, ..Default::default() });
            mutate_build(e, build_id, |b| {
                b.job.completed_at = Some(done);
                if canceled {
                    b.job.status = ProvisionerJobStatus::Canceled;
                } else if failed {
                    b.job.status = ProvisionerJobStatus::Failed;
                    b.job.error = "terraform apply: docker_container.workspace[0]: injected failure (scaletestd simulator)".into();
                    b.job.error_code = String::new();
                } else {
                    b.job.status = ProvisionerJobStatus::Succeeded;
                    if !agents.is_empty() {
                        b.resources = vec![WorkspaceResource {
                            id: Uuid::new_v4(),
                            created_at: done,
                            job_id: b.job.id,
                            workspace_transition: b.transition,
                            kind: "docker_container".into(),
                            name: "workspace".into(),
                            hide: false,
                            icon: String::new(),
                            agents: agents.clone(),
                            daily_cost: 0,
                        }];
                    }
                }
            });
            if transition == WorkspaceTransition::Start
                && let Some(l) = w.ledger.get_mut(&name)
            {
                l.build_failed = failed;
                if let Some(b) = w.live.get(&id).map(|e| &e.ws.latest_build.job) {
                    l.queue = b.queue_wait();
                    l.build = (done - b.created_at).to_std().ok();
                }
            }
        });

        if transition == WorkspaceTransition::Delete && !canceled {
            self.bury(ws_id);
        } else if !agent_ids.is_empty() {
            for agent in agent_ids {
                tokio::spawn(self.clone().run_agent(
                    ws_id,
                    build_id,
                    agent,
                    name.clone(),
                    done,
                    true,
                ));
            }
        }
    }

    /// One agent's start: connect, run its start-up script, be ready (or fail as injected,
    /// when `inject`). The workspace's first agent then starts its devcontainer sub-agent,
    /// when the simulator has one.
    async fn run_agent(
        self: Arc<Self>,
        ws_id: Uuid,
        build_id: Uuid,
        agent: Uuid,
        name: String,
        since: Time,
        inject: bool,
    ) {
        let lat = &self.cfg.latency;
        let t0 = Utc::now();
        tokio::time::sleep(lat.agent_connect.sample()).await;
        let timeout = inject
            && self
                .cfg
                .inject("agent_timeout", &name, self.cfg.failures.agent_timeout);
        let connected = Utc::now();
        self.update(ws_id, |w, id| {
            if let Some(l) = w.ledger.get_mut(&name) {
                l.agent_timeout |= timeout;
            }
            let Some(e) = w.live.get_mut(&id) else { return };
            let agent_name = agent_name(e, agent);
            if !timeout {
                e.timings
                    .entry(build_id)
                    .or_default()
                    .agent_connection_timings
                    .push(AgentConnectionTiming {
                        started_at: t0,
                        ended_at: connected,
                        stage: TimingStage::Connect,
                        workspace_agent_id: agent.to_string(),
                        workspace_agent_name: agent_name,
                    });
            }
            mutate_agent(e, agent, |a| {
                if timeout {
                    a.status = WorkspaceAgentStatus::Timeout;
                } else {
                    a.status = WorkspaceAgentStatus::Connected;
                    a.first_connected_at = Some(connected);
                    a.last_connected_at = Some(connected);
                    a.lifecycle_state = WorkspaceAgentLifecycle::Starting;
                    a.started_at = Some(connected);
                }
            });
        });
        if timeout {
            return;
        }
        self.metrics
            .agents_up
            .get_or_create(&self.agents_up_labels(&name))
            .inc();
        tokio::time::sleep(lat.agent_startup.sample()).await;
        let error = inject
            && self.cfg.inject(
                "agent_start_error",
                &name,
                self.cfg.failures.agent_start_error,
            );
        let ready = Utc::now();
        let mut sub = None;
        self.update(ws_id, |w, id| {
            let Some(e) = w.live.get_mut(&id) else { return };
            let agent_name = agent_name(e, agent);
            e.timings
                .entry(build_id)
                .or_default()
                .agent_script_timings
                .push(AgentScriptTiming {
                    started_at: connected,
                    ended_at: ready,
                    exit_code: if error { 1 } else { 0 },
                    stage: TimingStage::Start,
                    status: if error { "exit_failure" } else { "ok" }.into(),
                    display_name: "Startup Script".into(),
                    workspace_agent_id: agent.to_string(),
                    workspace_agent_name: agent_name,
                });
            mutate_agent(e, agent, |a| {
                if error {
                    a.lifecycle_state = WorkspaceAgentLifecycle::StartError;
                    a.health = WorkspaceAgentHealth {
                        healthy: false,
                        reason: "agent startup script exited with an error".into(),
                    };
                } else {
                    a.lifecycle_state = WorkspaceAgentLifecycle::Ready;
                    a.ready_at = Some(ready);
                }
            });
            // Coder's workspace health, and our agent phase, count top-level agents only.
            let all_ready =
                e.ws.latest_build
                    .agents()
                    .filter(|a| a.parent_id.is_none())
                    .all(|a| a.lifecycle_state == WorkspaceAgentLifecycle::Ready);
            let first = e.ws.latest_build.agents().next().map(|a| a.id) == Some(agent);
            if first && !error && self.cfg.subagent != SubAgent::None {
                sub = Some(add_subagent(e, agent, ready));
            }
            if let Some(id) = sub {
                w.agent_owner.insert(id, ws_id);
            }
            if let Some(l) = w.ledger.get_mut(&name) {
                l.agent_start_error |= error;
                if all_ready {
                    l.agent = (ready - since).to_std().ok();
                }
            }
        });
        if let Some(sub) = sub
            && self.cfg.subagent == SubAgent::Ready
        {
            Box::pin(self.run_agent(ws_id, build_id, sub, name, since, false)).await;
        }
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
            .remove(&self.agents_up_labels(&e.ws.name));
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

    /// Disconnects the workspace's agents, as when its VM dies or loses the network: status
    /// `disconnected`, open terminal and SSH sessions cut, new ones refused.
    pub fn disconnect_agents(&self, workspace: &str) -> bool {
        let Some(id) = self.lock().names.get(workspace).copied() else {
            return false;
        };
        let now = Utc::now();
        let mut gone = None;
        self.update(id, |w, id| {
            if let Some(e) = w.live.get_mut(&id) {
                gone = Some(e.agent_gone.clone());
                let ids: Vec<Uuid> = e.ws.latest_build.agents().map(|a| a.id).collect();
                for a in ids {
                    mutate_agent(e, a, |a| {
                        a.status = WorkspaceAgentStatus::Disconnected;
                        a.disconnected_at = Some(now);
                    });
                }
            }
        });
        self.metrics
            .agents_up
            .remove(&self.agents_up_labels(workspace));
        gone.map(|g| g.cancel()).is_some()
    }

    /// The token cancelled when the workspace's agents disconnect.
    pub fn agent_gone(&self, workspace: &str) -> CancellationToken {
        let w = self.lock();
        w.names
            .get(workspace)
            .and_then(|id| w.live.get(id))
            .map(|e| e.agent_gone.clone())
            .unwrap_or_default()
    }

    fn agents_up_labels(&self, workspace: &str) -> super::metrics::AgentsUp {
        super::metrics::AgentsUp {
            template_name: self.id.template.name.clone(),
            template_version: "v1".into(),
            username: self.id.user.username.clone(),
            workspace_name: workspace.to_string(),
        }
    }

    /// coderd's job series for a finished job.
    fn job_metrics(
        &self,
        name: &str,
        transition: WorkspaceTransition,
        canceled: bool,
        failed: bool,
        took: chrono::Duration,
    ) {
        use super::metrics::{Builds, JobTiming};
        self.metrics.jobs_running(-1);
        let status = if canceled {
            "canceled"
        } else if failed {
            "failed"
        } else {
            "success"
        };
        self.metrics
            .job_timings
            .get_or_create(&JobTiming {
                provisioner: "terraform".into(),
                status: status.into(),
            })
            .observe(took.to_std().unwrap_or_default().as_secs_f64());
        let transition = match transition {
            WorkspaceTransition::Start => "START",
            WorkspaceTransition::Stop => "STOP",
            WorkspaceTransition::Delete => "DELETE",
        };
        let labels = Builds {
            status: if status == "success" {
                "success"
            } else {
                "failed"
            }
            .into(),
            template_name: self.id.template.name.clone(),
            template_version: "v1".into(),
            workspace_name: name.to_string(),
            workspace_owner: self.id.user.username.clone(),
            workspace_transition: transition.into(),
        };
        self.metrics.builds.get_or_create(&labels).inc();
    }

    pub fn note_pty_drop(&self, name: &str) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.pty_dropped = true;
        }
    }

    pub fn note_pty(&self, name: &str, backend: &str, agent: &str) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.pty_backend = Some(backend.to_string());
            l.pty_agent = Some(agent.to_string());
        }
    }

    pub fn note_stall(&self, name: &str, what: &'static str) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.stalled = Some(what);
        }
    }

    pub fn note_malformed(&self, name: &str, what: &'static str) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.malformed = Some(what);
        }
    }
}

fn new_agent(i: usize, now: Time) -> WorkspaceAgent {
    WorkspaceAgent {
        id: Uuid::new_v4(),
        name: if i == 0 {
            "main".into()
        } else {
            format!("agent{i}")
        },
        created_at: now,
        updated_at: now,
        first_connected_at: None,
        last_connected_at: None,
        disconnected_at: None,
        started_at: None,
        ready_at: None,
        status: WorkspaceAgentStatus::Connecting,
        lifecycle_state: WorkspaceAgentLifecycle::Created,
        parent_id: None,
        resource_id: Uuid::nil(),
        architecture: "amd64".into(),
        operating_system: "linux".into(),
        directory: "/home/coder".into(),
        version: "v2.22.0".into(),
        api_version: "2.3".into(),
        apps: vec![],
        health: WorkspaceAgentHealth {
            healthy: true,
            reason: String::new(),
        },
        connection_timeout_seconds: 120,
        troubleshooting_url: "https://coder.com/docs/templates#troubleshooting-templates".into(),
    }
}

/// A devcontainer sub-agent under `parent`, as Coder adds one once the parent agent has
/// started the devcontainer: same resource, `parent_id` set, not yet connected.
fn add_subagent(e: &mut WsEntry, parent: Uuid, now: Time) -> Uuid {
    let mut sub = new_agent(0, now);
    sub.name = "devcontainer".into();
    sub.parent_id = Some(parent);
    sub.directory = "/workspaces/project".into();
    let id = sub.id;
    let build_id = e.ws.latest_build.id;
    mutate_build(e, build_id, |b| {
        if let Some(r) = b
            .resources
            .iter_mut()
            .find(|r| r.agents.iter().any(|a| a.id == parent))
        {
            r.agents.push(sub);
        }
    });
    id
}

fn agent_name(e: &WsEntry, agent: Uuid) -> String {
    e.ws.latest_build
        .agents()
        .find(|a| a.id == agent)
        .map(|a| a.name.clone())
        .unwrap_or_default()
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

fn mutate_agent(e: &mut WsEntry, agent: Uuid, mut f: impl FnMut(&mut WorkspaceAgent)) {
    let build_id = e.ws.latest_build.id;
    mutate_build(e, build_id, |b| {
        for r in &mut b.resources {
            for a in &mut r.agents {
                if a.id == agent {
                    f(a);
                    a.updated_at = Utc::now();
                }
            }
        }
    });
    let failing: Vec<Uuid> =
        e.ws.latest_build
            .agents()
            .filter(|a| !a.health.healthy)
            .map(|a| a.id)
            .collect();
    e.ws.health = WorkspaceHealth {
        healthy: failing.is_empty(),
        failing_agents: failing,
    };
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
