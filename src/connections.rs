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
        let activity = Arc::new(Activity::default());
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

    /// Asks one idle connection to close; whether one was found.
    fn evict_one_idle(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(victim) = open.values().find(|a| a.is_idle()) else { return false };
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

    #[test]
    fn the_default_leaves_descriptors_for_the_rest() {
        assert_eq!(reserved_descriptors(256), 64);
        assert_eq!(reserved_descriptors(1024), 128);
        assert!(default_max_connections() >= 16);
    }
}
