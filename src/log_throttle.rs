//! Rate-limited log lines: a fault that hits every request (a full disk, a stalled database, a flood of
//! connections) must be told once in a while with a count, not thousands of times a second, which would fill
//! the disk that is already full and bury every other line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One log site: at most one line per `every`, telling how many were held back since the last one.
pub struct LogThrottle {
    every_ms: u64,
    /// When a line was last let through (unix ms; 0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new(every: Duration) -> Self {
        Self { every_ms: every.as_millis() as u64, last_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)`: log now, `n` earlier lines were held back; `None`: hold this one back.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= self.every_ms)
            && self.last_ms.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let throttle = LogThrottle::new(Duration::from_millis(200));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.allow(), Some(1000));
        assert_eq!(throttle.allow(), None);
    }
}
