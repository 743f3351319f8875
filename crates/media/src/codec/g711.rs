//! ITU-T G.711 mu-law (PCMU) and A-law (PCMA), 8 kHz.
//!
//! Encoding follows the G.711 segment rules bit for bit (negative inputs are
//! taken in one's complement, as in the ITU-T reference implementation of
//! G.191). Both directions are lookups in tables built at compile time from
//! those rules: a code depends only on the top 14 (mu-law) or 12 (A-law) bits
//! of a sample, so encoding is one load per sample.
//!
//! Loss concealment repeats the last 20 ms of decoded audio with a linear
//! fade that reaches silence after [`FADE_FRAMES`] lost frames, and stays
//! silent after that until a packet arrives.

use super::{check_frame, check_output, AudioDecoder, AudioEncoder, CodecError, SampleRate};

/// Number of consecutive concealed frames over which the repeated audio fades
/// to silence (60 ms).
pub const FADE_FRAMES: u32 = 3;

/// Samples in one 20 ms G.711 frame.
const FRAME: usize = 160;

/// The two G.711 companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711Law {
    /// mu-law, RTP payload "PCMU" (static payload type 0).
    MuLaw,
    /// A-law, RTP payload "PCMA" (static payload type 8).
    ALaw,
}

impl G711Law {
    /// Compresses one linear sample.
    #[inline]
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            G711Law::MuLaw => linear_to_ulaw(sample),
            G711Law::ALaw => linear_to_alaw(sample),
        }
    }

    /// Compresses `pcm` into `out` (as many samples as both hold).
    #[inline]
    fn encode_into(self, pcm: &[i16], out: &mut [u8]) {
        // One loop per law, so the loop body is a single table load.
        match self {
            G711Law::MuLaw => {
                for (code, &sample) in out.iter_mut().zip(pcm) {
                    *code = linear_to_ulaw(sample);
                }
            }
            G711Law::ALaw => {
                for (code, &sample) in out.iter_mut().zip(pcm) {
                    *code = linear_to_alaw(sample);
                }
            }
        }
    }

    /// Expands one code to a linear sample.
    #[inline]
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            G711Law::MuLaw => ULAW_TO_LINEAR[usize::from(code)],
            G711Law::ALaw => ALAW_TO_LINEAR[usize::from(code)],
        }
    }
}

/// Compresses a 16-bit linear sample to a mu-law code.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    LINEAR_TO_ULAW[usize::from((sample >> 2) as u16 & 0x3FFF)]
}

/// The mu-law segment rules, which build [`LINEAR_TO_ULAW`].
const fn compress_ulaw(sample: i16) -> u8 {
    // mu-law quantises the top 14 bits; the sign lives in bit 7 (set for >= 0).
    let (magnitude, sign) = if sample < 0 {
        ((!sample) >> 2, 0x00u8)
    } else {
        (sample >> 2, 0x80u8)
    };
    // 0..=8191 after the shift, so the cast and the bias stay in range.
    let biased = magnitude as u16 + ULAW_BIAS;
    let biased = if biased > 0x1FFF { 0x1FFF } else { biased };
    // biased >= 33, so its top bit is at index 5..=12: segment 0..=7.
    let top_bit = 15 - biased.leading_zeros() as u16;
    let segment = top_bit - 5;
    let mantissa = (biased >> (segment + 1)) & 0x0F;
    let code = ((segment << 4) | mantissa) as u8;
    (!code & 0x7F) | sign
}

/// Expands a mu-law code to a 16-bit linear sample.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Compresses a 16-bit linear sample to an A-law code.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    LINEAR_TO_ALAW[usize::from((sample >> 4) as u16 & 0x0FFF)]
}

/// The A-law segment rules, which build [`LINEAR_TO_ALAW`].
const fn compress_alaw(sample: i16) -> u8 {
    // A-law quantises the top 12 bits; the sign lives in bit 7 (set for >= 0).
    let (magnitude, sign) = if sample < 0 {
        ((!sample) >> 4, 0x00u8)
    } else {
        (sample >> 4, 0x80u8)
    };
    let magnitude = magnitude as u16; // 0..=2047
    let code = if magnitude < 32 {
        // Segments 0 and 1 share the same step: the value is its own code.
        magnitude
    } else {
        let top_bit = 15 - magnitude.leading_zeros() as u16; // 5..=10
        let segment = top_bit - 3; // 2..=7
        (segment << 4) | ((magnitude >> (top_bit - 4)) & 0x0F)
    };
    ((code as u8) | sign) ^ 0x55
}

/// Expands an A-law code to a 16-bit linear sample.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// G.711 encoder for one law.
#[derive(Debug, Clone)]
pub struct G711Encoder {
    law: G711Law,
}

impl G711Encoder {
    /// A new encoder for `law`.
    pub fn new(law: G711Law) -> Self {
        Self { law }
    }

    /// The law this encoder uses.
    pub fn law(&self) -> G711Law {
        self.law
    }
}

impl AudioEncoder for G711Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame(FRAME, pcm)?;
        check_output(pcm.len(), out.len())?;
        self.law.encode_into(pcm, out);
        Ok(pcm.len())
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz8000
    }

    fn clock_rate(&self) -> u32 {
        8000
    }
}

/// G.711 decoder for one law, with fade-out loss concealment.
#[derive(Debug, Clone)]
pub struct G711Decoder {
    law: G711Law,
    /// The last 20 ms of decoded audio, oldest first.
    history: [i16; FRAME],
    /// Consecutive frames concealed since the last decoded packet.
    lost_frames: u32,
}

impl G711Decoder {
    /// A new decoder for `law`.
    pub fn new(law: G711Law) -> Self {
        Self {
            law,
            history: [0; FRAME],
            lost_frames: 0,
        }
    }

    /// The law this decoder uses.
    pub fn law(&self) -> G711Law {
        self.law
    }

    fn remember(&mut self, decoded: &[i16]) {
        if decoded.len() >= FRAME {
            self.history
                .copy_from_slice(&decoded[decoded.len() - FRAME..]);
        } else {
            self.history.copy_within(decoded.len().., 0);
            self.history[FRAME - decoded.len()..].copy_from_slice(decoded);
        }
    }
}

impl AudioDecoder for G711Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        check_output(payload.len(), out.len())?;
        let decoded = &mut out[..payload.len()];
        let table = match self.law {
            G711Law::MuLaw => &ULAW_TO_LINEAR,
            G711Law::ALaw => &ALAW_TO_LINEAR,
        };
        for (sample, &code) in decoded.iter_mut().zip(payload) {
            *sample = table[usize::from(code)];
        }
        self.remember(decoded);
        self.lost_frames = 0;
        Ok(payload.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        check_output(FRAME, out.len())?;
        let frame = &mut out[..FRAME];
        if self.lost_frames >= FADE_FRAMES {
            frame.fill(0);
        } else {
            // Gain falls linearly from (1 - lost/N) to (1 - (lost+1)/N)
            // across this frame, so consecutive frames join without a step.
            let total = (FADE_FRAMES as usize * FRAME) as i32;
            let start = (self.lost_frames as usize * FRAME) as i32;
            for (i, (sample, &past)) in frame.iter_mut().zip(&self.history).enumerate() {
                let remaining = total - start - i as i32;
                *sample = (i32::from(past) * remaining / total) as i16;
            }
        }
        self.lost_frames = self.lost_frames.saturating_add(1);
        Ok(FRAME)
    }

    fn decode_fec(&mut self, _next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.conceal(out)
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz8000
    }
}

const ULAW_BIAS: u16 = 33;

/// Builds a compression table: entry `i` is the code of the samples whose top
/// bits, read as a two's complement number of `$n` values, are `i` (the low
/// `$shift` bits do not change the code). A macro because a `const fn` cannot
/// call a function it is given.
macro_rules! compress_table {
    ($n:expr, $shift:expr, $compress:ident) => {{
        let mut table = [0u8; $n];
        let mut i = 0;
        while i < $n {
            let top = if i >= $n / 2 {
                i as i32 - $n as i32
            } else {
                i as i32
            };
            table[i] = $compress((top << $shift) as i16);
            i += 1;
        }
        table
    }};
}

static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();
/// mu-law codes by the top 14 bits of a sample (16 kB).
static LINEAR_TO_ULAW: [u8; 1 << 14] = compress_table!(1 << 14, 2, compress_ulaw);
/// A-law codes by the top 12 bits of a sample (4 kB).
static LINEAR_TO_ALAW: [u8; 1 << 12] = compress_table!(1 << 12, 4, compress_alaw);

static ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

const fn expand_ulaw(code: u8) -> i16 {
    let inverted = !code;
    let segment = (inverted >> 4) & 0x07;
    let mantissa = (inverted & 0x0F) as i32;
    // Step doubles per segment; 132 is the 16-bit image of the bias 33.
    let magnitude = (((mantissa << 3) + 132) << segment) - 132;
    if inverted & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn expand_alaw(code: u8) -> i16 {
    let toggled = code ^ 0x55;
    let segment = (toggled >> 4) & 0x07;
    let mut magnitude = (toggled & 0x0F) as i32;
    if segment > 0 {
        magnitude += 16;
    }
    // Reconstruct at the middle of the quantisation step.
    magnitude = (magnitude << 4) + 8;
    if segment > 1 {
        magnitude <<= segment - 1;
    }
    if toggled & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = expand_ulaw(code as u8);
        code += 1;
    }
    table
}

const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = expand_alaw(code as u8);
        code += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_follow_the_segment_rules_for_every_sample() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(sample), compress_ulaw(sample), "{sample}");
            assert_eq!(linear_to_alaw(sample), compress_alaw(sample), "{sample}");
        }
    }

    #[test]
    fn ulaw_reference_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x01), -31100);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(ulaw_to_linear(0xCE), 988);
    }

    #[test]
    fn alaw_reference_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0x01), -5248);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn every_code_survives_expand_then_compress() {
        for code in 0..=255u8 {
            if code != 0x7F {
                // 0x7F is mu-law's negative zero, which compresses to 0xFF.
                assert_eq!(linear_to_ulaw(ulaw_to_linear(code)), code, "ulaw {code:#x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "alaw {code:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_segment_step() {
        for sample in i16::MIN..=i16::MAX {
            let mu = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            let x = i32::from(sample);
            // Largest steps: 1024 (mu-law segment 7), 1024 (A-law segment 7);
            // clipping above 32124/32256 adds at most 644.
            let bound = (x.abs() / 16).max(16) + 644 * i32::from(x.abs() > 32000);
            assert!((mu - x).abs() <= bound, "ulaw {sample} -> {mu}");
            assert!((a - x).abs() <= bound, "alaw {sample} -> {a}");
        }
    }

    #[test]
    fn concealment_fades_to_silence() {
        let mut decoder = G711Decoder::new(G711Law::MuLaw);
        let payload = [linear_to_ulaw(8000); FRAME];
        let mut out = [0i16; FRAME];
        decoder.decode(&payload, &mut out).unwrap();
        let level = i32::from(out[0]);
        let mut peaks = Vec::new();
        for _ in 0..5 {
            assert_eq!(decoder.conceal(&mut out).unwrap(), FRAME);
            peaks.push(out.iter().map(|s| i32::from(*s).abs()).max().unwrap());
        }
        assert_eq!(peaks[0], level);
        assert!(peaks[1] < peaks[0] && peaks[2] < peaks[1]);
        assert_eq!(&peaks[3..], &[0, 0]);
        decoder.decode(&payload, &mut out).unwrap();
        decoder.conceal(&mut out).unwrap();
        assert_eq!(i32::from(out[0]), level);
    }

    #[test]
    fn hostile_sizes_are_errors() {
        let mut encoder = G711Encoder::new(G711Law::ALaw);
        let mut out = [0u8; 160];
        assert!(matches!(
            encoder.encode(&[0; 100], &mut out),
            Err(CodecError::FrameLength { .. })
        ));
        let mut decoder = G711Decoder::new(G711Law::ALaw);
        let mut pcm = [0i16; 160];
        assert!(matches!(
            decoder.decode(&[0; 400], &mut pcm),
            Err(CodecError::OutputTooSmall { .. })
        ));
        assert_eq!(decoder.decode(&[], &mut pcm).unwrap(), 0);
        assert_eq!(decoder.decode(&[0xD5; 80], &mut pcm).unwrap(), 80);
    }
}
