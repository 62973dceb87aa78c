//! The plugin layer's one error type.

use std::time::Duration;

/// Why loading or calling a plugin failed. Every variant names the plugin, and every text is one
/// line (what the guest wrote to stderr goes to the log; only its gist is quoted here).
///
/// Calls fail with [`Deadline`](Self::Deadline), [`MemoryLimit`](Self::MemoryLimit),
/// [`Trap`](Self::Trap), [`Instantiate`](Self::Instantiate) or
/// [`CircuitOpen`](Self::CircuitOpen); the caller then applies the plugin's
/// [`FailPolicy`](super::FailPolicy). The instance that failed has already been discarded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The engine itself could not be set up (allocator reservations, linker, cache directory).
    #[error("plugin engine: {reason}")]
    Engine { reason: String },

    /// The bytes are not a component this engine can compile; `origin` is the file (or
    /// "upload") when known.
    #[error("plugin {plugin:?}{}: {reason}", in_parens(.origin))]
    Compile {
        plugin: String,
        origin: Option<String>,
        reason: String,
    },

    /// The component imports something the host does not offer (for example `wasi:http`).
    #[error("plugin {plugin:?}: cannot be linked: {reason}")]
    Link { plugin: String, reason: String },

    /// The component lacks an export its role needs.
    #[error("plugin {plugin:?}: does not export {interface}")]
    MissingExport {
        plugin: String,
        interface: &'static str,
    },

    /// `init` returned an error, ran out of time or memory.
    #[error("plugin {plugin:?}: init failed: {message}")]
    Init { plugin: String, message: String },

    /// `init` trapped (a panic, `unreachable`, an out-of-bounds access, …).
    #[error("plugin {plugin:?}: init trapped: {reason}")]
    InitTrap { plugin: String, reason: String },

    /// A new instance could not be created or initialised (pool exhausted, limits too small for
    /// the component's initial memory, `init` failing on a later instance).
    #[error("plugin {plugin:?}: cannot create an instance: {reason}")]
    Instantiate { plugin: String, reason: String },

    /// The call ran past its deadline and was stopped.
    #[error("plugin {plugin:?}: {call} ran past its {limit:?} deadline and was stopped")]
    Deadline {
        plugin: String,
        call: &'static str,
        limit: Duration,
    },

    /// The call tried to grow a memory beyond the plugin's limit, and trapped.
    #[error("plugin {plugin:?}: {call} exceeded the {limit_bytes}-byte memory limit")]
    MemoryLimit {
        plugin: String,
        call: &'static str,
        limit_bytes: usize,
    },

    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access, …).
    #[error("plugin {plugin:?}: {call} trapped: {reason}")]
    Trap {
        plugin: String,
        call: &'static str,
        reason: String,
    },

    /// The plugin failed repeatedly and its circuit breaker is open: it is not called until the
    /// cool-down ends.
    #[error(
        "plugin {plugin:?}: circuit open after repeated failures, not called for another {retry_in:?}"
    )]
    CircuitOpen { plugin: String, retry_in: Duration },

    /// The plugin answered, but with a decision the gateway cannot carry out.
    #[error("plugin {plugin:?}: invalid decision: {reason}")]
    InvalidDecision { plugin: String, reason: String },

    /// The plugin is declared (or was unloaded) but no version of it is loaded.
    #[error("plugin {plugin:?}: not loaded")]
    NotLoaded { plugin: String },

    /// A new version answered one of the plugin's sample requests other than its configuration
    /// expects; it was not put in service.
    #[error("plugin {plugin:?}: sample {sample} failed: {reason}")]
    SampleMismatch {
        plugin: String,
        sample: usize,
        reason: String,
    },

    /// The component does not do what the plugin's kind needs (a probe evaluator uploaded as a
    /// router, for example).
    #[error("plugin {plugin:?}: is a {kind} plugin, but the component does not export {interface}")]
    WrongKind {
        plugin: String,
        kind: &'static str,
        interface: &'static str,
    },
}

/// " (origin)", or nothing.
fn in_parens(origin: &Option<String>) -> String {
    origin
        .as_deref()
        .map(|o| format!(" ({o})"))
        .unwrap_or_default()
}

impl PluginError {
    /// The name of the plugin concerned (none for an engine error).
    pub fn plugin(&self) -> Option<&str> {
        match self {
            PluginError::Engine { .. } => None,
            PluginError::Compile { plugin, .. }
            | PluginError::Link { plugin, .. }
            | PluginError::MissingExport { plugin, .. }
            | PluginError::Init { plugin, .. }
            | PluginError::InitTrap { plugin, .. }
            | PluginError::Instantiate { plugin, .. }
            | PluginError::Deadline { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::CircuitOpen { plugin, .. }
            | PluginError::InvalidDecision { plugin, .. }
            | PluginError::NotLoaded { plugin }
            | PluginError::SampleMismatch { plugin, .. }
            | PluginError::WrongKind { plugin, .. } => Some(plugin),
        }
    }

    /// Whether this failure counts against the plugin's circuit breaker: the plugin misbehaved,
    /// as opposed to the breaker already being open.
    pub fn is_plugin_fault(&self) -> bool {
        !matches!(
            self,
            PluginError::CircuitOpen { .. } | PluginError::NotLoaded { .. }
        )
    }
}
