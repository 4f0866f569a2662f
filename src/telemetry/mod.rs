//! Logs and traces: one `tracing` subscriber feeding the log output and, through
//! tracing-opentelemetry, OpenTelemetry spans exported over OTLP when an endpoint is set.
//!
//! The log filter (`--log`, `RUST_LOG`) only decides what is printed; scaletestd's own spans
//! always reach OpenTelemetry, so trace ids exist for exemplars, links and the status page
//! even with export off. Text lines are for people ([`console`]: one short line, a short
//! trace id); JSON lines carry every field, the span context, and the `trace_id` and
//! `span_id` of the span they were written in. The standard `OTEL_*` variables configure the exporter protocol, the sampler
//! (`OTEL_TRACES_SAMPLER(_ARG)`) and the resource (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`).

use opentelemetry::propagation::Injector;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

mod console;
pub mod queue;

pub use queue::dropped as spans_dropped;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where spans go.
#[derive(Debug, Clone, Default)]
pub struct TraceExport {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP/protobuf); `None`: no export.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; from `OTEL_EXPORTER_OTLP_PROTOCOL` when unset, else `grpc`.
    pub protocol: Option<String>,
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes and stops span export (bounded: a dead collector costs seconds, not a hang).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::debug!(error = %e, "flushing spans");
        }
        let _ = self
            .provider
            .shutdown_with_timeout(std::time::Duration::from_secs(5));
    }

    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

/// A tracer provider for `service`, exporting to `export.endpoint` when set. Used for
/// scaletestd itself and for the simulator's `coderd` spans.
pub fn provider(service: &str, export: &TraceExport) -> Result<SdkTracerProvider, String> {
    let mut resource = opentelemetry_sdk::Resource::builder();
    if service != "scaletestd" || std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_string());
    }
    let resource = resource.build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if let Some(endpoint) = export.endpoint.clone() {
        let protocol = export
            .protocol
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok())
            .unwrap_or_else(|| "grpc".into());
        if !matches!(protocol.as_str(), "grpc" | "http/protobuf") {
            return Err(format!(
                "OTLP protocol {protocol:?} is not supported: use grpc or http/protobuf"
            ));
        }
        let processor =
            queue::QueueProcessor::start(move || exporter(&endpoint, &protocol), resource)?;
        builder = builder.with_span_processor(processor);
    }
    Ok(builder.build())
}

fn exporter(endpoint: &str, protocol: &str) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let timeout = std::time::Duration::from_secs(5);
    let built = if protocol == "grpc" {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build()
    } else {
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(reqwest::Client::new())
            .with_endpoint(url)
            .with_timeout(timeout)
            .build()
    };
    built.map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))
}

/// Stderr, with a secret removed from everything written: libraries log what they like at
/// trace level (tungstenite logs whole handshake requests, headers included).
#[derive(Clone)]
struct ScrubbedStderr(Option<crate::secret::Secret>);

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match &self.0 {
            Some(secret)
                if !secret.expose().is_empty()
                    && crate::reason::contains(buf, secret.expose().as_bytes()) =>
            {
                err.write_all(secret.scrub(&String::from_utf8_lossy(buf)).as_bytes())?;
            }
            _ => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Log targets whose trace level is dropped whatever the filter says: they log request
/// headers, the session token among them.
const HEADER_LOGGERS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Whether an event may be logged at all: not a header logger's trace. (A filter directive
/// `target=debug` would not do: it *raises* those targets to debug under an `info` filter.)
fn not_headers(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() != tracing::Level::TRACE
        || !HEADER_LOGGERS
            .iter()
            .any(|t| meta.target() == *t || meta.target().starts_with(&format!("{t}::")))
}

/// Builds the tracer provider and installs the global subscriber, tracer provider and W3C
/// propagator. Later calls in the same process keep the first subscriber. `secret` (the
/// session token) is removed from every log line.
pub fn init(
    log_filter: &str,
    format: LogFormat,
    export: &TraceExport,
    secret: Option<crate::secret::Secret>,
) -> Result<Telemetry, String> {
    let provider = provider("scaletestd", export)?;
    let tracer = provider.tracer("scaletestd");
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    use tracing_subscriber::filter::FilterExt;
    let env_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter));
    // Module paths on text lines only when the filter asks for debug somewhere.
    let most = env_filter.max_level_hint();
    let debug = most.is_none_or(|l| l >= tracing::level_filters::LevelFilter::DEBUG);
    // JSON lines carry the run, workspace and phase spans they happened in, whatever the
    // level: those spans reach the log layer (printing nothing themselves) even when the
    // filter passes only warnings.
    let json = format == LogFormat::Json;
    let context = tracing_subscriber::filter::filter_fn(move |m| {
        json && m.is_span() && matches!(m.name(), "scaletest.run" | "scaletest.workspace" | "phase")
    });
    let filter = env_filter
        .or(context)
        .and(tracing_subscriber::filter::filter_fn(not_headers));
    let writer = move || ScrubbedStderr(secret.clone());
    // Colour only for a person at a terminal: a file, a pipe or a log collector gets plain
    // text, and NO_COLOR (no-color.org) turns it off anywhere.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer.clone())
            .event_format(console::Console {
                ansi,
                targets: debug,
            })
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer.clone())
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true),
            })
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .boxed(),
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("scaletestd", tracing::Level::INFO),
        );
    let _ = tracing_subscriber::registry()
        .with(console::SpanLabels)
        .with(fmt.with_filter(filter))
        .with(spans)
        .try_init();
    // try_init bridges the `log` records of our dependencies (rustls, tungstenite) at every
    // level; those the filter drops would each still cost a dispatch.
    log::set_max_level(log_level(most));
    Ok(Telemetry { provider })
}

/// The `log` crate's level for the filter's most verbose one (none: the filter cannot tell).
/// Both crates spell their levels alike ("off", "error", … "trace").
fn log_level(most: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    most.map_or(Ok(log::LevelFilter::Trace), |l| l.to_string().parse())
        .unwrap_or(log::LevelFilter::Trace)
}

/// Adds `trace_id` and `span_id` of the current span to every JSON log line.
struct WithTraceIds<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let Some((trace, span)) = ids(&tracing::Span::current()) else {
            return writer.write_str(&line);
        };
        // `{"timestamp":...` → `{"trace_id":"…","span_id":"…","timestamp":...`
        let rest = line.strip_prefix('{').unwrap_or(&line);
        write!(
            writer,
            "{{\"trace_id\":\"{trace}\",\"span_id\":\"{span}\",{rest}"
        )
    }
}

/// The trace and span id of a span, when it has valid ones.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The trace id of a span as 32 hex digits, when it is valid and sampled (only sampled
/// traces are exported, so only those make useful exemplars and links).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// Writes the W3C `traceparent` (and `tracestate`) of `span` into request headers.
pub fn inject(span: &tracing::Span, headers: &mut reqwest::header::HeaderMap) {
    struct H<'a>(&'a mut reqwest::header::HeaderMap);
    impl Injector for H<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                reqwest::header::HeaderValue::from_str(&value),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut H(headers)));
}

#[cfg(test)]
mod log_level_tests {
    use tracing::level_filters::LevelFilter;

    #[test]
    fn each_filter_level_is_the_same_log_level() {
        assert_eq!(
            super::log_level(Some(LevelFilter::OFF)),
            log::LevelFilter::Off
        );
        assert_eq!(
            super::log_level(Some(LevelFilter::WARN)),
            log::LevelFilter::Warn
        );
        assert_eq!(
            super::log_level(Some(LevelFilter::DEBUG)),
            log::LevelFilter::Debug
        );
        assert_eq!(super::log_level(None), log::LevelFilter::Trace);
    }
}
