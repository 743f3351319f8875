//! Audio codecs behind one small pair of traits: Opus, PCMU, PCMA, and the
//! RFC 4733 telephone-event payload in [`dtmf`].
//!
//! The media stream holds a `Box<dyn AudioEncoder + Send>` and a
//! `Box<dyn AudioDecoder + Send>` built from a [`CodecSpec`] negotiated in
//! SDP. Both traits work on caller-owned buffers, so the per-frame hot path
//! never allocates:
//!
//! ```
//! use media::codec::{CodecSpec, MAX_PAYLOAD_BYTES};
//!
//! let spec = CodecSpec::Pcmu;
//! let mut encoder = spec.make_encoder().expect("PCMU needs no setup");
//! let mut decoder = spec.make_decoder().expect("PCMU needs no setup");
//! let pcm = [0i16; 160];
//! let mut payload = [0u8; MAX_PAYLOAD_BYTES];
//! let len = encoder.encode(&pcm, &mut payload).unwrap();
//! let mut out = [0i16; 160];
//! let samples = decoder.decode(&payload[..len], &mut out).unwrap();
//! assert_eq!(samples, 160);
//! ```
//!
//! Every frame is 20 ms at the codec's sample rate. RTP timestamps advance by
//! [`AudioEncoder::rtp_timestamp_step`] per frame, in units of
//! [`AudioEncoder::clock_rate`] (48000 for Opus whatever rate it runs at).

pub mod dtmf;
pub mod g711;
pub mod opus;

pub use g711::{G711Decoder, G711Encoder, G711Law};
pub use opus::{OpusConfig, OpusDecoder, OpusEncoder};

/// Frame duration used throughout the media path, in milliseconds.
pub const FRAME_MS: u32 = 20;

/// Largest payload any codec here writes for one 20 ms frame; an output
/// buffer of this size is always large enough for [`AudioEncoder::encode`].
pub const MAX_PAYLOAD_BYTES: usize = 1500;

/// Errors of the codec module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The PCM input of `encode` is not exactly one frame.
    #[error("expected a frame of {expected} samples, got {actual}")]
    FrameLength {
        /// Samples in one 20 ms frame of this codec.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// A caller-provided output buffer is too small.
    #[error("output buffer holds {available} items, {needed} needed")]
    OutputTooSmall {
        /// Items the operation needs to write.
        needed: usize,
        /// Length of the buffer given.
        available: usize,
    },
    /// An empty payload was given to a codec that cannot decode one.
    #[error("empty payload")]
    EmptyPayload,
    /// A configuration value is out of its allowed range.
    #[error("invalid codec parameter {parameter}: {value}")]
    InvalidParameter {
        /// Name of the parameter.
        parameter: &'static str,
        /// The rejected value.
        value: u32,
    },
    /// libopus rejected an operation (malformed packet, bad argument, ...).
    #[error("opus {operation} failed: {source}")]
    Opus {
        /// What was being done.
        operation: &'static str,
        /// The error reported through audiopus.
        #[source]
        source: audiopus::Error,
    },
}

/// A sample rate the media path works at: 8, 16 or 48 kHz, mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// 8 kHz (narrowband telephony).
    Hz8000,
    /// 16 kHz (wideband).
    Hz16000,
    /// 48 kHz (fullband).
    Hz48000,
}

impl SampleRate {
    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        match self {
            SampleRate::Hz8000 => 8000,
            SampleRate::Hz16000 => 16000,
            SampleRate::Hz48000 => 48000,
        }
    }

    /// Samples in one 20 ms frame at this rate (160, 320 or 960).
    pub const fn frame_samples(self) -> usize {
        (self.hz() / (1000 / FRAME_MS)) as usize
    }

    /// The rate for a value in Hz, if it is one of 8000, 16000 or 48000.
    pub const fn from_hz(hz: u32) -> Option<SampleRate> {
        match hz {
            8000 => Some(SampleRate::Hz8000),
            16000 => Some(SampleRate::Hz16000),
            48000 => Some(SampleRate::Hz48000),
            _ => None,
        }
    }
}

/// Encodes 20 ms frames of mono PCM into RTP payloads.
pub trait AudioEncoder {
    /// Encodes exactly one frame of [`frame_samples`](Self::frame_samples)
    /// samples into `out` and returns the payload length. A return of `0`
    /// means "nothing to send for this frame" (Opus DTX during silence); the
    /// RTP timestamp still advances.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;

    /// Rate of the PCM this encoder takes.
    fn sample_rate(&self) -> SampleRate;

    /// RTP clock rate of the payload format (48000 for Opus, 8000 for G.711).
    fn clock_rate(&self) -> u32;

    /// Samples per 20 ms input frame.
    fn frame_samples(&self) -> usize {
        self.sample_rate().frame_samples()
    }

    /// RTP timestamp increment per frame.
    fn rtp_timestamp_step(&self) -> u32 {
        self.clock_rate() / (1000 / FRAME_MS)
    }
}

/// Decodes RTP payloads into mono PCM and conceals lost packets.
pub trait AudioDecoder {
    /// Decodes one payload into `out` and returns the number of samples
    /// written. `out` must hold the whole payload's audio (a 20 ms frame is
    /// [`frame_samples`](Self::frame_samples); senders may pack more).
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;

    /// Produces one 20 ms frame standing in for a lost packet and returns the
    /// number of samples written (always [`frame_samples`](Self::frame_samples)).
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError>;

    /// Recovers the lost frame just before `next_payload` from the forward
    /// error correction data carried in it (Opus in-band FEC); codecs without
    /// FEC, or packets carrying none, fall back to [`conceal`](Self::conceal).
    /// Afterwards `next_payload` itself must still be passed to
    /// [`decode`](Self::decode).
    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;

    /// Rate of the PCM this decoder produces.
    fn sample_rate(&self) -> SampleRate;

    /// Samples in one 20 ms output frame.
    fn frame_samples(&self) -> usize {
        self.sample_rate().frame_samples()
    }
}

/// How a codec appears in SDP (`a=rtpmap:<pt> <name>/<clock>[/<channels>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpFormat {
    /// Encoding name as written in `a=rtpmap` ("opus", "PCMU", "PCMA").
    pub encoding_name: &'static str,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channel count in the rtpmap, when the format requires one (Opus: 2).
    pub channels: Option<u8>,
    /// The static payload type of RFC 3551, if the codec has one.
    pub static_payload_type: Option<u8>,
}

/// A codec and its parameters, as negotiated for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecSpec {
    /// Opus (RFC 7587), mono.
    Opus(OpusConfig),
    /// G.711 mu-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
}

impl CodecSpec {
    /// Builds an encoder for this codec.
    pub fn make_encoder(&self) -> Result<Box<dyn AudioEncoder + Send>, CodecError> {
        Ok(match self {
            CodecSpec::Opus(config) => Box::new(OpusEncoder::new(*config)?),
            CodecSpec::Pcmu => Box::new(G711Encoder::new(G711Law::MuLaw)),
            CodecSpec::Pcma => Box::new(G711Encoder::new(G711Law::ALaw)),
        })
    }

    /// Builds a decoder for this codec.
    pub fn make_decoder(&self) -> Result<Box<dyn AudioDecoder + Send>, CodecError> {
        Ok(match self {
            CodecSpec::Opus(config) => Box::new(OpusDecoder::new(config.sample_rate)?),
            CodecSpec::Pcmu => Box::new(G711Decoder::new(G711Law::MuLaw)),
            CodecSpec::Pcma => Box::new(G711Decoder::new(G711Law::ALaw)),
        })
    }

    /// The codec's SDP rtpmap values.
    pub const fn sdp_format(&self) -> SdpFormat {
        match self {
            CodecSpec::Opus(_) => SdpFormat {
                encoding_name: "opus",
                clock_rate: 48000,
                channels: Some(2),
                static_payload_type: None,
            },
            CodecSpec::Pcmu => SdpFormat {
                encoding_name: "PCMU",
                clock_rate: 8000,
                channels: None,
                static_payload_type: Some(0),
            },
            CodecSpec::Pcma => SdpFormat {
                encoding_name: "PCMA",
                clock_rate: 8000,
                channels: None,
                static_payload_type: Some(8),
            },
        }
    }

    /// The codec for an rtpmap entry (name compared case-insensitively, as
    /// RFC 4855 says), with default Opus settings; `None` for codecs not
    /// supported here.
    pub fn from_rtpmap(encoding_name: &str, clock_rate: u32) -> Option<CodecSpec> {
        if encoding_name.eq_ignore_ascii_case("opus") && clock_rate == 48000 {
            Some(CodecSpec::Opus(OpusConfig::default()))
        } else if encoding_name.eq_ignore_ascii_case("PCMU") && clock_rate == 8000 {
            Some(CodecSpec::Pcmu)
        } else if encoding_name.eq_ignore_ascii_case("PCMA") && clock_rate == 8000 {
            Some(CodecSpec::Pcma)
        } else {
            None
        }
    }

    /// The codec of an rtpmap entry as a phone call runs it ([`CodecSpec::from_rtpmap`]),
    /// at most wideband: G.711 at its 8 kHz, Opus at 16 kHz (its RTP clock stays
    /// 48 kHz). libopus then decodes to and encodes from 16 kHz directly, with no
    /// resampling on either side, for a call whose other side (an agent, a phone
    /// network) carries 16 kHz at most; the codec itself costs about what it costs at
    /// full band (`benches/pipeline.rs`). Run the application side at
    /// [`CodecSpec::sample_rate`].
    pub fn for_calls(encoding_name: &str, clock_rate: u32) -> Option<CodecSpec> {
        match CodecSpec::from_rtpmap(encoding_name, clock_rate)? {
            CodecSpec::Opus(opus) => Some(CodecSpec::Opus(OpusConfig {
                sample_rate: SampleRate::Hz16000,
                ..opus
            })),
            spec => Some(spec),
        }
    }

    /// The `a=fmtp` parameters to offer for this codec, if any.
    pub fn fmtp(&self) -> Option<String> {
        match self {
            CodecSpec::Opus(config) => Some(config.fmtp()),
            CodecSpec::Pcmu | CodecSpec::Pcma => None,
        }
    }

    /// Rate of the PCM the codec's encoder takes and its decoder produces.
    pub const fn sample_rate(&self) -> SampleRate {
        match self {
            CodecSpec::Opus(config) => config.sample_rate,
            CodecSpec::Pcmu | CodecSpec::Pcma => SampleRate::Hz8000,
        }
    }

    /// RTP clock rate of the payload format.
    pub const fn clock_rate(&self) -> u32 {
        self.sdp_format().clock_rate
    }
}

/// Checks an encoder input length against the frame size.
pub(crate) fn check_frame(expected: usize, pcm: &[i16]) -> Result<(), CodecError> {
    if pcm.len() == expected {
        Ok(())
    } else {
        Err(CodecError::FrameLength {
            expected,
            actual: pcm.len(),
        })
    }
}

/// Checks that an output buffer can take `needed` items.
pub(crate) fn check_output(needed: usize, available: usize) -> Result<(), CodecError> {
    if available >= needed {
        Ok(())
    } else {
        Err(CodecError::OutputTooSmall { needed, available })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_follow_the_rate() {
        assert_eq!(SampleRate::Hz8000.frame_samples(), 160);
        assert_eq!(SampleRate::Hz16000.frame_samples(), 320);
        assert_eq!(SampleRate::Hz48000.frame_samples(), 960);
        assert_eq!(SampleRate::from_hz(16000), Some(SampleRate::Hz16000));
        assert_eq!(SampleRate::from_hz(44100), None);
    }

    #[test]
    fn rtpmap_round_trips() {
        for spec in [
            CodecSpec::Pcmu,
            CodecSpec::Pcma,
            CodecSpec::Opus(OpusConfig::default()),
        ] {
            let format = spec.sdp_format();
            assert_eq!(
                CodecSpec::from_rtpmap(format.encoding_name, format.clock_rate),
                Some(spec)
            );
        }
        assert_eq!(CodecSpec::from_rtpmap("pcmu", 8000), Some(CodecSpec::Pcmu));
        assert_eq!(CodecSpec::from_rtpmap("G722", 8000), None);
        assert_eq!(CodecSpec::from_rtpmap("PCMU", 16000), None);
    }

    #[test]
    fn opus_runs_on_a_48k_clock_at_any_rate() {
        let spec = CodecSpec::Opus(OpusConfig {
            sample_rate: SampleRate::Hz8000,
            ..OpusConfig::default()
        });
        let encoder = spec.make_encoder().unwrap();
        assert_eq!(encoder.clock_rate(), 48000);
        assert_eq!(encoder.rtp_timestamp_step(), 960);
        assert_eq!(encoder.frame_samples(), 160);
    }
}
