//! The new process's side of the handover: receive the sockets, then answer once serving.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;

use super::{HANDOVER_ENV, wire};
use crate::listener::Inherited;

/// A process started by an upgrade, until it answers the running one.
pub struct Takeover {
    stream: UnixStream,
    previous: u32,
}

impl Takeover {
    /// When this process was started by an upgrade ([`HANDOVER_ENV`] set): connects to the
    /// running process and receives its sockets. `None` otherwise.
    pub fn from_env() -> io::Result<Option<(Self, Inherited)>> {
        let Some(path) = std::env::var_os(HANDOVER_ENV) else {
            return Ok(None);
        };
        let mut stream = UnixStream::connect(&path)?;
        let offer: wire::Offer = wire::recv_json(&mut stream)?;
        if offer.version != wire::VERSION {
            let error = format!(
                "handover protocol version {} offered, this binary speaks {}",
                offer.version,
                wire::VERSION
            );
            let mut refusal = Takeover {
                stream,
                previous: offer.pid,
            };
            refusal.answer(&error);
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        let total = offer.sockets.iter().map(|s| s.count).sum();
        let mut fds = wire::recv_fds(&stream, total)?.into_iter();
        let mut sockets = HashMap::new();
        for socket in offer.sockets {
            let listeners: Vec<TcpListener> = fds
                .by_ref()
                .take(socket.count)
                .map(TcpListener::from)
                .collect();
            sockets.insert(socket.name, listeners);
        }
        tracing::info!(
            pid = offer.pid,
            sockets = sockets.len(),
            "upgrade: received the running process's sockets"
        );
        Ok(Some((
            Takeover {
                stream,
                previous: offer.pid,
            },
            Inherited::new(sockets),
        )))
    }

    /// The process being replaced.
    pub fn previous_pid(&self) -> u32 {
        self.previous
    }

    /// Tells the running process that this one serves: it stops accepting and drains.
    pub fn ready(mut self) -> io::Result<()> {
        wire::send_json(
            &mut self.stream,
            &wire::Answer::Ready {
                pid: std::process::id(),
            },
        )
    }

    /// Tells the running process why this one cannot start; it goes on serving.
    pub fn failed(mut self, error: &str) {
        self.answer(error);
    }

    fn answer(&mut self, error: &str) {
        let _ = wire::send_json(
            &mut self.stream,
            &wire::Answer::Failed {
                pid: std::process::id(),
                error: error.to_owned(),
            },
        );
    }
}
