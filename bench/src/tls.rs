//! TLS for the HTTPS scenarios: a CA and a certificate for the gateway's HTTPS listener,
//! generated per run, and the client side (rustls with ring, as the gateway).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The name the gateway's certificate carries and the clients send as SNI.
pub const SERVER_NAME: &str = "bench.wasmgate.test";

/// One test certificate per run, served by every proxy under test alike: an ECDSA P-256 leaf
/// for [`SERVER_NAME`] signed by a CA generated with it.
pub struct TestCert {
    /// Leaf then CA, PEM.
    chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    key_pem: String,
    /// The CA, for the clients' root store.
    pub ca: CertificateDer<'static>,
}

impl TestCert {
    pub fn generate() -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec![SERVER_NAME.to_owned()])?.signed_by(&key, &ca)?;
        Ok(Self {
            chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
            key_pem: key.serialize_pem(),
            ca: ca.der().clone(),
        })
    }

    /// Writes `cert.pem` (leaf + CA), `key.pem`, and `combined.pem` (chain then key, the form
    /// HAProxy's `crt` reads) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("cert.pem"), &self.chain_pem).context("writing cert.pem")?;
        std::fs::write(dir.join("key.pem"), &self.key_pem).context("writing key.pem")?;
        std::fs::write(
            dir.join("combined.pem"),
            format!("{}{}", self.chain_pem, self.key_pem),
        )
        .context("writing combined.pem")?;
        Ok(())
    }
}

/// How a load target is reached over TLS.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// A client trusting `ca`, offering HTTP/1.1 only (the scenarios compare HTTP/1.1 with
    /// HTTP/1.1). With `resume` off every handshake is a full one.
    pub fn new(ca: &CertificateDer<'static>, resume: bool) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(SERVER_NAME)?.to_owned(),
        })
    }

    pub async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// A client connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
