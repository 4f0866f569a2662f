//! The simulator's HTTP API: the subset of Coder's `/api/v2` that scaletestd uses, with
//! Coder's JSON shapes, status codes and error bodies.
//!
//! Middleware, outermost first: request counting, token check (401 with Coder's body), the
//! per-endpoint rate limiter (429 without `Retry-After`, as Coder's httprate), injected
//! latency and 5xx, then the handler. The REST handlers are in `routes`, the two workspace
//! event streams and their injected faults in `watch`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Request, State as Ax};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response as AxResponse};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use rand::Rng;

use super::accounts::Caller;
use super::world::State;
use crate::coder::Response;
use routes::*;
use watch::{watch, watch_ws};

mod routes;
mod watch;

pub use watch::MALFORMATIONS;

/// Tells the `coder ssh` stand-in where the simulated agents' SSH server is (simulator only).
pub const SSH_HEADER: &str = "X-Scaletestd-Sim-Ssh";

/// Shared by every handler.
pub struct App {
    pub state: Arc<State>,
    /// Where the SSH server listens, told to the `coder ssh` stand-in.
    pub ssh_addr: std::net::SocketAddr,
    /// coderd's tracer, when the simulator traces.
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    pub token: String,
    /// The API's own URL: where app requests that are not signed in are sent to log in.
    pub access_url: url::Url,
    /// The wildcard app host, when subdomain apps are served.
    pub wildcard: Option<super::apps::Wildcard>,
    /// Signed app tokens issued by the app proxy.
    pub apps: super::apps::Tokens,
    /// When each workspace event went out, for the benchmark (`delivery_log`).
    pub deliveries: Option<Arc<super::deliveries::DeliveryLog>>,
    pub counts: Mutex<HashMap<String, u64>>,
    /// Requests the front refused with a bare 429 (`front.throttle`).
    pub throttled: std::sync::atomic::AtomicU64,
    /// Workspace states left out of watch streams (`failures.watch_dropped`).
    pub dropped_events: Arc<std::sync::atomic::AtomicU64>,
    limiter: Mutex<HashMap<String, (Instant, u32)>>,
    /// Cancelled when the simulated coderd crashes: upgraded connections (web terminals)
    /// live outside the HTTP server's tasks and end on it.
    connections: Mutex<tokio_util::sync::CancellationToken>,
}

/// What an [`App`] is made of.
pub struct AppParts {
    pub state: Arc<State>,
    pub token: String,
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    pub ssh_addr: std::net::SocketAddr,
    pub access_url: url::Url,
    pub wildcard: Option<super::apps::Wildcard>,
    pub deliveries: Option<Arc<super::deliveries::DeliveryLog>>,
}

impl App {
    pub fn new(p: AppParts) -> Arc<App> {
        Arc::new(App {
            state: p.state,
            token: p.token,
            tracer: p.tracer,
            ssh_addr: p.ssh_addr,
            access_url: p.access_url,
            wildcard: p.wildcard,
            deliveries: p.deliveries,
            apps: Default::default(),
            counts: Default::default(),
            throttled: Default::default(),
            dropped_events: Default::default(),
            limiter: Default::default(),
            connections: Default::default(),
        })
    }

    /// A token cancelled at the next crash.
    pub fn until_crash(&self) -> tokio_util::sync::CancellationToken {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Cuts every upgraded connection open now.
    pub fn cut_connections(&self) {
        let old = std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        old.cancel();
    }
}

type Shared = Arc<App>;

pub fn router(app: Shared) -> Router {
    let cfg = &app.state.cfg;
    let mut api = Router::new()
        .route("/api/v2/buildinfo", get(buildinfo))
        .route("/api/v2/applications/host", get(app_host))
        .route("/api/v2/entitlements", get(entitlements))
        .route("/api/v2/users", get(list_users).post(create_user))
        .route("/api/v2/users/{user}", get(user).delete(delete_user))
        .route("/api/v2/users/{user}/keys/tokens", post(create_token))
        .route(
            "/api/v2/users/{user}/workspace/{workspacename}",
            get(workspace_by_name),
        )
        .route("/api/v2/organizations/{organization}", get(organization))
        .route(
            "/api/v2/organizations/{organization}/templates/{templatename}",
            get(template),
        )
        .route(
            "/api/v2/organizations/{organization}/members/{user}/workspaces",
            post(create_in_org),
        )
        .route(
            "/api/v2/templateversions/{templateversion}/rich-parameters",
            get(rich_parameters),
        )
        .route(
            "/api/v2/templateversions/{templateversion}/dynamic-parameters/evaluate",
            post(evaluate_parameters),
        )
        .route(
            "/api/v2/templateversions/{templateversion}/dynamic-parameters",
            get(super::forms::handler),
        )
        .route(
            "/api/v2/notifications/inbox/watch",
            get(super::inbox::watch),
        )
        .route(
            "/api/v2/users/{user}/notifications/preferences",
            get(super::inbox::preferences).put(super::inbox::put_preferences),
        )
        .route("/api/v2/workspaces", get(list))
        .route("/api/v2/workspaces/{workspace}", get(workspace))
        .route("/api/v2/workspaces/{workspace}/builds", post(create_build))
        .route(
            "/api/v2/workspaces/{workspace}/autostart",
            put(put_autostart),
        )
        .route("/api/v2/workspacebuilds/{workspacebuild}", get(build))
        .route(
            "/api/v2/workspacebuilds/{workspacebuild}/timings",
            get(timings),
        )
        .route(
            "/api/v2/workspacebuilds/{workspacebuild}/cancel",
            patch(cancel),
        )
        .route(
            "/api/v2/workspaceagents/{workspaceagent}/pty",
            get(super::pty::handler),
        );
    // Routes an older (or a future) Coder lacks answer its router's 404 "Route not found."
    // (coderd/httpapi `RouteNotFound`), but only after the enclosing route's middleware ran:
    // coderd mounts `/workspaces/{workspace}` with `ExtractWorkspaceParam`, so an unknown
    // workspace is "Resource not found" there whatever the rest of the path.
    api = if cfg.legacy_create_only {
        api.route("/api/v2/users/{user}/workspaces", post(missing_under_user))
    } else {
        api.route("/api/v2/users/{user}/workspaces", post(create_for_user))
    };
    api = if cfg.watch_endpoints.sse() {
        api.route("/api/v2/workspaces/{workspace}/watch", get(watch))
    } else {
        api.route(
            "/api/v2/workspaces/{workspace}/watch",
            get(missing_under_workspace),
        )
    };
    api = if cfg.watch_endpoints.websocket() {
        api.route("/api/v2/workspaces/{workspace}/watch-ws", get(watch_ws))
    } else {
        api.route(
            "/api/v2/workspaces/{workspace}/watch-ws",
            get(missing_under_workspace),
        )
    };
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            workspace_access,
        ))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            inject_5xx,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), throttle))
        // App requests (by path or by host) never reach the API's middleware: the proxy
        // reads tokens and cookies itself.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::apps::proxy,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::trace::server_span,
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count));
    api.with_state(app)
}

/// The websocket upgrade a handler needs, or coderd's 400 for a plain request to it.
pub fn upgrade(
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<axum::extract::ws::WebSocketUpgrade, Box<AxResponse>> {
    ws.map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "Upgrade to a websocket is required.",
        ))
    })
}

/// Coder's error body with a status.
pub fn error(status: StatusCode, message: impl Into<String>) -> AxResponse {
    (
        status,
        Json(Response {
            message: message.into(),
            ..Default::default()
        }),
    )
        .into_response()
}

pub fn route_of(app: &App, req: &Request) -> String {
    if let Some(route) = super::apps::route(app, req) {
        return format!("{} {route}", req.method());
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    format!(
        "{} {}",
        req.method(),
        route.unwrap_or_else(|| req.uri().path().to_string())
    )
}

async fn count(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    let route = route_of(&app, &req);
    *app.counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(route.clone())
        .or_default() += 1;
    let (method, path) = route
        .split_once(' ')
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .unwrap_or_default();
    let m = &app.state.metrics;
    let labels = super::metrics::MethodPath {
        method: method.clone(),
        path: path.clone(),
    };
    m.concurrent.get_or_create(&labels).inc();
    let start = Instant::now();
    let mut resp = next.run(req).await;
    m.concurrent.get_or_create(&labels).dec();
    m.latencies
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    let code = resp.status().as_u16().to_string();
    m.requests
        .get_or_create(&super::metrics::Processed { code, method, path })
        .inc();
    if let Ok(v) = HeaderValue::from_str(&app.state.cfg.version) {
        resp.headers_mut().insert("X-Coder-Build-Version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&app.ssh_addr.to_string()) {
        resp.headers_mut().insert(SSH_HEADER, v);
    }
    resp
}

/// The token from the header, the cookie, or the query (Coder accepts all three).
pub(super) fn presented_token(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(t) = h
        .get(crate::coder::TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return Some(t.to_string());
    }
    for cookie in h.get_all("cookie").iter().filter_map(|v| v.to_str().ok()) {
        for part in cookie.split(';') {
            if let Some(t) = part.trim().strip_prefix("coder_session_token=") {
                return Some(t.to_string());
            }
        }
    }
    req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "coder_session_token")
            .map(|(_, v)| v.into_owned())
    })
}

/// Coder's body for a route's missing resource, or one the caller may not see.
pub const RESOURCE_NOT_FOUND: &str =
    "Resource not found or you do not have access to this resource";

/// The token names the caller (put on the request for the handlers), or a 401.
async fn authenticate(Ax(app): Ax<Shared>, mut req: Request, next: Next) -> AxResponse {
    if req.uri().path() == "/api/v2/buildinfo" {
        return next.run(req).await;
    }
    let Some(token) = presented_token(&req) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Cookie \"coder_session_token\" or query parameter must be provided.",
        );
    };
    match app.state.accounts.caller(&token) {
        // Coder's answer for a key it does not know (coderd/httpmw/apikey.go, v2.36.1:
        // `SignedOutErrorMessage`, "API key is invalid."). Coder also refuses a key that is
        // not `<10-char id>-<22-char secret>` before looking it up; the simulator accepts
        // any token it was given, so that a demo can run with `t`.
        None => (
            StatusCode::UNAUTHORIZED,
            Json(Response {
                message: "You are signed out or your session has expired. Please sign in again to continue.".into(),
                detail: "API key is invalid.".into(),
                validations: vec![],
            }),
        )
            .into_response(),
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    }
}

/// Workspace, build and agent routes: a workspace that is not the caller's is "not found"
/// to a member (Coder's RBAC), and each caller is noted in the workspace's ledger.
async fn workspace_access(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    let params = axum::extract::RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let req = Request::from_parts(parts, body);
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return next.run(req).await;
    };
    let id = params.as_ref().and_then(|p| {
        p.iter()
            .find(|(k, _)| matches!(*k, "workspace" | "workspacebuild" | "workspaceagent"))
            .and_then(|(_, v)| parse_id(v))
    });
    if let Some((owner, name)) = id.and_then(|id| app.state.owner_of(id)) {
        if !caller.may_see(owner) {
            return resource_not_found();
        }
        app.state.note_caller(&name, &caller.username);
    }
    next.run(req).await
}

/// httprate's fixed one-minute window per endpoint; owners may bypass it with a header.
async fn rate_limit(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    let limit = app.state.cfg.rate_limit;
    let caller = req.extensions().get::<Caller>().cloned();
    // coderd/httpmw/ratelimit.go: only an owner's header is honoured.
    let bypass = caller.as_ref().is_some_and(|c| c.owner)
        && req
            .headers()
            .get(crate::coder::BYPASS_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if limit == 0 || bypass {
        return next.run(req).await;
    }
    // One window per user and endpoint.
    let key = format!(
        "{} {}",
        caller
            .as_ref()
            .map(|c| c.id.to_string())
            .unwrap_or_default(),
        route_of(&app, &req)
    );
    let (remaining, reset) = {
        let mut l = app.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let window = app.state.cfg.rate_window.0;
        let slot = l.entry(key).or_insert((now, 0));
        if now.duration_since(slot.0) >= window {
            *slot = (now, 0);
        }
        slot.1 += 1;
        let left = window.saturating_sub(now.duration_since(slot.0));
        // httprate: the unix second the window ends (rounded up, so a client that waits
        // until then finds a new window).
        let reset = (chrono::Utc::now().timestamp_millis() + left.as_millis() as i64 + 999) / 1000;
        (limit as i64 - slot.1 as i64, reset)
    };
    let headers = [
        ("X-Ratelimit-Limit", limit.to_string()),
        ("X-Ratelimit-Remaining", remaining.max(0).to_string()),
        ("X-Ratelimit-Reset", reset.to_string()),
    ];
    if remaining < 0 {
        if let Some(c) = &caller {
            app.state.accounts.note_limited(&c.username);
        }
        let msg = format!(
            "You've been rate limited for sending more than {limit} requests in {}.",
            humantime::format_duration(app.state.cfg.rate_window.0)
        );
        let mut resp = error(StatusCode::TOO_MANY_REQUESTS, msg);
        for (k, v) in headers {
            resp.headers_mut()
                .insert(k, HeaderValue::from_str(&v).expect("digits"));
        }
        if let Some(secs) = app.state.cfg.retry_after {
            resp.headers_mut()
                .insert("Retry-After", HeaderValue::from(secs));
        }
        return resp;
    }
    let mut resp = next.run(req).await;
    for (k, v) in headers {
        resp.headers_mut()
            .insert(k, HeaderValue::from_str(&v).expect("digits"));
    }
    resp
}

/// A front's load shedding (`front.throttle`): a bare 429, before Coder sees the request.
async fn throttle(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    let rate = app.state.cfg.front.throttle;
    if rate > 0.0 && rand::Rng::random_bool(&mut rand::rng(), rate.min(1.0)) {
        app.throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    next.run(req).await
}

async fn inject_5xx(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    let api_latency = app.state.cfg.latency.api.sample();
    if !api_latency.is_zero() {
        tokio::time::sleep(api_latency).await;
    }
    let rate = app.state.cfg.failures.http_5xx;
    if rate > 0.0 && rand::rng().random_bool(rate.min(1.0)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Response {
                message: "Internal error.".into(),
                detail: "injected by the scaletestd simulator".into(),
                validations: vec![],
            }),
        )
            .into_response();
    }
    next.run(req).await
}

async fn not_found() -> AxResponse {
    error(StatusCode::NOT_FOUND, "Route not found.")
}

/// A route this server lacks, below `/workspaces/{workspace}` (see `router`).
async fn missing_under_workspace(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    let known = parse_id(&id).is_some_and(|id| {
        let w = app.state.lock();
        w.live.contains_key(&id) || w.deleted.contains_key(&id)
    });
    let answer = if known {
        not_found().await
    } else {
        resource_not_found()
    };
    match app.state.cfg.front.split_refusals {
        Some(after) => split_body(answer, after.0).await,
        None => answer,
    }
}

/// `resp` with its body held back `after` its status and headers went out (see
/// `Front::split_refusals`).
async fn split_body(resp: AxResponse, after: std::time::Duration) -> AxResponse {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let later = futures_util::stream::once(async move {
        tokio::time::sleep(after).await;
        Ok::<_, std::convert::Infallible>(bytes)
    });
    AxResponse::from_parts(parts, axum::body::Body::from_stream(later))
}

/// A route this server lacks, below `/users/{user}` (see `router`).
async fn missing_under_user(
    Ax(app): Ax<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(user): Path<String>,
) -> AxResponse {
    if caller.is(&user) || app.state.accounts.find(&user).is_some() {
        not_found().await
    } else {
        resource_not_found()
    }
}

pub(super) fn resource_not_found() -> AxResponse {
    error(StatusCode::NOT_FOUND, RESOURCE_NOT_FOUND)
}
