//! What the generator says on every call: speech encoded once per run, so
//! that a call costs its packets and nothing else.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use bot_loopback::speech::{load_wav, Library, SpeechError};
use media::codec::{CodecError, CodecSpec, OpusConfig, SampleRate};
use rustc_hash::FxHashMap;
use sip_stack::sdp::{Codec, PayloadType};

/// Silence between the shipped phrases when they are played back to back.
const PHRASE_GAP_MS: usize = 400;
/// Largest payload of one 20 ms frame (Opus at the highest bitrate fits).
pub const MAX_PAYLOAD: usize = 1500;

/// The codec a run offers (and answers with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadCodec {
    /// G.711 mu-law.
    #[default]
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus (16 kHz speech, 32 kbit/s, RTP clock 48 kHz).
    Opus,
}

impl LoadCodec {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadCodec::Pcmu => "pcmu",
            LoadCodec::Pcma => "pcma",
            LoadCodec::Opus => "opus",
        }
    }

    /// The media engine's codec.
    pub fn spec(self) -> CodecSpec {
        match self {
            LoadCodec::Pcmu => CodecSpec::Pcmu,
            LoadCodec::Pcma => CodecSpec::Pcma,
            LoadCodec::Opus => CodecSpec::Opus(OpusConfig {
                sample_rate: SampleRate::Hz16000,
                ..OpusConfig::default()
            }),
        }
    }

    /// The SDP codec offered.
    pub fn sdp_codec(self) -> Codec {
        match self {
            LoadCodec::Pcmu => Codec::pcmu(),
            LoadCodec::Pcma => Codec::pcma(),
            LoadCodec::Opus => {
                Codec::opus(PayloadType::new(111).expect("111 is a dynamic payload type"))
            }
        }
    }

    /// The rate of the PCM the encoder takes.
    fn pcm_rate(self) -> SampleRate {
        match self {
            LoadCodec::Pcmu | LoadCodec::Pcma => SampleRate::Hz8000,
            LoadCodec::Opus => SampleRate::Hz16000,
        }
    }

    /// Whether the far end can echo our payloads byte for byte (G.711 decodes
    /// and re-encodes to the same bytes; Opus does not).
    fn echoes_exactly(self) -> bool {
        matches!(self, LoadCodec::Pcmu | LoadCodec::Pcma)
    }
}

impl fmt::Display for LoadCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A codec name that is not `pcmu`, `pcma` or `opus`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?} (expected pcmu, pcma or opus)")]
pub struct UnknownCodec(pub String);

impl FromStr for LoadCodec {
    type Err = UnknownCodec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pcmu" => Ok(LoadCodec::Pcmu),
            "pcma" => Ok(LoadCodec::Pcma),
            "opus" => Ok(LoadCodec::Opus),
            _ => Err(UnknownCodec(s.to_owned())),
        }
    }
}

/// Why the run's audio could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The WAV file (or the shipped clips) could not be read.
    #[error(transparent)]
    Speech(#[from] SpeechError),
    /// The encoder failed.
    #[error("cannot encode the audio: {0}")]
    Codec(#[from] CodecError),
    /// The audio has not one whole 20 ms frame.
    #[error("the audio is shorter than one 20 ms frame")]
    Empty,
}

/// The run's speech as RTP payloads, one per 20 ms frame, played in a loop.
#[derive(Debug)]
pub struct EncodedAudio {
    codec: LoadCodec,
    payloads: Vec<Vec<u8>>,
    /// Payload bytes to frame index, for the payloads that occur once.
    unique: FxHashMap<u64, u32>,
}

impl EncodedAudio {
    /// `wav` (16-bit PCM; resampled as needed), or the shipped speech clips
    /// back to back when `None`, encoded with `codec`.
    pub fn prepare(codec: LoadCodec, wav: Option<&Path>) -> Result<EncodedAudio, AudioError> {
        let rate = codec.pcm_rate();
        let pcm = match wav {
            Some(path) => load_wav(path, rate)?,
            None => shipped_speech(rate)?,
        };
        EncodedAudio::encode(codec, &pcm)
    }

    /// `pcm` at the codec's input rate, encoded (a last partial frame is dropped).
    pub fn encode(codec: LoadCodec, pcm: &[i16]) -> Result<EncodedAudio, AudioError> {
        let mut encoder = codec.spec().make_encoder()?;
        let frame = encoder.frame_samples();
        let mut payloads = Vec::with_capacity(pcm.len() / frame);
        let mut out = vec![0u8; MAX_PAYLOAD];
        for chunk in pcm.chunks_exact(frame) {
            let len = encoder.encode(chunk, &mut out)?;
            payloads.push(out[..len].to_vec());
        }
        if payloads.is_empty() {
            return Err(AudioError::Empty);
        }
        let unique = if codec.echoes_exactly() {
            unique_payloads(&payloads)
        } else {
            FxHashMap::default()
        };
        Ok(EncodedAudio {
            codec,
            payloads,
            unique,
        })
    }

    /// The codec.
    pub fn codec(&self) -> LoadCodec {
        self.codec
    }

    /// Frames in one loop of the audio.
    pub fn frames(&self) -> u64 {
        self.payloads.len() as u64
    }

    /// The payload of the `n`-th frame sent (the audio loops).
    pub fn payload(&self, n: u64) -> &[u8] {
        &self.payloads[(n % self.frames()) as usize]
    }

    /// RTP timestamp units per 20 ms frame.
    pub fn timestamp_step(&self) -> u32 {
        self.codec.spec().sdp_format().clock_rate / 50
    }

    /// The frame (index within one loop) whose payload is exactly `payload`,
    /// when that payload occurs once in the audio: how echoed audio is
    /// recognised.
    pub fn frame_of(&self, payload: &[u8]) -> Option<u32> {
        if self.unique.is_empty() {
            return None;
        }
        let index = *self.unique.get(&fingerprint(payload))?;
        (self.payloads[index as usize] == payload).then_some(index)
    }
}

/// Every shipped phrase once, with a pause after each.
fn shipped_speech(rate: SampleRate) -> Result<Vec<i16>, SpeechError> {
    let library = Library::at(rate)?;
    let gap = vec![0i16; rate.hz() as usize * PHRASE_GAP_MS / 1000];
    let mut pcm = Vec::new();
    for phrase in library.phrases() {
        pcm.extend_from_slice(&phrase.samples);
        pcm.extend_from_slice(&gap);
    }
    Ok(pcm)
}

fn unique_payloads(payloads: &[Vec<u8>]) -> FxHashMap<u64, u32> {
    let mut seen: FxHashMap<u64, Option<u32>> = FxHashMap::default();
    for (index, payload) in payloads.iter().enumerate() {
        seen.entry(fingerprint(payload))
            .and_modify(|slot| *slot = None)
            .or_insert(Some(index as u32));
    }
    seen.into_iter()
        .filter_map(|(key, index)| index.map(|i| (key, i)))
        .collect()
}

/// A hash of the payload, eight bytes per step (every datagram received is
/// looked up: byte by byte, 160 dependent multiplications per G.711 frame were
/// a few percent of the generator). Collisions are checked by comparing bytes.
fn fingerprint(payload: &[u8]) -> u64 {
    let mix = |hash: u64, word: u64| {
        (hash ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
    };
    let mut words = payload.chunks_exact(8);
    let mut hash = words.by_ref().fold(0xcbf2_9ce4_8422_2325, |hash, word| {
        mix(
            hash,
            u64::from_le_bytes(word.try_into().expect("chunks of 8")),
        )
    });
    let tail = words.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    // The length tells apart payloads that differ only by trailing zeroes.
    hash = mix(hash, u64::from_le_bytes(last));
    mix(hash, payload.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_speech_encodes_to_whole_frames_of_the_codec() {
        let pcmu = EncodedAudio::prepare(LoadCodec::Pcmu, None).expect("shipped clips");
        assert!(pcmu.frames() > 100, "several seconds of speech");
        assert_eq!(pcmu.payload(0).len(), 160);
        assert_eq!(pcmu.timestamp_step(), 160);
        let opus = EncodedAudio::prepare(LoadCodec::Opus, None).expect("shipped clips");
        assert_eq!(opus.timestamp_step(), 960);
        assert!(opus.payload(0).len() < 160, "compressed");
    }

    #[test]
    fn the_audio_loops() {
        let audio = EncodedAudio::prepare(LoadCodec::Pcma, None).expect("shipped clips");
        let n = audio.frames();
        assert_eq!(audio.payload(n + 3), audio.payload(3));
    }

    #[test]
    fn speech_frames_are_recognised_and_silence_is_not() {
        let audio = EncodedAudio::prepare(LoadCodec::Pcmu, None).expect("shipped clips");
        let silence = vec![0xffu8; 160];
        assert_eq!(
            audio.frame_of(&silence),
            None,
            "silence repeats: no echo timing"
        );
        let recognised = (0..audio.frames())
            .filter(|n| audio.frame_of(audio.payload(*n)) == Some(*n as u32))
            .count();
        assert!(
            recognised as u64 > audio.frames() / 2,
            "most speech frames are unique: {recognised} of {}",
            audio.frames()
        );
        let opus = EncodedAudio::prepare(LoadCodec::Opus, None).expect("shipped clips");
        assert_eq!(
            opus.frame_of(opus.payload(10)),
            None,
            "Opus is not echoed exactly"
        );
    }

    #[test]
    fn codec_names_parse() {
        assert_eq!("PCMU".parse::<LoadCodec>(), Ok(LoadCodec::Pcmu));
        assert_eq!("opus".parse::<LoadCodec>(), Ok(LoadCodec::Opus));
        assert!("g729".parse::<LoadCodec>().is_err());
    }

    #[test]
    fn less_than_a_frame_is_an_error() {
        let err = EncodedAudio::encode(LoadCodec::Pcmu, &[0; 100]).expect_err("too short");
        assert!(matches!(err, AudioError::Empty));
    }
}
