//! The TLS client for HTTPS backends (requests and probes alike): verification against the
//! system's root certificates, or against the backend settings' trusted root certificates, with
//! the host name in use as SNI and as the name the certificate must carry.
//!
//! A backend that presents, as its own certificate, one of the settings' trusted root
//! certificates byte for byte is accepted when that certificate is within its validity period and
//! names the host: that is how Application Gateway takes a self-signed backend certificate
//! uploaded as its own root, and OpenSSL marks such a certificate `CA:TRUE` by default, which the
//! chain verification refuses as a server certificate. Every other certificate is verified in
//! full, and the handshake's signature is checked against the certificate's key either way.
//!
//! System roots come from the operating system's store (rustls-native-certs), not from a list
//! compiled into the binary: backends behind a gateway are often signed by an internal CA that
//! operators add to the machine's store, and the store follows the distribution's updates.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_cert::der::Decode;

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
    let verifier = BackendVerifier {
        webpki: verifier,
        pinned: roots.map(<[_]>::to_vec).unwrap_or_default(),
        roots: if roots.is_some() {
            Roots::Configured
        } else {
            Roots::System
        },
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
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

/// Which roots a backend's certificate is verified against, for the reason given when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    /// The operating system's: Application Gateway's "well-known CA certificate".
    System,
    /// The backend settings' `trusted_root_certificates`.
    Configured,
}

/// rustls's verification of the chain and the name (webpki), with two additions: a pinned
/// certificate (one of the configured roots, presented as the backend's own) is accepted after
/// the checks that still apply to it, and every refusal carries its reason as a [`TlsFailure`].
#[derive(Debug)]
struct BackendVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The configured roots, compared byte for byte with the certificate a backend presents.
    pinned: Vec<CertificateDer<'static>>,
    roots: Roots,
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = if self
            .pinned
            .iter()
            .any(|root| root.as_ref() == end_entity.as_ref())
        {
            verify_pinned(end_entity, server_name, now)
        } else {
            self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        };
        verified.map_err(|e| {
            let failure = TlsFailure::from_verification(&e, self.roots, end_entity);
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                failure,
            ))))
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The checks a pinned certificate still gets: it parses as a certificate rustls would take
/// (no unknown critical extension), the current time is within its validity period, and it
/// names the host in use. Its signature needs no issuer: the operator trusts these exact bytes,
/// and the handshake proves that the backend holds its key.
fn verify_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    let x509 = x509_cert::Certificate::from_der(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = x509.tbs_certificate().validity();
    let now_secs = now.as_secs();
    if now_secs < validity.not_before.to_unix_duration().as_secs() {
        return Err(CertificateError::NotValidYet.into());
    }
    if now_secs > validity.not_after.to_unix_duration().as_secs() {
        return Err(CertificateError::Expired.into());
    }
    rustls::client::verify_server_name(&parsed, server_name)?;
    Ok(ServerCertVerified::assertion())
}

/// Whether a certificate names itself as its issuer (a root, or a self-signed server
/// certificate).
fn self_issued(cert: &CertificateDer<'_>) -> bool {
    x509_cert::Certificate::from_der(cert).is_ok_and(|c| {
        let tbs = c.tbs_certificate();
        tbs.issuer() == tbs.subject()
    })
}

/// Why a TLS connection to a backend failed: what the backend health view and a 502 say, in
/// Application Gateway's words where it has them (its backend health troubleshooting guide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate is not valid for the host name in use (SNI).
    NameMismatch,
    /// Verified against the backend settings' trusted roots: the chain leads to none of them
    /// (a self-signed certificate that is not one of them included).
    RootMismatch,
    /// Verified against the system's roots: the chain leads to none of them.
    NotWellKnownCa,
    /// The current time is outside the certificate's validity period (expired, or not yet
    /// valid).
    Expired,
    /// Another certificate check failed; the text says which, for an operator.
    Unverified(&'static str),
    /// The handshake failed before or beside certificate verification.
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NameMismatch => f.write_str(
                "The Common Name of the leaf certificate presented by the backend server does not \
                 match the Probe or Backend Setting hostname of the application gateway.",
            ),
            TlsFailure::RootMismatch => f.write_str(
                "The root certificate of the server certificate used by the backend doesn't match \
                 the trusted root certificate added to the application gateway. Ensure that you \
                 add the correct root certificate to allowlist the backend.",
            ),
            TlsFailure::NotWellKnownCa => f.write_str(
                "The backend Server certificate is not signed by a well-known Certificate \
                 Authority (CA). To use unknown CA certificates, its Root certificate must be \
                 uploaded to the Backend Setting of the application gateway.",
            ),
            TlsFailure::Expired => f.write_str(
                "Backend certificate is invalid. Current date is not within the \"Valid from\" \
                 and \"Valid to\" date range on the certificate.",
            ),
            TlsFailure::Unverified(why) => write!(
                f,
                "The validity of the backend certificate could not be verified: {why}."
            ),
            TlsFailure::Other(why) => write!(f, "TLS handshake with the backend failed: {why}"),
        }
    }
}

impl std::error::Error for TlsFailure {}

impl TlsFailure {
    /// Classifies a failed handshake (tokio-rustls reports rustls errors inside `io::Error`;
    /// a certificate refused by [`BackendVerifier`] carries its `TlsFailure`).
    pub fn from_io(e: &io::Error) -> Self {
        let Some(err) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return TlsFailure::Other(e.to_string());
        };
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
                .downcast_ref::<TlsFailure>()
                .cloned()
                .unwrap_or_else(|| TlsFailure::Other(inner.to_string())),
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// The reason for a certificate that verification refused. `cert` is the one the backend
    /// presented.
    fn from_verification(e: &rustls::Error, roots: Roots, cert: &CertificateDer<'_>) -> Self {
        let untrusted = match roots {
            Roots::System => TlsFailure::NotWellKnownCa,
            Roots::Configured => TlsFailure::RootMismatch,
        };
        let rustls::Error::InvalidCertificate(c) = e else {
            return TlsFailure::Other(e.to_string());
        };
        match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => untrusted,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            // webpki refuses a CA certificate as the server's before it looks for an issuer; a
            // self-signed one (OpenSSL's default) that is not a configured root is simply not
            // trusted.
            CertificateError::Other(OtherError(inner))
                if inner.downcast_ref::<webpki::Error>()
                    == Some(&webpki::Error::CaUsedAsEndEntity) =>
            {
                if self_issued(cert) {
                    untrusted
                } else {
                    TlsFailure::Unverified(
                        "the backend presented a CA certificate (basic constraints CA:TRUE) as \
                         its server certificate",
                    )
                }
            }
            CertificateError::BadEncoding => {
                TlsFailure::Unverified("the backend's certificate could not be parsed")
            }
            CertificateError::Revoked => TlsFailure::Unverified("the certificate is revoked"),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                TlsFailure::Unverified("the certificate is not meant for server authentication")
            }
            CertificateError::UnsupportedSignatureAlgorithmContext { .. } => {
                TlsFailure::Unverified("the certificate's signature algorithm is not supported")
            }
            _ => TlsFailure::Unverified("the certificate was refused by the TLS client"),
        }
    }
}
