//! Builds: a FIFO queue in front of `provisioners` daemons (so `queue_position` moves and
//! `started_at - created_at` grows with load), then init, plan, graph and apply with the
//! configured latencies, then `succeeded`, `failed` or `canceled`; coderd's job series.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::agents::new_agent;
use super::{State, mutate_build};
use crate::sim::types::*;

impl State {
    /// Queues a build of `transition` (start, stop or delete), its template version and
    /// parameters the previous build's, as Coder's wsbuilder defaults them
    /// (codersdk/workspaces.go, coderd/wsbuilder); `Err` with Coder's status and message when
    /// it cannot: 409 while another build is active (coderd/workspacebuilds.go).
    pub fn start_build(
        self: &Arc<Self>,
        ws_id: Uuid,
        transition: WorkspaceTransition,
    ) -> Result<WorkspaceBuild, (u16, String)> {
        self.start_build_with(ws_id, transition, "initiator")
    }

    /// [`State::start_build`] with Coder's build `reason` (`initiator`, `autostart`, …).
    pub fn start_build_with(
        self: &Arc<Self>,
        ws_id: Uuid,
        transition: WorkspaceTransition,
        reason: &str,
    ) -> Result<WorkspaceBuild, (u16, String)> {
        let build = {
            let mut w = self.lock();
            if let Some(g) = w.deleted.get(&ws_id) {
                // Coder's route middleware finds deleted workspaces too
                // (coderd/httpmw/workspaceparam.go), and `postWorkspaceBuilds`
                // (coderd/workspacebuilds.go, v2.36.1) refuses a start or stop of one with 409
                // but runs another delete build: 201, seen from a real coderd.
                if transition != WorkspaceTransition::Delete {
                    let verb = if transition == WorkspaceTransition::Start {
                        "start"
                    } else {
                        "stop"
                    };
                    return Err((409, format!("Cannot {verb} a deleted workspace!")));
                }
                let ws = &g.ws;
                let number = ws.latest_build.build_number + 1;
                let owner = (ws.owner_id, ws.owner_name.clone());
                let build =
                    self.new_build(ws_id, &ws.name, (owner.0, &owner.1), number, transition);
                w.build_owner.insert(build.id, ws_id);
                let g = w.deleted.get_mut(&ws_id).expect("looked up above");
                g.builds.push(build.clone());
                g.ws.latest_build = build.clone();
                g.tx.send_replace(Arc::new(g.ws.clone()));
                drop(w);
                tokio::spawn(self.clone().redelete(ws_id, build.id));
                return Ok(build);
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
            let owner = (e.ws.owner_id, e.ws.owner_name.clone());
            let mut build = self.new_build(ws_id, &name, (owner.0, &owner.1), number, transition);
            build.reason = reason.to_string();
            e.builds.push(build.clone());
            e.ws.latest_build = build.clone();
            e.ws.updated_at = Utc::now();
            e.cancel.insert(build.id, CancellationToken::new());
            w.build_owner.insert(build.id, ws_id);
            w.queue.push_back((build.id, ws_id));
            // Published at once, as `postWorkspaceBuilds` does (coderd/workspacebuilds.go,
            // v2.36.1: `publishWorkspaceUpdate`): a stream opened now starts from the new
            // build, not from the state before it.
            w.publish(ws_id);
            build
        };
        tokio::spawn(self.clone().run_job(ws_id, build.id));
        Ok(self.build(build.id).unwrap_or(build))
    }

    /// Runs a delete build posted on a deleted workspace: its job goes through a provisioner's
    /// destroy, and the workspace (still deleted) shows it as its latest build.
    async fn redelete(self: Arc<Self>, ws_id: Uuid, build_id: Uuid) {
        let finish = |w: &mut super::World, at: Time, succeeded: bool| {
            let Some(g) = w.deleted.get_mut(&ws_id) else {
                return;
            };
            let Some(b) = g.builds.iter_mut().find(|b| b.id == build_id) else {
                return;
            };
            b.job.started_at.get_or_insert(at);
            b.updated_at = at;
            if succeeded {
                b.job.completed_at = Some(at);
                b.has_ai_task = Some(false);
                b.has_external_agent = Some(false);
                b.job.status = ProvisionerJobStatus::Succeeded;
                b.status = WorkspaceStatus::Deleted;
            } else {
                b.job.status = ProvisionerJobStatus::Running;
                b.status = WorkspaceStatus::Deleting;
            }
            g.ws.latest_build = b.clone();
            g.ws.updated_at = at;
            g.tx.send_replace(Arc::new(g.ws.clone()));
        };
        let Ok(permit) = self.provisioners.clone().acquire_owned().await else {
            return;
        };
        finish(&mut self.lock(), Utc::now(), false);
        tokio::time::sleep(self.cfg.latency.destroy.sample()).await;
        drop(permit);
        finish(&mut self.lock(), Utc::now(), true);
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

    /// A build of `owner`'s workspace, started by its owner.
    pub(super) fn new_build(
        &self,
        ws_id: Uuid,
        name: &str,
        owner: (Uuid, &str),
        number: i64,
        transition: WorkspaceTransition,
    ) -> WorkspaceBuild {
        let now = Utc::now();
        let id = Uuid::new_v4();
        let t = &self.id.template;
        WorkspaceBuild {
            id,
            created_at: now,
            updated_at: now,
            workspace_id: ws_id,
            workspace_name: name.to_string(),
            workspace_owner_id: owner.0,
            workspace_owner_name: owner.1.to_string(),
            template_version_id: self.id.template.active_version_id,
            template_version_name: "v1".into(),
            build_number: number,
            transition,
            initiator_id: owner.0,
            initiator_name: owner.1.to_string(),
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
                // As coderd tags an organization-scoped job (provisionersdk.MutateTags).
                tags: BTreeMap::from([
                    ("owner".to_string(), String::new()),
                    ("scope".to_string(), "organization".to_string()),
                ]),
                queue_position: 0,
                queue_size: 0,
                organization_id: self.id.org.id,
                kind: "workspace_build".into(),
                initiator_id: owner.0,
                input: JobInput {
                    workspace_build_id: id,
                },
                metadata: JobMetadata {
                    template_version_name: "v1".into(),
                    template_id: t.id,
                    template_name: t.name.clone(),
                    template_display_name: t.display_name.clone(),
                    template_icon: String::new(),
                },
                logs_overflowed: false,
            },
            reason: "initiator".into(),
            resources: vec![],
            deadline: None,
            max_deadline: None,
            status: WorkspaceStatus::Pending,
            daily_cost: 0,
            matched_provisioners: MatchedProvisioners {
                count: self.cfg.provisioners.max(1) as i64,
                available: self.cfg.provisioners.max(1) as i64,
                most_recently_seen: Some(now),
            },
            template_version_preset_id: None,
            has_ai_task: None,
            has_external_agent: None,
        }
    }

    /// A build's job from queue to completion, then (start builds) its agents.
    pub(super) async fn run_job(self: Arc<Self>, ws_id: Uuid, build_id: Uuid) {
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
        let mut first = false;
        let mut name = String::new();
        let mut job_id = Uuid::nil();
        let mut agents_going = None;
        self.update(ws_id, |w, id| {
            w.queue.retain(|(b, _)| *b != build_id);
            if let Some(e) = w.live.get_mut(&id) {
                name = e.ws.name.clone();
                if e.ws.latest_build.transition != WorkspaceTransition::Start {
                    // A stop or delete: the agents shut down with the job, and their
                    // terminals and SSH sessions end (a start brings new ones).
                    agents_going = Some(std::mem::take(&mut e.agent_gone));
                }
                mutate_build(e, build_id, |b| {
                    transition = b.transition;
                    first = b.build_number == 1;
                    job_id = b.job.id;
                    b.job.status = ProvisionerJobStatus::Running;
                    b.job.started_at = Some(started);
                    b.job.worker_id = Some(worker);
                });
            }
        });

        if let Some(gone) = agents_going {
            gone.cancel();
        }
        let lat = &self.cfg.latency;
        let apply = match transition {
            WorkspaceTransition::Delete => lat.destroy,
            WorkspaceTransition::Stop => lat.stop,
            WorkspaceTransition::Start => lat.apply,
        };
        // The first build's injected failures; a restart is not failed again for them.
        let stuck = transition == WorkspaceTransition::Start
            && first
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
                action: match transition {
                    WorkspaceTransition::Start => "create",
                    WorkspaceTransition::Stop | WorkspaceTransition::Delete => "delete",
                }
                .into(),
                resource: "docker_container.workspace[0]".into(),
            });
            if canceled {
                break;
            }
        }
        let failed = !canceled
            && match transition {
                WorkspaceTransition::Start => {
                    first && self.cfg.inject("build", &name, self.cfg.failures.build)
                }
                WorkspaceTransition::Stop => self.cfg.inject("stop", &name, self.cfg.failures.stop),
                WorkspaceTransition::Delete => false,
            };
        drop(permit);

        let done = Utc::now();
        self.job_metrics(&name, transition, canceled, failed, done - started);
        let agents = if transition == WorkspaceTransition::Start && !canceled && !failed {
            (0..self.cfg.agents_per_workspace.max(1))
                .map(|i| new_agent(i, done, self.cfg.wildcard_host.is_some()))
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
                // coderd fills these `*bool`s when the job completes.
                b.has_ai_task = Some(false);
                b.has_external_agent = Some(false);
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
            if transition == WorkspaceTransition::Stop
                && let Some(l) = w.ledger.get_mut(&name)
            {
                l.stop_failed = failed;
                l.stops += 1;
            }
            if transition == WorkspaceTransition::Start
                && !first
                && let Some(l) = w.ledger.get_mut(&name)
            {
                l.restarts += 1;
            }
            if transition == WorkspaceTransition::Start
                && first
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
                    first,
                ));
            }
        }
    }

    /// coderd's job series for a finished job.
    pub(super) fn job_metrics(
        &self,
        name: &str,
        transition: WorkspaceTransition,
        canceled: bool,
        failed: bool,
        took: chrono::Duration,
    ) {
        use crate::sim::metrics::{Builds, JobTiming};
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
            workspace_owner: self.owner_name(name),
            workspace_transition: transition.into(),
        };
        self.metrics.builds.get_or_create(&labels).inc();
    }
}
