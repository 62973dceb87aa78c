//! The built-in router (`router = "builtin"`): Application Gateway's basic rules, as a plugin.
//!
//! The gateway passes its own rule configuration to `init` as JSON ([`wasmgate_rules`], the one
//! schema both sides use), and this plugin gives the decision the native rules give for every
//! request: the listener (multi-site listeners before the basic one, then rule priority, then
//! the order written; host names case-insensitive with `*` and `?`), the path rule (the first
//! that matches, case-insensitive, `/x/*` and `/x*` prefixes), redirects (target listener or URL,
//! with the path and query when asked), and the backend path under a path override. The
//! gateway's differential test holds the two to the same answers.
//!
//! It defers (so the native rules answer, identically) where a router's decision cannot say the
//! same thing: when no listener takes the host (the native 404), and for targets with a rewrite
//! set (response-header rewrites are not part of a decision).

use wasmgate_rules::matching::{host_matches, host_without_port, override_path, path_match_len};
use wasmgate_rules::{Action, BasicRules, RedirectTarget, Target};
use wasmgate_sdk::{Decision, Forward, Plugin, RequestHead, Router};

/// The rules compiled for routing: per listener, the routes of its socket in evaluation order.
pub struct Rules {
    config: BasicRules,
    /// For each listener, indices of the rules its socket evaluates, in order.
    routes: Vec<Vec<usize>>,
    /// Lower-cased host patterns per listener.
    hosts: Vec<Vec<String>>,
    /// Per listener, whether any rule its socket evaluates has host names to match.
    multi_site: Vec<bool>,
}

/// What the rules decide, independent of the WIT types (so it can be tested natively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Forward {
        pool: String,
        settings: String,
        /// The backend path when a path override applies.
        path: Option<String>,
    },
    Redirect {
        status: u16,
        location: String,
    },
    /// Let the native rules answer.
    Defer,
}

impl Rules {
    pub fn new(config: BasicRules) -> Self {
        let socket = |i: usize| {
            let l = &config.listeners[i];
            (l.bind_address.clone(), l.port)
        };
        let routes: Vec<Vec<usize>> = (0..config.listeners.len())
            .map(|li| {
                // Port 0 gives each listener a socket of its own.
                let shares = |other: usize| {
                    other == li || (config.listeners[li].port != 0 && socket(other) == socket(li))
                };
                let mut rules: Vec<usize> = (0..config.rules.len())
                    .filter(|&r| shares(config.rules[r].listener))
                    .collect();
                rules.sort_by_key(|&r| {
                    let rule = &config.rules[r];
                    let basic = config.listeners[rule.listener].host_names.is_empty();
                    (basic, rule.priority.unwrap_or(u32::MAX), r)
                });
                rules
            })
            .collect();
        let hosts = config
            .listeners
            .iter()
            .map(|l| {
                l.host_names
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect()
            })
            .collect();
        let multi_site = routes
            .iter()
            .map(|rules| {
                rules.iter().any(|&r| {
                    !config.listeners[config.rules[r].listener]
                        .host_names
                        .is_empty()
                })
            })
            .collect();
        Rules {
            config,
            routes,
            hosts,
            multi_site,
        }
    }

    /// The decision for a request on `listener` (any listener of the socket that accepted it).
    pub fn decide(
        &self,
        listener: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> Outcome {
        let Some(li) = self
            .config
            .listeners
            .iter()
            .position(|l| l.name == listener)
        else {
            return Outcome::Defer;
        };
        // Only multi-site listeners look at the host.
        let host = if self.multi_site[li] {
            host_without_port(authority)
        } else {
            ""
        };
        let Some(&rule) = self.routes[li].iter().find(|&&r| {
            let hosts = &self.hosts[self.config.rules[r].listener];
            hosts.is_empty() || hosts.iter().any(|h| host_matches(h, host))
        }) else {
            return Outcome::Defer;
        };
        let (target, matched) = match &self.config.rules[rule].action {
            Action::Basic(t) => (t, None),
            Action::PathBased(m) => {
                let map = &self.config.url_path_maps[*m];
                // The first path rule that matches, in list order (Application Gateway v2).
                map.path_rules
                    .iter()
                    .find_map(|pr| {
                        pr.paths
                            .iter()
                            .find_map(|p| path_match_len(p, path))
                            .map(|n| (&pr.target, Some(n)))
                    })
                    .unwrap_or((&map.default, None))
            }
        };
        match target {
            Target::Forward { rewrites: true, .. } => Outcome::Defer,
            Target::Forward { pool, settings, .. } => {
                let s = &self.config.settings[*settings];
                Outcome::Forward {
                    pool: pool.clone(),
                    settings: s.name.clone(),
                    path: s
                        .path
                        .as_deref()
                        .map(|prefix| override_path(prefix, path, matched)),
                }
            }
            Target::Redirect(r) => self.redirect(*r, authority, path, query),
        }
    }

    fn redirect(&self, id: usize, authority: &str, path: &str, query: Option<&str>) -> Outcome {
        let r = &self.config.redirects[id];
        let mut location = match &r.target {
            RedirectTarget::Url(url) => url.clone(),
            RedirectTarget::Listener(l) => {
                // The request's host, on the target listener's scheme and port.
                let l = &self.config.listeners[*l];
                let host = host_without_port(authority);
                let default_port = if l.protocol == "https" { 443 } else { 80 };
                if l.port == default_port {
                    format!("{}://{host}", l.protocol)
                } else {
                    format!("{}://{host}:{}", l.protocol, l.port)
                }
            }
        };
        if r.include_path {
            if matches!(r.target, RedirectTarget::Url(_))
                && location.ends_with('/')
                && path.starts_with('/')
            {
                location.pop();
            }
            location.push_str(path);
        } else if matches!(r.target, RedirectTarget::Listener(_)) {
            location.push('/');
        }
        if r.include_query_string
            && let Some(q) = query
        {
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str(q);
        }
        Outcome::Redirect {
            status: r.status,
            location,
        }
    }
}

struct BasicRulesRouter(Rules);

impl Plugin for BasicRulesRouter {
    fn init(config: &str) -> Result<Self, String> {
        let config: BasicRules =
            serde_json::from_str(config).map_err(|e| format!("invalid rule configuration: {e}"))?;
        Ok(BasicRulesRouter(Rules::new(config)))
    }
}

impl Router for BasicRulesRouter {
    fn route(&self, request: &RequestHead<'_>) -> Decision {
        match self.0.decide(
            request.listener,
            request.authority,
            request.path,
            request.query,
        ) {
            Outcome::Forward {
                pool,
                settings,
                path,
            } => {
                let forward = Forward::to(pool, settings);
                match path {
                    Some(p) => forward.path(p).into(),
                    None => forward.into(),
                }
            }
            Outcome::Redirect { status, location } => Decision::redirect(status, location),
            Outcome::Defer => Decision::Defer,
        }
    }
}

wasmgate_sdk::export_router!(BasicRulesRouter);
