//! What the simulator injected and measured per workspace, for tests to compare with.

use std::time::Duration;

use super::State;

/// What the simulator injected and measured for one workspace, for tests to compare with.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub name: String,
    /// The user the workspace was created for, and every user whose token made a request
    /// about it (its builds, agents, streams and terminals included).
    pub owner: String,
    pub callers: std::collections::BTreeSet<String>,
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
    /// Stop builds run, and whether the last one failed as injected (`failures.stop`).
    pub stops: u32,
    pub stop_failed: bool,
    /// Start builds after the first.
    pub restarts: u32,
    /// App requests that reached an app, how they came (`path` or `subdomain`), and how many
    /// were let in on a signed app token rather than the session token.
    pub app_requests: u32,
    pub app_access: Option<&'static str>,
    pub app_signed: u32,
    /// Messages the `ws-echo` app sent back.
    pub app_echoes: u32,
    /// Injected: the proxy answered 502; the `echo` app's health check never passed.
    pub app_502: bool,
    pub app_unhealthy: bool,
    /// The autostart schedule set now (cleared: `None`), the minute it is next due, and the
    /// start builds the lifecycle executor created (the last one's id).
    pub autostart_schedule: Option<String>,
    pub autostart_due: Option<chrono::DateTime<chrono::Utc>>,
    pub autostarts: u32,
    pub autostart_build: Option<uuid::Uuid>,
}

impl State {
    pub fn note_caller(&self, name: &str, username: &str) {
        if let Some(l) = self.lock().ledger.get_mut(name)
            && !l.callers.contains(username)
        {
            l.callers.insert(username.to_string());
        }
    }

    pub fn ledger(&self) -> Vec<Ledger> {
        self.lock().ledger.values().cloned().collect()
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

impl State {
    pub fn note_app(&self, name: &str, access: &'static str, signed: bool) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.app_requests += 1;
            l.app_access = Some(access);
            l.app_signed += u32::from(signed);
        }
    }

    pub fn note_app_502(&self, name: &str) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.app_502 = true;
        }
    }

    pub fn note_app_echo(&self, name: &str) {
        if let Some(l) = self.lock().ledger.get_mut(name) {
            l.app_echoes += 1;
        }
    }
}
