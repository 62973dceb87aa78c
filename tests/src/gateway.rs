//! Starting the real gateway in-process.

use std::net::{Ipv4Addr, SocketAddr};

use wasmgate::Gateway;
use wasmgate::config::Config;

use crate::{WAIT, within};

/// Parses `toml` and starts a gateway on it (which serves once every backend server has had its
/// first health probe answered, bounded by the probe timeouts), then checks that every one did
/// answer in time; fails the test, showing the configuration, if the configuration is refused or
/// the gateway does not start.
pub async fn start_gateway(toml: &str) -> Gateway {
    let config = Config::from_toml(toml)
        .unwrap_or_else(|e| panic!("test configuration refused: {e}\n--- config ---\n{toml}"));
    let gw = match within("Gateway::start", Gateway::start(config)).await {
        Ok(gw) => gw,
        Err(e) => panic!("gateway failed to start: {e}\n--- config ---\n{toml}"),
    };
    assert!(
        gw.wait_for_first_probes(WAIT).await,
        "the first health probes did not all complete within {WAIT:?}\n--- config ---\n{toml}"
    );
    gw
}

/// The address clients use to reach listener `name` (an unspecified bind address becomes
/// 127.0.0.1).
pub fn listener_addr(gw: &Gateway, name: &str) -> SocketAddr {
    let mut addr = gw
        .listener_addr(name)
        .unwrap_or_else(|| panic!("gateway has no listener named {name:?}"));
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    addr
}
