//! coderd's tracing middleware, simulated: a server span named `<METHOD> <route pattern>`
//! (service `coderd`) as a child of the incoming W3C `traceparent`, following the parent's
//! sampling decision, and `X-Trace-ID`/`X-Span-ID` plus an injected `traceparent` on the
//! answer, as Coder's `coderd/tracing` HTTP middleware does.
//!
//! Without tracing (`CODER_TRACE_ENABLE=false`) coderd's tracer is OpenTelemetry's no-op one
//! (coderd/coderd.go `trace.NewNoopTracerProvider()`), whose span carries the incoming
//! context unchanged, and `StartHTTPSpan` (coderd/tracing/httpmw.go) still writes the
//! headers when that context is valid: the caller's own trace and span ids come back, and
//! nothing at all without a `traceparent`. The simulator answers the same way.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::api::{App, route_of};

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut axum::http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

pub async fn server_span(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&Headers(req.headers()));
    let Some(tracer) = &app.tracer else {
        // The no-op tracer: the caller's context, echoed when there is one.
        let sc = parent.span().span_context().clone();
        let mut resp = next.run(req).await;
        if sc.is_valid() {
            stamp(&propagator, resp.headers_mut(), sc);
        }
        return resp;
    };
    let route = route_of(&app, &req);
    let attrs = vec![
        KeyValue::new("http.request.method", req.method().to_string()),
        KeyValue::new(
            "http.route",
            route
                .split_once(' ')
                .map(|(_, r)| r.to_string())
                .unwrap_or_default(),
        ),
        KeyValue::new("url.path", req.uri().path().to_string()),
    ];
    let mut span = tracer
        .span_builder(route)
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .start_with_context(tracer, &parent);
    let sc = span.span_context().clone();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    span.set_attribute(KeyValue::new("http.response.status_code", status as i64));
    if status >= 500 {
        span.set_status(Status::error(format!("{status}")));
    }
    span.end();
    stamp(&propagator, resp.headers_mut(), sc);
    resp
}

/// `X-Trace-ID`, `X-Span-ID` and a `traceparent` naming `sc`, as StartHTTPSpan writes them.
fn stamp(
    propagator: &TraceContextPropagator,
    h: &mut axum::http::HeaderMap,
    sc: opentelemetry::trace::SpanContext,
) {
    if let Ok(v) = HeaderValue::from_str(&sc.trace_id().to_string()) {
        h.insert("X-Trace-ID", v);
    }
    if let Ok(v) = HeaderValue::from_str(&sc.span_id().to_string()) {
        h.insert("X-Span-ID", v);
    }
    let cx = opentelemetry::Context::new().with_remote_span_context(sc);
    propagator.inject_context(&cx, &mut HeadersMut(h));
}
