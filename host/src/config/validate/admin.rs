//! `[admin]`: the admin listener's address, token and certificate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use super::Result;
use super::listeners::{CertificateFields, certificate};
use super::units::opt_in_range;
use crate::config::raw::RawAdmin;
use crate::config::*;

pub(super) fn admin(raw: &RawAdmin, base: &Path) -> Result<Admin> {
    let ip = match &raw.bind_address {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(text) => text.parse().map_err(|_| {
            ConfigError::new(
                "admin.bind_address",
                format!("{text:?} is not an IP address"),
            )
        })?,
    };
    let port = opt_in_range("admin.port", raw.port, 0..=65_535)?.unwrap_or(DEFAULT_ADMIN_PORT);
    let (field, text) = match (&raw.token, &raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "admin.token_file",
                "set either token or token_file, not both",
            ));
        }
        (Some(t), None) => ("admin.token", Some(t.clone())),
        // A mounted secret's file: its trailing line break is not part of the token.
        (None, Some(file)) => match std::fs::read_to_string(base.join(file)) {
            Ok(t) => ("admin.token_file", Some(t.trim_end().to_owned())),
            Err(e) => {
                return Err(ConfigError::new(
                    "admin.token_file",
                    format!("cannot read {file:?}: {e}"),
                ));
            }
        },
        (None, None) => ("admin.token", None),
    };
    let token = match text {
        None => None,
        Some(t) if t.chars().count() < 16 => {
            return Err(ConfigError::new(
                field,
                "must be at least 16 characters long",
            ));
        }
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ConfigError::new(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        Some(t) => Some(t),
    };
    // The health view names every backend: off the machine, only for someone holding the token.
    if !ip.is_loopback() && token.is_none() {
        return Err(ConfigError::new(
            "admin.token",
            format!(
                "is required when the admin listener binds {ip}, which is not a loopback address"
            ),
        ));
    }
    let fields = CertificateFields {
        certificate: &raw.certificate,
        key: &raw.certificate_key,
        pfx: &raw.certificate_pfx,
        password: &raw.certificate_password,
    };
    let tls =
        certificate("admin", "the admin listener", fields, base)?.map(|(source, certificate)| {
            AdminTls {
                source,
                certificate,
            }
        });
    // Off the machine the token is a password on the wire: only inside TLS, unless the operator
    // says the network is trusted.
    if !ip.is_loopback() && tls.is_none() && !raw.allow_plaintext {
        return Err(ConfigError::new(
            "admin.certificate",
            format!(
                "is required when the admin listener binds {ip}, which is not a loopback address, or the token crosses the network in clear; set allow_plaintext = true to serve plain HTTP anyway"
            ),
        ));
    }
    if tls.is_some() && raw.allow_plaintext {
        return Err(ConfigError::new(
            "admin.allow_plaintext",
            "the admin listener has a certificate, so it serves HTTPS only; remove allow_plaintext",
        ));
    }
    Ok(Admin {
        bind: SocketAddr::new(ip, port),
        token,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(token: Option<&str>, token_file: Option<&str>) -> RawAdmin {
        RawAdmin {
            bind_address: None,
            port: Some(0),
            token: token.map(str::to_owned),
            token_file: token_file.map(str::to_owned),
            certificate: None,
            certificate_key: None,
            certificate_pfx: None,
            certificate_password: None,
            allow_plaintext: false,
        }
    }

    /// A token read from a file (a mounted secret) is checked as one written in the
    /// configuration, without the file's final line break; the errors name `admin.token_file`.
    #[test]
    fn token_file() {
        let dir = std::env::temp_dir().join(format!("wasmgate-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "secret-token-0123456789\n").unwrap();
        std::fs::write(dir.join("short"), "short\n").unwrap();
        let read = admin(&raw(None, Some("token")), &dir).unwrap();
        assert_eq!(read.token.as_deref(), Some("secret-token-0123456789"));
        for (raw, why) in [
            (
                raw(None, Some("short")),
                "admin.token_file: must be at least 16",
            ),
            (
                raw(None, Some("missing")),
                "admin.token_file: cannot read \"missing\"",
            ),
            (
                raw(Some("secret-token-0123456789"), Some("token")),
                "admin.token_file: set either token or token_file, not both",
            ),
        ] {
            let e = admin(&raw, &dir).unwrap_err().to_string();
            assert!(e.starts_with(why), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
