//! A gateway that follows a configuration kept in etcd (`wasmgate run --config etcd://…`).
//!
//! It reads `PREFIX/config`, starts on it, and watches the key from the revision it read. Each
//! change is parsed and validated, then applied through the same reload as a file's (everything
//! that can fail first; a refused configuration changes nothing and is reported in the status
//! with its revision). Revisions are applied one at a time, in the order the store made them:
//! a revision at or below the running one is never applied (so catching up after an outage
//! reloads nothing when nothing changed).
//!
//! When the store cannot be reached, the last applied configuration keeps serving, the status
//! and metrics say so, and the watch is resumed with backoff from the last revision seen. Each
//! applied configuration is also written to a local cache, so a gateway started while the
//! store is unreachable starts from the last one it applied (and says so).
//!
//! Each instance registers itself under `PREFIX/instances/ID` with a lease, so that `wasmgate
//! fleet status` can list the fleet and show which instances lag.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmgate::config::ConfigError;
use wasmgate::workers::WorkerOptions;
use wasmgate::{Config, Gateway};

use super::store::{self, StoreArgs, StoreUrl, StoredConfig};

/// The first wait after the store failed; doubled on each failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The lease of an instance's record: it disappears this long after the instance stops
/// renewing it (stopped, crashed, or cut off from the store).
const LEASE_TTL: i64 = 10;

/// What `run` needs to follow a store.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub url: StoreUrl,
    pub store: StoreArgs,
    /// Where the last applied configuration is kept; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// The name this instance registers under (default: the host's name and the instance's
    /// address).
    pub instance_id: Option<String>,
    /// Binds every listener and the admin listener at this address instead of the
    /// configuration's: the instance's own address, in a fleet that shares one configuration.
    pub bind_address: Option<IpAddr>,
    pub workers: WorkerOptions,
}

/// `run`'s options for a configuration kept in etcd.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// With --config etcd://…: where the last configuration applied from the store is kept,
    /// for a start while the store is unreachable (default: $XDG_CACHE_HOME/wasmgate/config or
    /// ~/.cache/wasmgate/config; `off`: keep none).
    #[arg(long, value_name = "DIR")]
    pub config_cache: Option<PathBuf>,
    /// With --config etcd://…: the name this instance registers under in the store (default:
    /// the host's name and the instance's address).
    #[arg(long, value_name = "NAME")]
    pub instance_id: Option<String>,
    /// Bind every listener and the admin listener at this address instead of the
    /// configuration's: the instance's own address, in a fleet sharing one configuration.
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<IpAddr>,
}

impl RunArgs {
    /// The options to follow the store at `url` with.
    pub fn follow(&self, url: StoreUrl, workers: WorkerOptions) -> FollowOptions {
        let cache_dir = match &self.config_cache {
            Some(dir) if dir.as_os_str() == "off" => None,
            Some(dir) => Some(dir.clone()),
            None => default_cache_dir(),
        };
        FollowOptions {
            url,
            store: self.store.clone(),
            cache_dir,
            instance_id: self.instance_id.clone(),
            bind_address: self.bind_address,
            workers,
        }
    }
}

/// The cache folder when none is given: `$XDG_CACHE_HOME/wasmgate/config` or
/// `$HOME/.cache/wasmgate/config`, beside the plugin cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmgate").join("config"))
}

/// The revision an instance runs, as it registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Running {
    revision: i64,
    hash: String,
    /// The newest revision in the store was refused (named with its error).
    refused: Option<(i64, String)>,
    from_cache: bool,
}

/// A running gateway following a store; [`FleetMember::shutdown`] stops both.
pub struct FleetMember {
    gateway: Arc<Gateway>,
    id: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl FleetMember {
    /// Reads the configuration from the store (or, when it is unreachable, from the cache),
    /// starts a gateway on it and follows the store.
    pub async fn start(options: FollowOptions) -> anyhow::Result<Self> {
        let url = options.url.clone();
        let mut connector = Connector::new(&url, &options.store);
        let cache = options
            .cache_dir
            .as_deref()
            .map(|dir| ConfigCache::new(dir, &url));
        let read = async {
            let client = connector.get().await?;
            store::read_config(&client, &url, None).await
        };
        let (stored, from_cache) = match read.await {
            Ok(Some(stored)) => (stored, false),
            Ok(None) => anyhow::bail!(
                "{url} holds no configuration at {}: push one with `wasmgate config push FILE --to {url}`",
                url.config_key()
            ),
            Err(e) => {
                let cached = cache.as_ref().and_then(|c| c.read());
                match cached {
                    Some(stored) => {
                        tracing::warn!(error = %format!("{e:#}"), revision = stored.revision, "configuration store unreachable; starting from the cached copy of the last applied configuration");
                        (stored, true)
                    }
                    None => {
                        let where_ = match &cache {
                            Some(c) => format!("no cached copy at {}", c.path.display()),
                            None => "no cache (--config-cache off)".to_owned(),
                        };
                        return Err(e.context(format!(
                            "the configuration store is unreachable and there is {where_}"
                        )));
                    }
                }
            }
        };
        let config = Config::from_toml(&stored.text)
            .and_then(|c| localize(c, options.bind_address))
            .with_context(|| format!("revision {} of {}", stored.revision, url.config_key()))?;
        let hash = config.source_hash.as_deref().unwrap_or_default().to_owned();
        let gateway = Arc::new(Gateway::start_with(config, options.workers).await?);
        gateway
            .config_source()
            .follow(url.to_string(), url.config_key(), from_cache);
        gateway.config_source().seen(stored.revision);
        gateway.set_revision(stored.revision);
        if !from_cache && let Some(cache) = &cache {
            cache.write(&stored);
        }
        tracing::info!(store = %url, revision = stored.revision, from_cache, "following the configuration store");

        let id = options
            .instance_id
            .clone()
            .unwrap_or_else(|| default_id(&gateway));
        let (running_tx, running_rx) = watch::channel(Running {
            revision: stored.revision,
            hash,
            refused: None,
            from_cache,
        });
        let (stop, stopped) = watch::channel(false);
        let follower = Follower {
            connector,
            url: url.clone(),
            gateway: gateway.clone(),
            cache,
            bind_address: options.bind_address,
            applied: stored.revision,
            // From the cache, every change after the cached revision is still to be seen.
            next: if from_cache {
                stored.revision + 1
            } else {
                stored.read_at + 1
            },
            running: running_tx,
        };
        let registration = Registration {
            connector: Connector::new(&url, &options.store),
            key: format!("{}{id}", url.instances_prefix()),
            id: id.clone(),
            address: instance_address(&gateway),
            running: running_rx,
        };
        let tasks = vec![
            tokio::spawn(follower.run(stopped.clone())),
            tokio::spawn(registration.run(stopped)),
        ];
        Ok(Self {
            gateway,
            id,
            stop,
            tasks,
        })
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The name this instance registered under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops following the store, removes the instance's record, and shuts the gateway down
    /// (finishing the requests in flight).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // The registration revokes its lease on the way out, which removes the record.
        for task in self.tasks {
            let _ = task.await;
        }
        match Arc::try_unwrap(self.gateway) {
            Ok(gateway) => gateway.shutdown().await,
            Err(_) => tracing::error!("the gateway is still shared; not shut down"),
        }
    }
}

/// The configuration as this instance runs it: every listener and the admin listener bound at
/// the instance's own address, when it has one.
fn localize(mut config: Config, bind_address: Option<IpAddr>) -> Result<Config, ConfigError> {
    let Some(ip) = bind_address else {
        return Ok(config);
    };
    for listener in &mut config.listeners {
        listener.bind_address = ip;
    }
    if let Some(admin) = &mut config.admin {
        if !ip.is_loopback() && admin.token.is_none() {
            return Err(ConfigError {
                path: "admin.token".into(),
                reason: format!(
                    "required: --bind-address {ip} makes the admin listener reachable beyond this host"
                ),
            });
        }
        admin.bind.set_ip(ip);
    }
    Ok(config)
}

fn default_id(gateway: &Gateway) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    match instance_address(gateway) {
        Some(addr) => format!("{host}-{addr}"),
        None => format!("{host}-{}", std::process::id()),
    }
}

/// Where the instance is reached: its admin listener, else its first listener.
fn instance_address(gateway: &Gateway) -> Option<SocketAddr> {
    gateway.admin_addr().or_else(|| {
        let snapshot = gateway.snapshot();
        let first = snapshot.config.listeners.first()?;
        gateway.listener_addr(&first.name)
    })
}

/// A client of the store, made on first use and kept: it reconnects to whichever member
/// answers by itself; only a failed first connection (the store down at start) is retried.
struct Connector {
    url: StoreUrl,
    args: StoreArgs,
    client: Option<Client>,
}

impl Connector {
    fn new(url: &StoreUrl, args: &StoreArgs) -> Self {
        Self {
            url: url.clone(),
            args: args.clone(),
            client: None,
        }
    }

    async fn get(&mut self) -> anyhow::Result<Client> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = store::connect(&self.url, &self.args).await?;
        self.client = Some(client.clone());
        Ok(client)
    }
}

/// Completes once the instance stops (without holding the channel's lock across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Why a watch ended without failing.
enum WatchEnd {
    /// The instance stops.
    Stopped,
    /// Caught up past a compaction: watch again from the revision after the one read.
    Restart,
}

/// The watch of `PREFIX/config` and the reloads it triggers.
struct Follower {
    connector: Connector,
    url: StoreUrl,
    gateway: Arc<Gateway>,
    cache: Option<ConfigCache>,
    bind_address: Option<IpAddr>,
    /// The store revision of the running configuration.
    applied: i64,
    /// The first store revision not seen yet: where a new watch starts.
    next: i64,
    running: watch::Sender<Running>,
}

impl Follower {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.watch(&mut stop).await {
                Ok(WatchEnd::Stopped) => return,
                Ok(WatchEnd::Restart) => continue,
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::warn!(error = %reason, retry_in = ?backoff, "configuration store unreachable; the running configuration keeps serving");
                    self.gateway.config_source().reachable(Err(reason));
                }
            }
            // Jitter spreads a fleet's reconnections after an outage.
            let wait = backoff.mul_f64(0.5 + fastrand::f64());
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if self
                .gateway
                .config_source()
                .state()
                .is_some_and(|s| s.reachable)
            {
                backoff = BACKOFF_MIN;
            }
        }
    }

    /// Watches from `self.next` until the watch fails (`Err`), the instance stops, or the
    /// watch must start again from a later revision.
    async fn watch(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<WatchEnd> {
        let options = WatchOptions::new()
            .with_start_revision(self.next)
            .with_progress_notify();
        let client = self.connector.get().await?;
        let mut watch_client = client.watch_client();
        let key = self.url.config_key();
        let mut stream = tokio::select! {
            _ = stopped(stop) => return Ok(WatchEnd::Stopped),
            r = tokio::time::timeout(store::REQUEST_TIMEOUT, watch_client.watch(key.clone(), Some(options))) => {
                r.map_err(|_| anyhow::anyhow!("no answer within {:?}", store::REQUEST_TIMEOUT))?
                    .context("cannot watch the configuration")?
            }
        };
        loop {
            let message = tokio::select! {
                _ = stopped(stop) => return Ok(WatchEnd::Stopped),
                m = stream.message() => m.context("the watch failed")?,
            };
            let Some(response) = message else {
                anyhow::bail!("the store closed the watch");
            };
            if response.compact_revision() > 0 {
                // The revisions after ours were compacted away: read the newest instead.
                tracing::info!(
                    compacted = response.compact_revision(),
                    "watch start compacted; reading the newest configuration"
                );
                self.catch_up().await?;
                return Ok(WatchEnd::Restart);
            }
            if response.canceled() {
                anyhow::bail!(
                    "the store cancelled the watch: {}",
                    response.cancel_reason()
                );
            }
            let source = self.gateway.config_source();
            source.reachable(Ok(()));
            if source.state().is_some_and(|s| s.from_cache) {
                // The store answers: anything newer than the cached revision is delivered
                // next, so the running configuration is the store's from here on.
                source.left_cache();
                self.running.send_modify(|r| r.from_cache = false);
            }
            // Only the newest write of a batch matters: the ones before it would be replaced
            // at once (the order holds, the intermediate reloads are skipped).
            let newest = response
                .events()
                .iter()
                .rev()
                .find_map(|e| (e.event_type() == EventType::Put).then(|| e.kv()).flatten());
            if let Some(kv) = newest {
                self.next = self.next.max(kv.mod_revision() + 1);
                let stored = StoredConfig {
                    text: String::from_utf8_lossy(kv.value()).into_owned(),
                    revision: kv.mod_revision(),
                    version: kv.version(),
                    read_at: kv.mod_revision(),
                };
                self.apply(stored).await;
            } else if response
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                tracing::warn!(key = %key, "the configuration was deleted from the store; the running one keeps serving");
            }
            if let Some(header) = response.header() {
                self.next = self.next.max(header.revision() + 1);
            }
        }
    }

    /// Reads the newest configuration and applies it when it is newer than the running one.
    async fn catch_up(&mut self) -> anyhow::Result<()> {
        let client = self.connector.get().await?;
        if let Some(stored) = store::read_config(&client, &self.url, None).await? {
            self.next = self.next.max(stored.read_at + 1);
            self.apply(stored).await;
        }
        Ok(())
    }

    /// Validates and applies `stored` unless the running revision is as new; a refusal is
    /// recorded in the status with the revision and the error, and changes nothing.
    async fn apply(&mut self, stored: StoredConfig) {
        if stored.revision <= self.applied {
            return;
        }
        let source = self.gateway.config_source();
        source.seen(stored.revision);
        let revision = stored.revision;
        let hash = wasmgate::config::source_hash(&stored.text);
        let config = Config::from_toml(&stored.text)
            .and_then(|c| localize(c, self.bind_address))
            .map_err(wasmgate::Error::from);
        let result = match config {
            Ok(config) => self
                .gateway
                .reload_revision(config, revision)
                .await
                .map(|_| ()),
            Err(e) => {
                self.gateway
                    .refused_revision(Some(hash.to_string()), revision, &e);
                Err(e)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(revision, "configuration revision applied");
                self.applied = revision;
                source.left_cache();
                if let Some(cache) = &self.cache {
                    cache.write(&stored);
                }
                self.running.send_replace(Running {
                    revision,
                    hash: hash.to_string(),
                    refused: None,
                    from_cache: false,
                });
            }
            Err(e) => {
                tracing::error!(revision, error = %e, "configuration revision refused; the running one keeps serving");
                self.running
                    .send_modify(|r| r.refused = Some((revision, e.to_string())));
            }
        }
    }
}

/// An instance's record under `PREFIX/instances/`, as `fleet status` reads it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: String,
    /// Where the instance is reached (its admin listener, else its first listener).
    pub address: Option<String>,
    pub version: String,
    /// The store revision of the configuration it runs.
    pub revision: i64,
    pub hash: String,
    /// False when the newest revision it saw was refused (see `refused`).
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// It serves the cached copy of its configuration (the store was unreachable at start).
    #[serde(default)]
    pub from_cache: bool,
}

/// The instance's record under `PREFIX/instances/ID`, bound to a lease renewed while the
/// instance runs and reaches the store; rewritten whenever the running revision changes.
struct Registration {
    connector: Connector,
    key: String,
    id: String,
    address: Option<SocketAddr>,
    running: watch::Receiver<Running>,
}

impl Registration {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.hold(&mut stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "instance record not held; retrying")
                }
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn record(&self) -> String {
        let running = self.running.borrow();
        let record = InstanceRecord {
            id: self.id.clone(),
            address: self.address.map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision: running.revision,
            hash: running.hash.clone(),
            healthy: running.refused.is_none(),
            refused: running
                .refused
                .as_ref()
                .map(|(rev, e)| format!("revision {rev}: {e}")),
            from_cache: running.from_cache,
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// Grants a lease, writes the record and keeps both alive until the instance stops (`Ok`)
    /// or the store fails (`Err`).
    async fn hold(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let timeout = store::REQUEST_TIMEOUT;
        let client = self.connector.get().await?;
        let mut lease = client.lease_client();
        let granted = tokio::time::timeout(timeout, lease.grant(LEASE_TTL, None))
            .await
            .context("lease grant timed out")??;
        let id = granted.id();
        let (mut keeper, mut answers) = tokio::time::timeout(timeout, lease.keep_alive(id))
            .await
            .context("lease keep-alive timed out")??;
        let mut kv = client.kv_client();
        let mut put = async |record: String| -> anyhow::Result<()> {
            tokio::time::timeout(
                timeout,
                kv.put(
                    self.key.clone(),
                    record,
                    Some(PutOptions::new().with_lease(id)),
                ),
            )
            .await
            .context("instance record write timed out")??;
            Ok(())
        };
        put(self.record()).await?;
        let mut tick = tokio::time::interval(Duration::from_secs(LEASE_TTL as u64 / 3));
        loop {
            tokio::select! {
                _ = stopped(stop) => break,
                _ = tick.tick() => keeper.keep_alive().await?,
                answer = answers.message() => {
                    match answer? {
                        Some(a) if a.ttl() > 0 => {}
                        _ => anyhow::bail!("lease {id} expired"),
                    }
                }
                changed = self.running.changed() => {
                    if changed.is_err() {
                        // The follower ended: the instance is stopping.
                        break;
                    }
                    let record = self.record();
                    put(record).await?;
                }
            }
        }
        // Revoking the lease removes the record now rather than when the lease runs out.
        let _ = tokio::time::timeout(timeout, lease.revoke(id)).await;
        Ok(())
    }
}

/// The last applied configuration, kept on disk for a start while the store is unreachable:
/// one JSON file per store and prefix.
#[derive(Debug)]
struct ConfigCache {
    path: PathBuf,
    store: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedConfig {
    store: String,
    revision: i64,
    version: i64,
    text: String,
}

impl ConfigCache {
    fn new(dir: &Path, url: &StoreUrl) -> Self {
        let name = wasmgate::config::source_hash(&url.to_string());
        Self {
            path: dir.join(format!("etcd-{}.json", &name[..16])),
            store: url.to_string(),
        }
    }

    fn read(&self) -> Option<StoredConfig> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let cached: CachedConfig = serde_json::from_str(&text)
            .inspect_err(|e| tracing::warn!(path = %self.path.display(), error = %e, "cached configuration unreadable"))
            .ok()?;
        Some(StoredConfig {
            text: cached.text,
            revision: cached.revision,
            version: cached.version,
            read_at: cached.revision,
        })
    }

    /// Writes `stored` (to a temporary file renamed over the previous one, so a crash never
    /// leaves half a copy). A failure is logged: the cache is a convenience.
    fn write(&self, stored: &StoredConfig) {
        let cached = CachedConfig {
            store: self.store.clone(),
            revision: stored.revision,
            version: stored.version,
            text: stored.text.clone(),
        };
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&cached).unwrap_or_default())?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the configuration cache");
        }
    }
}
