//! Users and their API tokens, as a scenario's test users need them: find by name, create,
//! give a token, delete; and a client acting as one of them.
//!
//! Checked in coder/coder v2.36.1: `coderd/users.go` `postUser` (takes `organization_ids`;
//! login type `none` only with `"service_account": true`, which has neither email nor
//! password and is a Premium feature, 403 without the `service_accounts` entitlement; a
//! `password` user's password must pass `userpassword.Validate`, 52 bits of entropy and 64
//! characters at most; 409 when the name or email exists; `DELETE /users/{user}` answers
//! 417 while the user has workspaces), `enterprise/coderd/coderd.go` (`GET /entitlements`,
//! served by the enterprise build only), `coderd/apikey.go` (`POST
//! /users/{user}/keys/tokens` takes `token_name` and `lifetime` as a Go duration in
//! nanoseconds, answers 201 `{"key": …}`), `codersdk/users.go`, `codersdk/deployment.go`.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, Client, User};
use crate::secret::Secret;

/// `codersdk.CreateUserRequestWithOrgs` (the fields we send). Not `Debug`: it may hold a
/// password.
#[derive(Serialize)]
pub struct CreateUserRequest {
    /// Empty for a service account (Coder refuses one with an email).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub email: String,
    pub username: String,
    pub name: String,
    /// `none` for a service account (no sign-in at all), else `password`.
    pub login_type: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub service_account: bool,
    pub organization_ids: Vec<Uuid>,
}

fn expose<S: serde::Serializer>(p: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(p.expose()),
        None => s.serialize_none(),
    }
}

/// `codersdk.Entitlements`, the one feature we ask about.
#[derive(Debug, Default, Deserialize)]
pub struct Entitlements {
    #[serde(default)]
    pub features: std::collections::HashMap<String, Feature>,
}

/// `codersdk.Feature`.
#[derive(Debug, Default, Deserialize)]
pub struct Feature {
    #[serde(default)]
    pub enabled: bool,
}

impl Entitlements {
    /// Whether the deployment may create service accounts (`codersdk.FeatureServiceAccounts`).
    pub fn service_accounts(&self) -> bool {
        self.features
            .get("service_accounts")
            .is_some_and(|f| f.enabled)
    }
}

#[derive(Deserialize)]
struct UsersPage {
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    count: usize,
}

impl Client {
    /// Every user whose name or email contains `word` (Coder's search), all pages.
    pub async fn users_matching(&self, word: &str) -> Result<Vec<User>, ApiError> {
        const PAGE: usize = 100;
        let mut all = Vec::new();
        loop {
            let mut u = url::Url::parse("http://x/api/v2/users").expect("literal URL");
            u.query_pairs_mut()
                .append_pair("q", word)
                .append_pair("limit", &PAGE.to_string())
                .append_pair("offset", &all.len().to_string());
            let path = format!("{}?{}", u.path(), u.query().unwrap_or(""));
            let page: UsersPage = self.get("/api/v2/users", &path).await?;
            let got = page.users.len();
            all.extend(page.users);
            if got < PAGE || all.len() >= page.count {
                return Ok(all);
            }
        }
    }

    /// What the deployment is licensed for; an AGPL build (no such route) is entitled to
    /// nothing.
    pub async fn entitlements(&self) -> Result<Entitlements, ApiError> {
        match self
            .get("/api/v2/entitlements", "/api/v2/entitlements")
            .await
        {
            Err(e) if e.is_route_missing() => Ok(Entitlements::default()),
            r => r,
        }
    }

    pub async fn create_user(&self, req: &CreateUserRequest) -> Result<User, ApiError> {
        self.post("/api/v2/users", "/api/v2/users", req).await
    }

    pub async fn user(&self, name_or_id: &str) -> Result<User, ApiError> {
        self.get(
            "/api/v2/users/{user}",
            &format!("/api/v2/users/{}", super::calls::enc(name_or_id)),
        )
        .await
    }

    pub async fn delete_user(&self, id: Uuid) -> Result<(), ApiError> {
        self.send(
            Method::DELETE,
            "/api/v2/users/{user}",
            &format!("/api/v2/users/{id}"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// A new API token for `user`, named `name`, valid for `lifetime`.
    pub async fn create_token(
        &self,
        user: Uuid,
        name: &str,
        lifetime: Duration,
    ) -> Result<Secret, ApiError> {
        #[derive(Serialize)]
        struct Req<'a> {
            token_name: &'a str,
            lifetime: u128,
        }
        #[derive(Deserialize)]
        struct Key {
            key: String,
        }
        let key: Key = self
            .post(
                "/api/v2/users/{user}/keys/tokens",
                &format!("/api/v2/users/{user}/keys/tokens"),
                &Req {
                    token_name: name,
                    lifetime: lifetime.as_nanos(),
                },
            )
            .await?;
        Ok(Secret::new(key.key))
    }

    /// This client acting as the user `token` belongs to: the same deployment, connection
    /// pools and observer, but never the owner's rate-limit bypass.
    pub fn as_user(&self, token: Secret) -> Client {
        let i = &self.inner;
        Client {
            inner: std::sync::Arc::new(super::Inner {
                http: i.http.clone(),
                streams_http: i.streams_http.clone(),
                apps_http: i.apps_http.clone(),
                base: i.base.clone(),
                token,
                opts: super::ClientOptions {
                    bypass_ratelimit: false,
                    ..i.opts.clone()
                },
                observer: i.observer.clone(),
                retries: Default::default(),
                websocket_tls: i.websocket_tls.clone(),
                coder_tracing: i.coder_tracing.clone(),
            }),
        }
    }
}
