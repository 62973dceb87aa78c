//! Raw → validated configuration. Every error names the field's path and the reason.
//!
//! One file per section validates its entries on their own; this file runs them in order, checks
//! that names are unique, and resolves the names one section gives another (a rule's pool, a
//! listener's router plugin) into indexes.

mod admin;
mod backend_pools;
mod backend_settings;
mod error_pages;
mod limits;
mod listeners;
mod logging;
mod plugins;
mod probes;
mod redirects;
mod rewrite_sets;
mod rules;
mod samples;
mod ssl_profiles;
mod telemetry;
mod units;

use std::collections::HashMap;
use std::path::Path;

use super::raw::RawConfig;
use super::*;
use admin::admin;
use backend_pools::pool;
use backend_settings::settings;
use limits::limits;
use listeners::{check_sockets, listener};
use logging::logging;
use plugins::{plugin, plugin_engine};
use probes::{link_probes, probe};
use redirects::redirect;
use rewrite_sets::rewrite_set;
use rules::{rules, url_path_map};
use telemetry::telemetry;
pub(crate) use units::fmt_duration;

type Result<T> = std::result::Result<T, ConfigError>;

pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config> {
    let listeners = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| listener(&format!("listeners[{i}]"), l, base))
        .collect::<Result<Vec<_>>>()?;
    let listener_ids = names("listeners", raw.listeners.iter().map(|l| &l.name))?;
    check_sockets(&listeners)?;

    let ssl_profiles = raw
        .ssl_profiles
        .iter()
        .enumerate()
        .map(|(i, p)| ssl_profiles::ssl_profile(&format!("ssl_profiles[{i}]"), p, base))
        .collect::<Result<Vec<_>>>()?;
    let profile_ids = names("ssl_profiles", raw.ssl_profiles.iter().map(|p| &p.name))?;
    let mut listeners = listeners;
    for (i, (l, r)) in listeners.iter_mut().zip(&raw.listeners).enumerate() {
        if let (Some(tls), Some(name)) = (&mut l.tls, &r.ssl_profile) {
            let field = format!("listeners[{i}].ssl_profile");
            tls.ssl_profile = Some(SslProfileId(lookup(
                &field,
                &profile_ids,
                "ssl_profile",
                name,
            )?));
        }
    }
    let custom_error_pages =
        error_pages::error_pages("custom_error_pages", &raw.custom_error_pages, base)?;

    let backend_pools = raw
        .backend_pools
        .iter()
        .enumerate()
        .map(|(i, p)| pool(&format!("backend_pools[{i}]"), p))
        .collect::<Result<Vec<_>>>()?;
    let pool_ids = names("backend_pools", raw.backend_pools.iter().map(|p| &p.name))?;

    let mut backend_settings = raw
        .backend_settings
        .iter()
        .enumerate()
        .map(|(i, s)| settings(&format!("backend_settings[{i}]"), s, base))
        .collect::<Result<Vec<_>>>()?;
    let settings_ids = names(
        "backend_settings",
        raw.backend_settings.iter().map(|s| &s.name),
    )?;

    let probes = raw
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| probe(&format!("probes[{i}]"), p))
        .collect::<Result<Vec<_>>>()?;
    let probe_ids = names("probes", raw.probes.iter().map(|p| &p.name))?;
    link_probes(
        &raw.backend_settings,
        &mut backend_settings,
        &probes,
        &probe_ids,
    )?;
    let admin = raw.admin.as_ref().map(|a| admin(a, base)).transpose()?;
    let telemetry = telemetry(raw.telemetry.as_ref())?;

    let rewrite_sets = raw
        .rewrite_sets
        .iter()
        .enumerate()
        .map(|(i, r)| rewrite_set(&format!("rewrite_sets[{i}]"), r))
        .collect::<Result<Vec<_>>>()?;
    let rewrite_ids = names("rewrite_sets", raw.rewrite_sets.iter().map(|r| &r.name))?;

    let redirect_ids = names("redirects", raw.redirects.iter().map(|r| &r.name))?;
    let redirects = raw
        .redirects
        .iter()
        .enumerate()
        .map(|(i, r)| redirect(&format!("redirects[{i}]"), r, &listener_ids))
        .collect::<Result<Vec<_>>>()?;

    let refs = Refs {
        pools: &pool_ids,
        settings: &settings_ids,
        redirects: &redirect_ids,
        rewrite_sets: &rewrite_ids,
        rewrite_reroutes: &rewrite_sets.iter().map(|s| s.reroutes).collect::<Vec<_>>(),
    };

    let map_ids = names("url_path_maps", raw.url_path_maps.iter().map(|m| &m.name))?;
    let mut url_path_maps = raw
        .url_path_maps
        .iter()
        .enumerate()
        .map(|(i, m)| url_path_map(&format!("url_path_maps[{i}]"), m, &refs))
        .collect::<Result<Vec<_>>>()?;

    let mut rules = rules(&raw.rules, &listener_ids, &map_ids, &refs)?;

    let limits = limits(raw.limits.as_ref())?;

    let plugins = raw
        .plugins
        .iter()
        .enumerate()
        .map(|(i, p)| plugin(&format!("plugins[{i}]"), p, base))
        .collect::<Result<Vec<_>>>()?;
    let plugin_ids = names("plugins", raw.plugins.iter().map(|p| &p.name))?;
    // `builtin` names the built-in router unless a plugin of that name is configured; its
    // entry is added once the rules it is given are validated.
    let builtin_used = std::cell::Cell::new(false);
    let router = |field: String, name: &Option<String>| -> Result<Option<PluginId>> {
        let Some(name) = name else { return Ok(None) };
        if name == builtin::BUILTIN && !plugin_ids.contains_key(builtin::BUILTIN) {
            builtin::builtin_component().map_err(|why| ConfigError::new(&field, why))?;
            builtin_used.set(true);
            return Ok(Some(PluginId(plugins.len())));
        }
        let id = lookup(&field, &plugin_ids, "plugin", name)?;
        if plugins[id].kind != PluginKind::Router {
            return Err(ConfigError::new(
                field,
                format!(
                    "plugin {name:?} is a {} plugin; a router must be a plugin of kind \"router\"",
                    plugins[id].kind.as_str()
                ),
            ));
        }
        Ok(Some(PluginId(id)))
    };
    for (i, (l, r)) in listeners.iter_mut().zip(&raw.listeners).enumerate() {
        l.router = router(format!("listeners[{i}].router"), &r.router)?;
    }
    for (i, (rule, r)) in rules.iter_mut().zip(&raw.rules).enumerate() {
        rule.router = router(format!("rules[{i}].router"), &r.router)?;
    }
    let message_filter = |field: String, name: &Option<String>| -> Result<Option<PluginId>> {
        let Some(name) = name else { return Ok(None) };
        let id = lookup(&field, &plugin_ids, "plugin", name)?;
        if plugins[id].kind != PluginKind::MessageFilter {
            return Err(ConfigError::new(
                field,
                format!(
                    "plugin {name:?} is a {} plugin; a message filter must be a plugin of kind \"message-filter\"",
                    plugins[id].kind.as_str()
                ),
            ));
        }
        Ok(Some(PluginId(id)))
    };
    for (i, (l, r)) in listeners.iter_mut().zip(&raw.listeners).enumerate() {
        l.message_filter =
            message_filter(format!("listeners[{i}].message_filter"), &r.message_filter)?;
    }
    for (i, (rule, r)) in rules.iter_mut().zip(&raw.rules).enumerate() {
        rule.message_filter =
            message_filter(format!("rules[{i}].message_filter"), &r.message_filter)?;
    }
    for (i, (map, r)) in url_path_maps.iter_mut().zip(&raw.url_path_maps).enumerate() {
        for (j, (p, r)) in map.path_rules.iter_mut().zip(&r.path_rules).enumerate() {
            p.message_filter = message_filter(
                format!("url_path_maps[{i}].path_rules[{j}].message_filter"),
                &r.message_filter,
            )?;
        }
    }
    let probe_plugin = |field: String, name: &Option<String>| -> Result<Option<PluginId>> {
        let Some(name) = name else { return Ok(None) };
        let id = lookup(&field, &plugin_ids, "plugin", name)?;
        if plugins[id].kind != PluginKind::Probe {
            return Err(ConfigError::new(
                field,
                format!(
                    "plugin {name:?} is a {} plugin; a probe evaluator must be a plugin of kind \"probe\"",
                    plugins[id].kind.as_str()
                ),
            ));
        }
        Ok(Some(PluginId(id)))
    };
    let mut probes = probes;
    for (i, (p, r)) in probes.iter_mut().zip(&raw.probes).enumerate() {
        p.probe_plugin = probe_plugin(format!("probes[{i}].probe_plugin"), &r.probe_plugin)?;
    }
    for (i, (s, r)) in backend_settings
        .iter_mut()
        .zip(&raw.backend_settings)
        .enumerate()
    {
        s.probe_plugin = probe_plugin(
            format!("backend_settings[{i}].probe_plugin"),
            &r.probe_plugin,
        )?
        .or_else(|| s.probe.and_then(|p| probes[p.0].probe_plugin));
    }
    let gateway_router = match &raw.routing {
        Some(r) => router("routing.router".into(), &r.router)?,
        None => None,
    };

    let (plugin_cache, plugin_max_instances) = plugin_engine(raw.plugin_engine.as_ref(), base)?;

    let logging = logging(raw.logging.as_ref(), base)?;

    let mut config = Config {
        logging,
        source_hash: None,
        plugin_cache,
        plugin_max_instances,
        plugins,
        router: gateway_router,
        listeners,
        backend_pools,
        backend_settings,
        url_path_maps,
        rules,
        redirects,
        rewrite_sets,
        limits,
        probes,
        admin,
        ssl_profiles,
        custom_error_pages,
        telemetry,
    };
    if builtin_used.get() {
        let path = builtin::builtin_component().map_err(|why| ConfigError::new("", why))?;
        let rules = serde_json::to_string(&builtin::basic_rules(&config))
            .map_err(|e| ConfigError::new("", format!("cannot serialise the rules: {e}")))?;
        config.plugins.push(PluginConfig {
            name: builtin::BUILTIN.to_owned(),
            path: Some(path),
            kind: PluginKind::Router,
            config: rules,
            limits: PluginLimits::default(),
            fail_policy: FailPolicy::FailClosed,
            samples: Vec::new(),
            // The basic rules read the host and the path, never a header.
            request_headers: Some(Vec::new()),
        });
    }
    Ok(config)
}

/// Checks names are present and unique; returns name → index.
fn names<'a>(
    section: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<&'a str, usize>> {
    let mut map = HashMap::new();
    for (i, name) in names.enumerate() {
        if name.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{section}[{i}].name"),
                "must not be empty",
            ));
        }
        if let Some(other) = map.insert(name.as_str(), i) {
            return Err(ConfigError::new(
                format!("{section}[{i}].name"),
                format!("{name:?} is already the name of {section}[{other}]"),
            ));
        }
    }
    Ok(map)
}

struct Refs<'a> {
    pools: &'a HashMap<&'a str, usize>,
    settings: &'a HashMap<&'a str, usize>,
    redirects: &'a HashMap<&'a str, usize>,
    rewrite_sets: &'a HashMap<&'a str, usize>,
    /// Per rewrite set: whether it may re-evaluate the path map.
    rewrite_reroutes: &'a [bool],
}

fn lookup(path: &str, ids: &HashMap<&str, usize>, kind: &str, name: &str) -> Result<usize> {
    ids.get(name)
        .copied()
        .ok_or_else(|| ConfigError::new(path, format!("no {kind} named {name:?}")))
}

fn protocol(path: &str, value: Option<&str>) -> Result<Protocol> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("http") => Ok(Protocol::Http),
        Some("https") => Ok(Protocol::Https),
        Some(other) => Err(ConfigError::new(
            path,
            format!("unknown protocol {other:?}; expected \"http\" or \"https\""),
        )),
    }
}
