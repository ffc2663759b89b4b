//! What a slow or idle client may hold: the connection wrapper that closes a kept-alive
//! connection idle since its last answer, and the request body that must keep a
//! minimum rate. hyper's own `header_read_timeout` (set in `server::run`) covers the
//! request head; these two cover the rest. Defaults and reasons: docs/security.md.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::app::App;

/// A connection that fails its reads once it has been idle for `timeout` since the
/// last bytes it wrote, with nothing read since: a client that got its answer and
/// keeps the connection open without a next request. While a request is in flight
/// the last activity is a read (or the answer being written), so long work such as a
/// dSYM conversion is never cut.
pub struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Whether the last activity was a write (an answer), so the clock runs.
    answered: bool,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            answered: false,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.answered = false;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.answered && this.sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle keep-alive connection timed out",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.answered = true;
            let deadline = Instant::now() + this.timeout;
            this.sleep.as_mut().reset(deadline);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.answered = true;
            let deadline = Instant::now() + this.timeout;
            this.sleep.as_mut().reset(deadline);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that must deliver `rate` bytes a second on average once `grace` has
/// passed since it was first read; otherwise it fails with [`BodyTooSlow`]. A whole
/// deadline would have to guess the size of chunked bodies; a rate scales with any.
pub struct MinRate {
    inner: Body,
    rate: u64,
    grace: Duration,
    started: Option<Instant>,
    received: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl MinRate {
    pub fn new(inner: Body, rate: u64, grace: Duration) -> Self {
        MinRate {
            inner,
            rate,
            grace,
            started: None,
            received: 0,
            sleep: None,
        }
    }

    /// When the next byte is due: the bytes so far plus one, at `rate`, after `grace`.
    fn due(&self, started: Instant) -> Instant {
        let secs = (self.received + 1) as f64 / self.rate as f64;
        started + self.grace + Duration::from_secs_f64(secs.min(1e9))
    }
}

/// A request body that fell below the minimum rate.
#[derive(Debug)]
pub struct BodyTooSlow {
    pub rate: u64,
}

impl fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body arrived slower than {} bytes per second",
            self.rate
        )
    }
}

impl StdError for BodyTooSlow {}

/// Whether `err` or anything it wraps is [`BodyTooSlow`].
pub fn is_too_slow(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<BodyTooSlow>() {
            return true;
        }
        next = err.source();
    }
    false
}

impl http_body::Body for MinRate {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        let due = this.due(started);
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow { rate: this.rate }))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: every request body keeps the configured minimum rate.
pub async fn min_body_rate(State(app): State<App>, request: Request, next: Next) -> Response {
    let limits = app.config().connections;
    if limits.min_body_rate == 0 {
        return next.run(request).await;
    }
    let request =
        request.map(|body| Body::new(MinRate::new(body, limits.min_body_rate, limits.body_grace)));
    next.run(request).await
}
