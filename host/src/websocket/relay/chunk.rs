//! The relay's read buffers: 16 KiB chunks borrowed from a per-thread free list for the
//! duration of a read, and kept only while their bytes wait to be written, so that idle
//! sessions hold no buffer.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Size of a relay chunk: one read, one write.
pub(in crate::websocket) const CHUNK_SIZE: usize = 16 * 1024;

/// Chunks kept per thread for reuse; beyond that they are freed, so a burst
/// of busy sessions does not pin memory forever.
const FREE_CHUNKS_PER_THREAD: usize = 64;

thread_local! {
    static FREE_CHUNKS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Chunks currently borrowed on this thread, to check idle sessions hold none.
    static CHUNKS_OUT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// Chunks borrowed on this thread and not yet given back.
#[cfg(test)]
pub(super) fn borrowed_on_this_thread() -> isize {
    CHUNKS_OUT.with(|n| n.get())
}

/// A relay buffer borrowed from the per-thread free list; dropping it gives
/// it back (tasks may migrate, so it may land on another thread's list).
pub(in crate::websocket) struct Chunk(Box<[u8]>);

impl Chunk {
    pub(in crate::websocket) fn take() -> Self {
        #[cfg(test)]
        CHUNKS_OUT.with(|n| n.set(n.get() + 1));
        let reused = FREE_CHUNKS
            .try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten();
        Chunk(reused.unwrap_or_else(|| vec![0; CHUNK_SIZE].into_boxed_slice()))
    }

    /// A one-off buffer holding `bytes`, for more than a chunk's worth; never reused.
    pub(super) fn oversized(bytes: &[u8]) -> Self {
        #[cfg(test)]
        CHUNKS_OUT.with(|n| n.set(n.get() + 1));
        Chunk(bytes.into())
    }
}

impl Deref for Chunk {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Chunk {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        #[cfg(test)]
        let _ = CHUNKS_OUT.try_with(|n| n.set(n.get() - 1));
        let buf = std::mem::take(&mut self.0);
        // `try_with` fails only while the thread is being torn down; the
        // buffer is then simply freed.
        let _ = FREE_CHUNKS.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < FREE_CHUNKS_PER_THREAD && buf.len() == CHUNK_SIZE {
                free.push(buf);
            }
        });
    }
}
