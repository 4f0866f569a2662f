//! Recent runs per scenario, and the status page rendered from them (server-side HTML, no
//! external assets, reloading itself every 30 s): a chart of the last 24 hours (`chart`),
//! results, per-phase p50/p95, failures by reason, and failed workspaces with their errors
//! and links to their traces; and the same as JSON for `/api/v1/status`.
//!
//! Bounded by size, not only by count: a run is kept as what the page shows of it (a
//! [`RunSummary`]: counts, percentiles, failures by reason, and at most
//! [`FAILED_KEPT`] failed workspaces), never as its full report, so 20 runs of 10,000
//! workspaces cost what 20 runs of 10 do.

pub mod chart;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::phases::{Phase, PhaseError, Reason};
use crate::report::{self, PhaseStats};
use crate::runner::{RunReport, RunResult};

/// Runs kept per scenario.
pub const KEEP: usize = 20;
/// Failed workspaces kept per run, with their errors and trace ids.
pub const FAILED_KEPT: usize = 50;

/// What the page shows of one run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub elapsed: Duration,
    pub result: RunResult,
    pub summary_line: String,
    pub watch_transport: Option<&'static str>,
    pub create_route: Option<&'static str>,
    pub setup_error: Option<PhaseError>,
    pub phases: Vec<PhaseStats>,
    pub failures: BTreeMap<(Phase, Reason), usize>,
    /// The first failed workspaces.
    pub failed: Vec<FailedWorkspace>,
    /// How many more failed than are kept.
    pub failed_more: usize,
}

/// A failed workspace as the page lists it.
#[derive(Debug, Clone)]
pub struct FailedWorkspace {
    pub name: String,
    pub phase: Phase,
    pub reason: Reason,
    pub error: String,
    pub trace_id: Option<String>,
    pub coder_trace_id: Option<String>,
}

impl RunSummary {
    pub fn of(r: &RunReport) -> RunSummary {
        let mut failed = Vec::new();
        let mut failed_all = 0;
        for w in r.workspaces.iter().filter(|w| !w.ok) {
            failed_all += 1;
            if failed.len() >= FAILED_KEPT {
                continue;
            }
            if let Some(p) = w.phases.iter().find(|p| !p.ok) {
                failed.push(FailedWorkspace {
                    name: w.name.clone(),
                    phase: p.phase,
                    reason: p.reason.unwrap_or(Reason::ProtocolError),
                    error: p.error.clone().unwrap_or_default(),
                    trace_id: p.trace_id.clone(),
                    coder_trace_id: p.coder_trace_id.clone(),
                });
            }
        }
        RunSummary {
            run_id: r.run_id.clone(),
            started_at: r.started_at,
            elapsed: r.elapsed,
            result: r.result(),
            summary_line: report::summary_line(r),
            watch_transport: r.watch_transport,
            create_route: r.create_route,
            setup_error: r.setup_error.clone(),
            phases: report::phase_stats(r),
            failures: r.failures_by_phase(),
            failed_more: failed_all - failed.len(),
            failed,
        }
    }
}

#[derive(Default)]
pub struct History {
    runs: Mutex<HashMap<String, VecDeque<Arc<RunSummary>>>>,
    /// The chart's points: every run of the last 24 hours, a few numbers each.
    points: Mutex<HashMap<String, VecDeque<chart::Point>>>,
}

impl History {
    /// Keeps what the page shows of a finished run.
    pub fn push(&self, scenario: &str, r: RunSummary) {
        {
            let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
            chart::keep(
                points.entry(scenario.to_string()).or_default(),
                chart::Point::of(&r),
            );
        }
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let q = runs.entry(scenario.to_string()).or_default();
        q.push_front(Arc::new(r));
        q.truncate(KEEP);
    }

    /// The scenario's chart, as SVG (empty before its first run).
    pub fn chart(&self, scenario: &str) -> String {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        points.get(scenario).map(chart::svg).unwrap_or_default()
    }

    /// Runs of the last 24 hours, for the JSON status.
    pub fn points(&self, scenario: &str) -> Vec<chart::Point> {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        points
            .get(scenario)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The failed workspace whose phase had trace `trace_id`, with its run and scenario.
    pub fn find_trace(&self, trace_id: &str) -> Option<(String, Arc<RunSummary>, FailedWorkspace)> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().find_map(|(sc, q)| {
            q.iter().find_map(|r| {
                r.failed
                    .iter()
                    .find(|w| w.trace_id.as_deref() == Some(trace_id))
                    .map(|w| (sc.clone(), r.clone(), w.clone()))
            })
        })
    }

    /// The scenario's runs, newest first (shared, not copied).
    pub fn runs(&self, scenario: &str) -> Vec<Arc<RunSummary>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(scenario)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// HTML-escapes text (the JUnit report's escaper: the same five characters).
pub use crate::report::escape_markup as esc;

/// What the page needs besides the history.
pub struct PageInfo<'a> {
    pub scenarios: Vec<(&'a str, Option<&'a str>)>,
    pub coder_url: &'a str,
    pub coder_up: bool,
    /// Whether Coder records server spans for our requests (`scaletest_coder_tracing`).
    pub coder_traces: Option<bool>,
    pub trace_link: Option<&'a str>,
    /// Live traffic of `kind = "traffic"` scenarios.
    pub traffic: Vec<(
        String,
        BTreeMap<&'static str, crate::traffic::TransportStats>,
    )>,
}

/// Our trace (linked when a template is set), and Coder's when it recorded one of its own
/// under another id (a failed phase's `coder_trace_id` is set only when Coder traced).
fn trace_cell(link: Option<&str>, trace_id: Option<&str>, coder: Option<&str>) -> String {
    let ours = match (link, trace_id) {
        (Some(tpl), Some(id)) => {
            format!(
                "<a href=\"{}\">{}</a>",
                esc(&tpl.replace("{trace_id}", id)),
                esc(id)
            )
        }
        (None, Some(id)) => format!("<code>{}</code>", esc(id)),
        _ => String::new(),
    };
    match coder {
        Some(c) if Some(c) != trace_id => format!("{ours}<br>coder: <code>{}</code>", esc(c)),
        _ => ours,
    }
}

pub fn render(h: &History, info: &PageInfo<'_>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\"><title>scaletestd</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}th{{background:#f4f4f4}}\
.success{{color:#1a7f37}}.partial{{color:#9a6700}}.failure,.aborted{{color:#cf222e}}code{{font-size:.9em}}\
</style></head><body><h1>scaletestd</h1><p>Coder: <code>{}</code> — {} — {}</p>",
        esc(info.coder_url),
        if info.coder_up {
            "<span class=\"success\">answering</span>"
        } else {
            "<span class=\"failure\">not answering</span>"
        },
        match info.coder_traces {
            Some(true) => "its server spans are in our traces",
            Some(false) => {
                "it records no traces (CODER_TRACE_ENABLE is off): the trace links are our spans only"
            }
            None => "whether it records traces is not known yet",
        }
    );
    for (name, schedule) in &info.scenarios {
        let runs = h.runs(name);
        let _ = write!(
            s,
            "<h2>{}</h2><p>schedule: <code>{}</code></p>",
            esc(name),
            esc(schedule.unwrap_or("none"))
        );
        if runs.is_empty() {
            s.push_str("<p>No run yet.</p>");
            continue;
        }
        let _ = write!(s, "<h3>Last 24 hours</h3>{}", h.chart(name));
        s.push_str("<h3>Recent runs</h3><table><tr><th>started</th><th>run</th><th>result</th><th>summary</th><th>duration</th></tr>");
        for r in &runs {
            let res = r.result.as_str();
            let _ = write!(
                s,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"{res}\">{res}</td><td>{}</td><td>{:.1}s</td></tr>",
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                esc(&r.run_id),
                esc(&r.summary_line),
                r.elapsed.as_secs_f64()
            );
        }
        s.push_str("</table>");

        let last = &runs[0];
        if let Some(t) = last.watch_transport {
            let _ = write!(
                s,
                "<p>Coder speaks: workspaces followed over <code>{}</code>, created through <code>{}</code></p>",
                esc(t),
                esc(last.create_route.unwrap_or("?"))
            );
        }
        s.push_str("<h3>Phases of the last run</h3><table><tr><th>phase</th><th>ok</th><th>failed</th><th>p50</th><th>p95</th></tr>");
        for st in &last.phases {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td><td>{:.1} ms</td></tr>",
                esc(&st.name),
                st.succeeded,
                st.failed,
                st.p50.as_secs_f64() * 1e3,
                st.p95.as_secs_f64() * 1e3
            );
        }
        s.push_str("</table>");

        let mut by_reason: BTreeMap<(String, String), usize> = BTreeMap::new();
        for r in &runs {
            for ((p, reason), n) in &r.failures {
                *by_reason
                    .entry((p.to_string(), reason.to_string()))
                    .or_default() += n;
            }
        }
        if !by_reason.is_empty() {
            let _ = write!(
                s,
                "<h3>Failures by reason (last {} runs)</h3><table><tr><th>phase</th><th>reason</th><th>workspaces</th></tr>",
                runs.len()
            );
            for ((p, reason), n) in by_reason {
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
                    esc(&p),
                    esc(&reason)
                );
            }
            s.push_str("</table>");
        }

        for r in runs.iter().filter(|r| r.setup_error.is_some()) {
            let e = r.setup_error.as_ref().expect("filtered");
            let _ = write!(
                s,
                "<p class=\"failure\">Run <code>{}</code> could not start: {} — {}</p>",
                esc(&r.run_id),
                e.reason,
                esc(&e.message)
            );
        }
        if runs.iter().any(|r| !r.failed.is_empty()) {
            s.push_str("<h3>Failed workspaces</h3><table><tr><th>run</th><th>workspace</th><th>phase</th><th>reason</th><th>error</th><th>trace</th></tr>");
            // The newest first, [`FAILED_KEPT`] rows in all: older runs are counted.
            let mut room = FAILED_KEPT;
            let mut older = 0;
            for r in &runs {
                if room == 0 {
                    older += r.failed.len() + r.failed_more;
                    continue;
                }
                for w in r.failed.iter().take(room) {
                    let _ = write!(
                        s,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&r.run_id),
                        esc(&w.name),
                        w.phase,
                        w.reason,
                        esc(&w.error),
                        trace_cell(
                            info.trace_link,
                            w.trace_id.as_deref(),
                            w.coder_trace_id.as_deref()
                        )
                    );
                }
                let shown = r.failed.len().min(room);
                room -= shown;
                let more = r.failed.len() - shown + r.failed_more;
                if more > 0 {
                    let _ = write!(
                        s,
                        "<tr><td><code>{}</code></td><td colspan=\"5\">and {more} more</td></tr>",
                        esc(&r.run_id)
                    );
                }
            }
            if older > 0 {
                let _ = write!(
                    s,
                    "<tr><td colspan=\"6\">and {older} more in older runs</td></tr>"
                );
            }
            s.push_str("</table>");
        }
    }
    for (name, by) in &info.traffic {
        let _ = write!(
            s,
            "<h2>{} (traffic)</h2><table><tr><th>transport</th><th>open sessions</th><th>opened</th><th>ticks</th><th>late ticks</th><th>bytes sent</th><th>bytes echoed</th><th>echo p50</th><th>echo p99</th><th>errors</th></tr>",
            esc(name)
        );
        for (t, st) in by {
            let ms = |q| {
                st.percentile(q)
                    .map(|v| format!("{:.1} ms", v * 1e3))
                    .unwrap_or_default()
            };
            let errors: Vec<String> = st.errors.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let _ = write!(
                s,
                "<tr><td>{t}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                st.open_now,
                st.sessions_opened,
                st.ticks,
                st.late_ticks,
                st.bytes_sent,
                st.bytes_echoed,
                ms(0.5),
                ms(0.99),
                esc(&errors.join(", "))
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}

/// The page's data as JSON (`/api/v1/status`): per scenario its recent runs and the last 24
/// hours, and the traffic pools' live numbers.
pub fn json(h: &History, info: &PageInfo<'_>) -> serde_json::Value {
    use serde_json::json;
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let scenarios: Vec<serde_json::Value> = info
        .scenarios
        .iter()
        .map(|(name, schedule)| {
            let runs: Vec<serde_json::Value> = h
                .runs(name)
                .iter()
                .map(|r| {
                    json!({
                        "run_id": r.run_id,
                        "started_at": r.started_at,
                        "elapsed_ms": ms(r.elapsed),
                        "result": r.result.as_str(),
                        "summary": r.summary_line,
                        "watch_transport": r.watch_transport,
                        "create_route": r.create_route,
                        "setup_error": r.setup_error,
                        "phases": r.phases,
                        "failures": r.failures.iter().map(|((p, reason), n)| json!({
                            "phase": p, "reason": reason, "workspaces": n
                        })).collect::<Vec<_>>(),
                        "failed_workspaces": r.failed.iter().map(|w| json!({
                            "name": w.name, "phase": w.phase, "reason": w.reason,
                            "error": w.error, "trace_id": w.trace_id,
                            "coder_trace_id": w.coder_trace_id,
                        })).collect::<Vec<_>>(),
                        "failed_workspaces_more": r.failed_more,
                    })
                })
                .collect();
            let last_24h: Vec<serde_json::Value> = h
                .points(name)
                .iter()
                .map(|p| {
                    json!({
                        "run_id": p.run_id,
                        "started_at": p.at,
                        "failed": p.failed,
                        "phases": p.phases.iter().map(|(ph, p50, p95)| json!({
                            "phase": ph, "p50_ms": p50, "p95_ms": p95
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({ "name": name, "schedule": schedule, "runs": runs, "last_24h": last_24h })
        })
        .collect();
    let traffic: Vec<serde_json::Value> = info
        .traffic
        .iter()
        .map(|(name, by)| {
            let transports: serde_json::Map<String, serde_json::Value> = by
                .iter()
                .map(|(t, st)| {
                    (
                        t.to_string(),
                        json!({
                            "open_sessions": st.open_now,
                            "sessions_opened": st.sessions_opened,
                            "ticks": st.ticks,
                            "late_ticks": st.late_ticks,
                            "bytes_sent": st.bytes_sent,
                            "bytes_echoed": st.bytes_echoed,
                            "echo_p50_ms": st.percentile(0.5).map(|v| v * 1e3),
                            "echo_p99_ms": st.percentile(0.99).map(|v| v * 1e3),
                            "errors": st.errors.iter().map(|(r, n)| (r.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                        }),
                    )
                })
                .collect();
            json!({ "name": name, "transports": transports })
        })
        .collect();
    json!({
        "coder": { "url": info.coder_url, "answering": info.coder_up },
        "scenarios": scenarios,
        "traffic": traffic,
    })
}
