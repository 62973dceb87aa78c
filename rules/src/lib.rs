//! Application Gateway's basic rules, written once and compiled both into the gateway (its
//! native rules) and into the built-in basic-rules plugin, so that the two decide alike by
//! construction:
//!
//! - [`matching`]: host-name and path patterns, the host without its port, path overrides;
//! - [`route`]: which listener, rule and target a request gets on a listening socket;
//! - [`redirect`]: the Location a redirect answers with;
//! - [`packed`]: the layout of the packed request head, written by the gateway, read by the SDK;
//! - the types below: the routing-relevant part of a validated gateway configuration, as the
//!   gateway hands it to the built-in plugin in `init` (JSON). The host serialises them from its
//!   validated configuration, the plugin deserialises them, so the two never disagree about the
//!   schema. Everything is already validated: references are indices into the lists, host names
//!   and paths are as written.

pub mod matching;
pub mod packed;
pub mod redirect;
pub mod route;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicRules {
    pub listeners: Vec<Listener>,
    /// Backend settings, by index; only what routing needs.
    pub settings: Vec<Settings>,
    pub rules: Vec<Rule>,
    pub url_path_maps: Vec<UrlPathMap>,
    pub redirects: Vec<Redirect>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub name: String,
    /// "http" or "https".
    pub protocol: String,
    pub port: u16,
    /// The bind address as text: listeners with the same address and port (other than 0)
    /// share one socket, and so compete for its requests.
    pub bind_address: String,
    /// Empty: a basic listener (any host).
    pub host_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub name: String,
    /// The path override.
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub priority: Option<u32>,
    /// Index into `listeners`.
    pub listener: usize,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Basic(Target),
    /// Index into `url_path_maps`.
    PathBased(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Forward {
        pool: String,
        /// Index into `settings`.
        settings: usize,
        /// The target has a rewrite set. Response-header rewrites are beyond a router's
        /// decision, so the plugin defers such requests to the native rules.
        rewrites: bool,
    },
    /// Index into `redirects`.
    Redirect(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlPathMap {
    pub name: String,
    pub default: Target,
    pub path_rules: Vec<PathRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    pub paths: Vec<String>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub status: u16,
    pub target: RedirectTarget,
    pub include_path: bool,
    pub include_query_string: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectTarget {
    /// Index into `listeners`.
    Listener(usize),
    Url(String),
}
