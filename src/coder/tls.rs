//! Trust for a Coder behind TLS: the system's roots, plus the certificates of `[coder]
//! ca_file` (a staging Coder behind a private CA, or with a self-signed certificate).
//!
//! One verifier serves every connection, reqwest's (API calls, SSE) and tokio-tungstenite's
//! (the web terminal, `watch-ws`, app websockets), so a Coder that answers API calls also
//! upgrades websockets. It trusts what curl and Go's `crypto/tls` trust with the same file:
//!
//! - a chain to the system's roots or to a certificate of `ca_file`, checked by
//!   rustls-platform-verifier as before;
//! - the server's own certificate, when `ca_file` holds exactly that certificate (pinning).
//!   `openssl req -x509` makes a certificate that is both its own CA (`CA:TRUE`) and the
//!   server's; webpki refuses a CA certificate as a server's (`CaUsedAsEndEntity`), while Go
//!   and OpenSSL accept a leaf that is itself a trusted root. The host name and the validity
//!   period are still checked; the handshake's signature too, by the platform verifier.
//!
//! Websockets offer only HTTP/1.1 (ALPN): Coder upgrades them over HTTP/1.1 alone, while
//! plain calls negotiate HTTP/2 when the server offers it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Certificates to trust besides the system's, as read from `ca_file`.
#[derive(Clone, Default)]
pub struct ExtraRoots {
    certs: Arc<[CertificateDer<'static>]>,
    /// The file they came from, named in errors.
    file: Option<Arc<Path>>,
    /// The verifier, made on first use and shared by every clone: reading the system's
    /// store costs milliseconds, and each client would otherwise read it once per pool.
    verifier: Arc<OnceLock<Result<Arc<Verifier>, String>>>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} extra root certificate(s)", self.certs.len())
    }
}

impl ExtraRoots {
    /// Every certificate of a PEM text; an error says what is wrong with it.
    pub fn from_pem(pem: &[u8]) -> Result<ExtraRoots, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in it (expected -----BEGIN CERTIFICATE-----)".into());
        }
        Ok(ExtraRoots {
            certs: certs.into(),
            ..Default::default()
        })
    }

    /// The same, remembering the file for error messages.
    pub fn from_file(path: &Path) -> Result<ExtraRoots, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        let mut roots = ExtraRoots::from_pem(&pem)?;
        roots.file = Some(PathBuf::from(path).into());
        Ok(roots)
    }

    /// The same certificates for reqwest, where our own verifier cannot be set up.
    pub(super) fn for_reqwest(&self) -> Vec<reqwest::Certificate> {
        self.certs
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c).ok())
            .collect()
    }

    /// The one verifier of these roots and the system's.
    fn verifier(&self) -> Result<Arc<Verifier>, String> {
        self.verifier
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let chains = rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.certs.iter().cloned(),
                    provider,
                )
                .map_err(|e| format!("the system's certificate store: {e}"))?;
                Ok(Arc::new(Verifier {
                    pinned: self.certs.clone(),
                    chains,
                }))
            })
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// What to do about a certificate Coder's TLS presented that we did not trust, in one
    /// sentence naming `ca_file` or its absence.
    pub fn advice(&self) -> String {
        match &self.file {
            Some(f) => format!(
                "Coder's certificate is not trusted with [coder] ca_file {}: put in it the certificate of the authority that signed Coder's (or Coder's own certificate, exactly as the server presents it), in PEM",
                f.display()
            ),
            None if !self.is_empty() => "Coder's certificate is not trusted with the certificates given: add the authority that signed it".into(),
            None => "Coder's certificate is not trusted by this system: if a private authority signed it, or it signed itself, name that certificate's PEM file in [coder] ca_file".into(),
        }
    }
}

/// Whether an error's text is a certificate that was not trusted (rustls' words, as reqwest
/// and tungstenite pass them on).
pub fn is_untrusted(detail: &str) -> bool {
    detail.contains("invalid peer certificate") || detail.contains("UnknownIssuer")
}

/// The verifier of [`ExtraRoots`] (see the module's doc).
#[derive(Debug)]
struct Verifier {
    pinned: Arc<[CertificateDer<'static>]>,
    chains: rustls_platform_verifier::Verifier,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            within_validity(end_entity, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.chains
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chains.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chains.supported_verify_schemes()
    }
}

/// A pinned certificate must still be within its dates, as Go and OpenSSL require.
fn within_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    use rustls::CertificateError;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now_secs = now.as_secs() as i64;
    let v = parsed.validity();
    if now_secs < v.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now_secs > v.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// A rustls client configuration trusting the system's roots and `extra` (see the module's
/// doc), offering `alpn`.
pub(super) fn client_config(
    extra: &ExtraRoots,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(extra.verifier()?)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// ALPN of API calls: HTTP/2 when the server offers it.
pub(super) const ALPN_CALLS: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of event streams and websockets: HTTP/1.1 alone.
pub(super) const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// The TLS connector of every websocket.
pub(super) fn websocket_connector(
    extra: &ExtraRoots,
) -> Result<tokio_tungstenite::Connector, String> {
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(
        client_config(extra, ALPN_HTTP1)?,
    )))
}
