//! What the gateway offers a plugin: its backend pools and their health, read when asked, and
//! its log.
//!
//! These call into the host and work only inside a component run by the gateway.

use crate::wit::wasmgate::plugin::host as imports;
use crate::{Health, LogLevel, ServerState};

/// The names of the configured backend pools.
pub fn pools() -> Vec<String> {
    imports::pools()
}

/// The members of `pool` with their health, `None` if there is no such pool.
pub fn pool_state(pool: &str) -> Option<Vec<ServerState>> {
    imports::pool_state(pool)
}

/// Whether a pool named `pool` exists.
pub fn has_pool(pool: &str) -> bool {
    pools().iter().any(|p| p == pool)
}

/// The addresses of the healthy members of `pool` (empty if there is no such pool).
pub fn healthy_servers(pool: &str) -> Vec<String> {
    pool_state(pool)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.health == Health::Healthy)
        .map(|s| s.address)
        .collect()
}

/// Writes `message` to the gateway's log, tagged with the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    imports::log(level, message);
}

pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}
