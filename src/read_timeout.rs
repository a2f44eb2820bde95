//! Cuts off connections that go silent: a read that waits longer than the limit fails, which closes the
//! connection. The server reads only while it waits for a request (or its body), so this bounds a client
//! that connects and sends nothing, an idle keep-alive connection, and a stalled upload alike — without a
//! thread per connection: an idle connection is a parked task with one timer.

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
    /// One timer per connection, armed at `last_read + limit` or earlier; re-armed only when it fires early,
    /// so a busy connection does not touch the timer wheel on every request.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> ReadTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit, last_read: Instant::now(), deadline: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.last_read = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let due = this.last_read + this.limit;
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

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
        for _ in 0..3 {
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1, "each read within the limit succeeds");
        }
    }
}
