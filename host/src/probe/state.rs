//! Health state of one probe target — a pool server reached with one backend settings — and the
//! rotation rule of its group (the pool's servers under those settings).
//!
//! The data plane reads one atomic flag per target ([`Health::takes_traffic`]); everything else
//! here is written by the prober and read by the health view.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use slab::Slab;
use tokio::time::Sleep;

use serde::{Deserialize, Serialize};

use crate::config::BackendAddress;

/// A server's health as Application Gateway's backend health view names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// No probe has answered yet; the server takes no traffic.
    Unknown,
    Healthy,
    Unhealthy,
    /// Leaving the pool with connection draining (after a configuration change).
    Draining,
}

impl Status {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Status::Healthy,
            2 => Status::Unhealthy,
            3 => Status::Draining,
            _ => Status::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Status::Unknown => 0,
            Status::Healthy => 1,
            Status::Unhealthy => 2,
            Status::Draining => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "Unknown",
            Status::Healthy => "Healthy",
            Status::Unhealthy => "Unhealthy",
            Status::Draining => "Draining",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies a probe target across configurations: names and the address as written, not
/// indexes, so that a new snapshot can take over the state of targets it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub pool: Box<str>,
    pub server: BackendAddress,
    pub settings: Box<str>,
}

/// The latest probe of a target, for the health view.
#[derive(Debug, Clone, Default)]
pub struct Detail {
    /// The last probe's result in words ("Timeout: no answer within 30 s").
    pub reason: Option<String>,
    pub last_probe: Option<SystemTime>,
    pub latency: Option<Duration>,
    pub consecutive_failures: u32,
    /// Something the operator should know beside the result, e.g. a stale DNS answer in use.
    pub note: Option<String>,
    /// Probes answered healthy and unhealthy since the target was first probed.
    pub probes_healthy: u64,
    pub probes_unhealthy: u64,
    /// Every probe's latency.
    pub latencies: crate::metrics::HistogramValue,
}

/// The result of one probe.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub healthy: bool,
    pub reason: String,
    pub latency: Duration,
    pub at: SystemTime,
    pub note: Option<String>,
}

/// The health of one (pool server, backend settings) pair.
#[derive(Debug)]
pub struct Health {
    key: ServerKey,
    status: AtomicU8,
    /// Whether new requests may go to this server with these settings: healthy, or kept by
    /// `min_servers`. The only field the data plane reads.
    routable: AtomicBool,
    detail: Mutex<Detail>,
    /// Set once the target leaves the configuration: when its WebSocket sessions (and, with
    /// connection draining on, its in-flight requests) are ended.
    drain: tokio::sync::watch::Sender<Option<Drain>>,
    /// Whether `drain` is set: what a waiting request looks at.
    draining: AtomicBool,
    /// The tasks of requests waiting for a response from this target, by worker thread (see
    /// [`Health::request_cut`]), woken when a drain starts.
    waiting: Box<[Mutex<Slab<Waker>>]>,
}

/// A target leaving the configuration: it takes no new requests; what is in flight may finish
/// until `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub deadline: tokio::time::Instant,
    /// Whether requests still waiting for their response at the deadline are cut (connection
    /// draining on). Without draining they finish within their request timeout; WebSocket
    /// sessions always end at the deadline, with a Close 1001.
    pub cut_requests: bool,
}

impl Health {
    /// A new target: Unknown, out of rotation until its first probe succeeds. `workers` is the
    /// number of threads whose requests may wait for it.
    pub fn new(key: ServerKey, workers: usize) -> Self {
        Self {
            key,
            status: AtomicU8::new(Status::Unknown.as_u8()),
            routable: AtomicBool::new(false),
            detail: Mutex::new(Detail::default()),
            drain: tokio::sync::watch::Sender::new(None),
            draining: AtomicBool::new(false),
            waiting: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes the target out of rotation for good (Application Gateway's connection draining):
    /// the status becomes Draining, probes no longer change it, and [`Health::drained`]
    /// completes at the deadline. Draining an already draining target changes nothing.
    pub fn start_draining(&self, drain: Drain) {
        let started = self.drain.send_if_modified(|d| {
            if d.is_some() {
                return false;
            }
            *d = Some(drain);
            true
        });
        if started {
            // Set before the waiting requests are looked at: one that registers after its
            // shard was looked at sees the flag (see `RequestCut::poll`).
            self.draining.store(true, Ordering::Release);
            for shard in &self.waiting {
                for (_, waker) in lock(shard).iter() {
                    waker.wake_by_ref();
                }
            }
        }
        self.set_routable(false);
        self.publish(Status::Draining);
    }

    /// The drain in progress, if the target is leaving.
    pub fn drain(&self) -> Option<Drain> {
        *self.drain.borrow()
    }

    /// Completes when a drain that cuts requests reaches its deadline; never for a target that
    /// stays. This races every request waiting for its response, so it is cheap while no drain
    /// has started: one atomic load, and its task's waker kept in its worker's own list, where
    /// only that worker and a starting drain ever look.
    pub fn request_cut(&self) -> RequestCut<'_> {
        RequestCut {
            health: self,
            registered: None,
            deadline: None,
        }
    }

    /// Completes when the target's drain deadline passes; never for a target that stays. For
    /// long-lived sessions (WebSocket), which end at the deadline of any drain.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.drain.subscribe();
        async move {
            let deadline = match rx.wait_for(|d| d.is_some()).await {
                Ok(d) => d.map(|d| d.deadline),
                // The target is gone and was never drained: nothing to wait for.
                Err(_) => None,
            };
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        }
    }

    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// Whether the server takes new requests with these settings (one atomic load).
    #[inline]
    pub fn takes_traffic(&self) -> bool {
        self.routable.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Acquire))
    }

    pub fn detail(&self) -> Detail {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detail> {
        lock(&self.detail)
    }

    /// Applies a probe result (Application Gateway's rule: up after one success, down after
    /// `threshold` consecutive failures; a server never seen healthy is down at its first
    /// failure). Returns the status before and after. A target in a [`Group`] is updated
    /// through [`Group::record`] instead, which keeps the rotation in step.
    pub fn record(&self, result: ProbeResult, threshold: u32) -> (Status, Status) {
        let (before, after) = self.judge(result, threshold);
        self.publish(after);
        (before, after)
    }

    /// Records the result in the detail and returns the status it leads to, unpublished.
    fn judge(&self, result: ProbeResult, threshold: u32) -> (Status, Status) {
        let mut detail = self.lock();
        let before = self.status();
        if before == Status::Draining {
            // A probe that was in flight when the target left the configuration.
            return (before, before);
        }
        if result.healthy {
            detail.probes_healthy += 1;
        } else {
            detail.probes_unhealthy += 1;
        }
        detail.latencies.record(result.latency);
        let after = if result.healthy {
            detail.consecutive_failures = 0;
            Status::Healthy
        } else {
            detail.consecutive_failures = detail.consecutive_failures.saturating_add(1);
            match before {
                Status::Healthy if detail.consecutive_failures < threshold => Status::Healthy,
                _ => Status::Unhealthy,
            }
        };
        detail.reason = Some(result.reason);
        detail.last_probe = Some(result.at);
        detail.latency = Some(result.latency);
        detail.note = result.note;
        (before, after)
    }

    fn publish(&self, status: Status) {
        self.status.store(status.as_u8(), Ordering::Release);
    }

    fn set_routable(&self, routable: bool) {
        // Release: ordered before the status published after it (see `Group::record`).
        self.routable.store(routable, Ordering::Release);
    }
}

/// The servers of one pool under one backend settings: `min_servers` applies across them.
#[derive(Debug)]
pub struct Group {
    /// In pool order.
    cells: Box<[Arc<Health>]>,
    min_servers: usize,
    rebalancing: Mutex<()>,
}

impl Group {
    pub fn new(cells: Vec<Arc<Health>>, min_servers: u32) -> Self {
        let group = Self {
            cells: cells.into(),
            min_servers: min_servers as usize,
            rebalancing: Mutex::new(()),
        };
        group.rebalance();
        group
    }

    /// Applies a probe result to `cell`, one of this group's, and returns the status before
    /// and after. On a change the rotation is updated before the new status is published, so
    /// whoever sees a server marked down also sees it out of rotation.
    pub fn record(&self, cell: &Health, result: ProbeResult, threshold: u32) -> (Status, Status) {
        let _one_at_a_time = self.rebalancing.lock().unwrap_or_else(|e| e.into_inner());
        let (before, after) = cell.judge(result, threshold);
        if before != after {
            self.rotate(Some((cell, after)));
        }
        cell.publish(after);
        (before, after)
    }

    /// Puts the healthy servers in rotation, plus — when fewer than `min_servers` are healthy —
    /// the first others in pool order, so that at least `min_servers` stay in rotation.
    pub fn rebalance(&self) {
        let _one_at_a_time = self.rebalancing.lock().unwrap_or_else(|e| e.into_inner());
        self.rotate(None);
    }

    /// The rotation, with `pending`'s cell counted at its coming status.
    fn rotate(&self, pending: Option<(&Health, Status)>) {
        let status = |c: &Health| match pending {
            Some((p, s)) if std::ptr::eq(p, c) => s,
            _ => c.status(),
        };
        let healthy = self
            .cells
            .iter()
            .filter(|c| status(c) == Status::Healthy)
            .count();
        let mut extra = self.min_servers.saturating_sub(healthy);
        for cell in self.cells.iter() {
            if status(cell) == Status::Draining {
                continue;
            }
            let routable = status(cell) == Status::Healthy
                || (extra > 0 && {
                    extra -= 1;
                    true
                });
            cell.set_routable(routable);
        }
    }
}

/// A request's wait on a draining target (see [`Health::request_cut`]).
pub struct RequestCut<'a> {
    health: &'a Health,
    /// The shard and slot of this task's waker, and the waker kept there.
    registered: Option<(usize, usize, Waker)>,
    /// The drain's deadline, once a drain that cuts requests has started.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl RequestCut<'_> {
    fn unregister(&mut self) {
        if let Some((shard, key, _)) = self.registered.take() {
            lock(&self.health.waiting[shard]).try_remove(key);
        }
    }
}

impl Future for RequestCut<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            return deadline.as_mut().poll(cx);
        }
        if this.health.draining.load(Ordering::Acquire) {
            this.unregister();
            return match this.health.drain() {
                Some(d) if d.cut_requests => {
                    let deadline = this
                        .deadline
                        .insert(Box::pin(tokio::time::sleep_until(d.deadline)));
                    deadline.as_mut().poll(cx)
                }
                // A drain that lets requests finish never cuts this one.
                _ => Poll::Pending,
            };
        }
        match &mut this.registered {
            Some((_, _, kept)) if kept.will_wake(cx.waker()) => return Poll::Pending,
            Some((shard, key, kept)) => {
                if let Some(slot) = lock(&this.health.waiting[*shard]).get_mut(*key) {
                    slot.clone_from(cx.waker());
                }
                kept.clone_from(cx.waker());
            }
            None => {
                let waiting = &this.health.waiting;
                let shard = crate::workers::current() % waiting.len();
                let key = lock(&waiting[shard]).insert(cx.waker().clone());
                this.registered = Some((shard, key, cx.waker().clone()));
            }
        }
        // A drain that started while this task registered may have missed it.
        if this.health.draining.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl Drop for RequestCut<'_> {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// A lock on plain data; a panic while it was held leaves nothing half-done.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendHost;

    fn cell(n: u16) -> Arc<Health> {
        Arc::new(Health::new(
            ServerKey {
                pool: "pool".into(),
                server: BackendAddress {
                    host: BackendHost::Ip([127, 0, 0, 1].into()),
                    port: Some(n),
                },
                settings: "settings".into(),
            },
            2,
        ))
    }

    fn result(healthy: bool) -> ProbeResult {
        ProbeResult {
            healthy,
            reason: if healthy {
                "Success"
            } else {
                "Connection refused"
            }
            .into(),
            latency: Duration::from_millis(1),
            at: SystemTime::now(),
            note: None,
        }
    }

    #[test]
    fn unknown_until_the_first_answer() {
        let h = cell(1);
        assert_eq!(h.status(), Status::Unknown);
        assert!(!h.takes_traffic());
        assert_eq!(
            h.record(result(true), 3),
            (Status::Unknown, Status::Healthy)
        );
        let h = cell(2);
        assert_eq!(
            h.record(result(false), 3),
            (Status::Unknown, Status::Unhealthy),
            "a server never seen healthy is down at its first failure"
        );
    }

    #[test]
    fn down_after_threshold_failures_up_after_one_success() {
        let h = cell(1);
        h.record(result(true), 3);
        assert_eq!(h.record(result(false), 3).1, Status::Healthy);
        assert_eq!(h.record(result(false), 3).1, Status::Healthy);
        assert_eq!(h.detail().consecutive_failures, 2);
        assert_eq!(h.record(result(false), 3).1, Status::Unhealthy);
        assert_eq!(h.detail().consecutive_failures, 3);
        assert_eq!(h.record(result(true), 3).1, Status::Healthy);
        assert_eq!(h.detail().consecutive_failures, 0);
        // A success in between restarts the count.
        h.record(result(false), 3);
        h.record(result(false), 3);
        h.record(result(true), 3);
        assert_eq!(h.record(result(false), 3).1, Status::Healthy);
    }

    #[test]
    fn min_servers_keeps_the_first_servers_in_rotation() {
        let cells = vec![cell(1), cell(2), cell(3)];
        let group = Group::new(cells.clone(), 2);
        let routable = || cells.iter().map(|c| c.takes_traffic()).collect::<Vec<_>>();
        assert_eq!(routable(), [true, true, false], "before any probe");
        group.record(&cells[2], result(true), 3);
        assert_eq!(routable(), [true, false, true], "one healthy, one kept");
        group.record(&cells[1], result(true), 3);
        assert_eq!(routable(), [false, true, true], "two healthy, none kept");
    }

    fn waiting(cell: &Health) -> usize {
        cell.waiting.iter().map(|shard| lock(shard).len()).sum()
    }

    /// A task standing for a request waiting on `target`: it ends when the request is cut.
    fn waiting_request(target: &Arc<Health>) -> tokio::task::JoinHandle<()> {
        let target = target.clone();
        tokio::spawn(async move { target.request_cut().await })
    }

    /// On tokio's paused clock, a `sleep` lets every other task run until it waits, and the
    /// drain's deadline passes exactly when due.
    #[tokio::test(start_paused = true)]
    async fn a_drain_that_cuts_requests_wakes_a_waiting_request_and_ends_it_at_the_deadline() {
        let target = cell(1);
        let request = waiting_request(&target);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!request.is_finished(), "waits while the target stays");
        assert_eq!(waiting(&target), 1, "its task is registered");
        let started = tokio::time::Instant::now();
        target.start_draining(Drain {
            deadline: started + Duration::from_millis(50),
            cut_requests: true,
        });
        tokio::time::timeout(Duration::from_secs(2), request)
            .await
            .expect("the request is cut")
            .expect("join");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took <= Duration::from_millis(51),
            "cut at the deadline, to the timer's millisecond: {took:?}"
        );
        assert_eq!(waiting(&target), 0, "nothing left registered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_lets_requests_finish_never_cuts_one() {
        let target = cell(1);
        let request = waiting_request(&target);
        tokio::time::sleep(Duration::from_millis(10)).await;
        target.start_draining(Drain {
            deadline: tokio::time::Instant::now(),
            cut_requests: false,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!request.is_finished());
        assert_eq!(waiting(&target), 0, "a drained target keeps no wakers");
        request.abort();
    }

    #[test]
    fn a_request_that_ends_leaves_no_waker_behind() {
        let target = cell(1);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            let mut cut = std::pin::pin!(target.request_cut());
            assert!(cut.as_mut().poll(&mut cx).is_pending());
            assert!(cut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(waiting(&target), 1);
        }
        assert_eq!(waiting(&target), 0);
    }
}
