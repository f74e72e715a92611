//! Mutual TLS 1.3 for the mesh endpoint (rustls on ring): every node presents a certificate
//! signed by the mesh CA, and accepts only peers (as server and as client) whose certificate
//! the same CA signed. A node without a mesh certificate cannot join: its handshakes fail.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN of the mesh protocol (SWIM datagrams and pull streams).
pub const ALPN_MESH: &[u8] = b"meridian-mesh/1";

/// This node's mesh certificate chain and key, and the mesh CA it trusts.
pub struct MeshTls {
    /// Leaf first, signed (possibly through intermediates) by one of `ca`.
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The mesh CA certificates: peers must chain to one of these.
    pub ca: Vec<CertificateDer<'static>>,
}

impl Clone for MeshTls {
    fn clone(&self) -> Self {
        Self { certs: self.certs.clone(), key: self.key.clone_key(), ca: self.ca.clone() }
    }
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeshTls({} certs, {} CA roots)", self.certs.len(), self.ca.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{0} holds nothing")]
    Empty(&'static str),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("mesh CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC TLS setup: {0}")]
    Quic(String),
}

fn pem_error(what: &'static str) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
    move |e| TlsError::Pem { what, reason: e.to_string() }
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(pem_error(what))?;
    if certs.is_empty() {
        return Err(TlsError::Empty(what));
    }
    Ok(certs)
}

impl MeshTls {
    /// From PEM text: the certificate chain, its private key (PKCS#8, SEC1 or PKCS#1) and the CA.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        Ok(Self {
            certs: certs(cert, "mesh certificate")?,
            key: PrivateKeyDer::from_pem_slice(key).map_err(pem_error("mesh key"))?,
            ca: certs(ca, "mesh CA")?,
        })
    }

    /// From PEM files.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path, what: &'static str| {
            std::fs::read(p).map_err(|e| TlsError::Pem { what, reason: format!("{}: {e}", p.display()) })
        };
        Self::from_pem(&read(cert, "mesh certificate")?, &read(key, "mesh key")?, &read(ca, "mesh CA")?)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.ca {
            roots.add(ca.clone())?;
        }
        Ok(roots)
    }

    /// The endpoint's server config (client certificate required) and client config (server
    /// verified against the mesh CA, our certificate presented), both with `transport`. The
    /// driver builds its endpoint from these; tests and tools use them to speak to a node.
    pub fn quinn_configs(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots()?);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        server.alpn_protocols = vec![ALPN_MESH.to_vec()];
        server.max_early_data_size = 0;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())?;
        client.alpn_protocols = vec![ALPN_MESH.to_vec()];
        let quic_err = |e: &dyn std::fmt::Display| TlsError::Quic(e.to_string());
        let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| quic_err(&e))?;
        let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| quic_err(&e))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(transport);
        Ok((server, client))
    }
}

/// QUIC transport settings of the mesh: datagrams on, few streams (pulls only), keep-alive so
/// cached connections to live peers stay open, idle timeout so those to dead peers go.
pub fn transport(idle_timeout: Duration, keep_alive: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.datagram_send_buffer_size(1 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(16));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.keep_alive_interval(Some(keep_alive));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    t
}
