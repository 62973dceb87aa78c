//! The TLS client for HTTPS backends (requests and probes alike): verification against the
//! system's root certificates, or against the backend settings' trusted root certificates, with
//! the host name in use as SNI and as the name the certificate must carry.
//!
//! System roots come from the operating system's store (rustls-native-certs), not from a list
//! compiled into the binary: backends behind a gateway are often signed by an internal CA that
//! operators add to the machine's store, and the store follows the distribution's updates.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::config::TrustedRoots;

/// The client configuration for backends verified against `roots` (`None`: the system's).
/// Configurations are shared per set of roots, so their session caches are too (resumption).
pub fn client_config(roots: Option<&TrustedRoots>) -> Arc<ClientConfig> {
    static CONFIGS: OnceLock<Mutex<HashMap<Option<u64>, Arc<ClientConfig>>>> = OnceLock::new();
    let key = roots.map(TrustedRoots::fingerprint);
    let mut configs = CONFIGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    configs
        .entry(key)
        .or_insert_with(|| build(roots.map(|r| r.certificates.as_slice())))
        .clone()
}

fn build(roots: Option<&[CertificateDer<'static>]>) -> Arc<ClientConfig> {
    let store = match roots {
        Some(certs) => {
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(certs.iter().cloned());
            if ignored > 0 {
                tracing::warn!(
                    added,
                    ignored,
                    "some trusted root certificates could not be used"
                );
            }
            Arc::new(store)
        }
        None => system_roots(),
    };
    let provider = super::provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
        .build()
        .unwrap_or_else(|e| {
            // Only an empty store fails here; every backend is then untrusted, as it should be.
            tracing::warn!(error = %e, "no root certificates: HTTPS backends cannot be verified");
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(RootCertStore {
                    roots: vec![webpki_placeholder()],
                }),
                provider.clone(),
            )
            .build()
            .expect("a store with one root builds")
        });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    // Backends always speak HTTP/1.1 (as behind Application Gateway).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A trust anchor no certificate chains to, so an empty root set rejects every backend
/// ("untrusted root") instead of failing to build.
fn webpki_placeholder() -> rustls::pki_types::TrustAnchor<'static> {
    rustls::pki_types::TrustAnchor {
        subject: b"\x31\x0b\x30\x09\x06\x03\x55\x04\x03\x0c\x02--"
            .as_slice()
            .into(),
        subject_public_key_info: b"".as_slice().into(),
        name_constraints: None,
    }
}

/// The operating system's roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's root certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            tracing::debug!(roots = added, "system root certificates loaded");
            Arc::new(store)
        })
        .clone()
}

/// Why a TLS connection to a backend failed, in Application Gateway's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate is not valid for the host name in use (SNI).
    NameMismatch,
    /// The chain does not lead to a trusted root certificate.
    UntrustedRoot,
    Expired,
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NameMismatch => f.write_str("Backend certificate name mismatch"),
            TlsFailure::UntrustedRoot => {
                f.write_str("Backend certificate is signed by an untrusted root")
            }
            TlsFailure::Expired => f.write_str("Backend certificate expired"),
            TlsFailure::Other(why) => write!(f, "TLS handshake with the backend failed: {why}"),
        }
    }
}

impl TlsFailure {
    /// Classifies a failed handshake (tokio-rustls reports rustls errors inside `io::Error`).
    pub fn from_io(e: &io::Error) -> Self {
        let Some(err) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return TlsFailure::Other(e.to_string());
        };
        match err {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::UntrustedRoot
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                other => TlsFailure::Other(format!("invalid certificate: {other:?}")),
            },
            other => TlsFailure::Other(other.to_string()),
        }
    }
}
