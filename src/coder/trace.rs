//! A client span per Coder API call and websocket upgrade, with OpenTelemetry's HTTP
//! semantic-convention attributes, and Coder's own trace id (`X-Trace-ID`) when Coder
//! recorded a server span for the call.
//!
//! Whether it did is read from the answer, not from the header's presence: coderd writes
//! `X-Trace-ID`/`X-Span-ID` whenever its span context is valid (coderd/tracing/httpmw.go
//! `StartHTTPSpan`), and with tracing off its no-op tracer's span *is* the caller's context
//! (coderd/coderd.go `trace.NewNoopTracerProvider()`), so the headers echo our own ids. Coder
//! traces when its `X-Span-ID` is not the one our `traceparent` carried (or, without one,
//! when it answers an `X-Trace-ID` at all), and it records our call's span only when our
//! `traceparent` was sampled (its default sampler follows the parent's flag).
//!
//! Coder's id goes on the span as `coder.trace_id` only then; when it differs from ours
//! (propagation off, or a proxy that drops `traceparent`) the span also gets a link to
//! Coder's trace, and the phase in progress learns it (see [`PhaseTraces`]) so reports can
//! show it.

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

/// What a request told Coder of our trace: the span id its `traceparent` carried and whether
/// it was sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Puts `span`'s context in `headers` as a `traceparent`, and says what went (none when
/// there was nothing valid to send).
pub fn propagate(span: &tracing::Span, headers: &mut HeaderMap) -> Option<Sent> {
    crate::telemetry::inject(span, headers);
    sent_in(headers)
}

/// What a `traceparent` in `headers` tells Coder (`00-<trace>-<span>-<flags>`).
pub fn sent_in(headers: &HeaderMap) -> Option<Sent> {
    let tp = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = tp.split('-');
    let (_version, _trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let span_id = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Sent {
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Whether Coder traces, from its answer to a request that sent `sent` (see the module's
/// doc); none when the answer cannot tell (a `traceparent` went and no `X-Trace-ID` came
/// back: a proxy that strips it, or a Coder older than the header).
pub fn coder_traces(headers: &HeaderMap, sent: Option<Sent>) -> Option<bool> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    match (get("x-trace-id"), sent) {
        (None, None) => Some(false),
        (None, Some(_)) => None,
        (Some(_), None) => Some(true),
        (Some(_), Some(s)) => Some(
            get("x-span-id")
                .and_then(|h| SpanId::from_hex(h).ok())
                .is_some_and(|theirs| theirs != s.span_id),
        ),
    }
}

/// Records the answer on the span, and Coder's trace when Coder recorded a span for the
/// call; returns whether Coder traces (see [`coder_traces`]).
pub fn answered(
    span: &tracing::Span,
    status: u16,
    headers: &HeaderMap,
    sent: Option<Sent>,
) -> Option<bool> {
    span.record("http.response.status_code", status);
    if status >= 400 {
        span.record("error.type", status.to_string());
        span.record("otel.status_code", "ERROR");
    }
    let traces = coder_traces(headers, sent);
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Coder's span exists only when it traces and our call was sampled (or sent nothing).
    let recorded = traces == Some(true) && sent.is_none_or(|s| s.sampled);
    let Some(coder_trace) = get("x-trace-id").filter(|_| recorded) else {
        return traces;
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
    traces
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
