//! `[[backend_pools]]`: the servers of each pool, as IP addresses or DNS names.

use std::net::{IpAddr, SocketAddr};

use super::Result;
use crate::config::raw::RawBackendPool;
use crate::config::*;

pub(super) fn pool(path: &str, raw: &RawBackendPool) -> Result<BackendPool> {
    let mut addresses = Vec::with_capacity(raw.addresses.len());
    for (i, text) in raw.addresses.iter().enumerate() {
        let field = format!("{path}.addresses[{i}]");
        let address = backend_address(text).map_err(|why| ConfigError::new(&field, why))?;
        if addresses.contains(&address) {
            return Err(ConfigError::new(field, format!("{text:?} is listed twice")));
        }
        addresses.push(address);
    }
    Ok(BackendPool {
        name: raw.name.clone(),
        addresses,
    })
}

/// `10.0.0.4`, `10.0.0.4:8080`, `[::1]:8080`, `::1`, `app.internal`, `app.internal:8080`.
fn backend_address(text: &str) -> std::result::Result<BackendAddress, String> {
    let text = text.trim();
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(BackendAddress {
            host: BackendHost::Ip(sa.ip()),
            port: Some(port_nonzero(sa.port(), text)?),
        });
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(BackendAddress {
            host: BackendHost::Ip(ip),
            port: None,
        });
    }
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
            (name, Some(port_nonzero(port, text)?))
        }
        None => (text, None),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !trimmed.split('.').all(valid_label) {
        return Err(format!(
            "{text:?} is neither an IP address nor a DNS name (letters, digits, '-' and '.')"
        ));
    }
    Ok(BackendAddress {
        host: BackendHost::Dns(name.to_ascii_lowercase()),
        port,
    })
}

fn port_nonzero(port: u16, text: &str) -> std::result::Result<u16, String> {
    if port == 0 {
        Err(format!("{text:?}: port 0 cannot be connected to"))
    } else {
        Ok(port)
    }
}
