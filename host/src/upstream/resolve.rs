//! DNS for backend names, with Application Gateway's rule for failures: a name that stops
//! resolving keeps its last good addresses, and the health view says so.
//!
//! Every new connection resolves again, so a changed answer is picked up as soon as the system
//! resolver (and its cache, which honours the records' TTL) returns it.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

/// The last good answer for one name and port.
#[derive(Debug, Default)]
pub struct LastGood {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone)]
struct State {
    addrs: Vec<SocketAddr>,
    /// Set while lookups fail and the last good addresses stand in.
    failing: Option<Stale>,
}

/// A name whose lookups fail while its last good addresses are in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub since: SystemTime,
    pub error: String,
    pub addrs: Vec<SocketAddr>,
}

impl LastGood {
    /// Resolves `name`; on failure, the last good addresses if there are any.
    pub async fn resolve(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let fresh = tokio::net::lookup_host((name, port))
            .await
            .map(|addrs| addrs.collect::<Vec<_>>());
        self.record(fresh)
    }

    /// Takes a lookup's outcome: keeps a good answer, or falls back to the last one.
    pub fn record(&self, fresh: io::Result<Vec<SocketAddr>>) -> io::Result<Vec<SocketAddr>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let error = match fresh {
            Ok(addrs) if !addrs.is_empty() => {
                state.addrs.clone_from(&addrs);
                state.failing = None;
                return Ok(addrs);
            }
            Ok(_) => io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            Err(e) => e,
        };
        if state.addrs.is_empty() {
            return Err(error);
        }
        if state.failing.is_none() {
            tracing::warn!(error = %error, addrs = ?state.addrs, "DNS lookup failed; keeping the last good addresses");
        }
        let addrs = state.addrs.clone();
        let since = state
            .failing
            .as_ref()
            .map_or_else(SystemTime::now, |s| s.since);
        state.failing = Some(Stale {
            since,
            error: error.to_string(),
            addrs: addrs.clone(),
        });
        Ok(addrs)
    }

    /// Set while the name does not resolve and its last good addresses are used.
    pub fn stale(&self) -> Option<Stale> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failing
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_good_answer_and_says_so() {
        let dns = LastGood::default();
        let good = vec![SocketAddr::from(([10, 0, 0, 4], 80))];
        let failure = || Err(io::Error::other("no such host"));

        assert!(dns.record(failure()).is_err(), "never resolved: an error");
        assert_eq!(dns.record(Ok(good.clone())).unwrap(), good);
        assert_eq!(dns.stale(), None);

        assert_eq!(dns.record(failure()).unwrap(), good, "last good kept");
        let stale = dns.stale().expect("stale while failing");
        assert_eq!(stale.addrs, good);
        assert_eq!(stale.error, "no such host");
        dns.record(failure()).unwrap();
        assert_eq!(
            dns.stale().unwrap().since,
            stale.since,
            "failing since the first failure"
        );

        let moved = vec![SocketAddr::from(([10, 0, 0, 5], 80))];
        assert_eq!(dns.record(Ok(moved.clone())).unwrap(), moved);
        assert_eq!(dns.stale(), None, "a good answer ends the fallback");
    }
}
