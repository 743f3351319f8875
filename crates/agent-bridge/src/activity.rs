//! When a call's far end was last heard, kept where the call task can read it without
//! being told: the media worker notes RTP activity on the bridge's tick, and the call
//! task looks only when its inactivity deadline comes. A message per activity would wake
//! the call task (and often a parked thread) a few times a second on every call, to push
//! back a deadline that is 30 s away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Stored when nothing was heard yet.
const NEVER: u64 = u64::MAX;

/// The last activity of one call; cheap to clone, shared between threads.
#[derive(Debug, Clone)]
pub struct ActivityClock {
    base: Instant,
    /// Microseconds from `base` to the last activity, or [`NEVER`].
    last: Arc<AtomicU64>,
}

impl ActivityClock {
    /// A clock that has heard nothing yet.
    pub fn new(base: Instant) -> ActivityClock {
        ActivityClock {
            base,
            last: Arc::new(AtomicU64::new(NEVER)),
        }
    }

    /// Notes activity at `at` (an instant before the clock's base counts as the base).
    pub fn touch(&self, at: Instant) {
        let micros = at.saturating_duration_since(self.base).as_micros();
        let micros = u64::try_from(micros).unwrap_or(NEVER - 1).min(NEVER - 1);
        // A later time replaces an earlier one, and any time replaces NEVER.
        let _ = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == NEVER || micros > old).then_some(micros)
            });
    }

    /// When activity was last noted, if ever.
    pub fn last(&self) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            NEVER => None,
            micros => Some(self.base + std::time::Duration::from_micros(micros)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_latest_activity_is_kept_and_read_from_another_clone() {
        let base = Instant::now();
        let clock = ActivityClock::new(base);
        let reader = clock.clone();
        assert_eq!(reader.last(), None, "nothing heard yet");
        clock.touch(base + Duration::from_millis(1500));
        assert_eq!(reader.last(), Some(base + Duration::from_millis(1500)));
        clock.touch(base + Duration::from_millis(700));
        assert_eq!(
            reader.last(),
            Some(base + Duration::from_millis(1500)),
            "an earlier note does not move it back"
        );
        clock.touch(base.checked_sub(Duration::from_secs(1)).unwrap_or(base));
        assert_eq!(reader.last(), Some(base + Duration::from_millis(1500)));
    }
}
