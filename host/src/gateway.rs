//! The running gateway: binds the listeners, publishes snapshots, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::Error;
use crate::listener;
use crate::plugin::{EngineConfig, Plugin, PluginEngine, PluginSpec};
use crate::probe::Prober;
use crate::proxy::route_plugin::GatewayView;
use crate::snapshot::Snapshot;

/// State shared by every connection: the current snapshot (read without locks on every request)
/// and the shutdown signal.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// Loaded plugins, indexed by [`PluginId`](crate::config::PluginId).
    pub plugins: Box<[Plugin]>,
    /// What the admin API shows of each plugin besides its live stats, in the same order.
    pub plugin_loads: Box<[PluginLoad]>,
    stop: watch::Sender<bool>,
    active: AtomicUsize,
    drained: Notify,
}

impl Shared {
    fn new(
        snapshot: Snapshot,
        plugins: Box<[Plugin]>,
        plugin_loads: Box<[PluginLoad]>,
    ) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            plugins,
            plugin_loads,
            stop: watch::Sender::new(false),
            active: AtomicUsize::new(0),
            drained: Notify::new(),
        })
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

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

pub struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Reads, compiles and initialises every configured plugin, in order; the first failure stops
/// the start with an error naming the plugin. Compiling runs on blocking threads (the engine
/// sees to that): an interpreted guest takes seconds, which the log shows.
async fn load_plugins(
    config: &Config,
    view: Arc<GatewayView>,
) -> Result<(Box<[Plugin]>, Box<[PluginLoad]>), Error> {
    if config.plugins.is_empty() {
        return Ok((Box::new([]), Box::new([])));
    }
    // The pooling allocator reserves address space for every slot up front: size it for the
    // instances these plugins may run at once (plus one spare each, for a replacement being
    // created while a failed one is dropped), not for the engine's generous default.
    let instances: u32 = config
        .plugins
        .iter()
        .map(|p| p.limits.max_concurrency as u32 + 1)
        .sum();
    let engine = PluginEngine::new(EngineConfig {
        total_component_instances: instances,
        total_core_instances: instances * 16,
        total_memories: instances * 2,
        total_tables: instances * 4,
        total_stacks: instances,
        cache_dir: config.plugin_cache_dir.clone(),
        ..EngineConfig::default()
    })?;
    let mut plugins = Vec::with_capacity(config.plugins.len());
    let mut loads = Vec::with_capacity(config.plugins.len());
    for p in &config.plugins {
        let wasm = std::fs::read(&p.path).map_err(|source| Error::PluginFile {
            plugin: p.name.clone(),
            path: p.path.clone(),
            source,
        })?;
        tracing::info!(
            plugin = %p.name,
            kind = p.kind.as_str(),
            bytes = wasm.len(),
            "loading plugin (a large component takes seconds to compile)"
        );
        let content_hash = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&wasm);
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let mut spec = PluginSpec::new(p.name.clone(), wasm, p.config.clone());
        spec.limits = p.limits.clone();
        spec.fail_policy = p.fail_policy;
        let (plugin, _) = engine.load(spec, view.clone()).await?;
        let exported = match p.kind {
            crate::config::PluginKind::Router => plugin.is_router(),
            crate::config::PluginKind::Probe => plugin.is_probe_evaluator(),
        };
        if !exported {
            return Err(Error::Plugin(crate::plugin::PluginError::MissingExport {
                plugin: p.name.clone(),
                interface: match p.kind {
                    crate::config::PluginKind::Router => "wasmgate:plugin/router@0.1.0",
                    crate::config::PluginKind::Probe => "wasmgate:plugin/probe-evaluator@0.1.0",
                },
            }));
        }
        plugins.push(plugin);
        loads.push(PluginLoad {
            kind: p.kind,
            content_hash,
            loaded_at: std::time::SystemTime::now(),
        });
    }
    Ok((plugins.into(), loads.into()))
}

/// How a plugin was loaded.
#[derive(Debug, Clone)]
pub struct PluginLoad {
    pub kind: crate::config::PluginKind,
    /// SHA-256 of the component, hex.
    pub content_hash: String,
    pub loaded_at: std::time::SystemTime,
}

/// A gateway serving in the background of the current tokio runtime.
pub struct Gateway {
    shared: Arc<Shared>,
    bound: Vec<(String, SocketAddr)>,
    accept_loops: Vec<JoinHandle<()>>,
    /// HTTPS frontends' certificates, reloadable.
    certificates: Arc<crate::tls::Certificates>,
    prober: Prober,
    /// The admin listener's address and task, when configured.
    admin: Option<(SocketAddr, JoinHandle<()>)>,
}

impl Gateway {
    /// Binds every listener of `config` and starts serving.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let snapshot = Snapshot::build(config, None);
        // Plugins first: the ports open only once every plugin is ready to decide.
        let view = Arc::new(GatewayView::default());
        let (plugins, plugin_loads) = load_plugins(&snapshot.config, view.clone()).await?;
        let mut sockets = Vec::with_capacity(snapshot.frontends.len());
        let mut bound = Vec::new();
        for (i, f) in snapshot.frontends.iter().enumerate() {
            let names: Vec<String> = f
                .listeners
                .iter()
                .map(|l| snapshot.config.listener(*l).name.clone())
                .collect();
            let socket = listener::bind(f.bind).map_err(|source| Error::Bind {
                listener: names.first().cloned().unwrap_or_default(),
                addr: f.bind,
                source,
            })?;
            let local = socket.local_addr().map_err(|source| Error::Bind {
                listener: names.first().cloned().unwrap_or_default(),
                addr: f.bind,
                source,
            })?;
            for name in names {
                tracing::info!(listener = %name, address = %local, protocol = f.protocol.as_str(), "listening");
                bound.push((name, local));
            }
            sockets.push((i, f.protocol, socket));
        }
        let (certificates, frontend_tls) = crate::tls::Certificates::build(&snapshot)?;
        let admin = match &snapshot.config.admin {
            None => None,
            Some(admin) => {
                let bind_error = |source| Error::Bind {
                    listener: "admin".into(),
                    addr: admin.bind,
                    source,
                };
                let socket = listener::bind_exclusive(admin.bind).map_err(bind_error)?;
                let local = socket.local_addr().map_err(bind_error)?;
                tracing::info!(address = %local, "admin listening");
                Some((socket, local, admin.token.as_deref().map(Arc::from)))
            }
        };
        let shared = Shared::new(snapshot, plugins, plugin_loads);
        let _ = view.shared.set(Arc::downgrade(&shared));
        // Every target is probed at once; servers join the rotation as their probes answer.
        let prober = Prober::start(&shared.snapshot.load(), &shared.plugins);
        let admin = admin.map(|(socket, local, token)| {
            (
                local,
                tokio::spawn(crate::admin::serve(socket, shared.clone(), token)),
            )
        });
        let accept_loops = sockets
            .into_iter()
            .map(|(frontend, protocol, socket)| {
                tokio::spawn(listener::accept_loop(
                    socket,
                    frontend,
                    protocol,
                    frontend_tls[frontend].clone(),
                    shared.clone(),
                ))
            })
            .collect();
        let certificates = Arc::new(certificates);
        // Ends with the gateway (it watches the stop signal).
        let _ = certificates.clone().watch(shared.stopping());
        Ok(Self {
            shared,
            bound,
            accept_loops,
            certificates,
            prober,
            admin,
        })
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Waits until every backend server has had its first probe answered (or failed), at most
    /// `timeout`; returns whether they all have. Until then a server takes no traffic.
    pub async fn wait_for_first_probes(&self, timeout: Duration) -> bool {
        self.prober.wait_for_first_probes(timeout).await
    }

    /// Reads every HTTPS listener's certificate from disk again (what SIGHUP does; changed files
    /// are also picked up by themselves within a few seconds). Established connections keep
    /// their session; new handshakes get the new certificates. A certificate that fails to load
    /// is reported and its listener keeps the previous one.
    pub fn reload_certificates(&self) -> Vec<crate::tls::ReloadError> {
        self.certificates.reload()
    }

    /// The address a listener is bound to (with the port the OS chose for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find_map(|(n, addr)| (n == name).then_some(*addr))
    }

    /// The loaded plugins, in configuration order.
    pub fn plugins(&self) -> &[Plugin] {
        &self.shared.plugins
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Stops accepting, lets in-flight requests finish and WebSocket sessions close with 1001,
    /// bounded by the configured shutdown timeout.
    pub async fn shutdown(self) {
        let timeout = self.shared.snapshot.load().config.limits.shutdown_timeout;
        self.shutdown_within(timeout).await;
    }

    pub async fn shutdown_within(self, timeout: Duration) {
        self.shared.stop.send_replace(true);
        let mut prober = self.prober;
        prober.stop();
        for task in self.accept_loops {
            let _ = task.await;
        }
        if let Some((_, task)) = self.admin {
            let _ = task.await;
        }
        let drained = async {
            loop {
                let notified = self.shared.drained.notified();
                if self.shared.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(timeout, drained).await.is_err() {
            tracing::warn!(
                remaining = self.shared.active(),
                "shutdown timeout reached with work still in flight"
            );
        }
    }
}
