//! Trust for a Coder behind TLS: the system's roots, plus the certificates of `[coder]
//! ca_file` (a staging Coder behind a private CA).
//!
//! reqwest verifies with the platform's verifier; websockets (the web terminal, `watch-ws`,
//! app websockets) are opened by tokio-tungstenite, which on its own would trust only the
//! roots compiled into it. Both verify the same way here, so a Coder that answers API calls
//! also upgrades websockets. Websockets offer only HTTP/1.1 (ALPN): Coder upgrades them over
//! HTTP/1.1 alone, while plain calls negotiate HTTP/2 when the server offers it.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Certificates to trust besides the system's, as read from a PEM file.
#[derive(Clone, Default)]
pub struct ExtraRoots(pub Arc<[CertificateDer<'static>]>);

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} extra root certificate(s)", self.0.len())
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
        Ok(ExtraRoots(certs.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same certificates for reqwest.
    pub(super) fn for_reqwest(&self) -> Vec<reqwest::Certificate> {
        self.0
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c).ok())
            .collect()
    }
}

/// The TLS connector of every websocket: the platform's verifier with `extra` roots, ALPN
/// `http/1.1`.
pub(super) fn websocket_connector(
    extra: &ExtraRoots,
) -> Result<tokio_tungstenite::Connector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra.0.iter().cloned(),
        provider.clone(),
    )
    .map_err(|e| format!("the system's certificate store: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}
