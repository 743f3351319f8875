//! RFC 3261 transaction timers (section 17, table 4 of appendix A) as a fixed table.

use std::time::{Duration, Instant};

/// Delay after which a server INVITE transaction sends `100 Trying` itself (RFC 3261 17.2.1).
pub const TRYING_DELAY: Duration = Duration::from_millis(200);

/// Timer D over unreliable transports: at least 32 s (RFC 3261 17.1.1.2).
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// The base intervals of RFC 3261 timers; every other timer derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: timers B, F, H, J (unreliable), L and M.
    pub fn t1_x64(&self) -> Duration {
        self.t1 * 64
    }

    /// The config with T1 at least 1 ms, so retransmission intervals always grow.
    pub(crate) fn sanitized(mut self) -> Self {
        self.t1 = self.t1.max(Duration::from_millis(1));
        self.t2 = self.t2.max(self.t1);
        self
    }
}

/// The timers of the four transaction state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Client INVITE retransmission (Calling).
    A,
    /// Client INVITE timeout (Calling).
    B,
    /// Client INVITE wait for response retransmissions (Completed).
    D,
    /// Client non-INVITE retransmission.
    E,
    /// Client non-INVITE timeout.
    F,
    /// Client non-INVITE wait for response retransmissions (Completed).
    K,
    /// Server INVITE final response retransmission (Completed; also 2xx in Accepted).
    G,
    /// Server INVITE wait for ACK (Completed).
    H,
    /// Server INVITE wait for ACK retransmissions (Confirmed).
    I,
    /// Server non-INVITE wait for request retransmissions (Completed).
    J,
    /// Server INVITE wait in Accepted (RFC 6026).
    L,
    /// Client INVITE wait in Accepted (RFC 6026).
    M,
    /// Server INVITE: send `100 Trying` if the TU has not answered (RFC 3261 17.2.1).
    Trying,
    /// Server non-INVITE: give up on a TU that never answers (64*T1, past the client's Timer F).
    TuGuard,
}

impl Timer {
    /// Number of timers, the size of a [`TimerTable`].
    pub const COUNT: usize = 14;

    const ALL: [Timer; Timer::COUNT] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::K,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::L,
        Timer::M,
        Timer::Trying,
        Timer::TuGuard,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Deadlines of one transaction, indexed by [`Timer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Arms `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn clear(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// Disarms every timer.
    pub fn clear_all(&mut self) {
        self.deadlines = [None; Timer::COUNT];
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// The earliest armed deadline.
    pub fn earliest(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the armed timer with the earliest deadline at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let timer = Timer::ALL
            .into_iter()
            .filter_map(|timer| self.get(timer).map(|at| (at, timer)))
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)
            .map(|(_, timer)| timer)?;
        self.clear(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_expired_timers_in_deadline_order() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::B, t0 + Duration::from_secs(32));
        table.set(Timer::A, t0 + Duration::from_millis(500));
        table.set(Timer::Trying, t0 + Duration::from_millis(200));
        assert_eq!(table.earliest(), Some(t0 + Duration::from_millis(200)));
        assert_eq!(table.pop_expired(t0), None);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(table.pop_expired(later), Some(Timer::Trying));
        assert_eq!(table.pop_expired(later), Some(Timer::A));
        assert_eq!(table.pop_expired(later), None);
        assert_eq!(table.earliest(), Some(t0 + Duration::from_secs(32)));
        table.clear_all();
        assert_eq!(table.earliest(), None);
    }

    #[test]
    fn config_defaults_and_sanitizing() {
        let config = TimerConfig::default();
        assert_eq!(config.t1_x64(), Duration::from_secs(32));
        let zero = TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        }
        .sanitized();
        assert_eq!(zero.t1, Duration::from_millis(1));
        assert_eq!(zero.t2, Duration::from_millis(1));
    }
}
