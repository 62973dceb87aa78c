//! A plugin's stdout and stderr: each line goes to tracing (target `wasmgate::plugin`, tagged
//! with the plugin's name), and the end of stderr is kept so that an error can quote it (a Rust
//! guest's panic message, a Python traceback).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; the rest of a longer line is dropped.
const MAX_LINE: usize = 1024;
/// How much of stderr is kept for error messages.
const TAIL: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct State {
    line: Vec<u8>,
    /// Bytes of the current line beyond `MAX_LINE` that were dropped.
    dropped: usize,
    tail: Vec<u8>,
}

/// One stream of one instance. Clones share the state.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    plugin: Arc<str>,
    stream: Stream,
    state: Arc<Mutex<State>>,
    /// Whether stderr's tail may hold anything: most calls write nothing, and clearing then
    /// costs no lock.
    written: Arc<AtomicBool>,
}

impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>, stream: Stream) -> Self {
        GuestOutput {
            plugin,
            stream,
            state: Arc::default(),
            written: Arc::default(),
        }
    }

    fn write_bytes(&self, mut bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.stream == Stream::Stderr {
            self.written.store(true, Ordering::Relaxed);
            state
                .tail
                .extend_from_slice(&bytes[bytes.len().saturating_sub(TAIL)..]);
            let excess = state.tail.len().saturating_sub(TAIL);
            state.tail.drain(..excess);
        }
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            push_capped(&mut state, &bytes[..newline]);
            self.emit(&mut state);
            bytes = &bytes[newline + 1..];
        }
        push_capped(&mut state, bytes);
    }

    fn emit(&self, state: &mut State) {
        let line = String::from_utf8_lossy(&state.line);
        let line = line.trim_end_matches('\r');
        let dropped = state.dropped;
        match self.stream {
            // The Rust runtime's hint after a panic: the guest's environment is not the
            // operator's to set.
            Stream::Stderr if is_backtrace_hint(line) => {}
            Stream::Stdout => {
                tracing::info!(target: "wasmgate::plugin", plugin = %self.plugin, stream = "stdout", dropped, "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "wasmgate::plugin", plugin = %self.plugin, stream = "stderr", dropped, "{line}")
            }
        }
        state.line.clear();
        state.dropped = 0;
    }

    /// Logs a partial last line, and returns and clears what stderr kept.
    pub(crate) fn take_tail(&self) -> String {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.line.is_empty() {
            self.emit(&mut state);
        }
        let tail = String::from_utf8_lossy(&state.tail).trim().to_owned();
        state.tail.clear();
        tail
    }

    /// Forgets what stderr kept (at the start of each call).
    pub(crate) fn clear_tail(&self) {
        // Only this instance's calls write it, and they follow one another.
        if !self.written.load(Ordering::Relaxed) {
            return;
        }
        self.written.store(false, Ordering::Relaxed);
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tail
            .clear();
    }
}

fn push_capped(state: &mut State, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(state.line.len());
    let take = bytes.len().min(room);
    state.line.extend_from_slice(&bytes[..take]);
    state.dropped += bytes.len() - take;
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A failed call's reason in one line: a Rust guest's panic as `panicked at FILE:LINE:COL:
/// MESSAGE` (without the thread name and the backtrace hint, which a plugin's user cannot act
/// on), else the trap followed by the last line the guest wrote to stderr (a Python or
/// JavaScript exception's own line). The whole of stderr is in the log.
pub(crate) fn trap_reason(trap: &str, stderr: &str) -> String {
    if let Some(panic) = panic_message(stderr) {
        return panic;
    }
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !is_backtrace_hint(l));
    match last {
        Some(line) => format!("{trap} (stderr: {line})"),
        None => trap.to_owned(),
    }
}

/// `thread '<unnamed>' (1) panicked at src/lib.rs:9:9:` and the message lines after it →
/// `panicked at src/lib.rs:9:9: message`.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines.iter().rposition(|l| l.contains("panicked at "))?;
    let head = lines[start];
    let at = head[head.find("panicked at ")?..]
        .trim_end()
        .trim_end_matches(':');
    let message: Vec<&str> = lines[start + 1..]
        .iter()
        .map(|l| l.trim())
        .take_while(|l| !is_backtrace_hint(l))
        .filter(|l| !l.is_empty())
        .collect();
    Some(if message.is_empty() {
        at.to_owned()
    } else {
        format!("{at}: {}", message.join(" "))
    })
}

fn is_backtrace_hint(line: &str) -> bool {
    line.starts_with("note: run with `RUST_BACKTRACE") || line.starts_with("stack backtrace:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_reason_is_one_line_without_the_backtrace_hint() {
        let panic = "thread '<unnamed>' (1) panicked at src/lib.rs:12:9:\nboom\n\
                     note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            trap_reason("wasm trap: wasm `unreachable` instruction executed", panic),
            "panicked at src/lib.rs:12:9: boom"
        );
        let python = "Traceback (most recent call last):\n  File \"app.py\", line 3, in init\n\
                      ValueError: boom\n";
        assert_eq!(
            trap_reason("wasm trap: wasm `unreachable` instruction executed", python),
            "wasm trap: wasm `unreachable` instruction executed (stderr: ValueError: boom)"
        );
        assert_eq!(
            trap_reason("wasm trap: out of bounds", ""),
            "wasm trap: out of bounds"
        );
    }

    #[test]
    fn keeps_the_end_of_stderr_and_caps_lines() {
        let out = GuestOutput::new("t".into(), Stream::Stderr);
        out.write_bytes(b"first line\nsecond ");
        out.write_bytes(b"part\n");
        out.write_bytes(&vec![b'x'; 5000]);
        let tail = out.take_tail();
        assert_eq!(tail.len(), TAIL);
        assert!(out.take_tail().is_empty(), "taking clears");
        out.write_bytes(b"panicked at src/lib.rs:1:1:\nboom\n");
        assert_eq!(out.take_tail(), "panicked at src/lib.rs:1:1:\nboom");
        let state = out.state.lock().unwrap();
        assert!(state.line.is_empty());
    }
}
