//! Which listener, rule and target a request gets, with Application Gateway's evaluation order:
//! the one implementation behind the gateway's native rules and the built-in basic-rules plugin.
//!
//! Both compile their configuration into a [`SocketRoutes`] per listening socket once (the
//! gateway when it builds a snapshot, the plugin in `init`), each with its own target type `T`;
//! routing a request then only reads the table, without allocating.

use crate::matching::{HostPattern, PathPattern};

/// Groups listeners by listening socket: the same bind address and port share one (and so
/// compete for its requests), except port 0, which asks the OS for a port per listener.
/// `listeners` gives each listener's bind address and port, in the configuration's order; the
/// result lists each socket's listeners (indices into `listeners`), sockets in the order of their
/// first listener.
pub fn sockets<A: PartialEq>(listeners: impl IntoIterator<Item = (A, u16)>) -> Vec<Vec<usize>> {
    let mut sockets: Vec<(A, u16, Vec<usize>)> = Vec::new();
    for (i, (address, port)) in listeners.into_iter().enumerate() {
        match sockets
            .iter_mut()
            .find(|(a, p, _)| port != 0 && *p == port && *a == address)
        {
            Some((_, _, ids)) => ids.push(i),
            None => sockets.push((address, port, vec![i])),
        }
    }
    sockets.into_iter().map(|(_, _, ids)| ids).collect()
}

/// A rule of one of a socket's listeners, as the socket evaluates it.
#[derive(Debug)]
pub struct Route<T> {
    /// The rule's listener (an index in the configuration).
    pub listener: usize,
    /// The rule (an index in the configuration, which is also its place in the written order).
    pub rule: usize,
    pub priority: Option<u32>,
    /// The listener's host names; empty for a basic listener (any host).
    pub host_names: Box<[HostPattern]>,
    pub action: RouteAction<T>,
}

#[derive(Debug)]
pub enum RouteAction<T> {
    /// A basic rule.
    Target(T),
    /// A path-based rule: its path map's rules in list order, and the map's default.
    PathMap {
        path_rules: Box<[PathRoute<T>]>,
        default: T,
    },
}

#[derive(Debug)]
pub struct PathRoute<T> {
    pub paths: Box<[PathPattern]>,
    pub target: T,
}

/// What routing decided for one request.
#[derive(Debug)]
pub struct Routed<'a, T> {
    pub listener: usize,
    pub rule: usize,
    pub target: &'a T,
    /// Bytes of the path consumed by a path rule's pattern (`/api/` for `/api/*`); a path
    /// override replaces them. `None` for basic rules and a path map's default.
    pub matched_prefix: Option<usize>,
}

/// One listening socket's rules, in evaluation order.
#[derive(Debug)]
pub struct SocketRoutes<T> {
    routes: Box<[Route<T>]>,
    /// Whether any of them has host names to match.
    multi_site: bool,
}

impl<T> SocketRoutes<T> {
    /// `routes`: the rules of the socket's listeners, in any order.
    pub fn new(mut routes: Vec<Route<T>>) -> Self {
        // Application Gateway evaluates multi-site listeners before basic ones; among them the
        // rule priority decides (1 first), then the order of the rules as written.
        routes.sort_by_key(|r| {
            (
                r.host_names.is_empty(),
                r.priority.unwrap_or(u32::MAX),
                r.rule,
            )
        });
        let multi_site = routes.iter().any(|r| !r.host_names.is_empty());
        SocketRoutes {
            routes: routes.into(),
            multi_site,
        }
    }

    /// The routes in evaluation order.
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    /// Whether routing looks at the request's host at all: when no listener on the socket has
    /// host names, [`SocketRoutes::route`] may be given any host.
    pub fn looks_at_host(&self) -> bool {
        self.multi_site
    }

    /// The listener, rule and target for a request. `host` is the request's host without port
    /// (any case); `path` excludes the query.
    pub fn route(&self, host: &str, path: &str) -> Option<Routed<'_, T>> {
        let route = self
            .routes
            .iter()
            .find(|r| r.host_names.is_empty() || r.host_names.iter().any(|h| h.matches(host)))?;
        Some(route.action.select(route, path))
    }

    /// Rule `rule`'s path map evaluated again for `path` (Application Gateway's "re-evaluate
    /// path map" after a URL rewrite); `None` when the rule is not on this socket or is basic.
    pub fn reroute(&self, rule: usize, path: &str) -> Option<Routed<'_, T>> {
        let route = self.routes.iter().find(|r| r.rule == rule)?;
        match route.action {
            RouteAction::Target(_) => None,
            RouteAction::PathMap { .. } => Some(route.action.select(route, path)),
        }
    }
}

impl<T> RouteAction<T> {
    /// The target for `path` (without the query).
    fn select<'a>(&'a self, route: &Route<T>, path: &str) -> Routed<'a, T> {
        let (target, matched_prefix) = match self {
            RouteAction::Target(t) => (t, None),
            RouteAction::PathMap {
                path_rules,
                default,
            } => path_rules
                .iter()
                // The first match in list order, not the longest (Application Gateway v2).
                .find_map(|pr| {
                    pr.paths
                        .iter()
                        .find_map(|p| p.match_len(path))
                        .map(|n| (&pr.target, Some(n)))
                })
                .unwrap_or((default, None)),
        };
        Routed {
            listener: route.listener,
            rule: route.rule,
            target,
            matched_prefix,
        }
    }

    /// Every target the action can choose.
    pub fn targets(&self) -> impl Iterator<Item = &T> {
        let (path_rules, last): (&[PathRoute<T>], &T) = match self {
            RouteAction::Target(t) => (&[], t),
            RouteAction::PathMap {
                path_rules,
                default,
            } => (path_rules, default),
        };
        path_rules
            .iter()
            .map(|pr| &pr.target)
            .chain(std::iter::once(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        listener: usize,
        priority: Option<u32>,
        hosts: &[&str],
        target: &'static str,
    ) -> Route<&'static str> {
        Route {
            listener,
            rule: listener,
            priority,
            host_names: hosts.iter().map(|h| HostPattern::new(h)).collect(),
            action: RouteAction::Target(target),
        }
    }

    fn target<'a>(
        routes: &'a SocketRoutes<&'static str>,
        host: &str,
        path: &str,
    ) -> Option<&'a str> {
        routes.route(host, path).map(|r| *r.target)
    }

    #[test]
    fn listeners_share_a_socket_by_address_and_port_except_port_0() {
        let binds = [
            ("0.0.0.0", 80),
            ("0.0.0.0", 80),
            ("127.0.0.1", 80),
            ("0.0.0.0", 0),
            ("0.0.0.0", 0),
            ("0.0.0.0", 80),
        ];
        assert_eq!(
            sockets(binds),
            vec![vec![0, 1, 5], vec![2], vec![3], vec![4]]
        );
    }

    #[test]
    fn multi_site_first_then_priority_then_written_order() {
        let routes = SocketRoutes::new(vec![
            route(0, Some(1), &[], "basic"),
            route(1, None, &["*.contoso.com"], "wildcard"),
            route(2, Some(5), &["app.contoso.com"], "app"),
            route(3, None, &["*.com"], "any-com"),
        ]);
        assert!(routes.looks_at_host());
        assert_eq!(target(&routes, "APP.contoso.com", "/"), Some("app"));
        assert_eq!(
            target(&routes, "www.contoso.com", "/"),
            Some("wildcard"),
            "unprioritised rules in written order"
        );
        assert_eq!(target(&routes, "fabrikam.com", "/"), Some("any-com"));
        assert_eq!(
            target(&routes, "fabrikam.net", "/"),
            Some("basic"),
            "the basic listener comes last despite its priority"
        );
        let none = SocketRoutes::new(vec![route(0, None, &["a.test"], "a")]);
        assert_eq!(target(&none, "b.test", "/"), None);
        assert!(!SocketRoutes::new(vec![route(0, None, &[], "basic")]).looks_at_host());
    }

    #[test]
    fn the_first_matching_path_rule_wins_and_reports_what_it_consumed() {
        let paths = |p: &[&str]| p.iter().map(|p| PathPattern::new(p)).collect();
        let routes = SocketRoutes::new(vec![Route {
            listener: 0,
            rule: 0,
            priority: None,
            host_names: Box::new([]),
            action: RouteAction::PathMap {
                path_rules: Box::new([
                    PathRoute {
                        paths: paths(&["/api*"]),
                        target: "api-prefix",
                    },
                    PathRoute {
                        paths: paths(&["/x", "/api/*"]),
                        target: "api-dir",
                    },
                ]),
                default: "default",
            },
        }]);
        let routed = routes.route("", "/API/users").unwrap();
        assert_eq!(
            (*routed.target, routed.matched_prefix),
            ("api-prefix", Some(4))
        );
        let routed = routes.route("", "/other").unwrap();
        assert_eq!((*routed.target, routed.matched_prefix), ("default", None));
        let all: Vec<_> = routes.routes()[0].action.targets().copied().collect();
        assert_eq!(all, ["api-prefix", "api-dir", "default"]);
    }
}
