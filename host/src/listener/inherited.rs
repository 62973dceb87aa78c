//! Listening sockets inherited from the process this one replaces (a binary upgrade): the same
//! OS sockets, received as descriptors, found by what identifies them in a configuration.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;

/// The inherited sockets not claimed yet, by name: a [`SocketKey`](crate::snapshot::SocketKey)'s
/// text for a listener's socket, [`Inherited::ADMIN`] for the admin listener's.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Mutex<HashMap<String, Vec<TcpListener>>>,
}

impl Inherited {
    /// The name of the admin listener's socket.
    pub const ADMIN: &'static str = "admin";

    pub fn new(sockets: HashMap<String, Vec<TcpListener>>) -> Self {
        Self {
            sockets: Mutex::new(sockets),
        }
    }

    /// Takes the sockets inherited under `name` (none when there are none).
    pub fn take(&self, name: &str) -> Vec<TcpListener> {
        self.lock().remove(name).unwrap_or_default()
    }

    /// Closes the sockets no listener claimed (the new configuration dropped them) and returns
    /// their names. Called once the previous process stopped accepting on them, so no
    /// connection waits in their queues any more than it would on a reload that removes them.
    pub fn release(&self) -> Vec<String> {
        self.lock().drain().map(|(name, _)| name).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<TcpListener>>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }
}
