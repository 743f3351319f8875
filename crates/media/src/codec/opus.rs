//! Opus (RFC 6716, RTP payload RFC 7587) through libopus via audiopus.
//!
//! Mono, 20 ms frames, VOIP application. The codec runs at 8, 16 or 48 kHz
//! but its RTP clock is always 48000 (RFC 7587 section 4.1).

use audiopus::coder::{Decoder, Encoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals};

use super::{check_frame, check_output, AudioDecoder, AudioEncoder, CodecError, SampleRate};

/// Opus RTP clock rate, whatever the codec's sample rate.
pub const OPUS_CLOCK_RATE: u32 = 48000;

/// Lowest bitrate accepted, in bits per second.
pub const MIN_BITRATE: u32 = 6000;
/// Highest bitrate accepted, in bits per second.
pub const MAX_BITRATE: u32 = 510_000;

/// Parameters of an Opus stream (always mono).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Rate of the PCM given to the encoder and produced by the decoder.
    pub sample_rate: SampleRate,
    /// Target bitrate in bits per second ([`MIN_BITRATE`]..=[`MAX_BITRATE`]).
    pub bitrate: u32,
    /// In-band forward error correction (LBRR); takes effect when
    /// `expected_loss_percent` is above zero.
    pub fec: bool,
    /// Discontinuous transmission: during silence the encoder returns empty
    /// payloads that need not be sent.
    pub dtx: bool,
    /// Encoder complexity, 0 (cheapest) to 10 (best).
    pub complexity: u8,
    /// Packet loss the encoder should plan for, 0..=100 percent.
    pub expected_loss_percent: u8,
}

impl Default for OpusConfig {
    /// 48 kHz, 32 kbit/s, FEC on for 5% loss, no DTX, complexity 5.
    fn default() -> Self {
        Self {
            sample_rate: SampleRate::Hz48000,
            bitrate: 32_000,
            fec: true,
            dtx: false,
            complexity: 5,
            expected_loss_percent: 5,
        }
    }
}

impl OpusConfig {
    /// The `a=fmtp` parameters (RFC 7587 section 7) describing this config.
    pub fn fmtp(&self) -> String {
        let mut fmtp = format!("minptime=10;useinbandfec={}", u8::from(self.fec));
        if self.dtx {
            fmtp.push_str(";usedtx=1");
        }
        if self.sample_rate != SampleRate::Hz48000 {
            fmtp.push_str(&format!(";maxplaybackrate={}", self.sample_rate.hz()));
        }
        fmtp
    }

    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<(), CodecError> {
        if !(MIN_BITRATE..=MAX_BITRATE).contains(&self.bitrate) {
            return Err(CodecError::InvalidParameter {
                parameter: "bitrate",
                value: self.bitrate,
            });
        }
        if self.complexity > 10 {
            return Err(CodecError::InvalidParameter {
                parameter: "complexity",
                value: self.complexity.into(),
            });
        }
        if self.expected_loss_percent > 100 {
            return Err(CodecError::InvalidParameter {
                parameter: "expected_loss_percent",
                value: self.expected_loss_percent.into(),
            });
        }
        Ok(())
    }
}

/// An Opus encoder for 20 ms mono frames.
pub struct OpusEncoder {
    encoder: Encoder,
    config: OpusConfig,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Creates an encoder with every setting of `config` applied.
    pub fn new(config: OpusConfig) -> Result<Self, CodecError> {
        config.validate()?;
        let mut encoder = Encoder::new(
            audiopus_rate(config.sample_rate),
            Channels::Mono,
            Application::Voip,
        )
        .map_err(opus_error("create encoder"))?;
        encoder
            .set_complexity(config.complexity)
            .map_err(opus_error("set complexity"))?;
        encoder
            .set_inband_fec(config.fec)
            .map_err(opus_error("set inband fec"))?;
        encoder.set_dtx(config.dtx).map_err(opus_error("set dtx"))?;
        let mut this = Self { encoder, config };
        this.set_bitrate(config.bitrate)?;
        this.set_expected_loss_percent(config.expected_loss_percent)?;
        Ok(this)
    }

    /// The current settings.
    pub fn config(&self) -> &OpusConfig {
        &self.config
    }

    /// Changes the target bitrate (bits per second), e.g. on congestion.
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), CodecError> {
        OpusConfig {
            bitrate,
            ..self.config
        }
        .validate()?;
        // Validated above: at most 510000, which fits an i32.
        let bits = i32::try_from(bitrate).expect("bitrate validated to fit i32");
        self.encoder
            .set_bitrate(Bitrate::BitsPerSecond(bits))
            .map_err(opus_error("set bitrate"))?;
        self.config.bitrate = bitrate;
        Ok(())
    }

    /// Changes the packet loss the encoder plans its FEC for, e.g. from RTCP
    /// receiver reports.
    pub fn set_expected_loss_percent(&mut self, percent: u8) -> Result<(), CodecError> {
        OpusConfig {
            expected_loss_percent: percent,
            ..self.config
        }
        .validate()?;
        self.encoder
            .set_packet_loss_perc(percent)
            .map_err(opus_error("set packet loss percentage"))?;
        self.config.expected_loss_percent = percent;
        Ok(())
    }

    /// Encoder lookahead in samples at the codec's rate: how far the decoded
    /// signal lags the input.
    pub fn lookahead(&self) -> Result<usize, CodecError> {
        let samples = self
            .encoder
            .lookahead()
            .map_err(opus_error("get lookahead"))?;
        Ok(samples as usize)
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(self.config.sample_rate.frame_samples(), pcm)?;
        check_output(1, out.len())?;
        let written = self
            .encoder
            .encode(pcm, out)
            .map_err(opus_error("encode"))?;
        // libopus: a packet of two bytes or less need not be sent (DTX).
        if self.config.dtx && written <= 2 {
            Ok(0)
        } else {
            Ok(written)
        }
    }

    fn sample_rate(&self) -> SampleRate {
        self.config.sample_rate
    }

    fn clock_rate(&self) -> u32 {
        OPUS_CLOCK_RATE
    }
}

/// An Opus decoder producing mono PCM, with libopus loss concealment and
/// in-band FEC recovery.
pub struct OpusDecoder {
    decoder: Decoder,
    sample_rate: SampleRate,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("sample_rate", &self.sample_rate)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Creates a decoder producing PCM at `sample_rate`.
    pub fn new(sample_rate: SampleRate) -> Result<Self, CodecError> {
        let decoder = Decoder::new(audiopus_rate(sample_rate), Channels::Mono)
            .map_err(opus_error("create decoder"))?;
        Ok(Self {
            decoder,
            sample_rate,
        })
    }

    fn run(
        &mut self,
        payload: Option<&[u8]>,
        out: &mut [i16],
        fec: bool,
        operation: &'static str,
    ) -> Result<usize, CodecError> {
        let packet = payload
            .map(Packet::try_from)
            .transpose()
            .map_err(opus_error(operation))?;
        let signals = MutSignals::try_from(out).map_err(opus_error(operation))?;
        self.decoder
            .decode(packet, signals, fec)
            .map_err(opus_error(operation))
    }
}

impl AudioDecoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        // A packet holds 2.5..=120 ms; libopus reports a buffer too small
        // for the packet as an error rather than writing past it.
        self.run(Some(payload), out, false, "decode")
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let frame = self.sample_rate.frame_samples();
        check_output(frame, out.len())?;
        self.run(None, &mut out[..frame], false, "conceal")
    }

    fn decode_fec(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if next_payload.is_empty() {
            return self.conceal(out);
        }
        let frame = self.sample_rate.frame_samples();
        check_output(frame, out.len())?;
        // With fec set, libopus decodes the LBRR data of `next_payload`, or
        // runs its concealment when the packet carries none.
        self.run(Some(next_payload), &mut out[..frame], true, "decode fec")
    }

    fn sample_rate(&self) -> SampleRate {
        self.sample_rate
    }
}

fn audiopus_rate(rate: SampleRate) -> audiopus::SampleRate {
    match rate {
        SampleRate::Hz8000 => audiopus::SampleRate::Hz8000,
        SampleRate::Hz16000 => audiopus::SampleRate::Hz16000,
        SampleRate::Hz48000 => audiopus::SampleRate::Hz48000,
    }
}

fn opus_error(operation: &'static str) -> impl Fn(audiopus::Error) -> CodecError {
    move |source| CodecError::Opus { operation, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_are_rejected() {
        for config in [
            OpusConfig {
                bitrate: 100,
                ..OpusConfig::default()
            },
            OpusConfig {
                complexity: 11,
                ..OpusConfig::default()
            },
            OpusConfig {
                expected_loss_percent: 101,
                ..OpusConfig::default()
            },
        ] {
            assert!(matches!(
                OpusEncoder::new(config),
                Err(CodecError::InvalidParameter { .. })
            ));
        }
    }

    #[test]
    fn fmtp_names_the_settings() {
        let config = OpusConfig {
            sample_rate: SampleRate::Hz16000,
            dtx: true,
            ..OpusConfig::default()
        };
        assert_eq!(
            config.fmtp(),
            "minptime=10;useinbandfec=1;usedtx=1;maxplaybackrate=16000"
        );
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let mut decoder = OpusDecoder::new(SampleRate::Hz48000).unwrap();
        let mut out = [0i16; 960];
        assert!(matches!(
            decoder.decode(&[], &mut out),
            Err(CodecError::EmptyPayload)
        ));
        // TOC code 3 with a frame count of zero is malformed.
        assert!(decoder.decode(&[0x03, 0x00], &mut out).is_err());
        // A 120 ms packet does not fit a 20 ms buffer.
        let mut small = [0i16; 10];
        assert!(decoder.decode(&[0xF8, 0xFF, 0xFE], &mut small).is_err());
    }

    #[test]
    fn dtx_silence_yields_nothing_to_send() {
        let mut encoder = OpusEncoder::new(OpusConfig {
            dtx: true,
            ..OpusConfig::default()
        })
        .unwrap();
        let silence = [0i16; 960];
        let mut out = [0u8; 1500];
        let sizes: Vec<usize> = (0..30)
            .map(|_| encoder.encode(&silence, &mut out).unwrap())
            .collect();
        assert!(sizes.contains(&0), "{sizes:?}");
    }
}
