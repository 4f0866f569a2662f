//! Workspace apps through Coder's app proxy: the wildcard app host, an app's URL (path-based
//! or subdomain), one proxied request, and a websocket to an app.
//!
//! As Coder serves them (coderd/workspaceapps/proxy.go, provider.go, db.go, appurl/appurl.go):
//! path-based at `/@{owner}/{workspace}.{agent}/apps/{slug}/`, subdomain at
//! `{slug}--{agent}--{workspace}--{owner}` put in place of the `*` of the wildcard host. The
//! proxy takes the session token from the `Coder-Session-Token` header and answers with a
//! short-lived `coder_signed_app_token` cookie, which is all a browser sends afterwards; an
//! unsigned-in request is redirected (303) to `/login` or `/api/v2/applications/auth-redirect`.
//! Requests here are never retried and redirects never followed: the phase measures what a
//! user's first request gets.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Method, header};
use url::Url;

use super::{ApiError, Client, TOKEN_HEADER};

/// The signed app token's cookie (`codersdk.SignedAppTokenCookie`).
pub const SIGNED_COOKIE: &str = "coder_signed_app_token";
/// How much of an app's answer is kept to match `app_expect` against.
pub const KEEP: usize = 64 << 10;
/// Routes for metrics and spans: the proxy's own patterns, never a workspace's name.
pub const PATH_ROUTE: &str = "/@{user}/{workspace_and_agent}/apps/{workspaceapp}/*";
pub const SUBDOMAIN_ROUTE: &str = "{app}--{agent}--{workspace}--{user}.{wildcard}/*";
/// Paths Coder sends a request that is not signed in to.
const LOGIN_PATHS: [&str; 2] = ["/login", "/api/v2/applications/auth-redirect"];

/// How to reach an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppAccess {
    Path,
    /// Under this wildcard host (`*.apps.example.com[:port]`, as `/applications/host` gives).
    Subdomain(String),
}

/// One app of one workspace, addressed.
#[derive(Debug, Clone)]
pub struct AppTarget {
    pub url: Url,
    pub route: &'static str,
    pub access: &'static str,
}

/// What the proxy answered.
#[derive(Debug)]
pub struct AppAnswer {
    pub status: u16,
    pub location: Option<String>,
    /// The first [`KEEP`] bytes of the body.
    pub body: Bytes,
    /// The signed app token the proxy set, to send instead of the session token next time.
    pub signed_token: Option<String>,
}

impl AppAnswer {
    /// A redirect to Coder's login: the proxy did not take our token.
    pub fn is_login(&self) -> bool {
        self.location
            .as_deref()
            .and_then(|l| Url::parse("http://x/").ok()?.join(l).ok())
            .is_some_and(|u| LOGIN_PATHS.contains(&u.path()))
    }

    /// The `<title>` of an HTML answer (Coder's error pages say what went wrong there).
    pub fn title(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("<title>")? + "<title>".len();
        let len = text[start..].find("</title>")?;
        Some(text[start..start + len].trim().to_string())
    }
}

/// `{scheme}://{host}` for a label under `wildcard`: the `*` replaced (an older Coder gives
/// the host without `*.`: the label goes in front), the access URL's port when the wildcard
/// has none (`appurl.SubdomainAppHost`).
pub fn subdomain_base(access_url: &Url, wildcard: &str, label: &str) -> Result<Url, String> {
    let host = if wildcard.contains('*') {
        wildcard.replacen('*', label, 1)
    } else {
        format!("{label}.{}", wildcard.trim_start_matches('.'))
    };
    let mut url = Url::parse(&format!("{}://{host}/", access_url.scheme()))
        .map_err(|e| format!("wildcard app host {wildcard:?} makes no URL: {e}"))?;
    if url.port().is_none()
        && let Some(port) = access_url.port()
    {
        let _ = url.set_port(Some(port));
    }
    Ok(url)
}

/// `apps_address` as reqwest's resolver: every name but the access URL's host goes there.
pub(super) struct Override {
    pub(super) ip: IpAddr,
    pub(super) except: String,
}

impl reqwest::dns::Resolve for Override {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        if !host.eq_ignore_ascii_case(&self.except) {
            let addr = SocketAddr::new(self.ip, 0);
            return Box::pin(
                async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) },
            );
        }
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Client {
    /// `GET /api/v2/applications/host`: the wildcard app host, `None` when the deployment
    /// has none (or the deprecated route is gone).
    pub async fn app_host(&self) -> Result<Option<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct AppHost {
            #[serde(default)]
            host: String,
        }
        let route = "/api/v2/applications/host";
        match self.get::<AppHost>(route, route).await {
            Ok(h) if h.host.trim().is_empty() => Ok(None),
            Ok(h) => Ok(Some(h.host.trim().to_string())),
            Err(e) if e.is_route_missing() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where `slug` on `agent` of `owner`'s `workspace` answers, `path` under it.
    pub fn app_target(
        &self,
        access: &AppAccess,
        owner: &str,
        workspace: &str,
        agent: &str,
        slug: &str,
        path: &str,
    ) -> Result<AppTarget, String> {
        let path = path.trim_start_matches('/');
        match access {
            AppAccess::Path => Ok(AppTarget {
                url: self.url(&format!("/@{owner}/{workspace}.{agent}/apps/{slug}/{path}")),
                route: PATH_ROUTE,
                access: "path",
            }),
            AppAccess::Subdomain(wildcard) => {
                let label = format!("{slug}--{agent}--{workspace}--{owner}");
                let base = subdomain_base(self.base_url(), wildcard, &label)?;
                let url = base
                    .join(path)
                    .map_err(|e| format!("app path {path:?}: {e}"))?;
                Ok(AppTarget {
                    url,
                    route: SUBDOMAIN_ROUTE,
                    access: "subdomain",
                })
            }
        }
    }

    /// Where app requests to `host` connect: `apps_address` for any host but the access
    /// URL's (a wildcard name the daemon's DNS does not know), else the system's resolver.
    pub(super) async fn connect_addrs(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(ip) = self.apps_override(host) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    fn apps_override(&self, host: &str) -> Option<IpAddr> {
        let ip = self.inner.opts.apps_address?;
        let own = self.base_url().host_str().unwrap_or_default();
        (!host.eq_ignore_ascii_case(own)).then_some(ip)
    }

    /// One GET through the proxy with the session token, or with only `signed` (the signed
    /// app token cookie) as a browser would send it.
    pub async fn app_get(
        &self,
        target: &AppTarget,
        signed: Option<&str>,
    ) -> Result<AppAnswer, ApiError> {
        let get = Method::GET;
        let path = target.url.path().to_string();
        let span = super::trace::client_span(&get, target.route, &target.url, 0);
        let mut req = self
            .inner
            .apps_http
            .get(target.url.clone())
            .header(header::ACCEPT, "text/html,*/*");
        req = match signed {
            Some(t) => req.header(header::COOKIE, format!("{SIGNED_COOKIE}={t}")),
            None => req.header(TOKEN_HEADER, self.token().expose()),
        };
        let mut sent = None;
        if self.inner.opts.propagate {
            let mut h = header::HeaderMap::new();
            sent = super::trace::propagate(&span, &mut h);
            req = req.headers(h);
        }
        let start = Instant::now();
        let timeout = self.inner.opts.request_timeout;
        let send = tracing::Instrument::instrument(req.send(), span.clone());
        let resp = match tokio::time::timeout(timeout, send).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.observe(&get, target.route, None, start);
                let e = self.transport_error(&get, &path, e);
                super::trace::failed(&span, &e);
                return Err(e);
            }
            Err(_) => {
                self.observe(&get, target.route, None, start);
                return Err(ApiError::Timeout {
                    method: get,
                    path,
                    after: timeout,
                });
            }
        };
        let status = resp.status().as_u16();
        let traces = super::trace::answered(&span, status, resp.headers(), sent);
        self.note_tracing(traces);
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let signed_token = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                let (kv, _) = c.split_once(';').unwrap_or((c, ""));
                kv.trim()
                    .strip_prefix(SIGNED_COOKIE)?
                    .strip_prefix('=')
                    .map(str::to_string)
            });
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                let room = KEEP - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= KEEP {
                    break;
                }
            }
            Ok::<_, reqwest::Error>(())
        };
        let read = tokio::time::timeout(timeout, read).await;
        self.observe(&get, target.route, Some(status), start);
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.transport_error(&get, &path, e)),
            Err(_) => {
                return Err(ApiError::Timeout {
                    method: get,
                    path,
                    after: timeout,
                });
            }
        }
        Ok(AppAnswer {
            status,
            location,
            body: Bytes::from(body),
            signed_token,
        })
    }

    /// A websocket to the app at `target`, signed in with `signed` when given (else the
    /// session token).
    pub async fn app_websocket(
        &self,
        target: &AppTarget,
        signed: Option<&str>,
    ) -> Result<super::ws::Ws, ApiError> {
        let mut headers = header::HeaderMap::new();
        let auth = match signed {
            Some(t) => (header::COOKIE, format!("{SIGNED_COOKIE}={t}")),
            None => (
                header::HeaderName::from_static("coder-session-token"),
                self.token().expose().to_string(),
            ),
        };
        let value = header::HeaderValue::from_str(&auth.1).map_err(|_| ApiError::Protocol {
            method: Method::GET,
            path: target.url.path().to_string(),
            detail: "the token is not a valid header value".into(),
        })?;
        headers.insert(auth.0, value);
        self.upgrade(target.route, target.url.clone(), headers, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn client(base: &str) -> Client {
        Client::new(
            Url::parse(base).unwrap(),
            Secret::new("t"),
            Default::default(),
        )
    }

    #[test]
    fn path_app_urls() {
        let c = client("https://coder.example.com");
        let t = c
            .app_target(&AppAccess::Path, "alice", "ws-1", "main", "code", "/")
            .unwrap();
        assert_eq!(
            t.url.as_str(),
            "https://coder.example.com/@alice/ws-1.main/apps/code/"
        );
        assert_eq!(t.route, PATH_ROUTE);
        let t = c
            .app_target(&AppAccess::Path, "alice", "ws-1", "main", "code", "a/b?x=1")
            .unwrap();
        assert_eq!(
            t.url.as_str(),
            "https://coder.example.com/@alice/ws-1.main/apps/code/a/b?x=1"
        );
    }

    #[test]
    fn subdomain_app_urls_follow_the_wildcard() {
        let c = client("http://127.0.0.1:3000");
        let sub = |w: &str| {
            c.app_target(
                &AppAccess::Subdomain(w.into()),
                "alice",
                "ws-1",
                "main",
                "code",
                "/",
            )
            .unwrap()
            .url
            .to_string()
        };
        assert_eq!(
            sub("*.apps.sim.test:3000"),
            "http://code--main--ws-1--alice.apps.sim.test:3000/"
        );
        // No port in the wildcard: the access URL's (appurl.SubdomainAppHost).
        assert_eq!(
            sub("*.apps.sim.test"),
            "http://code--main--ws-1--alice.apps.sim.test:3000/"
        );
        assert_eq!(
            sub("*--apps.example.com"),
            "http://code--main--ws-1--alice--apps.example.com:3000/"
        );
        // Older Coder: the host without "*.".
        assert_eq!(
            sub("apps.example.com"),
            "http://code--main--ws-1--alice.apps.example.com:3000/"
        );
    }

    #[test]
    fn login_redirects_and_titles() {
        let a = |location: &str, body: &str| AppAnswer {
            status: 303,
            location: Some(location.into()),
            body: Bytes::from(body.to_string()),
            signed_token: None,
        };
        assert!(a("https://c.example.com/login?redirect=%2F", "").is_login());
        assert!(a("/api/v2/applications/auth-redirect?redirect_uri=x", "").is_login());
        assert!(!a("/@a/w.m/apps/code/", "").is_login());
        assert_eq!(
            a("/", "<html><head><title>Bad Gateway</title>").title(),
            Some("Bad Gateway".into())
        );
    }
}
