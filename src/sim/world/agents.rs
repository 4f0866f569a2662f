//! Agents: `connecting` → `connected`, `created` → `starting` → `ready` (or as injected),
//! devcontainer sub-agents, and agents that go away.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{State, WsEntry, mutate_build};
use crate::sim::config::SubAgent;
use crate::sim::types::*;

impl State {
    /// One agent's start: connect, run its start-up script, be ready (or fail as injected,
    /// when `inject`). The workspace's first agent then starts its devcontainer sub-agent,
    /// when the simulator has one.
    pub(super) async fn run_agent(
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
                    a.latency = Some(derp_latency());
                }
            });
        });
        if timeout {
            return;
        }
        // A real agent connects first and reports its lifecycle after, so watchers see
        // `connected` with lifecycle `created` before `starting` (seen from a real coderd:
        // the agent's RPC `UpdateLifecycle` comes after its connection, agent/agent.go).
        // Taken out of the start-up latency, so the agent is ready when it always was.
        let startup = lat.agent_startup.sample();
        let gap = CONNECTED_TO_STARTING.min(startup / 2);
        tokio::time::sleep(gap).await;
        let starting = Utc::now();
        self.update(ws_id, |w, id| {
            let Some(e) = w.live.get_mut(&id) else { return };
            mutate_agent(e, agent, |a| {
                a.lifecycle_state = WorkspaceAgentLifecycle::Starting;
                a.started_at = Some(starting);
            });
        });
        self.metrics
            .agents_up
            .get_or_create(&self.agents_up_labels(&name, &self.owner_name(&name)))
            .inc();
        tokio::time::sleep(startup - gap).await;
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
                sub = Some(add_subagent(
                    e,
                    agent,
                    ready,
                    self.cfg.wildcard_host.is_some(),
                ));
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
        if !error {
            tokio::spawn(self.clone().run_app_health(ws_id, agent, name.clone()));
        }
        if let Some(sub) = sub
            && self.cfg.subagent == SubAgent::Ready
        {
            Box::pin(self.run_agent(ws_id, build_id, sub, name, since, false)).await;
        }
    }

    /// The agent's health-checked apps pass their first check (`initializing` → `healthy`)
    /// some time after the agent is ready, or never pass (`unhealthy`) as injected.
    async fn run_app_health(self: Arc<Self>, ws_id: Uuid, agent: Uuid, name: String) {
        tokio::time::sleep(self.cfg.latency.app_health.sample()).await;
        let unhealthy = self
            .cfg
            .inject("app_unhealthy", &name, self.cfg.failures.app_unhealthy);
        self.update(ws_id, |w, id| {
            if let Some(l) = w.ledger.get_mut(&name) {
                l.app_unhealthy |= unhealthy;
            }
            let Some(e) = w.live.get_mut(&id) else { return };
            mutate_agent(e, agent, |a| {
                for app in &mut a.apps {
                    if app.health == WorkspaceAppHealth::Initializing {
                        app.health = if unhealthy {
                            WorkspaceAppHealth::Unhealthy
                        } else {
                            WorkspaceAppHealth::Healthy
                        };
                    }
                }
            });
        });
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
            .remove(&self.agents_up_labels(workspace, &self.owner_name(workspace)));
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

    /// coderd's `agents_up` labels; `owner` given, as the caller may hold the world's lock.
    pub(super) fn agents_up_labels(
        &self,
        workspace: &str,
        owner: &str,
    ) -> crate::sim::metrics::AgentsUp {
        crate::sim::metrics::AgentsUp {
            template_name: self.id.template.name.clone(),
            template_version: "v1".into(),
            username: owner.to_string(),
            workspace_name: workspace.to_string(),
        }
    }
}

/// Every simulated agent's apps: `echo`, an HTTP app with a health check, and `ws-echo`, a
/// websocket echo without one (health `disabled`). Marked `subdomain` when the deployment
/// has a wildcard host, as a template author would.
fn apps(subdomain: bool) -> Vec<WorkspaceApp> {
    let app = |slug: &str, name: &str, port: u16, healthcheck: Healthcheck| WorkspaceApp {
        id: Uuid::new_v4(),
        url: format!("http://127.0.0.1:{port}"),
        external: false,
        slug: slug.into(),
        display_name: name.into(),
        subdomain,
        subdomain_name: String::new(),
        sharing_level: "owner".into(),
        health: if healthcheck.url.is_empty() {
            WorkspaceAppHealth::Disabled
        } else {
            WorkspaceAppHealth::Initializing
        },
        healthcheck,
        hidden: false,
        open_in: "slim-window".into(),
        statuses: vec![],
    };
    vec![
        app(
            "echo",
            "Echo",
            8080,
            Healthcheck {
                url: "http://127.0.0.1:8080/healthz".into(),
                interval: 1,
                threshold: 3,
            },
        ),
        app("ws-echo", "Websocket echo", 8081, Healthcheck::default()),
    ]
}

pub(super) fn new_agent(i: usize, now: Time, subdomain_apps: bool) -> WorkspaceAgent {
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
        apps: apps(subdomain_apps),
        health: WorkspaceAgentHealth {
            healthy: true,
            reason: String::new(),
        },
        connection_timeout_seconds: 120,
        troubleshooting_url: "https://coder.com/docs/templates#troubleshooting-templates".into(),
        latency: None,
        inert: Default::default(),
    }
}

/// From an agent's connection to its first lifecycle report (66 ms on a real coderd with a
/// real agent on this machine), at most half the start-up latency.
const CONNECTED_TO_STARTING: std::time::Duration = std::time::Duration::from_millis(50);

/// What a connected agent reports of its DERP latency (`codersdk.DERPRegion`), as coderd
/// shows it once the agent's first stats arrive: the embedded relay, preferred.
fn derp_latency() -> std::collections::BTreeMap<String, DerpRegion> {
    std::collections::BTreeMap::from([(
        "Coder Embedded Relay".to_string(),
        DerpRegion {
            preferred: true,
            latency_ms: 0.5 + rand::random::<f64>(),
        },
    )])
}

/// A devcontainer sub-agent under `parent`, as Coder adds one once the parent agent has
/// started the devcontainer: same resource, `parent_id` set, not yet connected.
fn add_subagent(e: &mut WsEntry, parent: Uuid, now: Time, subdomain_apps: bool) -> Uuid {
    let mut sub = new_agent(0, now, subdomain_apps);
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

pub(super) fn mutate_agent(e: &mut WsEntry, agent: Uuid, mut f: impl FnMut(&mut WorkspaceAgent)) {
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
