//! The built-in router (`router = "builtin"`): Application Gateway's basic rules, as a plugin.
//!
//! The gateway passes its own rule configuration to `init` as JSON ([`wasmgate_rules`], the one
//! schema both sides use), and this plugin gives the decision the native rules give for every
//! request — by running the same code: the listener, rule and path rule come from
//! [`wasmgate_rules::route`], a redirect's location from [`wasmgate_rules::redirect`], the
//! backend path under a path override from [`wasmgate_rules::matching`]. What is left here is
//! reading the configuration into those tables and turning their answer into a decision. The
//! gateway's differential test holds the two compilations to the same answers.
//!
//! It defers (so the native rules answer, identically) where a router's decision cannot say the
//! same thing: when no listener takes the host (the native 404), and for targets with a rewrite
//! set (response-header rewrites are not part of a decision).

use wasmgate_rules::matching::{HostPattern, PathPattern, host_without_port, override_path};
use wasmgate_rules::redirect::{RedirectTo, Redirection};
use wasmgate_rules::route::{self, PathRoute, Route, RouteAction, SocketRoutes};
use wasmgate_rules::{Action, BasicRules, RedirectTarget, Target};
use wasmgate_sdk::{Decision, Forward, Plugin, RequestHead, Router};

/// The rules compiled for routing, with [`wasmgate_rules`]' routing and redirects: the code the
/// native rules run.
pub struct Rules {
    config: BasicRules,
    /// For each listener, its socket's index into `sockets`.
    socket_of: Vec<usize>,
    sockets: Vec<SocketRoutes<Target>>,
    /// By index, as `config.redirects`.
    redirects: Vec<Redirection>,
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
        let groups = route::sockets(
            config
                .listeners
                .iter()
                .map(|l| (l.bind_address.as_str(), l.port)),
        );
        let mut socket_of = vec![0; config.listeners.len()];
        let sockets = groups
            .iter()
            .enumerate()
            .map(|(socket, listeners)| {
                for &l in listeners {
                    socket_of[l] = socket;
                }
                let routes = config
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| listeners.contains(&rule.listener))
                    .map(|(ri, rule)| Route {
                        listener: rule.listener,
                        rule: ri,
                        priority: rule.priority,
                        host_names: config.listeners[rule.listener]
                            .host_names
                            .iter()
                            .map(|h| HostPattern::new(h))
                            .collect(),
                        action: match &rule.action {
                            Action::Basic(t) => RouteAction::Target(t.clone()),
                            Action::PathBased(m) => {
                                let map = &config.url_path_maps[*m];
                                RouteAction::PathMap {
                                    path_rules: map
                                        .path_rules
                                        .iter()
                                        .map(|pr| PathRoute {
                                            paths: pr
                                                .paths
                                                .iter()
                                                .map(|p| PathPattern::new(p))
                                                .collect(),
                                            target: pr.target.clone(),
                                        })
                                        .collect(),
                                    default: map.default.clone(),
                                }
                            }
                        },
                    })
                    .collect();
                SocketRoutes::new(routes)
            })
            .collect();
        let redirects = config
            .redirects
            .iter()
            .map(|r| Redirection {
                to: match &r.target {
                    RedirectTarget::Url(url) => RedirectTo::Url(url.as_str().into()),
                    RedirectTarget::Listener(l) => {
                        let l = &config.listeners[*l];
                        RedirectTo::Listener {
                            https: l.protocol == "https",
                            port: l.port,
                        }
                    }
                },
                include_path: r.include_path,
                include_query_string: r.include_query_string,
            })
            .collect();
        Rules {
            config,
            socket_of,
            sockets,
            redirects,
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
        let routes = &self.sockets[self.socket_of[li]];
        // Only multi-site listeners look at the host.
        let host = if routes.looks_at_host() {
            host_without_port(authority)
        } else {
            ""
        };
        let Some(routed) = routes.route(host, path) else {
            return Outcome::Defer;
        };
        match routed.target {
            Target::Forward { rewrites: true, .. } => Outcome::Defer,
            Target::Forward { pool, settings, .. } => {
                let s = &self.config.settings[*settings];
                Outcome::Forward {
                    pool: pool.clone(),
                    settings: s.name.clone(),
                    path: s
                        .path
                        .as_deref()
                        .map(|prefix| override_path(prefix, path, routed.matched_prefix)),
                }
            }
            &Target::Redirect(r) => Outcome::Redirect {
                status: self.config.redirects[r].status,
                location: self.redirects[r].location(authority, path, query),
            },
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
