//! Where the running configuration comes from when a configuration store (etcd) supplies it
//! rather than a file: the store's address, the revision applied, whether the store is
//! reachable now, and whether the gateway started from its local cached copy. The component
//! that follows the store writes it; the admin API's status and metrics read it. Control-plane
//! state only: the request path never touches it.

use std::sync::Mutex;

/// The state of the configuration store a gateway follows; see the module's documentation.
#[derive(Debug, Default)]
pub struct ConfigSource {
    state: Mutex<Option<StoreState>>,
}

/// What `/api/status` reports under `store` when the configuration comes from a store.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreState {
    /// The store's address as given (`etcd://HOST:PORT,.../PREFIX`), without credentials.
    pub url: String,
    /// The key the configuration is read from.
    pub key: String,
    /// Whether the store answered the last time it was asked; while it is unreachable the
    /// last applied configuration keeps serving.
    pub reachable: bool,
    /// Why the store is unreachable, while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The gateway started from its local cached copy because the store was unreachable; true
    /// until a revision from the store is applied.
    pub from_cache: bool,
    /// The newest revision seen in the store for the configuration key (applied or refused).
    pub latest_revision: Option<i64>,
}

impl ConfigSource {
    /// From now on the configuration comes from the store at `url`, key `key`.
    pub fn follow(&self, url: String, key: String, from_cache: bool) {
        *self.lock() = Some(StoreState {
            url,
            key,
            reachable: !from_cache,
            error: None,
            from_cache,
            latest_revision: None,
        });
    }

    /// The store answered (`Ok`) or could not be reached (`Err` with the reason).
    pub fn reachable(&self, result: Result<(), String>) {
        if let Some(s) = self.lock().as_mut() {
            s.reachable = result.is_ok();
            s.error = result.err();
        }
    }

    /// The store holds `revision` of the configuration key.
    pub fn seen(&self, revision: i64) {
        if let Some(s) = self.lock().as_mut() {
            s.latest_revision = Some(s.latest_revision.map_or(revision, |r| r.max(revision)));
        }
    }

    /// A revision read from the store was applied: the cached copy no longer serves.
    pub fn left_cache(&self) {
        if let Some(s) = self.lock().as_mut() {
            s.from_cache = false;
        }
    }

    /// The store's state, when the configuration comes from one.
    pub fn state(&self) -> Option<StoreState> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StoreState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
