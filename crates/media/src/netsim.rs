//! A seeded, deterministic, sans-IO network impairment simulator.
//!
//! A sender emits one packet per frame (20 ms by default, with an optional
//! clock drift in ppm); for each packet the simulator decides whether the
//! network drops it (independent loss plus Gilbert-Elliott burst loss),
//! duplicates it, and when each copy arrives (base delay + random jitter +
//! occasional delay spikes + occasional reordering hold-back). Packets are
//! opaque: the simulator is generic over the payload type.
//!
//! The same seed and the same inputs always give the same arrivals. The
//! simulator never reads the clock: the caller says when packets are sent and
//! asks which arrivals are due at a given instant.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use media::netsim::{NetSim, NetSimConfig};
//!
//! let start = Instant::now();
//! let arrivals = NetSim::trace(NetSimConfig::lossy(), 7, start, 500, |index| index);
//! assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
//! assert!(arrivals.len() < 500);
//! ```

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;

/// Why a [`NetSimConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NetSimError {
    /// A probability is outside `0.0..=1.0` (or is NaN).
    #[error("probability `{field}` = {value} is outside 0..=1")]
    Probability {
        /// The configuration field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// The frame interval is zero.
    #[error("frame interval must be positive")]
    ZeroFrame,
    /// The clock drift is not within +/- 10 000 ppm (or is NaN).
    #[error("clock drift {ppm} ppm is outside +/-10000")]
    Drift {
        /// The rejected drift.
        ppm: f64,
    },
    /// A jitter distribution parameter is not a finite positive number.
    #[error("jitter parameter `{field}` = {value} must be finite and positive")]
    JitterParameter {
        /// The parameter.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
}

/// The two-state Gilbert-Elliott burst-loss model.
///
/// The channel is either good or bad; before each packet it may switch state,
/// then the packet is lost with the loss probability of the current state.
/// The mean burst length is `1 / bad_to_good` packets and the share of time
/// spent in the bad state is `good_to_bad / (good_to_bad + bad_to_good)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per packet.
    pub good_to_bad: f64,
    /// Probability of moving from the bad to the good state, per packet.
    pub bad_to_good: f64,
    /// Loss probability while in the good state.
    pub loss_in_good: f64,
    /// Loss probability while in the bad state.
    pub loss_in_bad: f64,
}

/// The distribution of the random part of the one-way delay (added to the
/// base delay; never negative).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JitterModel {
    /// No random delay.
    None,
    /// Half-normal: `|N(0, std_dev)|`; about 95% of packets fall within
    /// `2 * std_dev` of the base delay.
    Normal {
        /// The standard deviation of the underlying normal distribution.
        std_dev: Duration,
    },
    /// Pareto (Lomax) heavy tail: `scale * (U^(-1/shape) - 1)`, the shape of
    /// delay on congested mobile links. The mean is `scale / (shape - 1)`
    /// for `shape > 1`.
    Pareto {
        /// The scale parameter.
        scale: Duration,
        /// The shape (tail index); smaller is heavier.
        shape: f64,
    },
}

/// A delay spike: a queue builds up and drains, so for `length` packets the
/// delay gets an extra `extra` that ramps linearly down to zero (the first
/// packet of the spike is the most delayed; the others arrive bunched up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// Probability, per packet outside a spike, that a spike starts.
    pub probability: f64,
    /// The extra delay of the first packet of the spike.
    pub extra: Duration,
    /// How many packets the spike lasts.
    pub length: u32,
}

/// The impairments of one simulated path.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSimConfig {
    /// The sender's packet interval, by the sender's clock.
    pub frame: Duration,
    /// How fast the sender's clock runs compared to real time, in parts per
    /// million (positive: the sender sends slightly more often).
    pub drift_ppm: f64,
    /// Independent (random) loss probability per packet.
    pub loss: f64,
    /// Burst loss, on top of the independent loss.
    pub burst: Option<GilbertElliott>,
    /// The constant part of the one-way delay.
    pub base_delay: Duration,
    /// The random part of the one-way delay.
    pub jitter: JitterModel,
    /// Occasional delay spikes.
    pub spike: Option<Spike>,
    /// Probability that a packet is held back by `reorder_delay` (it then
    /// arrives after some of its successors).
    pub reorder: f64,
    /// The hold-back of a reordered packet.
    pub reorder_delay: Duration,
    /// Probability that a packet arrives twice.
    pub duplicate: f64,
    /// Extra delay of the second copy of a duplicated packet.
    pub duplicate_delay: Duration,
}

/// One packet (or a duplicate copy of it) reaching the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival<P> {
    /// When it arrives.
    pub at: Instant,
    /// When it was sent.
    pub sent_at: Instant,
    /// The sender's packet index (0 for the first packet sent).
    pub index: u64,
    /// Whether this is the second copy of a duplicated packet.
    pub duplicate: bool,
    /// The packet itself.
    pub packet: P,
}

/// Counters of what the simulator did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetSimStats {
    /// Packets handed to [`NetSim::send`].
    pub sent: u64,
    /// Packets dropped by the independent loss.
    pub lost_random: u64,
    /// Packets dropped by the burst-loss model.
    pub lost_burst: u64,
    /// Packets that got a second copy.
    pub duplicated: u64,
    /// Packets held back to be reordered.
    pub reordered: u64,
    /// Delay spikes started.
    pub spikes: u64,
}

/// The simulator: a seeded random source, the path configuration and the
/// packets in flight.
#[derive(Debug)]
pub struct NetSim<P> {
    config: NetSimConfig,
    rng: StdRng,
    in_flight: BinaryHeap<InFlight<P>>,
    order: u64,
    burst_bad: bool,
    spike_left: u32,
    next_index: u64,
    stats: NetSimStats,
}

impl NetSimConfig {
    /// A clean LAN-like path: 20 ms base delay, about 1 ms of jitter, no loss.
    pub fn clean() -> Self {
        Self {
            frame: Duration::from_millis(20),
            drift_ppm: 0.0,
            loss: 0.0,
            burst: None,
            base_delay: Duration::from_millis(20),
            jitter: JitterModel::Normal {
                std_dev: Duration::from_micros(500),
            },
            spike: None,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            duplicate_delay: Duration::ZERO,
        }
    }

    /// About 3% loss, mostly in bursts of about three packets, on an
    /// otherwise clean path.
    pub fn lossy() -> Self {
        Self {
            loss: 0.007,
            burst: Some(GilbertElliott {
                good_to_bad: 0.01,
                bad_to_good: 0.3,
                loss_in_good: 0.0,
                loss_in_bad: 0.7,
            }),
            base_delay: Duration::from_millis(40),
            jitter: JitterModel::Normal {
                std_dev: Duration::from_millis(2),
            },
            ..Self::clean()
        }
    }

    /// About 40 ms of delay variation (half-normal, 20 ms standard deviation),
    /// which reorders packets, plus rare duplicates and 0.5% loss.
    pub fn jittery() -> Self {
        Self {
            loss: 0.005,
            base_delay: Duration::from_millis(50),
            jitter: JitterModel::Normal {
                std_dev: Duration::from_millis(20),
            },
            duplicate: 0.002,
            duplicate_delay: Duration::from_millis(5),
            ..Self::clean()
        }
    }

    /// A congested mobile link: heavy-tailed jitter, delay spikes of 150 ms,
    /// burst loss (about 4% in all), reordering, duplicates and a 50 ppm
    /// clock drift.
    pub fn bad_mobile() -> Self {
        Self {
            frame: Duration::from_millis(20),
            drift_ppm: 50.0,
            loss: 0.01,
            burst: Some(GilbertElliott {
                good_to_bad: 0.01,
                bad_to_good: 0.25,
                loss_in_good: 0.0,
                loss_in_bad: 0.75,
            }),
            base_delay: Duration::from_millis(80),
            jitter: JitterModel::Pareto {
                scale: Duration::from_millis(12),
                shape: 2.5,
            },
            spike: Some(Spike {
                probability: 0.004,
                extra: Duration::from_millis(150),
                length: 10,
            }),
            reorder: 0.01,
            reorder_delay: Duration::from_millis(30),
            duplicate: 0.005,
            duplicate_delay: Duration::from_millis(10),
        }
    }

    /// Checks every probability and distribution parameter.
    pub fn validate(&self) -> Result<(), NetSimError> {
        if self.frame.is_zero() {
            return Err(NetSimError::ZeroFrame);
        }
        if self.drift_ppm.is_nan() || self.drift_ppm.abs() > 10_000.0 {
            return Err(NetSimError::Drift {
                ppm: self.drift_ppm,
            });
        }
        let mut probabilities = vec![
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ];
        if let Some(burst) = &self.burst {
            probabilities.extend([
                ("burst.good_to_bad", burst.good_to_bad),
                ("burst.bad_to_good", burst.bad_to_good),
                ("burst.loss_in_good", burst.loss_in_good),
                ("burst.loss_in_bad", burst.loss_in_bad),
            ]);
        }
        if let Some(spike) = &self.spike {
            probabilities.push(("spike.probability", spike.probability));
        }
        for (field, value) in probabilities {
            if !(0.0..=1.0).contains(&value) {
                return Err(NetSimError::Probability { field, value });
            }
        }
        if let JitterModel::Pareto { shape, .. } = self.jitter {
            if !(shape.is_finite() && shape > 0.0) {
                return Err(NetSimError::JitterParameter {
                    field: "jitter.shape",
                    value: shape,
                });
            }
        }
        Ok(())
    }
}

impl Default for NetSimConfig {
    fn default() -> Self {
        Self::clean()
    }
}

impl<P: Clone> NetSim<P> {
    /// A simulator for `config` whose random choices all derive from `seed`.
    pub fn new(config: NetSimConfig, seed: u64) -> Result<Self, NetSimError> {
        config.validate()?;
        Ok(Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            order: 0,
            burst_bad: false,
            spike_left: 0,
            next_index: 0,
            stats: NetSimStats::default(),
        })
    }

    /// Runs a whole trace: `count` packets sent from `start` at the sender's
    /// (drifting) frame interval, `make(index)` building each one; returns
    /// every arrival sorted by time (ties keep the order they were decided in).
    ///
    /// # Panics
    ///
    /// If `config` is invalid (a test-setup error, not network input).
    pub fn trace(
        config: NetSimConfig,
        seed: u64,
        start: Instant,
        count: u64,
        mut make: impl FnMut(u64) -> P,
    ) -> Vec<Arrival<P>> {
        let mut sim = Self::new(config, seed).expect("trace() is given a valid NetSimConfig");
        for index in 0..count {
            let sent_at = sim.send_time(start, index);
            sim.send(sent_at, make(index));
        }
        let mut arrivals = Vec::with_capacity(sim.in_flight.len());
        while let Some(arrival) = sim.pop_next() {
            arrivals.push(arrival);
        }
        arrivals
    }

    /// When the sender, whose first packet leaves at `start`, sends packet
    /// `index`, in real time (its clock drifts by `drift_ppm`).
    pub fn send_time(&self, start: Instant, index: u64) -> Instant {
        let nominal = self.config.frame.as_secs_f64() * index as f64;
        let real = nominal / (1.0 + self.config.drift_ppm * 1e-6);
        start + Duration::from_secs_f64(real.max(0.0))
    }

    /// Hands one packet to the network at `sent_at`; it is dropped or
    /// scheduled to arrive (possibly twice). Returns the packet's index.
    pub fn send(&mut self, sent_at: Instant, packet: P) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        self.stats.sent += 1;

        // Draw every random number of a packet whatever the outcome, so that
        // changing a probability does not reshuffle the other decisions.
        let random_loss = self.rng.gen::<f64>() < self.config.loss;
        let burst_loss = self.burst_step();
        let delay = self.delay();
        let reorder = self.rng.gen::<f64>() < self.config.reorder;
        let duplicate = self.rng.gen::<f64>() < self.config.duplicate;

        if random_loss {
            self.stats.lost_random += 1;
            return index;
        }
        if burst_loss {
            self.stats.lost_burst += 1;
            return index;
        }
        let mut at = sent_at + delay;
        if reorder {
            self.stats.reordered += 1;
            at += self.config.reorder_delay;
        }
        if duplicate {
            self.stats.duplicated += 1;
            let copy = at + self.config.duplicate_delay;
            self.schedule(copy, sent_at, index, true, packet.clone());
        }
        self.schedule(at, sent_at, index, false, packet);
        index
    }

    /// The next arrival due at or before `now`, earliest first.
    pub fn poll_arrival(&mut self, now: Instant) -> Option<Arrival<P>> {
        if self.in_flight.peek()?.arrival.at <= now {
            self.pop_next()
        } else {
            None
        }
    }

    /// When the earliest packet in flight arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|entry| entry.arrival.at)
    }

    /// Packets still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// What the simulator has done so far.
    pub fn stats(&self) -> NetSimStats {
        self.stats
    }

    /// The configuration in use.
    pub fn config(&self) -> &NetSimConfig {
        &self.config
    }
}

/// A packet in flight, ordered by arrival time then by scheduling order.
#[derive(Debug)]
struct InFlight<P> {
    arrival: Arrival<P>,
    order: u64,
}

impl<P> PartialEq for InFlight<P> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<P> Eq for InFlight<P> {}

impl<P> PartialOrd for InFlight<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for InFlight<P> {
    /// Reversed, so that the max-heap yields the earliest arrival first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.arrival.at, other.order).cmp(&(self.arrival.at, self.order))
    }
}

impl<P: Clone> NetSim<P> {
    fn schedule(&mut self, at: Instant, sent_at: Instant, index: u64, duplicate: bool, packet: P) {
        let order = self.order;
        self.order += 1;
        self.in_flight.push(InFlight {
            arrival: Arrival {
                at,
                sent_at,
                index,
                duplicate,
                packet,
            },
            order,
        });
    }

    fn pop_next(&mut self) -> Option<Arrival<P>> {
        self.in_flight.pop().map(|entry| entry.arrival)
    }

    /// Advances the Gilbert-Elliott chain by one packet; true if it loses it.
    fn burst_step(&mut self) -> bool {
        let transition = self.rng.gen::<f64>();
        let loss = self.rng.gen::<f64>();
        let Some(model) = self.config.burst else {
            return false;
        };
        if self.burst_bad {
            if transition < model.bad_to_good {
                self.burst_bad = false;
            }
        } else if transition < model.good_to_bad {
            self.burst_bad = true;
        }
        let p = if self.burst_bad {
            model.loss_in_bad
        } else {
            model.loss_in_good
        };
        loss < p
    }

    /// Base delay + jitter + spike for the next packet.
    fn delay(&mut self) -> Duration {
        let jitter = match self.config.jitter {
            JitterModel::None => 0.0,
            JitterModel::Normal { std_dev } => std_dev.as_secs_f64() * self.standard_normal().abs(),
            JitterModel::Pareto { scale, shape } => {
                // 1 - U is in (0, 1], so the power is finite.
                let u = 1.0 - self.rng.gen::<f64>();
                scale.as_secs_f64() * (u.powf(-1.0 / shape) - 1.0)
            }
        };
        let start_spike = self.rng.gen::<f64>();
        let mut spike = 0.0;
        if let Some(model) = self.config.spike {
            if self.spike_left == 0 && model.length > 0 && start_spike < model.probability {
                self.spike_left = model.length;
                self.stats.spikes += 1;
            }
            if self.spike_left > 0 {
                spike = model.extra.as_secs_f64() * f64::from(self.spike_left)
                    / f64::from(model.length);
                self.spike_left -= 1;
            }
        }
        // Cap the random part at an hour so that a heavy tail never overflows
        // an Instant.
        let random = (jitter + spike).clamp(0.0, 3600.0);
        self.config.base_delay + Duration::from_secs_f64(random)
    }

    /// One draw of N(0, 1) by the Box-Muller transform.
    fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.rng.gen::<f64>();
        let u2 = self.rng.gen::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn same_seed_same_trace_different_seed_different_trace() {
        let start = Instant::now();
        let a = NetSim::trace(NetSimConfig::bad_mobile(), 42, start, 2000, |i| i);
        let b = NetSim::trace(NetSimConfig::bad_mobile(), 42, start, 2000, |i| i);
        let c = NetSim::trace(NetSimConfig::bad_mobile(), 43, start, 2000, |i| i);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn arrivals_are_sorted_and_never_before_base_delay() {
        let start = Instant::now();
        for config in [
            NetSimConfig::clean(),
            NetSimConfig::lossy(),
            NetSimConfig::jittery(),
            NetSimConfig::bad_mobile(),
        ] {
            let base = config.base_delay;
            let arrivals = NetSim::trace(config, 1, start, 3000, |i| i);
            assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(arrivals.iter().all(|a| a.at >= a.sent_at + base));
        }
    }

    #[test]
    fn clean_path_delivers_everything_in_order() {
        let start = Instant::now();
        let arrivals = NetSim::trace(NetSimConfig::clean(), 9, start, 1000, |i| i);
        assert_eq!(arrivals.len(), 1000);
        assert!(arrivals
            .iter()
            .enumerate()
            .all(|(i, a)| a.packet == i as u64));
    }

    #[test]
    fn lossy_preset_loses_about_three_percent_in_bursts() {
        let start = Instant::now();
        let count = 50_000;
        let arrivals = NetSim::trace(NetSimConfig::lossy(), 3, start, count, |i| i);
        let lost = count - arrivals.len() as u64;
        let rate = lost as f64 / count as f64;
        assert!((0.02..0.045).contains(&rate), "loss rate {rate}");
        // Bursts: some gaps of two or more consecutive packets.
        let runs = arrivals
            .windows(2)
            .filter(|w| w[1].packet > w[0].packet + 2)
            .count();
        assert!(runs > 50, "only {runs} bursts");
    }

    #[test]
    fn jittery_preset_reorders_and_duplicates() {
        let start = Instant::now();
        let mut sim = NetSim::new(NetSimConfig::jittery(), 5).unwrap();
        for i in 0..5000u64 {
            let at = sim.send_time(start, i);
            sim.send(at, i);
        }
        let mut arrivals = Vec::new();
        while let Some(arrival) = sim.poll_arrival(start + Duration::from_secs(3600)) {
            arrivals.push(arrival);
        }
        let reordered = arrivals
            .windows(2)
            .filter(|w| w[1].packet < w[0].packet)
            .count();
        assert!(reordered > 100, "{reordered} reorderings");
        assert!(sim.stats().duplicated > 0);
        assert_eq!(
            arrivals.iter().filter(|a| a.duplicate).count() as u64,
            sim.stats().duplicated
        );
    }

    #[test]
    fn poll_arrival_respects_now_and_poll_timeout() {
        let start = Instant::now();
        let config = NetSimConfig {
            jitter: JitterModel::None,
            ..NetSimConfig::clean()
        };
        let mut sim = NetSim::new(config, 0).unwrap();
        sim.send(start, "a");
        sim.send(start + ms(20), "b");
        assert_eq!(sim.poll_timeout(), Some(start + ms(20)));
        assert!(sim.poll_arrival(start + ms(19)).is_none());
        assert_eq!(sim.poll_arrival(start + ms(20)).unwrap().packet, "a");
        assert!(sim.poll_arrival(start + ms(39)).is_none());
        assert_eq!(sim.poll_arrival(start + ms(40)).unwrap().packet, "b");
        assert_eq!(sim.poll_timeout(), None);
        assert_eq!(sim.in_flight(), 0);
    }

    #[test]
    fn drift_changes_the_send_interval() {
        let start = Instant::now();
        let fast = NetSim::<u8>::new(
            NetSimConfig {
                drift_ppm: 100.0,
                ..NetSimConfig::clean()
            },
            0,
        )
        .unwrap();
        // 30 000 frames = 600 s nominal; 100 ppm fast is 60 ms early.
        let at = fast.send_time(start, 30_000) - start;
        let early = Duration::from_secs(600) - at;
        assert!(early > ms(59) && early < ms(61), "{early:?}");
    }

    #[test]
    fn spikes_delay_a_run_of_packets() {
        let start = Instant::now();
        let config = NetSimConfig {
            jitter: JitterModel::None,
            spike: Some(Spike {
                probability: 1.0,
                extra: ms(100),
                length: 5,
            }),
            ..NetSimConfig::clean()
        };
        let arrivals = NetSim::trace(config, 0, start, 5, |i| i);
        let extra: Vec<u128> = arrivals
            .iter()
            .map(|a| (a.at - a.sent_at - ms(20)).as_millis())
            .collect();
        // The queue drains one frame per packet: all five arrive together.
        assert_eq!(extra, vec![100, 80, 60, 40, 20]);
        assert!(arrivals.iter().all(|a| a.at == start + ms(120)));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = NetSimConfig {
            loss: 1.5,
            ..NetSimConfig::clean()
        };
        assert!(matches!(
            NetSim::<u8>::new(bad, 0),
            Err(NetSimError::Probability { field: "loss", .. })
        ));
        let nan = NetSimConfig {
            drift_ppm: f64::NAN,
            ..NetSimConfig::clean()
        };
        assert!(matches!(
            NetSim::<u8>::new(nan, 0),
            Err(NetSimError::Drift { .. })
        ));
        let zero = NetSimConfig {
            frame: Duration::ZERO,
            ..NetSimConfig::clean()
        };
        assert!(matches!(
            NetSim::<u8>::new(zero, 0),
            Err(NetSimError::ZeroFrame)
        ));
    }
}
