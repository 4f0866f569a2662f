//! The simulator's HTTP API: the subset of Coder's `/api/v2` that scaletestd uses, with
//! Coder's JSON shapes, status codes and error bodies.
//!
//! Middleware, outermost first: request counting, token check (401 with Coder's body), the
//! per-endpoint rate limiter (429 without `Retry-After`, as Coder's httprate), injected
//! 5xx, then the handler.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State as Ax};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as AxResponse};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use futures_util::Stream;
use rand::Rng;
use serde::Deserialize;
use uuid::Uuid;

use super::types::{Workspace, WorkspaceTransition, WorkspacesResponse};
use super::world::State;
use crate::coder::{
    CreateWorkspaceBuildRequest, CreateWorkspaceRequest, Response, ValidationError,
};

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
    pub counts: Mutex<HashMap<String, u64>>,
    limiter: Mutex<HashMap<String, (Instant, u32)>>,
    /// Cancelled when the simulated coderd crashes: upgraded connections (web terminals)
    /// live outside the HTTP server's tasks and end on it.
    connections: Mutex<tokio_util::sync::CancellationToken>,
}

impl App {
    pub fn new(
        state: Arc<State>,
        token: String,
        tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
        ssh_addr: std::net::SocketAddr,
    ) -> Arc<App> {
        Arc::new(App {
            state,
            token,
            tracer,
            ssh_addr,
            counts: Default::default(),
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
        .route("/api/v2/users/{user}", get(user))
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
        .route("/api/v2/workspaces", get(list))
        .route("/api/v2/workspaces/{workspace}", get(workspace))
        .route("/api/v2/workspaces/{workspace}/builds", post(create_build))
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
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::trace::server_span,
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count));
    api.with_state(app)
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

pub fn route_of(req: &Request) -> String {
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
    let route = route_of(&req);
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
fn presented_token(req: &Request) -> Option<String> {
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

async fn authenticate(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    if req.uri().path() == "/api/v2/buildinfo" {
        return next.run(req).await;
    }
    match presented_token(&req) {
        None => error(
            StatusCode::UNAUTHORIZED,
            "Cookie \"coder_session_token\" or query parameter must be provided.",
        ),
        Some(t) if t != app.token => (
            StatusCode::UNAUTHORIZED,
            Json(Response {
                message: "Invalid session token.".into(),
                detail: "The API key is invalid or expired.".into(),
                validations: vec![],
            }),
        )
            .into_response(),
        Some(_) => next.run(req).await,
    }
}

/// httprate's fixed one-minute window per endpoint; owners may bypass it with a header.
async fn rate_limit(Ax(app): Ax<Shared>, req: Request, next: Next) -> AxResponse {
    let limit = app.state.cfg.rate_limit;
    let bypass = req
        .headers()
        .get(crate::coder::BYPASS_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if limit == 0 || bypass {
        return next.run(req).await;
    }
    let key = route_of(&req);
    let (remaining, reset) = {
        let mut l = app.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let slot = l.entry(key).or_insert((now, 0));
        if now.duration_since(slot.0) >= Duration::from_secs(60) {
            *slot = (now, 0);
        }
        slot.1 += 1;
        let reset =
            chrono::Utc::now().timestamp() + (60 - now.duration_since(slot.0).as_secs() as i64);
        (limit as i64 - slot.1 as i64, reset)
    };
    let headers = [
        ("X-Ratelimit-Limit", limit.to_string()),
        ("X-Ratelimit-Remaining", remaining.max(0).to_string()),
        ("X-Ratelimit-Reset", reset.to_string()),
    ];
    if remaining < 0 {
        let msg =
            format!("You've been rate limited for sending more than {limit} requests in 1m0s.");
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
    if known {
        not_found().await
    } else {
        resource_not_found()
    }
}

/// A route this server lacks, below `/users/{user}` (see `router`).
async fn missing_under_user(Ax(app): Ax<Shared>, Path(user): Path<String>) -> AxResponse {
    if is_me(&app, &user) {
        not_found().await
    } else {
        resource_not_found()
    }
}

fn resource_not_found() -> AxResponse {
    error(
        StatusCode::NOT_FOUND,
        "Resource not found or you do not have access to this resource",
    )
}

async fn buildinfo(Ax(app): Ax<Shared>) -> AxResponse {
    Json(super::types::BuildInfo {
        version: app.state.cfg.version.clone(),
        external_url: "https://github.com/coder/coder".into(),
        dashboard_url: String::new(),
        deployment_id: app.state.id.org.id.to_string(),
    })
    .into_response()
}

fn is_me(app: &App, user: &str) -> bool {
    let u = &app.state.id.user;
    user == "me" || user == u.username || user == u.id.to_string()
}

fn is_org(app: &App, org: &str) -> bool {
    let o = &app.state.id.org;
    org == o.name || org == o.id.to_string()
}

async fn user(Ax(app): Ax<Shared>, Path(user): Path<String>) -> AxResponse {
    if !is_me(&app, &user) {
        return resource_not_found();
    }
    Json(app.state.id.user.clone()).into_response()
}

async fn organization(Ax(app): Ax<Shared>, Path(org): Path<String>) -> AxResponse {
    if !is_org(&app, &org) {
        return resource_not_found();
    }
    Json(app.state.id.org.clone()).into_response()
}

async fn template(Ax(app): Ax<Shared>, Path((org, name)): Path<(String, String)>) -> AxResponse {
    if !is_org(&app, &org) || name != app.state.id.template.name {
        return resource_not_found();
    }
    Json(app.state.id.template.clone()).into_response()
}

async fn rich_parameters(Ax(app): Ax<Shared>, Path(version): Path<String>) -> AxResponse {
    if version != app.state.id.template.active_version_id.to_string() {
        return resource_not_found();
    }
    Json(app.state.id.params.clone()).into_response()
}

async fn create_for_user(
    Ax(app): Ax<Shared>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    if !is_me(&app, &user) {
        return resource_not_found();
    }
    create(&app, &body)
}

async fn create_in_org(
    Ax(app): Ax<Shared>,
    Path((org, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> AxResponse {
    if !is_org(&app, &org) || !is_me(&app, &user) {
        return resource_not_found();
    }
    create(&app, &body)
}

fn bad_request(message: &str, validations: Vec<ValidationError>) -> AxResponse {
    (
        StatusCode::BAD_REQUEST,
        Json(Response {
            message: message.into(),
            detail: String::new(),
            validations,
        }),
    )
        .into_response()
}

/// Coder's workspace name rule (codersdk.NameValid).
fn name_valid(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err("must be between 1 and 32 characters".into());
    }
    let ok = name
        .split('-')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !ok {
        return Err("must be alphanumeric with hyphens".into());
    }
    if name == "new" || name == "create" {
        return Err("cannot use a reserved name".into());
    }
    Ok(())
}

fn create(app: &App, body: &[u8]) -> AxResponse {
    let req: CreateWorkspaceRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                "Request body must be valid JSON.",
                vec![ValidationError {
                    field: "body".into(),
                    detail: e.to_string(),
                }],
            );
        }
    };
    let st = &app.state;
    let template_ok = match (req.template_id, req.template_version_id) {
        (Some(t), _) => t == st.id.template.id,
        (None, Some(v)) => v == st.id.template.active_version_id,
        (None, None) => {
            return bad_request(
                "Either template_id or template_version_id must be specified.",
                vec![],
            );
        }
    };
    if !template_ok {
        return bad_request(
            "Template not found.",
            vec![ValidationError {
                field: "template_id".into(),
                detail: "template not found".into(),
            }],
        );
    }
    if let Err(d) = name_valid(&req.name) {
        return bad_request(
            "Invalid workspace name.",
            vec![ValidationError {
                field: "name".into(),
                detail: d,
            }],
        );
    }
    for p in &req.rich_parameter_values {
        if !st.id.params.iter().any(|t| t.name == p.name) {
            return bad_request(
                "Unable to validate parameters",
                vec![ValidationError {
                    field: p.name.clone(),
                    detail: "parameter is not defined in the template".into(),
                }],
            );
        }
    }
    if st.lock().names.contains_key(&req.name) {
        return (
            StatusCode::CONFLICT,
            Json(Response {
                message: format!("Workspace {:?} already exists.", req.name),
                detail: String::new(),
                validations: vec![ValidationError {
                    field: "name".into(),
                    detail: "This value is already in use and should be unique.".into(),
                }],
            }),
        )
            .into_response();
    }
    let ws = st.create_workspace(&req.name, req.rich_parameter_values);
    (StatusCode::CREATED, Json(ws)).into_response()
}

fn parse_id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

/// `GET /workspaces/{id}` as coderd/workspaces.go's `workspace` handler answers it: a deleted
/// workspace is **410 Gone** unless `include_deleted` is true (a value that is not a boolean
/// is a 400); 404 only for one that never existed.
async fn workspace(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> AxResponse {
    let Some(id) = parse_id(&id) else {
        return resource_not_found();
    };
    let show_deleted = match q.get("include_deleted").map(String::as_str) {
        None | Some("") => false,
        Some(v) => match go_parse_bool(v) {
            Some(b) => b,
            None => {
                return bad_request(
                    &format!("Invalid boolean value {v:?} for \"include_deleted\" query param."),
                    vec![ValidationError {
                        field: "deleted".into(),
                        detail: "Must be a valid boolean".into(),
                    }],
                );
            }
        },
    };
    if let Some(ws) = app.state.current(id) {
        return Json(ws).into_response();
    }
    let grave = app.state.lock().deleted.get(&id).map(|g| g.ws.clone());
    match grave {
        Some(ws) if show_deleted => Json(ws).into_response(),
        Some(_) => gone(id),
        None => resource_not_found(),
    }
}

/// Coder's answer for a deleted workspace (coderd/workspaces.go).
fn gone(id: Uuid) -> AxResponse {
    error(
        StatusCode::GONE,
        format!(
            "Workspace {:?} was deleted, you can view this workspace by specifying '?deleted=true' and trying again.",
            id.to_string()
        ),
    )
}

/// Go's `strconv.ParseBool`, which Coder uses for boolean query parameters.
fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A workspace's watchers: the receiver, its name, and whether this is its first stream.
/// Deleted workspaces are still watchable (see `Grave::tx`).
fn subscribe(
    app: &App,
    id: &str,
) -> Option<(tokio::sync::watch::Receiver<Arc<Workspace>>, String, bool)> {
    let id = parse_id(id)?;
    let mut w = app.state.lock();
    if let Some(e) = w.live.get_mut(&id) {
        e.watches += 1;
        Some((e.tx.subscribe(), e.ws.name.clone(), e.watches == 1))
    } else {
        let g = w.deleted.get(&id)?;
        Some((g.tx.subscribe(), g.ws.name.clone(), false))
    }
}

/// The fault, if any, injected into a workspace's stream: faults hit its first stream only,
/// over whichever transport: pings and never a state (`watch_silent`), or a malformed first
/// state (`malformed`).
fn stream_fault(app: &App, name: &str, first: bool) -> Option<StreamFault> {
    let cfg = &app.state.cfg;
    if !first {
        None
    } else if cfg.inject("watch_silent", name, cfg.failures.watch_silent) {
        app.state.note_stall(name, "watch");
        Some(StreamFault::Silent)
    } else if cfg.inject("malformed", name, cfg.failures.malformed) {
        let kind = MALFORMATIONS[cfg.pick("malformation", name, MALFORMATIONS.len())];
        app.state.note_malformed(name, kind);
        Some(StreamFault::Malformed(kind))
    } else {
        None
    }
}

/// `/watch` (server-sent events; deprecated in Coder, still served): a `ping`, the whole
/// workspace, then the whole workspace on every change, `ping` events every 15 s.
async fn watch(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    let Some((rx, name, first)) = subscribe(&app, &id) else {
        return resource_not_found();
    };
    let fault = stream_fault(&app, &name, first);
    let ping = app.state.cfg.ping_interval.0;
    let events = futures_util::StreamExt::map(events(rx, fault), |e| {
        Ok::<_, Infallible>(match e {
            WatchEvent::Ping => Event::default().event("ping"),
            WatchEvent::Data(data) => Event::default().event("data").data(data),
        })
    });
    Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(ping)
                .event(Event::default().event("ping")),
        )
        .into_response()
}

/// `/watch-ws`: the same events as JSON text messages `{"type": "ping"|"data", "data": …}`
/// (a ping's `data` is `null`), then websocket control pings every 15 s as keep-alive. One
/// way: a data message from the client closes the socket with 1002 (coderd/workspaces.go
/// `watchWorkspaceWS`; coderd/httpapi/httpapi.go `OneWayWebSocketEventSender`).
async fn watch_ws(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> AxResponse {
    let Ok(ws) = ws else {
        return error(
            StatusCode::BAD_REQUEST,
            "Upgrade to a websocket is required.",
        );
    };
    let Some((rx, name, first)) = subscribe(&app, &id) else {
        return resource_not_found();
    };
    let fault = stream_fault(&app, &name, first);
    let ping = app.state.cfg.ping_interval.0;
    let crash = app.until_crash();
    ws.on_upgrade(move |socket| async move {
        tokio::select! {
            _ = one_way(socket, events(rx, fault), ping) => {}
            _ = crash.cancelled() => {} // coderd went away: no close frame
        }
    })
    .into_response()
}

/// Sends `events` as watch-ws messages, with control pings, until either side goes away.
async fn one_way(
    mut socket: axum::extract::ws::WebSocket,
    events: impl Stream<Item = WatchEvent>,
    ping: Duration,
) {
    use axum::extract::ws::{CloseFrame, Message};
    let mut events = std::pin::pin!(events);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    loop {
        tokio::select! {
            ev = futures_util::StreamExt::next(&mut events) => {
                let text = match ev {
                    Some(WatchEvent::Ping) => r#"{"type":"ping","data":null}"#.to_string(),
                    Some(WatchEvent::Data(d)) => format!(r#"{{"type":"data","data":{d}}}"#),
                    None => return,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            _ = keepalive.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: 1002,
                            reason: "one-way websocket: the client may not send data".into(),
                        })))
                        .await;
                    return;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {} // pongs
            },
        }
    }
}

/// What a faulty stream does instead of telling the truth.
#[derive(Debug, Clone, Copy)]
enum StreamFault {
    Silent,
    Malformed(&'static str),
}

/// One event of a workspace's stream, whatever the transport.
enum WatchEvent {
    Ping,
    /// The workspace as JSON (or as the injected malformation of it).
    Data(String),
}

/// The malformations `failures.malformed` chooses from.
pub const MALFORMATIONS: [&str; 4] = ["truncated", "wrong_type", "unknown_enum", "huge"];

/// A workspace's JSON spoilt in the named way.
fn malform(ws: &Workspace, kind: &str) -> String {
    let mut v = serde_json::to_value(ws).expect("workspaces serialize");
    match kind {
        "truncated" => {
            let s = v.to_string();
            let mut half = s.len() / 2;
            while !s.is_char_boundary(half) {
                half -= 1;
            }
            return s[..half].to_string();
        }
        "wrong_type" => v["id"] = serde_json::json!(42),
        "unknown_enum" => v["latest_build"]["job"]["status"] = serde_json::json!("exploding"),
        _ => v["padding"] = serde_json::json!("x".repeat(5 << 20)),
    }
    v.to_string()
}

fn events(
    mut rx: tokio::sync::watch::Receiver<Arc<Workspace>>,
    fault: Option<StreamFault>,
) -> impl Stream<Item = WatchEvent> {
    async_stream(move |tx| async move {
        if tx.send(WatchEvent::Ping).await.is_err() {
            return;
        }
        if let Some(StreamFault::Silent) = fault {
            // Only the keep-alive's pings from now on, until the client goes away.
            tx.closed().await;
            return;
        }
        let mut malformed = match fault {
            Some(StreamFault::Malformed(kind)) => Some(kind),
            _ => None,
        };
        loop {
            let ws = rx.borrow_and_update().clone();
            let data = match malformed.take() {
                Some(kind) => malform(&ws, kind),
                None => serde_json::to_string(&*ws).expect("workspaces serialize"),
            };
            if tx.send(WatchEvent::Data(data)).await.is_err() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// A stream fed by a task through a small channel (no extra crate for one generator).
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

async fn create_build(
    Ax(app): Ax<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AxResponse {
    let Some(id) = parse_id(&id) else {
        return resource_not_found();
    };
    let req: CreateWorkspaceBuildRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(
                "Request body must be valid JSON.",
                vec![ValidationError {
                    field: "transition".into(),
                    detail: e.to_string(),
                }],
            );
        }
    };
    if req.transition != WorkspaceTransition::Delete {
        return bad_request("The simulator supports the delete transition only.", vec![]);
    }
    match app.state.start_delete(id) {
        Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

async fn build(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    match parse_id(&id).and_then(|id| app.state.build(id)) {
        Some(b) => Json(b).into_response(),
        None => resource_not_found(),
    }
}

async fn timings(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    match parse_id(&id).and_then(|id| app.state.timings(id)) {
        Some(t) => Json(t).into_response(),
        None => resource_not_found(),
    }
}

async fn cancel(Ax(app): Ax<Shared>, Path(id): Path<String>) -> AxResponse {
    let Some(id) = parse_id(&id) else {
        return resource_not_found();
    };
    match app.state.cancel(id) {
        Ok(()) => Json(Response {
            message: "Job has been marked as canceled...".into(),
            ..Default::default()
        })
        .into_response(),
        Err((code, msg)) => error(StatusCode::from_u16(code).expect("valid code"), msg),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: usize,
}

/// `GET /workspaces?q=owner:me name:<text>`: Coder's search, for the filters we use.
async fn list(Ax(app): Ax<Shared>, Query(q): Query<ListQuery>) -> AxResponse {
    let mut owner: Option<String> = None;
    let mut name: Option<String> = None;
    for term in q.q.split_whitespace() {
        match term.split_once(':') {
            Some(("owner", v)) => owner = Some(v.trim_matches('"').to_string()),
            Some(("name", v)) => name = Some(v.trim_matches('"').to_lowercase()),
            Some((k, _)) => {
                return bad_request(
                    "Invalid workspace search query.",
                    vec![ValidationError {
                        field: "q".into(),
                        detail: format!("Query param {k:?} is not a valid query param"),
                    }],
                );
            }
            None => name = Some(term.to_lowercase()),
        }
    }
    if let Some(o) = &owner
        && !is_me(&app, o)
    {
        return Json(WorkspacesResponse {
            workspaces: vec![],
            count: 0,
        })
        .into_response();
    }
    let w = app.state.lock();
    let mut all: Vec<Workspace> = w
        .live
        .values()
        .filter(|e| {
            name.as_ref()
                .is_none_or(|n| e.ws.name.to_lowercase().contains(n.as_str()))
        })
        .map(|e| {
            let mut ws = e.ws.clone();
            w.stamp_queue(&mut ws.latest_build);
            ws
        })
        .collect();
    drop(w);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let count = all.len() as i64;
    let limit = q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page = all.into_iter().skip(q.offset).take(limit).collect();
    Json(WorkspacesResponse {
        workspaces: page,
        count,
    })
    .into_response()
}

/// `GET /users/{user}/workspace/{workspacename}`: what `coder ssh` resolves a name with.
async fn workspace_by_name(
    Ax(app): Ax<Shared>,
    Path((user, name)): Path<(String, String)>,
) -> AxResponse {
    if !is_me(&app, &user) {
        return resource_not_found();
    }
    let id = app.state.lock().names.get(&name).copied();
    match id.and_then(|id| app.state.current(id)) {
        Some(ws) => Json(ws).into_response(),
        None => resource_not_found(),
    }
}
