//! The delay estimator behind the adaptive target delay.
//!
//! For every packet it computes the relative transit `r = arrival - media
//! time` (RFC 3550's "relative transit time", in microseconds) and keeps
//! `r_min`, the transit of the fastest recent packet. A packet's jitter
//! sample is `r - r_min`: how much later than the fastest packet it came.
//! A packet is on time when the playout offset covers its sample, so the
//! target delay is a high quantile of the samples:
//!
//! - a histogram with exponential forgetting (a memory of about ten seconds
//!   of packets) gives the 97th percentile: it follows sustained jitter and
//!   shrinks slowly once jitter goes away;
//! - a peak detector takes any larger sample at once (the target grows on the
//!   very next frame after a spike) and decays with a half-life of 1.5 s, so
//!   the target comes back down within a few seconds after a spike.
//!
//! `r_min` may only rise slowly (a leak of 1 ms per second), which follows a
//! sender clock slower than ours or a longer route without mistaking one
//! fast packet for a change of path.

/// Width of one histogram bucket, in microseconds.
const BUCKET_US: i64 = 2_000;
/// Per-packet forgetting factor of the histogram (memory ~ 1/(1 - f) packets).
const FORGET: f64 = 0.998;
/// The quantile of jitter samples the target covers.
const QUANTILE: f64 = 0.97;
/// Half-life of the peak detector, in microseconds.
const PEAK_HALF_LIFE_US: f64 = 1_500_000.0;
/// How fast `r_min` may rise: microseconds per microsecond of arrival time.
const LEAK_PER_US: f64 = 0.001;
/// Rescale the histogram once the running weight passes this.
const RESCALE_AT: f64 = 1e200;

/// Jitter statistics over the packets of the current and earlier streams.
#[derive(Debug, Clone)]
pub(super) struct DelayEstimator {
    buckets: Vec<f64>,
    weight: f64,
    total: f64,
    reference: Option<Reference>,
    peak_us: f64,
    peak_at_us: i64,
}

/// The transit reference of the current stream.
#[derive(Debug, Clone, Copy)]
struct Reference {
    r_min: i64,
    last_arrival_us: i64,
}

impl DelayEstimator {
    /// An estimator whose histogram spans `0..=max_delay_us`.
    pub(super) fn new(max_delay_us: i64) -> Self {
        let len = usize::try_from(max_delay_us / BUCKET_US + 2).unwrap_or(2);
        Self {
            buckets: vec![0.0; len],
            weight: 1.0,
            total: 0.0,
            reference: None,
            peak_us: 0.0,
            peak_at_us: 0,
        }
    }

    /// Forgets the transit reference (a new stream has an unrelated
    /// timestamp origin); the jitter history of the path is kept.
    pub(super) fn reset_reference(&mut self) {
        self.reference = None;
    }

    /// The transit of the fastest recent packet, if any packet was seen.
    pub(super) fn r_min(&self) -> Option<i64> {
        self.reference.map(|reference| reference.r_min)
    }

    /// Relative transit of a packet, without recording it.
    pub(super) fn transit(arrival_us: i64, media_us: i64) -> i64 {
        arrival_us.saturating_sub(media_us)
    }

    /// Records one packet; returns its jitter sample in microseconds.
    pub(super) fn observe(&mut self, arrival_us: i64, media_us: i64) -> i64 {
        let r = Self::transit(arrival_us, media_us);
        let r_min = match self.reference {
            None => r,
            Some(reference) => {
                let elapsed = arrival_us.saturating_sub(reference.last_arrival_us).max(0);
                let leak = (elapsed as f64 * LEAK_PER_US) as i64;
                r.min(reference.r_min.saturating_add(leak))
            }
        };
        let last_arrival_us = match self.reference {
            Some(reference) => reference.last_arrival_us.max(arrival_us),
            None => arrival_us,
        };
        self.reference = Some(Reference {
            r_min,
            last_arrival_us,
        });
        let sample = r.saturating_sub(r_min).max(0);
        self.record(sample, arrival_us);
        sample
    }

    /// The delay (above `r_min`) that covers the jitter seen so far, at `now_us`.
    pub(super) fn required_delay_us(&self, now_us: i64) -> i64 {
        self.quantile_us().max(self.peak_at(now_us) as i64)
    }

    fn record(&mut self, sample: i64, arrival_us: i64) {
        let last = self.buckets.len() - 1;
        let index = usize::try_from(sample / BUCKET_US).map_or(last, |i| i.min(last));
        self.weight /= FORGET;
        self.buckets[index] += self.weight;
        self.total += self.weight;
        if self.weight > RESCALE_AT {
            let scale = self.weight;
            for bucket in &mut self.buckets {
                *bucket /= scale;
            }
            self.total /= scale;
            self.weight = 1.0;
        }
        let sample = sample as f64;
        if sample >= self.peak_at(arrival_us) {
            self.peak_us = sample;
            self.peak_at_us = arrival_us;
        }
    }

    fn quantile_us(&self) -> i64 {
        if self.total <= 0.0 {
            return 0;
        }
        let wanted = self.total * QUANTILE;
        let mut sum = 0.0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            sum += bucket;
            if sum >= wanted {
                return (index as i64 + 1) * BUCKET_US;
            }
        }
        self.buckets.len() as i64 * BUCKET_US
    }

    fn peak_at(&self, now_us: i64) -> f64 {
        let age = now_us.saturating_sub(self.peak_at_us).max(0) as f64;
        self.peak_us * (0.5f64).powf(age / PEAK_HALF_LIFE_US)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: i64 = 20_000;

    #[test]
    fn steady_stream_needs_no_delay() {
        let mut estimator = DelayEstimator::new(500_000);
        for k in 0..500 {
            let media = k * FRAME;
            assert_eq!(estimator.observe(media + 30_000, media), 0);
        }
        assert_eq!(estimator.r_min(), Some(30_000));
        assert!(estimator.required_delay_us(500 * FRAME) <= BUCKET_US);
    }

    #[test]
    fn spike_raises_at_once_and_decays_within_seconds() {
        let mut estimator = DelayEstimator::new(500_000);
        for k in 0..200 {
            estimator.observe(k * FRAME, k * FRAME);
        }
        let spike_at = 200 * FRAME + 120_000;
        // r_min leaked up by 1 ms/s meanwhile.
        let sample = estimator.observe(spike_at, 200 * FRAME);
        assert!((115_000..=120_000).contains(&sample), "{sample}");
        assert!(estimator.required_delay_us(spike_at) >= 115_000);
        for k in 201..600 {
            estimator.observe(k * FRAME, k * FRAME);
        }
        assert!(estimator.required_delay_us(600 * FRAME) <= 10_000);
    }

    #[test]
    fn sustained_jitter_is_covered_by_the_quantile() {
        let mut estimator = DelayEstimator::new(500_000);
        // Every fourth packet 30 ms late, the rest on time.
        for k in 0..2000 {
            let extra = if k % 4 == 0 { 30_000 } else { 0 };
            estimator.observe(k * FRAME + extra, k * FRAME);
        }
        // Long after the last peak, the histogram alone still covers 30 ms.
        assert!(estimator.required_delay_us(2000 * FRAME + 10_000_000) >= 30_000);
    }

    #[test]
    fn r_min_follows_a_slower_sender_clock() {
        let mut estimator = DelayEstimator::new(500_000);
        // Transit grows by 100 us per second (a 100 ppm slower sender).
        for k in 0..3000 {
            let arrival = k * FRAME + k * 2;
            estimator.observe(arrival, k * FRAME);
        }
        assert!(estimator.required_delay_us(3000 * FRAME) <= BUCKET_US);
    }
}
