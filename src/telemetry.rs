//! Logs and traces: one `tracing` subscriber feeding the log output and, through
//! tracing-opentelemetry, OpenTelemetry spans exported over OTLP when an endpoint is set.
//!
//! The log filter (`--log`, `RUST_LOG`) only decides what is printed; scaletestd's own spans
//! always reach OpenTelemetry, so trace ids exist for exemplars and the status page even with
//! export off. The standard `OTEL_*` variables configure the exporter, the sampler
//! (`OTEL_TRACES_SAMPLER(_ARG)`) and the resource (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`).

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    /// `grpc` (default) or `http/protobuf`; from `OTEL_EXPORTER_OTLP_PROTOCOL` when unset.
    pub protocol: Option<String>,
    pub service_name: Option<String>,
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes and stops span export (bounded by the exporter's own timeout).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::debug!(error = %e, "flushing spans");
        }
        let _ = self.provider.shutdown();
    }

    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

/// Builds the tracer provider (with an OTLP exporter when asked) and installs the global
/// subscriber and the W3C propagator. Safe to call more than once: later calls keep the
/// first subscriber.
pub fn init(
    log_filter: &str,
    format: LogFormat,
    export: &TraceExport,
) -> Result<Telemetry, String> {
    let provider = provider(export)?;
    let tracer = provider.tracer("scaletestd");
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("scaletestd", tracing::Level::INFO),
        );
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(Telemetry { provider })
}

fn provider(export: &TraceExport) -> Result<SdkTracerProvider, String> {
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = &export.service_name {
        resource = resource.with_service_name(name.clone());
    } else if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("scaletestd");
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(endpoint) = &export.endpoint {
        let protocol = export
            .protocol
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok())
            .unwrap_or_else(|| "grpc".into());
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let exporter = match protocol.as_str() {
            "grpc" => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(std::time::Duration::from_secs(5))
                .build(),
            "http/protobuf" => {
                let url = if endpoint.ends_with("/v1/traces") {
                    endpoint.clone()
                } else {
                    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                };
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(reqwest::Client::new())
                    .with_endpoint(url)
                    .with_timeout(std::time::Duration::from_secs(5))
                    .build()
            }
            other => {
                return Err(format!(
                    "OTLP protocol {other:?} is not supported: use grpc or http/protobuf"
                ));
            }
        }
        .map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The trace id of a span as 32 hex digits, when it has a valid one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
