//! `wasmgate plugin load|replace|unload|list|shadow|promote`: the plugin endpoints of a running
//! gateway's admin API ([`wasmgate::admin::plugins`]), from the command line.

use std::path::PathBuf;

use bytes::Bytes;
use http::Method;
use wasmgate::admin::PLUGINS_PATH;
use wasmgate::admin::plugins::{PREFIX, percent_encode};

use super::client::{AdminApi, ClientError, call, call_within};

/// How long a plugin command waits for the admin API's answer.
pub const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What to do with a running gateway's plugins.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// List every plugin: version, calls, errors, call-time p99, breaker, shadow agreement.
    List,
    /// Load a plugin that has no version (declared without `path`, unloaded, or new).
    Load(VersionArgs),
    /// Replace a plugin's version: compiled, initialised and checked against its samples
    /// first; requests already running finish on the old version.
    Replace(VersionArgs),
    /// Unload a plugin; its rules follow its fail policy until a version is loaded again.
    Unload { name: String },
    /// Run a candidate beside a router's active version and compare their decisions (or,
    /// with --stop, stop it). Without a component, show the comparison so far.
    Shadow {
        #[command(flatten)]
        version: OptionalVersionArgs,
        /// The share of requests compared, above 0 and at most 1.
        #[arg(long, default_value_t = 1.0)]
        sample: f64,
        /// Stop the candidate.
        #[arg(long, conflicts_with_all = ["component", "path"])]
        stop: bool,
    },
    /// Put the shadow candidate in service.
    Promote { name: String },
    #[command(flatten)]
    Registry(crate::registry::RegistryCommand),
}

/// A plugin and the component of its new version.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// The plugin's name.
    pub name: String,
    /// The component (.wasm) to upload.
    #[arg(required_unless_present = "path", conflicts_with = "path")]
    pub component: Option<PathBuf>,
    #[command(flatten)]
    pub options: VersionOptions,
}

/// Like [`VersionArgs`], with the component optional.
#[derive(Debug, clap::Args)]
pub struct OptionalVersionArgs {
    /// The plugin's name.
    pub name: String,
    /// The candidate component (.wasm) to upload.
    #[arg(conflicts_with = "path")]
    pub component: Option<PathBuf>,
    #[command(flatten)]
    pub options: VersionOptions,
}

#[derive(Debug, clap::Args)]
pub struct VersionOptions {
    /// A component file on the gateway's host, instead of uploading one.
    #[arg(long)]
    pub path: Option<String>,
    /// `router` or `probe`: needed for a name the configuration does not declare.
    #[arg(long)]
    pub kind: Option<String>,
    /// The string passed to the plugin's `init` (instead of the configuration's).
    #[arg(long, conflicts_with = "config_file")]
    pub config: Option<String>,
    /// Read the `init` string from this file.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
}

/// Why a plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginCommandError {
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin API answered something that is not JSON: {0}")]
    BadBody(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

impl PluginCommand {
    /// Runs the command against the admin API; returns what to print.
    pub async fn run(&self, api: &AdminApi) -> Result<String, PluginCommandError> {
        let (method, path, body) = match self {
            // Speaks to a registry, not to the gateway.
            PluginCommand::Registry(command) => return Ok(command.run().await?),
            PluginCommand::List => {
                let (_, body) = call(api, Method::GET, PLUGINS_PATH, Bytes::new()).await?;
                let list: Vec<serde_json::Value> = serde_json::from_slice(&body)
                    .map_err(|e| PluginCommandError::BadBody(e.to_string()))?;
                return Ok(table(&list));
            }
            PluginCommand::Load(v) => {
                version_call("load", &v.name, v.component.as_ref(), &v.options, &[])?
            }
            PluginCommand::Replace(v) => {
                version_call("replace", &v.name, v.component.as_ref(), &v.options, &[])?
            }
            PluginCommand::Unload { name } => {
                (Method::POST, action_path(name, "unload"), Bytes::new())
            }
            PluginCommand::Promote { name } => {
                (Method::POST, action_path(name, "promote"), Bytes::new())
            }
            PluginCommand::Shadow {
                version,
                sample,
                stop,
            } => {
                if *stop {
                    (
                        Method::DELETE,
                        action_path(&version.name, "shadow"),
                        Bytes::new(),
                    )
                } else if version.component.is_none() && version.options.path.is_none() {
                    (Method::GET, action_path(&version.name, ""), Bytes::new())
                } else {
                    version_call(
                        "shadow",
                        &version.name,
                        version.component.as_ref(),
                        &version.options,
                        &[("sample", sample.to_string())],
                    )?
                }
            }
        };
        // A new version answers once compiled and checked: seconds for Python or JavaScript.
        let (_, body) = call_within(PLUGIN_TIMEOUT, api, method, &path, body).await?;
        let view: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| PluginCommandError::BadBody(e.to_string()))?;
        Ok(serde_json::to_string_pretty(&view).unwrap_or_default() + "\n")
    }
}

fn action_path(name: &str, action: &str) -> String {
    let mut p = format!("{PREFIX}{}", percent_encode(name));
    if !action.is_empty() {
        p.push('/');
        p.push_str(action);
    }
    p
}

fn version_call(
    action: &str,
    name: &str,
    component: Option<&PathBuf>,
    options: &VersionOptions,
    extra: &[(&str, String)],
) -> Result<(Method, String, Bytes), PluginCommandError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| PluginCommandError::File {
            path: path.clone(),
            source,
        })
    };
    let body = match component {
        Some(path) => Bytes::from(read(path)?),
        None => Bytes::new(),
    };
    let config = match (&options.config, &options.config_file) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(file)) => Some(String::from_utf8_lossy(&read(file)?).into_owned()),
        (None, None) => None,
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(p) = &options.path {
        params.push(("path", p.clone()));
    }
    if let Some(k) = &options.kind {
        params.push(("kind", k.clone()));
    }
    if let Some(c) = config {
        params.push(("config", c));
    }
    params.extend(extra.iter().cloned());
    let mut path = action_path(name, action);
    for (i, (k, v)) in params.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(k);
        path.push('=');
        path.push_str(&percent_encode(v));
    }
    Ok((Method::POST, path, body))
}

/// `GET /api/plugins` as a table, one line per plugin.
fn table(list: &[serde_json::Value]) -> String {
    const HEAD: [&str; 10] = [
        "NAME",
        "KIND",
        "STATE",
        "VERSION",
        "DIGEST",
        "LOADED AT",
        "CALLS",
        "ERRORS",
        "P99",
        "BREAKER",
    ];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<([String; 10], String)> = list
        .iter()
        .map(|p| {
            let version = p["contentHash"]
                .as_str()
                .map_or("-".to_owned(), |h| h[..h.len().min(12)].to_owned());
            let p99 = p["callP99Us"]
                .as_u64()
                .map_or("-".to_owned(), |us| format!("{us} µs"));
            let shadow = match p.get("shadow") {
                Some(s) if !s.is_null() => format!(
                    "shadow {}: {} compared, {} agreed, {} disagreed, {} candidate errors",
                    s["contentHash"]
                        .as_str()
                        .map_or("", |h| &h[..h.len().min(12)]),
                    s["compared"],
                    s["agreed"],
                    s["disagreed"],
                    s["candidateErrors"]
                ),
                _ => String::new(),
            };
            (
                [
                    text(&p["name"]),
                    text(&p["kind"]),
                    text(&p["state"]),
                    version,
                    // A registry component's manifest digest, shortened as the version is.
                    p["digest"].as_str().map_or("-".to_owned(), |d| {
                        d[..d.len().min("sha256:".len() + 12)].to_owned()
                    }),
                    text(&p["loadedAt"]),
                    text(&p["calls"]),
                    text(&p["errors"]),
                    p99,
                    text(&p["breaker"]),
                ],
                shadow,
            )
        })
        .collect();
    wasmgate::admin::view::text_table(&HEAD, "SHADOW", &rows, "(no plugins)")
}
