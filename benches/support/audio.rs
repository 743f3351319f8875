//! Inputs shared by the audio benchmarks: a speech-like signal, the Opus
//! settings, and libopus configured the same way (the baseline).
#![allow(dead_code)]

use media::codec::{OpusConfig, SampleRate};

/// `frames` 20 ms frames of a speech-like signal at `rate`: voiced harmonics
/// under a syllable-rate envelope plus a little noise (not silence, so DTX
/// and codecs do real work).
pub fn speech_like(rate: SampleRate, frames: usize) -> Vec<Vec<i16>> {
    let hz = f64::from(rate.hz());
    let tau = 2.0 * std::f64::consts::PI;
    let mut noise_state: u32 = 0x1234_5678;
    let samples: Vec<i16> = (0..frames * rate.frame_samples())
        .map(|n| {
            let t = n as f64 / hz;
            let envelope = 0.55 + 0.45 * (tau * 3.0 * t).sin();
            let voiced: f64 = (1..=12)
                .map(|k| (tau * 140.0 * f64::from(k) * t).sin() / f64::from(k))
                .sum();
            noise_state = noise_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let noise = f64::from((noise_state >> 16) as i16) / 32768.0;
            (envelope * 7000.0 * voiced + 300.0 * noise) as i16
        })
        .collect();
    samples
        .chunks(rate.frame_samples())
        .map(<[i16]>::to_vec)
        .collect()
}

/// The Opus settings every bench uses: 48 kHz, 32 kbit/s, FEC for 5% loss, complexity 5.
pub fn opus_config() -> OpusConfig {
    opus_config_at(SampleRate::Hz48000)
}

/// [`opus_config`] with the codec running at `rate` (16 kHz: as phone calls run it).
pub fn opus_config_at(rate: SampleRate) -> OpusConfig {
    OpusConfig {
        sample_rate: rate,
        bitrate: 32_000,
        fec: true,
        dtx: false,
        complexity: 5,
        expected_loss_percent: 5,
    }
}

/// libopus through audiopus with the settings of [`opus_config`].
pub fn raw_libopus_encoder() -> audiopus::coder::Encoder {
    raw_libopus_encoder_at(SampleRate::Hz48000)
}

/// The libopus rate of `rate`.
pub fn audiopus_rate(rate: SampleRate) -> audiopus::SampleRate {
    match rate {
        SampleRate::Hz8000 => audiopus::SampleRate::Hz8000,
        SampleRate::Hz16000 => audiopus::SampleRate::Hz16000,
        SampleRate::Hz48000 => audiopus::SampleRate::Hz48000,
    }
}

/// libopus through audiopus with the settings of [`opus_config_at`] `rate`.
pub fn raw_libopus_encoder_at(rate: SampleRate) -> audiopus::coder::Encoder {
    let config = opus_config_at(rate);
    let mut encoder = audiopus::coder::Encoder::new(
        audiopus_rate(rate),
        audiopus::Channels::Mono,
        audiopus::Application::Voip,
    )
    .expect("raw encoder");
    encoder
        .set_complexity(config.complexity)
        .expect("complexity");
    encoder.set_inband_fec(config.fec).expect("fec");
    encoder.set_dtx(config.dtx).expect("dtx");
    encoder
        .set_bitrate(audiopus::Bitrate::BitsPerSecond(config.bitrate as i32))
        .expect("bitrate");
    encoder
        .set_packet_loss_perc(config.expected_loss_percent)
        .expect("loss");
    encoder
}
