//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), with colour codes only
//! when stderr is a terminal; the access log ([`AccessLog`]), written off the request path; and
//! the one format for points in time the gateway reports.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use crossbeam_queue::ArrayQueue;

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

/// Batches waiting for the writer; past this a batch is dropped (and its records counted), so
/// that a slow disk never holds a worker.
const QUEUE: usize = 4 * 1024;

/// A worker hands its batch over once it holds this much, even if it has not gone idle yet.
const BATCH_BYTES: usize = 32 * 1024;

/// Spare batch buffers the writer gives back for the workers to fill again.
const SPARE_BUFFERS: usize = 32;

enum Message {
    /// Complete records, each ending with a newline.
    Batch(Vec<u8>),
    /// Open the file again (after logrotate moved it), or switch to another destination.
    Open(AccessLogTarget),
}

/// What the workers and the writer thread share.
struct Shared {
    tx: SyncSender<Message>,
    /// Emptied buffers, so that a batch costs no allocation once the log runs.
    spare: ArrayQueue<Vec<u8>>,
    dropped: AtomicU64,
}

/// The access log's destination and its writer thread. A worker writes each record straight
/// into a batch buffer of its own and hands the batch to the writer when it is about to wait
/// for events (or once the batch is large): one hand-over per batch, never a wait. When the
/// writer falls behind the batch is dropped and its records counted.
pub struct AccessLog {
    shared: Arc<Shared>,
    target: Mutex<AccessLogTarget>,
}

impl AccessLog {
    pub fn new(target: AccessLogTarget) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            tx,
            spare: ArrayQueue::new(SPARE_BUFFERS),
            dropped: AtomicU64::new(0),
        });
        let first = target.clone();
        // The writer holds the shared state weakly: it ends once the gateway and every batch
        // still waiting in a worker have let go of the sender.
        let spare = Arc::downgrade(&shared);
        let _ = std::thread::Builder::new()
            .name("wasmgate-access-log".into())
            .spawn(move || write_records(rx, first, spare));
        Self {
            shared,
            target: Mutex::new(target),
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

    /// Appends one record, which `write` puts into the buffer (without its newline), to this
    /// thread's batch. On a worker the batch goes to the writer when the worker is about to
    /// wait for events ([`flush_batch`]); on any other thread at once.
    pub fn write(&self, write: impl FnOnce(&mut Vec<u8>)) {
        BATCH.with(|batch| {
            let Ok(mut batch) = batch.try_borrow_mut() else {
                return;
            };
            if batch
                .log
                .as_ref()
                .is_some_and(|log| !Arc::ptr_eq(log, &self.shared))
            {
                batch.hand_over();
            }
            if batch.log.is_none() {
                batch.log = Some(self.shared.clone());
            }
            write(&mut batch.buf);
            batch.buf.push(b'\n');
            batch.records += 1;
            if !batch.until_idle || batch.buf.len() >= BATCH_BYTES {
                batch.hand_over();
            }
        });
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Opens the file again (SIGUSR1, after logrotate renamed it).
    pub fn reopen(&self) {
        let target = self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = self.shared.tx.send(Message::Open(target));
    }

    /// Switches to `target` when a reload changed it.
    pub fn retarget(&self, target: &AccessLogTarget) {
        let mut current = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if *current != *target {
            *current = target.clone();
            let _ = self.shared.tx.send(Message::Open(target.clone()));
        }
    }
}

/// One thread's records not yet handed to the writer.
struct Batch {
    buf: Vec<u8>,
    records: u64,
    /// The log the records are for (a thread may serve several gateways' logs, one at a time).
    log: Option<Arc<Shared>>,
    /// Whether this thread hands its batch over when it goes idle (a worker) rather than
    /// after each record.
    until_idle: bool,
}

thread_local! {
    static BATCH: RefCell<Batch> = const {
        RefCell::new(Batch { buf: Vec::new(), records: 0, log: None, until_idle: false })
    };
}

impl Batch {
    /// Hands the records to the writer, and takes a spare buffer for the next ones.
    fn hand_over(&mut self) {
        let Some(log) = self.log.take() else {
            return;
        };
        if self.buf.is_empty() {
            return;
        }
        let next = log
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buf.capacity()));
        let full = std::mem::replace(&mut self.buf, next);
        let records = std::mem::take(&mut self.records);
        match log.tx.try_send(Message::Batch(full)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                log.dropped.fetch_add(records, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.hand_over();
    }
}

/// Makes the calling thread (a worker) keep its access-log records until it goes idle, when it
/// must call [`flush_batch`].
pub fn batch_until_idle() {
    BATCH.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.until_idle = true;
        }
    });
}

/// Hands this thread's access-log records to the writer: a worker calls it before it waits for
/// events, so that a record is written as soon as its worker has nothing else to do.
pub fn flush_batch() {
    BATCH.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.hand_over();
        }
    });
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

/// The writer thread: writes batches as they come (a batch holds whole records), gives their
/// buffers back to the workers, and flushes whenever no batch is waiting, so that batches
/// queued together leave in one write; ends when the last sender is gone.
fn write_records(rx: Receiver<Message>, target: AccessLogTarget, shared: Weak<Shared>) {
    let mut out = open(&target);
    while let Ok(mut message) = rx.recv() {
        loop {
            match message {
                Message::Batch(mut batch) => {
                    if let Some(w) = out.as_mut() {
                        let _ = w.write_all(&batch);
                    }
                    batch.clear();
                    if batch.capacity() <= 4 * BATCH_BYTES
                        && let Some(shared) = shared.upgrade()
                    {
                        let _ = shared.spare.push(batch);
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
    let mut out = Vec::with_capacity(24);
    write_rfc3339(t, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `t` as [`rfc3339`] writes it. The date and time to the second are kept per thread
/// and made again only when the second changes, so that a log record pays for the
/// milliseconds only.
pub fn write_rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return write_rfc3339_slow(t, out);
    };
    let secs = since.as_secs();
    // 10000-01-01: later years need more digits than the cached form has.
    if secs >= 253_402_300_800 {
        return write_rfc3339_slow(t, out);
    }
    SECOND.with(|cached| {
        let (second, mut text) = cached.get();
        if second != secs {
            text = date_time(secs);
            cached.set((secs, text));
        }
        out.extend_from_slice(&text);
    });
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

thread_local! {
    /// The last second [`write_rfc3339`] wrote, and its text up to the seconds.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since the Unix epoch before the year 10000, from the
/// days' civil date (H. Hinnant's `civil_from_days`, proleptic Gregorian calendar).
fn date_time(secs: u64) -> [u8; 19] {
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    let mut digits = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, in_day / 3_600);
    digits(14, 2, in_day / 60 % 60);
    digits(17, 2, in_day % 60);
    text
}

fn write_rfc3339_slow(t: SystemTime, out: &mut Vec<u8>) {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let text = OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"));
    out.extend_from_slice(text.as_bytes());
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

    #[test]
    fn cached_dates_agree_with_the_calendar() {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut rng = fastrand::Rng::with_seed(7);
        let mut millis: Vec<u64> = (0..20_000)
            .map(|_| rng.u64(0..253_402_300_799_999))
            .collect();
        // Leap days, century and era boundaries, and the last representable millisecond.
        millis.extend([
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
            4_102_444_800_000,
            253_402_300_799_999,
        ]);
        for ms in millis {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let expected = OffsetDateTime::from(t).format(&format).unwrap();
            assert_eq!(rfc3339(t), expected, "{ms} ms");
            // Again, from the cached second.
            assert_eq!(rfc3339(t), expected, "{ms} ms");
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
    }
}
