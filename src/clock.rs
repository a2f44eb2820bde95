//! Time as the portal sees it.
//!
//! Everything that reads wall time (token and code expiry, the leaky bucket, operating-time windows, the
//! `time` block, session times) reads one [`PortalClock`]: real time plus an offset a test may move forward
//! (`/_crmchat/clock`), so an hour-long token expiry takes no hour. Durations (`duration`, `processing`, the
//! operating time charged) are measured on the monotonic clock ([`Instant`]) and never see the offset.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The source of "now"; injected so tests (and a shared backend) control time.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock { now: Mutex::new(start) }
    }

    /// A clock standing at `secs` seconds after the unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Microseconds since the unix epoch (negative before it).
pub fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// A `set` or `advance` that would move the portal clock backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the clock never moves backwards")]
pub struct Backwards;

/// The portal's clock: a base clock (the system's) plus an offset that only `set` and `advance` change, and
/// only forwards; [`PortalClock::reset`] returns to the base clock.
pub struct PortalClock {
    base: Arc<dyn Clock>,
    offset_us: AtomicI64,
}

impl Default for PortalClock {
    fn default() -> Self {
        Self::over(Arc::new(SystemClock))
    }
}

impl PortalClock {
    pub fn over(base: Arc<dyn Clock>) -> Self {
        Self { base, offset_us: AtomicI64::new(0) }
    }

    /// Unix time in microseconds.
    pub fn unix_micros(&self) -> i64 {
        unix_micros(self.base.now()).saturating_add(self.offset_us.load(Ordering::Relaxed))
    }

    /// Unix time in milliseconds.
    pub fn unix_ms(&self) -> i64 {
        self.unix_micros().div_euclid(1000)
    }

    /// Unix time in seconds.
    pub fn unix_secs(&self) -> f64 {
        self.unix_micros() as f64 / 1e6
    }

    /// How far the portal clock is ahead of the base clock, in microseconds.
    pub fn offset_us(&self) -> i64 {
        self.offset_us.load(Ordering::Relaxed)
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        let _ = self.offset_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| Some(o.saturating_add(by)));
    }

    /// Make the clock read `to` now; refused when `to` lies before the clock's current time.
    pub fn set(&self, to: SystemTime) -> Result<(), Backwards> {
        let target = unix_micros(to);
        self.offset_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |offset| {
                let base = unix_micros(self.base.now());
                (target >= base.saturating_add(offset)).then(|| target.saturating_sub(base))
            })
            .map(|_| ())
            .map_err(|_| Backwards)
    }

    /// Back to the base clock (offset 0): the one way the clock may move backwards.
    pub fn reset(&self) {
        self.offset_us.store(0, Ordering::Relaxed);
    }
}

impl Clock for PortalClock {
    fn now(&self) -> SystemTime {
        let micros = self.unix_micros();
        if micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(micros as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        }
    }
}

/// When a request (or a batch command) began: the portal's wall time, for the instants of the `time` block,
/// and the monotonic instant, for its durations.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Unix seconds on the portal clock.
    pub unix: f64,
    pub instant: Instant,
}

impl Start {
    pub fn now(clock: &PortalClock) -> Self {
        Self { unix: clock.unix_secs(), instant: Instant::now() }
    }

    /// The portal's wall time at `instant`, as measured from the start (so `finish - start` is a monotonic
    /// duration even when the clock is moved meanwhile).
    pub fn unix_at(&self, instant: Instant) -> f64 {
        self.unix + instant.saturating_duration_since(self.instant).as_secs_f64()
    }

    /// Milliseconds since the unix epoch on the portal clock, at the start.
    pub fn unix_ms(&self) -> i64 {
        (self.unix * 1000.0) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_only_move_forward() {
        let base = Arc::new(ManualClock::at_unix(1_000));
        let clock = PortalClock::over(base.clone());
        assert_eq!(clock.unix_micros(), 1_000_000_000);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.unix_ms(), 4_600_000);
        assert_eq!(clock.offset_us(), 3_600_000_000);
        assert_eq!(clock.set(UNIX_EPOCH + Duration::from_secs(4_599)), Err(Backwards));
        assert_eq!(clock.unix_ms(), 4_600_000, "a refused set changes nothing");
        clock.set(UNIX_EPOCH + Duration::from_secs(4_600)).expect("setting to now is not backwards");
        clock.set(UNIX_EPOCH + Duration::from_secs(10_000)).unwrap();
        assert_eq!(clock.unix_secs(), 10_000.0);
        base.advance(Duration::from_secs(5));
        assert_eq!(clock.unix_secs(), 10_005.0, "the base clock keeps running under the offset");
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(10_005));
        clock.reset();
        assert_eq!((clock.unix_secs(), clock.offset_us()), (1_005.0, 0));
    }

    #[test]
    fn durations_ignore_the_offset() {
        let clock = PortalClock::default();
        let start = Start::now(&clock);
        clock.advance(Duration::from_secs(86_400));
        let later = start.instant + Duration::from_millis(250);
        assert_eq!(start.unix_at(later) - start.unix, 0.25);
    }
}
