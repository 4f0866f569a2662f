//! A client span per Coder API call and websocket upgrade, with OpenTelemetry's HTTP
//! semantic-convention attributes, and Coder's own trace id (`X-Trace-ID`) when it sends one.
//!
//! Coder's id goes on the span as `coder.trace_id`; when it differs from ours (propagation
//! off, or a proxy that drops `traceparent`) the span also gets a link to Coder's trace, and
//! the phase in progress learns it (see [`PhaseTraces`]) so reports can show it.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use reqwest::Method;
use reqwest::header::HeaderMap;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::ApiError;

/// Coder's trace id, as last seen by the calls of the current phase.
#[derive(Clone, Default, Debug)]
pub struct PhaseTraces(pub Arc<Mutex<Option<String>>>);

impl PhaseTraces {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

tokio::task_local! {
    /// Set by the runner around each phase.
    pub static PHASE_TRACES: PhaseTraces;
    /// When the phase in progress times out (set by the runner): a wait the server asks for
    /// (`Retry-After`, a rate-limit window's reset) that would end after it is not waited,
    /// and the call fails now as what it is (`rate_limited`) rather than as a `timeout`.
    pub static PHASE_DEADLINE: tokio::time::Instant;
}

pub fn client_span(
    method: &Method,
    route: &'static str,
    url: &url::Url,
    attempt: u32,
) -> tracing::Span {
    let mut full = url.clone();
    full.set_query(None);
    let span = tracing::info_span!(
        "http.client",
        otel.name = %format!("{method} {route}"),
        otel.kind = "client",
        http.request.method = %method,
        url.template = route,
        url.full = %full,
        server.address = url.host_str().unwrap_or(""),
        server.port = url.port_or_known_default().unwrap_or(0),
        http.request.resend_count = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        coder.trace_id = Empty,
        otel.status_code = Empty,
    );
    if attempt > 0 {
        span.record("http.request.resend_count", attempt);
    }
    span
}

/// Records the answer on the span, and Coder's trace when it names one.
pub fn answered(span: &tracing::Span, status: u16, headers: &HeaderMap) {
    span.record("http.response.status_code", status);
    if status >= 400 {
        span.record("error.type", status.to_string());
        span.record("otel.status_code", "ERROR");
    }
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(coder_trace) = get("x-trace-id") else {
        return;
    };
    span.record("coder.trace_id", coder_trace.as_str());
    let ours = crate::telemetry::ids(span).map(|(t, _)| t);
    if ours.as_deref() != Some(coder_trace.as_str()) {
        let link = (
            TraceId::from_hex(&coder_trace),
            get("x-span-id").map(|s| SpanId::from_hex(&s)),
        );
        if let (Ok(t), Some(Ok(s))) = link {
            span.add_link(SpanContext::new(
                t,
                s,
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ));
        }
    }
    let _ = PHASE_TRACES
        .try_with(|p| *p.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(coder_trace));
}

pub fn failed(span: &tracing::Span, e: &ApiError) {
    let kind = match e {
        ApiError::Timeout { .. } => "timeout",
        ApiError::Connect { .. } => "connect_error",
        _ => "protocol_error",
    };
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}
