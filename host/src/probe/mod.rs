//! Health probing: every (pool server, backend settings) pair in use is probed in the background
//! with its settings' custom probe, or Application Gateway's default probe
//! (`GET /` with Host `127.0.0.1`, every 30 s, timeout 30 s, down after 3 failures, healthy on
//! 200-399). Results land in each target's [`Health`] cell, which the data plane reads with one
//! atomic load.
//!
//! Each target has one task and at most one probe in flight. Every target is probed at once at
//! start (the gateway serves once this first round has answered, see [`first_round_bound`]), and
//! a reload probes the targets it adds before routing to them; after that the probes of
//! different targets are spread over the interval (a random phase, then ±10 % per round), so
//! many targets never probe in step.

mod check;
pub mod evaluate;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::uri::PathAndQuery;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::config::{
    BackendAddress, BackendSettings, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_UNHEALTHY_THRESHOLD, HostOverride, PoolId, Probe, ProbeHost, SettingsId,
};
use crate::upstream::Upstream;

pub use check::{BODY_LIMIT, USER_AGENT};
pub use evaluate::{Evaluator, NativeEvaluator, ProbeResponse, Verdict};
pub use state::{Detail, Drain, Group, Health, ProbeResult, ServerKey, Status};

use self::check::{Check, PluginJudge};

/// A (pool server, backend settings) pair in use: what the prober probes.
#[derive(Debug, Clone)]
pub struct ProbedServer {
    pub pool: PoolId,
    /// Index of the server in its pool.
    pub server: usize,
    pub settings: SettingsId,
    pub upstream: Arc<Upstream>,
    pub health: Arc<Health>,
}

/// The running probes of one snapshot. Dropping it stops them.
#[derive(Debug)]
pub struct Prober {
    tasks: Vec<JoinHandle<()>>,
    first: Arc<FirstRound>,
}

/// Counts the targets still waiting for their first probe result.
#[derive(Debug)]
pub struct FirstRound {
    pending: AtomicUsize,
    done: Notify,
}

impl FirstRound {
    /// Waits until every target has had its first probe answered (or failed), at most
    /// `timeout`; returns whether they all have.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.done.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pending.load(Ordering::Acquire) == 0;
            }
        }
    }

    fn one_done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }
}

/// How one target is probed.
struct Plan {
    check: Check,
    interval: Duration,
    threshold: u32,
}

impl Prober {
    /// Starts probing `targets`, which `config` describes. Needs a tokio runtime.
    /// Probes of settings (or probes) that name a probe plugin are judged by it; `plugins` is
    /// indexed by [`PluginId`](crate::config::PluginId).
    pub fn start(
        config: &Config,
        targets: &[ProbedServer],
        plugins: &[Arc<crate::plugin::PluginSlot>],
    ) -> Self {
        let mut groups: BTreeMap<(PoolId, SettingsId), Vec<&ProbedServer>> = BTreeMap::new();
        for t in targets {
            groups.entry((t.pool, t.settings)).or_default().push(t);
        }
        let first = Arc::new(FirstRound {
            pending: AtomicUsize::new(targets.len()),
            done: Notify::new(),
        });
        let mut tasks = Vec::with_capacity(targets.len());
        for ((pool, settings_id), mut targets) in groups {
            targets.sort_by_key(|t| t.server);
            let settings = config.settings(settings_id);
            let probe = settings.probe.map(|p| &config.probes[p.0]);
            let group = Arc::new(Group::new(
                targets.iter().map(|t| t.health.clone()).collect(),
                probe.map_or(0, |p| p.min_servers),
            ));
            let evaluator: Arc<dyn Evaluator> = Arc::new(match probe {
                Some(p) => NativeEvaluator::for_probe(p),
                None => NativeEvaluator::default_probe(),
            });
            for t in targets {
                let server = &config.pool(pool).addresses[t.server];
                let mut plan = plan(t, server, settings, probe, evaluator.clone());
                plan.check.judge = settings.probe_plugin.map(|id| PluginJudge {
                    plugin: plugins[id.0].clone(),
                    pool: config.pool(pool).name.clone(),
                    settings: settings.name.clone(),
                    server: server.to_string(),
                });
                tasks.push(tokio::spawn(watch(
                    plan,
                    t.health.clone(),
                    group.clone(),
                    first.clone(),
                )));
            }
        }
        Self { tasks, first }
    }

    /// Waits until every target has had its first probe answered (or failed), at most
    /// `timeout`; returns whether they all have.
    pub async fn wait_for_first_probes(&self, timeout: Duration) -> bool {
        self.first.wait(timeout).await
    }

    /// The first round of probes, to wait for without holding the prober.
    pub fn first_round(&self) -> Arc<FirstRound> {
        self.first.clone()
    }

    /// Stops every probe.
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Stops every probe and returns once none can record a result any more (an aborted task
    /// may be recording one on another thread when the abort comes).
    pub async fn stop_and_wait(&mut self) {
        let tasks: Vec<JoinHandle<()>> = self.tasks.drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// How long the first round of probes of `targets` may take: the longest probe timeout among
/// them, plus a second for a probe plugin's judgement (its calls have limits of their own).
/// Past it, a target still waiting for its first answer is left Unknown.
pub fn first_round_bound(config: &Config, targets: &[ProbedServer]) -> Duration {
    let longest = targets
        .iter()
        .map(|t| {
            config
                .settings(t.settings)
                .probe
                .map_or(DEFAULT_PROBE_TIMEOUT, |p| config.probes[p.0].timeout)
        })
        .max()
        .unwrap_or_default();
    longest + FIRST_ROUND_MARGIN
}

/// What [`first_round_bound`] adds to the probe timeout.
const FIRST_ROUND_MARGIN: Duration = Duration::from_secs(1);

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

fn plan(
    target: &ProbedServer,
    server: &BackendAddress,
    settings: &BackendSettings,
    probe: Option<&Probe>,
    evaluator: Arc<dyn Evaluator>,
) -> Plan {
    let loopback = HeaderValue::from_static("127.0.0.1");
    let settings_host = || match &settings.host {
        HostOverride::Fixed(v) => Some(v.clone()),
        HostOverride::FromBackendAddress => HeaderValue::from_str(&server.host.to_string()).ok(),
        HostOverride::PassThrough => None,
    };
    let host = match probe.map(|p| &p.host) {
        None | Some(ProbeHost::FromBackendSettings) => settings_host().unwrap_or(loopback),
        Some(ProbeHost::Fixed(v)) => v.clone(),
        Some(ProbeHost::Loopback) => loopback,
    };
    // A probe on another port than the traffic's reaches the server through an upstream of
    // its own; otherwise through the traffic's (with a connection of its own, see `check`).
    let upstream = match probe.and_then(|p| p.port) {
        Some(port) if port != target.upstream.key().port => Arc::new(Upstream::with_tls(
            server.host.clone(),
            port,
            target.upstream.tls().cloned(),
            // Probes take a connection of their own each time: nothing is pooled per worker.
            1,
        )),
        _ => target.upstream.clone(),
    };
    let path = probe
        .and_then(|p| PathAndQuery::try_from(p.path.as_str()).ok())
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Plan {
        check: Check {
            upstream,
            path,
            host,
            timeout: probe.map_or(DEFAULT_PROBE_TIMEOUT, |p| p.timeout),
            evaluator,
            judge: None,
        },
        interval: probe.map_or(DEFAULT_PROBE_INTERVAL, |p| p.interval),
        threshold: probe.map_or(DEFAULT_UNHEALTHY_THRESHOLD, |p| p.unhealthy_threshold),
    }
}

/// Probes one target until stopped.
async fn watch(plan: Plan, health: Arc<Health>, group: Arc<Group>, first: Arc<FirstRound>) {
    let mut conn = None;
    let mut first_round = true;
    // A target kept by a configuration reload has been probed already: it keeps its state and
    // its schedule (the next probe one interval after the last), so frequent reloads never
    // turn into bursts of probes.
    if let Some(last) = health.detail().last_probe {
        first.one_done();
        first_round = false;
        let since = last.elapsed().unwrap_or_default();
        let wait = plan
            .interval
            .mul_f64(0.9 + 0.2 * fastrand::f64())
            .saturating_sub(since);
        tokio::time::sleep(wait).await;
    }
    loop {
        let started = tokio::time::Instant::now();
        let result = plan.check.run(&mut conn).await;
        let (before, after) = group.record(&health, result, plan.threshold);
        if before != after {
            let key = health.key();
            let detail = health.detail();
            let reason = detail.reason.as_deref().unwrap_or_default();
            if after == Status::Healthy {
                tracing::info!(pool = %key.pool, server = %key.server, settings = %key.settings, from = %before, to = %after, reason, "backend health changed");
            } else {
                tracing::warn!(pool = %key.pool, server = %key.server, settings = %key.settings, from = %before, to = %after, reason, "backend health changed");
            }
        }
        // The first round gives each target a random phase within the interval.
        let wait = if first_round {
            first.one_done();
            first_round = false;
            plan.interval.mul_f64(fastrand::f64())
        } else {
            plan.interval.mul_f64(0.9 + 0.2 * fastrand::f64())
        };
        tokio::time::sleep_until(started + wait).await;
    }
}
