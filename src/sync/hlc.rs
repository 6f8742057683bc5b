//! Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014).
//!
//! A timestamp is the largest wall-clock millisecond this instance has seen (its own clock or a
//! peer's) plus a logical counter that orders events inside that millisecond; the instance id
//! breaks the remaining ties, so any two timestamps are ordered and every instance orders them
//! the same way. Because a receiver moves its clock up to every timestamp it accepts, an
//! instance whose wall clock runs behind still stamps its later writes above the ones it has
//! seen, and one whose clock runs ahead wins only over writes made without knowledge of its own
//! — never over writes made after them. Timestamps further ahead of the receiver's wall clock
//! than the configured maximum skew are refused rather than allowed to drag every clock forward.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in hybrid logical time. Ordered by `wall_ms`, then `logical`, then `instance`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch: the largest wall-clock reading seen so far.
    pub wall_ms: u64,
    /// Orders events that share `wall_ms`.
    pub logical: u32,
    /// The instance that made the timestamp; breaks ties.
    pub instance: String,
}

impl Timestamp {
    /// The smallest timestamp of an instance: below everything it will ever stamp.
    pub fn zero(instance: &str) -> Self {
        Timestamp { wall_ms: 0, logical: 0, instance: instance.to_string() }
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.wall_ms, self.logical, self.instance.as_str()).cmp(&(
            other.wall_ms,
            other.logical,
            other.instance.as_str(),
        ))
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where the clock reads physical time. Tests inject an offset or a fixed clock.
pub trait PhysicalClock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock, shifted by a fixed offset (zero in production; tests use it to play an
/// instance whose clock is wrong).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    /// Added to every reading, in milliseconds; may be negative.
    pub offset_ms: i64,
}

impl PhysicalClock for SystemClock {
    fn now_ms(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        now.saturating_add(self.offset_ms).max(0) as u64
    }
}

/// Default largest distance, in milliseconds, that a peer's timestamp may run ahead of this
/// instance's wall clock and still be accepted.
pub const DEFAULT_MAX_SKEW_MS: u64 = 60_000;

/// One instance's hybrid logical clock. Thread-safe.
pub struct HybridClock {
    instance: String,
    physical: Arc<dyn PhysicalClock>,
    max_skew_ms: u64,
    // (wall_ms, logical) of the last timestamp issued or observed.
    last: Mutex<(u64, u32)>,
}

impl std::fmt::Debug for HybridClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("HybridClock")
            .field("instance", &self.instance)
            .field("max_skew_ms", &self.max_skew_ms)
            .field("last", &last)
            .finish()
    }
}

impl HybridClock {
    /// A clock on the system time.
    pub fn new(instance: &str) -> Self {
        Self::with_physical(instance, Arc::new(SystemClock::default()), DEFAULT_MAX_SKEW_MS)
    }

    /// A clock on any physical time source, refusing peers more than `max_skew_ms` ahead.
    pub fn with_physical(instance: &str, physical: Arc<dyn PhysicalClock>, max_skew_ms: u64) -> Self {
        HybridClock { instance: instance.to_string(), physical, max_skew_ms, last: Mutex::new((0, 0)) }
    }

    /// The instance id stamped into every timestamp.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A timestamp for a local event (a write or a send): above every timestamp issued or
    /// observed before.
    pub fn now(&self) -> Timestamp {
        let pt = self.physical.now_ms();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (wall, logical) = if pt > last.0 { (pt, 0) } else { bump(last.0, last.1) };
        *last = (wall, logical);
        Timestamp { wall_ms: wall, logical, instance: self.instance.clone() }
    }

    /// Takes in a peer's timestamp (on receipt of its message), so that every later local
    /// timestamp is above it. Refuses a timestamp more than the maximum skew ahead of this
    /// instance's wall clock, leaving the clock unchanged.
    pub fn observe(&self, remote: &Timestamp) -> Result<()> {
        let pt = self.physical.now_ms();
        if remote.wall_ms > pt.saturating_add(self.max_skew_ms) {
            return Err(Error::InvalidArgument(format!(
                "timestamp of instance {:?} is {} ms ahead of this clock (the limit is {} ms)",
                remote.instance,
                remote.wall_ms - pt,
                self.max_skew_ms
            )));
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (l_old, c_old) = *last;
        let wall = l_old.max(remote.wall_ms).max(pt);
        let logical = if wall == l_old && wall == remote.wall_ms {
            c_old.max(remote.logical)
        } else if wall == l_old {
            c_old
        } else if wall == remote.wall_ms {
            remote.logical
        } else {
            0
        };
        // The paper's receive rule adds one here for the receive event itself; this clock
        // stamps only sends, so it keeps the maximum and lets the next `now` add the one.
        *last = (wall, logical);
        Ok(())
    }

    /// The last (wall_ms, logical) issued or observed.
    pub fn last(&self) -> (u64, u32) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// The next logical tick; if the counter is exhausted, the next millisecond.
fn bump(wall: u64, logical: u32) -> (u64, u32) {
    match logical.checked_add(1) {
        Some(c) => (wall, c),
        None => (wall + 1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

    struct Manual(AtomicU64);
    impl PhysicalClock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(AtomicOrdering::SeqCst)
        }
    }

    fn manual(at: u64) -> Arc<Manual> {
        Arc::new(Manual(AtomicU64::new(at)))
    }

    #[test]
    fn timestamps_are_strictly_increasing_even_when_the_wall_clock_stands_still_or_steps_back() {
        let wall = manual(1_000);
        let clock = HybridClock::with_physical("a", wall.clone(), DEFAULT_MAX_SKEW_MS);
        let t1 = clock.now();
        let t2 = clock.now();
        wall.0.store(900, AtomicOrdering::SeqCst);
        let t3 = clock.now();
        wall.0.store(1_001, AtomicOrdering::SeqCst);
        let t4 = clock.now();
        assert!(t1 < t2 && t2 < t3 && t3 < t4, "{t1:?} {t2:?} {t3:?} {t4:?}");
        assert_eq!((t1.wall_ms, t1.logical), (1_000, 0));
        assert_eq!((t3.wall_ms, t3.logical), (1_000, 2));
        assert_eq!((t4.wall_ms, t4.logical), (1_001, 0));
    }

    #[test]
    fn a_clock_that_runs_behind_stamps_its_later_writes_above_what_it_has_seen() {
        let ahead = HybridClock::with_physical("ahead", manual(20_000), DEFAULT_MAX_SKEW_MS);
        let behind = HybridClock::with_physical("behind", manual(10_000), DEFAULT_MAX_SKEW_MS);
        let seen = ahead.now();
        behind.observe(&seen).unwrap();
        let later = behind.now();
        assert!(later > seen, "{later:?} must order after {seen:?}");
        assert_eq!(later.wall_ms, 20_000);
    }

    #[test]
    fn equal_wall_and_counter_tie_break_by_instance() {
        let a = Timestamp { wall_ms: 5, logical: 1, instance: "a".into() };
        let b = Timestamp { wall_ms: 5, logical: 1, instance: "b".into() };
        assert!(a < b);
        assert_eq!(a.cmp(&a.clone()), Ordering::Equal);
    }

    #[test]
    fn a_timestamp_beyond_the_maximum_skew_is_refused_and_leaves_the_clock_alone() {
        let clock = HybridClock::with_physical("a", manual(1_000), 500);
        let far = Timestamp { wall_ms: 1_501, logical: 0, instance: "b".into() };
        let err = clock.observe(&far).unwrap_err();
        assert!(err.to_string().contains("ahead"), "{err}");
        assert_eq!(clock.last(), (0, 0));
        let near = Timestamp { wall_ms: 1_500, logical: 7, instance: "b".into() };
        clock.observe(&near).unwrap();
        let next = clock.now();
        assert_eq!((next.wall_ms, next.logical), (1_500, 8));
    }

    #[test]
    fn the_offset_clock_shifts_the_system_time() {
        let now = SystemClock::default().now_ms();
        let ahead = SystemClock { offset_ms: 10_000 }.now_ms();
        let behind = SystemClock { offset_ms: -10_000 }.now_ms();
        assert!(ahead >= now + 9_000 && behind + 9_000 <= now);
    }
}
