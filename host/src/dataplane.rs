//! The data plane's state: what every connection reads. The current snapshot (read without
//! locks on every request), the plugins, the shutdown signal and the count of work in flight.
//! Listeners, the proxy and the WebSocket relay depend on it; it depends on none of them. The
//! control plane ([`crate::control`]) publishes new snapshots and plugin sets into it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::otlp::OtlpExporter;
use crate::plugin::{Health, HostView, PluginRegistry, ServerState};
use crate::probe::Status;
use crate::snapshot::Snapshot;
use crate::telemetry::AccessLog;

/// The published snapshot, shared by the data plane and the plugins' view of it.
pub type SnapshotCell = Arc<ArcSwap<Snapshot>>;

pub struct DataPlane {
    pub snapshot: SnapshotCell,
    /// Every plugin: the configuration's, in [`PluginId`](crate::config::PluginId) order, and
    /// those loaded through the admin API. Versions change at runtime; a request reads the
    /// active one without a lock.
    pub plugins: PluginRegistry,
    /// The counters every request and connection adds to.
    pub metrics: Arc<Metrics>,
    /// Where requests' and WebSocket sessions' records go.
    pub access_log: AccessLog,
    /// Where finished requests' spans go (`[telemetry] otlp_endpoint`); `None` when spans are
    /// not exported, and then a request builds none.
    pub spans: Option<Arc<OtlpExporter>>,
    stop: watch::Sender<bool>,
    active: AtomicUsize,
    drained: Notify,
}

impl DataPlane {
    pub fn new(
        snapshot: SnapshotCell,
        plugins: PluginRegistry,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
        spans: Option<Arc<OtlpExporter>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            snapshot,
            plugins,
            metrics,
            access_log,
            spans,
            stop: watch::Sender::new(false),
            active: AtomicUsize::new(0),
            drained: Notify::new(),
        })
    }

    /// Starts the shutdown: accept loops, connections and sessions see it.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Completes once the gateway starts shutting down.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Counts a connection or WebSocket session as in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// Connections and WebSocket sessions in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Completes once nothing is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct ActiveGuard(Arc<DataPlane>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// The plugins' `host` interface: the current snapshot's pools and their servers' health.
pub struct SnapshotView(pub SnapshotCell);

impl HostView for SnapshotView {
    fn pools(&self) -> Vec<String> {
        let s = self.0.load();
        s.pools.iter().map(|p| p.name.to_string()).collect()
    }

    /// Each server once per backend settings in use with the pool, with its health under them.
    fn pool_state(&self, pool: &str) -> Option<Vec<ServerState>> {
        let snapshot = self.0.load();
        let id = snapshot.pools.iter().position(|p| &*p.name == pool)?;
        let servers = &snapshot.pools[id].servers;
        Some(
            snapshot
                .targets
                .iter()
                .filter(|t| t.pool.0 == id)
                .map(|t| ServerState {
                    address: servers[t.server].address.to_string(),
                    settings: snapshot.config.settings(t.settings).name.clone(),
                    health: match t.health.status() {
                        Status::Healthy => Health::Healthy,
                        Status::Unhealthy => Health::Unhealthy,
                        Status::Unknown => Health::Unknown,
                        Status::Draining => Health::Draining,
                    },
                })
                .collect(),
        )
    }
}
