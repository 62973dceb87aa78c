//! The control plane: applies configurations while traffic flows, owns the bound sockets and
//! their accept loops, the prober and the certificate watch. It publishes each new snapshot into
//! the [data plane](crate::dataplane) and never sits on the request path. The admin API reaches
//! it through a [`ControlHandle`].

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dataplane::{DataPlane, SnapshotCell, SnapshotView};
use crate::error::Error;
use crate::listener::{self, SocketHandle};
use crate::metrics::Metrics;
use crate::otlp::OtlpExporter;
use crate::plugin::PluginRegistry;
use crate::probe::{
    Drain, FirstRound, Health, ProbedServer, Prober, Status as ServerStatus, first_round_bound,
};
use crate::snapshot::{Snapshot, SocketKey};
use crate::source::{ConfigSource, StoreState};
use crate::telemetry::AccessLog;
use crate::telemetry::rfc3339;
use crate::tls::Certificates;
use crate::workers::Workers;

/// The control plane: everything a reload changes besides the snapshot. Reloads take the lock
/// one at a time; the data plane never does.
pub struct Control {
    plane: Arc<DataPlane>,
    /// The threads that serve connections, handed to every socket's accept loops.
    workers: Arc<Workers>,
    state: tokio::sync::Mutex<ControlState>,
    /// HTTPS sockets' certificates, reloadable on their own.
    certificates: ArcSwap<Certificates>,
    /// Listener name → bound address, for [`Gateway::listener_addr`].
    bound: ArcSwap<Vec<(String, SocketAddr)>>,
    /// The file the configuration came from, once the gateway was told (SIGHUP, the admin
    /// API and the file watch read it again).
    config_file: std::sync::Mutex<Option<PathBuf>>,
    /// The running configuration's identity and the latest reloads, for the admin API.
    history: std::sync::Mutex<History>,
    /// Asked to drain (`POST /api/drain`): still serving, but reported not ready so that load
    /// balancers move new connections to other instances.
    draining: std::sync::atomic::AtomicBool,
    /// Sockets handed over by the process this one replaced, claimed as listeners bind.
    inherited: Arc<listener::Inherited>,
    /// The configuration store followed, when the configuration comes from one.
    source: Arc<ConfigSource>,
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
    /// The same OS sockets under descriptors of their own, for a binary upgrade to hand over.
    duplicates: Vec<std::net::TcpListener>,
}

/// What a configuration reload changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Sockets bound by this reload, with the listeners on them.
    pub sockets_added: Vec<String>,
    /// Sockets closed because no listener uses them any more.
    pub sockets_removed: Vec<String>,
    /// Backend servers (per backend settings) that left the configuration and are draining.
    pub servers_draining: Vec<String>,
    /// Backend servers (per backend settings) new to the configuration, each with its status
    /// when the configuration took effect (`... : Healthy`). They were probed before it did,
    /// bounded by their probe timeout, so a healthy one serves the first request routed to it.
    pub servers_added: Vec<String>,
    /// Those of `servers_added` whose first probe had not answered within that bound: Unknown,
    /// they take no traffic until a probe succeeds (as in Application Gateway).
    pub servers_unknown: Vec<String>,
    pub listeners: usize,
    pub rules: usize,
    pub backend_pools: usize,
}

/// Reloads kept for the admin API's status, newest first; older ones are only in the log.
pub const RELOAD_HISTORY: usize = 20;

/// The running configuration and the latest reload attempts.
struct History {
    started_at: SystemTime,
    config_hash: String,
    /// The store's revision of the running configuration, when it came from a store.
    config_revision: Option<i64>,
    loaded_at: SystemTime,
    reloads: VecDeque<ReloadRecord>,
}

/// One reload attempt, applied or not.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadRecord {
    /// RFC 3339, UTC.
    pub at: String,
    /// "applied" or "failed" (the running configuration kept serving).
    pub outcome: &'static str,
    /// The hash of the configuration tried; `None` when it could not be read or parsed.
    pub config_hash: Option<String>,
    /// The store's revision of the configuration tried, when it came from a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<ReloadReport>,
}

/// The gateway's status as the admin API's `/api/status` answers it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The gateway's version (the crate's).
    pub version: &'static str,
    pub started_at: String,
    pub config: ConfigStatus,
    /// The latest reload attempts, newest first, at most [`RELOAD_HISTORY`].
    pub reloads: Vec<ReloadRecord>,
    /// The configuration store followed, when the configuration comes from one (etcd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreState>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// SHA-256 of the running configuration's text, hex (empty when it was not read from text).
    pub hash: String,
    /// The store's revision of the running configuration, when it came from a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// When it started serving, RFC 3339, UTC.
    pub loaded_at: String,
    /// The file it came from, when the gateway was told.
    pub file: Option<String>,
    pub listeners: usize,
    pub rules: usize,
    pub backend_pools: usize,
    pub plugins: usize,
}

/// New sockets bound for a snapshot, not yet serving.
struct NewSocket {
    listener: listener::BoundSocket,
    handle: Arc<SocketHandle>,
    key: SocketKey,
}

/// The certificates of `snapshot`'s HTTPS sockets.
fn build_certificates(
    snapshot: &Snapshot,
) -> Result<(Certificates, crate::tls::server::SocketTls), Error> {
    Certificates::build(
        &snapshot.config,
        snapshot.sockets.iter().map(|f| &f.listeners[..]),
    )
}

/// Binds the socket the snapshot describes at `socket`, with the error naming its first listener.
/// Inherited sockets of the same key are taken over instead of bound anew.
fn bind_socket(
    snapshot: &Snapshot,
    socket: usize,
    workers: usize,
    inherited: &listener::Inherited,
) -> Result<listener::BoundSocket, Error> {
    let f = &snapshot.sockets[socket];
    let error = |source| Error::Bind {
        listener: snapshot.config.listener(f.listeners[0]).name.clone(),
        addr: f.bind,
        source,
    };
    let adopted = inherited.take(&f.key.to_string());
    if !adopted.is_empty() {
        tracing::info!(socket = %f.key, count = adopted.len(), "listening socket taken over");
    }
    listener::bind_or_adopt(f.bind, workers, adopted).map_err(error)
}

fn listener_names(snapshot: &Snapshot, socket: usize) -> Vec<String> {
    snapshot.sockets[socket]
        .listeners
        .iter()
        .map(|l| snapshot.config.listener(*l).name.clone())
        .collect()
}

impl Control {
    /// Loads the plugins of `config`, binds its listeners and starts serving them on `workers`.
    /// Nothing serves until everything that can fail has succeeded.
    /// Spans of finished requests go to `spans`, when given.
    /// Sockets in `inherited` (a binary upgrade's) are taken over rather than bound.
    pub async fn start(
        config: Config,
        workers: Arc<Workers>,
        spans: Option<Arc<OtlpExporter>>,
        inherited: Arc<listener::Inherited>,
    ) -> Result<Arc<Self>, Error> {
        let now = SystemTime::now();
        let history = History {
            started_at: now,
            config_hash: config.source_hash.as_deref().unwrap_or_default().to_owned(),
            config_revision: None,
            loaded_at: now,
            reloads: VecDeque::with_capacity(RELOAD_HISTORY),
        };
        let mut snapshot = Snapshot::build(config, None, workers.count());
        let ids: Vec<usize> = (0..snapshot.sockets.len()).collect();
        snapshot.assign_sockets(&ids);
        // Plugins first: the ports open only once every plugin is ready to decide. Their view
        // of the gateway reads the snapshot published here.
        let cell: SnapshotCell = Arc::new(ArcSwap::from_pointee(snapshot));
        let snapshot = cell.load_full();
        let plugins = PluginRegistry::new(
            &snapshot.config,
            Arc::new(SnapshotView(cell.clone())),
            workers.count(),
        );
        let prepared = plugins.prepare(&snapshot.config).await?;
        plugins.commit(prepared);
        let mut bound = Vec::with_capacity(snapshot.sockets.len());
        for i in 0..snapshot.sockets.len() {
            bound.push(NewSocket {
                listener: bind_socket(&snapshot, i, workers.count(), &inherited)?,
                handle: SocketHandle::new(i, None),
                key: snapshot.sockets[i].key.clone(),
            });
        }
        let (certificates, socket_tls) = build_certificates(&snapshot)?;
        for (b, tls) in bound.iter().zip(socket_tls) {
            b.handle.tls.store(tls);
        }
        let metrics = Metrics::new(workers.count());
        metrics.adopt(&snapshot.metrics);
        metrics.config_applied(snapshot.config.source_hash.clone(), false);
        let access_log = AccessLog::new(snapshot.config.logging.access_log.clone());
        let plane = DataPlane::new(cell, plugins, metrics, access_log, spans);
        // Every target is probed at once, and nothing is served before each has answered (or
        // its probe timeout passed): the ports are bound, so connections wait in their accept
        // queue instead of meeting pools that are all Unknown and answering 502.
        let prober = Prober::start(
            &snapshot.config,
            &snapshot.targets,
            &plane.plugins.current(),
        );
        let limit = first_round_bound(&snapshot.config, &snapshot.targets);
        if !prober.wait_for_first_probes(limit).await {
            for t in snapshot.targets.iter() {
                if t.health.status() == ServerStatus::Unknown {
                    let key = t.health.key();
                    tracing::warn!(pool = %key.pool, server = %key.server, settings = %key.settings, "no answer to the first probe; serving without this server until a probe succeeds");
                }
            }
        }
        let control = Arc::new(Control {
            plane,
            workers,
            state: tokio::sync::Mutex::new(ControlState {
                sockets: Vec::new(),
                next_socket: bound.len(),
                prober,
                certificate_watch: None,
            }),
            certificates: ArcSwap::from_pointee(Certificates::default()),
            bound: ArcSwap::from_pointee(Vec::new()),
            config_file: std::sync::Mutex::new(None),
            history: std::sync::Mutex::new(history),
            draining: std::sync::atomic::AtomicBool::new(false),
            inherited,
            source: Arc::default(),
        });
        {
            let mut state = control.state.lock().await;
            control.serve(&mut state, bound);
            control.watch_certificates(&mut state, certificates);
            control.publish_bound(&state);
        }
        Ok(control)
    }

    /// The data plane this control plane publishes into.
    pub fn plane(&self) -> &Arc<DataPlane> {
        &self.plane
    }

    /// The configuration store followed, when the configuration comes from one.
    pub fn source(&self) -> &Arc<ConfigSource> {
        &self.source
    }

    /// The running configuration is the store's `revision` (the one the gateway started with).
    pub fn set_revision(&self, revision: i64) {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_revision = Some(revision);
    }

    /// The threads serving connections.
    pub fn workers(&self) -> &Arc<Workers> {
        &self.workers
    }

    /// A handle for the admin API.
    pub fn handle(self: &Arc<Self>) -> ControlHandle {
        ControlHandle(self.clone())
    }

    /// Remembers the file the configuration came from; see [`crate::Gateway::set_config_file`].
    pub fn set_config_file(self: &Arc<Self>, path: PathBuf, watch: bool) {
        *self.config_file.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
        if watch {
            tokio::spawn(watch_config_file(
                Arc::downgrade(self),
                path,
                self.plane.stopping(),
            ));
        }
    }

    /// The first round of probes of the current prober.
    pub async fn first_round(&self) -> Arc<FirstRound> {
        self.state.lock().await.prober.first_round()
    }

    /// Reads every HTTPS listener's certificate from disk again.
    pub fn reload_certificates(&self) -> Vec<crate::tls::ReloadError> {
        self.certificates.load().reload()
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound
            .load()
            .iter()
            .find_map(|(n, addr)| (n == name).then_some(*addr))
    }

    /// Stops probing, watching certificates and accepting; returns once every accept loop has
    /// ended. Connections in flight go on.
    pub async fn stop_accepting(&self) {
        let tasks = {
            let mut state = self.state.lock().await;
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
    }

    /// The listening sockets, each under its key's text, duplicated for a binary upgrade to
    /// hand over; this process keeps accepting on them.
    pub async fn handover_sockets(&self) -> Vec<(String, Vec<std::net::TcpListener>)> {
        let state = self.state.lock().await;
        state
            .sockets
            .iter()
            .filter_map(|s| {
                let copies: std::io::Result<Vec<_>> =
                    s.duplicates.iter().map(|d| d.try_clone()).collect();
                match copies {
                    Ok(copies) if !copies.is_empty() => Some((s.key.to_string(), copies)),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(address = %s.local, error = %e, "cannot duplicate the socket to hand it over");
                        None
                    }
                }
            })
            .collect()
    }

    /// Closes the inherited sockets the configuration did not claim; see
    /// [`listener::Inherited::release`].
    pub fn release_inherited(&self) -> Vec<String> {
        self.inherited.release()
    }

    pub async fn reload_from_file(&self) -> Result<ReloadReport, Error> {
        let path = self
            .config_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::NoConfigFile)?;
        let config = match Config::from_file(&path) {
            Ok(config) => config,
            Err(e) => {
                let e = Error::from(e);
                self.refused(None, None, &e);
                return Err(e);
            }
        };
        self.reload(config).await
    }

    /// Applies `config` (see [`crate::Gateway::reload`]); the metrics count the outcome, and the
    /// attempt is recorded for the status.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, Error> {
        self.reload_revision(config, None).await
    }

    /// Applies `config`, the store's `revision` of it when it came from a store (reported in
    /// the status with its hash once applied).
    pub async fn reload_revision(
        &self,
        config: Config,
        revision: Option<i64>,
    ) -> Result<ReloadReport, Error> {
        let hash = config.source_hash.clone();
        let result = self.apply(config).await;
        if result.is_err() {
            self.plane.metrics.reload_failed();
        }
        self.record(hash.map(String::from), revision, result.as_ref());
        result
    }

    /// Records a configuration that was refused before it could be applied (it could not be
    /// read or parsed), `revision` of the store when it came from one.
    pub fn refused(&self, hash: Option<String>, revision: Option<i64>, error: &Error) {
        self.plane.metrics.reload_failed();
        self.record(hash, revision, Err(error));
    }

    /// The running configuration and the latest reload attempts.
    pub fn status(&self) -> Status {
        let snapshot = self.plane.snapshot.load();
        let config = &snapshot.config;
        let file = self
            .config_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.display().to_string());
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339(history.started_at),
            config: ConfigStatus {
                hash: history.config_hash.clone(),
                revision: history.config_revision,
                loaded_at: rfc3339(history.loaded_at),
                file,
                listeners: config.listeners.len(),
                rules: config.rules.len(),
                backend_pools: config.backend_pools.len(),
                plugins: config.plugins.len(),
            },
            reloads: history.reloads.iter().cloned().collect(),
            store: self.source.state(),
        }
    }

    fn record(
        &self,
        hash: Option<String>,
        revision: Option<i64>,
        result: Result<&ReloadReport, &Error>,
    ) {
        let now = SystemTime::now();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if let (Ok(_), Some(hash)) = (result, &hash) {
            history.config_hash.clone_from(hash);
            history.config_revision = revision;
            history.loaded_at = now;
        }
        if history.reloads.len() == RELOAD_HISTORY {
            history.reloads.pop_back();
        }
        history.reloads.push_front(ReloadRecord {
            at: rfc3339(now),
            outcome: if result.is_ok() { "applied" } else { "failed" },
            config_hash: hash,
            revision,
            error: result.as_ref().err().map(|e| e.to_string()),
            changes: result.ok().cloned(),
        });
    }

    async fn apply(&self, config: Config) -> Result<ReloadReport, Error> {
        let mut state = self.state.lock().await;
        if self.plane.is_stopping() {
            return Err(Error::Stopping);
        }
        let previous = self.plane.snapshot.load_full();
        // Plugins new or changed in the file are compiled and initialised off the request path;
        // unchanged ones (and versions the admin API installed over them) stay as they are.
        let plugins = self.plane.plugins.prepare(&config).await?;
        let mut snapshot = Snapshot::build(config, Some(&previous), self.workers.count());
        if snapshot.config.admin != previous.config.admin {
            // The admin listener carries this very request when the reload comes through it.
            tracing::warn!("the [admin] section changed; it applies at the next start");
        }
        if snapshot.config.telemetry.export() != previous.config.telemetry.export() {
            tracing::warn!(
                "[telemetry] otlp_endpoint or service_name changed; it applies at the next start"
            );
        }

        // Everything that can fail, with nothing changed yet.
        let mut ids = Vec::with_capacity(snapshot.sockets.len());
        let mut fresh = Vec::new();
        let mut report = ReloadReport {
            listeners: snapshot.config.listeners.len(),
            rules: snapshot.config.rules.len(),
            backend_pools: snapshot.config.backend_pools.len(),
            ..ReloadReport::default()
        };
        for (i, f) in snapshot.sockets.iter().enumerate() {
            if let Some(s) = state.sockets.iter().find(|s| s.key == f.key) {
                ids.push(s.handle.id);
                continue;
            }
            let listener = bind_socket(&snapshot, i, self.workers.count(), &self.inherited)?;
            let id = state.next_socket + fresh.len();
            ids.push(id);
            report.sockets_added.push(format!(
                "{} ({})",
                listener.local_addr(),
                listener_names(&snapshot, i).join(", ")
            ));
            fresh.push(NewSocket {
                listener,
                handle: SocketHandle::new(id, None),
                key: f.key.clone(),
            });
        }
        let (certificates, socket_tls) = build_certificates(&snapshot)?;

        // Servers new to the configuration are probed before a request can be routed to them,
        // while the running configuration keeps serving: a path moved to a new pool never meets
        // a pool that is all Unknown. Servers that stay keep their state and are not waited for.
        let added = snapshot.added_targets(&previous);
        if !added.is_empty() {
            self.probe_added(&snapshot, &added, &plugins.preview(), &mut report)
                .await;
        }

        // From here on nothing fails. TLS first: a socket whose protocol changes to HTTPS must
        // find its certificates once the snapshot says so.
        state.next_socket += fresh.len();
        for (socket, tls) in socket_tls.into_iter().enumerate() {
            let id = ids[socket];
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
        state.prober.stop_and_wait().await;
        let now = tokio::time::Instant::now();
        let mut draining: Vec<Arc<Health>> = previous
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
        let plugins = self.plane.plugins.commit(plugins);
        self.plane.metrics.adopt(&snapshot.metrics);
        self.plane
            .metrics
            .config_applied(snapshot.config.source_hash.clone(), true);
        self.plane
            .access_log
            .retarget(&snapshot.config.logging.access_log);
        // The new prober sets the rotation of every pool (the new servers' by the results of
        // their first probes) before the snapshot is seen; probes of the servers that stay go
        // on one interval after their last.
        let snapshot = Arc::new(snapshot);
        state.prober = Prober::start(&snapshot.config, &snapshot.targets, &plugins);
        self.plane.snapshot.store(snapshot);

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
        self.watch_certificates(&mut state, certificates);
        self.publish_bound(&state);
        tracing::info!(
            listeners = report.listeners,
            rules = report.rules,
            sockets_added = report.sockets_added.len(),
            sockets_removed = report.sockets_removed.len(),
            servers_draining = report.servers_draining.len(),
            servers_added = report.servers_added.len(),
            servers_unknown = report.servers_unknown.len(),
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Probes `added`, the servers `snapshot` adds, once each (bounded by their probe timeouts,
    /// or until the gateway stops) and reports their status. `plugins` is the plugin set of
    /// `snapshot`, for probe plugins.
    async fn probe_added(
        &self,
        snapshot: &Snapshot,
        added: &[ProbedServer],
        plugins: &[Arc<crate::plugin::PluginSlot>],
        report: &mut ReloadReport,
    ) {
        let mut first = Prober::start(&snapshot.config, added, plugins);
        let limit = first_round_bound(&snapshot.config, added);
        tokio::select! {
            _ = first.wait_for_first_probes(limit) => {}
            _ = self.plane.stopping() => {}
        }
        // This prober's groups hold only the new servers: the one started with the snapshot
        // sets the rotation over whole pools, and none of these probes may land after it.
        first.stop_and_wait().await;
        for t in added {
            let key = t.health.key();
            let server = format!(
                "{} in pool {} with settings {}",
                key.server, key.pool, key.settings
            );
            let status = t.health.status();
            if status == ServerStatus::Unknown {
                tracing::warn!(pool = %key.pool, server = %key.server, settings = %key.settings, "no answer to the first probe; the configuration takes effect without this server until a probe succeeds");
                report.servers_unknown.push(server.clone());
            }
            report.servers_added.push(format!("{server}: {status}"));
        }
    }

    /// Starts the accept loops of newly bound sockets.
    fn serve(&self, state: &mut ControlState, bound: Vec<NewSocket>) {
        let snapshot = self.plane.snapshot.load();
        for b in bound {
            let local = b.listener.local_addr();
            if let Some(f) = snapshot.socket_index(b.handle.id) {
                for name in listener_names(&snapshot, f) {
                    tracing::info!(listener = %name, address = %local, protocol = snapshot.sockets[f].protocol.as_str(), "listening");
                }
            }
            let duplicates = b.listener.duplicates().unwrap_or_else(|e| {
                tracing::warn!(address = %local, error = %e, "cannot duplicate the socket; a binary upgrade will bind it anew");
                Vec::new()
            });
            let task = listener::serve_socket(
                b.listener,
                b.handle.clone(),
                self.plane.clone(),
                &self.workers,
            );
            state.sockets.push(RunningSocket {
                key: b.key,
                local,
                handle: b.handle,
                task,
                duplicates,
            });
        }
    }

    fn watch_certificates(&self, state: &mut ControlState, certificates: Certificates) {
        let certificates = Arc::new(certificates);
        self.certificates.store(certificates.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = self.plane.stopping();
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
        let snapshot = self.plane.snapshot.load();
        let mut bound = Vec::new();
        for s in &state.sockets {
            if let Some(f) = snapshot.socket_index(s.handle.id) {
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
pub(crate) async fn watch_config_file(
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

/// What the admin API may ask of the control plane: read the configuration file again, and
/// the plugins and snapshot it manages.
#[derive(Clone)]
pub struct ControlHandle(Arc<Control>);

impl ControlHandle {
    /// Reads the configuration file again and applies it (see [`crate::Gateway::reload`]).
    pub async fn reload_from_file(&self) -> Result<ReloadReport, Error> {
        self.0.reload_from_file().await
    }

    pub fn plugins(&self) -> &PluginRegistry {
        &self.0.plane.plugins
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.plane.snapshot.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.plane.metrics
    }

    /// Access-log records dropped because the writer fell behind.
    pub fn access_log_dropped(&self) -> u64 {
        self.0.plane.access_log.dropped()
    }

    /// The span exporter's counters, when spans are exported (`[telemetry] otlp_endpoint`).
    pub fn span_export(&self) -> Option<crate::otlp::ExportStats> {
        self.0.plane.spans.as_ref().map(|s| s.stats())
    }

    /// The running configuration and the latest reload attempts.
    pub fn status(&self) -> Status {
        self.0.status()
    }

    /// The configuration store followed, when the configuration comes from one.
    pub fn source(&self) -> Option<StoreState> {
        self.0.source.state()
    }

    /// Completes once the gateway starts shutting down.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.plane.stopping()
    }

    /// Whether this instance should be sent new connections: it serves (its listeners are
    /// bound and its first probes done, or the admin API would not answer yet) and is neither
    /// draining nor stopping.
    pub fn readiness(&self) -> Readiness {
        if self.0.plane.is_stopping() {
            Readiness::Stopping
        } else if self.0.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Readiness::Draining
        } else {
            Readiness::Ready
        }
    }

    /// Starts draining: everything keeps being served, the readiness turns to
    /// [`Readiness::Draining`] for good (a drained instance is stopped, not resumed).
    pub fn drain(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connections and WebSocket sessions in flight.
    pub fn in_flight(&self) -> usize {
        self.0.plane.active()
    }
}

/// What `GET /api/ready` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Draining,
    Stopping,
}
