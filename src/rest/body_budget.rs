//! The bytes buffered across all request bodies, bounded (`--max-buffered-bytes`). Each body is bounded by
//! `--max-body-bytes` already, but four hundred slow uploads of 1 MiB each took the server to a gigabyte:
//! a body is read into one buffer whose room is taken from this budget before it is used, and a body the
//! budget has no room for is read to its end without being kept and answered 503 `QUERY_LIMIT_EXCEEDED`, the
//! vendor's "come back later", instead of the server growing until it is killed.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// The room left for request bodies, in bytes.
pub struct BodyBudget {
    room: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(total_bytes: usize) -> Self {
        Self { room: Arc::new(Semaphore::new(total_bytes.min(Semaphore::MAX_PERMITS))) }
    }

    /// An empty share of the budget, to be grown as a body's buffer grows.
    pub fn share(&self) -> Share {
        Share { room: self.room.clone(), held: 0 }
    }

    /// The bytes not taken by any body now.
    pub fn available(&self) -> usize {
        self.room.available_permits()
    }
}

/// The bytes of the budget one body holds, given back when it is dropped (when the call is answered).
pub struct Share {
    room: Arc<Semaphore>,
    held: usize,
}

impl Share {
    /// Hold `bytes` in all; false, holding what it held before, when the budget has no room for the rest.
    /// Never waits: a body that waited for room would hold its connection and its part-read bytes meanwhile.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.held).filter(|&more| more > 0) else {
            return true;
        };
        let Ok(more_permits) = u32::try_from(more) else {
            return false;
        };
        match self.room.try_acquire_many(more_permits) {
            Ok(permit) => {
                // Given back by hand in `drop`, so that a share grown many times is still one count.
                permit.forget();
                self.held = bytes;
                true
            }
            Err(_) => false,
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.room.add_permits(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_take_room_until_dropped() {
        let budget = BodyBudget::new(100);
        let mut first = budget.share();
        assert!(first.grow_to(60));
        assert!(first.grow_to(30), "a smaller size is held already");
        assert_eq!(first.held(), 60);
        let mut second = budget.share();
        assert!(!second.grow_to(50), "only 40 left");
        assert_eq!(second.held(), 0);
        assert!(second.grow_to(40));
        assert_eq!(budget.available(), 0);
        drop(first);
        assert_eq!(budget.available(), 60);
        assert!(second.grow_to(100));
        drop(second);
        assert_eq!(budget.available(), 100);
    }
}
