//! A server under comparison (the real coderd or the simulator): the calls made to it, and
//! what its answers looked like, reduced to what the comparison holds them to.

use std::time::{Duration, Instant};

/// A server under comparison, and what its answers looked like.
pub(super) struct Side {
    pub(super) label: &'static str,
    pub(super) base: url::Url,
    pub(super) token: String,
    pub(super) template: String,
    /// Rich parameter values the template needs.
    pub(super) parameters: serde_json::Value,
    pub(super) http: reqwest::Client,
    /// Call label → (status, body).
    pub(super) answers: std::collections::BTreeMap<&'static str, (u16, serde_json::Value)>,
    /// The watch-ws stream's messages, reduced to the states a phase decides on.
    pub(super) states: Vec<String>,
    /// The name of the workspace it made.
    pub(super) workspace: String,
}

impl Side {
    pub(super) fn new(label: &'static str, base: &str, token: &str, template: &str) -> Side {
        Side {
            label,
            base: url::Url::parse(base).unwrap(),
            token: token.to_string(),
            template: template.to_string(),
            parameters: serde_json::json!([]),
            http: reqwest::Client::new(),
            answers: Default::default(),
            states: Vec::new(),
            workspace: String::new(),
        }
    }

    /// One call; its status and body are kept under `what` and returned.
    pub(super) async fn call(
        &mut self,
        what: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut url = self.base.clone();
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        url.set_path(p);
        url.set_query((!q.is_empty()).then_some(q));
        let mut req = self
            .http
            .request(method, url)
            .header("Coder-Session-Token", token.unwrap_or(&self.token))
            .header("X-Coder-Bypass-Ratelimit", "true");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!("{}: {what}: {e}", self.label);
        });
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        self.answers.insert(what, (status, json.clone()));
        (status, json)
    }

    pub(super) async fn get(&mut self, what: &'static str, path: &str) -> serde_json::Value {
        let (status, body) = self
            .call(what, reqwest::Method::GET, path, None, None)
            .await;
        assert_eq!(status, 200, "{}: {what}: {body}", self.label);
        body
    }

    /// Follows the workspace's watch-ws stream until `done` holds for a state (120 s at
    /// most), keeping each message reduced to what phases decide on.
    pub(super) async fn watch(&mut self, id: &str, done: impl Fn(&serde_json::Value) -> bool) {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = self.base.clone();
        url.set_scheme("ws").unwrap();
        url.set_path(&format!("/api/v2/workspaces/{id}/watch-ws"));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Coder-Session-Token", self.token.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("{}: watch-ws: {e}", self.label));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no final state within 120 s", self.label))
                .unwrap_or_else(|| panic!("{}: watch-ws ended", self.label))
                .unwrap();
            let text = match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => t.to_string(),
                _ => continue,
            };
            let ev: serde_json::Value = serde_json::from_str(&text).unwrap();
            let state = match ev["type"].as_str() {
                Some("data") => reduce(&ev["data"]),
                other => other.unwrap_or("?").to_string(),
            };
            if self.states.last() != Some(&state) {
                self.states.push(state);
            }
            if ev["type"] == "data" {
                self.answers
                    .insert("watch-ws data", (200, ev["data"].clone()));
                if done(&ev["data"]) {
                    return;
                }
            }
        }
    }

    /// The same walk on either server: what scaletestd calls, in its order, and the
    /// refusals it must tell apart.
    pub(super) async fn walk(&mut self) {
        self.get("buildinfo", "/api/v2/buildinfo").await;
        let me = self.get("users/me", "/api/v2/users/me").await;
        let org = me["organization_ids"][0].as_str().unwrap().to_string();
        self.get("organization", &format!("/api/v2/organizations/{org}"))
            .await;
        let template = self
            .get(
                "template",
                &format!("/api/v2/organizations/{org}/templates/{}", self.template),
            )
            .await;
        let version = template["active_version_id"].as_str().unwrap().to_string();
        self.get(
            "rich-parameters",
            &format!("/api/v2/templateversions/{version}/rich-parameters"),
        )
        .await;
        // The form's evaluation as a test user's browser asks for it, and without an owner.
        let owner = me["id"].as_str().unwrap().to_string();
        self.call(
            "evaluate parameters",
            reqwest::Method::POST,
            &format!("/api/v2/templateversions/{version}/dynamic-parameters/evaluate"),
            Some(serde_json::json!({"id": 1, "owner_id": owner, "inputs": {}})),
            None,
        )
        .await;
        self.call(
            "evaluate parameters, no owner",
            reqwest::Method::POST,
            &format!("/api/v2/templateversions/{version}/dynamic-parameters/evaluate"),
            Some(serde_json::json!({"id": 1, "inputs": {}})),
            None,
        )
        .await;
        self.accounts(&org).await;
        let name = format!("shape-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.workspace = name.clone();
        let create = serde_json::json!({
            "name": name,
            "template_id": template["id"],
            "rich_parameter_values": self.parameters,
        });
        let (status, ws) = self
            .call(
                "create",
                reqwest::Method::POST,
                "/api/v2/users/me/workspaces",
                Some(create.clone()),
                None,
            )
            .await;
        assert_eq!(status, 201, "{}: create: {ws}", self.label);
        let id = ws["id"].as_str().unwrap().to_string();
        self.call(
            "create, name taken",
            reqwest::Method::POST,
            "/api/v2/users/me/workspaces",
            Some(create),
            None,
        )
        .await;
        self.watch(&id, |w| {
            w["latest_build"]["status"] == "running"
                && agents(w).iter().all(|a| a["lifecycle_state"] == "ready")
                && !agents(w).is_empty()
        })
        .await;
        // The autostart herd's calls: a schedule set, a malformed one refused, cleared.
        for (what, body) in [
            (
                "autostart schedule",
                serde_json::json!({"schedule": "CRON_TZ=UTC 30 9 * * *"}),
            ),
            (
                "autostart schedule, malformed",
                serde_json::json!({"schedule": "CRON_TZ=UTC 99 9 * * *"}),
            ),
            ("autostart schedule, cleared", serde_json::json!({})),
        ] {
            self.call(
                what,
                reqwest::Method::PUT,
                &format!("/api/v2/workspaces/{id}/autostart"),
                Some(body),
                None,
            )
            .await;
        }
        let ws = self
            .get("workspace", &format!("/api/v2/workspaces/{id}"))
            .await;
        let build = ws["latest_build"]["id"].as_str().unwrap().to_string();
        self.get("build", &format!("/api/v2/workspacebuilds/{build}"))
            .await;
        self.get(
            "build timings",
            &format!("/api/v2/workspacebuilds/{build}/timings"),
        )
        .await;
        self.get("workspaces", "/api/v2/workspaces?q=owner%3Ame")
            .await;
        self.call(
            "cancel a finished build",
            reqwest::Method::PATCH,
            &format!("/api/v2/workspacebuilds/{build}/cancel"),
            None,
            None,
        )
        .await;
        let (status, del) = self
            .call(
                "delete build",
                reqwest::Method::POST,
                &format!("/api/v2/workspaces/{id}/builds"),
                Some(serde_json::json!({"transition": "delete"})),
                None,
            )
            .await;
        assert_eq!(status, 201, "{}: delete: {del}", self.label);
        self.watch(&id, |w| w["latest_build"]["status"] == "deleted")
            .await;
        // Asked until it is 410 (10 s at most): the one answer here that could race the
        // event before it, should coderd publish the delete's end before its transaction
        // (provisionerdserver.go `completeWorkspaceBuildJob`) is visible to this read.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = self
                .call(
                    "deleted workspace",
                    reqwest::Method::GET,
                    &format!("/api/v2/workspaces/{id}"),
                    None,
                    None,
                )
                .await;
            if status == 410 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.get(
            "deleted workspace, include_deleted",
            &format!("/api/v2/workspaces/{id}?include_deleted=true"),
        )
        .await;
        self.call(
            "include_deleted not a bool",
            reqwest::Method::GET,
            &format!("/api/v2/workspaces/{id}?include_deleted=maybe"),
            None,
            None,
        )
        .await;
        self.call(
            "delete a deleted workspace",
            reqwest::Method::POST,
            &format!("/api/v2/workspaces/{id}/builds"),
            Some(serde_json::json!({"transition": "delete"})),
            None,
        )
        .await;
        let unknown = uuid::Uuid::new_v4();
        self.call(
            "unknown workspace",
            reqwest::Method::GET,
            &format!("/api/v2/workspaces/{unknown}"),
            None,
            None,
        )
        .await;
        self.call(
            "not a uuid",
            reqwest::Method::GET,
            "/api/v2/workspaces/not-a-uuid",
            None,
            None,
        )
        .await;
        self.call(
            "no such route",
            reqwest::Method::GET,
            "/api/v2/no-such-route",
            None,
            None,
        )
        .await;
        // A well-formed key (`<10-char id>-<22-char secret>`) that was never issued.
        self.call(
            "unknown key",
            reqwest::Method::GET,
            "/api/v2/users/me",
            None,
            Some("AbCdEfGhIj-0123456789abcdefghijkl"),
        )
        .await;
    }
}

impl Side {
    /// The create form of `template`'s active version over its websocket: the first
    /// preview, and the answer to `inputs` (one value out of its validation).
    pub(super) async fn form(&mut self, template: &str, inputs: &str) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let me = self.get("users/me", "/api/v2/users/me").await;
        let org = me["organization_ids"][0].as_str().unwrap().to_string();
        let t = self
            .get(
                "template",
                &format!("/api/v2/organizations/{org}/templates/{template}"),
            )
            .await;
        let version = t["active_version_id"].as_str().unwrap().to_string();
        let mut url = self.base.clone();
        url.set_scheme("ws").unwrap();
        url.set_path(&format!(
            "/api/v2/templateversions/{version}/dynamic-parameters"
        ));
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Coder-Session-Token", self.token.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .unwrap_or_else(|e| panic!("{}: the form: {e}", self.label));
        let read = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("a preview within 30 s")
                .expect("the form stays open")
                .unwrap();
            if let Message::Text(t) = msg {
                return serde_json::from_str::<serde_json::Value>(&t).unwrap();
            }
        };
        let first = read(&mut ws).await;
        assert_eq!(first["id"], -1, "{}: {first}", self.label);
        self.answers.insert("form, first preview", (200, first));
        ws.send(Message::Text(
            format!(r#"{{"id": 1, "inputs": {inputs}}}"#).into(),
        ))
        .await
        .unwrap();
        let answer = read(&mut ws).await;
        assert_eq!(answer["id"], 1, "{}: {answer}", self.label);
        // The bad value's diagnostic is on its parameter, in the provider's words.
        let cpu = answer["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cpu")
            .cloned()
            .unwrap_or_default();
        println!(
            "{}: the form's answer for cpu = 99: {}",
            self.label, cpu["diagnostics"]
        );
        self.answers.insert("form, answer", (200, answer));
    }

    /// What test users need: the entitlements, each way Coder refuses a user, a password
    /// user made, found, given a token (and refused one too long) and deleted.
    pub(super) async fn accounts(&mut self, org: &str) {
        use reqwest::Method;
        self.get("entitlements", "/api/v2/entitlements").await;
        self.get(
            "notification preferences",
            "/api/v2/users/me/notifications/preferences",
        )
        .await;
        let name = format!("cf-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let email = format!("{name}@scaletestd.invalid");
        let user = |extra: serde_json::Value| {
            let mut body = serde_json::json!({"username": name, "organization_ids": [org]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Some(body)
        };
        let refusals = [
            (
                "user, login type none",
                serde_json::json!({"email": email, "login_type": "none"}),
            ),
            (
                "user, service account",
                serde_json::json!({"service_account": true}),
            ),
            (
                "user, service account with an email",
                serde_json::json!({"service_account": true, "email": email}),
            ),
            (
                "user, weak password",
                serde_json::json!({"email": email, "login_type": "password", "password": "password1"}),
            ),
            (
                "user, no email",
                serde_json::json!({"login_type": "password"}),
            ),
        ];
        for (what, extra) in refusals {
            self.call(what, Method::POST, "/api/v2/users", user(extra), None)
                .await;
        }
        let good = serde_json::json!({
            "email": email,
            "login_type": "password",
            "password": "Xk3p9LqZr7wTb2mQ8vN4sHdJc6eWy1uA0fGhKiLo",
            "name": "scaletestd test user",
        });
        let (status, made) = self
            .call(
                "user, password",
                Method::POST,
                "/api/v2/users",
                user(good.clone()),
                None,
            )
            .await;
        assert_eq!(status, 201, "{}: {made}", self.label);
        self.call(
            "user, taken",
            Method::POST,
            "/api/v2/users",
            user(good),
            None,
        )
        .await;
        self.get(
            "users, search",
            &format!("/api/v2/users?q={name}&limit=100&offset=0"),
        )
        .await;
        let id = made["id"].as_str().unwrap().to_string();
        self.call(
            "token",
            Method::POST,
            &format!("/api/v2/users/{id}/keys/tokens"),
            Some(serde_json::json!({"token_name": "cf", "lifetime": 3_600_000_000_000u64})),
            None,
        )
        .await;
        self.call(
            "token, too long",
            Method::POST,
            &format!("/api/v2/users/{id}/keys/tokens"),
            Some(serde_json::json!({"token_name": "cf-long", "lifetime": 100u64 * 24 * 3_600_000_000_000})),
            None,
        )
        .await;
        self.call(
            "delete user",
            Method::DELETE,
            &format!("/api/v2/users/{id}"),
            None,
            None,
        )
        .await;
    }
}

pub(super) fn agents(w: &serde_json::Value) -> Vec<&serde_json::Value> {
    w["latest_build"]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["agents"].as_array().into_iter().flatten())
        .collect()
}

/// A workspace state as the phases see it: the build's transition and status, its job's
/// status, and each agent's status and lifecycle.
pub(super) fn reduce(w: &serde_json::Value) -> String {
    let b = &w["latest_build"];
    let mut s = format!(
        "{} {} (job {})",
        b["transition"].as_str().unwrap_or("?"),
        b["status"].as_str().unwrap_or("?"),
        b["job"]["status"].as_str().unwrap_or("?")
    );
    for a in agents(w) {
        s += &format!(
            ", agent {}/{}",
            a["status"].as_str().unwrap_or("?"),
            a["lifecycle_state"].as_str().unwrap_or("?")
        );
    }
    s
}
