//! Small vectored writes on a socket, sent as one `send`.
//!
//! hyper hands a response or request to its stream as several slices (the head, then each
//! body chunk) and, on a stream that says it writes vectored, passes them to one
//! `poll_write_vectored`. On a TCP socket that is a `writev`, which goes through the kernel's
//! generic file layer before it reaches the socket, and on the proxy's keep-alive path it costs
//! measurably more than a `send` of the same bytes. Up to [`GATHER_MAX`] bytes in all are
//! therefore copied into one buffer on the stack and sent with a single `send`; larger writes
//! stay vectored, so a body is never copied for its own sake.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Vectored writes up to this many bytes in all are gathered and sent as one buffer.
pub const GATHER_MAX: usize = 4096;

/// Writes `bufs` to `w`: gathered into one buffer when they are several and small, as they
/// are otherwise. Returns how many bytes were written, from the start of `bufs`, as
/// `poll_write_vectored` does.
pub fn poll_write_gathered<W: AsyncWrite + ?Sized>(
    w: Pin<&mut W>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut filled = bufs.iter().filter(|b| !b.is_empty());
    let Some(first) = filled.next() else {
        return w.poll_write(cx, &[]);
    };
    if filled.next().is_none() {
        return w.poll_write(cx, first);
    }
    let total = bufs
        .iter()
        .try_fold(0usize, |n, b| n.checked_add(b.len()))
        .unwrap_or(usize::MAX);
    if total > GATHER_MAX {
        return w.poll_write_vectored(cx, bufs);
    }
    let mut scratch = [MaybeUninit::<u8>::uninit(); GATHER_MAX];
    let mut len = 0;
    for b in bufs {
        scratch[len..len + b.len()].write_copy_of_slice(b);
        len += b.len();
    }
    // SAFETY: the first `len` bytes of `scratch` were initialized by the loop above.
    #[allow(unsafe_code)]
    let gathered = unsafe { std::slice::from_raw_parts(scratch.as_ptr().cast::<u8>(), len) };
    w.poll_write(cx, gathered)
}

/// A stream whose vectored writes are gathered (see [`poll_write_gathered`]). For the
/// gateway's TCP connections to backends.
#[derive(Debug)]
pub struct Gathering<T>(pub T);

impl<T> Gathering<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gathering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_gathered(Pin::new(&mut self.0), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Small writes of several slices arrive whole and in order, large ones too, and a socket
    /// that takes only part of a write reports a prefix of the slices.
    #[tokio::test]
    async fn gathered_writes_arrive_whole_and_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut sender = Gathering(sender.unwrap());
        let (mut receiver, _) = accepted.unwrap();

        let big = vec![7u8; GATHER_MAX * 3];
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![b"HTTP/1.1 200 OK\r\n\r\n", b"", b"hello"],
            vec![b"", b"only one"],
            vec![&big[..GATHER_MAX - 3], b"abc"],
            vec![b"head", &big],
        ];
        for case in cases {
            let expected: Vec<u8> = case.concat();
            let mut offset = 0;
            while offset < expected.len() {
                // Rebuild the slices past what was written, as hyper does.
                let mut skip = offset;
                let rest: Vec<IoSlice<'_>> = case
                    .iter()
                    .filter_map(|s| {
                        if skip >= s.len() {
                            skip -= s.len();
                            None
                        } else {
                            let slice = IoSlice::new(&s[skip..]);
                            skip = 0;
                            Some(slice)
                        }
                    })
                    .collect();
                let n = sender.write_vectored(&rest).await.unwrap();
                assert!(n > 0);
                offset += n;
            }
            let mut got = vec![0u8; expected.len()];
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                receiver.read_exact(&mut got),
            )
            .await
            .expect("the bytes arrive")
            .unwrap();
            assert_eq!(got, expected);
        }
        sender.shutdown().await.unwrap();
        let mut end = [0u8; 1];
        assert_eq!(receiver.read(&mut end).await.unwrap(), 0);
    }
}
