//! Recent runs per scenario, and the status page rendered from them (server-side HTML, no
//! external assets): results, per-phase p50/p95, failures by reason, and every failed
//! workspace with its error and a link to its trace.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::report;
use crate::runner::RunReport;

/// Runs kept per scenario.
pub const KEEP: usize = 20;

#[derive(Default)]
pub struct History {
    runs: Mutex<HashMap<String, VecDeque<RunReport>>>,
}

impl History {
    pub fn push(&self, r: RunReport) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let q = runs.entry(r.scenario.clone()).or_default();
        q.push_front(r);
        q.truncate(KEEP);
    }

    /// The scenario's runs, newest first.
    pub fn runs(&self, scenario: &str) -> Vec<RunReport> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(scenario)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page needs besides the history.
pub struct PageInfo<'a> {
    pub scenarios: Vec<(&'a str, Option<&'a str>)>,
    pub coder_url: &'a str,
    pub coder_up: bool,
    pub trace_link: Option<&'a str>,
    /// Live traffic of `kind = "traffic"` scenarios.
    pub traffic: Vec<(
        String,
        BTreeMap<&'static str, crate::traffic::TransportStats>,
    )>,
}

/// Our trace (linked when a template is set), and Coder's when it is another trace.
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
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>scaletestd</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}th{{background:#f4f4f4}}\
.success{{color:#1a7f37}}.partial{{color:#9a6700}}.failure,.aborted{{color:#cf222e}}code{{font-size:.9em}}\
</style></head><body><h1>scaletestd</h1><p>Coder: <code>{}</code> — {}</p>",
        esc(info.coder_url),
        if info.coder_up {
            "<span class=\"success\">answering</span>"
        } else {
            "<span class=\"failure\">not answering</span>"
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
        s.push_str("<h3>Recent runs</h3><table><tr><th>started</th><th>run</th><th>result</th><th>summary</th><th>duration</th></tr>");
        for r in &runs {
            let res = r.result().as_str();
            let _ = write!(
                s,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"{res}\">{res}</td><td>{}</td><td>{:.1}s</td></tr>",
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                esc(&r.run_id),
                esc(&report::summary_line(r)),
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
        for st in report::phase_stats(last) {
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
            for ((p, reason), n) in r.failures_by_phase() {
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

        let failed: Vec<_> = runs
            .iter()
            .flat_map(|r| r.workspaces.iter().filter(|w| !w.ok).map(move |w| (r, w)))
            .collect();
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
        if !failed.is_empty() {
            s.push_str("<h3>Failed workspaces</h3><table><tr><th>run</th><th>workspace</th><th>phase</th><th>reason</th><th>error</th><th>trace</th></tr>");
            for (r, w) in failed.iter().take(100) {
                let rec = w.phases.iter().find(|p| !p.ok);
                let (phase, reason, error, trace, coder) = match rec {
                    Some(p) => (
                        p.phase.to_string(),
                        p.reason.map(|r| r.to_string()).unwrap_or_default(),
                        p.error.clone().unwrap_or_default(),
                        p.trace_id.as_deref(),
                        p.coder_trace_id.as_deref(),
                    ),
                    None => Default::default(),
                };
                let _ = write!(
                    s,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.run_id),
                    esc(&w.name),
                    esc(&phase),
                    esc(&reason),
                    esc(&error),
                    trace_cell(info.trace_link, trace, coder)
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
