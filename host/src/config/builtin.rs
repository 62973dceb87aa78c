//! The built-in router (`router = "builtin"`): the `plugins/basic-rules` component, given the
//! configuration's own rules.
//!
//! The component is built from source by `scripts/build-plugins` like every other plugin; the
//! gateway binary does not embed it, so building and running the gateway needs no WebAssembly
//! toolchain unless `builtin` is used. It is looked for, in order, in `$WASMGATE_PLUGIN_DIR`,
//! next to the gateway's executable, and in the source tree's `target/plugins` (where
//! `scripts/build-plugins` puts it).

use std::path::PathBuf;

use super::*;

/// The name that selects the built-in router.
pub const BUILTIN: &str = "builtin";
/// The component's file name.
pub const BUILTIN_FILE: &str = "basic-rules.wasm";

/// Where the built-in component is, or why it cannot be used.
pub fn builtin_component() -> std::result::Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("WASMGATE_PLUGIN_DIR") {
        candidates.push(PathBuf::from(dir).join(BUILTIN_FILE));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(BUILTIN_FILE)))
    {
        candidates.push(dir);
    }
    candidates.push(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/plugins")
            .join(BUILTIN_FILE),
    );
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "the built-in basic-rules plugin is not built: build it with scripts/build-plugins (looked for {})",
        looked.join(", ")
    ))
}

/// The routing-relevant part of `config`, in the schema the basic-rules plugin reads.
pub fn basic_rules(config: &Config) -> wasmgate_rules::BasicRules {
    use wasmgate_rules as r;
    let target = |t: &Target| match *t {
        Target::Forward {
            pool,
            settings,
            rewrite_set,
        } => r::Target::Forward {
            pool: config.pool(pool).name.clone(),
            settings: settings.0,
            rewrites: rewrite_set.is_some(),
        },
        Target::Redirect(id) => r::Target::Redirect(id.0),
    };
    r::BasicRules {
        listeners: config
            .listeners
            .iter()
            .map(|l| r::Listener {
                name: l.name.clone(),
                protocol: l.protocol.as_str().to_owned(),
                port: l.port,
                bind_address: l.bind_address.to_string(),
                host_names: l.host_names.iter().map(|h| h.as_str().to_owned()).collect(),
            })
            .collect(),
        settings: config
            .backend_settings
            .iter()
            .map(|s| r::Settings {
                name: s.name.clone(),
                path: s.path.clone(),
            })
            .collect(),
        rules: config
            .rules
            .iter()
            .map(|rule| r::Rule {
                name: rule.name.clone(),
                priority: rule.priority,
                listener: rule.listener.0,
                action: match &rule.action {
                    RuleAction::Basic(t) => r::Action::Basic(target(t)),
                    RuleAction::PathBased(m) => r::Action::PathBased(m.0),
                },
            })
            .collect(),
        url_path_maps: config
            .url_path_maps
            .iter()
            .map(|m| r::UrlPathMap {
                name: m.name.clone(),
                default: target(&m.default),
                path_rules: m
                    .path_rules
                    .iter()
                    .map(|pr| r::PathRule {
                        paths: pr.paths.iter().map(|p| p.as_str().to_owned()).collect(),
                        target: target(&pr.target),
                    })
                    .collect(),
            })
            .collect(),
        redirects: config
            .redirects
            .iter()
            .map(|rd| r::Redirect {
                status: rd.status.as_u16(),
                target: match &rd.target {
                    RedirectTarget::Listener(l) => r::RedirectTarget::Listener(l.0),
                    RedirectTarget::Url(u) => r::RedirectTarget::Url(u.clone()),
                },
                include_path: rd.include_path,
                include_query_string: rd.include_query_string,
            })
            .collect(),
    }
}
