//! Guards the resampler's quality: a sine resampled between every pair of
//! 8, 16 and 48 kHz keeps its frequency, amplitude and phase (after the
//! reported delay), with a signal-to-noise floor, across many frames.

use media::codec::SampleRate;
use media::resample::Resampler;

const RATES: [SampleRate; 3] = [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz48000];
const FRAMES: usize = 50;
const WARMUP_FRAMES: usize = 3;

fn sine(rate: SampleRate, freq: f64, amplitude: f64, frames: usize) -> Vec<i16> {
    let hz = f64::from(rate.hz());
    (0..frames * rate.frame_samples())
        .map(|n| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / hz).sin()).round() as i16
        })
        .collect()
}

/// SNR in dB of `output` against the input sine delayed by the resampler's
/// reported delay, skipping the warm-up frames.
fn snr_against_delayed_sine(
    resampler: &Resampler,
    output: &[i16],
    freq: f64,
    amplitude: f64,
) -> f64 {
    let to = resampler.to_rate();
    let hz = f64::from(to.hz());
    let delay = resampler.delay_samples() as f64;
    let mut signal = 0.0;
    let mut noise = 0.0;
    for (n, &sample) in output
        .iter()
        .enumerate()
        .skip(WARMUP_FRAMES * to.frame_samples())
    {
        let expected =
            amplitude * (2.0 * std::f64::consts::PI * freq * (n as f64 - delay) / hz).sin();
        signal += expected * expected;
        noise += (f64::from(sample) - expected).powi(2);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

fn run(from: SampleRate, to: SampleRate, freq: f64, amplitude: f64) -> f64 {
    let mut resampler = Resampler::new(from, to).expect("supported rates");
    let input = sine(from, freq, amplitude, FRAMES);
    let mut output = vec![0i16; FRAMES * to.frame_samples()];
    for (chunk, out) in input
        .chunks(from.frame_samples())
        .zip(output.chunks_mut(to.frame_samples()))
    {
        assert_eq!(
            resampler.process(chunk, out).expect("one frame"),
            to.frame_samples()
        );
    }
    snr_against_delayed_sine(&resampler, &output, freq, amplitude)
}

#[test]
fn sine_survives_every_rate_pair() {
    for from in RATES {
        for to in RATES {
            for freq in [300.0, 1000.0, 3000.0] {
                let snr = run(from, to, freq, 12000.0);
                eprintln!(
                    "{} -> {} Hz, {freq} Hz: SNR {snr:.1} dB",
                    from.hz(),
                    to.hz()
                );
                assert!(
                    snr > 60.0,
                    "{} -> {} Hz, {freq} Hz: SNR {snr:.1} dB",
                    from.hz(),
                    to.hz()
                );
            }
        }
    }
}

#[test]
fn quiet_signals_keep_their_level() {
    for (from, to) in [
        (SampleRate::Hz8000, SampleRate::Hz48000),
        (SampleRate::Hz48000, SampleRate::Hz16000),
    ] {
        let snr = run(from, to, 440.0, 300.0);
        assert!(
            snr > 25.0,
            "{} -> {} Hz quiet: SNR {snr:.1} dB",
            from.hz(),
            to.hz()
        );
    }
}

#[test]
fn content_above_the_output_band_is_removed() {
    // 6 kHz at 48 kHz cannot exist at 8 kHz: it must not alias into the band.
    let mut resampler =
        Resampler::new(SampleRate::Hz48000, SampleRate::Hz8000).expect("supported rates");
    let input = sine(SampleRate::Hz48000, 6000.0, 12000.0, FRAMES);
    let mut out = [0i16; 160];
    let mut peak = 0i16;
    for (i, chunk) in input.chunks(960).enumerate() {
        resampler.process(chunk, &mut out).expect("one frame");
        if i >= WARMUP_FRAMES {
            peak = peak.max(out.iter().map(|s| s.saturating_abs()).max().unwrap_or(0));
        }
    }
    assert!(peak < 400, "aliased peak {peak}");
}
