//! The running gateway: starts the worker threads, the control plane and the admin API, and
//! shuts them down gracefully. The one place that wires the parts together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::{Control, ReloadReport};
use crate::dataplane::{SnapshotCell, SnapshotView};
use crate::error::Error;
use crate::listener::{self, Inherited};
use crate::otlp::{ExportOptions, OtlpExporter};
use crate::plugin::{PluginRegistry, PluginSlot};
use crate::snapshot::Snapshot;
use crate::upgrade::{Program, UpgradeError, Upgraded, Upgrader};
use crate::workers::{WorkerOptions, Workers};

/// How long shutting down waits for the last spans to reach the collector.
const SPAN_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// A gateway serving in the background: its control plane (reloads, probes, the admin API) on
/// the tokio runtime that started it, its connections on its [workers](crate::workers).
pub struct Gateway {
    control: Arc<Control>,
    /// The admin listener's address and task, when configured.
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    /// For a gateway that can start its successor (`wasmgate run`).
    upgrader: Option<Arc<Upgrader>>,
}

impl Gateway {
    /// Binds every listener of `config` and starts serving, on one worker thread per core,
    /// once every backend server has had its first probe answered (bounded by the probe
    /// timeouts): connections that arrive meanwhile wait in the accept queue.
    pub async fn start(config: Config) -> Result<Self, Error> {
        Self::start_with(config, WorkerOptions::default()).await
    }

    /// Binds every listener of `config` and starts serving on workers started as `workers` says.
    pub async fn start_with(config: Config, workers: WorkerOptions) -> Result<Self, Error> {
        Self::start_inner(config, workers, None, Arc::default(), None).await
    }

    /// Starts as one of the processes a supervisor (`wasmgate run --processes N`) runs: the
    /// admin API is served on the Unix socket `admin_socket` (the supervisor serves the
    /// configured admin listener and asks each process there), without a token.
    pub async fn start_supervised(
        config: Config,
        workers: WorkerOptions,
        admin_socket: PathBuf,
    ) -> Result<Self, Error> {
        Self::start_inner(config, workers, None, Arc::default(), Some(admin_socket)).await
    }

    /// Starts as [`Gateway::start_with`] does, able to [upgrade](Gateway::upgrade) to a new
    /// binary: `program` is what an upgrade starts. `inherited` holds the sockets handed over
    /// by the process this one replaces, when it was started by an upgrade: they are taken
    /// over instead of bound (the rest are closed by [`Gateway::release_inherited`]).
    pub async fn start_upgradable(
        config: Config,
        workers: WorkerOptions,
        program: Program,
        inherited: Inherited,
    ) -> Result<Self, Error> {
        Self::start_inner(config, workers, Some(program), Arc::new(inherited), None).await
    }

    async fn start_inner(
        config: Config,
        workers: WorkerOptions,
        program: Option<Program>,
        inherited: Arc<Inherited>,
        admin_socket: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let admin_unix = match &admin_socket {
            None => None,
            Some(path) => {
                let _ = std::fs::remove_file(path);
                let socket =
                    tokio::net::UnixListener::bind(path).map_err(|source| Error::Bind {
                        listener: "admin".into(),
                        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                        source,
                    })?;
                Some(socket)
            }
        };
        let admin = match &config.admin {
            _ if admin_unix.is_some() => None,
            None => None,
            Some(admin) => {
                let bind_error = |source| Error::Bind {
                    listener: "admin".into(),
                    addr: admin.bind,
                    source,
                };
                let tls = admin
                    .tls
                    .as_ref()
                    .map(|t| crate::tls::server::admin_acceptor(t.certificate.clone()))
                    .transpose()
                    .map_err(|source| Error::Tls {
                        listener: "admin".into(),
                        source,
                    })?;
                let socket = match adopt_admin(&inherited, admin.bind) {
                    Some(socket) => socket,
                    None => listener::bind_exclusive(admin.bind)
                        .and_then(|s| s.into_std())
                        .map_err(bind_error)?,
                };
                let local = socket.local_addr().map_err(bind_error)?;
                // The same socket under another descriptor, for an upgrade to hand over.
                let duplicate = socket.try_clone().ok();
                let socket = tokio::net::TcpListener::from_std(socket).map_err(bind_error)?;
                tracing::info!(address = %local, https = tls.is_some(), "admin listening");
                Some((
                    socket,
                    local,
                    admin.token.as_deref().map(Arc::from),
                    tls,
                    duplicate,
                ))
            }
        };
        let workers = Workers::start(workers).map_err(Error::Workers)?;
        // Span export, when configured: its task runs here, off the workers.
        let spans = config.telemetry.otlp.as_ref().map(|endpoint| {
            let exporter = OtlpExporter::start(
                endpoint,
                &config.telemetry.service_name,
                ExportOptions::default(),
            );
            tracing::info!(
                endpoint = exporter.endpoint(),
                "exporting spans over OTLP/HTTP"
            );
            exporter
        });
        let control = Control::start(config, workers, spans, inherited).await?;
        let upgrader = program.map(|program| {
            let duplicate = admin.as_ref().and_then(|a| a.4.as_ref()?.try_clone().ok());
            Upgrader::new(program, control.clone(), duplicate)
        });
        if let Some(socket) = admin_unix {
            tokio::spawn(crate::admin::serve_unix(socket, control.handle(), None));
        }
        let admin = admin.map(|(socket, local, token, tls, _)| {
            (
                local,
                tokio::spawn(crate::admin::serve(
                    socket,
                    control.handle(),
                    token,
                    tls,
                    upgrader.clone(),
                )),
            )
        });
        Ok(Self {
            control,
            admin,
            upgrader,
        })
    }

    /// Starts the binary this gateway was started from (replaced on disk, typically), hands it
    /// the listening sockets and, once it serves, stops accepting; see [`crate::upgrade`].
    /// Then [`Gateway::handed_over`] completes, and [`Gateway::drain_after_upgrade`] finishes
    /// this process's work. On an error this gateway goes on serving, untouched.
    pub async fn upgrade(&self) -> Result<Upgraded, UpgradeError> {
        match &self.upgrader {
            Some(upgrader) => upgrader.upgrade().await,
            None => Err(UpgradeError::NotUpgradable),
        }
    }

    /// Completes once an upgrade handed the sockets over (never for a gateway that cannot
    /// upgrade), with the new process's id.
    pub fn handed_over(&self) -> impl std::future::Future<Output = u32> + Send + 'static {
        let upgrader = self.upgrader.clone();
        async move {
            match upgrader {
                Some(u) => u.handed_over().await,
                None => std::future::pending().await,
            }
        }
    }

    /// Closes the sockets handed over by the previous process that this configuration does not
    /// use; once that process has stopped accepting on them (after the handover's answer).
    pub fn release_inherited(&self) {
        for name in self.control.release_inherited() {
            tracing::info!(socket = %name, "inherited socket closed: no listener uses it");
        }
    }

    /// After an upgrade handed the sockets over: waits for the requests and WebSocket sessions
    /// in flight to end, at most `limits.upgrade_drain_timeout`; then closes the sessions left
    /// with 1001 and shuts down as [`Gateway::shutdown`] does.
    pub async fn drain_after_upgrade(self) {
        let limits = self.control.plane().snapshot.load().config.limits;
        let plane = self.control.plane().clone();
        tracing::info!(
            active = plane.active(),
            timeout_secs = limits.upgrade_drain_timeout.as_secs(),
            "draining after the upgrade"
        );
        if tokio::time::timeout(limits.upgrade_drain_timeout, plane.drained())
            .await
            .is_err()
        {
            tracing::info!(
                remaining = plane.active(),
                "upgrade drain timeout reached: closing what is left"
            );
        }
        self.shutdown_within(limits.shutdown_timeout).await;
    }

    /// Loads every plugin of `config` with a file as starting would — compiled (or read from the
    /// artifact cache), instantiated, `init` run with its `config`, its kind checked, its samples
    /// answered — without binding a port or serving; for `wasmgate check`. Returns the plugins,
    /// in the configuration's order; the first failure is the error.
    pub async fn check_plugins(config: Config) -> Result<Vec<Arc<PluginSlot>>, Error> {
        let snapshot = Snapshot::build(config, None, 1);
        let cell: SnapshotCell = Arc::new(ArcSwap::from_pointee(snapshot));
        let snapshot = cell.load_full();
        let plugins = PluginRegistry::new(&snapshot.config, Arc::new(SnapshotView(cell)), 1);
        let prepared = plugins.prepare(&snapshot.config).await?;
        Ok(plugins.commit(prepared).to_vec())
    }

    /// Applies a new configuration while traffic flows. Everything that can fail — plugins,
    /// binding new ports, loading certificates — is done before anything changes; on an error
    /// the running configuration keeps serving untouched. Servers new to a pool are then probed
    /// once (bounded by their probe timeout) while it still serves, so that the first request
    /// routed to a healthy one is served (see [`ReloadReport::servers_added`]). Then, at once:
    /// new connections and requests see the new routing; listeners on new ports start
    /// accepting; sockets no listener uses any more stop accepting (their connections finish
    /// the requests in flight); servers that left a pool stop taking new requests and drain (connection draining of their
    /// backend settings: in-flight requests and WebSocket sessions continue up to the draining
    /// timeout, then WebSocket sessions get a Close 1001 and requests are cut; without draining,
    /// their WebSocket sessions are closed with 1001 at once and requests finish). WebSocket
    /// sessions whose server stays are never touched, and servers that stay keep their health.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, Error> {
        self.control.reload(config).await
    }

    /// Applies `config`, revision `revision` of the configuration store it came from (reported
    /// in the status and metrics once applied); see [`Gateway::reload`].
    pub async fn reload_revision(
        &self,
        config: Config,
        revision: i64,
    ) -> Result<ReloadReport, Error> {
        self.control.reload_revision(config, Some(revision)).await
    }

    /// Records in the status a configuration from the store that was refused before it could
    /// be applied (`error` names the field); the running one keeps serving.
    pub fn refused_revision(&self, hash: Option<String>, revision: i64, error: &Error) {
        self.control.refused(hash, Some(revision), error);
    }

    /// The configuration store this gateway follows, when its configuration comes from one;
    /// and [`crate::control::Control::set_revision`] for the revision it started with.
    pub fn config_source(&self) -> &Arc<crate::source::ConfigSource> {
        self.control.source()
    }

    /// The running configuration is revision `revision` of the store it came from.
    pub fn set_revision(&self, revision: i64) {
        self.control.set_revision(revision);
    }

    /// The running configuration and the latest reload attempts, as `/api/status` answers.
    pub fn status(&self) -> crate::control::Status {
        self.control.status()
    }

    /// Reads the configuration file again and applies it; see [`Gateway::reload`].
    pub async fn reload_from_file(&self) -> Result<ReloadReport, Error> {
        self.control.reload_from_file().await
    }

    /// Tells the gateway which file its configuration came from (for SIGHUP and the admin
    /// API's reload) and, with `watch`, reloads whenever the file changes (checked every two
    /// seconds; a change is applied once the file has stopped changing).
    pub fn set_config_file(&self, path: PathBuf, watch: bool) {
        self.control.set_config_file(path, watch);
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Waits until every backend server has had its first probe answered (or failed), at most
    /// `timeout`; returns whether they all have. Until then a server takes no traffic. Start and
    /// reload wait for it themselves (bounded by the probe timeouts); this tells whether every
    /// server answered in time.
    pub async fn wait_for_first_probes(&self, timeout: Duration) -> bool {
        self.control.first_round().await.wait(timeout).await
    }

    /// Reads every HTTPS listener's certificate from disk again (what SIGHUP does besides
    /// reloading the configuration; changed files are also picked up by themselves within a
    /// few seconds). Established connections keep their session; new handshakes get the new
    /// certificates. A certificate that fails to load is reported and its listener keeps the
    /// previous one.
    pub fn reload_certificates(&self) -> Vec<crate::tls::ReloadError> {
        self.control.reload_certificates()
    }

    /// Opens the access log file again (what SIGUSR1 does, after logrotate renamed it);
    /// records queued meanwhile go to the new file.
    pub fn reopen_access_log(&self) {
        self.control.plane().access_log.reopen();
    }

    /// The address a listener is bound to (with the port the OS chose for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control.listener_addr(name)
    }

    /// The configuration's plugins, in configuration order (each slot holds its active
    /// version, which the admin API may replace or unload).
    pub fn plugins(&self) -> Arc<Box<[Arc<PluginSlot>]>> {
        self.control.plane().plugins.current()
    }

    /// Every plugin, with the admin operations (load, replace, unload, shadow, promote) and
    /// [`PluginRegistry::prepare`] / [`PluginRegistry::commit`] for a new configuration.
    pub fn plugin_registry(&self) -> &PluginRegistry {
        &self.control.plane().plugins
    }

    /// The span exporter, when `[telemetry] otlp_endpoint` is set: what the request path
    /// hands finished spans to.
    pub fn spans(&self) -> Option<&Arc<OtlpExporter>> {
        self.control.plane().spans.as_ref()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.control.plane().snapshot.load_full()
    }

    /// Stops accepting, lets in-flight requests finish and WebSocket sessions close with 1001,
    /// bounded by the configured shutdown timeout.
    pub async fn shutdown(self) {
        let timeout = self
            .control
            .plane()
            .snapshot
            .load()
            .config
            .limits
            .shutdown_timeout;
        self.shutdown_within(timeout).await;
    }

    pub async fn shutdown_within(self, timeout: Duration) {
        let plane = self.control.plane().clone();
        plane.stop();
        self.control.stop_accepting().await;
        if let Some((_, task)) = self.admin {
            let _ = task.await;
        }
        if tokio::time::timeout(timeout, plane.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = plane.active(),
                "shutdown timeout reached with work still in flight"
            );
        }
        // The spans of the requests that just finished, sent before the gateway is gone.
        if let Some(spans) = &plane.spans {
            spans.shutdown(SPAN_FLUSH_LIMIT).await;
        }
    }

    /// How many worker threads serve connections.
    pub fn workers(&self) -> usize {
        self.control.workers().count()
    }
}

/// The admin socket handed over by the previous process, when it listens where `bind` says (any
/// port, for port 0); otherwise it is closed and the admin listener bound anew.
fn adopt_admin(inherited: &Inherited, bind: SocketAddr) -> Option<std::net::TcpListener> {
    let socket = inherited.take(Inherited::ADMIN).into_iter().next()?;
    let local = socket.local_addr().ok()?;
    let same = local == bind || (bind.port() == 0 && local.ip() == bind.ip());
    (same && socket.set_nonblocking(true).is_ok()).then_some(socket)
}
