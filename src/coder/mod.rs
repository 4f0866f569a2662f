//! The Coder API client: typed calls, Coder's error body as a typed error, bounded retries.
//!
//! Every request goes through `Client::send`, the one place that adds the session token,
//! decides on retries and times the call, so nothing else can forget any of them. Reads
//! (GET) are retried on 5xx and connection errors; every request is retried on 429, with
//! exponential backoff and full jitter, honouring `Retry-After` only when a proxy adds one
//! (Coder itself sends none). The token is never part of any error text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use url::Url;

use crate::secret::Secret;

pub mod apps;
pub mod arrival;
mod calls;
pub mod dialect;
mod error;
pub mod inbox;
pub mod parameters;
pub mod pty;
mod readers;
pub mod sse;
pub mod ssh_target;
pub mod tls;
pub mod trace;
pub mod types;
pub mod users;
pub mod watch;
pub mod ws;
pub mod wsjson;

pub use dialect::{CreateRoute, Dialect, WatchTransport};
pub use error::ApiError;
pub use types::*;

/// Header Coder reads the session token from.
pub const TOKEN_HEADER: &str = "Coder-Session-Token";
/// Header that lets an owner skip Coder's rate limiter.
pub const BYPASS_HEADER: &str = "X-Coder-Bypass-Ratelimit";
/// Largest response body we read; anything larger is a protocol error, not an allocation.
pub const MAX_BODY: usize = 16 << 20;

/// What the client reports about each call it makes (metrics, `coder_up`).
pub trait ApiObserver: Send + Sync {
    /// A request finished: `code` is `None` when no HTTP answer came.
    fn on_response(
        &self,
        method: &Method,
        route: &'static str,
        code: Option<u16>,
        elapsed: Duration,
    );

    /// Coder's answers showed it now does (or does not) record server spans for our calls.
    fn coder_tracing(&self, _traces: bool) {}
}

/// Retry and timeout settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub request_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub bypass_ratelimit: bool,
    /// Send W3C `traceparent` so Coder's server spans join our traces.
    pub propagate: bool,
    /// Where app requests to a host other than the access URL's connect (a wildcard app
    /// host the daemon's DNS cannot resolve); `None`: resolve names as usual.
    pub apps_address: Option<std::net::IpAddr>,
    /// Certificates trusted besides the system's (`[coder] ca_file`).
    pub extra_roots: tls::ExtraRoots,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            max_retries: 4,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            bypass_ratelimit: false,
            propagate: true,
            apps_address: None,
            extra_roots: Default::default(),
        }
    }
}

/// A cheap-to-clone handle on one Coder deployment.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Event streams (SSE): HTTP/1.1, a connection each. Over HTTP/2 they would hold streams
    /// of the shared connection for a workspace's life, and past the server's limit on
    /// concurrent streams (Go's default is 250) every call would queue behind them.
    streams_http: reqwest::Client,
    /// For app requests: redirects are answers to report, not to follow.
    apps_http: reqwest::Client,
    base: Url,
    token: Secret,
    opts: ClientOptions,
    observer: Option<Arc<dyn ApiObserver>>,
    retries: std::sync::atomic::AtomicU64,
    /// Websockets' TLS, made on the first `wss://` upgrade (it reads the system's roots).
    websocket_tls: std::sync::OnceLock<Result<tokio_tungstenite::Connector, String>>,
    /// Whether Coder traces, as its answers last showed (shared by the clients of test
    /// users: it is the deployment's).
    coder_tracing: Arc<std::sync::atomic::AtomicU8>,
}

/// [`Inner::coder_tracing`]'s values.
const TRACING_UNKNOWN: u8 = 0;
const TRACING_OFF: u8 = 1;
const TRACING_ON: u8 = 2;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Connections kept open to Coder between calls. A burst of creates opens one connection
/// per call in flight; kept, 10,000 of them held 25 KiB each (hyper's buffers and dispatch
/// queue) for as long as the workspaces waited, and as many sockets on Coder's side. A few
/// dozen carry the calls between bursts.
const IDLE_CONNECTIONS: usize = 64;

impl Client {
    pub fn new(base: Url, token: Secret, opts: ClientOptions) -> Self {
        Client::build(base, token, opts, None)
    }

    /// A client that reports every call to `observer` (metrics, `coder_up`).
    pub fn observed(
        base: Url,
        token: Secret,
        opts: ClientOptions,
        observer: Arc<dyn ApiObserver>,
    ) -> Self {
        Client::build(base, token, opts, Some(observer))
    }

    fn build(
        base: Url,
        token: Secret,
        opts: ClientOptions,
        observer: Option<Arc<dyn ApiObserver>>,
    ) -> Self {
        // Over TLS, calls speak HTTP/2 when Coder (or its load balancer) offers it: every call
        // and SSE stream then shares one connection instead of one each.
        // One verifier for every connection (see `tls`): the system's roots, `ca_file`, and
        // a certificate of `ca_file` that is exactly the server's.
        let builder = |alpn: &[&[u8]]| {
            let b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(IDLE_CONNECTIONS)
                .user_agent(concat!("scaletestd/", env!("CARGO_PKG_VERSION")));
            match tls::client_config(&opts.extra_roots, alpn) {
                Ok(config) => b.tls_backend_preconfigured(config),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up TLS trust of our own; using reqwest's");
                    b.tls_certs_merge(opts.extra_roots.for_reqwest())
                }
            }
        };
        let http = builder(tls::ALPN_CALLS)
            .build()
            .expect("the TLS backend initializes");
        let streams_http = builder(tls::ALPN_HTTP1)
            .http1_only()
            .build()
            .expect("the TLS backend initializes");
        let mut apps = builder(tls::ALPN_CALLS).redirect(reqwest::redirect::Policy::none());
        if let Some(ip) = opts.apps_address {
            apps = apps.dns_resolver(Arc::new(apps::Override {
                ip,
                except: base.host_str().unwrap_or_default().to_string(),
            }));
        }
        let apps_http = apps.build().expect("the TLS backend initializes");
        Client {
            inner: Arc::new(Inner {
                http,
                streams_http,
                apps_http,
                base,
                token,
                opts,
                observer,
                retries: Default::default(),
                websocket_tls: Default::default(),
                coder_tracing: Default::default(),
            }),
        }
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    pub fn token(&self) -> &Secret {
        &self.inner.token
    }

    /// How many retries this client has made (429, 5xx, connection errors).
    pub fn retries(&self) -> u64 {
        self.inner
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.inner.base.clone();
        let base = u.path().trim_end_matches('/').to_string();
        match path.split_once('?') {
            Some((p, q)) => {
                u.set_path(&format!("{base}{p}"));
                u.set_query(Some(q));
            }
            None => u.set_path(&format!("{base}{path}")),
        }
        u
    }

    fn observe(&self, method: &Method, route: &'static str, code: Option<u16>, start: Instant) {
        if let Some(o) = &self.inner.observer {
            o.on_response(method, route, code, start.elapsed());
        }
    }

    /// Whether Coder records server spans for our calls, as its answers last showed (see
    /// [`trace`]); none until an answer could tell.
    pub fn coder_tracing(&self) -> Option<bool> {
        match self
            .inner
            .coder_tracing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            TRACING_ON => Some(true),
            TRACING_OFF => Some(false),
            _ => None,
        }
    }

    /// Notes what an answer showed of Coder's tracing, telling the observer of a change.
    fn note_tracing(&self, traces: Option<bool>) {
        let Some(on) = traces else { return };
        let v = if on { TRACING_ON } else { TRACING_OFF };
        let was = self
            .inner
            .coder_tracing
            .swap(v, std::sync::atomic::Ordering::Relaxed);
        if was != v {
            if was != TRACING_UNKNOWN {
                tracing::info!(coder_traces = on, "Coder's tracing changed");
            }
            if let Some(o) = &self.inner.observer {
                o.coder_tracing(on);
            }
        }
    }

    /// Sends one API call with retries and reads its whole (bounded) body.
    ///
    /// `route` is the templated path (`/api/v2/workspaces/{workspace}`), for metrics and
    /// spans; `path` is the concrete one.
    async fn send(
        &self,
        method: Method,
        route: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ApiError> {
        let resp = self
            .send_raw(method.clone(), route, path, body, "application/json")
            .await?;
        let timeout = self.inner.opts.request_timeout;
        match tokio::time::timeout(timeout, read_bounded(resp)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(self.body_error(&method, path, e)),
            Err(_) => Err(ApiError::Timeout {
                method,
                path: path.to_string(),
                after: timeout,
            }),
        }
    }

    /// Sends one API call with retries and returns the successful answer with its body
    /// unread (a stream, or for `Client::send` to read).
    async fn send_raw(
        &self,
        method: Method,
        route: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
        accept: &str,
    ) -> Result<reqwest::Response, ApiError> {
        // A PUT sets a value (an autostart schedule), a read-only POST evaluates a form:
        // sending either twice is harmless.
        let idempotent = method == Method::GET
            || method == Method::PUT
            || (method == Method::POST && READ_ONLY_POSTS.contains(&route));
        let opts = &self.inner.opts;
        let mut attempt = 0u32;
        loop {
            let start = Instant::now();
            let span = trace::client_span(&method, route, &self.url(path), attempt);
            let mut req = self.request(method.clone(), path, body.clone(), accept);
            let mut sent = None;
            if opts.propagate {
                let mut h = header::HeaderMap::new();
                sent = trace::propagate(&span, &mut h);
                req = req.headers(h);
            }
            let send = tracing::Instrument::instrument(req.send(), span.clone());
            let result = match tokio::time::timeout(opts.request_timeout, send).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(self.transport_error(&method, path, e)),
                Err(_) => Err(ApiError::Timeout {
                    method: method.clone(),
                    path: path.to_string(),
                    after: opts.request_timeout,
                }),
            };
            self.observe(
                &method,
                route,
                result.as_ref().ok().map(|r| r.status().as_u16()),
                start,
            );
            match &result {
                Ok(resp) => {
                    let traces =
                        trace::answered(&span, resp.status().as_u16(), resp.headers(), sent);
                    self.note_tracing(traces);
                }
                Err(e) => trace::failed(&span, e),
            }
            let (err, retryable, retry_after) = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = server_wait(status, resp.headers());
                    let bytes = match read_bounded(resp).await {
                        Ok(b) => b,
                        Err(e) => return Err(self.body_error(&method, path, e)),
                    };
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (idempotent && status.is_server_error());
                    (
                        self.status_error(&method, path, status, &bytes),
                        retryable,
                        retry_after,
                    )
                }
                Err(err) => {
                    let retryable = idempotent
                        && matches!(err, ApiError::Connect { .. } | ApiError::Timeout { .. });
                    (err, retryable, None)
                }
            };
            match self.next_attempt(&method, path, &err, retryable, retry_after, &mut attempt) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(err),
            }
        }
    }

    /// After a failed attempt: how long to wait before the next one, or None to give up
    /// with `err`. `retry_after` is (the wait the server named, whether it is the end of
    /// Coder's rate-limit window). Shared by plain calls and websocket upgrades, so that a
    /// 429 is waited out the same way whichever of them it refused.
    pub(super) fn next_attempt(
        &self,
        method: &Method,
        path: &str,
        err: &ApiError,
        retryable: bool,
        retry_after: Option<(Duration, bool)>,
        attempt: &mut u32,
    ) -> Option<Duration> {
        let opts = &self.inner.opts;
        if !retryable {
            return None;
        }
        // Inside a phase, a wait the server named (a rate-limit window's reset,
        // Retry-After) that ends after the phase's deadline is not waited: the call fails
        // now as what it is (`rate_limited`), not later as a `timeout`. A window's reset
        // that ends before it is waited however many times: the deadline bounds it, and
        // workers sharing one user's window may each lose a few rounds.
        let phase_deadline = trace::PHASE_DEADLINE.try_with(|d| *d).ok();
        if let (Some((d, window)), Some(deadline)) = (retry_after, phase_deadline) {
            let d = d.max(opts.backoff_base);
            if tokio::time::Instant::now() + d > deadline {
                tracing::debug!(%method, path, wait = ?d, "the server's wait ends after the phase's deadline: not retrying");
                return None;
            }
            if window {
                tracing::debug!(%method, path, error = %err, wait = ?d, "waiting for the rate-limit window");
                self.inner
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Some(d);
            }
        }
        if *attempt >= opts.max_retries {
            return None;
        }
        tracing::debug!(%method, path, error = %err, attempt = *attempt, "retrying");
        let wait = retry_after
            .map(|(d, _)| d.min(Duration::from_secs(60)))
            .unwrap_or_else(|| backoff(opts.backoff_base, opts.backoff_max, *attempt));
        self.inner
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *attempt += 1;
        Some(wait)
    }

    fn body_error(&self, method: &Method, path: &str, e: BodyError) -> ApiError {
        match e {
            BodyError::Transport(e) => self.transport_error(method, path, e),
            BodyError::TooLarge => ApiError::Protocol {
                method: method.clone(),
                path: path.to_string(),
                detail: format!("response body over {} MiB", MAX_BODY >> 20),
            },
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        accept: &str,
    ) -> reqwest::RequestBuilder {
        let http = if accept == "text/event-stream" {
            &self.inner.streams_http
        } else {
            &self.inner.http
        };
        let mut req = http
            .request(method, self.url(path))
            .header(TOKEN_HEADER, self.inner.token.expose())
            .header(header::ACCEPT, accept);
        if self.inner.opts.bypass_ratelimit {
            req = req.header(BYPASS_HEADER, "true");
        }
        if let Some(body) = body {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req
    }

    fn transport_error(&self, method: &Method, path: &str, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            return ApiError::Timeout {
                method: method.clone(),
                path: path.to_string(),
                after: self.inner.opts.request_timeout,
            };
        }
        let mut causes = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            causes.push_str(": ");
            causes.push_str(&s.to_string());
            source = s.source();
        }
        let mut detail = format!("{}{causes}", e.without_url());
        if tls::is_untrusted(&detail) {
            detail = format!("{} ({detail})", self.inner.opts.extra_roots.advice());
        }
        ApiError::Connect {
            method: method.clone(),
            path: path.to_string(),
            detail: self.inner.token.scrub(&detail),
        }
    }

    fn status_error(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        bytes: &[u8],
    ) -> ApiError {
        let mut body: Response = serde_json::from_slice(bytes).unwrap_or_else(|_| Response {
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                .trim()
                .to_string(),
            ..Default::default()
        });
        if body.message.is_empty() {
            body.message = status.canonical_reason().unwrap_or("error").to_string();
        }
        // A proxy or a server may echo what it was sent; never let the token through.
        let token = &self.inner.token;
        body.message = token.scrub(&body.message);
        body.detail = token.scrub(&body.detail);
        ApiError::Status {
            method: method.clone(),
            path: path.to_string(),
            status: status.as_u16(),
            body,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let bytes = self.send(method.clone(), route, path, body).await?;
        decode(&method, path, &bytes)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        route: &'static str,
        path: &str,
    ) -> Result<T, ApiError> {
        self.call(Method::GET, route, path, None).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        route: &'static str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_vec(body).expect("request types serialize");
        self.call(Method::POST, route, path, Some(body)).await
    }
}

/// POST routes that change nothing on the server (coderd/parameters.go evaluates the form
/// and answers it): retried on a 5xx as GETs are.
const READ_ONLY_POSTS: &[&str] =
    &["/api/v2/templateversions/{templateversion}/dynamic-parameters/evaluate"];

fn decode<T: DeserializeOwned>(method: &Method, path: &str, bytes: &[u8]) -> Result<T, ApiError> {
    decode_json(bytes).map_err(|detail| ApiError::Protocol {
        method: method.clone(),
        path: path.to_string(),
        detail,
    })
}

enum BodyError {
    Transport(reqwest::Error),
    TooLarge,
}

async fn read_bounded(resp: reqwest::Response) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|l| l as usize > MAX_BODY) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Transport)?;
        if out.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Exponential backoff with jitter: a random wait in `[c/4, c]` where
/// `c = min(max, base * 2^attempt)` (never near zero, so a storm of retries still spreads).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 4..=ms.max(1)))
}

/// How long until a 429's window ends, from `X-Ratelimit-Reset` (unix seconds; Coder's
/// per-user limiter, go-chi/httprate, sends it on every limited route), plus up to a second
/// of jitter so a pool of workers that hit the same window do not all return at its first
/// instant. Without it, a fixed backoff of a few retries gives up long before a one-minute
/// window ends.
/// The wait a refusal names: (how long, whether it is the end of Coder's rate-limit window).
/// `Retry-After` first; for a 429 without it, Coder's `X-Ratelimit-Reset`.
pub(super) fn server_wait(
    status: StatusCode,
    headers: &header::HeaderMap,
) -> Option<(Duration, bool)> {
    parse_retry_after(headers).map(|d| (d, false)).or_else(|| {
        (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| until_ratelimit_reset(headers))
            .flatten()
            .map(|d| (d, true))
    })
}

fn until_ratelimit_reset(headers: &header::HeaderMap) -> Option<Duration> {
    let reset: i64 = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let wait_ms = (reset.saturating_mul(1000) - now_ms).max(0) as u64;
    Some(Duration::from_millis(
        wait_ms + rand::rng().random_range(50..=1000),
    ))
}

/// `Retry-After` in seconds or as an HTTP date.
fn parse_retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..20 {
            let d = backoff(base, max, attempt);
            let ceiling = (base * 2u32.pow(attempt.min(16))).min(max);
            assert!(d <= ceiling && d >= ceiling / 4, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(header::RETRY_AFTER, later.parse().unwrap());
        let d = parse_retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
    }

    #[test]
    fn url_join_keeps_base_path_and_query() {
        let c = Client::new(
            Url::parse("https://c.example.com/coder/").unwrap(),
            Secret::new("t"),
            ClientOptions::default(),
        );
        assert_eq!(
            c.url("/api/v2/workspaces?q=owner%3Ame").as_str(),
            "https://c.example.com/coder/api/v2/workspaces?q=owner%3Ame"
        );
    }
}
