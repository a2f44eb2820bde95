//! Cuts off connections that go silent or drip: a read that waits longer than the limit fails, which closes
//! the connection, and so does one that waits past the limit counted from the first byte of the request not
//! yet answered. The server reads only while it waits for a request (or its body), so this bounds a client
//! that connects and sends nothing, an idle keep-alive connection, headers or a body sent a byte at a time,
//! and a stalled upload alike — without a thread per connection: an idle connection is a parked task with
//! one timer. It replaces hyper's header-read timeout, which arms a timer of its own for every request.
//!
//! Only the client's time counts. Hyper keeps a read pending while a request is processed (to notice a client
//! that hangs up), so the connection's service is wrapped in [`Tracked`], which tells the stream when requests
//! are being processed: the clock stops then, and starts afresh once they are answered. A database stall of a
//! minute thus never cuts a connection off without an answer; `--request-timeout` answers it instead.
//!
//! The requests of a connection also get a [`ResetSwitch`] as an extension: a fault rule (`connection_reset`)
//! flips it, and the connection then fails every read and write, so it closes without sending the answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::connections::{Activity, Admission, Admitted};

/// Wraps every admitted connection in a [`ReadTimeout`]. Admission itself happens earlier, in the accept
/// loop ([`crate::connections::AdmittingMakeService`]), so a refused connection never waits for a task.
#[derive(Clone)]
pub struct ReadTimeoutAcceptor {
    pub limit: Duration,
}

type Accepted<I, S> = io::Result<(ReadTimeout<I>, Tracked<S>)>;

impl<I, S> Accept<I, Admission<S>> for ReadTimeoutAcceptor
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = ReadTimeout<I>;
    type Service = Tracked<S>;
    type Future = std::future::Ready<Accepted<I, S>>;

    fn accept(&self, stream: I, admission: Admission<S>) -> Self::Future {
        let Admission { admitted, service } = admission;
        let mut stream = ReadTimeout::new(stream, self.limit);
        stream.activity = admitted.activity.clone();
        stream.admitted = Some(admitted);
        let service = Tracked { inner: service, activity: stream.activity.clone() };
        std::future::ready(Ok((stream, service)))
    }
}

/// Closes its connection without another byte once flipped.
#[derive(Clone, Debug)]
pub struct ResetSwitch(Arc<Activity>);

impl ResetSwitch {
    pub fn reset(&self) {
        self.0.reset.store(true, Ordering::Relaxed);
    }

    pub fn is_reset(&self) -> bool {
        self.0.reset.load(Ordering::Relaxed)
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by a fault rule")
}

/// A connection's service, counting the requests it is processing in the connection's [`Activity`].
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Tracked<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(ResetSwitch(self.activity.clone()));
        self.activity.busy.fetch_add(1, Ordering::Relaxed);
        TrackedFuture { inner: self.inner.call(request), busy: Some(BusyGuard(self.activity.clone())) }
    }
}

/// Counts a request as processed when it is answered, or dropped unanswered.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        // `finished` first: a stream that sees `busy` at zero must also see the move.
        self.0.last_active.store(crate::connections::now_millis(), Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
}

pub struct TrackedFuture<F> {
    inner: F,
    busy: Option<BusyGuard>,
}

impl<F: Future + Unpin> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let output = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        self.busy = None;
        Poll::Ready(output)
    }
}

pub struct ReadTimeout<S> {
    inner: S,
    limit: Duration,
    /// When bytes (or the end) last arrived, or the connection opened.
    last_read: Instant,
    /// When the first bytes of the request being received arrived: set by the first read after a write,
    /// cleared by the next write (the answer). A request must be in within the limit of this, so a client
    /// cannot hold a connection by dripping a byte now and then.
    request_started: Option<Instant>,
    /// One timer per connection, armed at `last_read + limit` or earlier; re-armed only when it fires early,
    /// so a busy connection does not touch the timer wheel on every request.
    deadline: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    /// `activity.finished` when last looked at.
    seen_finished: usize,
    /// The connection's place under the connection limit.
    admitted: Option<Arc<Admitted>>,
}

impl<S> ReadTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            last_read: Instant::now(),
            request_started: None,
            deadline: None,
            activity: Arc::default(),
            seen_finished: 0,
            admitted: None,
        }
    }

    fn is_reset(&self) -> bool {
        self.activity.reset.load(Ordering::Relaxed)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.is_reset() {
            return Poll::Ready(Err(reset_error()));
        }
        // Closed to make room under the connection limit: the connection reads as ended, and hyper closes it.
        if this.activity.evict.load(Ordering::Relaxed) && this.activity.busy.load(Ordering::Acquire) == 0 {
            return Poll::Ready(Ok(()));
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.last_read = Instant::now();
                if buf.filled().len() > filled && this.request_started.is_none() {
                    this.request_started = Some(this.last_read);
                    this.activity.mid_request.store(true, Ordering::Relaxed);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.admitted.is_some() {
                    this.activity.reader.register(cx.waker());
                }
                // The server is working on a request: the time is its own, not the client's.
                if this.activity.busy.load(Ordering::Acquire) > 0 {
                    return Poll::Pending;
                }
                let finished = this.activity.finished.load(Ordering::Relaxed);
                if finished != this.seen_finished {
                    this.seen_finished = finished;
                    this.request_started = None;
                    this.activity.mid_request.store(false, Ordering::Relaxed);
                    this.last_read = Instant::now();
                }
                let due = this.request_started.unwrap_or(this.last_read) + this.limit;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(sleep_until(due)));
                while deadline.as_mut().poll(cx).is_ready() {
                    if Instant::now() >= due {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client went silent")));
                    }
                    deadline.as_mut().reset(due);
                }
                Poll::Pending
            }
        }
    }
}

impl<S> ReadTimeout<S> {
    /// Bytes went out: the request they answer is complete, and the next one starts with the next read.
    fn answered(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) && self.request_started.is_some() {
            self.request_started = None;
            self.activity.mid_request.store(false, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.is_reset() {
            return Poll::Ready(Err(reset_error()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.answered(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_reset() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_reset() {
            return Poll::Ready(Err(reset_error()));
        }
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.answered(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::time::sleep;

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (_client, server) = tokio::io::duplex(64);
        let mut stream = ReadTimeout::new(server, Duration::from_secs(30));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));

        let (mut client2, server2) = tokio::io::duplex(64);
        let mut stream = ReadTimeout::new(server2, Duration::from_secs(30));
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..3 {
                sleep(Duration::from_secs(20)).await;
                client2.write_all(b"x").await.unwrap();
            }
        });
        for i in 0..3 {
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1, "each read within the limit succeeds");
            if i < 2 {
                // Answered, as a server does: the next byte starts a new request.
                use tokio::io::AsyncWriteExt;
                stream.write_all(b"answer").await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_reset_connection_neither_reads_nor_writes() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ReadTimeout::new(server, Duration::from_secs(30));
        client.write_all(b"GET").await.unwrap();
        ResetSwitch(stream.activity.clone()).reset();
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(stream.write(b"HTTP/1.1").await.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        drop(stream);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed without a byte");
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_the_server_spends_on_a_request_is_not_the_clients() {
        use tokio::io::AsyncWriteExt;
        use tower::Service;
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ReadTimeout::new(server, Duration::from_secs(30));
        let mut service = Tracked {
            inner: tower::service_fn(|request: axum::http::Request<tokio::sync::oneshot::Receiver<()>>| {
                assert!(request.extensions().get::<ResetSwitch>().is_some(), "each request gets the switch");
                request.into_body()
            }),
            activity: stream.activity.clone(),
        };
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let processing = service.call(axum::http::Request::new(answered));
        // Processing for 90 s: hyper's pending read neither fails nor is cut off.
        let waited = tokio::time::timeout(Duration::from_secs(90), stream.read(&mut buf)).await;
        assert!(waited.is_err(), "the read was still pending: {waited:?}");
        answer.send(()).unwrap();
        processing.await.unwrap();
        // Answered: the client's 30 s start now.
        let started = Instant::now();
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dripped_a_byte_at_a_time_is_cut_off_from_its_first_byte() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ReadTimeout::new(server, Duration::from_secs(30));
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..10 {
                client.write_all(b"x").await.unwrap();
                sleep(Duration::from_secs(10)).await;
            }
        });
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = loop {
            match stream.read(&mut buf).await {
                Ok(n) => assert_eq!(n, 1),
                Err(err) => break err,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30), "30 s after the first byte, though never silent 30 s");
    }
}
