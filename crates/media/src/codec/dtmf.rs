//! RFC 4733 telephone-events: DTMF digits carried as RTP payloads.
//!
//! - [`TelephoneEvent`]: the 4-byte payload (event, end bit, volume, duration).
//! - [`DtmfSender`]: turns a digit string into the packets to send: the first
//!   packet of an event carries the marker bit, updates follow every 20 ms
//!   with a growing duration, the final packet (end bit set) is sent three
//!   times; all packets of one event share its start timestamp.
//! - [`DtmfReceiver`]: sans-IO; turns received packets (with their RTP
//!   timestamps) into [`DtmfDigit`]s, ignoring the repeated end packets and
//!   finishing an event whose end packets were all lost after a timeout.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The SDP encoding name of the payload format.
pub const TELEPHONE_EVENT_NAME: &str = "telephone-event";

/// Length of one telephone-event payload.
pub const PAYLOAD_LEN: usize = 4;

/// Highest volume value (-63 dBm0); the field is the attenuation in dB.
pub const MAX_VOLUME: u8 = 63;

/// Interval between packets of one event.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// How many times the final (end) packet of an event is sent.
pub const END_PACKET_COUNT: usize = 3;

/// Errors of the telephone-event module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// A payload shorter than the 4 bytes of an event.
    #[error("telephone-event payload of {len} bytes, at least 4 needed")]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// A character that is not one of 0-9, *, #, A-D.
    #[error("{0:?} is not a DTMF digit")]
    UnknownDigit(char),
    /// An event code other than the 16 DTMF events (0..=15).
    #[error("telephone-event {0} is not a DTMF digit")]
    UnsupportedEvent(u8),
    /// A volume above [`MAX_VOLUME`].
    #[error("volume {0} above 63")]
    InvalidVolume(u8),
    /// An RTP clock rate that is zero or not a whole number of kHz.
    #[error("unsupported RTP clock rate {0}")]
    InvalidClockRate(u32),
    /// A digit duration of zero, or too long for the 16-bit duration field.
    #[error("digit duration {duration_ms} ms outside 1..={max_ms} ms")]
    InvalidDuration {
        /// Requested duration.
        duration_ms: u32,
        /// Longest duration the field can carry at this clock rate.
        max_ms: u32,
    },
}

/// One telephone-event payload (RFC 4733 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level as attenuation in dB below 0 dBm0, 0..=63.
    pub volume: u8,
    /// Duration so far, in RTP clock units since the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Serialises the payload.
    pub fn encode(&self) -> [u8; PAYLOAD_LEN] {
        let [high, low] = self.duration.to_be_bytes();
        let end = if self.end { 0x80 } else { 0 };
        [self.event, end | (self.volume & 0x3F), high, low]
    }

    /// Parses a payload; bytes after the first event are ignored.
    pub fn decode(payload: &[u8]) -> Result<Self, DtmfError> {
        match payload {
            [event, flags, high, low, ..] => Ok(Self {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*high, *low]),
            }),
            _ => Err(DtmfError::TooShort { len: payload.len() }),
        }
    }
}

/// The event code of a DTMF character (`a`-`d` accepted as `A`-`D`).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The DTMF character of an event code, for codes 0..=15.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// One packet produced by [`DtmfSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// The RTP payload.
    pub payload: [u8; PAYLOAD_LEN],
    /// The RTP marker bit (set on the first packet of each event).
    pub marker: bool,
    /// The RTP timestamp relative to the start of the digit string, in clock
    /// units: add it to the stream's timestamp at the moment sending starts.
    pub timestamp_offset: u32,
    /// When to send the packet, relative to the start of the digit string.
    pub send_offset: Duration,
}

/// Settings of a [`DtmfSender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfSenderConfig {
    /// RTP clock rate of the telephone-event format (8000, or 48000 beside Opus).
    pub clock_rate: u32,
    /// Volume field, 0..=63 (attenuation in dB).
    pub volume: u8,
    /// How long each digit sounds.
    pub digit_duration: Duration,
    /// Pause between the end of one digit and the start of the next (longer
    /// when the three end packets need more room).
    pub gap: Duration,
}

impl Default for DtmfSenderConfig {
    /// 8 kHz clock, volume 10, 100 ms digits with 100 ms pauses.
    fn default() -> Self {
        Self {
            clock_rate: 8000,
            volume: 10,
            digit_duration: Duration::from_millis(100),
            gap: Duration::from_millis(100),
        }
    }
}

/// Turns digit strings into telephone-event packets.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    config: DtmfSenderConfig,
    /// Clock units per 20 ms packet interval.
    step: u32,
    /// Digit duration in clock units.
    duration: u16,
}

impl DtmfSender {
    /// Checks `config` and builds a sender.
    pub fn new(config: DtmfSenderConfig) -> Result<Self, DtmfError> {
        let units_per_ms = units_per_ms(config.clock_rate)?;
        if config.volume > MAX_VOLUME {
            return Err(DtmfError::InvalidVolume(config.volume));
        }
        let max_ms = u32::from(u16::MAX) / units_per_ms;
        let duration_ms = u32::try_from(config.digit_duration.as_millis()).unwrap_or(u32::MAX);
        if duration_ms == 0 || duration_ms > max_ms {
            return Err(DtmfError::InvalidDuration {
                duration_ms,
                max_ms,
            });
        }
        let duration =
            u16::try_from(duration_ms * units_per_ms).expect("duration checked against max_ms");
        Ok(Self {
            config,
            step: units_per_ms * PACKET_INTERVAL.as_millis() as u32,
            duration,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &DtmfSenderConfig {
        &self.config
    }

    /// All packets for `digits`, in sending order.
    pub fn packets(&self, digits: &str) -> Result<Vec<DtmfPacket>, DtmfError> {
        let events = digits
            .chars()
            .map(|c| digit_to_event(c).ok_or(DtmfError::UnknownDigit(c)))
            .collect::<Result<Vec<u8>, DtmfError>>()?;
        let units_per_ms = self.config.clock_rate / 1000;
        let mut packets = Vec::new();
        let mut start = Duration::ZERO;
        for event in events {
            let timestamp_offset = (start.as_millis() as u32).wrapping_mul(units_per_ms);
            let mut send = start;
            let mut sent: u32 = 0;
            loop {
                sent = (sent + self.step).min(u32::from(self.duration));
                let end = sent == u32::from(self.duration);
                let payload = TelephoneEvent {
                    event,
                    end,
                    volume: self.config.volume,
                    duration: u16::try_from(sent).expect("capped at the u16 duration"),
                }
                .encode();
                let repeats = if end { END_PACKET_COUNT } else { 1 };
                for _ in 0..repeats {
                    packets.push(DtmfPacket {
                        payload,
                        marker: send == start,
                        timestamp_offset,
                        send_offset: send,
                    });
                    send += PACKET_INTERVAL;
                }
                if end {
                    break;
                }
            }
            start = (start + self.config.digit_duration + self.config.gap).max(send);
        }
        Ok(packets)
    }
}

/// A digit recognised by [`DtmfReceiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// The digit: 0-9, `*`, `#`, A-D.
    pub digit: char,
    /// How long it sounded.
    pub duration_ms: u32,
    /// RTP timestamp of the event's start.
    pub rtp_timestamp: u32,
}

/// Default time without packets after which an event missing its end
/// packets is considered over.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(300);

/// Reassembles telephone-event packets into digits (sans-IO).
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    units_per_ms: u32,
    end_timeout: Duration,
    current: Option<Ongoing>,
    last_finished: Option<u32>,
    ready: VecDeque<DtmfDigit>,
}

#[derive(Debug, Clone, Copy)]
struct Ongoing {
    timestamp: u32,
    digit: char,
    duration: u16,
    last_seen: Instant,
}

impl DtmfReceiver {
    /// A receiver for a telephone-event stream with RTP clock `clock_rate`.
    pub fn new(clock_rate: u32) -> Result<Self, DtmfError> {
        Ok(Self {
            units_per_ms: units_per_ms(clock_rate)?,
            end_timeout: DEFAULT_END_TIMEOUT,
            current: None,
            last_finished: None,
            ready: VecDeque::with_capacity(4),
        })
    }

    /// Changes how long an event may go without packets before it is ended.
    pub fn set_end_timeout(&mut self, timeout: Duration) {
        self.end_timeout = timeout;
    }

    /// Feeds one received telephone-event packet with its RTP timestamp.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        rtp_timestamp: u32,
        payload: &[u8],
    ) -> Result<(), DtmfError> {
        let event = TelephoneEvent::decode(payload)?;
        let digit = event_to_digit(event.event).ok_or(DtmfError::UnsupportedEvent(event.event))?;
        if let Some(finished) = self.last_finished {
            // Repeated end packets, or late packets of an earlier event.
            if !is_newer(rtp_timestamp, finished) {
                return Ok(());
            }
        }
        match self.current {
            Some(ref mut ongoing) if ongoing.timestamp == rtp_timestamp => {
                ongoing.duration = ongoing.duration.max(event.duration);
                ongoing.last_seen = now;
            }
            Some(ongoing) if !is_newer(rtp_timestamp, ongoing.timestamp) => return Ok(()),
            _ => {
                // A newer event: the one in progress lost its end packets.
                self.finish();
                self.current = Some(Ongoing {
                    timestamp: rtp_timestamp,
                    digit,
                    duration: event.duration,
                    last_seen: now,
                });
            }
        }
        if event.end {
            self.finish();
        }
        Ok(())
    }

    /// Ends an event whose packets stopped arriving without an end packet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.finish();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current
            .map(|ongoing| ongoing.last_seen + self.end_timeout)
    }

    /// The next recognised digit, oldest first.
    pub fn poll_digit(&mut self) -> Option<DtmfDigit> {
        self.ready.pop_front()
    }

    fn finish(&mut self) {
        if let Some(ongoing) = self.current.take() {
            self.last_finished = Some(ongoing.timestamp);
            self.ready.push_back(DtmfDigit {
                digit: ongoing.digit,
                duration_ms: u32::from(ongoing.duration) / self.units_per_ms,
                rtp_timestamp: ongoing.timestamp,
            });
        }
    }
}

/// Whether RTP timestamp `a` is after `b`, modulo 2^32.
fn is_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

fn units_per_ms(clock_rate: u32) -> Result<u32, DtmfError> {
    let units = clock_rate / 1000;
    if units == 0 || units * 1000 != clock_rate {
        return Err(DtmfError::InvalidClockRate(clock_rate));
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_layout_matches_rfc_4733() {
        let event = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(event.encode(), [11, 0x8A, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::decode(&event.encode()), Ok(event));
        assert_eq!(
            TelephoneEvent::decode(&[1, 2, 3]),
            Err(DtmfError::TooShort { len: 3 })
        );
    }

    #[test]
    fn all_sixteen_digits_map_both_ways() {
        for (code, digit) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(digit_to_event(digit), Some(code as u8));
            assert_eq!(event_to_digit(code as u8), Some(digit));
        }
        assert_eq!(digit_to_event('b'), Some(13));
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn one_digit_packet_sequence() {
        let sender = DtmfSender::new(DtmfSenderConfig::default()).unwrap();
        let packets = sender.packets("5").unwrap();
        // 100 ms at 20 ms steps: 5 packets, the last repeated 3 times.
        assert_eq!(packets.len(), 7);
        assert!(packets[0].marker && packets[1..].iter().all(|p| !p.marker));
        let durations: Vec<u16> = packets
            .iter()
            .map(|p| TelephoneEvent::decode(&p.payload).unwrap().duration)
            .collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        let ends = packets
            .iter()
            .filter(|p| TelephoneEvent::decode(&p.payload).unwrap().end)
            .count();
        assert_eq!(ends, END_PACKET_COUNT);
        assert!(packets.iter().all(|p| p.timestamp_offset == 0));
        assert_eq!(packets[6].send_offset, Duration::from_millis(120));
    }

    #[test]
    fn receiver_times_out_an_event_without_end() {
        let t0 = Instant::now();
        let mut receiver = DtmfReceiver::new(8000).unwrap();
        let start = TelephoneEvent {
            event: 1,
            end: false,
            volume: 10,
            duration: 160,
        };
        receiver.handle_packet(t0, 1000, &start.encode()).unwrap();
        assert_eq!(receiver.poll_digit(), None);
        let deadline = receiver.poll_timeout().unwrap();
        receiver.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(receiver.poll_digit(), None);
        receiver.handle_timeout(deadline);
        assert_eq!(
            receiver.poll_digit(),
            Some(DtmfDigit {
                digit: '1',
                duration_ms: 20,
                rtp_timestamp: 1000
            })
        );
        assert_eq!(receiver.poll_timeout(), None);
    }

    #[test]
    fn invalid_sender_settings() {
        let too_long = DtmfSenderConfig {
            clock_rate: 48000,
            digit_duration: Duration::from_secs(2),
            ..DtmfSenderConfig::default()
        };
        assert!(matches!(
            DtmfSender::new(too_long),
            Err(DtmfError::InvalidDuration { max_ms: 1365, .. })
        ));
        assert!(DtmfSender::new(DtmfSenderConfig {
            clock_rate: 0,
            ..DtmfSenderConfig::default()
        })
        .is_err());
        let sender = DtmfSender::new(DtmfSenderConfig::default()).unwrap();
        assert_eq!(sender.packets("12x"), Err(DtmfError::UnknownDigit('x')));
    }
}
