//! `[admin]`: the admin listener's address and token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::Result;
use super::units::opt_in_range;
use crate::config::raw::RawAdmin;
use crate::config::*;

pub(super) fn admin(raw: &RawAdmin) -> Result<Admin> {
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
    Ok(Admin {
        bind: SocketAddr::new(ip, port),
        token,
    })
}
