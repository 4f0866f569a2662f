//! An OTLP trace receiver on the official protobufs (opentelemetry-proto): a tonic gRPC
//! server and an HTTP/protobuf endpoint, both on loopback, keeping every span they get.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// A received span with the service that sent it.
#[derive(Debug, Clone)]
pub struct Got {
    pub service: String,
    pub span: Span,
}

impl Got {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn name(&self) -> &str {
        &self.span.name
    }
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                Value::IntValue(i) => Some(i.to_string()),
                Value::BoolValue(b) => Some(b.to_string()),
                Value::DoubleValue(d) => Some(d.to_string()),
                _ => None,
            })
    }
    /// 3 is CLIENT, 2 SERVER, 1 INTERNAL.
    pub fn kind(&self) -> i32 {
        self.span.kind
    }
    pub fn links(&self) -> Vec<(String, String)> {
        self.span
            .links
            .iter()
            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
            .collect()
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<Got>>>);

impl Received {
    pub fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
    pub fn of(&self, service: &str) -> Vec<Got> {
        self.spans()
            .into_iter()
            .filter(|g| g.service == service)
            .collect()
    }
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut v = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    v.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
}

struct Svc(Received);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A gRPC receiver; returns its endpoint (`http://127.0.0.1:PORT`).
pub async fn grpc() -> (String, Received) {
    grpc_at("127.0.0.1:0").await
}

/// [`grpc`] on a given address (coderd exports to a fixed one, set before it starts).
pub async fn grpc_at(addr: &str) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("the OTLP receiver cannot listen on {addr}: {e}"));
    let addr = listener.local_addr().unwrap();
    let got = Received::default();
    let svc = TraceServiceServer::new(Svc(got.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (format!("http://{addr}"), got)
}

/// An HTTP/protobuf receiver (`POST /v1/traces`); returns its base URL.
pub async fn http() -> (String, Received) {
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        g.take(req);
                        let resp = ExportTraceServiceResponse {
                            partial_success: None,
                        }
                        .encode_to_vec();
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            resp,
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        vec![],
                    ),
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), got)
}
