//! Sample-rate conversion between 8, 16 and 48 kHz, mono, in 20 ms frames.
//!
//! [`Resampler`] wraps rubato's synchronous FFT resampler
//! ([`rubato::FftFixedInOut`]) with a chunk of exactly one 20 ms frame, so
//! every input frame yields one output frame. Filter state carries across
//! frames, and every buffer is allocated once in [`Resampler::new`]: the
//! per-frame path does not allocate.
//!
//! Delay: the FFT resampler's overlap-add delays the signal by half an output
//! frame, i.e. **10 ms** for every pair of rates ([`Resampler::delay`]); a
//! same-rate resampler is a copy with no delay.

use std::time::Duration;

use rubato::{FftFixedInOut, Resampler as _};

use crate::codec::SampleRate;

/// Errors of the resample module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// The input is not exactly one 20 ms frame at the input rate.
    #[error("expected an input frame of {expected} samples, got {actual}")]
    FrameLength {
        /// Samples in one input frame.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// The output buffer cannot hold one output frame.
    #[error("output buffer holds {available} samples, {needed} needed")]
    OutputTooSmall {
        /// Samples in one output frame.
        needed: usize,
        /// Length of the buffer given.
        available: usize,
    },
    /// rubato refused the rate pair.
    #[error("cannot build a resampler from {from} Hz to {to} Hz: {source}")]
    Construction {
        /// Input rate in Hz.
        from: u32,
        /// Output rate in Hz.
        to: u32,
        /// rubato's reason.
        #[source]
        source: rubato::ResamplerConstructionError,
    },
    /// rubato failed on a frame (buffer sizes disagree with its chunk size).
    #[error("resampling failed: {0}")]
    Process(#[source] rubato::ResampleError),
}

/// A stateful mono resampler for a stream of 20 ms frames.
pub struct Resampler {
    from: SampleRate,
    to: SampleRate,
    /// `None` when both rates are equal.
    fft: Option<FftFixedInOut<f32>>,
    input: [Vec<f32>; 1],
    output: [Vec<f32>; 1],
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `from` to `to`, buffers allocated up front.
    pub fn new(from: SampleRate, to: SampleRate) -> Result<Self, ResampleError> {
        let fft = if from == to {
            None
        } else {
            let fft = FftFixedInOut::<f32>::new(
                from.hz() as usize,
                to.hz() as usize,
                from.frame_samples(),
                1,
            )
            .map_err(|source| ResampleError::Construction {
                from: from.hz(),
                to: to.hz(),
                source,
            })?;
            // The 8/16/48 kHz rates all divide 20 ms evenly, so rubato takes
            // the requested chunk as is.
            debug_assert_eq!(fft.input_frames_next(), from.frame_samples());
            debug_assert_eq!(fft.output_frames_next(), to.frame_samples());
            Some(fft)
        };
        Ok(Self {
            from,
            to,
            fft,
            input: [vec![0.0; from.frame_samples()]],
            output: [vec![0.0; to.frame_samples()]],
        })
    }

    /// The input rate.
    pub fn from_rate(&self) -> SampleRate {
        self.from
    }

    /// The output rate.
    pub fn to_rate(&self) -> SampleRate {
        self.to
    }

    /// Samples in one input frame.
    pub fn input_frame_samples(&self) -> usize {
        self.from.frame_samples()
    }

    /// Samples in one output frame.
    pub fn output_frame_samples(&self) -> usize {
        self.to.frame_samples()
    }

    /// Delay the resampler adds, in output samples.
    pub fn delay_samples(&self) -> usize {
        self.fft.as_ref().map_or(0, |fft| fft.output_delay())
    }

    /// Delay the resampler adds.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_samples() as u64 * 1_000_000 / u64::from(self.to.hz()))
    }

    /// Converts one 20 ms input frame into one 20 ms output frame written to
    /// the start of `output`; returns the number of samples written.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<usize, ResampleError> {
        let expected = self.input_frame_samples();
        if input.len() != expected {
            return Err(ResampleError::FrameLength {
                expected,
                actual: input.len(),
            });
        }
        let needed = self.output_frame_samples();
        if output.len() < needed {
            return Err(ResampleError::OutputTooSmall {
                needed,
                available: output.len(),
            });
        }
        let output = &mut output[..needed];
        let Some(fft) = self.fft.as_mut() else {
            output.copy_from_slice(input);
            return Ok(needed);
        };
        for (dst, &src) in self.input[0].iter_mut().zip(input) {
            *dst = f32::from(src) / 32768.0;
        }
        fft.process_into_buffer(&self.input, &mut self.output, None)
            .map_err(ResampleError::Process)?;
        for (dst, &src) in output.iter_mut().zip(&self.output[0]) {
            *dst = (src * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(needed)
    }

    /// Clears the filter state, e.g. before reusing the resampler for a new
    /// stream.
    pub fn reset(&mut self) {
        if let Some(fft) = self.fft.as_mut() {
            fft.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_reports_ten_ms_of_delay() {
        let rates = [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz48000];
        for from in rates {
            for to in rates {
                let resampler = Resampler::new(from, to).unwrap();
                let expected = if from == to { 0 } else { 10 };
                assert_eq!(resampler.delay(), Duration::from_millis(expected));
            }
        }
    }

    #[test]
    fn same_rate_is_a_copy() {
        let mut resampler = Resampler::new(SampleRate::Hz16000, SampleRate::Hz16000).unwrap();
        let input: Vec<i16> = (0..320).map(|i| i as i16 * 7).collect();
        let mut output = [0i16; 320];
        assert_eq!(resampler.process(&input, &mut output).unwrap(), 320);
        assert_eq!(&output[..], &input[..]);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let mut resampler = Resampler::new(SampleRate::Hz8000, SampleRate::Hz48000).unwrap();
        let mut output = [0i16; 960];
        assert!(matches!(
            resampler.process(&[0; 159], &mut output),
            Err(ResampleError::FrameLength {
                expected: 160,
                actual: 159
            })
        ));
        assert!(matches!(
            resampler.process(&[0; 160], &mut output[..100]),
            Err(ResampleError::OutputTooSmall { needed: 960, .. })
        ));
    }

    #[test]
    fn full_scale_input_does_not_wrap() {
        let mut resampler = Resampler::new(SampleRate::Hz48000, SampleRate::Hz8000).unwrap();
        let square: Vec<i16> = (0..960)
            .map(|i| {
                if (i / 24) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let mut output = [0i16; 160];
        for _ in 0..5 {
            resampler.process(&square, &mut output).unwrap();
        }
        // Gibbs overshoot is clamped, never wrapped to the other sign.
        assert!(output.iter().any(|&s| s > 20000));
        assert!(output.iter().any(|&s| s < -20000));
    }
}
