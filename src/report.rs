//! What a run looks like to a person or a program: the summary line, the per-phase table and
//! the JSON document of `--output json:PATH`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::phases::Phase;
use crate::runner::RunReport;

/// `30 workspaces: 29 succeeded, 1 failed (1 build: build_failed)`, like Coder's own tool.
pub fn summary_line(r: &RunReport) -> String {
    if let Some(e) = &r.setup_error {
        return format!(
            "{} workspaces: run could not start ({}: {})",
            0, e.reason, e.message
        );
    }
    let mut s = format!(
        "{} workspaces: {} succeeded, {} failed",
        r.workspaces.len(),
        r.succeeded(),
        r.failed()
    );
    let by = r.failures_by_phase();
    if !by.is_empty() {
        let parts: Vec<String> = by
            .iter()
            .map(|((p, reason), n)| format!("{n} {p}: {reason}"))
            .collect();
        let _ = write!(s, " ({})", parts.join(", "));
    }
    if r.failed() > 0 && r.result() == crate::runner::RunResult::Success {
        let budget = match r.budget {
            crate::runner::FailureBudget::Count(n) => format!("max_failures = {n}"),
            crate::runner::FailureBudget::Ratio(x) => format!("max_failure_ratio = {x}"),
            crate::runner::FailureBudget::None => String::new(),
        };
        let _ = write!(s, "; within the failure budget ({budget})");
    }
    s
}

/// Nearest-rank percentile of sorted durations.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Per-phase statistics of a run.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    /// The phase, or `<phase>.<part>` for a part timed apart (`ssh.handshake`).
    pub name: String,
    pub succeeded: usize,
    pub failed: usize,
    #[serde(serialize_with = "crate::phases::ser_ms", rename = "p50_ms")]
    pub p50: Duration,
    #[serde(serialize_with = "crate::phases::ser_ms", rename = "p95_ms")]
    pub p95: Duration,
    #[serde(serialize_with = "crate::phases::ser_ms", rename = "max_ms")]
    pub max: Duration,
}

fn stats(name: String, mut ok: Vec<Duration>, failed: usize) -> PhaseStats {
    ok.sort();
    PhaseStats {
        name,
        succeeded: ok.len(),
        failed,
        p50: percentile(&ok, 0.50),
        p95: percentile(&ok, 0.95),
        max: ok.last().copied().unwrap_or_default(),
    }
}

/// Statistics of every phase that ran, over its successful runs, each followed by the
/// parts of it timed apart.
pub fn phase_stats(r: &RunReport) -> Vec<PhaseStats> {
    let mut out = Vec::new();
    for phase in Phase::ALL {
        let recs: Vec<_> = r
            .workspaces
            .iter()
            .filter_map(|w| w.record(*phase))
            .collect();
        if recs.is_empty() {
            continue;
        }
        let ok: Vec<Duration> = recs.iter().filter(|p| p.ok).map(|p| p.duration).collect();
        let failed = recs.len() - ok.len();
        out.push(stats(phase.to_string(), ok, failed));
        let parts: std::collections::BTreeSet<&str> = recs
            .iter()
            .flat_map(|p| p.sub_timings_ms.keys().copied())
            .collect();
        for part in parts {
            let ok = recs
                .iter()
                .filter(|p| p.ok)
                .filter_map(|p| p.sub_timings_ms.get(part))
                .map(|ms| Duration::from_secs_f64(ms / 1e3))
                .collect();
            out.push(stats(format!("{phase}.{part}"), ok, 0));
        }
    }
    out
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

/// The per-phase table printed after the summary: the phase column as wide as its longest
/// name, every header over its column.
pub fn phase_table(r: &RunReport) -> String {
    let stats = phase_stats(r);
    let width = stats
        .iter()
        .map(|st| st.name.len())
        .chain(["phase".len()])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<width$} {:>6} {:>6} {:>10} {:>10} {:>10}",
        "phase", "ok", "failed", "p50", "p95", "max"
    );
    for st in stats {
        let _ = writeln!(
            s,
            "{:<width$} {:>6} {:>6} {:>10} {:>10} {:>10}",
            st.name,
            st.succeeded,
            st.failed,
            ms(st.p50),
            ms(st.p95),
            ms(st.max)
        );
    }
    s
}

/// The JSON document: totals like Coder's own results file, then every workspace.
#[derive(Serialize)]
struct JsonReport<'a> {
    total_runs: usize,
    total_pass: usize,
    total_fail: usize,
    result: &'static str,
    summary: String,
    phases: Vec<PhaseStats>,
    #[serde(flatten)]
    run: &'a RunReport,
}

fn json_report(r: &RunReport) -> JsonReport<'_> {
    JsonReport {
        total_runs: r.workspaces.len(),
        total_pass: r.succeeded(),
        total_fail: r.failed(),
        result: r.result().as_str(),
        summary: summary_line(r),
        phases: phase_stats(r),
        run: r,
    }
}

pub fn to_json(r: &RunReport) -> String {
    serde_json::to_string_pretty(&json_report(r)).expect("reports serialize")
}

/// [`to_json`]'s document as a value (the run API adds to it).
pub fn to_json_value(r: &RunReport) -> serde_json::Value {
    serde_json::to_value(json_report(r)).expect("reports serialize")
}

/// The run as JUnit XML, for CI systems: one `testsuite` per run, one `testcase` per
/// workspace (its time the workspace's phases), a failed workspace's first failure as
/// `<failure type="reason" message="phase: reason">` with the error as text, its trace id as
/// a testcase property; a run that could not start is one `<error>` testcase.
pub fn to_junit(r: &RunReport) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let (tests, failures, errors) = match &r.setup_error {
        Some(_) => (1, 0, 1),
        None => (r.workspaces.len(), r.failed(), 0),
    };
    let _ = writeln!(
        x,
        "<testsuites name=\"scaletestd\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{}\">",
        secs(r.elapsed)
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{}\" timestamp=\"{}\">",
        escape_markup(&r.scenario),
        secs(r.elapsed),
        r.started_at.format("%Y-%m-%dT%H:%M:%S")
    );
    let _ = writeln!(x, "    <properties>");
    for (k, v) in [
        ("run_id", r.run_id.as_str()),
        ("result", r.result().as_str()),
        ("summary", &summary_line(r)),
    ] {
        let _ = writeln!(
            x,
            "      <property name=\"{k}\" value=\"{}\"/>",
            escape_markup(v)
        );
    }
    let _ = writeln!(x, "    </properties>");
    let class = format!("scaletestd.{}", escape_markup(&r.scenario));
    if let Some(e) = &r.setup_error {
        let _ = writeln!(
            x,
            "    <testcase name=\"setup\" classname=\"{class}\" time=\"0.000\">\n      <error type=\"{}\" message=\"{}\">{}</error>\n    </testcase>",
            e.reason,
            escape_markup(&format!("the run could not start: {}", e.reason)),
            escape_markup(&e.message)
        );
    }
    for w in &r.workspaces {
        let time: Duration = w.phases.iter().map(|p| p.duration).sum();
        let _ = writeln!(
            x,
            "    <testcase name=\"{}\" classname=\"{class}\" time=\"{}\">",
            escape_markup(&w.name),
            secs(time)
        );
        let trace = w
            .failure()
            .and_then(|(p, _, _)| w.record(p))
            .or_else(|| w.phases.first())
            .and_then(|p| p.trace_id.clone());
        if let Some(t) = trace {
            let _ = writeln!(
                x,
                "      <properties>\n        <property name=\"trace_id\" value=\"{}\"/>\n      </properties>",
                escape_markup(&t)
            );
        }
        if let Some((phase, reason, msg)) = w.failure() {
            let _ = writeln!(
                x,
                "      <failure type=\"{reason}\" message=\"{}\">{}</failure>",
                escape_markup(&format!("{phase}: {reason}")),
                escape_markup(msg)
            );
        }
        let _ = writeln!(x, "    </testcase>");
    }
    let _ = writeln!(x, "  </testsuite>\n</testsuites>");
    x
}

/// Text for an XML or HTML attribute or element (the JUnit report, the status page): the
/// five specials escaped, and characters XML 1.0 cannot carry at all (control characters
/// from a terminal's output) replaced.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::PhaseRecord;
    use crate::reason::Reason;
    use crate::runner::{FailureBudget, WorkspaceReport};
    use chrono::Utc;

    #[test]
    fn xml_text_is_escaped_and_control_characters_replaced() {
        assert_eq!(
            escape_markup("a<b & \"c\" 'd'>\u{1b}[0m\n"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;\u{FFFD}[0m\n"
        );
    }

    #[test]
    fn the_tables_headers_stand_over_their_columns_for_any_phase_name() {
        let rec = |phase, ms, ok| PhaseRecord {
            phase,
            started_at: Utc::now(),
            duration: Duration::from_millis(ms),
            ok,
            reason: (!ok).then_some(Reason::Timeout),
            error: None,
            trace_id: None,
            coder_trace_id: None,
            sub_timings_ms: Default::default(),
            event_at: None,
        };
        let ws = |index, phases: Vec<PhaseRecord>| WorkspaceReport {
            index,
            name: format!("w-{index}"),
            id: None,
            ok: phases.iter().all(|p| p.ok),
            phases,
            build_stages: vec![],
            last_coder_trace: None,
            clock: Default::default(),
        };
        let r = RunReport {
            scenario: "s".into(),
            run_id: "r".into(),
            started_at: Utc::now(),
            elapsed: Duration::from_secs(1),
            setup_error: None,
            aborted: false,
            watch_transport: None,
            create_route: None,
            workspaces: vec![
                ws(
                    1,
                    vec![
                        rec(Phase::Create, 3, true),
                        rec(Phase::AutostartAcquired, 61_250, true),
                        rec(Phase::Delete, 120, true),
                    ],
                ),
                ws(
                    2,
                    vec![rec(Phase::Create, 2, false), rec(Phase::Delete, 80, true)],
                ),
            ],
            budget: FailureBudget::None,
        };
        assert_eq!(
            phase_table(&r),
            "\
phase                  ok failed        p50        p95        max
create                  1      1      3.0ms      3.0ms      3.0ms
autostart.acquired      1      0      61.2s      61.2s      61.2s
delete                  2      0     80.0ms    120.0ms    120.0ms
"
        );
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.95), Duration::from_millis(95));
        assert_eq!(percentile(&v[..1], 0.95), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
