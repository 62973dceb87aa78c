//! Errors from starting, reloading or running the gateway. (A failed request's error, and the
//! one place it becomes an HTTP response, is [`crate::proxy::ProxyError`].)

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::plugin::PrepareError;

/// Errors from starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("listener {listener:?}: cannot bind {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("listener {listener:?}: cannot set up TLS: {source}")]
    Tls {
        listener: String,
        source: rustls::Error,
    },
    /// A configured plugin failed to load (unreadable, not a component, missing export, `init`
    /// failed); the texts are [`PrepareError`]'s.
    #[error(transparent)]
    Plugin(#[from] PrepareError),
    #[error("the gateway was not started from a configuration file, so it cannot read one again")]
    NoConfigFile,
    #[error("the gateway is shutting down")]
    Stopping,
    #[error("cannot start the worker threads: {0}")]
    Workers(io::Error),
}
