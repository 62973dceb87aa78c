//! `[[ssl_profiles]]`: client authentication (mutual TLS) for the HTTPS listeners naming them.

use std::path::Path;

use super::Result;
use crate::config::raw::RawSslProfile;
use crate::config::*;

/// Application Gateway takes up to five trusted client CA chains per SSL profile.
const MAX_TRUSTED_CHAINS: usize = 5;

pub(super) fn ssl_profile(path: &str, raw: &RawSslProfile, base: &Path) -> Result<SslProfile> {
    if raw.trusted_client_certificates.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.trusted_client_certificates"),
            "list at least one PEM file of trusted client CA certificates",
        ));
    }
    if raw.trusted_client_certificates.len() > MAX_TRUSTED_CHAINS {
        return Err(ConfigError::new(
            format!("{path}.trusted_client_certificates"),
            format!(
                "at most {MAX_TRUSTED_CHAINS} trusted client CA chains per SSL profile, found {}",
                raw.trusted_client_certificates.len()
            ),
        ));
    }
    let mode = match raw.verify_client_auth_mode.as_deref() {
        None => ClientAuthMode::Strict,
        Some(m) if m.eq_ignore_ascii_case("strict") => ClientAuthMode::Strict,
        Some(m) if m.eq_ignore_ascii_case("passthrough") => ClientAuthMode::Passthrough,
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.verify_client_auth_mode"),
                format!("{other:?} is not a mode; use \"strict\" or \"passthrough\""),
            ));
        }
    };
    let files: Vec<_> = raw
        .trusted_client_certificates
        .iter()
        .map(|f| base.join(f))
        .collect();
    let lists: Vec<_> = raw.revocation_lists.iter().map(|f| base.join(f)).collect();
    let cas = ClientCas::load(&files, &lists).map_err(|e| {
        let in_lists = |file: &String| {
            lists
                .iter()
                .any(|l| &format!("{:?}", l.display().to_string()) == file)
        };
        let field = match &e {
            CertError::BadRevocationList { .. } => "revocation_lists",
            CertError::Read { file, .. } | CertError::Pem { file, .. } if in_lists(file) => {
                "revocation_lists"
            }
            _ => "trusted_client_certificates",
        };
        ConfigError::new(
            format!("{path}.{field}"),
            format!("SSL profile {:?}: {e}", raw.name),
        )
    })?;
    Ok(SslProfile {
        name: raw.name.clone(),
        client_auth: ClientAuth {
            cas,
            verify_issuer_dn: raw.verify_client_cert_issuer_dn,
            mode,
        },
    })
}
