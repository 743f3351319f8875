//! Audio the offline runtimes play: sine tones, the tone pattern that
//! stands for a sentence, silence, and WAV files converted to the call's rate.

use std::f64::consts::TAU;
use std::path::Path;

use media::codec::SampleRate;
use media::resample::Resampler;

use super::RuntimeError;

/// Peak amplitude of generated tones (about -10 dBFS).
pub const TONE_AMPLITUDE: f64 = 10_000.0;
/// Length of one word's tone in a spoken-text pattern.
pub const WORD_MS: u32 = 120;
/// Pause after each word's tone.
pub const WORD_GAP_MS: u32 = 60;
/// Words of a text turned into tones at most (longer texts are cut).
pub const MAX_WORDS: usize = 50;

/// A sine tone of `frequency_hz` lasting `duration_ms` at `rate` Hz, with
/// 5 ms fades at both ends so it starts and stops without clicks.
pub fn tone(frequency_hz: u32, duration_ms: u32, rate: u32) -> Vec<i16> {
    let count = samples_for(duration_ms, rate);
    let fade = samples_for(5, rate).max(1).min(count / 2 + 1);
    (0..count)
        .map(|n| {
            let phase = TAU * f64::from(frequency_hz) * n as f64 / f64::from(rate);
            let edge = n.min(count - 1 - n);
            let gain = if edge < fade {
                edge as f64 / fade as f64
            } else {
                1.0
            };
            (phase.sin() * TONE_AMPLITUDE * gain).round() as i16
        })
        .collect()
}

/// `duration_ms` of silence at `rate` Hz.
pub fn silence(duration_ms: u32, rate: u32) -> Vec<i16> {
    vec![0; samples_for(duration_ms, rate)]
}

/// The tone pattern that stands for `text` when no audio file is given:
/// one short tone per word (its pitch, 400-1100 Hz, derived from the
/// word), each followed by a pause. Deterministic: the same text always
/// sounds the same, and its length follows the number of words.
pub fn text_pattern(text: &str, rate: u32) -> Vec<i16> {
    let mut pcm = Vec::new();
    for word in text.split_whitespace().take(MAX_WORDS) {
        let pitch = word.bytes().fold(0u32, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(u32::from(b))
        });
        pcm.extend(tone(400 + (pitch % 8) * 100, WORD_MS, rate));
        pcm.extend(silence(WORD_GAP_MS, rate));
    }
    pcm
}

/// Reads a WAV file (16-bit PCM, mono or stereo, 8, 16 or 48 kHz) and
/// converts it to mono at `rate` Hz (8000 or 16000). Blocking file I/O:
/// call it from `spawn_blocking`.
pub fn load_wav(path: &Path, rate: u32) -> Result<Vec<i16>, RuntimeError> {
    let error = |reason: String| RuntimeError::AudioFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| error(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(error(format!(
            "{}-bit {:?} samples; 16-bit PCM expected",
            spec.bits_per_sample, spec.sample_format
        )));
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| error(e.to_string()))?;
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|frame| {
            let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
            (sum / frame.len() as i32) as i16
        })
        .collect();
    let from = SampleRate::from_hz(spec.sample_rate).ok_or_else(|| {
        error(format!(
            "{} Hz; 8000, 16000 or 48000 expected",
            spec.sample_rate
        ))
    })?;
    let to = SampleRate::from_hz(rate).ok_or_else(|| error(format!("call rate {rate} Hz")))?;
    resample(&mono, from, to).map_err(error)
}

/// Converts `pcm` from one rate to another in 20 ms frames (the last one
/// padded with silence).
pub fn resample(pcm: &[i16], from: SampleRate, to: SampleRate) -> Result<Vec<i16>, String> {
    if from == to {
        return Ok(pcm.to_vec());
    }
    let mut resampler = Resampler::new(from, to).map_err(|e| e.to_string())?;
    let input_frame = resampler.input_frame_samples();
    let mut frame = vec![0; input_frame];
    let mut output = vec![0; resampler.output_frame_samples()];
    let mut out = Vec::with_capacity(pcm.len() * to.hz() as usize / from.hz() as usize + 1);
    for chunk in pcm.chunks(input_frame) {
        frame[..chunk.len()].copy_from_slice(chunk);
        frame[chunk.len()..].fill(0);
        let written = resampler
            .process(&frame, &mut output)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&output[..written]);
    }
    Ok(out)
}

fn samples_for(duration_ms: u32, rate: u32) -> usize {
    (u64::from(duration_ms) * u64::from(rate) / 1000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero crossings per second: twice the frequency of a pure tone.
    fn frequency(pcm: &[i16], rate: u32) -> f64 {
        let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f64 * f64::from(rate) / pcm.len() as f64 / 2.0
    }

    #[test]
    fn tone_has_length_pitch_and_fades() {
        let pcm = tone(1000, 200, 8000);
        assert_eq!(pcm.len(), 1600);
        assert!((frequency(&pcm, 8000) - 1000.0).abs() < 20.0);
        assert_eq!(pcm[0], 0);
        assert!(pcm[1].unsigned_abs() < 3000, "fade in");
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!((9_000..=10_000).contains(&peak), "peak {peak}");
        assert_eq!(tone(440, 20, 16000).len(), 320);
    }

    #[test]
    fn text_pattern_is_deterministic_and_follows_word_count() {
        let one = text_pattern("hello", 8000);
        let three = text_pattern("hello dear caller", 8000);
        assert_eq!(one.len(), (WORD_MS + WORD_GAP_MS) as usize * 8);
        assert_eq!(three.len(), 3 * one.len());
        assert_eq!(three, text_pattern("hello  dear\ncaller", 8000));
        assert!(text_pattern("", 8000).is_empty());
    }

    #[test]
    fn wav_is_loaded_as_mono_at_the_call_rate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stereo16k.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).expect("create");
        for sample in tone(500, 400, 16000) {
            writer.write_sample(sample).expect("left");
            writer.write_sample(sample).expect("right");
        }
        writer.finalize().expect("finalize");
        let same = load_wav(&path, 16000).expect("load at 16 kHz");
        assert_eq!(same.len(), 6400);
        let down = load_wav(&path, 8000).expect("load at 8 kHz");
        assert_eq!(down.len(), 3200);
        assert!((frequency(&down[400..2800], 8000) - 500.0).abs() < 20.0);
        assert!(matches!(
            load_wav(&dir.path().join("missing.wav"), 8000),
            Err(RuntimeError::AudioFile { .. })
        ));
    }
}
