//! wasmgate: an HTTP and WebSocket gateway with Azure Application Gateway's semantics.
//!
//! Data flows one way: listener → route → upstream → response. The control plane builds an
//! immutable [`snapshot::Snapshot`] and publishes it; the data plane only reads it.

pub mod admin;
pub mod client_io;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod error;
pub mod gateway;
pub mod gather;
pub mod listener;
pub mod metrics;
pub mod otlp;
pub mod plugin;
pub mod probe;
pub mod proxy;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod websocket;
pub mod workers;

pub use config::Config;
pub use error::Error;
pub use gateway::Gateway;
