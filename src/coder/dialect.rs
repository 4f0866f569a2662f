//! What the Coder in front of us speaks, found out once per run and shared by every
//! workspace of it: which route creates workspaces and which transport follows them.
//!
//! Coder versions in the field differ in ways that matter to a scale test: servers older than
//! mid-2024 have no `POST /users/{user}/workspaces`, servers older than v2.22 have no
//! `watch-ws`, and a future one may drop the deprecated SSE `watch`. Each choice starts at the
//! newest and falls back on the first 404 that says the route does not exist; the fallback is
//! logged once and kept for the rest of the run. Workspaces do not wait for one another to find
//! out (that wait would show in their phase timings): an old server costs one 404 for each
//! workspace already asking when the first 404 came back, at most `concurrency` per run.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How a workspace's changes reach us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WatchTransport {
    /// `GET /workspaces/{id}/watch-ws`: a websocket of JSON events (Coder ≥ 2.22).
    WatchWs,
    /// `GET /workspaces/{id}/watch`: server-sent events (deprecated, still served).
    Sse,
    /// `GET /workspaces/{id}` at the intervals Coder's own harness polls at.
    Poll,
}

impl WatchTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchTransport::WatchWs => "watch-ws",
            WatchTransport::Sse => "sse",
            WatchTransport::Poll => "poll",
        }
    }

    fn from_u8(v: u8) -> Option<WatchTransport> {
        match v {
            1 => Some(WatchTransport::WatchWs),
            2 => Some(WatchTransport::Sse),
            3 => Some(WatchTransport::Poll),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            WatchTransport::WatchWs => 1,
            WatchTransport::Sse => 2,
            WatchTransport::Poll => 3,
        }
    }

    /// The next one to try when this one's route does not exist.
    pub fn fallback(self) -> WatchTransport {
        match self {
            WatchTransport::WatchWs => WatchTransport::Sse,
            WatchTransport::Sse | WatchTransport::Poll => WatchTransport::Poll,
        }
    }
}

impl std::fmt::Display for WatchTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which route creates workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateRoute {
    /// `POST /users/{user}/workspaces` (mid-2024 on).
    User,
    /// `POST /organizations/{org}/members/{user}/workspaces` (deprecated, still served).
    OrganizationMember,
}

impl CreateRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            CreateRoute::User => "/api/v2/users/{user}/workspaces",
            CreateRoute::OrganizationMember => {
                "/api/v2/organizations/{organization}/members/{user}/workspaces"
            }
        }
    }
}

/// One run's knowledge of the server. Cheap to share (`Arc`), lock-free to read.
#[derive(Debug)]
pub struct Dialect {
    /// The transport to try now: 0 = `first_watch`, else a [`WatchTransport`].
    watch: AtomicU8,
    /// Set once a stream opened (or nothing is left but polling): the run's choice is made.
    settled: AtomicBool,
    /// Where waiting starts: `Poll` when the scenario asks to poll.
    first_watch: WatchTransport,
    /// 0 = not known yet (try the user route), 1 = the user route, 2 = the
    /// organization-member route.
    create: AtomicU8,
}

impl Dialect {
    /// A run that follows workspaces from `first` on (watch-ws normally, poll when the
    /// scenario asks for polling).
    pub fn new(first: WatchTransport) -> Dialect {
        Dialect {
            watch: AtomicU8::new(0),
            settled: AtomicBool::new(first == WatchTransport::Poll),
            first_watch: first,
            create: AtomicU8::new(0),
        }
    }

    /// The transport to open now: the one chosen so far, or the first to try.
    pub fn watch(&self) -> WatchTransport {
        WatchTransport::from_u8(self.watch.load(Ordering::Relaxed)).unwrap_or(self.first_watch)
    }

    /// The transport the run settled on: `None` until a stream opened or only polling is
    /// left (for reports and the status page).
    pub fn chosen_watch(&self) -> Option<WatchTransport> {
        self.settled.load(Ordering::Relaxed).then(|| self.watch())
    }

    /// `t` worked: the run settles on it. Logged once per run.
    pub fn watch_works(&self, t: WatchTransport) {
        self.watch.fetch_max(t.to_u8(), Ordering::Relaxed);
        if !self.settled.swap(true, Ordering::Relaxed) {
            tracing::info!(transport = t.as_str(), "following workspaces over {t}");
        }
    }

    /// `t`'s route does not exist on this server: the next one for the rest of the run.
    /// Never goes back to a newer transport once a workspace found an older one missing.
    pub fn watch_missing(&self, t: WatchTransport) -> WatchTransport {
        let next = t.fallback();
        let prev = self.watch.fetch_max(next.to_u8(), Ordering::Relaxed);
        if prev < next.to_u8() {
            tracing::warn!(
                missing = t.as_str(),
                instead = next.as_str(),
                "this Coder does not serve {t} (404): following workspaces over {next} for the rest of the run"
            );
        }
        if next == WatchTransport::Poll {
            self.settled.store(true, Ordering::Relaxed);
        }
        self.watch()
    }

    pub fn create_route(&self) -> CreateRoute {
        if self.create.load(Ordering::Relaxed) == 2 {
            CreateRoute::OrganizationMember
        } else {
            CreateRoute::User
        }
    }

    /// The user route answered.
    pub fn create_route_works(&self) {
        let _ = self
            .create
            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The user route does not exist (a server older than mid-2024).
    pub fn create_route_missing(&self) {
        if self.create.swap(2, Ordering::Relaxed) != 2 {
            tracing::warn!(
                "this Coder has no POST /api/v2/users/{{user}}/workspaces (404 Route not found; older than mid-2024): creating through POST /api/v2/organizations/{{organization}}/members/{{user}}/workspaces for the rest of the run"
            );
        }
    }
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect::new(WatchTransport::WatchWs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_falls_back_in_order_and_never_goes_back() {
        let d = Dialect::default();
        assert_eq!(d.watch(), WatchTransport::WatchWs);
        assert_eq!(d.chosen_watch(), None);
        assert_eq!(
            d.watch_missing(WatchTransport::WatchWs),
            WatchTransport::Sse
        );
        // A workspace that opened watch-ws before the others learnt it is missing.
        d.watch_works(WatchTransport::WatchWs);
        assert_eq!(d.watch(), WatchTransport::Sse);
        assert_eq!(d.watch_missing(WatchTransport::Sse), WatchTransport::Poll);
        assert_eq!(
            d.watch_missing(WatchTransport::WatchWs),
            WatchTransport::Poll
        );
        assert_eq!(d.chosen_watch(), Some(WatchTransport::Poll));
    }

    #[test]
    fn create_route_is_remembered() {
        let d = Dialect::default();
        assert_eq!(d.create_route(), CreateRoute::User);
        d.create_route_missing();
        d.create_route_missing();
        assert_eq!(d.create_route(), CreateRoute::OrganizationMember);
    }
}
