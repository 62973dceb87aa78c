//! `limits.max_connections`: how many client connections one listening socket serves at once,
//! and the polite refusal past it.
//!
//! The gateway keeps accepting (so a full accept queue never leaves clients hanging in SYN
//! retries) and answers a connection over the limit at once: a plain-HTTP client gets a short
//! 503 with `Retry-After` (RFC 9110 §15.6.4), then the close; a TLS client is closed before
//! its handshake, since it could not read a plain-text answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Protocol;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 57\r\n\r\n503 Service Unavailable: too many connections, try again\n";

/// How long a refused connection is drained after the 503, so that closing it with the
/// client's request unread does not reset the connection before the client reads the answer.
const LINGER: Duration = Duration::from_millis(500);

/// The connections a socket is serving.
#[derive(Debug, Default, Clone)]
pub struct Slots(Arc<AtomicUsize>);

/// One connection's place in [`Slots`], given back when the connection ends.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    /// A slot for a new connection, or `None` when `max` connections are already served.
    pub fn take(&self, max: Option<usize>) -> Option<Slot> {
        let taken = self.0.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|max| taken >= max) {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.0.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection over the limit and closes it, off the accept loop.
pub fn refuse(stream: TcpStream, scheme: Protocol) {
    if scheme == Protocol::Https {
        return;
    }
    tokio::spawn(async move {
        let mut stream = stream;
        let answered = async {
            stream.write_all(BUSY).await?;
            stream.shutdown().await?;
            // Bounded by LINGER: read what the client sent until it closes too.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(LINGER, answered).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let slots = Slots::default();
        let a = slots.take(Some(2)).expect("first");
        let _b = slots.take(Some(2)).expect("second");
        assert!(slots.take(Some(2)).is_none(), "a third is over the limit");
        drop(a);
        assert!(
            slots.take(Some(2)).is_some(),
            "a slot given back is free again"
        );
        assert!(slots.take(None).is_some(), "no limit");
    }
}
