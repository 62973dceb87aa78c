//! One loaded version of a plugin, and the settings it was loaded with.

use std::sync::Arc;
use std::time::SystemTime;

use super::{LoadReport, Plugin};
use crate::config::{FailPolicy, PluginLimits, Sample};

/// One loaded version of a plugin.
pub struct PluginVersion {
    pub plugin: Plugin,
    /// SHA-256 of the component, hex.
    pub content_hash: String,
    pub loaded_at: SystemTime,
    /// Where the component came from: its file, "upload", or its registry reference pinned
    /// to its digest (`oci://HOST/REPOSITORY:TAG@sha256:…`).
    pub origin: String,
    /// For a component from a registry: the manifest digest it was loaded from.
    pub digest: Option<String>,
    /// The `config` its instances were initialised with.
    pub config: String,
    pub report: LoadReport,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("plugin", &self.plugin.name())
            .field("content_hash", &self.content_hash)
            .field("origin", &self.origin)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// What a version is built with, besides its component.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSettings {
    pub config: String,
    pub limits: PluginLimits,
    pub fail_policy: FailPolicy,
    pub samples: Arc<[Sample]>,
    /// The request headers a router is given; `None`: all.
    pub request_headers: Option<Arc<[http::HeaderName]>>,
}

impl Default for VersionSettings {
    fn default() -> Self {
        VersionSettings {
            config: String::new(),
            limits: PluginLimits::default(),
            fail_policy: FailPolicy::default(),
            samples: Arc::new([]),
            request_headers: None,
        }
    }
}

/// A content hash shortened for logs.
pub(super) fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
