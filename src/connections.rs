//! A limit on open client connections, below the process's file-descriptor limit. Without it, idle
//! connections take every descriptor; `accept` then fails with EMFILE, which the listener retries silently,
//! and the server stops answering anyone — including the database, which needs descriptors too.
//!
//! At the limit a new connection first makes room by closing an idle one (a keep-alive connection between
//! requests, or one that has sent nothing yet): an idle connection costs its client nothing to reopen, while
//! refusing the new one would refuse a client that has something to say. Only when every open connection is
//! in the middle of a request does the new one wait, briefly and in a bounded queue, and is then closed.
//! Both are logged, at most every few seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log_throttle::LogThrottle;

/// What a connection's stream, the requests it carries and the limit share.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests being processed (HTTP/2 carries several at once).
    pub(crate) busy: AtomicUsize,
    /// Requests processed so far: when it moves, the wait for the client starts afresh.
    pub(crate) finished: AtomicUsize,
    /// Part of a request has arrived and is not answered yet.
    pub(crate) mid_request: AtomicBool,
    /// Asked to close (the limit needs room): the stream reads as ended.
    pub(crate) evict: AtomicBool,
    /// The stream's pending read, woken to notice `evict`.
    pub(crate) reader: AtomicWaker,
    /// Set by a fault rule's `connection_reset` (see `read_timeout::ResetSwitch`).
    pub(crate) reset: AtomicBool,
    /// Milliseconds since [`CLOCK_START`] when the connection was admitted or last finished a request: the
    /// limit closes the idle connection quiet the longest, as nginx does. A connection just admitted may
    /// already hold a request the server has not read yet; closing it would lose that request.
    pub(crate) last_active: AtomicU64,
}

static CLOCK_START: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

pub(crate) fn now_millis() -> u64 {
    CLOCK_START.elapsed().as_millis() as u64
}

impl Activity {
    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
            && !self.mid_request.load(Ordering::Relaxed)
            && !self.evict.load(Ordering::Relaxed)
    }
}

/// The open connections of both listeners.
pub struct Connections {
    max: usize,
    permits: Arc<Semaphore>,
    /// Connections waiting for room; each holds a descriptor, so they are bounded too.
    waiting: AtomicUsize,
    max_waiting: usize,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// How long a new connection waits for room when no open one is idle.
const ROOM_WAIT: Duration = Duration::from_secs(2);

static AT_LIMIT_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
static REFUSED_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            permits: Arc::new(Semaphore::new(max)),
            waiting: AtomicUsize::new(0),
            max_waiting: (max / 8).clamp(4, 256),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Room for one more connection, making it by closing an idle one if need be; `None`: refuse it.
    pub async fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_for_room().await?,
        };
        let activity = Arc::new(Activity { last_active: AtomicU64::new(now_millis()), ..Activity::default() });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, activity.clone());
        Some(Admitted { connections: self.clone(), id, activity, _permit: permit })
    }

    async fn wait_for_room(self: &Arc<Self>) -> Option<OwnedSemaphorePermit> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.refused();
            return None;
        }
        let evicted = self.evict_one_idle();
        if let Some(held_back) = AT_LIMIT_LOG.allow() {
            tracing::warn!(
                max_connections = self.max,
                closing_idle = evicted,
                similar_lines_held_back = held_back,
                "connection limit reached (--max-connections): closing idle connections to make room"
            );
        }
        let permit = tokio::time::timeout(ROOM_WAIT, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                self.refused();
                None
            }
        }
    }

    fn refused(&self) {
        if let Some(held_back) = REFUSED_LOG.allow() {
            tracing::warn!(
                max_connections = self.max,
                similar_lines_held_back = held_back,
                "connection limit reached (--max-connections) and no connection is idle: refused a connection"
            );
        }
    }

    /// Asks the idle connection quiet the longest to close; whether one was found.
    fn evict_one_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idle = open.values().filter(|a| a.is_idle());
        let Some(victim) = idle.min_by_key(|a| a.last_active.load(Ordering::Relaxed)) else { return false };
        victim.evict.store(true, Ordering::Relaxed);
        victim.reader.wake();
        true
    }
}

/// An admitted connection's place under the limit, given back when the connection's stream is dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    id: u64,
    pub(crate) activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// The accept loop's maker of connection services, deciding admission before the loop accepts the next
/// connection. Deciding it in the connection's own task let the loop run ahead under load, holding a
/// descriptor for every connection accepted and not yet admitted or refused, until `accept` itself failed
/// with EMFILE. While a connection waits for room here, the ones behind it wait in the kernel's listen
/// queue, where they cost no descriptor; a refused one is closed by the loop at once.
pub struct AdmittingMakeService<M> {
    pub inner: M,
    pub connections: Arc<Connections>,
}

/// A connection's place under the limit with its service, taken apart by the acceptor
/// ([`crate::read_timeout::ReadTimeoutAcceptor`]).
/// Clone only because the accept loop's types ask for it; the acceptor holds its one copy.
#[derive(Clone)]
pub struct Admission<S> {
    pub(crate) admitted: Arc<Admitted>,
    pub(crate) service: S,
}

type MakeFuture<S> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<Admission<S>>> + Send>>;

impl<M> tower::Service<std::net::SocketAddr> for AdmittingMakeService<M>
where
    M: tower::Service<std::net::SocketAddr>,
    M::Future: Send + 'static,
    M::Response: Send + 'static,
{
    type Response = Admission<M::Response>;
    type Error = std::io::Error;
    type Future = MakeFuture<M::Response>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.inner.poll_ready(cx).map_err(|_| std::io::Error::other("the connection service is not ready"))
    }

    fn call(&mut self, peer: std::net::SocketAddr) -> Self::Future {
        let service = self.inner.call(peer);
        let connections = self.connections.clone();
        Box::pin(async move {
            let admitted =
                connections.admit().await.ok_or_else(|| std::io::Error::other("connection limit reached"))?;
            let service = service.await.map_err(|_| std::io::Error::other("no service for the connection"))?;
            Ok(Admission { admitted: Arc::new(admitted), service })
        })
    }
}

/// Never called: the acceptor unwraps the admission before the connection is served. It exists because
/// the accept loop's types need the made service to be a service.
impl<S: tower::Service<R>, R> tower::Service<R> for Admission<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        self.service.call(request)
    }
}

/// Descriptors kept for everything but client connections: the database pool and files, Redis, the
/// listeners, logs, TLS files, connections waiting for room.
pub fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 8).max(64)
}

/// The default of `--max-connections`: the descriptor limit less [`reserved_descriptors`]. The soft limit
/// is raised to the hard one first (as Go and nginx do), since a low soft limit is a default, not a choice.
pub fn default_max_connections() -> usize {
    let limit = raise_descriptor_limit();
    limit.saturating_sub(reserved_descriptors(limit)).max(16) as usize
}

/// The process's descriptor limit after raising the soft limit to the hard one (capped at 1M).
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    const CAP: u64 = 1 << 20;
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(CAP);
    let hard = current.maximum.unwrap_or(CAP).min(CAP);
    if soft < hard
        && setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(hard), maximum: current.maximum })
            .is_ok()
    {
        return hard;
    }
    soft.min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_an_idle_connection_makes_room_and_a_busy_one_does_not() {
        let connections = Connections::new(2);
        let first = connections.admit().await.unwrap();
        let second = connections.admit().await.unwrap();
        second.activity.busy.store(1, Ordering::Release);
        // The first is idle: asked to close; once it has, the third gets its place.
        let third = {
            let connections = connections.clone();
            tokio::spawn(async move { connections.admit().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(first.activity.evict.load(Ordering::Relaxed));
        assert!(!second.activity.evict.load(Ordering::Relaxed), "a busy connection is never closed");
        drop(first);
        let third = third.await.unwrap().expect("the third is admitted");
        // Now both are busy or new, none idle and evictable: the next waits and is refused.
        let started = tokio::time::Instant::now();
        assert_eq!(connections.open.lock().unwrap().len(), 2);
        for a in connections.open.lock().unwrap().values() {
            a.busy.store(1, Ordering::Release);
        }
        assert!(connections.admit().await.is_none());
        assert!(started.elapsed() >= ROOM_WAIT);
        drop((second, third));
    }

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_the_longest_is_closed_not_the_newest() {
        let connections = Connections::new(3);
        let early = connections.admit().await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let middle = connections.admit().await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let newest = connections.admit().await.unwrap();
        // The earliest has just finished a request: the middle one has been quiet the longest.
        early.activity.last_active.store(now_millis() + 1, Ordering::Relaxed);
        let next = {
            let connections = connections.clone();
            tokio::spawn(async move { connections.admit().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(middle.activity.evict.load(Ordering::Relaxed), "the one quiet the longest is asked to close");
        assert!(!early.activity.evict.load(Ordering::Relaxed));
        assert!(!newest.activity.evict.load(Ordering::Relaxed), "a connection just admitted keeps its place");
        drop(middle);
        assert!(next.await.unwrap().is_some());
        drop((early, newest));
    }

    #[test]
    fn the_default_leaves_descriptors_for_the_rest() {
        assert_eq!(reserved_descriptors(256), 64);
        assert_eq!(reserved_descriptors(1024), 128);
        assert!(default_max_connections() >= 16);
    }
}
