//! The running gateway: binds the listeners, publishes snapshots, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::Error;
use crate::listener;
use crate::listener::SocketHandle;
use crate::plugin::{PluginRegistry, PluginSlot};
use crate::probe::{Drain, Prober};
use crate::proxy::route_plugin::GatewayView;
use crate::snapshot::{Snapshot, SocketKey};

/// State shared by every connection: the current snapshot (read without locks on every request)
/// and the shutdown signal.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    /// Every plugin: the configuration's, in [`PluginId`](crate::config::PluginId) order, and
    /// those loaded through the admin API. Versions change at runtime; a request reads the
    /// active one without a lock.
    pub plugins: PluginRegistry,
    stop: watch::Sender<bool>,
    active: AtomicUsize,
    drained: Notify,
    /// The control plane, for the admin API's reload.
    control: OnceLock<Weak<Control>>,
}

impl Shared {
    fn new(snapshot: Snapshot, plugins: PluginRegistry) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            plugins,
            stop: watch::Sender::new(false),
            active: AtomicUsize::new(0),
            drained: Notify::new(),
            control: OnceLock::new(),
        })
    }

    /// Reads the configuration file again and applies it (see [`Gateway::reload`]).
    pub async fn reload_from_file(&self) -> Result<ReloadReport, Error> {
        match self.control.get().and_then(Weak::upgrade) {
            Some(control) => control.reload_from_file().await,
            None => Err(Error::NoConfigFile),
        }
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

/// A gateway serving in the background: its control plane (reloads, probes, the admin API) on
/// the tokio runtime that started it, its connections on the [workers](crate::listener::workers).
pub struct Gateway {
    shared: Arc<Shared>,
    control: Arc<Control>,
    /// The admin listener's address and task, when configured.
    admin: Option<(SocketAddr, JoinHandle<()>)>,
}

/// The control plane: everything a reload changes besides the snapshot. Reloads take the lock
/// one at a time; the data plane never does.
struct Control {
    shared: Arc<Shared>,
    state: tokio::sync::Mutex<ControlState>,
    /// HTTPS frontends' certificates, reloadable on their own.
    certificates: ArcSwap<crate::tls::Certificates>,
    /// Listener name → bound address, for [`Gateway::listener_addr`].
    bound: ArcSwap<Vec<(String, SocketAddr)>>,
    /// The file the configuration came from, once the gateway was told (SIGHUP, the admin
    /// API and the file watch read it again).
    config_file: std::sync::Mutex<Option<PathBuf>>,
}

struct ControlState {
    sockets: Vec<RunningSocket>,
    next_socket: usize,
    prober: Prober,
    /// Dropping it stops the current certificate watch.
    certificate_watch: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A bound socket and its accept loop.
struct RunningSocket {
    key: SocketKey,
    local: SocketAddr,
    handle: Arc<SocketHandle>,
    task: JoinHandle<()>,
}

/// What a configuration reload changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Sockets bound by this reload, with the listeners on them.
    pub sockets_added: Vec<String>,
    /// Sockets closed because no listener uses them any more.
    pub sockets_removed: Vec<String>,
    /// Backend servers (per backend settings) that left the configuration and are draining.
    pub servers_draining: Vec<String>,
    pub listeners: usize,
    pub rules: usize,
    pub backend_pools: usize,
}

/// New sockets bound for a snapshot, not yet serving.
struct Bound {
    listener: listener::Bound,
    handle: Arc<SocketHandle>,
    key: SocketKey,
}

/// Binds a frontend's socket, with the error naming its first listener.
fn bind_frontend(snapshot: &Snapshot, frontend: usize) -> Result<listener::Bound, Error> {
    let f = &snapshot.frontends[frontend];
    let error = |source| Error::Bind {
        listener: snapshot.config.listener(f.listeners[0]).name.clone(),
        addr: f.bind,
        source,
    };
    listener::bind(f.bind).map_err(error)
}

fn listener_names(snapshot: &Snapshot, frontend: usize) -> Vec<String> {
    snapshot.frontends[frontend]
        .listeners
        .iter()
        .map(|l| snapshot.config.listener(*l).name.clone())
        .collect()
}

impl Gateway {
    /// Binds every listener of `config` and starts serving.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let mut snapshot = Snapshot::build(config, None);
        // Plugins first: the ports open only once every plugin is ready to decide.
        let view = Arc::new(GatewayView::default());
        let plugins = PluginRegistry::new(&snapshot.config, view.clone());
        let prepared = plugins.prepare(&snapshot.config).await?;
        plugins.commit(prepared);
        let mut bound = Vec::with_capacity(snapshot.frontends.len());
        for i in 0..snapshot.frontends.len() {
            bound.push(Bound {
                listener: bind_frontend(&snapshot, i)?,
                handle: SocketHandle::new(i, None),
                key: snapshot.frontends[i].key.clone(),
            });
        }
        let (certificates, frontend_tls) = crate::tls::Certificates::build(&snapshot)?;
        for (b, tls) in bound.iter().zip(frontend_tls) {
            b.handle.tls.store(tls);
        }
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
        let ids: Vec<usize> = (0..bound.len()).collect();
        snapshot.assign_sockets(&ids);
        let shared = Shared::new(snapshot, plugins);
        let _ = view.shared.set(Arc::downgrade(&shared));
        // Every target is probed at once; servers join the rotation as their probes answer.
        let prober = Prober::start(&shared.snapshot.load(), &shared.plugins.current());
        let control = Arc::new(Control {
            shared: shared.clone(),
            state: tokio::sync::Mutex::new(ControlState {
                sockets: Vec::new(),
                next_socket: bound.len(),
                prober,
                certificate_watch: None,
            }),
            certificates: ArcSwap::from_pointee(crate::tls::Certificates::default()),
            bound: ArcSwap::from_pointee(Vec::new()),
            config_file: std::sync::Mutex::new(None),
        });
        let _ = shared.control.set(Arc::downgrade(&control));
        {
            let mut state = control.state.lock().await;
            control.serve(&mut state, bound);
            control.watch_certificates(&mut state, certificates);
            control.publish_bound(&state);
        }
        let admin = admin.map(|(socket, local, token)| {
            (
                local,
                tokio::spawn(crate::admin::serve(socket, shared.clone(), token)),
            )
        });
        Ok(Self {
            shared,
            control,
            admin,
        })
    }

    /// Applies a new configuration while traffic flows. Everything that can fail — plugins,
    /// binding new ports, loading certificates — is done before anything changes; on an error
    /// the running configuration keeps serving untouched. Then, at once: new connections and
    /// requests see the new routing; listeners on new ports start accepting; sockets no listener
    /// uses any more stop accepting (their connections finish the requests in flight); servers
    /// that left a pool stop taking new requests and drain (connection draining of their
    /// backend settings: in-flight requests and WebSocket sessions continue up to the draining
    /// timeout, then WebSocket sessions get a Close 1001 and requests are cut; without draining,
    /// their WebSocket sessions are closed with 1001 at once and requests finish). WebSocket
    /// sessions whose server stays are never touched, and servers that stay keep their health.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, Error> {
        self.control.reload(config).await
    }

    /// Reads the configuration file again and applies it; see [`Gateway::reload`].
    pub async fn reload_from_file(&self) -> Result<ReloadReport, Error> {
        self.control.reload_from_file().await
    }

    /// Tells the gateway which file its configuration came from (for SIGHUP and the admin
    /// API's reload) and, with `watch`, reloads whenever the file changes (checked every two
    /// seconds; a change is applied once the file has stopped changing).
    pub fn set_config_file(&self, path: PathBuf, watch: bool) {
        *self
            .control
            .config_file
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
        if watch {
            tokio::spawn(watch_config_file(
                Arc::downgrade(&self.control),
                path,
                self.shared.stopping(),
            ));
        }
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Waits until every backend server has had its first probe answered (or failed), at most
    /// `timeout`; returns whether they all have. Until then a server takes no traffic.
    pub async fn wait_for_first_probes(&self, timeout: Duration) -> bool {
        let first = self.control.state.lock().await.prober.first_round();
        first.wait(timeout).await
    }

    /// Reads every HTTPS listener's certificate from disk again (what SIGHUP does besides
    /// reloading the configuration; changed files are also picked up by themselves within a
    /// few seconds). Established connections keep their session; new handshakes get the new
    /// certificates. A certificate that fails to load is reported and its listener keeps the
    /// previous one.
    pub fn reload_certificates(&self) -> Vec<crate::tls::ReloadError> {
        self.control.certificates.load().reload()
    }

    /// The address a listener is bound to (with the port the OS chose for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control
            .bound
            .load()
            .iter()
            .find_map(|(n, addr)| (n == name).then_some(*addr))
    }

    /// The configuration's plugins, in configuration order (each slot holds its active
    /// version, which the admin API may replace or unload).
    pub fn plugins(&self) -> Arc<Box<[Arc<PluginSlot>]>> {
        self.shared.plugins.current()
    }

    /// Every plugin, with the admin operations (load, replace, unload, shadow, promote) and
    /// [`PluginRegistry::prepare`] / [`PluginRegistry::commit`] for a new configuration.
    pub fn plugin_registry(&self) -> &PluginRegistry {
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
        let tasks = {
            let mut state = self.control.state.lock().await;
            state.prober.stop();
            state.certificate_watch = None;
            state
                .sockets
                .drain(..)
                .map(|s| {
                    s.handle.stop();
                    s.task
                })
                .collect::<Vec<_>>()
        };
        for task in tasks {
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

impl Control {
    async fn reload_from_file(&self) -> Result<ReloadReport, Error> {
        let path = self
            .config_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::NoConfigFile)?;
        let config = Config::from_file(&path)?;
        self.reload(config).await
    }

    async fn reload(&self, config: Config) -> Result<ReloadReport, Error> {
        let mut state = self.state.lock().await;
        if self.shared.is_stopping() {
            return Err(Error::Stopping);
        }
        let previous = self.shared.snapshot.load_full();
        // Plugins new or changed in the file are compiled and initialised off the request path;
        // unchanged ones (and versions the admin API installed over them) stay as they are.
        let plugins = self.shared.plugins.prepare(&config).await?;
        let mut snapshot = Snapshot::build(config, Some(&previous));
        if snapshot.config.admin != previous.config.admin {
            // The admin listener carries this very request when the reload comes through it.
            tracing::warn!("the [admin] section changed; it applies at the next start");
        }

        // Everything that can fail, with nothing changed yet.
        let mut ids = Vec::with_capacity(snapshot.frontends.len());
        let mut fresh = Vec::new();
        let mut report = ReloadReport {
            listeners: snapshot.config.listeners.len(),
            rules: snapshot.config.rules.len(),
            backend_pools: snapshot.config.backend_pools.len(),
            ..ReloadReport::default()
        };
        for (i, f) in snapshot.frontends.iter().enumerate() {
            if let Some(s) = state.sockets.iter().find(|s| s.key == f.key) {
                ids.push(s.handle.id);
                continue;
            }
            let listener = bind_frontend(&snapshot, i)?;
            let id = state.next_socket + fresh.len();
            ids.push(id);
            report.sockets_added.push(format!(
                "{} ({})",
                listener.local_addr(),
                listener_names(&snapshot, i).join(", ")
            ));
            fresh.push(Bound {
                listener,
                handle: SocketHandle::new(id, None),
                key: f.key.clone(),
            });
        }
        let (certificates, frontend_tls) = crate::tls::Certificates::build(&snapshot)?;

        // From here on nothing fails. TLS first: a socket whose protocol changes to HTTPS must
        // find its certificates once the snapshot says so.
        state.next_socket += fresh.len();
        for (frontend, tls) in frontend_tls.into_iter().enumerate() {
            let id = ids[frontend];
            match state.sockets.iter().find(|s| s.handle.id == id) {
                Some(s) => s.handle.tls.store(tls),
                None => {
                    if let Some(b) = fresh.iter().find(|b| b.handle.id == id) {
                        b.handle.tls.store(tls);
                    }
                }
            }
        }
        snapshot.assign_sockets(&ids);

        // Servers leaving: out of rotation and draining before the new snapshot is seen.
        state.prober.stop();
        let now = tokio::time::Instant::now();
        let mut draining: Vec<Arc<crate::probe::Health>> = previous
            .draining
            .iter()
            .filter(|h| h.drain().is_some_and(|d| d.deadline > now))
            .cloned()
            .collect();
        for (health, settings) in snapshot.removed_targets(&previous) {
            let settings = previous.config.settings(settings);
            let drain = if settings.draining.enabled {
                Drain {
                    deadline: now + settings.draining.timeout,
                    cut_requests: true,
                }
            } else {
                Drain {
                    deadline: now,
                    cut_requests: false,
                }
            };
            health.start_draining(drain);
            let key = health.key();
            report.servers_draining.push(format!(
                "{} in pool {} with settings {}",
                key.server, key.pool, key.settings
            ));
            draining.push(health);
        }
        snapshot.draining = draining.into();

        // Plugins are found by name from the configuration a request holds, so publishing the
        // plugin set just before the snapshot is safe for requests of either.
        self.shared.plugins.commit(plugins);
        self.shared.snapshot.store(Arc::new(snapshot));

        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut state.sockets)
            .into_iter()
            .partition(|s| ids.contains(&s.handle.id));
        state.sockets = kept;
        for s in removed {
            tracing::info!(address = %s.local, "socket closed: no listener uses it any more");
            report.sockets_removed.push(s.local.to_string());
            s.handle.stop();
            // The accept loop drops the socket as soon as it sees the stop, so the port is free
            // once the reload returns (a later reload may bind it again).
            if tokio::time::timeout(Duration::from_secs(1), s.task)
                .await
                .is_err()
            {
                tracing::warn!(address = %s.local, "accept loop slow to stop");
            }
        }
        self.serve(&mut state, fresh);
        state.prober = Prober::start(&self.shared.snapshot.load(), &self.shared.plugins.current());
        self.watch_certificates(&mut state, certificates);
        self.publish_bound(&state);
        tracing::info!(
            listeners = report.listeners,
            rules = report.rules,
            sockets_added = report.sockets_added.len(),
            sockets_removed = report.sockets_removed.len(),
            servers_draining = report.servers_draining.len(),
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Starts the accept loops of newly bound sockets.
    fn serve(&self, state: &mut ControlState, bound: Vec<Bound>) {
        let snapshot = self.shared.snapshot.load();
        for b in bound {
            let local = b.listener.local_addr();
            if let Some(f) = snapshot.frontend_of(b.handle.id) {
                for name in listener_names(&snapshot, f) {
                    tracing::info!(listener = %name, address = %local, protocol = snapshot.frontends[f].protocol.as_str(), "listening");
                }
            }
            let task = listener::serve_socket(b.listener, b.handle.clone(), self.shared.clone());
            state.sockets.push(RunningSocket {
                key: b.key,
                local,
                handle: b.handle,
                task,
            });
        }
    }

    fn watch_certificates(&self, state: &mut ControlState, certificates: crate::tls::Certificates) {
        let certificates = Arc::new(certificates);
        self.certificates.store(certificates.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = self.shared.stopping();
        // Ends with the gateway, or when a reload replaces these certificates (drops `tx`).
        let _ = certificates.watch(async move {
            tokio::select! {
                _ = stopping => {}
                _ = rx => {}
            }
        });
        state.certificate_watch = Some(tx);
    }

    fn publish_bound(&self, state: &ControlState) {
        let snapshot = self.shared.snapshot.load();
        let mut bound = Vec::new();
        for s in &state.sockets {
            if let Some(f) = snapshot.frontend_of(s.handle.id) {
                for name in listener_names(&snapshot, f) {
                    bound.push((name, s.local));
                }
            }
        }
        self.bound.store(Arc::new(bound));
    }
}

/// Reloads the configuration whenever `path` changes on disk, once it has stopped changing for
/// one check; an invalid file is reported (naming the field) and the running configuration
/// keeps serving.
async fn watch_config_file(
    control: Weak<Control>,
    path: PathBuf,
    stopping: impl Future<Output = ()> + Send + 'static,
) {
    use crate::tls::server::{FileStamps, WATCH_INTERVAL};
    tokio::pin!(stopping);
    let mut applied = FileStamps::read([path.as_path()]);
    let mut pending: Option<FileStamps> = None;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopping => return,
            _ = tick.tick() => {}
        }
        let now = FileStamps::read([path.as_path()]);
        if now == applied {
            pending = None;
            continue;
        }
        // Changed: wait one more check for the writer to finish.
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        applied = now;
        let Some(control) = control.upgrade() else {
            return;
        };
        tracing::info!(path = %path.display(), "configuration file changed; reloading");
        if let Err(e) = control.reload_from_file().await {
            tracing::error!(error = %e, "configuration not reloaded; the running one keeps serving");
        }
    }
}
