//! `[[scenario]]`: what to create, how many, which phases in which order, their timeouts, and
//! the kind of scenario (a lifecycle run on a schedule, or a traffic pool held open).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::traffic::{TrafficConfig, Transport};
use super::{ConfigError, HumanDuration, Source};
use crate::phases::{Phase, Timeouts};
use crate::ssh::SshConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: Spanned<String>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) template: String,
    #[serde(default)]
    pub(super) parameters: BTreeMap<String, toml::Value>,
    pub(super) count: Spanned<u32>,
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) phases: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "default_command")]
    pub(super) run_command: String,
    pub(super) expect_output: Option<String>,
    pub(super) agent: Option<Spanned<String>>,
    pub(super) workspace_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) timeouts: BTreeMap<Spanned<String>, Spanned<super::duration::TimeoutLimit>>,
    #[serde(default)]
    pub(super) wait: WaitMode,
    pub(super) jitter: Option<Spanned<HumanDuration>>,
    pub(super) ssh: Option<Spanned<super::ssh::RawSsh>>,
    #[serde(default)]
    pub(super) kind: ScenarioKind,
    /// `[scenario.traffic]`; the flat keys below are its deprecated spelling.
    pub(super) traffic: Option<Spanned<super::traffic::RawTraffic>>,
    pub(super) sessions_per_workspace: Option<Spanned<u32>>,
    pub(super) transports: Option<Spanned<Vec<Transport>>>,
    pub(super) bytes_per_tick: Option<Spanned<u32>>,
    pub(super) tick_interval: Option<Spanned<HumanDuration>>,
    pub(super) echo: Option<Spanned<bool>>,
    /// `[scenario.app]`, or (deprecated, with the `app_*` keys) the app's slug.
    pub(super) app: Option<Spanned<super::app::AppKey>>,
    pub(super) app_access: Option<Spanned<crate::phases::app::AccessMode>>,
    pub(super) app_path: Option<Spanned<String>>,
    pub(super) app_status: Option<Spanned<Vec<u16>>>,
    pub(super) app_expect: Option<Spanned<String>>,
    pub(super) app_websocket: Option<Spanned<bool>>,
    pub(super) users: Option<Spanned<super::users::RawUsers>>,
    pub(super) max_failures: Option<Spanned<u32>>,
    pub(super) max_failure_ratio: Option<Spanned<f64>>,
}

/// What a scenario does with its workspaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// Create, use and delete `count` workspaces on every scheduled run.
    #[default]
    Lifecycle,
    /// Keep `count` workspaces running with sessions open, sending traffic all the time.
    Traffic,
    /// A lifecycle run whose stopped workspaces all autostart at one minute (Coder's
    /// lifecycle executor starts them), measured from that minute: the start-of-day herd.
    Autostart,
}

/// How a workspace's progress is followed: the watch stream (the product) or polling at the
/// intervals Coder's own harness uses (a baseline for comparisons).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMode {
    #[default]
    Watch,
    Poll,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub schedule: Option<String>,
    pub template: String,
    pub parameters: BTreeMap<String, String>,
    pub count: u32,
    pub concurrency: u32,
    pub phases: Vec<Phase>,
    pub run_command: String,
    pub expect_output: String,
    /// The agent to wait for and connect to; `None`: every top-level agent is waited for
    /// and the first is used (devcontainer sub-agents are not waited for).
    pub agent: Option<String>,
    pub workspace_prefix: String,
    pub timeouts: Timeouts,
    pub wait: WaitMode,
    /// A random delay from 0 to this before each scheduled run, to spread load.
    pub jitter: Duration,
    pub ssh: SshConfig,
    /// Failed workspaces a run may have and still be a `success` (counted all the same).
    pub budget: FailureBudget,
    /// Test users to spread the workspaces over; none: the token's user owns them all.
    pub users: Option<crate::users::UserSpec>,
    /// What the `app` phase reaches; set when `phases` has `app`.
    pub app: Option<crate::phases::app::AppSettings>,
    pub kind: ScenarioKind,
    pub traffic: TrafficConfig,
}

/// The walk of a `kind = "autostart"` scenario unless `phases` says otherwise.
pub const AUTOSTART_WALK: &[Phase] = &[
    Phase::Create,
    Phase::Build,
    Phase::Agent,
    Phase::Stop,
    Phase::AutostartCreated,
    Phase::AutostartAcquired,
    Phase::AutostartBuilt,
    Phase::AutostartReady,
    Phase::Delete,
];

/// How many failed workspaces a run may have and still be a `success` (`max_failures`,
/// `max_failure_ratio`): even at 99.9% a run of 1,000 expects one failure, and a run that
/// always pages for it teaches people to ignore the page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureBudget {
    #[default]
    None,
    Count(u32),
    Ratio(f64),
}

impl FailureBudget {
    /// Whether `failed` of `total` workspaces are within budget.
    pub fn allows(self, failed: usize, total: usize) -> bool {
        match self {
            FailureBudget::None => failed == 0,
            FailureBudget::Count(n) => failed <= n as usize,
            FailureBudget::Ratio(r) => total > 0 && (failed as f64) <= r * total as f64,
        }
    }
}

/// `max_failures` or `max_failure_ratio`, not both (which would win is a guess).
fn budget(
    src: &Source<'_>,
    count: &Option<Spanned<u32>>,
    ratio: &Option<Spanned<f64>>,
    name: &Spanned<String>,
) -> Result<FailureBudget, ConfigError> {
    match (count, ratio) {
        (Some(_), Some(r)) => Err(ConfigError::at(
            src,
            Some(r.span()),
            format!(
                "scenario {:?} has both max_failures and max_failure_ratio: keep one",
                name.get_ref()
            ),
        )),
        (Some(n), None) => Ok(FailureBudget::Count(*n.get_ref())),
        (None, Some(r)) => {
            let v = *r.get_ref();
            if !(0.0..1.0).contains(&v) {
                return Err(ConfigError::at(
                    src,
                    Some(r.span()),
                    format!("max_failure_ratio is {v}: expected at least 0 and less than 1"),
                ));
            }
            Ok(FailureBudget::Ratio(v))
        }
        (None, None) => Ok(FailureBudget::None),
    }
}

fn default_command() -> String {
    "echo scaletest-ok".into()
}

impl Scenario {
    /// This scenario with `count` workspaces, through the same check as `count` in the file
    /// (the names its `workspace_prefix` makes must fit Coder's 32 characters); concurrency
    /// is capped at the new count. `once --count` comes this way.
    pub fn with_count(mut self, count: u32) -> Result<Scenario, String> {
        crate::naming::check_count(&self.workspace_prefix, count)?;
        self.count = count;
        self.concurrency = self.concurrency.min(count);
        Ok(self)
    }
}

pub(super) fn validate(
    src: &Source<'_>,
    s: RawScenario,
    warnings: &mut Vec<String>,
) -> Result<Scenario, ConfigError> {
    let name = s.name.get_ref().clone();
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(ConfigError::at(
            src,
            Some(s.name.span()),
            format!("invalid scenario name {name:?}: expected letters, digits, '-' or '_'"),
        ));
    }
    let traffic = super::traffic::validate(src, &s, warnings)?;
    let count = *s.count.get_ref();
    let prefix = match &s.workspace_prefix {
        Some(p) => {
            crate::naming::check_prefix(p.get_ref())
                .map_err(|e| ConfigError::at(src, Some(p.span()), e))?;
            p.get_ref().clone()
        }
        None => "scaletest".into(),
    };
    crate::naming::check_count(&prefix, count)
        .map_err(|e| ConfigError::at(src, Some(s.count.span()), e))?;
    let concurrency = match &s.concurrency {
        Some(c) => {
            let v = *c.get_ref();
            if v == 0 || v > count {
                return Err(ConfigError::at(
                    src,
                    Some(c.span()),
                    format!("concurrency is {v}: expected a number from 1 to count ({count})"),
                ));
            }
            v
        }
        None => count.min(20),
    };
    let phases_span = s.phases.as_ref().map(|p| p.span());
    let phases = match &s.phases {
        Some(p) => {
            let span = p.span();
            let mut list = Vec::new();
            for name in p.get_ref() {
                let phase = Phase::parse(name.get_ref())
                    .map_err(|e| ConfigError::at(src, Some(name.span()), e))?;
                list.push(phase);
            }
            crate::phases::check_order(&list).map_err(|e| ConfigError::at(src, Some(span), e))?;
            list
        }
        None if s.kind == ScenarioKind::Autostart => AUTOSTART_WALK.to_vec(),
        None => vec![
            Phase::Create,
            Phase::Build,
            Phase::Agent,
            Phase::Pty,
            Phase::Delete,
        ],
    };
    if s.kind == ScenarioKind::Autostart && !phases.contains(&Phase::AutostartCreated) {
        return Err(ConfigError::at(
            src,
            phases_span.or(Some(s.name.span())),
            "a kind = \"autostart\" scenario's phases must include \"autostart.created\" (after \"stop\"); leave `phases` out for the usual walk",
        ));
    }

    if phases.contains(&Phase::Notify) && s.users.is_none() {
        return Err(ConfigError::at(
            src,
            phases_span.or(Some(s.name.span())),
            "phase \"notify\" needs [scenario.users]: Coder notifies template admins of a new workspace except the user who created it (coderd/workspaces.go), so test users create the workspaces while the token's user, a template admin, watches its inbox",
        ));
    }
    let app = super::app::validate(src, &s, &phases, phases_span, warnings)?;
    let mut parameters = BTreeMap::new();
    for (k, v) in s.parameters {
        let text = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) => {
                // Coder's list(string) parameters take a JSON array in a string.
                let items: Option<Vec<String>> = a
                    .into_iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                match items {
                    Some(items) => serde_json::to_string(&items).expect("strings serialize"),
                    None => {
                        return Err(ConfigError::at(
                            src,
                            Some(s.name.span()),
                            format!(
                                "parameter {k:?} of scenario {name:?}: a list must hold strings only"
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(ConfigError::at(
                    src,
                    Some(s.name.span()),
                    format!(
                        "parameter {k:?} of scenario {name:?} is a {}: expected a string, number, boolean or list of strings",
                        other.type_str()
                    ),
                ));
            }
        };
        parameters.insert(k, text);
    }
    if let Some(sched) = &s.schedule {
        crate::schedule::check_cron(sched.get_ref())
            .map_err(|e| ConfigError::at(src, Some(sched.span()), e))?;
    }
    // A zero timeout would fail every phase at once: refuse it where it was written.
    let mut timeouts = Timeouts::default();
    for (name, limit) in &s.timeouts {
        let phase = Phase::parse(name.get_ref()).map_err(|e| {
            ConfigError::at(src, Some(name.span()), format!("[scenario.timeouts]: {e}"))
        })?;
        if limit.get_ref().0.is_zero() {
            return Err(ConfigError::at(
                src,
                Some(limit.span()),
                "a timeout of zero: expected a duration of more than zero, such as \"90s\"",
            ));
        }
        timeouts.set(phase, limit.get_ref().0);
    }
    let expect_output = s.expect_output.unwrap_or_else(|| {
        // With the default command, expect what it prints.
        if s.run_command == default_command() {
            "scaletest-ok".into()
        } else {
            String::new()
        }
    });
    Ok(Scenario {
        name,
        schedule: s.schedule.map(|s| s.into_inner()),
        template: s.template,
        parameters,
        count,
        concurrency,
        phases,
        run_command: s.run_command,
        expect_output,
        agent: match s.agent {
            Some(a) if a.get_ref().trim().is_empty() => {
                return Err(ConfigError::at(
                    src,
                    Some(a.span()),
                    "agent is empty: expected an agent name of the template, such as \"main\"",
                ));
            }
            a => a.map(|a| a.into_inner()),
        },
        workspace_prefix: prefix,
        timeouts,
        wait: s.wait,
        jitter: s.jitter.map(|j| j.into_inner().0).unwrap_or_default(),
        budget: budget(src, &s.max_failures, &s.max_failure_ratio, &s.name)?,
        app,
        users: super::users::validate(src, s.users)?,
        ssh: super::ssh::validate(src, s.ssh)?,
        kind: s.kind,
        traffic,
    })
}

impl fmt::Display for WaitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitMode::Watch => "watch",
            WaitMode::Poll => "poll",
        })
    }
}
