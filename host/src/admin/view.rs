//! The backend health view: Application Gateway's `backendHealth` shape (pool → settings →
//! servers, camelCase), with names where Azure has resource ids, plus what the portal leaves
//! out: whether the server is in rotation, the last probe's time and latency, and the count of
//! consecutive failures.

use crate::telemetry::rfc3339;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::probe::Status;
use crate::snapshot::Snapshot;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendHealth {
    pub backend_address_pools: Vec<PoolHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolHealth {
    pub backend_address_pool: PoolRef,
    pub backend_http_settings_collection: Vec<SettingsHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsHealth {
    pub backend_http_settings: SettingsRef,
    pub servers: Vec<ServerHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsRef {
    pub name: String,
    /// The custom probe's name; `None` for the default probe.
    pub probe: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerHealth {
    /// As written in the pool (`10.0.0.4:8080`, `app.internal`).
    pub address: String,
    pub health: Status,
    /// The last probe's result in words.
    pub health_probe_log: String,
    /// Whether new requests go to this server: healthy, or kept by `min_servers`.
    pub in_rotation: bool,
    /// RFC 3339, UTC.
    pub last_probe_time: Option<String>,
    pub latency_ms: Option<f64>,
    pub consecutive_failures: u32,
    /// E.g. a DNS name that stopped resolving, served at its last good address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl BackendHealth {
    /// The view of every pool, and of each settings it is used with.
    pub fn of(snapshot: &Snapshot) -> Self {
        let config = &snapshot.config;
        let backend_address_pools = config
            .backend_pools
            .iter()
            .enumerate()
            .map(|(pool_index, pool)| {
                let mut collection: Vec<SettingsHealth> = Vec::new();
                // `targets` is ordered by pool, settings, server.
                for t in snapshot.targets.iter().filter(|t| t.pool.0 == pool_index) {
                    let settings = config.settings(t.settings);
                    if collection
                        .last()
                        .is_none_or(|c| c.backend_http_settings.name != settings.name)
                    {
                        collection.push(SettingsHealth {
                            backend_http_settings: SettingsRef {
                                name: settings.name.clone(),
                                probe: settings.probe.map(|p| config.probes[p.0].name.clone()),
                            },
                            servers: Vec::new(),
                        });
                    }
                    let detail = t.health.detail();
                    let status = t.health.status();
                    let server = ServerHealth {
                        address: pool.addresses[t.server].to_string(),
                        health: status,
                        health_probe_log: detail
                            .reason
                            .unwrap_or_else(|| "Waiting for the first probe".into()),
                        in_rotation: t.health.takes_traffic(),
                        last_probe_time: detail.last_probe.map(rfc3339),
                        latency_ms: detail
                            .latency
                            .map(|l| (l.as_secs_f64() * 1e5).round() / 100.0),
                        consecutive_failures: detail.consecutive_failures,
                        note: detail.note,
                    };
                    if let Some(c) = collection.last_mut() {
                        c.servers.push(server);
                    }
                }
                PoolHealth {
                    backend_address_pool: PoolRef {
                        name: pool.name.clone(),
                    },
                    backend_http_settings_collection: collection,
                }
            })
            .collect();
        let mut view = Self {
            backend_address_pools,
        };
        view.add_draining(snapshot);
        view
    }

    /// Servers that left the configuration and are still draining, under their pool and
    /// settings (which may be gone from the configuration themselves).
    fn add_draining(&mut self, snapshot: &Snapshot) {
        let now = tokio::time::Instant::now();
        for health in snapshot.draining.iter() {
            let Some(drain) = health.drain().filter(|d| d.deadline > now) else {
                continue;
            };
            let key = health.key();
            let pools = &mut self.backend_address_pools;
            let p = match pools
                .iter()
                .position(|p| *p.backend_address_pool.name == *key.pool)
            {
                Some(p) => p,
                None => {
                    pools.push(PoolHealth {
                        backend_address_pool: PoolRef {
                            name: key.pool.to_string(),
                        },
                        backend_http_settings_collection: Vec::new(),
                    });
                    pools.len() - 1
                }
            };
            let collection = &mut pools[p].backend_http_settings_collection;
            let c = match collection
                .iter()
                .position(|c| *c.backend_http_settings.name == *key.settings)
            {
                Some(c) => c,
                None => {
                    collection.push(SettingsHealth {
                        backend_http_settings: SettingsRef {
                            name: key.settings.to_string(),
                            probe: None,
                        },
                        servers: Vec::new(),
                    });
                    collection.len() - 1
                }
            };
            let detail = health.detail();
            let left = drain.deadline - now;
            collection[c].servers.push(ServerHealth {
                address: key.server.to_string(),
                health: health.status(),
                health_probe_log: format!(
                    "Removed from the configuration; draining for {:.1} s more",
                    left.as_secs_f64()
                ),
                in_rotation: false,
                last_probe_time: detail.last_probe.map(rfc3339),
                latency_ms: detail
                    .latency
                    .map(|l| (l.as_secs_f64() * 1e5).round() / 100.0),
                consecutive_failures: detail.consecutive_failures,
                note: detail.note,
            });
        }
    }

    /// The view as a table, one line per server, for `wasmgate health`.
    pub fn table(&self) -> String {
        const HEAD: [&str; 8] = [
            "POOL",
            "SETTINGS",
            "SERVER",
            "HEALTH",
            "IN ROTATION",
            "LAST PROBE (UTC)",
            "LATENCY",
            "FAILURES",
        ];
        let mut rows: Vec<([String; 8], String)> = Vec::new();
        for pool in &self.backend_address_pools {
            if pool.backend_http_settings_collection.is_empty() {
                let mut cells: [String; 8] = Default::default();
                cells[0] = pool.backend_address_pool.name.clone();
                cells[1] = "-".into();
                rows.push((cells, "not used by any rule".into()));
            }
            for settings in &pool.backend_http_settings_collection {
                let name = match &settings.backend_http_settings.probe {
                    Some(p) => format!("{} (probe {p})", settings.backend_http_settings.name),
                    None => settings.backend_http_settings.name.clone(),
                };
                for s in &settings.servers {
                    let mut details = s.health_probe_log.clone();
                    if let Some(note) = &s.note {
                        details.push_str("; ");
                        details.push_str(note);
                    }
                    rows.push((
                        [
                            pool.backend_address_pool.name.clone(),
                            name.clone(),
                            s.address.clone(),
                            s.health.to_string(),
                            if s.in_rotation { "yes" } else { "no" }.into(),
                            s.last_probe_time.as_deref().map_or("-".into(), short_time),
                            s.latency_ms.map_or("-".into(), latency),
                            s.consecutive_failures.to_string(),
                        ],
                        details,
                    ));
                }
            }
        }
        text_table(&HEAD, "DETAILS", &rows, "(no backend pools)")
    }
}

/// A plain-text table for the CLI: the columns of `head` padded to their widest cell, then a
/// last, unpadded column; `empty` stands in for a table without rows.
pub fn text_table<const N: usize>(
    head: &[&str; N],
    last: &str,
    rows: &[([String; N], String)],
    empty: &str,
) -> String {
    let mut widths = head.map(|h| h.chars().count());
    for (cells, _) in rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str], last: &str| {
        for (c, w) in cells.iter().zip(widths) {
            let _ = write!(out, "{c:<w$}  ");
        }
        let _ = writeln!(out, "{last}");
    };
    line(&mut out, head, last);
    for (cells, details) in rows {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        line(&mut out, &cells, details);
    }
    if rows.is_empty() {
        out.push_str(empty);
        out.push('\n');
    }
    out
}

fn latency(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// `2026-05-01T12:00:01.234Z` → `2026-05-01 12:00:01`.
fn short_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let t = t.split('.').next().unwrap_or(t);
    t.replacen('T', " ", 1)
}

/// One plugin as `GET /api/plugins` shows it: its active version's identity and stats, and a
/// shadow candidate's comparison when one runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    pub name: String,
    /// "router", "probe" or "message-filter".
    pub kind: &'static str,
    /// "active", or "not_loaded" (declared without a component, or unloaded).
    pub state: &'static str,
    /// Whether the configuration declares it (else only the admin API loaded it).
    pub in_config: bool,
    /// "fail_closed" or "fail_open".
    pub fail_policy: &'static str,
    /// SHA-256 of the active component, hex.
    pub content_hash: Option<String>,
    /// The active component's file, or "upload".
    pub origin: Option<String>,
    pub loaded_at: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub deadlines: u64,
    pub traps: u64,
    pub memory_limits: u64,
    pub invalid_decisions: u64,
    /// Calls refused while the breaker was open.
    pub rejected: u64,
    pub call_p50_us: Option<u64>,
    pub call_p99_us: Option<u64>,
    /// "closed", "open" or "half_open".
    pub breaker: &'static str,
    /// While open: milliseconds until the trial call.
    pub breaker_retry_in_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::plugin::ShadowReport>,
    /// A message filter's counters, over its versions.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterView>,
}

/// What a message filter did, as `GET /api/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterView {
    pub messages_in: u64,
    pub messages_out: u64,
    /// Neither forwarded nor replaced.
    pub messages_dropped: u64,
    pub messages_replaced: u64,
    pub messages_answered: u64,
    /// Sessions the filter closed.
    pub sessions_closed: u64,
    pub sessions_refused: u64,
    pub filter_failures: u64,
}

impl PluginView {
    pub fn of(slot: &crate::plugin::PluginSlot) -> Self {
        use crate::config::FailPolicy;
        use crate::plugin::BreakerState;
        let active = slot.active();
        let stats = active
            .as_ref()
            .map(|v| v.plugin.stats())
            .unwrap_or_default();
        let (breaker, retry_in) = match active.as_ref().map(|v| v.plugin.breaker_state()) {
            None | Some(BreakerState::Closed) => ("closed", None),
            Some(BreakerState::Open { retry_in, .. }) => {
                ("open", Some(retry_in.as_millis() as u64))
            }
            Some(BreakerState::HalfOpen) => ("half_open", None),
        };
        PluginView {
            name: slot.name().to_owned(),
            kind: slot.kind().as_str(),
            state: if active.is_some() {
                "active"
            } else {
                "not_loaded"
            },
            in_config: slot.is_declared(),
            fail_policy: match slot.fail_policy() {
                FailPolicy::FailClosed => "fail_closed",
                FailPolicy::FailOpen => "fail_open",
            },
            content_hash: active.as_ref().map(|v| v.content_hash.clone()),
            origin: active.as_ref().map(|v| v.origin.clone()),
            loaded_at: active.as_ref().map(|v| rfc3339(v.loaded_at)),
            calls: stats.calls,
            errors: stats.failures,
            deadlines: stats.deadlines,
            traps: stats.traps,
            memory_limits: stats.memory_limits,
            invalid_decisions: stats.invalid_decisions,
            rejected: stats.rejected,
            call_p50_us: stats.call_time_p50.map(|d| d.as_micros() as u64),
            call_p99_us: stats.call_time_p99.map(|d| d.as_micros() as u64),
            breaker,
            breaker_retry_in_ms: retry_in,
            shadow: slot.shadow().map(|s| s.report()),
            filter: slot.filter_metrics().map(|m| {
                let c = m.counts();
                FilterView {
                    messages_in: c.messages_in,
                    messages_out: c.messages_out,
                    messages_dropped: c.dropped,
                    messages_replaced: c.replaced,
                    messages_answered: c.answered,
                    sessions_closed: c.sessions_closed,
                    sessions_refused: c.sessions_refused,
                    filter_failures: c.failures,
                }
            }),
        }
    }
}

/// Every plugin: the configuration's in order, then those only the admin API loaded.
pub fn plugins(registry: &crate::plugin::PluginRegistry) -> Vec<PluginView> {
    registry.all().iter().map(|s| PluginView::of(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BackendHealth {
        BackendHealth {
            backend_address_pools: vec![
                PoolHealth {
                    backend_address_pool: PoolRef { name: "web".into() },
                    backend_http_settings_collection: vec![SettingsHealth {
                        backend_http_settings: SettingsRef {
                            name: "web-settings".into(),
                            probe: Some("health".into()),
                        },
                        servers: vec![
                            ServerHealth {
                                address: "10.0.0.4:8080".into(),
                                health: Status::Healthy,
                                health_probe_log: "Success: received 200".into(),
                                in_rotation: true,
                                last_probe_time: Some("2026-05-01T12:00:01.234Z".into()),
                                latency_ms: Some(1.25),
                                consecutive_failures: 0,
                                note: None,
                            },
                            ServerHealth {
                                address: "app.internal".into(),
                                health: Status::Unhealthy,
                                health_probe_log: "Timeout: no answer within 30 s".into(),
                                in_rotation: false,
                                last_probe_time: Some("2026-05-01T12:00:02.000Z".into()),
                                latency_ms: Some(30000.0),
                                consecutive_failures: 3,
                                note: Some("DNS lookup failed (x); using the last good address 10.0.0.9:80".into()),
                            },
                        ],
                    }],
                },
                PoolHealth {
                    backend_address_pool: PoolRef {
                        name: "spare".into(),
                    },
                    backend_http_settings_collection: vec![],
                },
            ],
        }
    }

    #[test]
    fn table_has_one_aligned_line_per_server() {
        let table = sample().table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[0].starts_with("POOL ") && lines[0].ends_with("DETAILS"),
            "{table}"
        );
        assert!(lines[1].contains("web-settings (probe health)"), "{table}");
        assert!(
            lines[1].contains("Healthy") && lines[1].contains("1.2 ms"),
            "{table}"
        );
        assert!(lines[1].contains("2026-05-01 12:00:01"), "{table}");
        assert!(
            lines[2].contains("Unhealthy")
                && lines[2].contains("Timeout: no answer within 30 s; DNS lookup failed"),
            "{table}"
        );
        assert!(lines[3].starts_with("spare") && lines[3].contains("not used by any rule"));
        let col = |l: &str| {
            l.find("HEALTH")
                .or_else(|| l.find("Healthy"))
                .or_else(|| l.find("Unhealthy"))
        };
        assert_eq!(col(lines[0]), col(lines[1]), "columns line up:\n{table}");
        assert_eq!(col(lines[1]), col(lines[2]), "columns line up:\n{table}");
    }

    #[test]
    fn json_uses_application_gateways_names() {
        let json = serde_json::to_value(sample()).unwrap();
        let server =
            &json["backendAddressPools"][0]["backendHttpSettingsCollection"][0]["servers"][0];
        assert_eq!(server["health"], "Healthy");
        assert_eq!(server["healthProbeLog"], "Success: received 200");
        assert_eq!(server["inRotation"], true);
        assert_eq!(server["consecutiveFailures"], 0);
        assert!(server.get("note").is_none());
        let back: BackendHealth = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }
}
