//! When each call of a run starts: the arrival profile as a pure function of
//! the time since the run began.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long the `ramp` profile takes to reach the full rate.
pub const RAMP_TIME: Duration = Duration::from_secs(10);
/// How much faster than the base rate the second half of a `spike` arrives.
pub const SPIKE_FACTOR: f64 = 10.0;

/// The shape of the call arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Calls start at the rate from the first second to the last.
    #[default]
    Soak,
    /// The rate rises linearly from zero to the full rate over [`RAMP_TIME`],
    /// then stays there.
    Ramp,
    /// The first half of the calls start at the rate, the second half
    /// [`SPIKE_FACTOR`] times faster: a sudden surge on top of a steady load.
    Spike,
}

impl Profile {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Soak => "soak",
            Profile::Ramp => "ramp",
            Profile::Spike => "spike",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A profile name that is not one of `soak`, `ramp`, `spike`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?} (expected soak, ramp or spike)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "soak" => Ok(Profile::Soak),
            "ramp" => Ok(Profile::Ramp),
            "spike" => Ok(Profile::Spike),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }
}

/// The arrival schedule of `calls` calls at `rate` calls per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    profile: Profile,
    calls: u64,
    rate: f64,
}

impl Schedule {
    /// A schedule; `rate` must be positive and finite (the caller validates).
    pub fn new(profile: Profile, calls: u64, rate: f64) -> Schedule {
        Schedule {
            profile,
            calls,
            rate,
        }
    }

    /// How many calls should have started `elapsed` after the run began
    /// (never more than the run's calls).
    pub fn started_by(&self, elapsed: Duration) -> u64 {
        let t = elapsed.as_secs_f64();
        let r = self.rate;
        let due = match self.profile {
            Profile::Soak => r * t,
            Profile::Ramp => {
                let ramp = RAMP_TIME.as_secs_f64();
                if t < ramp {
                    r * t * t / (2.0 * ramp)
                } else {
                    r * ramp / 2.0 + r * (t - ramp)
                }
            }
            Profile::Spike => {
                let half = (self.calls / 2) as f64;
                let steady = half / r;
                if t < steady {
                    r * t
                } else {
                    half + SPIKE_FACTOR * r * (t - steady)
                }
            }
        };
        // The first call starts at once; `due` counts calls whose start time has come.
        let started = due.floor() as u64 + 1;
        started.min(self.calls)
    }

    /// When the call with this index (0-based) is due.
    pub fn start_of(&self, index: u64) -> Duration {
        // Bisect `started_by`, which is monotonic: exact to the microsecond.
        let (mut low, mut high) = (0u64, 1u64);
        while self.started_by(Duration::from_micros(high)) <= index {
            if high > u64::MAX / 4 {
                return Duration::from_micros(high);
            }
            high *= 2;
        }
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.started_by(Duration::from_micros(mid)) > index {
                high = mid;
            } else {
                low = mid;
            }
        }
        if self.started_by(Duration::ZERO) > index {
            Duration::ZERO
        } else {
            Duration::from_micros(high)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn soak_starts_the_first_call_at_once_then_the_rate() {
        let s = Schedule::new(Profile::Soak, 100, 10.0);
        assert_eq!(s.started_by(Duration::ZERO), 1);
        assert_eq!(s.started_by(secs(0.099)), 1);
        assert_eq!(s.started_by(secs(0.1)), 2);
        assert_eq!(s.started_by(secs(5.0)), 51);
        assert_eq!(
            s.started_by(secs(100.0)),
            100,
            "never more than the run's calls"
        );
    }

    #[test]
    fn ramp_is_slow_first_and_at_the_full_rate_after_the_ramp() {
        let s = Schedule::new(Profile::Ramp, 10_000, 100.0);
        // Half the ramp: a quarter of what the full rate would have started.
        assert_eq!(s.started_by(secs(5.0)), 126);
        // End of the ramp: half of rate x ramp time.
        assert_eq!(s.started_by(RAMP_TIME), 501);
        // One second later: a full second's worth more.
        assert_eq!(s.started_by(RAMP_TIME + secs(1.0)), 601);
    }

    #[test]
    fn spike_sends_the_second_half_ten_times_faster() {
        let s = Schedule::new(Profile::Spike, 200, 10.0);
        assert_eq!(s.started_by(secs(9.95)), 100);
        assert_eq!(s.started_by(secs(10.0)), 101);
        // Ten seconds of steady rate, then 100 more calls in one second.
        assert_eq!(s.started_by(secs(10.99)), 200);
        assert_eq!(s.started_by(secs(10.5)), 151);
    }

    #[test]
    fn start_of_inverts_started_by() {
        for profile in [Profile::Soak, Profile::Ramp, Profile::Spike] {
            let s = Schedule::new(profile, 500, 37.0);
            let mut previous = Duration::ZERO;
            for index in 0..500 {
                let at = s.start_of(index);
                assert!(at >= previous, "{profile}: starts are in order");
                assert!(
                    s.started_by(at) > index,
                    "{profile}: call {index} is due at {at:?}"
                );
                if at > Duration::ZERO {
                    let before = at - Duration::from_micros(1);
                    assert!(s.started_by(before) <= index, "{profile}: not due before");
                }
                previous = at;
            }
        }
    }

    #[test]
    fn profiles_parse_by_name() {
        assert_eq!("ramp".parse::<Profile>(), Ok(Profile::Ramp));
        assert_eq!("soak".parse::<Profile>(), Ok(Profile::Soak));
        assert_eq!("spike".parse::<Profile>(), Ok(Profile::Spike));
        let err = "burst".parse::<Profile>().expect_err("unknown");
        assert!(err.to_string().contains("soak, ramp or spike"));
    }
}
