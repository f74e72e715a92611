//! TLS 1.3 for every listener (rustls on ring): the certificate and key come from files named
//! in the config; `meridian certs` / `meridian up` make development ones ([`super::certs`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// ALPN of the native QUIC protocol (docs/protocol.md), next to HTTP/3's `h3`.
pub const ALPN_NATIVE: &[u8] = b"meridian/1";
pub const ALPN_H3: &[u8] = b"h3";

/// `[tls]`: the node's certificate, for HTTPS on TCP and for QUIC (HTTP/3 and native). With
/// `plaintext_http = true` (local development) the TCP listener serves HTTP/1.1 without TLS;
/// QUIC still runs when there is a certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// Serve HTTP/1.1 without TLS on `listen` (QUIC keeps TLS). For local development only.
    pub plaintext_http: bool,
}

impl TlsConfig {
    pub fn problems(&self) -> Vec<String> {
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) => Vec::new(),
            (None, None) if self.plaintext_http => Vec::new(),
            (None, None) => vec![
                "no TLS certificate: set tls.cert and tls.key (`meridian certs` makes development ones), \
                 or tls.plaintext_http = true for local development"
                    .to_string(),
            ],
            _ => vec!["tls.cert and tls.key go together".to_string()],
        }
    }

    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC TLS setup: {0}")]
    Quic(String),
}

/// The crypto provider every meridian TLS config uses (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read { path: shown.clone(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: shown, what: "PEM certificate" });
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Read { path: path.display().to_string(), reason: e.to_string() })
}

/// Server configs for one certificate: TCP (HTTP/1.1 and HTTP/2) and QUIC (HTTP/3 and native).
#[derive(Clone)]
pub struct ServerTls {
    pub tcp: Arc<rustls::ServerConfig>,
    pub quic: Arc<quinn::crypto::rustls::QuicServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    pub fn load(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else { return Ok(None) };
        let (certs, key) = (read_certs(cert)?, read_key(key)?);
        Ok(Some(Self::from_parts(certs, key)?))
    }

    pub fn from_parts(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let build = |alpn: &[&[u8]]| -> Result<rustls::ServerConfig, TlsError> {
            let mut c = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_no_client_auth()
                .with_single_cert(certs.clone(), key.clone_key())?;
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(c)
        };
        let tcp = build(&[b"h2", b"http/1.1"])?;
        let mut quic = build(&[ALPN_H3, ALPN_NATIVE])?;
        quic.max_early_data_size = 0;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(quic)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        Ok(Self { tcp: Arc::new(tcp), quic: Arc::new(quic) })
    }
}

/// A client config trusting `roots` (PEM files) or, when none are given, nothing but what the
/// caller adds; TLS 1.3 only; `alpn` offered.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(store)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}
