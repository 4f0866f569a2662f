//! The simulator behind TLS, as a Coder with `CODER_TLS_ENABLE` (or behind a load balancer
//! that terminates TLS): a certificate authority made at start-up signs a certificate for
//! the listen address and `localhost`; the authority's certificate is written (PEM) where
//! clients read it to trust it (`[coder] ca_file`).
//!
//! Coder's own TLS (cli/server.go `configureTLS`, served through `tls.NewListener`) sets
//! no `NextProtos` in the version read, so it answers HTTP/1.1; a load balancer in front of
//! Coder commonly offers `h2`. ALPN here offers `h2` and `http/1.1`, the stricter case for a
//! client: it must work with either, and keep long-lived streams off the shared HTTP/2
//! connection. Websockets need HTTP/1.1 (Coder hijacks the connection to upgrade it, which
//! HTTP/2 cannot do), so a client opens them on connections of their own that offer only
//! `http/1.1`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// Makes the authority and the server's certificate, writes the authority's to `ca_out`.
/// `self_signed`: one certificate that is both, as `openssl req -x509` makes (`CA:TRUE`,
/// the server's names), served alone and written to `ca_out`.
pub fn acceptor(
    addr: SocketAddr,
    ca_out: &Path,
    self_signed: bool,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let err = |e: rcgen::Error| std::io::Error::other(format!("certificate: {e}"));
    let mut names = vec!["localhost".to_string(), addr.ip().to_string()];
    names.dedup();
    if self_signed {
        let mut params = CertificateParams::new(names).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "scaletestd simulator");
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        write_pem(ca_out, &cert.pem())?;
        return serve_with(vec![cert.der().clone()], key);
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "scaletestd simulator CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = CertificateParams::new(names)
        .map_err(err)?
        .signed_by(&key, &ca)
        .map_err(err)?;
    write_pem(ca_out, &ca.pem())?;
    serve_with(vec![cert.der().clone(), ca.der().clone()], key)
}

fn write_pem(path: &Path, pem: &str) -> std::io::Result<()> {
    std::fs::write(path, pem).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("writing the CA certificate to {}: {e}", path.display()),
        )
    })
}

fn serve_with(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: KeyPair,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
