//! Audio of `media` payloads: the call's PCM frames to and from the wire
//! format of the stream.
//!
//! [`WireFormat::Mulaw8k`] is G.711 mu-law at 8 kHz, one byte per sample
//! (Twilio's only format). [`WireFormat::L16At16k`] is 16-bit linear PCM at
//! 16 kHz, **little-endian**, two bytes per sample: RFC 2586's `audio/L16`
//! is big-endian, but the WebSocket voice platforms and frameworks that
//! stream raw PCM (and the NumPy/`int16` buffers speech engines take) use
//! the machine's little-endian order, so that is what agents expect.
//!
//! The call's own rate (8 or 16 kHz, from its codec) may differ from the
//! wire's: then audio is resampled in whole 20 ms frames.

use media::codec::g711::{linear_to_ulaw, ulaw_to_linear};
use media::codec::SampleRate;
use media::resample::{ResampleError, Resampler};

/// The audio format of `media` payloads, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// `audio/x-mulaw`, 8000 Hz (Twilio Media Streams).
    #[default]
    Mulaw8k,
    /// `audio/l16;rate=16000`: 16-bit little-endian linear PCM at 16 kHz.
    L16At16k,
}

impl WireFormat {
    /// The format named by an agent's `format` setting: absent, `twilio`
    /// or `audio/x-mulaw` for mu-law 8 kHz; `audio/l16;rate=16000` for
    /// 16 kHz linear PCM (case and spaces around `;` do not matter).
    pub fn parse(format: Option<&str>) -> Result<WireFormat, String> {
        let Some(format) = format else {
            return Ok(WireFormat::Mulaw8k);
        };
        let normalized: String = format
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        match normalized.as_str() {
            "twilio" | "audio/x-mulaw" | "audio/x-mulaw;rate=8000" => Ok(WireFormat::Mulaw8k),
            "audio/l16;rate=16000" => Ok(WireFormat::L16At16k),
            _ => Err(format!(
                "format {format:?}: expected \"twilio\" (audio/x-mulaw, 8 kHz) or \"audio/l16;rate=16000\""
            )),
        }
    }

    /// `mediaFormat.encoding` of the `start` message.
    pub fn encoding(self) -> &'static str {
        match self {
            WireFormat::Mulaw8k => "audio/x-mulaw",
            WireFormat::L16At16k => "audio/l16",
        }
    }

    /// The sample rate on the wire.
    pub fn rate(self) -> SampleRate {
        match self {
            WireFormat::Mulaw8k => SampleRate::Hz8000,
            WireFormat::L16At16k => SampleRate::Hz16000,
        }
    }

    fn bytes_per_sample(self) -> usize {
        match self {
            WireFormat::Mulaw8k => 1,
            WireFormat::L16At16k => 2,
        }
    }

    fn encode_into(self, pcm: &[i16], out: &mut Vec<u8>) {
        match self {
            WireFormat::Mulaw8k => out.extend(pcm.iter().map(|&s| linear_to_ulaw(s))),
            WireFormat::L16At16k => {
                for sample in pcm {
                    out.extend_from_slice(&sample.to_le_bytes());
                }
            }
        }
    }
}

/// Caller -> agent: one call-rate frame in, one payload out.
#[derive(Debug)]
pub struct Uplink {
    format: WireFormat,
    resampler: Resampler,
    wire: Vec<i16>,
    bytes: Vec<u8>,
}

impl Uplink {
    /// For a call at `call_rate` streaming as `format`.
    pub fn new(format: WireFormat, call_rate: SampleRate) -> Result<Self, ResampleError> {
        let resampler = Resampler::new(call_rate, format.rate())?;
        Ok(Self {
            format,
            wire: vec![0; resampler.output_frame_samples()],
            bytes: Vec::with_capacity(resampler.output_frame_samples() * format.bytes_per_sample()),
            resampler,
        })
    }

    /// Encodes one 20 ms frame at the call's rate; returns the payload bytes.
    pub fn encode(&mut self, frame: &[i16]) -> Result<&[u8], ResampleError> {
        let written = self.resampler.process(frame, &mut self.wire)?;
        self.bytes.clear();
        self.format
            .encode_into(&self.wire[..written], &mut self.bytes);
        Ok(&self.bytes)
    }
}

/// Agent -> caller: payloads of any length in, PCM at the call's rate out.
#[derive(Debug)]
pub struct Downlink {
    format: WireFormat,
    /// `None` when the call runs at the wire's rate.
    resampler: Option<Resampler>,
    /// Wire-rate samples waiting for a whole frame (resampling only).
    pending: Vec<i16>,
    /// The first byte of a sample split across two payloads (L16 only).
    odd_byte: Option<u8>,
    frame_out: Vec<i16>,
}

impl Downlink {
    /// For a call at `call_rate` streaming as `format`.
    pub fn new(format: WireFormat, call_rate: SampleRate) -> Result<Self, ResampleError> {
        let resampler = if call_rate == format.rate() {
            None
        } else {
            Some(Resampler::new(format.rate(), call_rate)?)
        };
        Ok(Self {
            format,
            frame_out: vec![0; call_rate.frame_samples()],
            resampler,
            pending: Vec::new(),
            odd_byte: None,
        })
    }

    /// Decodes a payload, appending to `out` the call-rate samples that are
    /// ready (with resampling, up to 20 ms may wait for the next payload or
    /// [`Downlink::flush`]).
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        let mut wire = Vec::with_capacity(payload.len());
        match self.format {
            WireFormat::Mulaw8k => wire.extend(payload.iter().map(|&b| ulaw_to_linear(b))),
            WireFormat::L16At16k => {
                let mut bytes = payload;
                if let (Some(first), Some((&second, rest))) = (self.odd_byte, bytes.split_first()) {
                    wire.push(i16::from_le_bytes([first, second]));
                    self.odd_byte = None;
                    bytes = rest;
                }
                let mut pairs = bytes.chunks_exact(2);
                wire.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
                if let [last] = pairs.remainder() {
                    self.odd_byte = Some(*last);
                }
            }
        }
        match &mut self.resampler {
            None => out.extend_from_slice(&wire),
            Some(resampler) => {
                self.pending.extend_from_slice(&wire);
                let frame = resampler.input_frame_samples();
                let whole = self.pending.len() / frame * frame;
                for chunk in self.pending[..whole].chunks_exact(frame) {
                    let written = resampler.process(chunk, &mut self.frame_out)?;
                    out.extend_from_slice(&self.frame_out[..written]);
                }
                self.pending.drain(..whole);
            }
        }
        Ok(())
    }

    /// Appends what still waits for a whole frame, padded with silence (before a mark or a
    /// hang-up, so playback reaches them).
    pub fn flush(&mut self, out: &mut Vec<i16>) -> Result<(), ResampleError> {
        self.odd_byte = None;
        let Some(resampler) = &mut self.resampler else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.resize(resampler.input_frame_samples(), 0);
        let written = resampler.process(&self.pending, &mut self.frame_out)?;
        out.extend_from_slice(&self.frame_out[..written]);
        self.pending.clear();
        Ok(())
    }

    /// Forgets what waits (barge-in).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.odd_byte = None;
        if let Some(resampler) = &mut self.resampler {
            resampler.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, rate: u32, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                ((std::f64::consts::TAU * hz * n as f64 / f64::from(rate)).sin() * 8000.0) as i16
            })
            .collect()
    }

    #[test]
    fn formats_parse() {
        assert_eq!(WireFormat::parse(None), Ok(WireFormat::Mulaw8k));
        assert_eq!(WireFormat::parse(Some("twilio")), Ok(WireFormat::Mulaw8k));
        assert_eq!(
            WireFormat::parse(Some("audio/x-mulaw")),
            Ok(WireFormat::Mulaw8k)
        );
        assert_eq!(
            WireFormat::parse(Some("audio/L16; rate=16000")),
            Ok(WireFormat::L16At16k)
        );
        assert!(WireFormat::parse(Some("audio/l16;rate=8000")).is_err());
        assert!(WireFormat::parse(Some("opus")).is_err());
    }

    #[test]
    fn mulaw_round_trip_at_8k_keeps_length_and_shape() {
        let mut up = Uplink::new(WireFormat::Mulaw8k, SampleRate::Hz8000).expect("uplink");
        let mut down = Downlink::new(WireFormat::Mulaw8k, SampleRate::Hz8000).expect("downlink");
        let pcm = tone(440.0, 8000, 160);
        let bytes = up.encode(&pcm).expect("encode").to_vec();
        assert_eq!(bytes.len(), 160);
        let mut back = Vec::new();
        down.decode(&bytes, &mut back).expect("decode");
        assert_eq!(back.len(), 160);
        for (a, b) in pcm.iter().zip(&back) {
            assert!((i32::from(*a) - i32::from(*b)).abs() < 300, "{a} vs {b}");
        }
    }

    #[test]
    fn l16_is_little_endian_and_survives_split_samples() {
        let mut up = Uplink::new(WireFormat::L16At16k, SampleRate::Hz16000).expect("uplink");
        let pcm: Vec<i16> = (0..320).map(|n| n as i16 * 7 - 1000).collect();
        let bytes = up.encode(&pcm).expect("encode").to_vec();
        assert_eq!(bytes.len(), 640);
        assert_eq!(&bytes[..2], &(-1000i16).to_le_bytes());
        let mut down = Downlink::new(WireFormat::L16At16k, SampleRate::Hz16000).expect("down");
        let mut back = Vec::new();
        // Split in the middle of a sample.
        down.decode(&bytes[..101], &mut back).expect("decode");
        assert_eq!(back.len(), 50);
        down.decode(&bytes[101..], &mut back).expect("decode");
        assert_eq!(back, pcm);
    }

    #[test]
    fn mulaw_wire_is_resampled_for_a_16k_call_in_whole_frames() {
        let mut down = Downlink::new(WireFormat::Mulaw8k, SampleRate::Hz16000).expect("down");
        let mut up = Uplink::new(WireFormat::Mulaw8k, SampleRate::Hz8000).expect("up");
        let bytes: Vec<u8> = tone(500.0, 8000, 400)
            .chunks(160)
            .flat_map(|c| {
                let mut frame = c.to_vec();
                frame.resize(160, 0);
                up.encode(&frame).expect("encode").to_vec()
            })
            .take(250)
            .collect();
        let mut out = Vec::new();
        down.decode(&bytes, &mut out).expect("decode");
        assert_eq!(
            out.len(),
            320,
            "one whole 8 kHz frame in, 20 ms at 16 kHz out"
        );
        down.flush(&mut out).expect("flush");
        assert_eq!(out.len(), 640, "the rest padded to a frame");
        down.flush(&mut out).expect("flush");
        assert_eq!(out.len(), 640, "nothing left");
        down.decode(&bytes[..100], &mut out).expect("decode");
        down.clear();
        down.flush(&mut out).expect("flush");
        assert_eq!(out.len(), 640, "cleared audio is gone");
    }

    #[test]
    fn a_16k_call_streams_8k_mulaw() {
        let mut up = Uplink::new(WireFormat::Mulaw8k, SampleRate::Hz16000).expect("uplink");
        let pcm = tone(440.0, 16000, 320);
        assert_eq!(up.encode(&pcm).expect("encode").len(), 160);
        assert!(up.encode(&pcm[..100]).is_err(), "only whole frames");
    }
}
