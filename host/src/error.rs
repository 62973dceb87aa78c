//! Errors from starting, reloading or running the gateway. (A failed request's error, and the
//! one place it becomes an HTTP response, is [`crate::proxy::ProxyError`].)

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::plugin::{PluginError, PrepareError};

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
    /// A plugin failed to load (unreadable, not a component, missing export, `init` failed).
    #[error("cannot load {0}")]
    Plugin(#[from] PluginError),
    #[error("the gateway was not started from a configuration file, so it cannot read one again")]
    NoConfigFile,
    #[error("the gateway is shutting down")]
    Stopping,
    #[error("plugin {plugin:?}: cannot read {path}: {source}")]
    PluginFile {
        plugin: String,
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("cannot start the worker threads: {0}")]
    Workers(io::Error),
}

impl From<PrepareError> for Error {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Load(e) => Error::Plugin(e),
            PrepareError::File {
                plugin,
                path,
                source,
            } => Error::PluginFile {
                plugin,
                path,
                source,
            },
        }
    }
}
