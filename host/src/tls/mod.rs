//! TLS with rustls: HTTPS listeners (certificates per listener, chosen by SNI, reloadable without
//! dropping connections) and HTTPS backends (verification against system or configured roots).
//!
//! The crypto provider is *ring*: it builds from C and assembly with the system's C compiler in
//! seconds, where aws-lc-rs needs cmake and takes minutes on a small build machine; its cipher
//! suites cover what HTTPS listeners and backends need (TLS 1.2 and 1.3, ECDHE, AES-GCM,
//! ChaCha20-Poly1305, RSA and ECDSA certificates).

pub mod client;
pub mod client_auth;
pub mod server;

pub use client::TlsFailure;
pub use client_auth::ClientCertificate;
pub use server::{Certificates, Handshake, ReloadError, ServerTls};

// One crypto provider for every TLS configuration; certificate loading, which validation
// does, needs it too, so it is defined there.
use crate::config::provider;
