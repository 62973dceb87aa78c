//! `[[rules]]` and `[[url_path_maps]]`: what each listener's requests are forwarded or redirected
//! to, with every named pool, settings, redirect and rewrite set resolved.

use std::collections::HashMap;

use super::units::opt_in_range;
use super::{Refs, Result, lookup, names};
use crate::config::raw::{RawRule, RawUrlPathMap};
use crate::config::*;

const PLAIN_TARGET_FIELDS: [&str; 4] = [
    "backend_pool",
    "backend_settings",
    "redirect",
    "rewrite_set",
];

/// The fields that name a target, with their names for error paths.
struct TargetFields<'a> {
    names: [&'static str; 4],
    pool: &'a Option<String>,
    settings: &'a Option<String>,
    redirect: &'a Option<String>,
    rewrite_set: &'a Option<String>,
}

/// A forwarding target (pool + settings) or a redirect, exactly one of them.
fn target(path: &str, fields: TargetFields<'_>, refs: &Refs<'_>) -> Result<Target> {
    let TargetFields {
        names: [pool_field, settings_field, redirect_field, rewrite_field],
        pool,
        settings,
        redirect,
        rewrite_set,
    } = fields;
    let rewrite_set = rewrite_set
        .as_deref()
        .map(|n| {
            lookup(
                &format!("{path}.{rewrite_field}"),
                refs.rewrite_sets,
                "rewrite_set",
                n,
            )
            .map(RewriteSetId)
        })
        .transpose()?;
    match (pool, settings, redirect) {
        (Some(p), Some(s), None) => Ok(Target::Forward {
            pool: PoolId(lookup(
                &format!("{path}.{pool_field}"),
                refs.pools,
                "backend_pool",
                p,
            )?),
            settings: SettingsId(lookup(
                &format!("{path}.{settings_field}"),
                refs.settings,
                "backend_settings",
                s,
            )?),
            rewrite_set,
        }),
        (None, None, Some(r)) => {
            if rewrite_set.is_some() {
                return Err(ConfigError::new(
                    format!("{path}.{rewrite_field}"),
                    "a redirect takes no rewrite set",
                ));
            }
            Ok(Target::Redirect(RedirectId(lookup(
                &format!("{path}.{redirect_field}"),
                refs.redirects,
                "redirect",
                r,
            )?)))
        }
        (Some(_), None, None) => Err(ConfigError::new(
            format!("{path}.{settings_field}"),
            format!("{pool_field} needs {settings_field} beside it"),
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            format!("{path}.{pool_field}"),
            format!("{settings_field} needs {pool_field} beside it"),
        )),
        (None, None, None) => Err(ConfigError::new(
            path,
            format!("needs {pool_field} and {settings_field}, or {redirect_field}"),
        )),
        (_, _, Some(_)) => Err(ConfigError::new(
            format!("{path}.{redirect_field}"),
            format!("a redirect excludes {pool_field} and {settings_field}"),
        )),
    }
}

pub(super) fn url_path_map(path: &str, raw: &RawUrlPathMap, refs: &Refs<'_>) -> Result<UrlPathMap> {
    let default = target(
        path,
        TargetFields {
            names: [
                "default_backend_pool",
                "default_backend_settings",
                "default_redirect",
                "default_rewrite_set",
            ],
            pool: &raw.default_backend_pool,
            settings: &raw.default_backend_settings,
            redirect: &raw.default_redirect,
            rewrite_set: &raw.default_rewrite_set,
        },
        refs,
    )?;
    names(
        &format!("{path}.path_rules"),
        raw.path_rules.iter().map(|r| &r.name),
    )?;
    let mut path_rules = Vec::with_capacity(raw.path_rules.len());
    for (i, r) in raw.path_rules.iter().enumerate() {
        let rule_path = format!("{path}.path_rules[{i}]");
        if r.paths.is_empty() {
            return Err(ConfigError::new(
                format!("{rule_path}.paths"),
                "needs at least one path",
            ));
        }
        let mut paths = Vec::with_capacity(r.paths.len());
        for (j, p) in r.paths.iter().enumerate() {
            paths.push(path_pattern(&format!("{rule_path}.paths[{j}]"), p)?);
        }
        let target = target(
            &rule_path,
            TargetFields {
                names: PLAIN_TARGET_FIELDS,
                pool: &r.backend_pool,
                settings: &r.backend_settings,
                redirect: &r.redirect,
                rewrite_set: &r.rewrite_set,
            },
            refs,
        )?;
        path_rules.push(PathRule {
            name: r.name.clone(),
            paths,
            target,
            message_filter: None,
        });
    }
    Ok(UrlPathMap {
        name: raw.name.clone(),
        default,
        path_rules,
    })
}

/// Application Gateway path rules: start with '/', a '*' only at the end, no query or fragment.
fn path_pattern(field: &str, p: &str) -> Result<PathPattern> {
    let why = if !p.starts_with('/') {
        Some("must start with '/'")
    } else if p.contains(['?', '#']) {
        Some("must not contain a query ('?') or fragment ('#')")
    } else if p.trim_end_matches('*').contains('*') || p.ends_with("**") {
        Some("'*' may only stand at the end")
    } else if p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        Some("must not contain spaces or control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::new(field, format!("{p:?} {why}"))),
        None => Ok(PathPattern::new(p)),
    }
}

fn rule(
    path: &str,
    raw: &RawRule,
    listeners: &HashMap<&str, usize>,
    maps: &HashMap<&str, usize>,
    refs: &Refs<'_>,
) -> Result<Rule> {
    // Priorities run from 1 (first) to 20000, as Application Gateway's do.
    let priority = opt_in_range(&format!("{path}.priority"), raw.priority, 1..=20_000)?;
    let listener = ListenerId(lookup(
        &format!("{path}.listener"),
        listeners,
        "listener",
        &raw.listener,
    )?);
    let kind = match raw.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None if raw.url_path_map.is_some() => "path_based",
        None | Some("basic") => "basic",
        Some("path_based" | "pathbasedrouting") => "path_based",
        Some(other) => {
            return Err(ConfigError::new(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected \"basic\" or \"path_based\""),
            ));
        }
    };
    let action = if kind == "path_based" {
        let Some(map) = &raw.url_path_map else {
            return Err(ConfigError::new(
                format!("{path}.url_path_map"),
                "a path_based rule needs a url_path_map",
            ));
        };
        for (field, set) in [
            ("backend_pool", raw.backend_pool.is_some()),
            ("backend_settings", raw.backend_settings.is_some()),
            ("redirect", raw.redirect.is_some()),
            ("rewrite_set", raw.rewrite_set.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    format!("{path}.{field}"),
                    "a path_based rule takes these from its url_path_map",
                ));
            }
        }
        RuleAction::PathBased(UrlPathMapId(lookup(
            &format!("{path}.url_path_map"),
            maps,
            "url_path_map",
            map,
        )?))
    } else {
        if raw.url_path_map.is_some() {
            return Err(ConfigError::new(
                format!("{path}.url_path_map"),
                "only a path_based rule takes a url_path_map",
            ));
        }
        let target = target(
            path,
            TargetFields {
                names: PLAIN_TARGET_FIELDS,
                pool: &raw.backend_pool,
                settings: &raw.backend_settings,
                redirect: &raw.redirect,
                rewrite_set: &raw.rewrite_set,
            },
            refs,
        )?;
        // Application Gateway refuses "re-evaluate path map" on a basic rule: it has no path map,
        // and evaluating the rule again would only loop.
        if let Target::Forward {
            rewrite_set: Some(set),
            ..
        } = target
            && refs.rewrite_reroutes[set.0]
        {
            return Err(ConfigError::new(
                format!("{path}.rewrite_set"),
                format!(
                    "rewrite set {:?} re-evaluates the path map (reroute), which only a path_based rule has",
                    raw.rewrite_set.as_deref().unwrap_or_default()
                ),
            ));
        }
        RuleAction::Basic(target)
    };
    Ok(Rule {
        name: raw.name.clone(),
        priority,
        listener,
        action,
        router: None,
        message_filter: None,
    })
}

/// `[[rules]]`: each rule, with unique priorities and one rule per listener.
pub(super) fn rules(
    raw: &[RawRule],
    listeners: &HashMap<&str, usize>,
    maps: &HashMap<&str, usize>,
    refs: &Refs<'_>,
) -> Result<Vec<Rule>> {
    names("rules", raw.iter().map(|r| &r.name))?;
    let mut rules = Vec::with_capacity(raw.len());
    let mut priorities: HashMap<u32, usize> = HashMap::new();
    let mut listener_rule: HashMap<usize, usize> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("rules[{i}]");
        let rule = rule(&path, r, listeners, maps, refs)?;
        if let Some(p) = rule.priority
            && let Some(other) = priorities.insert(p, i)
        {
            return Err(ConfigError::new(
                format!("{path}.priority"),
                format!(
                    "priority {p} is already used by rules[{other}]; priorities must be unique"
                ),
            ));
        }
        if let Some(other) = listener_rule.insert(rule.listener.0, i) {
            return Err(ConfigError::new(
                format!("{path}.listener"),
                format!(
                    "listener {:?} is already used by rules[{other}]; a listener takes exactly one rule",
                    r.listener
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}
