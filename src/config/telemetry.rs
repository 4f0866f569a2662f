//! `[telemetry]`: where spans go (`otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`), whether
//! `traceparent` is sent to Coder, and the trace link of the status page.

use serde::Deserialize;

use super::Env;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) propagate: Option<bool>,
    pub(super) trace_link: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    pub otlp_endpoint: Option<String>,
    pub propagate: bool,
    pub trace_link: Option<String>,
}

pub(super) fn validate(raw: RawTelemetry, env: &Env) -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: raw
            .otlp_endpoint
            .or_else(|| env.otlp_endpoint.clone())
            .filter(|e| !e.is_empty() && e != "none"),
        propagate: raw.propagate.unwrap_or(true),
        trace_link: raw.trace_link,
    }
}
