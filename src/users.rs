//! A scenario's test users: `count` users named `<prefix>-<n>`, over which its workspaces are
//! spread so that each is created and used with its owner's token, under Coder's per-user
//! rate limits and RBAC as real users are.
//!
//! The users are a pool kept across runs: found again by name on every run (so a restarted
//! daemon reuses them, however they were made), created when missing, each given an API
//! token of `token_lifetime` that is held in memory only and replaced when half its life is
//! gone.
//!
//! How a user is created follows what the deployment allows (coderd/users.go `postUser`):
//! a **service account** (login type `none`, no email, no password) where it is entitled to
//! them (a Premium feature), otherwise a **password user** whose password is random, 40
//! characters, made for that one request and dropped after it: nobody signs in as a test
//! user, its token is all it needs. Coder refuses login type `none` for anyone else. Held in memory because a token on disk outlives the
//! process that needs it and is one more secret to guard; the cost is one token per user per
//! process start (and per half lifetime), each expiring on its own. `scaletestd cleanup
//! --users` deletes the pool (a user only when its name is exactly `<prefix>-<n>` and it owns
//! no workspace).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::coder::users::CreateUserRequest;
use crate::coder::{ApiError, Client, User};
use crate::reason::PhaseError;

/// `[scenario.users]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub count: u32,
    pub prefix: String,
    pub token_lifetime: Duration,
    /// Password users' emails are `<name>@<email_domain>`.
    pub email_domain: String,
}

/// The default email domain: `.invalid` is reserved (RFC 2606), so no mail ever leaves.
pub const EMAIL_DOMAIN: &str = "scaletestd.invalid";

/// How missing users are created on this deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ServiceAccount,
    Password,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceAccount => "service account",
            Kind::Password => "password",
        }
    }

    /// Service accounts where the deployment is entitled to them, else password users.
    pub async fn of(main: &Client) -> Result<Kind, PhaseError> {
        let e = main
            .entitlements()
            .await
            .map_err(|e| failed("reading the deployment's entitlements", e))?;
        Ok(if e.service_accounts() {
            Kind::ServiceAccount
        } else {
            Kind::Password
        })
    }
}

impl UserSpec {
    /// The name of user `n` (1-based).
    pub fn name(&self, n: u32) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Whether `name` is one of this pool's users, of any count: `<prefix>-<digits>`.
    pub fn owns_name(prefix: &str, name: &str) -> bool {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// One test user and a client acting as it.
struct Member {
    client: Client,
    issued: Instant,
}

/// One pool's members, locked while it is filled.
type Pool = Arc<tokio::sync::Mutex<Vec<Member>>>;

/// The pools of a process, by deployment and prefix.
#[derive(Default)]
pub struct Pools(Mutex<HashMap<(String, String), Pool>>);

impl Pools {
    /// Clients acting as the `spec.count` users of the pool, creating users and issuing
    /// tokens as needed; `main` must be allowed to create users (owner or user-admin).
    pub async fn clients(
        &self,
        main: &Client,
        spec: &UserSpec,
        organization: Uuid,
    ) -> Result<Vec<Client>, PhaseError> {
        let key = (main.base_url().to_string(), spec.prefix.clone());
        let pool = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let mut members = pool.lock().await;
        let fresh = |m: &Member| m.issued.elapsed() < spec.token_lifetime / 2;
        if members.len() >= spec.count as usize && members[..spec.count as usize].iter().all(fresh)
        {
            return Ok(members[..spec.count as usize]
                .iter()
                .map(|m| m.client.clone())
                .collect());
        }
        let existing: HashMap<String, User> = main
            .users_matching(&spec.prefix)
            .await
            .map_err(|e| failed("listing the test users", e))?
            .into_iter()
            .map(|u| (u.username.clone(), u))
            .collect();
        let mut created = 0;
        let mut kind = None;
        for n in 1..=spec.count {
            let i = (n - 1) as usize;
            if members.get(i).is_some_and(fresh) {
                continue;
            }
            let name = spec.name(n);
            let user = match existing.get(&name) {
                Some(u) => u.clone(),
                None => {
                    created += 1;
                    let k = match kind {
                        Some(k) => k,
                        None => *kind.insert(Kind::of(main).await?),
                    };
                    create(main, spec, &name, k, organization).await?
                }
            };
            let token_name = format!(
                "scaletestd-{}-{}",
                chrono::Utc::now().timestamp_millis(),
                &Uuid::new_v4().simple().to_string()[..8]
            );
            let token = main
                .create_token(user.id, &token_name, spec.token_lifetime)
                .await
                .map_err(|e| failed(&format!("issuing a token for {name}"), e))?;
            let member = Member {
                client: main.as_user(token),
                issued: Instant::now(),
            };
            if i < members.len() {
                members[i] = member;
            } else {
                members.push(member);
            }
        }
        tracing::info!(prefix = %spec.prefix, users = spec.count, created, kind = kind.map(Kind::as_str), "test users ready");
        Ok(members[..spec.count as usize]
            .iter()
            .map(|m| m.client.clone())
            .collect())
    }
}

async fn create(
    main: &Client,
    spec: &UserSpec,
    name: &str,
    kind: Kind,
    organization: Uuid,
) -> Result<User, PhaseError> {
    let req = match kind {
        Kind::ServiceAccount => CreateUserRequest {
            email: String::new(),
            username: name.to_string(),
            name: "scaletestd test user".into(),
            login_type: "none".into(),
            password: None,
            service_account: true,
            organization_ids: vec![organization],
        },
        Kind::Password => CreateUserRequest {
            email: format!("{name}@{}", spec.email_domain),
            username: name.to_string(),
            name: "scaletestd test user".into(),
            login_type: "password".into(),
            password: Some(password()),
            service_account: false,
            organization_ids: vec![organization],
        },
    };
    match main.create_user(&req).await {
        Ok(u) => Ok(u),
        // Made meanwhile by another shard or an earlier attempt: use it.
        Err(ApiError::Status { status: 409, .. }) => main
            .user(name)
            .await
            .map_err(|e| failed(&format!("reading test user {name}"), e)),
        Err(e) => Err(failed(&format!("creating test user {name}"), e)),
    }
}

/// A password nobody will type: 40 letters and digits (about 238 bits; Coder asks for 52 and
/// at most 64 characters, coderd/userpassword).
fn password() -> crate::secret::Secret {
    use rand::Rng;
    let p: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    crate::secret::Secret::new(p)
}

fn failed(what: &str, e: ApiError) -> PhaseError {
    let hint = match &e {
        ApiError::Status { status: 403, .. } => {
            ": the token cannot manage users; it needs Coder's owner or user-admin role"
        }
        _ => "",
    };
    PhaseError::new(e.reason(), format!("{what}: {e}{hint}"))
}

/// What `cleanup --users` did.
#[derive(Debug, Default)]
pub struct Removed {
    pub deleted: Vec<String>,
    /// Users left because they still own workspaces, with Coder's words.
    pub kept: Vec<(String, String)>,
}

/// Deletes every user named `<prefix>-<n>` that owns no workspace (or lists them,
/// `dry_run`).
pub async fn remove(main: &Client, prefix: &str, dry_run: bool) -> Result<Removed, PhaseError> {
    let mut out = Removed::default();
    let users = main
        .users_matching(prefix)
        .await
        .map_err(|e| failed("listing the test users", e))?;
    for u in users
        .into_iter()
        .filter(|u| UserSpec::owns_name(prefix, &u.username))
    {
        if dry_run {
            out.deleted.push(u.username);
            continue;
        }
        match main.delete_user(u.id).await {
            Ok(()) => out.deleted.push(u.username),
            Err(ApiError::Status {
                status: 417, body, ..
            }) => out.kept.push((u.username, body.message)),
            Err(e) => return Err(failed(&format!("deleting test user {}", u.username), e)),
        }
    }
    Ok(out)
}

/// Which user a workspace belongs to: its number, round-robin over the pool.
pub fn owner_index(workspace: u32, users: usize) -> usize {
    (workspace.saturating_sub(1) as usize) % users.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_exact() {
        assert!(UserSpec::owns_name("st-user", "st-user-1"));
        assert!(UserSpec::owns_name("st-user", "st-user-120"));
        for not in [
            "st-user",
            "st-user-",
            "st-user-1a",
            "st-users-1",
            "xst-user-1",
            "st-user-1-2",
        ] {
            assert!(!UserSpec::owns_name("st-user", not), "{not}");
        }
        assert_eq!(
            (owner_index(1, 8), owner_index(8, 8), owner_index(9, 8)),
            (0, 7, 0)
        );
    }
}
