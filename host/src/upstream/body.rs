//! The request body sent upstream, and how a client's HTTP/2 body ends.
//!
//! An HTTP/2 request is malformed when its DATA frames add up to more or less than its
//! `content-length` (RFC 9113 §8.1.1); h2 resets the stream when it sees that. But the upstream
//! HTTP/1.1 request, framed by that same `content-length`, is complete as soon as the declared
//! bytes are written, and the backend would answer it before the client's extra DATA arrived.
//! So the last byte of a declared length is held back until the client's stream has ended
//! (END_STREAM): an overflow then fails the body, and the upstream request is aborted instead of
//! served. Clients send END_STREAM on the last DATA frame almost always, so nothing is held; when
//! it comes in a frame of its own, the upstream request waits for that frame.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body sent upstream: the client's body streamed through, or nothing (which makes a request
/// replayable on another member).
#[derive(Debug)]
pub enum RequestBody {
    Incoming(ClientBody),
    /// The client's body with `limits.max_request_body` counted as it streams.
    Capped(http_body_util::Limited<ClientBody>),
    Empty,
}

impl RequestBody {
    /// A client body declared empty (`content-length: 0`) on an HTTP/2 stream that has not
    /// ended: the upstream request's head would complete it, so it is sent only after
    /// [`RequestBody::wait_for_end`].
    pub fn declared_empty_and_open(&self) -> bool {
        matches!(self, RequestBody::Incoming(b) if b.declared_empty_and_open())
    }

    /// Waits for the end of a body [declared empty and open](Self::declared_empty_and_open),
    /// which then becomes [`RequestBody::Empty`]. Fails when the client's stream turns out
    /// malformed (DATA after all, which h2 resets) or is reset.
    pub async fn wait_for_end(&mut self) -> Result<(), BoxError> {
        if let RequestBody::Incoming(body) = self {
            let inner = &mut body.inner;
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut *inner).poll_frame(cx)).await
            {
                if frame?.data_ref().is_some_and(|d| !d.is_empty()) {
                    return Err(LongerThanDeclared.into());
                }
            }
        }
        *self = RequestBody::Empty;
        Ok(())
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Capped(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Capped(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Capped(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A client's request body as hyper delivers it; on HTTP/2, with the last byte of a declared
/// length held back until the stream ends (see the module's documentation).
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    /// HTTP/2: its stream's end is a frame of its own, apart from the declared length.
    http2: bool,
    /// The declared length's last byte, until the client's stream has ended.
    held: Option<Bytes>,
}

/// DATA past the declared `content-length` (which h2 resets the stream for before this is seen).
#[derive(Debug, thiserror::Error)]
#[error("the request body is longer than its content-length")]
struct LongerThanDeclared;

impl ClientBody {
    pub fn new(inner: Incoming, http2: bool) -> Self {
        Self {
            inner,
            http2,
            held: None,
        }
    }

    fn declared_empty_and_open(&self) -> bool {
        self.http2 && self.inner.size_hint().exact() == Some(0) && !self.inner.is_end_stream()
    }

    /// With the last byte held: waits for the stream's end, then gives the byte.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                // Trailers end the stream too; an HTTP/1.1 message framed by Content-Length
                // carries none, so they go no further (as without the hold).
                None => return Poll::Ready(self.held.take().map(|b| Ok(Frame::data(b)))),
                Some(Ok(f)) if f.is_trailers() => {
                    return Poll::Ready(self.held.take().map(|b| Ok(Frame::data(b))));
                }
                Some(Ok(f)) if f.data_ref().is_some_and(Bytes::is_empty) => continue,
                Some(Ok(_)) => return Poll::Ready(Some(Err(LongerThanDeclared.into()))),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.held.is_some() {
            return this.poll_end(cx);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other.map(|r| r.map_err(Into::into))),
        };
        if !this.http2 {
            return Poll::Ready(Some(Ok(frame)));
        }
        match frame.into_data() {
            Ok(mut data) => {
                // The declared length is complete and the stream is still open: keep the last
                // byte back until END_STREAM shows that nothing follows.
                if !data.is_empty()
                    && this.inner.size_hint().exact() == Some(0)
                    && !this.inner.is_end_stream()
                {
                    this.held = Some(data.split_off(data.len() - 1));
                    if data.is_empty() {
                        return this.poll_end(cx);
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(trailers) => Poll::Ready(Some(Ok(trailers))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(held) = &self.held {
            let n = held.len() as u64;
            hint.set_lower(hint.lower() + n);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
        }
        hint
    }
}
