//! Mutual TLS on HTTPS listeners: the client certificate verifier of an SSL profile, and what a
//! connection knows of its client's certificate afterwards (Application Gateway's
//! `client_certificate*` server variables).
//!
//! Strict mode refuses a client without a valid certificate in the handshake. Passthrough mode
//! asks for a certificate and accepts any, or none; the verdict is then worked out once per
//! connection and passed on in `client_certificate_verification`.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_cert::der::{Decode, Encode};

use crate::config::{ClientAuth, ClientAuthMode, ClientCas};

/// An SSL profile's verifier: the chain (and revocation) checks of rustls's WebPKI verifier,
/// then, when the profile asks for it, the issuer DN check.
#[derive(Debug)]
pub struct ProfileVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    /// DER subjects the client certificate's issuer must be one of; empty: not checked.
    issuers: Vec<Vec<u8>>,
    mode: ClientAuthMode,
}

impl ProfileVerifier {
    pub fn new(cas: &ClientCas, auth: &ClientAuth) -> Self {
        Self {
            webpki: cas.verifier.clone(),
            issuers: if auth.verify_issuer_dn {
                cas.issuers.clone()
            } else {
                Vec::new()
            },
            mode: auth.mode,
        }
    }

    pub fn mode(&self) -> ClientAuthMode {
        self.mode
    }

    /// The strict verdict on a chain, whatever the mode.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        if !self.issuers.is_empty() {
            let issuer = x509_cert::Certificate::from_der(end_entity)
                .ok()
                .and_then(|c| c.tbs_certificate().issuer().to_der().ok())
                .unwrap_or_default();
            if !self.issuers.contains(&issuer) {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(())
    }
}

impl ClientCertVerifier for ProfileVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == ClientAuthMode::Strict
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.mode == ClientAuthMode::Strict {
            self.check(end_entity, intermediates, now)?;
        }
        // Passthrough: the verdict is worked out after the handshake. The client still proves
        // it holds the certificate's key (the signature checks below).
        Ok(ClientCertVerified::assertion())
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

/// The client certificate of a connection, as the `client_certificate*` server variables give
/// it, formatted once after the handshake. A connection without one has `None` and its
/// verification is `NONE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// `client_certificate`: the PEM text, URL-encoded so that it fits in a header (nginx's
    /// `$ssl_client_escaped_cert`).
    pub pem: String,
    /// `client_certificate_subject`: the subject DN, RFC 4514 (nginx's `$ssl_client_s_dn`).
    pub subject: String,
    /// `client_certificate_issuer`: the issuer DN, RFC 4514.
    pub issuer: String,
    /// `client_certificate_serial`: the serial number in upper-case hex.
    pub serial: String,
    /// `client_certificate_fingerprint`: the SHA-1 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// `client_certificate_verification`: `SUCCESS` or `FAILED:<reason>`.
    pub verification: String,
}

impl ClientCertificate {
    /// Describes the certificate a client presented; `verdict` is the verification's outcome.
    pub fn new(end_entity: &CertificateDer<'_>, verdict: Result<(), rustls::Error>) -> Self {
        let parsed = x509_cert::Certificate::from_der(end_entity).ok();
        let tbs = parsed.as_ref().map(|c| c.tbs_certificate());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(end_entity.as_ref());
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        Self {
            pem: url_encode(&pem),
            subject: tbs.map(|t| t.subject().to_string()).unwrap_or_default(),
            issuer: tbs.map(|t| t.issuer().to_string()).unwrap_or_default(),
            serial: tbs
                .map(|t| hex(t.serial_number().as_bytes(), true))
                .unwrap_or_default(),
            fingerprint: {
                use sha1::Digest;
                hex(&sha1::Sha1::digest(end_entity.as_ref()), false)
            },
            verification: match verdict {
                Ok(()) => "SUCCESS".to_string(),
                Err(e) => format!("FAILED:{}", failure_reason(&e)),
            },
        }
    }
}

/// Why a certificate failed, in OpenSSL's words where nginx (and so Application Gateway) uses
/// them.
fn failure_reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unable to get local issuer certificate".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate is not yet valid".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::BadSignature => "certificate signature failure".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "unsupported certificate purpose".into()
            }
            CertificateError::ApplicationVerificationFailure => "issuer DN mismatch".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = if upper {
            write!(out, "{b:02X}")
        } else {
            write!(out, "{b:02x}")
        };
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as nginx escapes the PEM.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_is_url_encoded_and_hex_is_as_nginx_writes_it() {
        assert_eq!(url_encode("a b/+=\n-"), "a%20b%2F%2B%3D%0A-");
        assert_eq!(hex(&[0x0a, 0xff], true), "0AFF");
        assert_eq!(hex(&[0x0a, 0xff], false), "0aff");
    }
}
