//! Cuts off connections that go silent or drip: a read that waits longer than the limit fails, which closes
//! the connection, and so does one that waits past the limit counted from the first byte of the request not
//! yet answered. The server reads only while it waits for a request (or its body), so this bounds a client
//! that connects and sends nothing, an idle keep-alive connection, headers or a body sent a byte at a time,
//! and a stalled upload alike — without a thread per connection: an idle connection is a parked task with
//! one timer. It replaces hyper's header-read timeout, which arms a timer of its own for every request.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

/// Wraps every accepted connection in a [`ReadTimeout`].
#[derive(Clone, Copy, Debug)]
pub struct ReadTimeoutAcceptor {
    pub limit: Duration,
}

impl<I, S> Accept<I, S> for ReadTimeoutAcceptor
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    type Stream = ReadTimeout<I>;
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        ready(Ok((ReadTimeout::new(stream, self.limit), service)))
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
}

impl<S> ReadTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit, last_read: Instant::now(), request_started: None, deadline: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let filled = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.last_read = Instant::now();
                if buf.filled().len() > filled && this.request_started.is_none() {
                    this.request_started = Some(this.last_read);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
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
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.request_started = None;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.answered(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
