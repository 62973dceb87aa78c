//! Plugins that change while the gateway runs: one long-lived engine, and one slot per plugin
//! name whose version can be replaced, unloaded or shadowed at any time.
//!
//! # Shape
//!
//! - A [`PluginSlot`] holds the plugin's active [`PluginVersion`] in an `ArcSwap`: a request
//!   loads it once (an atomic load and an `Arc` clone, no lock) and keeps it to the end, so a
//!   request already running finishes on the version it started with while new ones get the new
//!   one. A slot may also hold a [`Shadow`] candidate.
//! - The [`PluginRegistry`] owns the engine (created on the first load, sized from
//!   `[plugin_engine] max_instances`, by default twice what the configured plugins may run at
//!   once and at least [`MIN_INSTANCES`]), every slot by name, and the current set: the
//!   configuration's plugins in [`PluginId`] order.
//! - A configuration becomes current in two steps. [`PluginRegistry::prepare`] loads what is new
//!   or changed (by name, kind, content hash, `config`, limits, fail policy and samples) and
//!   reuses the slot of every unchanged entry, with whatever version it holds — an admin-replaced
//!   version survives a reload that leaves its entry alone; nothing live changes. Then
//!   [`PluginRegistry::commit`] installs the prepared versions into their slots and publishes the
//!   new set, which it returns. Between the two a request may still resolve a plugin through an
//!   older configuration: [`PluginRegistry::slot`] checks the name at the id and looks the name
//!   up when it differs, so it always finds the plugin its configuration meant.
//! - Every new version (from the configuration or the admin API) is compiled off the request
//!   path, initialised with its `config`, checked to export what its kind needs, and made to
//!   answer the plugin's samples; only then is it swapped in. Any failure leaves the slot as it
//!   was.
//!
//! # Plugins the configuration does not load
//!
//! A `[[plugins]]` entry without `path` declares a plugin that rules may name but that has no
//! version until the admin API loads one. A plugin loaded through the admin API under a name the
//! configuration does not declare gets a slot of its own; rules can use it once a configuration
//! (reloaded) declares that name without a `path`, which keeps the loaded version. Until a slot
//! has a version — and after an unload — requests that its rules route through it follow its
//! fail policy: `fail_closed` answers 503, `fail_open` routes with the native rules; a probe
//! plugin that is not loaded counts probes as failed (`fail_closed`) or uses the native verdict.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::cache::cache_dir;
use super::shadow::Shadow;
use super::slot::{Declared, PluginSlot};
use super::version::{PluginVersion, VersionSettings, short};
use super::{
    EngineConfig, HostView, PluginEngine, PluginError, PluginRole, PluginSpec, RouterSample,
};
use crate::config::{Config, PluginConfig, PluginId, PluginKind};

/// The smallest engine: room for a few plugins loaded through the admin API besides the
/// configured ones.
pub const MIN_INSTANCES: u32 = 64;
/// The largest component the admin API accepts, uploaded or named by path.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Where a component for the admin API comes from.
#[derive(Debug, Clone)]
pub enum ComponentSource {
    /// Uploaded bytes.
    Bytes(Arc<[u8]>),
    /// A file on the gateway's host.
    Path(PathBuf),
}

/// An admin request for a new version.
#[derive(Debug, Clone)]
pub struct VersionRequest {
    pub component: ComponentSource,
    /// Required for a name the configuration does not declare; checked against the slot
    /// otherwise.
    pub kind: Option<PluginKind>,
    /// Replaces the configuration's `config` for this version.
    pub config: Option<String>,
}

/// Why a configuration's plugins could not be prepared. Each text is one line naming the plugin
/// (and carries no `source`, so that a chain of causes does not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Load(#[from] PluginError),
    #[error("plugin {plugin:?}: cannot read {}: {error}", path.display())]
    File {
        plugin: String,
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// Why an admin change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no plugin named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// The component was refused: not a component, wrong kind, `init` failed, a sample failed.
    #[error("{0}")]
    Refused(#[from] PluginError),
}

/// Configuration entries loaded by [`PluginRegistry::prepare`], ready to be made current.
pub struct PreparedPlugins {
    entries: Vec<PreparedEntry>,
}

struct PreparedEntry {
    slot: Arc<PluginSlot>,
    /// A new version to install at commit; `None` keeps the slot's.
    version: Option<Arc<PluginVersion>>,
    declared: Declared,
}

impl PreparedPlugins {
    /// How many entries got a new version (the others reuse their slot as it is).
    pub fn loaded(&self) -> usize {
        self.entries.iter().filter(|e| e.version.is_some()).count()
    }

    /// The set as [`commit`](PluginRegistry::commit) will make it, indexed by the new
    /// configuration's [`PluginId`], without changing anything live: an entry's own slot, or —
    /// for an entry whose new version is not installed yet — a stand-in slot serving that
    /// version. For probing new servers with their probe plugins before the commit.
    pub fn preview(&self) -> Vec<Arc<PluginSlot>> {
        self.entries
            .iter()
            .map(|e| match &e.version {
                None => e.slot.clone(),
                Some(version) => {
                    let stand_in =
                        PluginSlot::new(&e.slot.name, e.slot.kind, e.declared.settings.clone());
                    stand_in.active.store(Some(version.clone()));
                    stand_in
                }
            })
            .collect()
    }
}

/// Every plugin of the gateway (see the module docs).
pub struct PluginRegistry {
    host: Arc<dyn HostView>,
    engine_config: EngineConfig,
    engine: Mutex<Option<PluginEngine>>,
    /// The configuration's plugins, in [`PluginId`] order.
    current: ArcSwap<Box<[Arc<PluginSlot>]>>,
    /// Every slot by name: the configuration's and those only the admin API loaded.
    slots: Mutex<HashMap<Arc<str>, Arc<PluginSlot>>>,
    /// One admin change at a time (each may compile for seconds).
    admin: tokio::sync::Mutex<()>,
}

impl PluginRegistry {
    /// A registry for a gateway starting with `config`: the engine is sized from it (and made
    /// when the first plugin loads). `host` answers the plugins' `host` interface; `workers` is
    /// the number of threads that call plugins on the request path.
    pub fn new(config: &Config, host: Arc<dyn HostView>, workers: usize) -> Self {
        let instances = config.plugin_max_instances.unwrap_or_else(|| {
            let configured: u32 = config
                .plugins
                .iter()
                .map(|p| p.limits.max_concurrency as u32 + 1)
                .sum();
            // Twice: a replacement or a shadow candidate runs beside each active version.
            (configured * 2).max(MIN_INSTANCES)
        });
        let cache = cache_dir(&config.plugin_cache, |name| std::env::var_os(name));
        PluginRegistry {
            host,
            engine_config: EngineConfig {
                total_component_instances: instances,
                // A Python instance has 14 core instances.
                total_core_instances: instances * 16,
                total_memories: instances * 2,
                total_tables: instances * 4,
                total_stacks: instances,
                cache_dir: cache.dir,
                cache_dir_optional: !cache.required,
                workers,
                ..EngineConfig::default()
            },
            engine: Mutex::new(None),
            current: ArcSwap::from_pointee(Box::new([])),
            slots: Mutex::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
        }
    }

    /// The engine, made on first use.
    pub fn engine(&self) -> Result<PluginEngine, PluginError> {
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &*engine {
            return Ok(e.clone());
        }
        let e = PluginEngine::new(self.engine_config.clone())?;
        *engine = Some(e.clone());
        Ok(e)
    }

    /// The plugin `config` means by `id`, as of the current set (request path: no lock).
    pub fn slot(&self, config: &Config, id: PluginId) -> Option<Arc<PluginSlot>> {
        let name = &config.plugins.get(id.0)?.name;
        let current = self.current.load();
        match current.get(id.0) {
            Some(s) if *s.name == **name => Some(s.clone()),
            _ => current.iter().find(|s| *s.name == **name).cloned(),
        }
    }

    /// The current set, in [`PluginId`] order.
    pub fn current(&self) -> Arc<Box<[Arc<PluginSlot>]>> {
        self.current.load_full()
    }

    /// Every slot: the configuration's in order, then those only the admin API loaded, by name.
    pub fn all(&self) -> Vec<Arc<PluginSlot>> {
        let current = self.current();
        let mut all: Vec<Arc<PluginSlot>> = current.iter().cloned().collect();
        let mut extra: Vec<Arc<PluginSlot>> = self
            .lock_slots()
            .values()
            .filter(|s| !current.iter().any(|c| Arc::ptr_eq(c, s)))
            .cloned()
            .collect();
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        all.extend(extra);
        all
    }

    /// A slot by name, configured or not.
    pub fn by_name(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.lock_slots().get(name).cloned()
    }

    fn lock_slots(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<PluginSlot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the plugins of `config` that are new or changed, in order (the first failure is
    /// the error, naming the plugin), and reuses the slots of the others. Changes nothing live:
    /// [`commit`](Self::commit) does.
    pub async fn prepare(&self, config: &Config) -> Result<PreparedPlugins, PrepareError> {
        let mut entries = Vec::with_capacity(config.plugins.len());
        for p in &config.plugins {
            let wasm = match &p.path {
                None => None,
                Some(path) => Some(read_component(p, path).await?),
            };
            let declared = Declared {
                kind: p.kind,
                content_hash: wasm.as_ref().map(|w| content_hash(w)),
                settings: VersionSettings {
                    config: p.config.clone(),
                    limits: p.limits.clone(),
                    fail_policy: p.fail_policy,
                    samples: p.samples.clone().into(),
                    request_headers: p.request_headers.clone().map(Into::into),
                },
            };
            let existing = self.by_name(&p.name).filter(|s| s.kind == p.kind);
            let entry = match (existing, wasm) {
                // Unchanged: the slot stays as it is, with whatever version it serves.
                (Some(slot), _) if slot.lock().declared.as_ref() == Some(&declared) => {
                    PreparedEntry {
                        slot,
                        version: None,
                        declared,
                    }
                }
                // Declared without a component: an admin-loaded version is kept.
                (existing, None) => PreparedEntry {
                    slot: existing.unwrap_or_else(|| {
                        PluginSlot::new(&p.name, p.kind, declared.settings.clone())
                    }),
                    version: None,
                    declared,
                },
                (existing, Some(wasm)) => {
                    tracing::info!(
                        plugin = %p.name,
                        kind = p.kind.as_str(),
                        bytes = wasm.len(),
                        "loading plugin (a large component takes seconds to compile)"
                    );
                    let origin = p.path.as_ref().map(|f| f.display().to_string());
                    let version = self
                        .build_version(
                            &p.name,
                            p.kind,
                            wasm.into(),
                            &declared.settings,
                            origin.unwrap_or_default(),
                        )
                        .await?;
                    PreparedEntry {
                        slot: existing.unwrap_or_else(|| {
                            PluginSlot::new(&p.name, p.kind, declared.settings.clone())
                        }),
                        version: Some(version),
                        declared,
                    }
                }
            };
            entries.push(entry);
        }
        Ok(PreparedPlugins { entries })
    }

    /// Makes `prepared` current: installs its new versions into their slots (atomically each;
    /// requests already running keep the version they hold), forgets configured plugins the new
    /// set no longer has (plugins only the admin API loaded stay), and publishes the set. Returns
    /// it, indexed by the new configuration's [`PluginId`].
    pub fn commit(&self, prepared: PreparedPlugins) -> Arc<Box<[Arc<PluginSlot>]>> {
        let mut slots = self.lock_slots();
        let set: Box<[Arc<PluginSlot>]> = prepared
            .entries
            .into_iter()
            .map(|e| {
                if let Some(version) = e.version {
                    e.slot.install(version);
                }
                e.slot.set_declared(Some(e.declared));
                e.slot
            })
            .collect();
        slots.retain(|_, s| !s.is_declared() || set.iter().any(|c| Arc::ptr_eq(c, s)));
        // A configured plugin dropped while an admin-only one of its name lived: the new set wins.
        for s in set.iter() {
            slots.insert(s.name.clone(), s.clone());
        }
        let set = Arc::new(set);
        self.current.store(set.clone());
        set
    }

    /// Loads a plugin that has no version: a name the configuration declares without a
    /// component (or that was unloaded), or a new name (`kind` required).
    pub async fn load(
        &self,
        name: &str,
        request: VersionRequest,
    ) -> Result<Arc<PluginSlot>, ChangeError> {
        let _admin = self.admin.lock().await;
        let existing = self.by_name(name);
        if existing.as_ref().is_some_and(|s| s.active().is_some()) {
            return Err(ChangeError::Conflict(format!(
                "plugin {name:?} is loaded; replace it instead"
            )));
        }
        let (kind, settings) = match &existing {
            Some(slot) => {
                check_kind(slot, request.kind)?;
                (slot.kind, slot.lock().settings.clone())
            }
            None => {
                check_name(name)?;
                let kind = request.kind.ok_or_else(|| {
                    ChangeError::BadRequest(format!(
                        "the configuration does not declare plugin {name:?}: give its kind (router or probe)"
                    ))
                })?;
                (kind, VersionSettings::default())
            }
        };
        let version = self.admin_version(name, kind, &settings, &request).await?;
        let slot = match existing {
            Some(slot) => slot,
            None => {
                let slot = PluginSlot::new(name, kind, settings);
                self.lock_slots().insert(slot.name.clone(), slot.clone());
                slot
            }
        };
        slot.install(version);
        Ok(slot)
    }

    /// Replaces a loaded plugin's version once the new one is compiled, initialised and has
    /// passed the samples.
    pub async fn replace(
        &self,
        name: &str,
        request: VersionRequest,
    ) -> Result<Arc<PluginSlot>, ChangeError> {
        let _admin = self.admin.lock().await;
        let slot = self.loaded(name)?;
        check_kind(&slot, request.kind)?;
        let settings = slot.lock().settings.clone();
        let version = self
            .admin_version(name, slot.kind, &settings, &request)
            .await?;
        slot.install(version);
        Ok(slot)
    }

    /// Unloads a plugin: its rules follow its fail policy until a version is loaded again. A
    /// plugin only the admin API loaded is forgotten.
    pub async fn unload(&self, name: &str) -> Result<Arc<PluginSlot>, ChangeError> {
        let _admin = self.admin.lock().await;
        let slot = self.loaded(name)?;
        slot.shadow.store(None);
        if let Some(old) = slot.active.swap(None) {
            tracing::warn!(
                target: "wasmgate::plugin",
                plugin = name,
                version = short(&old.content_hash),
                fail_policy = ?slot.fail_policy(),
                "plugin unloaded; its rules follow its fail policy"
            );
        }
        if !slot.is_declared() {
            self.lock_slots().remove(name);
        }
        Ok(slot)
    }

    /// Runs a candidate beside a router's active version on `sample` (0 < sample ≤ 1) of its
    /// requests, replacing any previous candidate.
    pub async fn shadow(
        &self,
        name: &str,
        request: VersionRequest,
        sample: f64,
    ) -> Result<Arc<PluginSlot>, ChangeError> {
        if !(sample > 0.0 && sample <= 1.0) {
            return Err(ChangeError::BadRequest(format!(
                "sample {sample} is out of range; it must be above 0 and at most 1"
            )));
        }
        let _admin = self.admin.lock().await;
        let slot = self.loaded(name)?;
        if slot.kind != PluginKind::Router {
            return Err(ChangeError::BadRequest(format!(
                "plugin {name:?} is a {} plugin; shadow mode compares routing decisions",
                slot.kind.as_str()
            )));
        }
        check_kind(&slot, request.kind)?;
        let settings = slot.lock().settings.clone();
        let version = self
            .admin_version(name, slot.kind, &settings, &request)
            .await?;
        tracing::info!(
            target: "wasmgate::plugin",
            plugin = name,
            candidate = short(&version.content_hash),
            sample,
            "shadow candidate running beside the active version"
        );
        slot.shadow
            .store(Some(Arc::new(Shadow::new(version, sample))));
        Ok(slot)
    }

    /// Stops a shadow candidate.
    pub async fn stop_shadow(&self, name: &str) -> Result<Arc<PluginSlot>, ChangeError> {
        let _admin = self.admin.lock().await;
        let slot = self
            .by_name(name)
            .ok_or_else(|| ChangeError::NotFound(name.into()))?;
        if slot.shadow.swap(None).is_none() {
            return Err(ChangeError::Conflict(format!(
                "plugin {name:?} has no shadow candidate"
            )));
        }
        Ok(slot)
    }

    /// Puts the shadow candidate in service.
    pub async fn promote(&self, name: &str) -> Result<Arc<PluginSlot>, ChangeError> {
        let _admin = self.admin.lock().await;
        let slot = self.loaded(name)?;
        let Some(shadow) = slot.shadow.swap(None) else {
            return Err(ChangeError::Conflict(format!(
                "plugin {name:?} has no shadow candidate to promote"
            )));
        };
        slot.install(shadow.candidate().clone());
        Ok(slot)
    }

    fn loaded(&self, name: &str) -> Result<Arc<PluginSlot>, ChangeError> {
        let slot = self
            .by_name(name)
            .ok_or_else(|| ChangeError::NotFound(name.into()))?;
        if slot.active().is_none() {
            return Err(ChangeError::Conflict(format!(
                "plugin {name:?} is not loaded; load it instead"
            )));
        }
        Ok(slot)
    }

    async fn admin_version(
        &self,
        name: &str,
        kind: PluginKind,
        settings: &VersionSettings,
        request: &VersionRequest,
    ) -> Result<Arc<PluginVersion>, ChangeError> {
        let (wasm, origin) = match &request.component {
            ComponentSource::Bytes(b) => (b.clone(), "upload".to_owned()),
            ComponentSource::Path(path) => {
                let wasm = read_limited(path).await.map_err(|e| {
                    ChangeError::BadRequest(format!("cannot read {}: {e}", path.display()))
                })?;
                (wasm.into(), path.display().to_string())
            }
        };
        let mut settings = settings.clone();
        if let Some(config) = &request.config {
            settings.config = config.clone();
        }
        tracing::info!(
            target: "wasmgate::plugin",
            plugin = name,
            bytes = wasm.len(),
            origin = %origin,
            "loading a new version (a large component takes seconds to compile)"
        );
        Ok(self
            .build_version(name, kind, wasm, &settings, origin)
            .await?)
    }

    /// Compiles, initialises, checks the kind and the samples: a version ready to serve.
    async fn build_version(
        &self,
        name: &str,
        kind: PluginKind,
        wasm: Arc<[u8]>,
        settings: &VersionSettings,
        origin: String,
    ) -> Result<Arc<PluginVersion>, PluginError> {
        let engine = self.engine()?;
        let content_hash = content_hash(&wasm);
        let mut spec = PluginSpec::new(name, wasm, settings.config.clone());
        spec.origin = Some(origin.clone());
        spec.limits = settings.limits.clone();
        spec.fail_policy = settings.fail_policy;
        spec.request_headers = settings.request_headers.clone();
        spec.role = Some(match kind {
            PluginKind::Router => PluginRole::Router,
            PluginKind::Probe => PluginRole::ProbeEvaluator,
            PluginKind::MessageFilter => PluginRole::MessageFilter,
        });
        let (plugin, report) = engine.load(spec, self.host.clone()).await?;
        for (i, sample) in settings.samples.iter().enumerate() {
            let mismatch = |reason: String| PluginError::SampleMismatch {
                plugin: name.into(),
                sample: i,
                reason,
            };
            let decision = plugin
                .route(&sample.request_head())
                .await
                .map_err(|e| mismatch(e.to_string()))?;
            sample.check(&decision).map_err(mismatch)?;
        }
        Ok(Arc::new(PluginVersion {
            plugin,
            content_hash,
            loaded_at: SystemTime::now(),
            origin,
            config: settings.config.clone(),
            report,
        }))
    }
}

fn check_kind(slot: &PluginSlot, kind: Option<PluginKind>) -> Result<(), ChangeError> {
    match kind {
        Some(k) if k != slot.kind => Err(ChangeError::BadRequest(format!(
            "plugin {:?} is a {} plugin, not a {} plugin",
            slot.name,
            slot.kind.as_str(),
            k.as_str()
        ))),
        _ => Ok(()),
    }
}

/// Names the admin API may create: what a configuration could name and a URL carries as is.
fn check_name(name: &str) -> Result<(), ChangeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ChangeError::BadRequest(format!(
            "plugin name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

async fn read_component(p: &PluginConfig, path: &std::path::Path) -> Result<Vec<u8>, PrepareError> {
    read_file(path.to_owned(), None)
        .await
        .map_err(|error| PrepareError::File {
            plugin: p.name.clone(),
            path: path.to_owned(),
            error,
        })
}

/// Reads a file named through the admin API, refusing one over [`MAX_COMPONENT_BYTES`].
async fn read_limited(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    read_file(path.to_owned(), Some(MAX_COMPONENT_BYTES as u64)).await
}

/// Reads a file on a blocking thread (a Python component is 18 MB).
async fn read_file(path: PathBuf, limit: Option<u64>) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        if let Some(limit) = limit {
            let len = std::fs::metadata(&path)?.len();
            if len > limit {
                return Err(std::io::Error::other(format!(
                    "{len} bytes is over the {limit}-byte component limit"
                )));
            }
        }
        std::fs::read(&path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// SHA-256, hex.
pub fn content_hash(wasm: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write as _;
    sha2::Sha256::digest(wasm)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
