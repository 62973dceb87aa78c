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
    BackendAddress, Config, HostOverride, ListenerId, PoolId, Protocol, RedirectId, RedirectTarget,
    RewriteSetId, RuleAction, RuleId, SettingsId, Target,
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
    routes: SocketRoutes<CompiledTarget>,
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
    /// Round robin over the healthy servers, starting after the last one picked.
    pub fn next_start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
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
                        let CompiledTarget::Forward(t) = t else {
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
                        action: match rule.action {
                            RuleAction::Basic(t) => RouteAction::Target(compile(&t)),
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
                                            target: compile(&pr.target),
                                        })
                                        .collect(),
                                    default: compile(&map.default),
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
            target: routed.target,
            matched_prefix: routed.matched_prefix,
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
