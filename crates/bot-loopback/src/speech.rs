//! The bot's voice: real synthesized speech shipped with the crate.
//!
//! The clips in `assets/` (eSpeak NG phrases and words at 16 kHz, see
//! `assets/README.md`) are embedded at build time, decoded once per sample
//! rate on first use, and never touched per frame. `say <text>` becomes:
//! the phrase clip with the same words when there is one; else the word
//! clips one after another when every word (digits spelled out) has one;
//! else shipped phrases back to back, picked from the text, up to about
//! the time the text takes to say. `say <file.wav>` plays the file,
//! resampled with [`media::resample`] when needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use media::codec::SampleRate;
use media::resample::Resampler;

use crate::script::Speech;

/// Pause between words built from word clips.
const WORD_GAP_MS: u32 = 60;
/// Pause between phrases of a generic sentence.
const PHRASE_GAP_MS: u32 = 250;
/// Speaking time assumed per word when picking a generic sentence.
const MS_PER_WORD: u32 = 330;
/// The rate of the shipped clips.
const CLIP_RATE: SampleRate = SampleRate::Hz16000;

/// Errors of the speech module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeechError {
    /// A WAV file could not be read.
    #[error("audio file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The requested rate cannot be produced.
    #[error("cannot resample {from} Hz to {to} Hz: {reason}")]
    Resample {
        /// Source rate.
        from: u32,
        /// Target rate.
        to: u32,
        /// Why.
        reason: String,
    },
}

/// Whether a clip is a whole phrase or one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipKind {
    /// A sentence.
    Phrase,
    /// A single word.
    Word,
}

/// A clip as embedded.
struct ClipSource {
    kind: ClipKind,
    text: &'static str,
    wav: &'static [u8],
}

static SOURCES: &[ClipSource] = include!(concat!(env!("OUT_DIR"), "/clips.rs"));

/// One shipped clip, decoded.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Phrase or word.
    pub kind: ClipKind,
    /// What it says.
    pub text: &'static str,
    /// The words of `text`, normalized (lower case, letters and digits).
    pub key: String,
    /// PCM at the library's rate.
    pub samples: Vec<i16>,
}

/// Every shipped clip at one sample rate.
#[derive(Debug)]
pub struct Library {
    rate: SampleRate,
    clips: Vec<Clip>,
}

impl Library {
    /// The clips at `rate`, decoded on first use and kept.
    pub fn at(rate: SampleRate) -> Result<&'static Library, SpeechError> {
        static AT_8K: OnceLock<Result<Library, String>> = OnceLock::new();
        static AT_16K: OnceLock<Result<Library, String>> = OnceLock::new();
        static AT_48K: OnceLock<Result<Library, String>> = OnceLock::new();
        let cell = match rate {
            SampleRate::Hz8000 => &AT_8K,
            SampleRate::Hz16000 => &AT_16K,
            SampleRate::Hz48000 => &AT_48K,
        };
        cell.get_or_init(|| Library::decode(rate).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| SpeechError::Resample {
                from: CLIP_RATE.hz(),
                to: rate.hz(),
                reason: reason.clone(),
            })
    }

    fn decode(rate: SampleRate) -> Result<Library, SpeechError> {
        let clips = SOURCES
            .iter()
            .map(|source| {
                let (samples, from) = read_wav(std::io::Cursor::new(source.wav), source.text)?;
                Ok(Clip {
                    kind: source.kind,
                    text: source.text,
                    key: normalize(source.text),
                    samples: resample(&samples, from, rate)?,
                })
            })
            .collect::<Result<Vec<_>, SpeechError>>()?;
        Ok(Library { rate, clips })
    }

    /// Every clip.
    pub fn clips(&self) -> &[Clip] {
        &self.clips
    }

    /// The phrase clips.
    pub fn phrases(&self) -> impl Iterator<Item = &Clip> {
        self.clips.iter().filter(|c| c.kind == ClipKind::Phrase)
    }

    /// `text` spoken with the clips (see the module docs).
    pub fn say(&self, text: &str) -> Vec<i16> {
        let key = normalize(text);
        if let Some(phrase) = self.phrases().find(|clip| clip.key == key) {
            return phrase.samples.clone();
        }
        let words: Vec<String> = key.split(' ').flat_map(spell_digits).collect();
        let clips: Option<Vec<&Clip>> = words
            .iter()
            .filter(|w| !w.is_empty())
            .map(|word| {
                self.clips
                    .iter()
                    .find(|clip| clip.kind == ClipKind::Word && clip.key == *word)
            })
            .collect();
        match clips {
            Some(clips) if !clips.is_empty() => self.join(&clips, WORD_GAP_MS),
            _ => self.generic(&key, words.len()),
        }
    }

    /// Shipped phrases, starting at one picked from the text, until about
    /// `words` words of speaking time are filled (at least one phrase).
    fn generic(&self, key: &str, words: usize) -> Vec<i16> {
        let phrases: Vec<&Clip> = self.phrases().collect();
        if phrases.is_empty() {
            return Vec::new();
        }
        let target =
            words.max(1) as u64 * u64::from(MS_PER_WORD) * u64::from(self.rate.hz()) / 1000;
        let start = key.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let mut picked = Vec::new();
        let mut length = 0u64;
        for clip in phrases.iter().cycle().skip(start % phrases.len()) {
            picked.push(*clip);
            length += clip.samples.len() as u64;
            if length >= target || picked.len() >= phrases.len() {
                break;
            }
        }
        self.join(&picked, PHRASE_GAP_MS)
    }

    fn join(&self, clips: &[&Clip], gap_ms: u32) -> Vec<i16> {
        let gap = (self.rate.hz() * gap_ms / 1000) as usize;
        let mut out = Vec::new();
        for (i, clip) in clips.iter().enumerate() {
            if i > 0 {
                out.resize(out.len() + gap, 0);
            }
            out.extend_from_slice(&clip.samples);
        }
        out
    }
}

/// The audio of one `say`/`barge_in` at `rate`.
pub fn render(speech: &Speech, rate: SampleRate) -> Result<Vec<i16>, SpeechError> {
    match speech {
        Speech::Text(text) => Ok(Library::at(rate)?.say(text)),
        Speech::File(path) => load_wav(path, rate),
    }
}

/// A WAV file (16-bit PCM, mono or stereo, 8/16/48 kHz) at `rate`.
pub fn load_wav(path: &Path, rate: SampleRate) -> Result<Vec<i16>, SpeechError> {
    let file = std::fs::File::open(path).map_err(|e| SpeechError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let (samples, from) = read_wav(std::io::BufReader::new(file), &path.display().to_string())?;
    resample(&samples, from, rate)
}

/// Checks, without decoding it, that a WAV file can be played (a run
/// checks its script's files before it places or answers the call).
pub fn check_wav(path: &Path) -> Result<(), SpeechError> {
    let error = |reason: String| SpeechError::File {
        path: path.to_owned(),
        reason,
    };
    let reader = hound::WavReader::open(path).map_err(|e| error(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(error("only 16-bit PCM WAV files are supported".into()));
    }
    if SampleRate::from_hz(spec.sample_rate).is_none() {
        return Err(error(format!(
            "sample rate {} Hz is not 8000, 16000 or 48000",
            spec.sample_rate
        )));
    }
    Ok(())
}

fn read_wav<R: std::io::Read>(
    reader: R,
    name: &str,
) -> Result<(Vec<i16>, SampleRate), SpeechError> {
    let error = |reason: String| SpeechError::File {
        path: PathBuf::from(name),
        reason,
    };
    let mut reader = hound::WavReader::new(reader).map_err(|e| error(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(error("only 16-bit PCM WAV files are supported".into()));
    }
    let rate = SampleRate::from_hz(spec.sample_rate).ok_or_else(|| {
        error(format!(
            "sample rate {} Hz is not 8000, 16000 or 48000",
            spec.sample_rate
        ))
    })?;
    let channels = usize::from(spec.channels.max(1));
    let interleaved = reader
        .samples::<i16>()
        .collect::<Result<Vec<i16>, _>>()
        .map_err(|e| error(e.to_string()))?;
    let mono = interleaved
        .chunks(channels)
        .map(|frame| (frame.iter().map(|&s| i32::from(s)).sum::<i32>() / frame.len() as i32) as i16)
        .collect();
    Ok((mono, rate))
}

/// Resamples whole 20 ms frames (the tail zero-padded), compensating the
/// resampler's delay so the output lines up with the input.
fn resample(samples: &[i16], from: SampleRate, to: SampleRate) -> Result<Vec<i16>, SpeechError> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let failed = |reason: String| SpeechError::Resample {
        from: from.hz(),
        to: to.hz(),
        reason,
    };
    let mut resampler = Resampler::new(from, to).map_err(|e| failed(e.to_string()))?;
    let in_frame = resampler.input_frame_samples();
    let out_frame = resampler.output_frame_samples();
    let delay = resampler.delay_samples();
    let wanted = (samples.len() as u64 * u64::from(to.hz()) / u64::from(from.hz())) as usize;
    let frames = samples.len().div_ceil(in_frame) + 1;
    let mut out = Vec::with_capacity(frames * out_frame);
    let mut input = vec![0i16; in_frame];
    let mut output = vec![0i16; out_frame];
    for index in 0..frames {
        input.fill(0);
        let start = index * in_frame;
        if start < samples.len() {
            let end = (start + in_frame).min(samples.len());
            input[..end - start].copy_from_slice(&samples[start..end]);
        }
        let written = resampler
            .process(&input, &mut output)
            .map_err(|e| failed(e.to_string()))?;
        out.extend_from_slice(&output[..written]);
    }
    let end = (delay + wanted).min(out.len());
    Ok(out[delay.min(end)..end].to_vec())
}

/// Lower case, letters and digits only, single spaces.
fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .filter(|&c| c != '\'')
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word, or the digit names of a number.
fn spell_digits(word: &str) -> Vec<String> {
    const NAMES: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
        word.bytes()
            .map(|b| NAMES[usize::from(b - b'0')].to_owned())
            .collect()
    } else {
        vec![word.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    #[test]
    fn every_shipped_clip_is_speech_not_silence() {
        let library = Library::at(SampleRate::Hz8000).expect("clips decode");
        assert!(library.phrases().count() >= 10);
        assert!(library.clips().len() > 50);
        for clip in library.clips() {
            assert!(clip.samples.len() > 800, "{} is at least 100 ms", clip.text);
            assert!(rms(&clip.samples) > 1000.0, "{} is loud enough", clip.text);
        }
    }

    #[test]
    fn a_known_phrase_is_its_clip_at_either_rate() {
        let text = "Thank you, goodbye.";
        let narrow = Library::at(SampleRate::Hz8000).expect("8 kHz").say(text);
        let wide = Library::at(SampleRate::Hz16000).expect("16 kHz").say(text);
        assert!(!narrow.is_empty());
        let ratio = wide.len() as f64 / narrow.len() as f64;
        assert!(
            (1.95..2.05).contains(&ratio),
            "16 kHz is twice 8 kHz: {ratio}"
        );
        // Case and punctuation do not matter.
        assert_eq!(
            Library::at(SampleRate::Hz8000)
                .expect("8 kHz")
                .say("thank you goodbye"),
            narrow
        );
    }

    #[test]
    fn known_words_are_joined_and_numbers_spelled() {
        let library = Library::at(SampleRate::Hz8000).expect("8 kHz");
        let word = |w: &str| {
            library
                .clips()
                .iter()
                .find(|c| c.kind == ClipKind::Word && c.key == w)
                .expect("shipped")
                .samples
                .len()
        };
        let said = library.say("My order 42");
        let gap = 8000 * WORD_GAP_MS as usize / 1000;
        assert_eq!(
            said.len(),
            word("my") + word("order") + word("four") + word("two") + 3 * gap
        );
    }

    #[test]
    fn unknown_text_gets_a_generic_sentence_of_similar_length() {
        let library = Library::at(SampleRate::Hz8000).expect("8 kHz");
        let short = library.say("Xylophones quarrel");
        let long = library.say(
            "Xylophones quarrel zealously about quantum marmalade while \
             penguins juggle obsidian trombones near the fjord at dusk",
        );
        assert!(!short.is_empty());
        assert!(long.len() > short.len());
        let seconds = long.len() as f64 / 8000.0;
        assert!(seconds > 3.0, "about 18 words take seconds: {seconds}");
    }

    #[test]
    fn wav_files_load_and_resample() {
        let dir = std::env::temp_dir().join(format!("bot-speech-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tone.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).expect("create");
        for n in 0..48_000 {
            let s = ((n as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin() * 8000.0) as i16;
            writer.write_sample(s).expect("left");
            writer.write_sample(s).expect("right");
        }
        writer.finalize().expect("finalize");
        let samples = load_wav(&path, SampleRate::Hz8000).expect("loads");
        assert_eq!(samples.len(), 8000, "one second at 8 kHz");
        assert!(rms(&samples[800..7200]) > 4000.0);
        assert!(check_wav(&path).is_ok());
        let missing = load_wav(&dir.join("missing.wav"), SampleRate::Hz8000);
        assert!(matches!(missing, Err(SpeechError::File { .. })));
        assert!(check_wav(&dir.join("missing.wav")).is_err());
        let odd_rate = dir.join("odd.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 22_050,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        hound::WavWriter::create(&odd_rate, spec)
            .expect("create")
            .finalize()
            .expect("finalize");
        let error = check_wav(&odd_rate).expect_err("22.05 kHz is refused");
        assert!(error.to_string().contains("22050"), "{error}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
