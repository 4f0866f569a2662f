//! `app`: a request through Coder's app proxy to one of the agent's apps answers as the
//! scenario expects, and, when asked, a websocket to it echoes a message.
//!
//! The app is waited for first: an app with a health check is reached once its `health` is
//! `healthy` (the dashboard shows it as starting until then); one reported `unhealthy` gets
//! one more round of checks (interval × threshold, at least [`UNHEALTHY_GRACE`]) to pass
//! before the phase fails with `agent_unhealthy`. Then one GET with the session token, no
//! redirect followed; the websocket after it carries only the signed app token the proxy
//! answered with, as a browser would.

use std::time::{Duration, Instant};

use serde::Deserialize;
use uuid::Uuid;

use super::{Ctx, Leaves, PhaseDef, PhaseError, Reason, Stage, Walk};
use crate::coder::apps::{AppAccess, AppAnswer, AppTarget};
use crate::coder::{ApiError, Workspace, WorkspaceAppHealth as Health};

pub const DEF: PhaseDef = PhaseDef {
    default_timeout: Duration::from_secs(2 * 60),
    runs_in: &[Stage::AgentReady],
    leaves: Leaves::Same,
    run: |ctx, walk| Box::pin(run_phase(ctx, walk)),
    ..PhaseDef::BASE
};

/// The least time an `unhealthy` app is given to pass a check again.
pub const UNHEALTHY_GRACE: Duration = Duration::from_secs(5);

/// What the scenario asks of the `app` phase.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// The app's slug on the agent (`coder_app.slug`).
    pub slug: String,
    pub access: AccessMode,
    /// The path under the app's root to request.
    pub path: String,
    /// Statuses that count as success; `None`: any 2xx or 3xx (but a redirect to log in).
    pub statuses: Option<Vec<u16>>,
    /// Text the answer's body must contain (within its first 64 KiB).
    pub expect: Option<String>,
    /// Send a message on a websocket to the app and time its echo.
    pub websocket: bool,
}

/// How the app is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// As the dashboard opens it: on a subdomain when the app is marked `subdomain` and the
    /// deployment has a wildcard app host, else path-based.
    #[default]
    Auto,
    Path,
    Subdomain,
}

async fn run_phase(ctx: &Ctx, walk: &mut Walk) -> Result<(), PhaseError> {
    let Some(s) = ctx.settings.app.as_ref() else {
        return Err(PhaseError::new(
            Reason::ProtocolError,
            "the scenario names no app (`app = \"<slug>\"`)",
        ));
    };
    let (agent, _) = walk.agent()?;
    let t = Instant::now();
    let found = wait_for_app(walk, agent, &s.slug).await?;
    walk.sub_timings.insert("health", ms(t));

    let access = access(ctx, s, found.subdomain).await?;
    let target = ctx
        .client
        .app_target(
            &access,
            &walk.owner,
            &walk.name,
            &found.agent_name,
            &s.slug,
            &s.path,
        )
        .map_err(|e| PhaseError::new(Reason::ProtocolError, e))?;
    let t = Instant::now();
    let answer = ctx.client.app_get(&target, None).await?;
    walk.sub_timings.insert("http", ms(t));
    check(s, &target, &answer, &found.listed)?;
    if s.websocket {
        let t = Instant::now();
        echo(ctx, &target, answer.signed_token.as_deref()).await?;
        walk.sub_timings.insert("websocket_echo", ms(t));
    }
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The app as the agent lists it.
struct Found {
    agent_name: String,
    subdomain: bool,
    /// Every slug the agent has, for the message when the proxy does not find ours.
    listed: Vec<String>,
}

enum Seen {
    /// Ready to reach (healthy, no health check, or not listed: the proxy will say).
    Go(Found),
    /// Reported unhealthy; this long to pass again.
    Unhealthy(Found, Duration),
}

/// The app on the walk's agent (or, when that agent lacks it, on any agent, as Coder's proxy
/// looks across the workspace), once it can be reached.
fn look(ws: &Workspace, agent: Uuid, slug: &str) -> Option<Seen> {
    let agents: Vec<_> = ws.latest_build.agents().collect();
    let mine = agents.iter().find(|a| a.id == agent);
    let with_app = mine
        .filter(|a| a.apps.iter().any(|p| p.slug == slug))
        .or_else(|| {
            agents
                .iter()
                .find(|a| a.apps.iter().any(|p| p.slug == slug))
        });
    let Some(a) = with_app else {
        let a = mine?;
        return Some(Seen::Go(Found {
            agent_name: a.name.clone(),
            subdomain: false,
            listed: a.apps.iter().map(|p| p.slug.clone()).collect(),
        }));
    };
    let app = a.apps.iter().find(|p| p.slug == slug)?;
    let found = Found {
        agent_name: a.name.clone(),
        subdomain: app.subdomain,
        listed: a.apps.iter().map(|p| p.slug.clone()).collect(),
    };
    match app.health {
        Health::Disabled | Health::Healthy => Some(Seen::Go(found)),
        Health::Unhealthy => {
            let hc = app.healthcheck.clone().unwrap_or_default();
            let window = Duration::from_secs((hc.interval.max(0) * hc.threshold.max(0)) as u64);
            Some(Seen::Unhealthy(found, window.max(UNHEALTHY_GRACE)))
        }
        Health::Initializing | Health::Other => None,
    }
}

async fn wait_for_app(walk: &mut Walk, agent: Uuid, slug: &str) -> Result<Found, PhaseError> {
    let updates = walk.updates()?;
    let first = updates
        .wait_for(super::agent::POLL_EVERY, |ws| look(ws, agent, slug))
        .await?;
    let (found, grace) = match first {
        Seen::Go(f) => return Ok(f),
        Seen::Unhealthy(f, grace) => (f, grace),
    };
    let again = updates.wait_for(super::agent::POLL_EVERY, |ws| match look(ws, agent, slug) {
        Some(Seen::Go(f)) => Some(f),
        _ => None,
    });
    match tokio::time::timeout(grace, again).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(PhaseError::new(
            Reason::AgentUnhealthy,
            format!(
                "app {slug:?} on agent {:?} is unhealthy: its health check kept failing for {} more",
                found.agent_name,
                humantime::format_duration(grace)
            ),
        )),
    }
}

/// Path or subdomain: as the scenario says, else as the dashboard would open the app.
async fn access(ctx: &Ctx, s: &AppSettings, app_subdomain: bool) -> Result<AppAccess, PhaseError> {
    let want_subdomain = match s.access {
        AccessMode::Path => return Ok(AppAccess::Path),
        AccessMode::Subdomain => true,
        AccessMode::Auto => app_subdomain,
    };
    if !want_subdomain {
        return Ok(AppAccess::Path);
    }
    let host = ctx
        .run
        .app_host
        .get_or_try_init(|| ctx.client.app_host())
        .await
        .map_err(PhaseError::from)?;
    match (host, s.access) {
        (Some(h), _) => Ok(AppAccess::Subdomain(h.clone())),
        (None, AccessMode::Auto) => Ok(AppAccess::Path),
        (None, _) => Err(PhaseError::new(
            Reason::ConnectError,
            "app_access is \"subdomain\" but this Coder has no wildcard app host (GET /api/v2/applications/host is empty): set CODER_WILDCARD_ACCESS_URL on Coder, or app_access = \"path\"",
        )),
    }
}

/// The proxy's answer against what the scenario accepts.
fn check(
    s: &AppSettings,
    target: &AppTarget,
    a: &AppAnswer,
    listed: &[String],
) -> Result<(), PhaseError> {
    let what = format!("app {:?} ({})", s.slug, target.access);
    if a.is_login() {
        return Err(PhaseError::new(
            Reason::AuthError,
            format!(
                "{what}: Coder's app proxy sent the request to log in ({} to {}): it did not take the session token",
                a.status,
                a.location.as_deref().unwrap_or_default()
            ),
        ));
    }
    let accepted = match &s.statuses {
        Some(list) => list.contains(&a.status),
        None => (200..400).contains(&a.status),
    };
    if !accepted {
        let page = a.title().map(|t| format!(" ({t})")).unwrap_or_default();
        let hint = match a.status {
            404 if !listed.contains(&s.slug) => format!(
                "; the agent lists apps: {}",
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    listed.join(", ")
                }
            ),
            403 if target.access == "path" => {
                "; path-based apps may be disabled on this Coder: try app_access = \"subdomain\""
                    .to_string()
            }
            _ => String::new(),
        };
        let reason = if a.status >= 500 {
            Reason::Http5xx
        } else {
            Reason::Http4xx
        };
        return Err(PhaseError::new(
            reason,
            format!("{what} answered {}{page}{hint}", a.status),
        ));
    }
    if let Some(expect) = &s.expect
        && !crate::reason::contains(&a.body, expect.as_bytes())
    {
        let shown = String::from_utf8_lossy(&a.body[..a.body.len().min(200)]).to_string();
        return Err(PhaseError::new(
            Reason::OutputMismatch,
            format!(
                "{what} answered {} without {expect:?}; it began {shown:?}",
                a.status
            ),
        ));
    }
    Ok(())
}

/// One message on a websocket to the app, and its echo.
async fn echo(ctx: &Ctx, target: &AppTarget, signed: Option<&str>) -> Result<(), PhaseError> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let mut ws = ctx.client.app_websocket(target, signed).await?;
    let sent = format!("scaletestd {}", Uuid::new_v4());
    let dropped = |e: String| {
        PhaseError::from(ApiError::Connect {
            method: reqwest::Method::GET,
            path: target.url.path().to_string(),
            detail: format!("the app's websocket dropped: {e}"),
        })
    };
    ws.send(Message::text(sent.clone()))
        .await
        .map_err(|e| dropped(e.to_string()))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == sent => break,
            Some(Ok(Message::Binary(b))) if b == sent.as_bytes() => break,
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                let _ = ws.close(None).await;
                return Err(PhaseError::new(
                    Reason::OutputMismatch,
                    format!(
                        "app websocket ({}) answered something other than the message sent",
                        target.access
                    ),
                ));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(dropped("closed before echoing".into()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(dropped(e.to_string())),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}
