//! The simulator's workspace app proxy: every agent's `echo` (HTTP) and `ws-echo` (websocket)
//! apps, reached through Coder's routes and answered in Coder's order.
//!
//! Read in coder/coder before imitating: `coderd/workspaceapps/proxy.go` (the path route
//! `/@{user}/{workspace_and_agent}/apps/{slug}/…`, the subdomain middleware, the 307 that
//! adds a missing trailing slash, disabled path apps), `provider.go` (the signed app token
//! read first, then the session token; the `coder_signed_app_token` cookie set on the base
//! path), `db.go` (an invalid or missing session token is "not signed in", answered with a
//! 303 to `/login` for path apps or to `/api/v2/applications/auth-redirect` for subdomain
//! apps; an offline agent is a 502 page), `request.go` (a stopped workspace is a 400 page, an
//! unknown app a 404 page), `errors.go` (the HTML pages) and `appurl/appurl.go` (the
//! `{slug}--{agent}--{workspace}--{user}` label and the wildcard pattern).
//!
//! Stricter than Coder where it costs nothing: an agent named in the URL must be the one
//! that has the app (Coder takes the first agent with the slug).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State as Ax};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::api::App;
use super::types::{WorkspaceAgentStatus, WorkspaceTransition};

/// The signed app token's cookie (`codersdk.SignedAppTokenCookie`).
pub const SIGNED_COOKIE: &str = "coder_signed_app_token";
/// The path-app session cookie (`codersdk.PathAppSessionTokenCookie`).
const PATH_SESSION_COOKIE: &str = "coder_path_app_session_token";
/// Coder's signed app tokens live one minute (`workspaceapps.DefaultTokenExpiry`).
const TOKEN_LIFE: Duration = Duration::from_secs(60);
/// Metric and span route of path-based app requests (coderd's chi pattern).
pub const PATH_ROUTE: &str = "/@{user}/{workspace_and_agent}/apps/{workspaceapp}/*";
/// Metric and span route of subdomain app requests.
pub const SUBDOMAIN_ROUTE: &str = "{app}--{agent}--{workspace}--{user}.{wildcard}/*";

/// The wildcard app host, as `appurl.CompileHostnamePattern` reads it: one `*` at the start
/// standing for one label, then at least one more label; the port is ignored.
#[derive(Debug, Clone)]
pub struct Wildcard {
    /// What follows the `*`, lowercased, without a port (`.apps.sim.test`).
    rest: String,
}

impl Wildcard {
    pub fn parse(pattern: &str) -> Result<Wildcard, String> {
        let p = pattern.trim().to_ascii_lowercase();
        let bad = |why: &str| Err(format!("wildcard_host {pattern:?}: {why}"));
        if p.contains("://") {
            return bad("must not contain a scheme");
        }
        let Some(rest) = p.strip_prefix('*') else {
            return bad("must start with '*'");
        };
        if rest.contains('*') {
            return bad("must contain exactly one '*'");
        }
        let rest = match rest.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => rest,
        };
        if !rest.contains('.') || rest.ends_with('.') {
            return bad("needs at least two labels, such as \"*.apps.example.com\"");
        }
        Ok(Wildcard {
            rest: rest.to_string(),
        })
    }

    /// The label the `*` stands for in `host`, when `host` is under this wildcard.
    fn label<'h>(&self, host: &'h str) -> Option<&'h str> {
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        let host = host.trim_end_matches('.');
        if host.len() <= self.rest.len() || !host.is_char_boundary(host.len() - self.rest.len()) {
            return None;
        }
        let (label, rest) = host.split_at(host.len() - self.rest.len());
        (rest.eq_ignore_ascii_case(&self.rest) && !label.contains('.')).then_some(label)
    }
}

/// How the app was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Path,
    Subdomain,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Path => "path",
            Access::Subdomain => "subdomain",
        }
    }
}

/// One app request, parsed from the path or the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppRequest {
    access: Access,
    user: String,
    workspace: String,
    agent: Option<String>,
    slug: String,
    /// `/@user/ws.agent/apps/slug/` for path apps, `/` for subdomain apps: the cookie's path.
    base_path: String,
    /// The path under the app; empty when a path app was asked for without the slash.
    rest: String,
}

/// A path-based app request: `/@{user}/{workspace}[.{agent}]/apps/{slug}[/…]` (`@` may
/// come as `%40`).
fn parse_path(path: &str) -> Option<AppRequest> {
    let tail = path
        .strip_prefix("/@")
        .or_else(|| path.strip_prefix("/%40"))?;
    let mut parts = tail.splitn(4, '/');
    let user = parts.next().filter(|s| !s.is_empty())?;
    let ws_agent = parts.next().filter(|s| !s.is_empty())?;
    if parts.next()? != "apps" {
        return None;
    }
    let after = parts.next().filter(|s| !s.is_empty())?;
    let (slug, rest) = match after.split_once('/') {
        Some((slug, rest)) => (slug, format!("/{rest}")),
        None => (after, String::new()),
    };
    let (workspace, agent) = match ws_agent.split_once('.') {
        Some((w, a)) => (w, Some(a.to_string())),
        None => (ws_agent, None),
    };
    let base_path = format!(
        "{}/",
        &path[..path.len() - rest.len()].trim_end_matches('/')
    );
    Some(AppRequest {
        access: Access::Path,
        user: user.to_string(),
        workspace: workspace.to_string(),
        agent,
        slug: slug.to_string(),
        base_path,
        rest,
    })
}

/// A subdomain label: `({prefix}---)?{slug}--{agent}--{workspace}--{user}`, each name as
/// Coder's username rule (letters and digits, single hyphens inside).
fn parse_label(label: &str, path: &str) -> Result<AppRequest, String> {
    let main = label.rsplit("---").next().unwrap_or(label);
    let parts: Vec<&str> = main.split("--").collect();
    let name_ok = |s: &&str| {
        !s.is_empty()
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if parts.len() != 4 || !parts.iter().all(name_ok) {
        return Err(format!("invalid application url format: {main:?}"));
    }
    Ok(AppRequest {
        access: Access::Subdomain,
        slug: parts[0].to_string(),
        agent: Some(parts[1].to_string()),
        workspace: parts[2].to_string(),
        user: parts[3].to_string(),
        base_path: "/".into(),
        rest: if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
    })
}

/// What a signed app token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    access: Access,
    workspace: Uuid,
    agent: Uuid,
    slug: String,
    base_path: String,
}

/// Signed app tokens issued so far, until they expire.
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<String, (Grant, Instant)>>);

impl Tokens {
    fn issue(&self, grant: Grant) -> String {
        let token = Uuid::new_v4().simple().to_string();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 4096 {
            let now = Instant::now();
            m.retain(|_, (_, until)| *until > now);
        }
        m.insert(token.clone(), (grant, Instant::now() + TOKEN_LIFE));
        token
    }

    fn valid(&self, token: &str, grant: &Grant) -> bool {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(token)
            .is_some_and(|(g, until)| g == grant && *until > Instant::now())
    }
}

/// The app request `req` is, by its host or path, with the route to report it under.
pub fn route(app: &App, req: &Request) -> Option<&'static str> {
    if subdomain_label(app, req).is_some() {
        return Some(SUBDOMAIN_ROUTE);
    }
    parse_path(req.uri().path()).map(|_| PATH_ROUTE)
}

fn subdomain_label<'r>(app: &App, req: &'r Request) -> Option<&'r str> {
    let wildcard = app.wildcard.as_ref()?;
    wildcard.label(request_host(req)?)
}

/// The host a request was sent to: `Host` over HTTP/1.1, the `:authority` over HTTP/2. Coder
/// asks `httpapi.RequestHost(r)` (coderd/httpapi) in its subdomain app middleware and in
/// `ParseSubdomainAppURL`; it reads Go's `r.Host`, which is either.
fn request_host(req: &Request) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// The middleware: app requests are served here, anything else goes on to the API.
pub async fn proxy(Ax(app): Ax<Arc<App>>, req: Request, next: Next) -> Response {
    let parsed = match subdomain_label(&app, &req) {
        Some(label) => match parse_label(label, req.uri().path()) {
            Ok(r) => Some(r),
            Err(why) => {
                let why = format!("Could not parse subdomain application URL: {why}");
                return page(StatusCode::BAD_REQUEST, "Invalid Application URL", &why);
            }
        },
        None => parse_path(req.uri().path()),
    };
    match parsed {
        Some(r) => serve(app, req, r).await,
        None => next.run(req).await,
    }
}

/// coderd's static error page (`site.RenderStaticErrorPage`): HTML, the title in `<title>`.
fn page(status: StatusCode, title: &str, description: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{description}</p></body></html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn cookie<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The session token as the proxy reads it (`AppCookies.TokenFromRequest`): the access
/// method's own cookie first, then the API's usual places.
fn session_token(req: &Request, access: Access) -> Option<String> {
    if access == Access::Path
        && let Some(t) = cookie(req, PATH_SESSION_COOKIE).filter(|t| !t.is_empty())
    {
        return Some(t.to_string());
    }
    super::api::presented_token(req).or_else(|| {
        req.headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::to_string)
    })
}

/// An app found for a request.
struct Found {
    owner: Uuid,
    workspace: Uuid,
    workspace_name: String,
    agent: Uuid,
    agent_name: String,
    agent_status: WorkspaceAgentStatus,
}

enum Lookup {
    Found(Found),
    Missing(String),
    Stopped,
}

fn lookup(app: &App, r: &AppRequest) -> Lookup {
    let st = &app.state;
    let Some(user) = st.accounts.find(&r.user) else {
        return Lookup::Missing(format!("get user {:?}: no rows", r.user));
    };
    let w = st.lock();
    let Some(e) = w
        .names
        .get(&r.workspace)
        .and_then(|id| w.live.get(id))
        .filter(|e| e.ws.owner_id == user.id)
    else {
        return Lookup::Missing(format!("get workspace {:?}: no rows", r.workspace));
    };
    if e.ws.latest_build.transition == WorkspaceTransition::Stop {
        return Lookup::Stopped;
    }
    let Some(agent) =
        e.ws.latest_build
            .agents()
            .find(|a| a.apps.iter().any(|p| p.slug == r.slug))
    else {
        return Lookup::Missing(format!("no app found with slug {:?}", r.slug));
    };
    if r.agent.as_ref().is_some_and(|n| *n != agent.name) {
        return Lookup::Missing(format!(
            "app {:?} is on agent {:?}, not {:?}",
            r.slug, agent.name, r.agent
        ));
    }
    Lookup::Found(Found {
        owner: e.ws.owner_id,
        workspace: e.ws.id,
        workspace_name: e.ws.name.clone(),
        agent: agent.id,
        agent_name: agent.name.clone(),
        agent_status: agent.status,
    })
}

async fn serve(app: Arc<App>, req: Request, r: AppRequest) -> Response {
    if r.access == Access::Path && !app.state.cfg.path_apps {
        return page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Path-based applications are disabled on this Coder deployment by the administrator.",
        );
    }
    if r.access == Access::Path && r.user == "me" {
        return page(
            StatusCode::NOT_FOUND,
            "Application Not Found",
            "Applications must be accessed with the full username, not @me.",
        );
    }
    let found = match lookup(&app, &r) {
        Lookup::Found(f) => f,
        Lookup::Missing(why) => {
            tracing::debug!(why, "workspace app 404");
            return page(
                StatusCode::NOT_FOUND,
                "Application Not Found",
                "The application or workspace you are trying to access does not exist or you do not have permission to access it.",
            );
        }
        Lookup::Stopped => {
            return page(
                StatusCode::BAD_REQUEST,
                "Workspace Offline",
                "Last workspace transition was to the \"stop\" state. Start the workspace to access its applications.",
            );
        }
    };
    let grant = Grant {
        access: r.access,
        workspace: found.workspace,
        agent: found.agent,
        slug: r.slug.clone(),
        base_path: r.base_path.clone(),
    };
    let signed = cookie(&req, SIGNED_COOKIE).is_some_and(|t| app.apps.valid(t, &grant));
    if !signed {
        let caller = session_token(&req, r.access).and_then(|t| app.state.accounts.caller(&t));
        let Some(caller) = caller else {
            return to_login(&app, &req, &r);
        };
        // db.go `authorizeRequest`: path apps are their owner's alone (even a site owner is
        // refused without the dangerous flags); on a subdomain RBAC lets an owner in too.
        let allowed = match r.access {
            Access::Path => caller.id == found.owner,
            Access::Subdomain => caller.may_see(found.owner),
        };
        if !allowed {
            return page(
                StatusCode::NOT_FOUND,
                "Application Not Found",
                "The application or workspace you are trying to access does not exist or you do not have permission to access it.",
            );
        }
        app.state
            .note_caller(&found.workspace_name, &caller.username);
    }
    if found.agent_status != WorkspaceAgentStatus::Connected {
        return page(
            StatusCode::BAD_GATEWAY,
            "Application Unavailable",
            &format!(
                "Agent state is {:?}, not \"connected\"",
                serde_json::to_value(found.agent_status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        );
    }
    let set_cookie = (!signed).then(|| {
        let token = app.apps.issue(grant);
        let expires = (chrono::Utc::now() + TOKEN_LIFE)
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        format!(
            "{SIGNED_COOKIE}={token}; Path={}; Expires={expires}",
            r.base_path
        )
    });
    app.state
        .note_app(&found.workspace_name, r.access.as_str(), signed);
    let mut resp = answer(&app, req, &r, &found).await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// Not signed in: `db.go` `Issue` sends path apps on the dashboard's host to the login page
/// and subdomain apps to the app auth endpoint, both with 303 See Other.
fn to_login(app: &App, req: &Request, r: &AppRequest) -> Response {
    let mut to = app.access_url.clone();
    let here = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    match r.access {
        Access::Path => {
            to.set_path("/login");
            to.query_pairs_mut()
                .append_pair(
                    "message",
                    "You are signed out or your session has expired. Please sign in again to continue.",
                )
                .append_pair("redirect", &here);
        }
        Access::Subdomain => {
            let host = request_host(req).unwrap_or_default();
            let back = format!("{}://{host}{here}", app.access_url.scheme());
            to.set_path("/api/v2/applications/auth-redirect");
            to.query_pairs_mut().append_pair("redirect_uri", &back);
        }
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The proxied answer: the trailing-slash redirect, the injected 502, or the app itself.
async fn answer(app: &Arc<App>, req: Request, r: &AppRequest, found: &Found) -> Response {
    if r.rest.is_empty() {
        // proxy.go `proxyWorkspaceApp`: web apps want paths relative to their root.
        let to = format!("{}/", req.uri().path());
        return (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response();
    }
    let st = &app.state;
    tokio::time::sleep(st.cfg.latency.app.sample()).await;
    if st
        .cfg
        .inject("app_502", &found.workspace_name, st.cfg.failures.app_502)
    {
        st.note_app_502(&found.workspace_name);
        return page(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway",
            "Failed to proxy request to application: dial tcp 127.0.0.1:8080: connect: connection refused",
        );
    }
    let method = req.method().clone();
    match r.slug.as_str() {
        "echo" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "echo app on {}.{} ({}): {method} {}\n",
                found.workspace_name,
                found.agent_name,
                r.access.as_str(),
                r.rest
            ),
        )
            .into_response(),
        _ => {
            let (mut parts, _) = req.into_parts();
            match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(ws) => {
                    let st = st.clone();
                    let name = found.workspace_name.clone();
                    let crash = app.until_crash();
                    ws.on_upgrade(move |socket| echo(socket, st, name, crash))
                }
                Err(_) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "ws-echo: open a websocket here and every message comes back\n",
                )
                    .into_response(),
            }
        }
    }
}

/// The `ws-echo` app: every text or binary message comes back as it was.
async fn echo(
    mut socket: axum::extract::ws::WebSocket,
    st: Arc<super::world::State>,
    workspace: String,
    crash: tokio_util::sync::CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = socket.recv() => m,
            _ = crash.cancelled() => return,
        };
        match msg {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                st.note_app_echo(&workspace);
                if socket.send(m).await.is_err() {
                    return;
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_routes_as_coder_reads_them() {
        let r = parse_path("/@admin/ws-1.main/apps/echo/x/y").unwrap();
        assert_eq!(
            (r.user.as_str(), r.workspace.as_str(), r.agent.as_deref()),
            ("admin", "ws-1", Some("main"))
        );
        assert_eq!((r.slug.as_str(), r.rest.as_str()), ("echo", "/x/y"));
        assert_eq!(r.base_path, "/@admin/ws-1.main/apps/echo/");
        let r = parse_path("/%40admin/ws-1/apps/echo").unwrap();
        assert_eq!((r.agent, r.rest.as_str()), (None, ""));
        assert_eq!(r.base_path, "/%40admin/ws-1/apps/echo/");
        assert_eq!(parse_path("/@admin/ws-1/apps/echo/").unwrap().rest, "/");
        for no in [
            "/api/v2/x",
            "/@admin/ws/app/echo/",
            "/@admin//apps/echo/",
            "/@a/ws/apps/",
        ] {
            assert!(parse_path(no).is_none(), "{no}");
        }
    }

    #[test]
    fn subdomains_as_coder_reads_them() {
        let w = Wildcard::parse("*.apps.sim.test:3000").unwrap();
        assert_eq!(
            w.label("echo--main--ws-1--admin.apps.sim.test:3000"),
            Some("echo--main--ws-1--admin")
        );
        assert_eq!(w.label("APPS.sim.test"), None);
        assert_eq!(w.label("a.b.apps.sim.test"), None);
        assert_eq!(w.label("127.0.0.1:3000"), None);
        let r = parse_label("echo--main--ws-1--admin", "").unwrap();
        assert_eq!(
            (r.slug.as_str(), r.agent.as_deref(), r.workspace.as_str()),
            ("echo", Some("main"), "ws-1")
        );
        assert_eq!((r.user.as_str(), r.rest.as_str()), ("admin", "/"));
        assert!(parse_label("pre---echo--main--ws--u", "/").is_ok());
        assert!(parse_label("echo--main--ws", "/").is_err());
        assert!(parse_label("echo--main--ws--u-", "/").is_err());
        let w = Wildcard::parse("*--apps.example.com").unwrap();
        assert_eq!(
            w.label("echo--main--ws--u--apps.example.com"),
            Some("echo--main--ws--u")
        );
        for bad in [
            "apps.example.com",
            "*.*.example.com",
            "*",
            "https://*.x.com",
        ] {
            assert!(Wildcard::parse(bad).is_err(), "{bad}");
        }
    }
}
