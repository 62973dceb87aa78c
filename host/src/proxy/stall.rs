//! A backend that stops sending in the middle of a response body. The request timeout bounds
//! the wait for the response head; past it, the same timeout bounds each silence within the
//! body, so a stalled backend cannot hold the client (and both connections) forever. The body
//! then fails, which cuts the client's connection: its status is already sent, and a body that
//! simply ended could look complete (a chunked body would get its last chunk).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a [`StallGuard`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} in the middle of a response body")]
pub struct BodyStalled(pub Duration);

/// `B`, failing once it has been silent for `idle`. The timer is armed only while the body
/// waits for the backend, so a body that is already there costs no timer.
pub struct StallGuard<B> {
    body: B,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
}

impl<B> StallGuard<B> {
    pub fn new(body: B, idle: Duration) -> Self {
        Self {
            body,
            idle,
            timer: None,
            progressed: false,
        }
    }
}

impl<B> Body for StallGuard<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.progressed = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.idle;
        match &mut this.timer {
            None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(timer) if this.progressed => timer.as_mut().reset(deadline),
            Some(_) => {}
        }
        this.progressed = false;
        let timer = this.timer.as_mut().expect("armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    // On tokio's paused clock: the silences are exact, however slow the machine.
    #[tokio::test(start_paused = true)]
    async fn silence_longer_than_idle_fails_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = StallGuard::new(StreamBody::new(stream), Duration::from_millis(300));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // Silence shorter than the limit, then a frame: the timer starts again.
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sender
                .send(Ok(Frame::data(Bytes::from_static(b"b"))))
                .await
                .unwrap();
        });
        assert!(body.frame().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(err.is::<BodyStalled>(), "{err}");
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
