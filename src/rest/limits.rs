//! Rate limits of the REST API (spec: protocol.md, "Limits").
//!
//! * **Request intensity**: a leaky bucket per (portal, client IP). Every admitted request adds 1, the level drains
//!   at the plan's rate; a request that would lift the level past the plan's burst is refused (503
//!   `QUERY_LIMIT_EXCEEDED`, answered by the HTTP layer) and adds nothing.
//! * **Operating time**: per (auth type, app or webhook id, method) the method's own execution time is summed over ten
//!   one-minute buckets; calls under 0.1 s are not counted; past 480 s the next call is refused (429
//!   `OPERATION_TIME_LIMIT`, answered by the HTTP layer).
//!
//! The decisions live in two small pure structs, [`LeakyBucket`] and [`OperatingWindow`], that work on integers
//! (microseconds, micro-requests) and take the current time as an argument, so a Redis Lua script can mirror them
//! exactly when several instances must share the state. [`RequestLimiter`] and [`OperatingTime`] keep them in memory
//! for one instance; the [`RequestLimits`] and [`OperatingTimeLimits`] traits are the boundary a shared backend
//! implements.
//!
//! Why not `governor`: its GCRA is equivalent to this bucket, but its keyed store can only be pruned by
//! `retain_recent()`; it cannot be capped with a chosen eviction order, its clock is a type parameter rather than
//! our injectable [`Clock`], and its state (a "theoretical arrival time") is less direct to mirror in Lua than
//! "level + last update". A leaky bucket is a dozen lines, so it is written here.
//!
//! Memory stays bounded however many distinct keys appear: entries that carry no information any more (a drained
//! bucket, a window whose minutes all expired) are dropped every [`PRUNE_INTERVAL_SECS`] and whenever the map is
//! full; if it is still full, the entries with the least state (lowest level / least time) go first, see
//! [`RequestLimiter`] for the residual risk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

/// Operating time (seconds, summed over the window) past which a key is blocked.
pub const OPERATING_LIMIT_SECS: f64 = 480.0;
/// Calls shorter than this are not charged to the operating time.
pub const MIN_COUNTED: Duration = Duration::from_millis(100);
/// Number of one-minute buckets in the operating-time window.
pub const WINDOW_MINUTES: usize = 10;
/// The operating-time window's length in seconds.
pub const WINDOW_SECS: i64 = WINDOW_MINUTES as i64 * 60;
/// How often (at most) the in-memory maps are swept for entries that carry no state any more.
pub const PRUNE_INTERVAL_SECS: i64 = 60;

const MICROS: i64 = 1_000_000;
const OPERATING_LIMIT_US: u64 = 480 * MICROS as u64;
const MIN_COUNTED_US: u64 = 100_000;

// The clocks live in `crate::clock`; re-exported here for the limiters' users.
pub use crate::clock::{Clock, ManualClock, SystemClock, unix_micros};

// ---------------------------------------------------------------------------------------------------------------
// Request intensity

/// A request-intensity plan: the bucket holds `burst` requests and drains `per_second` of them each second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub burst: u32,
    pub per_second: u32,
}

impl Plan {
    pub const STANDARD: Plan = Plan { burst: 50, per_second: 2 };
    pub const ENTERPRISE: Plan = Plan { burst: 250, per_second: 5 };

    /// The plan of a portal setting; `None` means `unlimited` (the caller skips the limiter).
    ///
    /// Names are matched case-insensitively. The fixtures validator only lets the three known names through; an
    /// unknown name anyway falls back to `standard` (fail closed rather than unlimited).
    pub fn for_name(name: &str) -> Option<Plan> {
        match name.trim().to_ascii_lowercase().as_str() {
            "unlimited" => None,
            "enterprise" => Some(Plan::ENTERPRISE),
            _ => Some(Plan::STANDARD),
        }
    }
}

/// The state of one leaky bucket, in integers so a Lua script can mirror it exactly.
///
/// `level` counts micro-requests ([`LeakyBucket::UNIT`] per request); it drains by `per_second` micro-requests per
/// elapsed microsecond. A drained bucket (level 0) is the same as no bucket, so it can be forgotten (in Redis: a
/// TTL of `ceil(level / per_second)` microseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakyBucket {
    pub level: u64,
    /// Unix time (µs) `level` was computed at; never moves backwards.
    pub updated_us: i64,
    /// Drain rate of the plan last used with this bucket.
    pub per_second: u32,
}

impl LeakyBucket {
    /// Micro-requests per request.
    pub const UNIT: u64 = MICROS as u64;

    pub fn new(now_us: i64, plan: Plan) -> Self {
        LeakyBucket { level: 0, updated_us: now_us, per_second: plan.per_second }
    }

    /// The level at `now_us` (a clock that went backwards drains nothing).
    pub fn level_at(&self, now_us: i64) -> u64 {
        let elapsed = u64::try_from(now_us.saturating_sub(self.updated_us)).unwrap_or(0);
        self.level.saturating_sub(elapsed.saturating_mul(u64::from(self.per_second)))
    }

    pub fn is_drained(&self, now_us: i64) -> bool {
        self.level_at(now_us) == 0
    }

    /// Count one request; `false` (and the bucket unchanged) when it would lift the level past `plan.burst`.
    pub fn try_admit(&mut self, now_us: i64, plan: Plan) -> bool {
        let level = self.level_at(now_us);
        let next = level + Self::UNIT;
        if next > u64::from(plan.burst) * Self::UNIT {
            return false;
        }
        self.level = next;
        self.updated_us = self.updated_us.max(now_us);
        self.per_second = plan.per_second;
        true
    }
}

/// A shared request-intensity limiter (the in-memory one, or later one backed by Redis).
///
/// Infallible by design: a backend that can fail decides itself whether to fail open or closed.
#[async_trait]
pub trait RequestLimits: Send + Sync {
    /// Count one request for `key` under `plan`; `false` = refuse with 503 (and nothing is counted).
    async fn admit(&self, key: &str, plan: Plan) -> bool;
    /// Forget the buckets of the portal `domain` (a reset of the control API). The in-memory limiter of one
    /// instance serves one portal and forgets all of them.
    async fn clear(&self, domain: &str);
    /// The portal's buckets that are not empty, fullest first, at most `most` (for the inspector).
    async fn levels(&self, domain: &str, most: usize) -> Vec<BucketLevel>;
}

/// How full one client's request bucket is now.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketLevel {
    /// The client address the bucket counts.
    pub client: String,
    /// Requests in the bucket (it drains by the plan's rate; a request finding it at the burst is refused).
    pub requests: f64,
}

impl BucketLevel {
    /// The bucket of `key` (see [`request_key`]) of the portal `domain` at `level` micro-requests; `None` for
    /// another portal's key or an empty bucket.
    pub fn of(domain: &str, key: &str, level: u64) -> Option<Self> {
        let client = key.strip_prefix(domain)?.strip_prefix('|')?;
        (level > 0)
            .then(|| BucketLevel { client: client.to_string(), requests: level as f64 / LeakyBucket::UNIT as f64 })
    }

    /// Fullest first, then by address; at most `most`.
    pub fn fullest(mut levels: Vec<Self>, most: usize) -> Vec<Self> {
        levels.sort_by(|a, b| b.requests.total_cmp(&a.requests).then_with(|| a.client.cmp(&b.client)));
        levels.truncate(most);
        levels
    }
}

/// The request-intensity bucket's key: one per portal and client address.
pub fn request_key(domain: &str, client_ip: impl std::fmt::Display) -> String {
    format!("{domain}|{client_ip}")
}

/// The operating-time window's key: one per portal, credential (`webhook:ID`, `app:CLIENT_ID`) and method. The
/// domain comes first so that a reset finds a portal's windows in a shared store by prefix.
pub fn operating_key(domain: &str, credential_id: &str, method: &str) -> String {
    format!("{domain}|{credential_id}|{method}")
}

/// The in-memory request-intensity limiter of one instance. Keys are opaque (the caller builds them from the portal
/// and the client IP); the plan may differ from call to call (a changed portal setting applies at once, the level
/// being in requests whatever the plan).
///
/// At most `max_keys` buckets are kept. Drained buckets are dropped every [`PRUNE_INTERVAL_SECS`] and whenever a new
/// key finds the map full; dropping them loses nothing. If the map is still full, the buckets with the **lowest
/// current level** (ties: the longest unchanged) are evicted, plus a 1/16 slack so that the O(n) selection is
/// amortised over many insertions. A key that is over its limit has the highest possible level, so a flood of new
/// keys (one request each) can never reset it. Residual risk: evicting a saturated key needs at least `max_keys`
/// other keys at least as full, i.e. that many client IPs each sending a full burst, and the evicted key then gets
/// no more than each of those IPs already has; size `max_keys` well above the number of concurrently active clients.
pub struct RequestLimiter {
    clock: Arc<dyn Clock>,
    max_keys: usize,
    inner: Mutex<Tracked<LeakyBucket>>,
}

impl RequestLimiter {
    pub fn new(clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        RequestLimiter { clock, max_keys: max_keys.max(1), inner: Mutex::new(Tracked::new()) }
    }

    /// Count one request for `key` under `plan`; `false` = refuse (and nothing is counted).
    /// For the `unlimited` plan ([`Plan::for_name`] gives `None`) do not call this at all.
    pub fn admit(&self, key: &str, plan: Plan) -> bool {
        let now = unix_micros(self.clock.now());
        let mut inner = self.lock();
        inner.maybe_prune(now, |b| b.is_drained(now));
        if let Some(bucket) = inner.map.get_mut(key) {
            return bucket.try_admit(now, plan);
        }
        let mut bucket = LeakyBucket::new(now, plan);
        if !bucket.try_admit(now, plan) {
            return false;
        }
        inner.make_room(self.max_keys, now, |b| b.is_drained(now), |b| (b.level_at(now), b.updated_us));
        inner.map.insert(key.to_string(), bucket);
        true
    }

    /// Drop every drained bucket now (also done automatically).
    pub fn prune(&self) {
        let now = unix_micros(self.clock.now());
        self.lock().prune(now, |b| b.is_drained(now));
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Tracked<LeakyBucket>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl RequestLimits for RequestLimiter {
    async fn admit(&self, key: &str, plan: Plan) -> bool {
        RequestLimiter::admit(self, key, plan)
    }

    async fn clear(&self, _domain: &str) {
        self.lock().map.clear();
    }

    async fn levels(&self, domain: &str, most: usize) -> Vec<BucketLevel> {
        let now = unix_micros(self.clock.now());
        let levels = self
            .lock()
            .map
            .iter()
            .filter_map(|(key, bucket)| BucketLevel::of(domain, key, bucket.level_at(now)))
            .collect();
        BucketLevel::fullest(levels, most)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Operating time

/// What the HTTP layer needs about one operating-time key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatingStatus {
    /// Seconds consumed by the key within the window (`time.operating`).
    pub operating: f64,
    /// Unix time (s) the oldest non-empty minute of the window expires (`time.operating_reset_at`); with nothing
    /// recorded, now + [`WINDOW_SECS`] rounded down.
    pub reset_at: i64,
    /// The sum exceeds [`OPERATING_LIMIT_SECS`]: refuse the next call with 429.
    pub blocked: bool,
}

/// One minute of an [`OperatingWindow`]: the minute's index (unix seconds / 60) and the time charged in it (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteBucket {
    pub minute: i64,
    pub micros: u64,
}

/// Ten one-minute buckets in a ring (slot = minute mod 10). The window at minute `m` is minutes `m-9 ..= m`, so the
/// bucket of minute `k` expires at unix time `(k + 10) * 60`. In Redis: a hash `minute → micros` with the key's TTL
/// set to the newest bucket's expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperatingWindow {
    pub buckets: [MinuteBucket; WINDOW_MINUTES],
}

fn minute_of(now_us: i64) -> i64 {
    now_us.div_euclid(60 * MICROS)
}

impl OperatingWindow {
    fn live(&self, now_us: i64) -> impl Iterator<Item = &MinuteBucket> {
        let oldest = minute_of(now_us) - (WINDOW_MINUTES as i64 - 1);
        self.buckets.iter().filter(move |b| b.micros > 0 && b.minute >= oldest)
    }

    /// Charge `duration_us` to the current minute; calls under 0.1 s are ignored.
    pub fn record(&mut self, now_us: i64, duration_us: u64) {
        if duration_us < MIN_COUNTED_US {
            return;
        }
        let minute = minute_of(now_us);
        let slot = &mut self.buckets[minute.rem_euclid(WINDOW_MINUTES as i64) as usize];
        if slot.minute != minute {
            *slot = MinuteBucket { minute, micros: 0 };
        }
        slot.micros = slot.micros.saturating_add(duration_us);
    }

    /// Time charged within the window, µs.
    pub fn total_us(&self, now_us: i64) -> u64 {
        self.live(now_us).fold(0u64, |sum, b| sum.saturating_add(b.micros))
    }

    /// Nothing charged within the window: the key can be forgotten.
    pub fn is_expired(&self, now_us: i64) -> bool {
        self.live(now_us).next().is_none()
    }

    /// The newest minute charged within the window (for eviction order).
    fn newest_minute(&self, now_us: i64) -> i64 {
        self.live(now_us).map(|b| b.minute).max().unwrap_or(i64::MIN)
    }

    pub fn status(&self, now_us: i64) -> OperatingStatus {
        let total = self.total_us(now_us);
        let reset_at = match self.live(now_us).map(|b| b.minute).min() {
            Some(oldest) => (oldest + WINDOW_MINUTES as i64) * 60,
            None => now_us.div_euclid(MICROS) + WINDOW_SECS,
        };
        OperatingStatus { operating: total as f64 / MICROS as f64, reset_at, blocked: total > OPERATING_LIMIT_US }
    }
}

/// A shared operating-time accounting (the in-memory one, or later one backed by Redis). Infallible by design, as
/// [`RequestLimits`].
#[async_trait]
pub trait OperatingTimeLimits: Send + Sync {
    async fn status(&self, key: &str) -> OperatingStatus;
    async fn record(&self, key: &str, duration: Duration);
    /// Forget the windows of the portal `domain` (a reset of the control API), as [`RequestLimits::clear`].
    async fn clear(&self, domain: &str);
}

/// The in-memory operating-time accounting of one instance. Keys are opaque (auth type, app or webhook id, method).
///
/// At most `max_keys` windows are kept: windows whose minutes all expired are dropped every
/// [`PRUNE_INTERVAL_SECS`] and whenever a new key finds the map full; if it is still full, the windows with the
/// least time charged (ties: the longest unused) are evicted, plus a 1/16 slack. A blocked key holds more than
/// 480 s, so it goes last. Keys need authentication and name registered methods, so they cannot be minted cheaply.
pub struct OperatingTime {
    clock: Arc<dyn Clock>,
    max_keys: usize,
    inner: Mutex<Tracked<OperatingWindow>>,
    /// The number of keys charged, kept beside the map: until some call has taken 100 ms, every status is the
    /// empty one, and reading it takes no lock that every request of every core would otherwise contend for.
    charged_keys: AtomicUsize,
}

impl OperatingTime {
    pub fn new(clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        OperatingTime {
            clock,
            max_keys: max_keys.max(1),
            inner: Mutex::new(Tracked::new()),
            charged_keys: AtomicUsize::new(0),
        }
    }

    /// The key's standing now; `blocked` = the sum exceeds 480 s.
    pub fn status(&self, key: &str) -> OperatingStatus {
        let now = unix_micros(self.clock.now());
        if self.charged_keys.load(Ordering::Relaxed) == 0 {
            return OperatingWindow::default().status(now);
        }
        let inner = self.lock();
        match inner.map.get(key) {
            Some(window) => window.status(now),
            None => OperatingWindow::default().status(now),
        }
    }

    /// Charge a call's own execution time to `key`; ignored when under 100 ms.
    pub fn record(&self, key: &str, duration: Duration) {
        let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        if duration_us < MIN_COUNTED_US {
            return;
        }
        let now = unix_micros(self.clock.now());
        let mut inner = self.lock();
        inner.maybe_prune(now, |w| w.is_expired(now));
        if let Some(window) = inner.map.get_mut(key) {
            window.record(now, duration_us);
        } else {
            inner.make_room(self.max_keys, now, |w| w.is_expired(now), |w| (w.total_us(now), w.newest_minute(now)));
            let mut window = OperatingWindow::default();
            window.record(now, duration_us);
            inner.map.insert(key.to_string(), window);
        }
        self.charged_keys.store(inner.map.len(), Ordering::Relaxed);
    }

    /// Drop every expired window now (also done automatically).
    pub fn prune(&self) {
        let now = unix_micros(self.clock.now());
        let mut inner = self.lock();
        inner.prune(now, |w| w.is_expired(now));
        self.charged_keys.store(inner.map.len(), Ordering::Relaxed);
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Tracked<OperatingWindow>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl OperatingTimeLimits for OperatingTime {
    async fn status(&self, key: &str) -> OperatingStatus {
        OperatingTime::status(self, key)
    }

    async fn record(&self, key: &str, duration: Duration) {
        OperatingTime::record(self, key, duration)
    }

    async fn clear(&self, _domain: &str) {
        let mut inner = self.lock();
        inner.map.clear();
        self.charged_keys.store(0, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What a call is charged

/// Runs `method` and measures the time it spent running on the server's threads. Time it waited — for a
/// database connection, a lock, SQLite's busy timeout, the database's answer, the writer's next group — is
/// not counted: a method waits there only when the server is queueing or stalled, and a stalled database must
/// not block its callers for the ten minutes of the window once it is healthy again. (A query's own time on the
/// database is not counted either: PostgreSQL cannot tell it apart from a wait for `LOCK TABLE`.)
pub async fn executed<F: Future>(method: F) -> (F::Output, Duration) {
    let mut method = std::pin::pin!(method);
    let mut running = Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let began = std::time::Instant::now();
        let poll = method.as_mut().poll(cx);
        running += began.elapsed();
        poll
    })
    .await;
    (output, running)
}

/// The operating time a call is charged: what it executed, unless that is under [`MIN_COUNTED`] or the call
/// failed on the server's side (a 500: the work was the server's fault, not the caller's).
pub fn charge(executed: Duration, server_fault: bool) -> Option<Duration> {
    (!server_fault && executed >= MIN_COUNTED).then_some(executed)
}

// ---------------------------------------------------------------------------------------------------------------
// Bounded map

/// A map of per-key state with periodic pruning and a hard cap.
struct Tracked<V> {
    map: HashMap<String, V>,
    last_prune_us: i64,
}

impl<V> Tracked<V> {
    fn new() -> Self {
        Tracked { map: HashMap::new(), last_prune_us: i64::MIN }
    }

    fn prune(&mut self, now_us: i64, dead: impl Fn(&V) -> bool) {
        self.map.retain(|_, v| !dead(v));
        self.last_prune_us = now_us;
    }

    /// Prune when the last sweep is older than [`PRUNE_INTERVAL_SECS`] (or the clock went backwards).
    fn maybe_prune(&mut self, now_us: i64, dead: impl Fn(&V) -> bool) {
        let since = now_us.saturating_sub(self.last_prune_us);
        if !(0..PRUNE_INTERVAL_SECS * MICROS).contains(&since) {
            self.prune(now_us, dead);
        }
    }

    /// Make room for one more key under `max_keys`: drop dead entries, then evict the lowest `score`s.
    fn make_room<S: Ord>(&mut self, max_keys: usize, now_us: i64, dead: impl Fn(&V) -> bool, score: impl Fn(&V) -> S) {
        if self.map.len() < max_keys {
            return;
        }
        self.prune(now_us, dead);
        if self.map.len() < max_keys {
            return;
        }
        let count = (self.map.len() + 1 - max_keys + max_keys / 16).min(self.map.len());
        let mut scored: Vec<(S, &String)> = self.map.iter().map(|(k, v)| (score(v), k)).collect();
        scored.select_nth_unstable_by(count - 1, |a, b| a.0.cmp(&b.0));
        let victims: Vec<String> = scored[..count].iter().map(|(_, k)| (*k).clone()).collect();
        for key in victims {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[tokio::test]
    async fn waits_are_not_executed_time() {
        let ((), running) = executed(tokio::time::sleep(Duration::from_millis(300))).await;
        assert!(running < Duration::from_millis(300), "sleeping is waiting: {running:?}");
        let ((), running) = executed(async { std::thread::sleep(Duration::from_millis(150)) }).await;
        assert!(running >= Duration::from_millis(150), "blocking in the method is running: {running:?}");
    }

    #[test]
    fn server_faults_and_short_calls_are_not_charged() {
        assert_eq!(charge(Duration::from_millis(99), false), None);
        assert_eq!(charge(Duration::from_millis(100), false), Some(Duration::from_millis(100)));
        assert_eq!(charge(Duration::from_secs(5), true), None);
    }

    /// 1_700_000_040 is a whole minute (28_333_334 × 60).
    const T0: u64 = 1_700_000_040;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::at_unix(T0))
    }

    fn limiter(clock: &Arc<ManualClock>, max_keys: usize) -> RequestLimiter {
        RequestLimiter::new(clock.clone(), max_keys)
    }

    #[tokio::test]
    async fn levels_are_the_portals_nonempty_buckets_fullest_first() {
        let clock = clock();
        let l = limiter(&clock, 100);
        admitted(&l, &request_key("a.example", "10.0.0.1"), Plan::STANDARD, 3);
        admitted(&l, &request_key("a.example", "10.0.0.2"), Plan::STANDARD, 10);
        admitted(&l, &request_key("b.example", "10.0.0.3"), Plan::STANDARD, 20);
        let shown = |levels: Vec<BucketLevel>| levels.into_iter().map(|b| (b.client, b.requests)).collect::<Vec<_>>();
        assert_eq!(
            shown(l.levels("a.example", 10).await),
            [("10.0.0.2".to_string(), 10.0), ("10.0.0.1".to_string(), 3.0)]
        );
        assert_eq!(shown(l.levels("a.example", 1).await), [("10.0.0.2".to_string(), 10.0)]);
        // 2 a second drain: after 2 s the first bucket is empty and left out, the second holds 6.
        clock.advance(Duration::from_secs(2));
        assert_eq!(shown(l.levels("a.example", 10).await), [("10.0.0.2".to_string(), 6.0)]);
    }

    fn admitted(l: &RequestLimiter, key: &str, plan: Plan, n: usize) -> usize {
        (0..n).filter(|_| l.admit(key, plan)).count()
    }

    #[test]
    fn plans_by_name() {
        assert_eq!(Plan::for_name("standard"), Some(Plan { burst: 50, per_second: 2 }));
        assert_eq!(Plan::for_name("enterprise"), Some(Plan { burst: 250, per_second: 5 }));
        assert_eq!(Plan::for_name("Enterprise"), Some(Plan::ENTERPRISE));
        assert_eq!(Plan::for_name("unlimited"), None);
        assert_eq!(Plan::for_name("gold"), Some(Plan::STANDARD));
    }

    #[test]
    fn standard_burst_then_drain() {
        let c = clock();
        let l = limiter(&c, 100);
        assert_eq!(admitted(&l, "p|1.2.3.4", Plan::STANDARD, 50), 50);
        assert!(!l.admit("p|1.2.3.4", Plan::STANDARD), "51st refused");
        c.advance(Duration::from_millis(499));
        assert!(!l.admit("p|1.2.3.4", Plan::STANDARD), "not yet one request drained");
        c.advance(Duration::from_millis(1));
        assert!(l.admit("p|1.2.3.4", Plan::STANDARD), "2/s: one more after 0.5 s");
        assert!(!l.admit("p|1.2.3.4", Plan::STANDARD));
        c.advance(Duration::from_secs(25));
        assert_eq!(admitted(&l, "p|1.2.3.4", Plan::STANDARD, 60), 50, "a full burst again after 25 s");
    }

    #[test]
    fn enterprise_burst_then_drain() {
        let c = clock();
        let l = limiter(&c, 100);
        assert_eq!(admitted(&l, "k", Plan::ENTERPRISE, 300), 250);
        c.advance(Duration::from_secs(1));
        assert_eq!(admitted(&l, "k", Plan::ENTERPRISE, 10), 5, "5/s");
        c.advance(Duration::from_secs(50));
        assert_eq!(admitted(&l, "k", Plan::ENTERPRISE, 300), 250);
    }

    #[test]
    fn unlimited_skips_the_limiter() {
        let c = clock();
        let l = limiter(&c, 100);
        let plan = Plan::for_name("unlimited");
        let admit = |key| plan.is_none_or(|p| l.admit(key, p));
        assert!((0..10_000).all(|_| admit("k")));
        assert!(l.is_empty());
    }

    #[test]
    fn keys_are_independent() {
        let c = clock();
        let l = limiter(&c, 100);
        assert_eq!(admitted(&l, "a", Plan::STANDARD, 60), 50);
        assert_eq!(admitted(&l, "b", Plan::STANDARD, 60), 50);
        assert!(!l.admit("a", Plan::STANDARD));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn refused_requests_do_not_fill_the_bucket() {
        let c = clock();
        let l = limiter(&c, 100);
        assert_eq!(admitted(&l, "k", Plan::STANDARD, 50), 50);
        for _ in 0..100 {
            c.advance(Duration::from_millis(100));
            l.admit("k", Plan::STANDARD); // hammering: only what drains is admitted
        }
        // 10 s at 2/s = 20 drained, 20 of the hammering admitted, the bucket is full again but not over.
        c.advance(Duration::from_millis(500));
        assert!(l.admit("k", Plan::STANDARD), "refusals did not push the level past the burst");
        let zero = Plan { burst: 0, per_second: 2 };
        assert!(!l.admit("z", zero));
        assert_eq!(l.len(), 1, "a refused new key is not tracked");
    }

    #[test]
    fn drained_buckets_are_pruned() {
        let c = clock();
        let l = limiter(&c, 1000);
        for i in 0..500 {
            assert!(l.admit(&format!("ip{i}"), Plan::STANDARD));
        }
        assert_eq!(l.len(), 500);
        c.advance(Duration::from_secs(PRUNE_INTERVAL_SECS as u64));
        l.admit("fresh", Plan::STANDARD);
        assert_eq!(l.len(), 1, "periodic sweep dropped the drained buckets");
        // At the cap, drained entries go before any live one is evicted.
        let l = limiter(&c, 10);
        for i in 0..10 {
            l.admit(&format!("ip{i}"), Plan::STANDARD);
        }
        c.advance(Duration::from_secs(1));
        assert!(l.admit("new", Plan::STANDARD));
        assert_eq!(l.len(), 1);
        l.prune();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn bounded_memory_keeps_the_hot_key_limited() {
        let c = clock();
        let l = limiter(&c, 1000);
        assert_eq!(admitted(&l, "hot", Plan::STANDARD, 60), 50);
        for i in 0..100_000u32 {
            assert!(l.admit(&format!("ip{i}"), Plan::STANDARD));
            if i % 1000 == 0 {
                c.advance(Duration::from_millis(1)); // the flood takes ~0.1 s
                assert!(!l.admit("hot", Plan::STANDARD), "hot key still over its limit");
            }
            assert!(l.len() <= 1000);
        }
        assert!(l.len() <= 1000);
        assert!(!l.admit("hot", Plan::STANDARD), "the flood did not reset the hot key");
        c.advance(Duration::from_millis(500));
        assert!(l.admit("hot", Plan::STANDARD), "and it still drains at 2/s");
        assert!(!l.admit("hot", Plan::STANDARD));

        // Even against keys that are themselves busy, the fullest bucket is evicted last.
        let l = limiter(&c, 100);
        assert_eq!(admitted(&l, "hot", Plan::STANDARD, 60), 50);
        for i in 0..10_000u32 {
            assert_eq!(admitted(&l, &format!("busy{i}"), Plan::STANDARD, 40), 40);
        }
        assert!(l.len() <= 100);
        assert!(!l.admit("hot", Plan::STANDARD));
    }

    #[tokio::test]
    async fn request_trait_delegates() {
        let c = clock();
        let l: Arc<dyn RequestLimits> = Arc::new(limiter(&c, 10));
        for _ in 0..50 {
            assert!(l.admit("k", Plan::STANDARD).await);
        }
        assert!(!l.admit("k", Plan::STANDARD).await);
    }

    fn operating(c: &Arc<ManualClock>, max_keys: usize) -> OperatingTime {
        OperatingTime::new(c.clone(), max_keys)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn short_calls_are_not_counted() {
        let c = clock();
        c.advance(Duration::from_millis(1_500));
        let o = operating(&c, 100);
        o.record("k", Duration::from_millis(99));
        let s = o.status("k");
        assert_eq!(s, OperatingStatus { operating: 0.0, reset_at: T0 as i64 + 1 + 600, blocked: false });
        assert!(o.is_empty());
        o.record("k", Duration::from_millis(100));
        assert_eq!(o.status("k").operating, 0.1);
    }

    #[test]
    fn sums_across_minutes_and_blocks_past_480_s() {
        let c = clock();
        let o = operating(&c, 100);
        o.record("k", secs(100.0));
        c.advance(Duration::from_secs(60));
        o.record("k", secs(200.0));
        c.advance(Duration::from_secs(120));
        o.record("k", secs(180.0));
        let s = o.status("k");
        assert_eq!(s.operating, 480.0);
        assert!(!s.blocked, "480 s is not past the limit");
        assert_eq!(s.reset_at, T0 as i64 + 600, "expiry of the oldest minute");
        o.record("k", secs(0.1));
        let s = o.status("k");
        assert!(s.blocked);
        assert!((s.operating - 480.1).abs() < 1e-9);
        assert!(!o.status("other").blocked, "keys are independent");
        assert_eq!(o.status("other").operating, 0.0);
    }

    #[test]
    fn window_slides() {
        let c = clock();
        c.advance(Duration::from_secs(10));
        let o = operating(&c, 100);
        o.record("k", secs(300.0)); // minute M
        c.advance(Duration::from_secs(60));
        o.record("k", secs(200.0)); // minute M+1
        let s = o.status("k");
        assert!(s.blocked);
        assert_eq!(s.reset_at, T0 as i64 + 600);
        c.set(UNIX_EPOCH + Duration::from_secs(T0 + 600) - Duration::from_micros(1));
        assert_eq!(o.status("k").operating, 500.0, "minute M still in the window");
        c.set(UNIX_EPOCH + Duration::from_secs(T0 + 600));
        let s = o.status("k");
        assert_eq!(s, OperatingStatus { operating: 200.0, reset_at: T0 as i64 + 660, blocked: false });
        c.set(UNIX_EPOCH + Duration::from_secs(T0 + 660));
        let s = o.status("k");
        assert_eq!(s.operating, 0.0);
        assert_eq!(s.reset_at, T0 as i64 + 660 + 600, "nothing recorded: now + 600");
        // A slot reused ten minutes later starts afresh.
        o.record("k", secs(1.0));
        assert_eq!(o.status("k").operating, 1.0);
        assert_eq!(o.status("k").reset_at, T0 as i64 + 660 + 600);
    }

    #[test]
    fn operating_memory_is_bounded() {
        let c = clock();
        let o = operating(&c, 100);
        o.record("heavy", secs(481.0));
        for i in 0..10_000u32 {
            o.record(&format!("k{i}"), secs(1.0 + f64::from(i % 7)));
            assert!(o.len() <= 100);
        }
        assert!(o.status("heavy").blocked, "the blocked key was not evicted");
        c.advance(Duration::from_secs(600));
        o.record("new", secs(1.0));
        assert_eq!(o.len(), 1, "expired windows dropped");
        o.prune();
        assert_eq!(o.len(), 1);
        c.advance(Duration::from_secs(600));
        o.prune();
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn operating_trait_delegates() {
        let c = clock();
        let o: Arc<dyn OperatingTimeLimits> = Arc::new(operating(&c, 10));
        o.record("k", secs(2.5)).await;
        assert_eq!(o.status("k").await.operating, 2.5);
    }
}
