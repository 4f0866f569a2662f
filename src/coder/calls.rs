//! The calls of a scale test, one method each, over `Client::send`'s retries, timing and
//! token handling: build info, identity, templates, workspaces, builds and their timings,
//! the event streams, the workspace list for sweeps.

use reqwest::Method;
use url::Url;
use uuid::Uuid;

use super::*;

impl Client {
    pub async fn build_info(&self) -> Result<BuildInfo, ApiError> {
        self.get("/api/v2/buildinfo", "/api/v2/buildinfo").await
    }

    /// Whether Coder records server spans for our requests, asked with one `GET /buildinfo`
    /// carrying a sampled `traceparent` of its own when `propagate` (see [`trace`]): Coder
    /// traces when its `X-Span-ID` is not the one sent. Without `propagate`, an answered
    /// `X-Trace-ID` says Coder traces (in traces of its own). None: the answer cannot tell.
    pub async fn probe_tracing(&self, propagate: bool) -> Result<Option<bool>, ApiError> {
        use opentelemetry::trace::{SpanId, TraceId};
        let mut req = self.request(Method::GET, "/api/v2/buildinfo", None, "application/json");
        let mut sent = None;
        if propagate {
            let trace = TraceId::from_bytes(rand::random::<[u8; 16]>());
            let span = SpanId::from_bytes(rand::random::<[u8; 8]>());
            let mut h = header::HeaderMap::new();
            h.insert(
                "traceparent",
                format!("00-{trace}-{span}-01")
                    .parse()
                    .expect("a valid header"),
            );
            sent = trace::sent_in(&h);
            req = req.headers(h);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&Method::GET, "/api/v2/buildinfo", e))?;
        Ok(trace::coder_traces(resp.headers(), sent))
    }

    /// `trace.enable` of Coder's deployment config (`GET /deployment/config`, owners only):
    /// none when the token may not read it.
    pub async fn deployment_traces(&self) -> Result<Option<bool>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Values {
            config: Config,
        }
        #[derive(serde::Deserialize)]
        struct Config {
            trace: Trace,
        }
        #[derive(serde::Deserialize)]
        struct Trace {
            enable: bool,
        }
        match self
            .get::<Values>("/api/v2/deployment/config", "/api/v2/deployment/config")
            .await
        {
            Ok(v) => Ok(Some(v.config.trace.enable)),
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn me(&self) -> Result<User, ApiError> {
        self.get("/api/v2/users/{user}", "/api/v2/users/me").await
    }

    pub async fn organization(&self, org: &str) -> Result<Organization, ApiError> {
        self.get(
            "/api/v2/organizations/{organization}",
            &format!("/api/v2/organizations/{}", enc(org)),
        )
        .await
    }

    pub async fn template_by_name(&self, org: &str, name: &str) -> Result<Template, ApiError> {
        self.get(
            "/api/v2/organizations/{organization}/templates/{templatename}",
            &format!("/api/v2/organizations/{}/templates/{}", enc(org), enc(name)),
        )
        .await
    }

    pub async fn rich_parameters(
        &self,
        version: Uuid,
    ) -> Result<Vec<TemplateVersionParameter>, ApiError> {
        self.get(
            "/api/v2/templateversions/{templateversion}/rich-parameters",
            &format!("/api/v2/templateversions/{version}/rich-parameters"),
        )
        .await
    }

    /// Creates a workspace for the token's user in `organization`, through the route this
    /// server has: `POST /users/me/workspaces`, or on servers older than mid-2024 (which answer
    /// it with 404 "Route not found.") `POST /organizations/{org}/members/me/workspaces`,
    /// remembered in `dialect` for the rest of the run.
    pub async fn create_workspace(
        &self,
        organization: Uuid,
        req: &CreateWorkspaceRequest,
        dialect: &Dialect,
    ) -> Result<Workspace, ApiError> {
        if dialect.create_route() == CreateRoute::User {
            match self
                .post(
                    CreateRoute::User.as_str(),
                    "/api/v2/users/me/workspaces",
                    req,
                )
                .await
            {
                Err(e) if e.is_route_missing() => dialect.create_route_missing(),
                other => {
                    if other.is_ok() {
                        dialect.create_route_works();
                    }
                    return other;
                }
            }
        }
        self.post(
            CreateRoute::OrganizationMember.as_str(),
            &format!("/api/v2/organizations/{organization}/members/me/workspaces"),
            req,
        )
        .await
    }

    pub async fn workspace(&self, id: Uuid) -> Result<Workspace, ApiError> {
        self.get(
            "/api/v2/workspaces/{workspace}",
            &format!("/api/v2/workspaces/{id}"),
        )
        .await
    }

    /// Opens the workspace's event stream over `watch-ws` (a websocket of JSON events).
    pub async fn watch_workspace_ws(&self, id: Uuid) -> Result<watch::WatchStream, ApiError> {
        let path = format!("/api/v2/workspaces/{id}/watch-ws");
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(watch::MAX_EVENT))
            .max_frame_size(Some(watch::MAX_EVENT))
            .read_buffer_size(super::ws::EVENT_READ_BUFFER);
        let ws = self
            .open_websocket(
                "/api/v2/workspaces/{workspace}/watch-ws",
                &path,
                &[],
                Some(config),
            )
            .await?;
        Ok(watch::WatchStream::websocket(ws, path))
    }

    /// Opens the workspace's event stream over the deprecated SSE `watch`.
    pub async fn watch_workspace_sse(&self, id: Uuid) -> Result<watch::WatchStream, ApiError> {
        let path = format!("/api/v2/workspaces/{id}/watch");
        let resp = self
            .send_raw(
                Method::GET,
                "/api/v2/workspaces/{workspace}/watch",
                &path,
                None,
                "text/event-stream",
            )
            .await?;
        Ok(watch::WatchStream::sse(resp, path))
    }

    /// Sets (`Some`) or clears a workspace's autostart schedule, `CRON_TZ=UTC m h * * dow`
    /// (coderd/workspaces.go `putWorkspaceAutostart`: 204; a bad schedule is a 400).
    pub async fn set_autostart(&self, id: Uuid, schedule: Option<&str>) -> Result<(), ApiError> {
        let body = match schedule {
            Some(s) => serde_json::json!({ "schedule": s }),
            // `schedule` is `*string, omitempty`: nil clears.
            None => serde_json::json!({}),
        };
        self.send(
            Method::PUT,
            "/api/v2/workspaces/{workspace}/autostart",
            &format!("/api/v2/workspaces/{id}/autostart"),
            Some(serde_json::to_vec(&body).expect("JSON values serialize")),
        )
        .await
        .map(|_| ())
    }

    pub async fn workspace_build(&self, id: Uuid) -> Result<WorkspaceBuild, ApiError> {
        self.get(
            "/api/v2/workspacebuilds/{workspacebuild}",
            &format!("/api/v2/workspacebuilds/{id}"),
        )
        .await
    }

    pub async fn build_timings(&self, id: Uuid) -> Result<WorkspaceBuildTimings, ApiError> {
        self.get(
            "/api/v2/workspacebuilds/{workspacebuild}/timings",
            &format!("/api/v2/workspacebuilds/{id}/timings"),
        )
        .await
    }

    pub async fn cancel_build(&self, id: Uuid) -> Result<(), ApiError> {
        self.send(
            Method::PATCH,
            "/api/v2/workspacebuilds/{workspacebuild}/cancel",
            &format!("/api/v2/workspacebuilds/{id}/cancel"),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn create_build(
        &self,
        workspace: Uuid,
        req: &CreateWorkspaceBuildRequest,
    ) -> Result<WorkspaceBuild, ApiError> {
        self.post(
            "/api/v2/workspaces/{workspace}/builds",
            &format!("/api/v2/workspaces/{workspace}/builds"),
            req,
        )
        .await
    }

    /// One page of the workspaces matching a Coder search query.
    pub async fn workspaces(
        &self,
        query: &str,
        limit: u32,
        offset: u32,
    ) -> Result<WorkspacesResponse, ApiError> {
        let mut u = Url::parse("http://x/api/v2/workspaces").expect("literal URL");
        u.query_pairs_mut()
            .append_pair("q", query)
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", &offset.to_string());
        let path = format!("{}?{}", u.path(), u.query().unwrap_or(""));
        self.get("/api/v2/workspaces", &path).await
    }
}

/// Percent-encodes one path segment.
pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
