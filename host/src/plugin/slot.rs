//! One plugin name: its active version, an optional shadow candidate, and what the
//! configuration says about it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;

use super::shadow::Shadow;
use super::version::{PluginVersion, VersionSettings, short};
use super::{
    BreakerState, Decision, PluginError, PluginStats, ProbeRequest, ProbeResponse, RequestHead,
    Verdict,
};
use crate::config::{FailPolicy, PluginKind};
use crate::metrics::filters::FilterMetrics;

/// A configuration entry as prepared: equal entries reuse their slot untouched.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Declared {
    pub(super) kind: PluginKind,
    /// `None` for an entry without `path`.
    pub(super) content_hash: Option<String>,
    pub(super) settings: VersionSettings,
}

/// One plugin name: its active version (if any), an optional shadow candidate, and what the
/// configuration says about it.
pub struct PluginSlot {
    pub(super) name: Arc<str>,
    pub(super) kind: PluginKind,
    pub(super) fail_open: AtomicBool,
    pub(super) active: ArcSwapOption<PluginVersion>,
    pub(super) shadow: ArcSwapOption<Shadow>,
    pub(super) control: Mutex<SlotControl>,
    /// A message filter's counters, over all its versions.
    filter_metrics: Option<Arc<FilterMetrics>>,
}

pub(super) struct SlotControl {
    /// The configuration entry this slot was last prepared from; `None` for a plugin only the
    /// admin API loaded.
    pub(super) declared: Option<Declared>,
    /// What new versions get by default: the configuration's settings for this plugin.
    pub(super) settings: VersionSettings,
}

impl PluginSlot {
    pub(super) fn new(name: &str, kind: PluginKind, settings: VersionSettings) -> Arc<Self> {
        Arc::new(PluginSlot {
            name: name.into(),
            kind,
            fail_open: AtomicBool::new(settings.fail_policy == FailPolicy::FailOpen),
            active: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
            control: Mutex::new(SlotControl {
                declared: None,
                settings,
            }),
            filter_metrics: (kind == PluginKind::MessageFilter)
                .then(|| Arc::new(FilterMetrics::new(crate::workers::per_core()))),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> PluginKind {
        self.kind
    }

    /// A message filter's counters (over all its versions); `None` for other kinds.
    pub fn filter_metrics(&self) -> Option<&Arc<FilterMetrics>> {
        self.filter_metrics.as_ref()
    }

    /// The version serving now, if one is loaded. The hot path: an atomic load and an `Arc`
    /// clone.
    pub fn active(&self) -> Option<Arc<PluginVersion>> {
        self.active.load_full()
    }

    /// The shadow candidate, when this request is one it compares.
    pub fn shadow_for_request(&self) -> Option<Arc<Shadow>> {
        let shadow = self.shadow.load();
        match &*shadow {
            Some(s) if s.wants() => Some(s.clone()),
            _ => None,
        }
    }

    /// The shadow candidate, if any.
    pub fn shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow.load_full()
    }

    /// The fail policy requests follow when the plugin fails or is not loaded.
    pub fn fail_policy(&self) -> FailPolicy {
        if self.fail_open.load(Relaxed) {
            FailPolicy::FailOpen
        } else {
            FailPolicy::FailClosed
        }
    }

    /// Whether the configuration declares this plugin (else only the admin API loaded it).
    pub fn is_declared(&self) -> bool {
        self.lock().declared.is_some()
    }

    /// The active version's stats (zero when none is loaded).
    pub fn stats(&self) -> PluginStats {
        self.active().map(|v| v.plugin.stats()).unwrap_or_default()
    }

    /// The active version's sampled call times (see [`crate::plugin::Plugin::call_time_buckets`]).
    pub fn call_time_buckets(&self) -> (Vec<(u64, u64)>, u64) {
        self.active()
            .map(|v| v.plugin.call_time_buckets())
            .unwrap_or_default()
    }

    /// The active version's breaker (closed when none is loaded).
    pub fn breaker_state(&self) -> BreakerState {
        self.active()
            .map_or(BreakerState::Closed, |v| v.plugin.breaker_state())
    }

    /// Routes with the active version (see [`Plugin::route`]).
    pub async fn route(&self, request: &RequestHead) -> Result<Decision, PluginError> {
        self.require()?.plugin.route(request).await
    }

    /// Judges a probe response with the active version (see [`Plugin::evaluate`]).
    pub async fn evaluate(&self, response: &ProbeResponse) -> Result<Verdict, PluginError> {
        self.require()?.plugin.evaluate(response).await
    }

    /// Shapes a probe request with the active version (see [`Plugin::shape_probe_request`]).
    pub async fn shape_probe_request(
        &self,
        pool: &str,
        settings: &str,
        server: &str,
    ) -> Result<Option<ProbeRequest>, PluginError> {
        self.require()?
            .plugin
            .shape_probe_request(pool, settings, server)
            .await
    }

    /// The active version, or the error a caller's fail policy handles.
    pub fn require(&self) -> Result<Arc<PluginVersion>, PluginError> {
        self.active().ok_or_else(|| PluginError::NotLoaded {
            plugin: self.name.to_string(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SlotControl> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn install(&self, version: Arc<PluginVersion>) {
        let hash = short(&version.content_hash).to_owned();
        let previous = self.active.swap(Some(version));
        match previous {
            Some(p) => tracing::info!(
                target: "wasmgate::plugin",
                plugin = %self.name,
                version = hash,
                replaced = short(&p.content_hash),
                "new version in service; requests already running finish on the old one"
            ),
            None => tracing::info!(
                target: "wasmgate::plugin",
                plugin = %self.name,
                version = hash,
                "plugin in service"
            ),
        }
    }

    pub(super) fn set_declared(&self, declared: Option<Declared>) {
        let mut control = self.lock();
        if let Some(d) = &declared {
            control.settings = d.settings.clone();
            self.fail_open
                .store(d.settings.fail_policy == FailPolicy::FailOpen, Relaxed);
        }
        control.declared = declared;
    }
}

impl std::fmt::Debug for PluginSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSlot")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("active", &self.active().map(|v| v.content_hash.clone()))
            .finish_non_exhaustive()
    }
}
