//! The status page's chart: each scenario's last 24 hours as an inline SVG, per-phase p50
//! (dashed) and p95 (solid) per run, and one mark per run on the time axis (red when
//! workspaces failed, with the run's summary as its tooltip). Server-side, no script, no
//! external asset, so it renders wherever the page is opened.

use std::collections::VecDeque;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{RunSummary, esc};
use crate::phases::Phase;

/// How far back the chart looks.
pub const WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Points kept per scenario (a run every minute for a day; older or more are dropped).
pub const MAX_POINTS: usize = 1440;

/// What the chart keeps of one run.
#[derive(Debug, Clone)]
pub struct Point {
    pub run_id: String,
    pub at: DateTime<Utc>,
    /// Phases (not their parts) with p50 and p95 in milliseconds.
    pub phases: Vec<(Phase, f32, f32)>,
    pub failed: u32,
    pub summary: String,
}

impl Point {
    pub fn of(r: &RunSummary) -> Point {
        Point {
            run_id: r.run_id.clone(),
            at: r.started_at,
            phases: r
                .phases
                .iter()
                .filter_map(|st| {
                    let p = Phase::parse(&st.name).ok()?;
                    Some((
                        p,
                        (st.p50.as_secs_f64() * 1e3) as f32,
                        (st.p95.as_secs_f64() * 1e3) as f32,
                    ))
                })
                .collect(),
            failed: r.failures.values().sum::<usize>() as u32 + r.setup_error.is_some() as u32,
            summary: r.summary_line.clone(),
        }
    }
}

/// Adds a point, dropping those older than [`WINDOW`] and beyond [`MAX_POINTS`].
pub fn keep(q: &mut VecDeque<Point>, p: Point) {
    let oldest = p.at - WINDOW;
    q.push_back(p);
    while q.front().is_some_and(|f| f.at < oldest) || q.len() > MAX_POINTS {
        q.pop_front();
    }
}

const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 36.0;
const COLORS: &[&str] = &[
    "#0969da", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#6e7781", "#953800",
    "#116329", "#4d2d00", "#3e1f79", "#a40e26", "#0550ae",
];

/// The chart of `points` (oldest first) as SVG markup; empty without points.
pub fn svg(points: &VecDeque<Point>) -> String {
    let (Some(first), Some(last)) = (points.front(), points.back()) else {
        return String::new();
    };
    let t0 = first.at;
    let span = (last.at - t0).num_milliseconds().max(1) as f64;
    let x = |at: DateTime<Utc>| {
        if points.len() == 1 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (at - t0).num_milliseconds() as f64 / span * (W - LEFT - RIGHT)
        }
    };
    let top = points
        .iter()
        .flat_map(|p| p.phases.iter().map(|(_, _, p95)| *p95 as f64))
        .fold(1.0, f64::max)
        * 1.1;
    let y = |ms: f64| TOP + (1.0 - ms / top) * (H - TOP - BOTTOM);
    let mut phases: Vec<Phase> = points
        .iter()
        .flat_map(|p| p.phases.iter().map(|(ph, _, _)| *ph))
        .collect();
    phases.sort();
    phases.dedup();

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\" role=\"img\"><title>Per-phase p50 (dashed) and p95 (solid) of each run, and each run on the time axis (red: workspaces failed)</title>",
        H + 18.0 * (phases.len().div_ceil(6) as f64),
        H + 18.0 * (phases.len().div_ceil(6) as f64)
    );
    // Axes, the top value and the time span.
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#999\"/><line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
<text x=\"{tx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{}</text><text x=\"{tx}\" y=\"{b}\" font-size=\"11\" text-anchor=\"end\">0</text>\
<text x=\"{LEFT}\" y=\"{lb}\" font-size=\"11\">{}</text><text x=\"{r}\" y=\"{lb}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        human_ms(top),
        first.at.format("%m-%d %H:%M"),
        last.at.format("%m-%d %H:%M UTC"),
        b = H - BOTTOM,
        r = W - RIGHT,
        tx = LEFT - 4.0,
        ty = TOP + 10.0,
        lb = H - BOTTOM + 26.0,
    );
    for (i, ph) in phases.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (dash, pick) in [(true, 0usize), (false, 1usize)] {
            let pts: Vec<String> = points
                .iter()
                .filter_map(|p| {
                    let (_, p50, p95) = p.phases.iter().find(|(q, _, _)| q == ph)?;
                    let v = if pick == 0 { *p50 } else { *p95 } as f64;
                    Some(format!("{:.1},{:.1}", x(p.at), y(v)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let _ = write!(
                s,
                "<polyline class=\"phase\" data-phase=\"{ph}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"{} points=\"{}\"/>",
                if dash {
                    " stroke-dasharray=\"4 3\""
                } else {
                    ""
                },
                pts.join(" ")
            );
        }
        let (lx, ly) = (
            LEFT + (i % 6) as f64 * 115.0,
            H + 6.0 + 18.0 * (i / 6) as f64,
        );
        let _ = write!(
            s,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{ph}</text>",
            lx + 14.0,
            ly + 9.0
        );
    }
    for p in points {
        let failed = p.failed > 0;
        let _ = write!(
            s,
            "<circle class=\"run{}\" data-run-id=\"{}\" cx=\"{:.1}\" cy=\"{}\" r=\"{}\" fill=\"{}\"><title>{} {}</title></circle>",
            if failed { " failed" } else { "" },
            esc(&p.run_id),
            x(p.at),
            H - BOTTOM,
            if failed { 4 } else { 3 },
            if failed { "#cf222e" } else { "#1a7f37" },
            p.at.format("%Y-%m-%d %H:%M:%S UTC"),
            esc(&p.summary)
        );
    }
    s.push_str("</svg>");
    s
}

fn human_ms(ms: f64) -> String {
    if ms >= 60_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: DateTime<Utc>, failed: u32) -> Point {
        Point {
            run_id: format!("r{}", at.timestamp()),
            at,
            phases: vec![(Phase::Build, 100.0, 200.0), (Phase::Agent, 50.0, 80.0)],
            failed,
            summary: "2 workspaces: 2 succeeded, 0 failed".into(),
        }
    }

    #[test]
    fn one_mark_per_run_and_a_day_kept() {
        let now = Utc::now();
        let mut q = VecDeque::new();
        keep(&mut q, point(now - chrono::TimeDelta::hours(30), 0));
        for i in 0..5 {
            keep(
                &mut q,
                point(now + chrono::TimeDelta::minutes(i), (i == 3) as u32),
            );
        }
        assert_eq!(q.len(), 5, "the run 30 h before the newest is dropped");
        let svg = svg(&q);
        assert_eq!(svg.matches("<circle class=\"run").count(), 5);
        assert_eq!(svg.matches("<circle class=\"run failed\"").count(), 1);
        // p50 and p95 for each of two phases.
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(super::svg(&VecDeque::new()), "");
    }
}
