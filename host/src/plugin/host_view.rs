//! The gateway state a plugin may read through the `host` interface.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::bindings::wasmgate::plugin::types::ServerState;

/// What the `host` interface reads: the gateway supplies an implementation backed by its
/// current snapshot and probe results. Calls come from plugin instances while they run, on
/// whatever thread runs them, so implementations must be cheap and must not block.
pub trait HostView: Send + Sync + 'static {
    /// The names of the configured backend pools.
    fn pools(&self) -> Vec<String>;

    /// The servers of `pool` and their health, `None` if there is no such pool.
    fn pool_state(&self, pool: &str) -> Option<Vec<ServerState>>;
}

/// A host with no pools, for plugins that never ask (and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPools;

impl HostView for NoPools {
    fn pools(&self) -> Vec<String> {
        Vec::new()
    }

    fn pool_state(&self, _pool: &str) -> Option<Vec<ServerState>> {
        None
    }
}

/// A fixed set of pools, for tests and tools.
#[derive(Debug, Default, Clone)]
pub struct StaticPools(pub BTreeMap<String, Vec<ServerState>>);

impl HostView for StaticPools {
    fn pools(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    fn pool_state(&self, pool: &str) -> Option<Vec<ServerState>> {
        self.0.get(pool).cloned()
    }
}

impl<T: HostView + ?Sized> HostView for Arc<T> {
    fn pools(&self) -> Vec<String> {
        (**self).pools()
    }

    fn pool_state(&self, pool: &str) -> Option<Vec<ServerState>> {
        (**self).pool_state(pool)
    }
}
