//! The simulator's users and their API tokens: who a request is from.
//!
//! As coderd does it (coderd/users.go `postUser`, `deleteUser`; coderd/userpassword;
//! coderd/apikey.go
//! `postToken`; coderd/httpmw/apikey.go): a token is `<10-character id>-<22-character
//! secret>` naming one user; a user created through the API is `dormant` until its first
//! authenticated request; the deployment's owner may do anything, a member only what is its
//! own (other users' workspaces are "not found" to it, as Coder's RBAC hides them).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rand::Rng;
use rand::distr::Alphanumeric;
use uuid::Uuid;

use super::types::{SlimRole, Time, User};

/// Who a request is from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub username: String,
    /// The deployment's owner role: every workspace is its to see and act on.
    pub owner: bool,
}

impl Caller {
    /// Whether `user` in a path (`me`, a name or an id) is this caller.
    pub fn is(&self, user: &str) -> bool {
        user == "me" || user.eq_ignore_ascii_case(&self.username) || user == self.id.to_string()
    }

    /// Whether a workspace owned by `owner` is this caller's to see.
    pub fn may_see(&self, owner: Uuid) -> bool {
        self.owner || self.id == owner
    }
}

struct Account {
    user: User,
    /// As received: coderd keeps a hash; the simulator keeps the text for leak tests.
    password: Option<String>,
    owner: bool,
    deleted: bool,
    token_names: HashSet<String>,
}

/// Every user and token.
#[derive(Default)]
pub struct Accounts(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    users: HashMap<Uuid, Account>,
    tokens: HashMap<String, Uuid>,
    /// Requests made, and answered 429, per username, for tests to see who called.
    calls: HashMap<String, u64>,
    limited: HashMap<String, u64>,
}

/// Why a user could not be created, deleted or given a token: Coder's status and message.
pub type Refusal = (u16, String);

/// Coder's username rule (codersdk `UsernameValid`): 1 to 32 letters, digits and single
/// hyphens inside.
pub fn username_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .split('-')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// What `POST /users` asks for, once checked.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub name: &'a str,
    pub password: &'a str,
    pub email: &'a str,
    pub login_type: &'a str,
    pub service_account: bool,
    pub organization: Uuid,
}

/// coderd/userpassword `Validate`: go-password-validator's entropy of at least 52 bits
/// (log2 of the character pools used, to the power of the length), 64 characters at
/// most; the error is the validator's own advice. Simpler than the validator in one way:
/// runs and keyboard sequences count at full length, so a password it refuses may pass here
/// only when made of such runs.
pub fn password_valid(p: &str) -> Result<(), String> {
    const REPLACE: &str = "!@$&*";
    const SEP: &str = "_-., ";
    const OTHER: &str = "\"#%'()+/:;<=>?[\\]^{|}~";
    let has = |set: &str| p.chars().any(|c| set.contains(c));
    let lower = p.chars().any(|c| c.is_ascii_lowercase());
    let upper = p.chars().any(|c| c.is_ascii_uppercase());
    let digit = p.chars().any(|c| c.is_ascii_digit());
    let unusual: HashSet<char> = p
        .chars()
        .filter(|c| {
            !c.is_ascii_alphanumeric()
                && !REPLACE.contains(*c)
                && !SEP.contains(*c)
                && !OTHER.contains(*c)
        })
        .collect();
    let mut base = unusual.len();
    for (used, size) in [
        (has(REPLACE), REPLACE.len()),
        (has(SEP), SEP.len()),
        (has(OTHER), OTHER.chars().count()),
        (lower, 26),
        (upper, 26),
        (digit, 10),
    ] {
        if used {
            base += size;
        }
    }
    let entropy = if base == 0 {
        0.0
    } else {
        (base as f64).log2() * p.chars().count() as f64
    };
    if entropy < 52.0 {
        let mut advice = Vec::new();
        if !has(OTHER) || !has(SEP) || !has(REPLACE) {
            advice.push("including more special characters");
        }
        if !lower {
            advice.push("using lowercase letters");
        }
        if !upper {
            advice.push("using uppercase letters");
        }
        if !digit {
            advice.push("using numbers");
        }
        return Err(if advice.is_empty() {
            "insecure password, try using a longer password".into()
        } else {
            format!(
                "insecure password, try {} or using a longer password",
                advice.join(", ")
            )
        });
    }
    if p.len() > 64 {
        return Err("password must be no more than 64 characters".into());
    }
    Ok(())
}

/// The longest token lifetimes coderd v2.36.1 grants by default (codersdk/deployment.go):
/// `CODER_MAX_TOKEN_LIFETIME`, 100 years and 25 leap days, for a user, and
/// `CODER_MAX_ADMIN_TOKEN_LIFETIME`, 7 days, for a token of an owner (coderd/apikey.go
/// `getMaxTokenLifetime` reads the roles of the user the token is for).
pub const MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs((100 * 365 + 25) * 24 * 3600);
pub const MAX_ADMIN_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// Go's `time.Duration.String()` of whole seconds: `168h0m0s`.
fn go_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    format!("{}h{}m{}s", s / 3600, s % 3600 / 60, s % 60)
}

impl Accounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deployment's first user, an owner, with the token the simulator was started with.
    pub fn add_owner(&self, user: User, token: &str) {
        let mut a = self.lock();
        a.tokens.insert(token.to_string(), user.id);
        a.users.insert(
            user.id,
            Account {
                user,
                password: None,
                owner: true,
                deleted: false,
                token_names: HashSet::new(),
            },
        );
    }

    /// The caller a token is, counting the request; a dormant user becomes active.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let mut a = self.lock();
        let id = *a.tokens.get(token)?;
        let acc = a.users.get_mut(&id).filter(|u| !u.deleted)?;
        if acc.user.status == "dormant" {
            acc.user.status = "active".into();
        }
        let caller = Caller {
            id,
            username: acc.user.username.clone(),
            owner: acc.owner,
        };
        *a.calls.entry(caller.username.clone()).or_default() += 1;
        Some(caller)
    }

    /// The owners (coderd's template admins, as far as notifications go), not deleted.
    pub fn owners(&self) -> Vec<Uuid> {
        self.lock()
            .users
            .values()
            .filter(|u| u.owner && !u.deleted)
            .map(|u| u.user.id)
            .collect()
    }

    /// Requests made per username so far.
    pub fn calls(&self) -> HashMap<String, u64> {
        self.lock().calls.clone()
    }

    pub fn note_limited(&self, username: &str) {
        *self.lock().limited.entry(username.to_string()).or_default() += 1;
    }

    /// Requests answered 429, per username.
    pub fn limited(&self) -> HashMap<String, u64> {
        self.lock().limited.clone()
    }

    /// Every token issued through the API (not the simulator's own), for leak tests.
    pub fn issued_tokens(&self) -> Vec<String> {
        let a = self.lock();
        a.tokens
            .iter()
            .filter(|(_, id)| a.users.get(id).is_some_and(|u| !u.owner))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Every password a user was created with, for leak tests.
    pub fn received_passwords(&self) -> Vec<String> {
        self.lock()
            .users
            .values()
            .filter_map(|u| u.password.clone())
            .collect()
    }

    /// The user `user` names (a name or an id), when not deleted.
    pub fn find(&self, user: &str) -> Option<User> {
        let a = self.lock();
        a.users
            .values()
            .filter(|u| !u.deleted)
            .find(|u| u.user.username.eq_ignore_ascii_case(user) || u.user.id.to_string() == user)
            .map(|u| u.user.clone())
    }

    /// Users whose name or email contains `word` (Coder's plain search term), by name.
    pub fn search(&self, word: &str) -> Vec<User> {
        let word = word.to_lowercase();
        let a = self.lock();
        let mut found: Vec<User> = a
            .users
            .values()
            .filter(|u| !u.deleted)
            .filter(|u| {
                u.user.username.to_lowercase().contains(&word)
                    || u.user.email.to_lowercase().contains(&word)
            })
            .map(|u| u.user.clone())
            .collect();
        found.sort_by(|x, y| x.username.cmp(&y.username));
        found
    }

    /// Whether a user not deleted has this name or (non-empty) email
    /// (`GetUserByEmailOrUsername`).
    pub fn taken(&self, username: &str, email: &str) -> bool {
        self.lock().users.values().any(|u| {
            !u.deleted
                && (u.user.username.eq_ignore_ascii_case(username)
                    || (!email.is_empty() && u.user.email.eq_ignore_ascii_case(email)))
        })
    }

    /// `POST /users` by `caller`: a member with no roles, `dormant` until it signs in.
    pub fn create(&self, caller: &Caller, new: NewUser<'_>, now: Time) -> Result<User, Refusal> {
        if !caller.owner {
            return Err((403, "You are not authorized to create users.".into()));
        }
        if self.taken(new.username, new.email) {
            return Err((409, "User already exists.".into()));
        }
        let mut a = self.lock();
        let user = User {
            id: Uuid::new_v4(),
            username: new.username.to_string(),
            name: new.name.to_string(),
            email: new.email.to_string(),
            created_at: now,
            updated_at: now,
            last_seen_at: now,
            status: "dormant".into(),
            login_type: new.login_type.to_string(),
            is_service_account: new.service_account,
            organization_ids: vec![new.organization],
            roles: Vec::<SlimRole>::new(),
            has_ai_seat: false,
        };
        a.users.insert(
            user.id,
            Account {
                user: user.clone(),
                password: (!new.password.is_empty()).then(|| new.password.to_string()),
                owner: false,
                deleted: false,
                token_names: HashSet::new(),
            },
        );
        Ok(user)
    }

    /// `DELETE /users/{user}` by `caller`; `owns_workspaces` says whether the user still
    /// has workspaces not yet deleted.
    pub fn delete(&self, caller: &Caller, id: Uuid, owns_workspaces: bool) -> Result<(), Refusal> {
        if !caller.owner {
            return Err((403, "Forbidden.".into()));
        }
        if caller.id == id {
            return Err((403, "You cannot delete yourself!".into()));
        }
        if owns_workspaces {
            return Err((
                417,
                "You cannot delete a user that has workspaces. Delete their workspaces and try again!"
                    .into(),
            ));
        }
        let mut a = self.lock();
        let Some(acc) = a.users.get_mut(&id) else {
            return Err((404, super::api::RESOURCE_NOT_FOUND.into()));
        };
        acc.deleted = true;
        a.tokens.retain(|_, u| *u != id);
        Ok(())
    }

    /// `POST /users/{user}/keys/tokens` by `caller` (the user itself or an owner).
    pub fn issue_token(
        &self,
        caller: &Caller,
        id: Uuid,
        name: &str,
        lifetime_ns: i64,
    ) -> Result<String, Refusal> {
        if !caller.owner && caller.id != id {
            return Err((404, super::api::RESOURCE_NOT_FOUND.into()));
        }
        // Zero: the default lifetime; anything else within the target user's maximum.
        let owner = self.lock().users.get(&id).is_some_and(|u| u.owner);
        let max = if owner {
            MAX_ADMIN_TOKEN_LIFETIME
        } else {
            MAX_TOKEN_LIFETIME
        };
        if lifetime_ns < 0 {
            return Err((
                400,
                "Failed to validate create API key request.\nlifetime must be positive number greater than 0".into(),
            ));
        }
        if lifetime_ns as u128 > max.as_nanos() {
            return Err((
                400,
                format!(
                    "Failed to validate create API key request.\nlifetime must be less than {}",
                    go_duration(max)
                ),
            ));
        }
        let mut a = self.lock();
        let Some(acc) = a.users.get_mut(&id).filter(|u| !u.deleted) else {
            return Err((404, super::api::RESOURCE_NOT_FOUND.into()));
        };
        let name = if name.is_empty() {
            format!("token-{}", Uuid::new_v4().simple())
        } else {
            name.to_string()
        };
        if !acc.token_names.insert(name.clone()) {
            return Err((409, format!("A token with name {name:?} already exists.")));
        }
        let random = |n: usize| -> String {
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(n)
                .map(char::from)
                .collect()
        };
        let key = format!("{}-{}", random(10), random(22));
        a.tokens.insert(key.clone(), id);
        Ok(key)
    }
}
