//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), with colour codes only
//! when stderr is a terminal; the access log ([`AccessLog`]), written off the request path; and
//! the one format for points in time the gateway reports.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use time::OffsetDateTime;

use crate::config::AccessLogTarget;
use time::macros::format_description;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Records waiting for the writer; past this a record is dropped (and counted), so that a slow
/// disk never holds a worker.
const QUEUE: usize = 16 * 1024;

enum Message {
    Record(String),
    /// Open the file again (after logrotate moved it), or switch to another destination.
    Open(AccessLogTarget),
}

/// The access log's destination and its writer thread. Workers hand each record over a bounded
/// queue and never wait: when the queue is full the record is dropped and counted.
pub struct AccessLog {
    tx: SyncSender<Message>,
    target: Mutex<AccessLogTarget>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn new(target: AccessLogTarget) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let first = target.clone();
        let _ = std::thread::Builder::new()
            .name("wasmgate-access-log".into())
            .spawn(move || write_records(rx, first));
        Self {
            tx,
            target: Mutex::new(target),
            dropped,
        }
    }

    /// Whether records for `target` are written at all: a file always; standard error while
    /// `RUST_LOG` enables the `wasmgate::access` target.
    #[inline]
    pub fn enabled(target: &AccessLogTarget) -> bool {
        match target {
            AccessLogTarget::Off => false,
            AccessLogTarget::Stderr => {
                tracing::enabled!(target: "wasmgate::access", tracing::Level::INFO)
            }
            AccessLogTarget::File(_) => true,
        }
    }

    /// Queues one record (a line without its newline); drops it when the queue is full.
    pub fn write(&self, mut record: String) {
        record.push('\n');
        match self.tx.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Opens the file again (SIGUSR1, after logrotate renamed it).
    pub fn reopen(&self) {
        let target = self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = self.tx.send(Message::Open(target));
    }

    /// Switches to `target` when a reload changed it.
    pub fn retarget(&self, target: &AccessLogTarget) {
        let mut current = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if *current != *target {
            *current = target.clone();
            let _ = self.tx.send(Message::Open(target.clone()));
        }
    }
}

fn open(target: &AccessLogTarget) -> Option<Box<dyn Write + Send>> {
    match target {
        AccessLogTarget::Off => None,
        AccessLogTarget::Stderr => Some(Box::new(std::io::stderr())),
        AccessLogTarget::File(path) => {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => Some(Box::new(std::io::BufWriter::with_capacity(64 * 1024, f))),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the access log");
                    None
                }
            }
        }
    }
}

/// The writer thread: writes records as they come, flushes whenever the queue is empty, ends
/// when the gateway drops its [`AccessLog`].
fn write_records(rx: Receiver<Message>, target: AccessLogTarget) {
    let mut out = open(&target);
    while let Ok(mut message) = rx.recv() {
        loop {
            match message {
                Message::Record(line) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.write_all(line.as_bytes());
                    }
                }
                Message::Open(target) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.flush();
                    }
                    out = open(&target);
                }
            }
            match rx.try_recv() {
                Ok(next) => message = next,
                Err(_) => break,
            }
        }
        if let Some(w) = out.as_mut() {
            let _ = w.flush();
        }
    }
}

/// RFC 3339 in UTC with milliseconds (`2026-12-07T17:24:24.123Z`), as the admin API reports times.
pub fn rfc3339(t: SystemTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59.000Z"
        );
    }
}
