//! The immutable running state: a configuration compiled into routing tables, backend pools with
//! their runtime state, and the upstream connection pools. The control plane builds a new
//! snapshot and publishes it; the data plane only reads the current one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderValue;

use wasmgate_rules::matching::{HostPattern, PathPattern};
use wasmgate_rules::redirect::{RedirectTo, Redirection};
use wasmgate_rules::route::{self, PathRoute, RouteAction, SocketRoutes};

use crate::config::{
    BackendAddress, Config, HostOverride, ListenerId, PluginId, PoolId, Protocol, RedirectId,
    RedirectTarget, RewriteSetId, RuleAction, RuleId, SettingsId, Target,
};
use crate::metrics::RequestMetrics;
use crate::probe::{Health, ProbedServer, ServerKey};
use crate::upstream::{Upstream, UpstreamKey, UpstreamTls};

/// Configuration names (pools, settings) to what they name, looked up on the request path when a
/// router plugin's decision names its forward. The keys are the configuration's own few names,
/// which nobody can add to at run time, so a flood of colliding keys (what SipHash guards
/// against) cannot happen; FNV-1a hashes a short name in a few instructions per byte.
type NameMap<V> = HashMap<Box<str>, V, BuildHasherDefault<NameHasher>>;

/// FNV-1a, 64 bits.
struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Listeners that share one socket: same bind address and port.
#[derive(Debug)]
pub struct Socket {
    /// What identifies this socket across snapshots.
    pub key: SocketKey,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// Every listener on this socket, with or without a rule.
    pub listeners: Box<[ListenerId]>,
    /// The rules of this socket's listeners, in evaluation order (`wasmgate_rules::route`, the
    /// code the built-in router runs too).
    routes: SocketRoutes<RouteTarget>,
}

/// A rule's or path rule's target as the socket's routing table holds it: where requests go,
/// and the message filter for their WebSocket sessions (the path rule's, else the rule's, else
/// the listener's, resolved when the snapshot is built).
#[derive(Debug)]
struct RouteTarget {
    target: CompiledTarget,
    message_filter: Option<PluginId>,
}

/// A listening socket's identity, kept across configuration reloads: the bind address, or —
/// for a listener on port 0, which gets a port of its own from the OS — the listener's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SocketKey {
    Address(SocketAddr),
    Ephemeral(Box<str>),
}

impl std::fmt::Display for SocketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketKey::Address(a) => write!(f, "{a}"),
            SocketKey::Ephemeral(name) => write!(f, "{name} (port chosen by the OS)"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum CompiledTarget {
    Forward(Arc<ForwardTarget>),
    Redirect(RedirectId),
}

/// A backend pool reached with one backend settings: the pool's servers, each with the upstream
/// connection pool for its address and port.
#[derive(Debug)]
pub struct ForwardTarget {
    pub pool: PoolId,
    pub settings: SettingsId,
    pub rewrite_set: Option<RewriteSetId>,
    pub servers: Box<[TargetServer]>,
    /// This (pool, settings) pair's column in the snapshot's [`RequestMetrics`].
    pub metrics_col: usize,
}

#[derive(Debug)]
pub struct TargetServer {
    /// Index of the server in its pool.
    pub server: usize,
    pub upstream: Arc<Upstream>,
    /// The Host header this member gets, when the settings override the client's.
    pub host_header: Option<HeaderValue>,
    /// This server's health under these settings, published by the prober.
    pub health: Arc<Health>,
}

/// A backend pool's runtime state.
#[derive(Debug)]
pub struct Pool {
    pub name: Box<str>,
    next: AtomicUsize,
    pub servers: Box<[Server]>,
}

#[derive(Debug)]
pub struct Server {
    pub address: BackendAddress,
    /// The affinity cookie's value for this server: a stable digest, never the address itself.
    pub affinity_id: Box<str>,
}

impl Pool {
    /// The pool's next round-robin turn (see [`ForwardTarget::round_robin`]).
    pub fn next_turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

impl ForwardTarget {
    /// The server (index into `servers`) whose turn `turn` is: round robin over the servers in
    /// rotation only, so that each of them takes an equal share whatever the number and the
    /// position of those out of it. `None` when none is in rotation.
    pub fn round_robin(&self, turn: usize) -> Option<usize> {
        pick_in_rotation(turn, self.servers.len(), |i| {
            self.servers[i].health.takes_traffic()
        })
    }
}

/// The `turn % h`-th, in pool order, of the `h` servers among `0..n` that are `in_rotation`:
/// `h` consecutive turns visit each of them once. Counting only those in rotation is what keeps
/// the shares equal: skipping from a turn that falls on a server out of rotation to the next one
/// in would give that next server the turns of every server down before it. Two passes of
/// atomic loads, no lock, no allocation.
pub fn pick_in_rotation(
    turn: usize,
    n: usize,
    in_rotation: impl Fn(usize) -> bool,
) -> Option<usize> {
    let h = (0..n).filter(|&i| in_rotation(i)).count();
    if h == 0 {
        return None;
    }
    let mut left = turn % h;
    let mut last = None;
    for i in 0..n {
        if in_rotation(i) {
            if left == 0 {
                return Some(i);
            }
            left -= 1;
            last = Some(i);
        }
    }
    // A probe result changed the rotation between the two passes: any server still in it.
    last
}

/// What routing decided for one request.
#[derive(Debug)]
pub struct Routed<'a> {
    pub listener: ListenerId,
    pub rule: RuleId,
    pub target: &'a CompiledTarget,
    /// Bytes of the path consumed by a path rule's pattern (`/api/` for `/api/*`); a path
    /// override replaces them. `None` for basic rules and a path map's default.
    pub matched_prefix: Option<usize>,
    /// The message filter for a WebSocket session taken here: the path rule's, else the
    /// rule's, else the listener's.
    pub message_filter: Option<PluginId>,
}

#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub sockets: Box<[Socket]>,
    pub pools: Box<[Pool]>,
    /// Every probe target, ordered by pool, settings and server.
    pub targets: Box<[ProbedServer]>,
    /// Pool name → settings name → target, for router plugins' decisions; empty when no router
    /// plugin is configured.
    forward_targets: NameMap<NameMap<Arc<ForwardTarget>>>,
    /// Socket id → index into `sockets`. Sockets outlive snapshots (a reload keeps the
    /// sockets whose bind address stays), so connections name their socket by its id.
    /// Without [`Snapshot::assign_sockets`], socket id `i` is `sockets[i]`.
    by_socket_id: Box<[Option<usize>]>,
    /// Targets that left the configuration and are still draining, for the health view.
    pub draining: Box<[Arc<Health>]>,
    /// The configuration's redirects, by [`RedirectId`], compiled for answering requests.
    redirects: Box<[Redirection]>,
    /// The request counters, labelled with this configuration's names.
    pub metrics: Arc<RequestMetrics>,
}

impl Snapshot {
    /// Compiles a validated configuration. Upstream connection pools are shared with `previous`
    /// where the same address and port remain, so a reload keeps warm connections.
    pub fn build(config: Config, previous: Option<&Snapshot>, workers: usize) -> Self {
        let mut upstreams: HashMap<UpstreamKey, Arc<Upstream>> = HashMap::new();
        if let Some(prev) = previous {
            for f in prev.sockets.iter() {
                for r in f.routes.routes() {
                    for t in r.action.targets() {
                        let CompiledTarget::Forward(t) = &t.target else {
                            continue;
                        };
                        for m in t.servers.iter() {
                            upstreams
                                .entry(m.upstream.key())
                                .or_insert_with(|| m.upstream.clone());
                        }
                    }
                }
            }
        }

        let pools: Box<[Pool]> = config
            .backend_pools
            .iter()
            .map(|p| Pool {
                name: p.name.as_str().into(),
                next: AtomicUsize::new(0),
                servers: p
                    .addresses
                    .iter()
                    .map(|a| Server {
                        address: a.clone(),
                        affinity_id: affinity_id(&p.name, a),
                    })
                    .collect(),
            })
            .collect();

        // Health is kept per (pool, server address, settings) by name, so a server that stays
        // keeps its state across snapshots.
        let previous_health: HashMap<ServerKey, Arc<Health>> = previous
            .map(|prev| {
                prev.targets
                    .iter()
                    .map(|t| (t.health.key().clone(), t.health.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut targets: HashMap<(PoolId, usize, SettingsId), ProbedServer> = HashMap::new();

        let mut forward_cache: HashMap<
            (PoolId, SettingsId, Option<RewriteSetId>),
            Arc<ForwardTarget>,
        > = HashMap::new();
        // The (pool, settings) pairs in use, in the order their metrics columns were given.
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let mut compile = |target: &Target| -> CompiledTarget {
            match *target {
                Target::Redirect(r) => CompiledTarget::Redirect(r),
                Target::Forward {
                    pool,
                    settings,
                    rewrite_set,
                } => CompiledTarget::Forward(
                    forward_cache
                        .entry((pool, settings, rewrite_set))
                        .or_insert_with(|| {
                            let s = config.settings(settings);
                            let servers = config
                                .pool(pool)
                                .addresses
                                .iter()
                                .enumerate()
                                .map(|(server, a)| {
                                    let port = a.port.unwrap_or(s.port);
                                    let tls = UpstreamTls::for_settings(s, &a.host);
                                    let upstream = upstreams
                                        .entry(UpstreamKey::new(a.host.clone(), port, tls.as_ref()))
                                        .or_insert_with(|| {
                                            Arc::new(Upstream::with_tls(
                                                a.host.clone(),
                                                port,
                                                tls,
                                                workers,
                                            ))
                                        })
                                        .clone();
                                    let host_header = match &s.host {
                                        HostOverride::PassThrough => None,
                                        HostOverride::Fixed(v) => Some(v.clone()),
                                        HostOverride::FromBackendAddress => {
                                            HeaderValue::from_str(&a.host.to_string()).ok()
                                        }
                                    };
                                    let health = targets
                                        .entry((pool, server, settings))
                                        .or_insert_with(|| {
                                            let key = ServerKey {
                                                pool: config.pool(pool).name.as_str().into(),
                                                server: a.clone(),
                                                settings: s.name.as_str().into(),
                                            };
                                            ProbedServer {
                                                pool,
                                                server,
                                                settings,
                                                upstream: upstream.clone(),
                                                health: previous_health
                                                    .get(&key)
                                                    .cloned()
                                                    .unwrap_or_else(|| {
                                                        Arc::new(Health::new(key, workers))
                                                    }),
                                            }
                                        })
                                        .health
                                        .clone();
                                    TargetServer {
                                        server,
                                        upstream,
                                        host_header,
                                        health,
                                    }
                                })
                                .collect();
                            let metrics_col =
                                match pairs.iter().position(|&p| p == (pool.0, settings.0)) {
                                    Some(col) => col,
                                    None => {
                                        pairs.push((pool.0, settings.0));
                                        pairs.len() - 1
                                    }
                                };
                            Arc::new(ForwardTarget {
                                pool,
                                settings,
                                rewrite_set,
                                servers,
                                metrics_col,
                            })
                        })
                        .clone(),
                ),
            }
        };

        // Group listeners by socket. Port 0 asks the OS for a port per listener.
        let groups = route::sockets(config.listeners.iter().map(|l| (l.bind_address, l.port)));
        let sockets: Box<[Socket]> = groups
            .into_iter()
            .map(|ids| {
                let listeners: Box<[ListenerId]> = ids.into_iter().map(ListenerId).collect();
                let first = config.listener(listeners[0]);
                let bind = SocketAddr::new(first.bind_address, first.port);
                let key = if bind.port() == 0 {
                    SocketKey::Ephemeral(first.name.as_str().into())
                } else {
                    SocketKey::Address(bind)
                };
                let routes = config
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| listeners.contains(&rule.listener))
                    .map(|(ri, rule)| route::Route {
                        listener: rule.listener.0,
                        rule: ri,
                        priority: rule.priority,
                        host_names: config
                            .listener(rule.listener)
                            .host_names
                            .iter()
                            .map(|h| HostPattern::new(h.as_str()))
                            .collect(),
                        action: {
                            let filter = rule
                                .message_filter
                                .or(config.listener(rule.listener).message_filter);
                            let mut compile = |t: &Target, own: Option<PluginId>| RouteTarget {
                                target: compile(t),
                                message_filter: own.or(filter),
                            };
                            match rule.action {
                                RuleAction::Basic(t) => RouteAction::Target(compile(&t, None)),
                                RuleAction::PathBased(m) => {
                                    let map = &config.url_path_maps[m.0];
                                    RouteAction::PathMap {
                                        path_rules: map
                                            .path_rules
                                            .iter()
                                            .map(|pr| PathRoute {
                                                paths: pr
                                                    .paths
                                                    .iter()
                                                    .map(|p| PathPattern::new(p.as_str()))
                                                    .collect(),
                                                target: compile(&pr.target, pr.message_filter),
                                            })
                                            .collect(),
                                        default: compile(&map.default, None),
                                    }
                                }
                            }
                        },
                    })
                    .collect();
                Socket {
                    key,
                    bind,
                    protocol: first.protocol,
                    listeners,
                    routes: SocketRoutes::new(routes),
                }
            })
            .collect();

        // A router plugin may send a request to any pool with any settings, so with routers
        // configured every pair is compiled (and so probed); without them nothing changes.
        let mut forward_targets: NameMap<NameMap<Arc<ForwardTarget>>> = NameMap::default();
        if config.has_routers() {
            for (p, pool) in config.backend_pools.iter().enumerate() {
                let by_settings = forward_targets
                    .entry(pool.name.as_str().into())
                    .or_default();
                for (s, settings) in config.backend_settings.iter().enumerate() {
                    let target = Target::Forward {
                        pool: PoolId(p),
                        settings: SettingsId(s),
                        rewrite_set: None,
                    };
                    if let CompiledTarget::Forward(t) = compile(&target) {
                        by_settings.insert(settings.name.as_str().into(), t);
                    }
                }
            }
        }

        let mut targets: Vec<ProbedServer> = targets.into_values().collect();
        targets.sort_by_key(|t| (t.pool, t.settings, t.server));
        let redirects = config
            .redirects
            .iter()
            .map(|r| Redirection {
                to: match &r.target {
                    RedirectTarget::Url(url) => RedirectTo::Url(url.as_str().into()),
                    RedirectTarget::Listener(l) => {
                        let l = config.listener(*l);
                        RedirectTo::Listener {
                            https: l.protocol == Protocol::Https,
                            port: l.port,
                        }
                    }
                },
                include_path: r.include_path,
                include_query_string: r.include_query_string,
            })
            .collect();
        let by_socket_id = (0..sockets.len()).map(Some).collect();
        let metrics = Arc::new(RequestMetrics::new(&config, &pairs, workers));
        Snapshot {
            metrics,
            config,
            sockets,
            pools,
            targets: targets.into(),
            forward_targets,
            by_socket_id,
            draining: Box::new([]),
            redirects,
        }
    }

    /// Records each socket's id: `ids[i]` is the id of `sockets[i]`.
    pub fn assign_sockets(&mut self, ids: &[usize]) {
        let len = ids.iter().max().map_or(0, |m| m + 1);
        let mut by_socket_id = vec![None; len];
        for (index, &id) in ids.iter().enumerate() {
            by_socket_id[id] = Some(index);
        }
        self.by_socket_id = by_socket_id.into();
    }

    /// The index in `sockets` of the socket with id `socket`; `None` once its listeners were
    /// removed.
    #[inline]
    pub fn socket_index(&self, socket: usize) -> Option<usize> {
        self.by_socket_id.get(socket).copied().flatten()
    }

    /// The targets of `previous` (and those it was still draining) that this snapshot no longer
    /// has: the servers leaving the configuration.
    pub fn removed_targets(&self, previous: &Snapshot) -> Vec<(Arc<Health>, SettingsId)> {
        let kept: std::collections::HashSet<*const Health> = self
            .targets
            .iter()
            .map(|t| Arc::as_ptr(&t.health))
            .collect();
        previous
            .targets
            .iter()
            .filter(|t| !kept.contains(&Arc::as_ptr(&t.health)))
            .map(|t| (t.health.clone(), t.settings))
            .collect()
    }

    /// The targets this snapshot has that `previous` did not: servers new to their pool and
    /// settings, never probed. Targets that stay (same [`ServerKey`]) share their health.
    pub fn added_targets(&self, previous: &Snapshot) -> Vec<ProbedServer> {
        let known: std::collections::HashSet<*const Health> = previous
            .targets
            .iter()
            .map(|t| Arc::as_ptr(&t.health))
            .collect();
        self.targets
            .iter()
            .filter(|t| !known.contains(&Arc::as_ptr(&t.health)))
            .cloned()
            .collect()
    }

    /// The forward target for a pool and settings named by a router plugin.
    pub fn forward_target(&self, pool: &str, settings: &str) -> Option<&Arc<ForwardTarget>> {
        self.forward_targets.get(pool)?.get(settings)
    }

    /// Finds the listener, rule and target for a request on `socket`. `host` is the request's
    /// host without port; `path` excludes the query.
    // Not `#[inline]`: inlined into the request's future, this and `SocketRoutes::route` made
    // a keep-alive request cost about 780 more instructions (`scripts/instructions`).
    pub fn route(&self, socket: usize, host: &str, path: &str) -> Option<Routed<'_>> {
        let routed = self.sockets[socket].routes.route(host, path)?;
        Some(Routed {
            listener: ListenerId(routed.listener),
            rule: RuleId(routed.rule),
            target: &routed.target.target,
            matched_prefix: routed.matched_prefix,
            message_filter: routed.target.message_filter,
        })
    }

    /// Rule `rule`'s path map on `socket` evaluated again for `path`; `None` for a basic rule.
    pub fn reroute(&self, socket: usize, rule: RuleId, path: &str) -> Option<Routed<'_>> {
        let routed = self.sockets[socket].routes.reroute(rule.0, path)?;
        Some(Routed {
            listener: ListenerId(routed.listener),
            rule: RuleId(routed.rule),
            target: &routed.target.target,
            matched_prefix: routed.matched_prefix,
            message_filter: routed.target.message_filter,
        })
    }

    /// Where redirect `id` sends a request for `path` and `query` on `authority`.
    pub fn redirect_location(
        &self,
        id: RedirectId,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        self.redirects[id.0].location(authority, path, query)
    }

    pub fn pool(&self, id: PoolId) -> &Pool {
        &self.pools[id.0]
    }
}

/// 32 hex digits identifying a pool member, stable across restarts and gateway instances
/// (so affinity survives both) without revealing the address: two FNV-1a 64 passes with
/// different offsets over the pool name and address.
fn affinity_id(pool: &str, address: &BackendAddress) -> Box<str> {
    let text = format!("{pool}\u{0}{address}");
    let fnv = |mut h: u64| {
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x84222325_cbf29ce4)
    )
    .into()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::BackendHost;
    use crate::probe::{Group, ProbeResult};

    /// Each server's picks over `turns` consecutive turns from `first`.
    fn shares(first: usize, turns: usize, in_rotation: &[bool]) -> Vec<usize> {
        let mut shares = vec![0; in_rotation.len()];
        for turn in (0..turns).map(|k| first + k) {
            if let Some(i) = pick_in_rotation(turn, in_rotation.len(), |i| in_rotation[i]) {
                shares[i] += 1;
            }
        }
        shares
    }

    #[test]
    fn three_servers_the_middle_one_down_share_six_turns_three_and_three() {
        assert_eq!(shares(0, 6, &[true, false, true]), [3, 0, 3]);
    }

    /// Every up/down pattern of 1 to 7 servers: `h` consecutive turns, from any turn, visit
    /// each of the `h` servers in rotation exactly once and none out of it.
    #[test]
    fn every_up_down_pattern_gives_the_servers_in_rotation_equal_shares() {
        for n in 1..=7usize {
            for mask in 0..(1u32 << n) {
                let up: Vec<bool> = (0..n).map(|i| mask & (1 << i) != 0).collect();
                let h = up.iter().filter(|u| **u).count();
                if h == 0 {
                    assert!(
                        (0..n + 3).all(|t| pick_in_rotation(t, n, |i| up[i]).is_none()),
                        "none in rotation: no pick ({up:?})"
                    );
                    continue;
                }
                let expected: Vec<usize> = up.iter().map(|u| usize::from(*u)).collect();
                for first in [0, 1, h, 2 * h + 1, usize::MAX - h + 1] {
                    assert_eq!(
                        shares(first, h, &up),
                        expected,
                        "{h} turns from {first} over {up:?}"
                    );
                }
                let many: Vec<usize> = expected.iter().map(|e| e * 7).collect();
                assert_eq!(shares(3, 7 * h, &up), many, "{} turns over {up:?}", 7 * h);
            }
        }
    }

    #[test]
    fn turns_visit_the_servers_in_rotation_in_pool_order() {
        let up = [false, true, true, false, true];
        let picks: Vec<Option<usize>> = (0..6)
            .map(|t| pick_in_rotation(t, up.len(), |i| up[i]))
            .collect();
        assert_eq!(
            picks,
            [Some(1), Some(2), Some(4), Some(1), Some(2), Some(4)]
        );
    }

    fn cell(port: u16) -> Arc<Health> {
        Arc::new(Health::new(
            ServerKey {
                pool: "pool".into(),
                server: BackendAddress {
                    host: BackendHost::Ip([127, 0, 0, 1].into()),
                    port: Some(port),
                },
                settings: "settings".into(),
            },
            1,
        ))
    }

    fn probe(healthy: bool) -> ProbeResult {
        ProbeResult {
            healthy,
            reason: String::new(),
            latency: Duration::ZERO,
            at: SystemTime::now(),
            note: None,
        }
    }

    /// `min_servers` decides the rotation; the round robin shares turns over it, kept
    /// servers included.
    #[test]
    fn servers_kept_by_min_servers_share_the_turns_of_the_rotation() {
        let cells: Vec<Arc<Health>> = (1..=4).map(cell).collect();
        let group = Group::new(cells.clone(), 2);
        for c in &cells {
            group.record(c, probe(false), 1);
        }
        let rotation = |cells: &[Arc<Health>]| -> Vec<bool> {
            cells.iter().map(|c| c.takes_traffic()).collect()
        };
        let up = rotation(&cells);
        assert_eq!(
            up,
            [true, true, false, false],
            "all down: the first two kept"
        );
        assert_eq!(shares(0, 8, &up), [4, 4, 0, 0]);
        group.record(&cells[3], probe(true), 1);
        let up = rotation(&cells);
        assert_eq!(up, [true, false, false, true], "one healthy, one kept");
        assert_eq!(shares(5, 8, &up), [4, 0, 0, 4]);
    }
}
