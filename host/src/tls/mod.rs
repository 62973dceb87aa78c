//! TLS with rustls: HTTPS listeners (certificates per listener, chosen by SNI, reloadable without
//! dropping connections) and HTTPS backends (verification against system or configured roots).
//!
//! The crypto provider is *ring*: it builds from C and assembly with the system's C compiler in
//! seconds, where aws-lc-rs needs cmake and takes minutes on a small build machine; its cipher
//! suites cover what HTTPS listeners and backends need (TLS 1.2 and 1.3, ECDHE, AES-GCM,
//! ChaCha20-Poly1305, RSA and ECDSA certificates).

pub mod certs;
pub mod client;
pub mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use certs::{CertError, CertificateSource};
pub use client::{TlsFailure, TrustedRoots};
pub use server::{Certificates, ReloadError, ServerTls};

/// The one crypto provider every TLS configuration of the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The lowest TLS version an HTTPS listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    pub(crate) fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &BOTH,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }
}
