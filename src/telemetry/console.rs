//! Log lines for a person at a console (`--log-format text`, the default): one short line
//! per event,
//!
//! ```text
//! 20:14:39 WARN  demo scaletest-qr6q8w-6 build failed (build_failed): terraform apply: … trace 68df1514
//! ```
//!
//! time, level, then the scenario, workspace and phase once each (from the event or the spans
//! it happened in), the message, the reason and error, the event's other fields as
//! `key=value`, and the first eight digits of the trace id. No `otel.*` field and no span
//! context: `--log-format json` keeps all of that for log pipelines. The module path is shown
//! only when the filter asks for debug. Built on tracing-subscriber's hooks: a
//! [`FormatEvent`], and a [`Layer`] that keeps the three labels of each span as it opens.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// What a span says about where an event happened.
#[derive(Debug, Default, Clone)]
struct Labels {
    scenario: Option<String>,
    workspace: Option<String>,
    phase: Option<String>,
}

impl Visit for Labels {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "scenario" => self.scenario = Some(value.to_string()),
            "workspace.name" | "workspace" => self.workspace = Some(value.to_string()),
            // The phase span's name: `phase.build`, or `wait.autostart.built`.
            "otel.name" => {
                if let Some(p) = value
                    .strip_prefix("phase.")
                    .or_else(|| value.strip_prefix("wait."))
                {
                    self.phase = Some(p.to_string());
                }
            }
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Keeps each span's [`Labels`] in its extensions, for [`Console`] to read.
pub struct SpanLabels;

impl<S> tracing_subscriber::Layer<S> for SpanLabels
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut labels = Labels::default();
        attrs.record(&mut labels);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(labels);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(labels) = span.extensions_mut().get_mut::<Labels>()
        {
            values.record(labels);
        }
    }
}

/// An event's own fields, sorted into what the line shows where.
#[derive(Default)]
struct EventFields {
    message: String,
    labels: Labels,
    reason: Option<String>,
    error: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "scenario" | "workspace" | "workspace.name" => self.labels.record_str(field, value),
            "phase" => self.labels.phase = Some(value.to_string()),
            "reason" => self.reason = Some(value.to_string()),
            "error" => self.error = Some(value.to_string()),
            name if name.starts_with("otel.") || name.starts_with("log.") => {}
            name => self.rest.push((name, value.to_string())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `message` arrives as fmt::Arguments: Debug prints it as written.
        self.record_str(field, &format!("{value:?}"));
    }
}

/// The [`FormatEvent`] of `--log-format text`.
pub struct Console {
    pub ansi: bool,
    /// Show each event's module path (the filter asks for debug).
    pub targets: bool,
}

impl<S, N> FormatEvent<S, N> for Console
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        // Where it happened: the event's own labels first, then the innermost span's.
        let mut labels = fields.labels.clone();
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                if let Some(l) = span.extensions().get::<Labels>() {
                    labels.scenario = labels.scenario.or_else(|| l.scenario.clone());
                    labels.workspace = labels.workspace.or_else(|| l.workspace.clone());
                    labels.phase = labels.phase.or_else(|| l.phase.clone());
                }
            }
        }
        let meta = event.metadata();
        let trace = super::ids(&tracing::Span::current()).map(|(t, _)| t);
        let line = render(
            &chrono::Local::now().format("%H:%M:%S").to_string(),
            *meta.level(),
            self.targets.then(|| meta.target()),
            &labels,
            &fields,
            trace.as_deref(),
            self.ansi,
        );
        writeln!(writer, "{line}")
    }
}

/// One line, as the module's doc shows it.
fn render(
    time: &str,
    level: tracing::Level,
    target: Option<&str>,
    labels: &Labels,
    fields: &EventFields,
    trace: Option<&str>,
    ansi: bool,
) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(s, "{time} ");
    let name = match level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => "WARN ",
        tracing::Level::INFO => "INFO ",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::TRACE => "TRACE",
    };
    if ansi {
        let colour = match level {
            tracing::Level::ERROR => "31",
            tracing::Level::WARN => "33",
            tracing::Level::INFO => "32",
            _ => "2",
        };
        let _ = write!(s, "\x1b[{colour}m{name}\x1b[0m ");
    } else {
        let _ = write!(s, "{name} ");
    }
    if let Some(t) = target {
        let _ = write!(s, "{t}: ");
    }
    for l in [&labels.scenario, &labels.workspace, &labels.phase]
        .into_iter()
        .flatten()
    {
        let _ = write!(s, "{l} ");
    }
    s.push_str(&fields.message);
    if let Some(r) = &fields.reason {
        let _ = write!(s, " ({r})");
    }
    if let Some(e) = &fields.error {
        let _ = write!(s, ": {e}");
    }
    for (k, v) in &fields.rest {
        if v.contains(' ') {
            let _ = write!(s, " {k}={v:?}");
        } else {
            let _ = write!(s, " {k}={v}");
        }
    }
    if let Some(t) = trace {
        let _ = write!(s, " trace {}", &t[..t.len().min(8)]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_phase_is_one_short_line() {
        let labels = Labels {
            scenario: Some("demo".into()),
            workspace: Some("scaletest-qr6q8w-6".into()),
            phase: Some("build".into()),
        };
        let fields = EventFields {
            message: "failed".into(),
            reason: Some("build_failed".into()),
            error: Some("terraform apply: exit status 1".into()),
            ..Default::default()
        };
        let line = render(
            "20:14:39",
            tracing::Level::WARN,
            None,
            &labels,
            &fields,
            Some("68df1514aa0b4c5d8e9f00112233445566"),
            false,
        );
        assert_eq!(
            line,
            "20:14:39 WARN  demo scaletest-qr6q8w-6 build failed (build_failed): terraform apply: exit status 1 trace 68df1514"
        );
        let coloured = render(
            "20:14:39",
            tracing::Level::WARN,
            Some("scaletestd::runner"),
            &labels,
            &fields,
            None,
            true,
        );
        assert!(
            coloured.starts_with(
                "20:14:39 \x1b[33mWARN \x1b[0m scaletestd::runner: demo scaletest-qr6q8w-6 build failed"
            ),
            "{coloured}"
        );
    }
}
