//! Autostart: workspace schedules in Coder's format and the lifecycle executor that starts
//! stopped workspaces when their minute comes.
//!
//! As coderd does it:
//! - `PUT /workspaces/{id}/autostart` (coderd/workspaces.go `putWorkspaceAutostart`): a
//!   `schedule` of nil or "" clears it; otherwise it must be a weekly schedule (400 "Invalid
//!   autostart schedule." with a validation on `schedule`), then 204.
//! - Weekly schedules (coderd/schedule/cron/cron.go `Weekly`): an optional `CRON_TZ=<zone>`
//!   and five fields, day-of-month and month `*`, at minute resolution; stored with the
//!   `CRON_TZ=` prefix (UTC when none was given). The simulator knows only UTC and refuses
//!   other zones, stricter than Coder.
//! - The executor (coderd/autobuild/lifecycle_executor.go): on every tick `t` (once a minute
//!   in Coder, `autostart_tick` here) it truncates `t` to the minute and starts each
//!   workspace whose latest build is a succeeded `stop`, whose owner is `active`, and whose
//!   schedule's next time after that stop build's `created_at` is not after the truncated
//!   tick; the new build's `reason` is `autostart`. Coder creates them ten at a time; the
//!   provisioner queue then takes them in order.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::types::*;
use super::world::State;

/// A weekly schedule, UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    /// As Coder stores and returns it: `CRON_TZ=UTC m h * * dow`.
    pub text: String,
}

impl Schedule {
    /// Parses a schedule as `cron.Weekly` does; the error is Coder's validation detail.
    pub fn weekly(raw: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = raw.split_whitespace().collect();
        if fields.len() < 5 {
            return Err("validate weekly schedule: expected schedule to consist of 5 fields with an optional CRON_TZ=<timezone> prefix".into());
        }
        let (zone, spec) = match fields[0].strip_prefix("CRON_TZ=") {
            Some(z) => (z, &fields[1..]),
            None => ("UTC", &fields[..]),
        };
        if spec.len() != 5 {
            return Err(format!(
                "parse schedule: expected exactly 5 fields, found {}",
                spec.len()
            ));
        }
        if spec[2] != "*" || spec[3] != "*" {
            return Err("validate weekly schedule: expected day-of-month and month to be *".into());
        }
        if zone != "UTC" {
            return Err(format!(
                "parse schedule: the scaletestd simulator knows only CRON_TZ=UTC, not {zone:?}"
            ));
        }
        for (field, (min, max)) in spec.iter().zip(FIELD_RANGES) {
            for part in field.split(',') {
                robfig_range(part, min, max).map_err(|e| format!("parse schedule: {e}"))?;
            }
        }
        let text = spec.join(" ");
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(&text)
            .map_err(|e| format!("parse schedule: {e}"))?;
        Ok(Schedule {
            cron,
            text: format!("CRON_TZ=UTC {text}"),
        })
    }

    /// The first scheduled time strictly after `t` (robfig/cron's `Next`), on a whole
    /// second: croner keeps `t`'s fraction of a second, which would put the time after the
    /// executor's minute-truncated tick and delay every autostart by a minute.
    pub fn next(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::SubsecRound;
        self.cron
            .find_next_occurrence(&t.trunc_subsecs(0), false)
            .ok()
    }
}

/// Minute, hour, day of month, month, day of week: the bounds robfig/cron checks.
const FIELD_RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];

/// robfig/cron v3's `getRange` (parser.go), which coderd's schedules are parsed with
/// (coderd/schedule/cron): one comma-separated part of a field, refused in its words.
fn robfig_range(expr: &str, min: u32, max: u32) -> Result<(), String> {
    let names: &[&str] = match (min, max) {
        (1, 12) => &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        (0, 6) => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        _ => &[],
    };
    let number = |s: &str| -> Result<i64, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as i64 + i64::from(min));
        }
        let n: i64 = s.parse().map_err(|_| {
            format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
        })?;
        if n < 0 {
            return Err(format!("negative number ({n}) not allowed: {s}"));
        }
        Ok(n)
    };
    let (range, step) = match expr.split('/').collect::<Vec<_>>()[..] {
        [r] => (r, None),
        [r, s] => (r, Some(number(s)?)),
        _ => return Err(format!("too many slashes: {expr}")),
    };
    let (min, max) = (i64::from(min), i64::from(max));
    let (start, mut end) = match range.split('-').collect::<Vec<_>>()[..] {
        ["*" | "?"] => (min, max),
        [a] => {
            let a = number(a)?;
            (a, a)
        }
        [a, b] => (number(a)?, number(b)?),
        _ => return Err(format!("too many hyphens: {expr}")),
    };
    if step.is_some() && !range.contains('-') && range != "*" && range != "?" {
        end = max;
    }
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == Some(0) {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

impl State {
    /// Sets or clears a workspace's autostart schedule; `Err` is Coder's validation detail.
    pub fn set_autostart(&self, ws_id: Uuid, schedule: Option<&str>) -> Result<(), String> {
        let parsed = match schedule.filter(|s| !s.is_empty()) {
            Some(s) => Some(Schedule::weekly(s)?),
            None => None,
        };
        let mut w = self.lock();
        let Some(e) = w.live.get_mut(&ws_id) else {
            return Ok(());
        };
        e.ws.autostart_schedule = parsed.as_ref().map(|s| s.text.clone());
        // Coder stores next_start_at computed from now (coderd/workspaces.go).
        e.ws.next_start_at = parsed.as_ref().and_then(|s| s.next(Utc::now()));
        e.ws.updated_at = Utc::now();
        e.tx.send_replace(Arc::new(e.ws.clone()));
        let name = e.ws.name.clone();
        if let Some(l) = w.ledger.get_mut(&name) {
            match &parsed {
                Some(s) => {
                    l.autostart_schedule = Some(s.text.clone());
                    l.autostart_due = s.next(Utc::now());
                }
                None => l.autostart_schedule = None,
            }
        }
        Ok(())
    }

    /// One executor tick at `t`: starts every workspace that is due.
    fn autostart_tick(self: &Arc<Self>, t: DateTime<Utc>) {
        let tick = t.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(t);
        let due: Vec<(Uuid, String, DateTime<Utc>)> = {
            let w = self.lock();
            w.live
                .values()
                .filter_map(|e| {
                    let b = &e.ws.latest_build;
                    if b.transition != WorkspaceTransition::Stop
                        || b.job.status != ProvisionerJobStatus::Succeeded
                    {
                        return None;
                    }
                    let schedule = Schedule::weekly(e.ws.autostart_schedule.as_deref()?).ok()?;
                    // lifecycle_executor.go `hasValidProvisioner`: "skipping autostart - no
                    // available provisioners".
                    if self.cfg.inject(
                        "autostart_skip",
                        &e.ws.name,
                        self.cfg.failures.autostart_skip,
                    ) {
                        return None;
                    }
                    let next = schedule.next(b.created_at)?;
                    (tick >= next).then(|| (e.ws.id, e.ws.owner_id.to_string(), next))
                })
                .collect()
        };
        for (ws_id, owner, next) in due {
            // Suspended and dormant owners' workspaces are not started.
            if self
                .accounts
                .find(&owner)
                .is_none_or(|u| u.status != "active")
            {
                continue;
            }
            if let Ok(b) = self.start_build_with(ws_id, WorkspaceTransition::Start, "autostart") {
                self.note_autostart(ws_id, b.id, next);
            }
        }
    }

    fn note_autostart(&self, ws_id: Uuid, build: Uuid, due: DateTime<Utc>) {
        let mut w = self.lock();
        let Some(name) = w.live.get(&ws_id).map(|e| e.ws.name.clone()) else {
            return;
        };
        if let Some(l) = w.ledger.get_mut(&name) {
            l.autostarts += 1;
            l.autostart_build = Some(build);
            l.autostart_due = Some(due);
        }
    }
}

/// Runs the lifecycle executor until `stop`, ticking every `every`.
pub async fn executor(state: Arc<State>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => state.autostart_tick(Utc::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_schedules_as_coder_parses_them() {
        let s = Schedule::weekly("CRON_TZ=UTC 30 9 * * 1-5").unwrap();
        assert_eq!(s.text, "CRON_TZ=UTC 30 9 * * 1-5");
        assert_eq!(
            Schedule::weekly("30 9 * * *").unwrap().text,
            "CRON_TZ=UTC 30 9 * * *"
        );
        let monday = "2026-11-30T09:29:59.5Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            s.next(monday).unwrap().to_rfc3339(),
            "2026-11-30T09:30:00+00:00"
        );
        // Strictly after: at the minute itself, the next is a day later.
        let at = "2026-11-30T09:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            s.next(at).unwrap().to_rfc3339(),
            "2026-12-01T09:30:00+00:00"
        );
        for (bad, says) in [
            ("30 9 *", "5 fields"),
            ("30 9 1 * *", "day-of-month and month to be *"),
            ("CRON_TZ=US/Central 30 9 * * *", "only CRON_TZ=UTC"),
            ("61 9 * * *", "end of range (61) above maximum (59): 61"),
            (
                "30 9 * * MON-FRI/0",
                "step of range should be a positive number: MON-FRI/0",
            ),
            (
                "30 x * * *",
                "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax",
            ),
            (
                "30 9 * * 5-1",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            ("0 30 9 * * *", "expected exactly 5 fields"),
        ] {
            let e = Schedule::weekly(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
