//! Websocket upgrades to Coder: the web terminal and the `watch-ws` event stream.
//!
//! One place opens them (app websockets too), as `Client::send` is the one place for plain calls: the session
//! token in a header (never in the URL), a client span with `traceparent` injected, the call
//! timed for metrics, Coder's error body read from a refused upgrade, the token scrubbed from
//! every error.

use reqwest::Method;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self};

use super::{ApiError, Client, Response, TOKEN_HEADER};

/// tungstenite zero-fills its whole read buffer before every read, and every poll that finds
/// nothing is a read: at its default 128 KiB, each waiting socket held 128 KiB resident and
/// each wake-up cleared it again. Coder's frames (workspace events, terminal output) are a
/// few KiB; the buffer grows to a larger frame's length when its header arrives.
const READ_BUFFER: usize = 8 << 10;

/// A `watch-ws` stream's read buffer: its events are one workspace's JSON (about 2 KiB), and
/// one buffer per waiting workspace is resident for the workspace's whole life.
pub(super) const EVENT_READ_BUFFER: usize = 2 << 10;

pub type Ws = tokio_tungstenite::WebSocketStream<
    tokio_tungstenite::MaybeTlsStream<super::arrival::ArrivalStamped>,
>;

/// When the bytes of the websocket's latest read reached this machine (the kernel's stamp,
/// see [`super::arrival`]), beneath TLS when there is TLS.
pub(super) fn arrived(ws: &Ws) -> Option<std::time::Instant> {
    match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.arrived(),
        tokio_tungstenite::MaybeTlsStream::Rustls(s) => s.get_ref().0.arrived(),
        _ => None,
    }
}

impl Client {
    /// The TLS every `wss://` upgrade uses ([`super::tls`]), made once per client.
    fn websocket_tls(&self) -> Result<tokio_tungstenite::Connector, String> {
        self.inner
            .websocket_tls
            .get_or_init(|| super::tls::websocket_connector(&self.inner.opts.extra_roots))
            .clone()
    }

    /// Upgrades `GET path?query` to a websocket. `route` is the templated path for metrics
    /// and spans; `query` is appended as given; `config` replaces the whole default (with
    /// [`READ_BUFFER`]), its read buffer included.
    pub(super) async fn open_websocket(
        &self,
        route: &'static str,
        path: &str,
        query: &[(&str, &str)],
        config: Option<WebSocketConfig>,
    ) -> Result<Ws, ApiError> {
        let mut url = self.url(path);
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            TOKEN_HEADER,
            self.token()
                .expose()
                .parse()
                .map_err(|_| ApiError::Protocol {
                    method: Method::GET,
                    path: path.to_string(),
                    detail: "the session token is not a valid header value".into(),
                })?,
        );
        self.upgrade(route, url, headers, config).await
    }

    /// Upgrades `GET url` (http or https) to a websocket, with `headers` (which sign in).
    /// A 429 is waited out as a plain call's is (`Client::next_attempt`): a load balancer
    /// that sheds load refuses upgrades too, and a terminal must not fail on its first one.
    pub(super) async fn upgrade(
        &self,
        route: &'static str,
        url: url::Url,
        headers: reqwest::header::HeaderMap,
        config: Option<WebSocketConfig>,
    ) -> Result<Ws, ApiError> {
        let mut attempt = 0u32;
        loop {
            let (err, wait) = match self
                .upgrade_once(route, url.clone(), headers.clone(), config, attempt)
                .await
            {
                Ok(ws) => return Ok(ws),
                Err(e) => e,
            };
            let throttled = matches!(err, ApiError::Status { status: 429, .. });
            match self.next_attempt(
                &Method::GET,
                url.path(),
                &err,
                throttled,
                wait,
                &mut attempt,
            ) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(err),
            }
        }
    }

    /// One upgrade attempt; a refusal comes with the wait it named (`super::server_wait`).
    async fn upgrade_once(
        &self,
        route: &'static str,
        mut url: url::Url,
        headers: reqwest::header::HeaderMap,
        config: Option<WebSocketConfig>,
        attempt: u32,
    ) -> Result<Ws, (ApiError, Option<(std::time::Duration, bool)>)> {
        let path = url.path().to_string();
        let config = Some(
            config.unwrap_or_else(|| WebSocketConfig::default().read_buffer_size(READ_BUFFER)),
        );
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .expect("ws and wss are valid schemes");

        let get = Method::GET;
        let protocol = |detail: String| ApiError::Protocol {
            method: get.clone(),
            path: path.clone(),
            detail,
        };
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| (protocol(e.to_string()), None))?;
        req.headers_mut().extend(headers);
        let span = super::trace::client_span(&get, route, &url, attempt);
        let mut sent = None;
        if self.inner.opts.propagate {
            let mut h = reqwest::header::HeaderMap::new();
            sent = super::trace::propagate(&span, &mut h);
            req.headers_mut().extend(h);
        }
        let start = std::time::Instant::now();
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let connect = async {
            let addrs = self.connect_addrs(&host, port).await?;
            let tcp = tokio::net::TcpStream::connect(&*addrs).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(super::arrival::ArrivalStamped::new(tcp))
        };
        let handshake = async {
            let tcp = connect.await.map_err(tungstenite::Error::Io)?;
            let tls = match scheme {
                "wss" => Some(self.websocket_tls().map_err(|e| {
                    tungstenite::Error::Io(std::io::Error::other(format!("TLS setup: {e}")))
                })?),
                _ => None,
            };
            tokio_tungstenite::client_async_tls_with_config(req, tcp, config, tls).await
        };
        // Boxed: a future moved into another one keeps its own storage in this one's state as
        // well (rustc does not reuse a moved-from local's), which doubled every upgrade in
        // flight; 10,000 workspaces open their streams at once.
        let handshake = Box::pin(tracing::Instrument::instrument(handshake, span.clone()));
        let result = match tokio::time::timeout(self.inner.opts.request_timeout, handshake).await {
            Err(_) => {
                self.observe(&get, route, None, start);
                let e = ApiError::Timeout {
                    method: get,
                    path,
                    after: self.inner.opts.request_timeout,
                };
                super::trace::failed(&span, &e);
                return Err((e, None));
            }
            Ok(r) => r,
        };
        match result {
            Ok((ws, resp)) => {
                self.observe(&get, route, Some(resp.status().as_u16()), start);
                let traces =
                    super::trace::answered(&span, resp.status().as_u16(), resp.headers(), sent);
                self.note_tracing(traces);
                Ok(ws)
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                self.observe(&get, route, Some(status), start);
                let traces = super::trace::answered(&span, status, resp.headers(), sent);
                self.note_tracing(traces);
                let bytes = resp.body().clone().unwrap_or_default();
                let mut body: Response = serde_json::from_slice(&bytes).unwrap_or_default();
                if body.message.is_empty() {
                    body.message = format!("websocket upgrade refused with {status}");
                }
                body.message = self.token().scrub(&body.message);
                body.detail = self.token().scrub(&body.detail);
                let wait = reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| super::server_wait(s, resp.headers()));
                Err((
                    ApiError::Status {
                        method: get,
                        path,
                        status,
                        body,
                    },
                    wait,
                ))
            }
            Err(e @ (tungstenite::Error::Io(_) | tungstenite::Error::Tls(_))) => {
                self.observe(&get, route, None, start);
                let mut detail = e.to_string();
                if super::tls::is_untrusted(&detail) {
                    detail = format!("{} ({detail})", self.inner.opts.extra_roots.advice());
                }
                let e = ApiError::Connect {
                    method: get,
                    path,
                    detail: self.token().scrub(&detail),
                };
                super::trace::failed(&span, &e);
                Err((e, None))
            }
            Err(e) => {
                self.observe(&get, route, None, start);
                let e = protocol(self.token().scrub(&e.to_string()));
                super::trace::failed(&span, &e);
                Err((e, None))
            }
        }
    }
}
