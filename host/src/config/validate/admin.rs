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
    let token = match raw.token.as_deref() {
        None => None,
        Some(t) if t.chars().count() < 16 => {
            return Err(ConfigError::new(
                "admin.token",
                "must be at least 16 characters long",
            ));
        }
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ConfigError::new(
                "admin.token",
                "must be printable ASCII without spaces",
            ));
        }
        Some(t) => Some(t.to_string()),
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
