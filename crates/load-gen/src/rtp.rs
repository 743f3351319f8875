//! One call's RTP as the generator sees it, sans-IO: the packets it sends
//! (paced by the clock passed in, optionally through a simulated network) and
//! what it measures on the packets that come back.

use std::time::{Duration, Instant};

use media::netsim::{NetSim, NetSimConfig};
use media::rtp_session::{parse_packet, SeqNo, Ssrc};
use media::stats::ReceiveStats;
use rand::Rng;
use serde::Serialize;

use crate::audio::EncodedAudio;

/// The packet interval.
pub const FRAME: Duration = Duration::from_millis(20);
/// Frames sent at once at most when the generator fell behind; older ones are skipped.
const MAX_CATCH_UP: u64 = 10;
/// Echo round-trip samples kept per call.
const MAX_ECHO_SAMPLES: usize = 1024;
/// An echo later than this is not taken for one.
const MAX_ECHO_DELAY: Duration = Duration::from_secs(3);
/// Largest RTP header we write.
pub const HEADER_LEN: usize = 12;
/// Room for one datagram we send: the header and the largest encoded frame.
pub const MAX_DATAGRAM: usize = HEADER_LEN + crate::audio::MAX_PAYLOAD;
/// Bins of the transit-deviation histogram: one per millisecond, the last one
/// for everything above.
pub const DEVIATION_BINS: usize = 1001;

/// A frame handed to the simulated network, sent for real when it "arrives".
#[derive(Debug, Clone, Copy)]
struct InFlight {
    frame: u64,
    seq: u16,
    timestamp: u32,
    marker: bool,
}

/// What a call's media did, when it ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RtpReport {
    /// RTP packets sent to the far end.
    pub sent: u64,
    /// RTP packets received from the far end.
    pub received: u64,
    /// Packets the far end's sequence numbers say are missing.
    pub lost: u64,
    /// `lost` over the expected packets, in percent.
    pub loss_percent: f64,
    /// RFC 3550 interarrival jitter at the end of the call, in milliseconds.
    pub jitter_ms: f64,
    /// The highest RFC 3550 jitter seen during the call, in milliseconds.
    pub jitter_max_ms: f64,
    /// Time from the first packet sent to the first packet received.
    pub first_packet_ms: Option<f64>,
    /// Median round trip of our own audio coming back (an echoing far end).
    pub echo_rtt_ms: Option<f64>,
    /// Echoed frames recognised.
    pub echo_frames: u64,
}

/// How a call's stream is set up.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// Our SSRC (random per call).
    pub ssrc: u32,
    /// The first sequence number (random per call).
    pub seq: u16,
    /// The first RTP timestamp (random per call).
    pub timestamp: u32,
    /// The negotiated payload type.
    pub payload_type: u8,
    /// The RTP clock of what the far end sends.
    pub rx_clock: u32,
    /// A simulated network for what we send, and its seed.
    pub network: Option<(NetSimConfig, u64)>,
}

impl StreamParams {
    /// Random SSRC, sequence number and timestamp (RFC 3550 5.1).
    pub fn random(payload_type: u8, rx_clock: u32, network: Option<(NetSimConfig, u64)>) -> Self {
        let mut rng = rand::thread_rng();
        StreamParams {
            ssrc: rng.gen(),
            seq: rng.gen(),
            timestamp: rng.gen(),
            payload_type,
            rx_clock,
            network,
        }
    }
}

/// The RTP state of one call.
#[derive(Debug)]
pub struct RtpStream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    started: Instant,
    frames_due: u64,
    sent: u64,
    rx: ReceiveStats,
    rx_clock: u32,
    received: u64,
    first_received: Option<Instant>,
    jitter_max_ms: f64,
    last_transit: Option<f64>,
    echo_us: Vec<u32>,
    echo_frames: u64,
    netsim: Option<NetSim<InFlight>>,
}

impl RtpStream {
    /// A stream whose first frame is due at `started`.
    pub fn new(started: Instant, params: StreamParams) -> RtpStream {
        let StreamParams {
            ssrc,
            seq,
            timestamp,
            payload_type,
            rx_clock,
            network,
        } = params;
        RtpStream {
            ssrc,
            seq,
            timestamp,
            payload_type,
            started,
            frames_due: 0,
            sent: 0,
            rx: ReceiveStats::new(),
            rx_clock,
            received: 0,
            first_received: None,
            jitter_max_ms: 0.0,
            last_transit: None,
            echo_us: Vec::new(),
            echo_frames: 0,
            netsim: network.and_then(|(config, seed)| NetSim::new(config, seed).ok()),
        }
    }

    /// Our SSRC (how echoed packets are told apart from the far end's own).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sends every frame due by `now` (and, through a simulated network,
    /// every frame whose arrival time has come): `send` gets each datagram, built in
    /// `buf` (at least [`MAX_DATAGRAM`] bytes, reused across calls and ticks).
    pub fn on_tick(
        &mut self,
        now: Instant,
        audio: &EncodedAudio,
        buf: &mut [u8],
        mut send: impl FnMut(&[u8]),
    ) {
        let due = if now < self.started {
            0
        } else {
            (now - self.started).as_micros() as u64 / FRAME.as_micros() as u64 + 1
        };
        if due > self.frames_due + MAX_CATCH_UP {
            // Fell far behind (the process was starved): skip the old frames,
            // keeping the RTP clock with the wall clock.
            let skipped = due - MAX_CATCH_UP - self.frames_due;
            self.timestamp = self
                .timestamp
                .wrapping_add((skipped as u32).wrapping_mul(audio.timestamp_step()));
            self.frames_due += skipped;
        }
        while self.frames_due < due {
            let frame = self.frames_due;
            let packet = InFlight {
                frame,
                seq: self.seq,
                timestamp: self.timestamp,
                marker: frame == 0,
            };
            self.frames_due += 1;
            self.seq = self.seq.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(audio.timestamp_step());
            match self.netsim.as_mut() {
                Some(sim) => {
                    sim.send(self.started + FRAME * frame as u32, packet);
                }
                None => {
                    let len = self.write(&packet, audio, buf);
                    self.sent += 1;
                    send(&buf[..len]);
                }
            }
        }
        while let Some(arrival) = self.netsim.as_mut().and_then(|sim| sim.poll_arrival(now)) {
            let len = self.write(&arrival.packet, audio, buf);
            self.sent += 1;
            send(&buf[..len]);
        }
    }

    /// When [`on_tick`](Self::on_tick) has more to send: the next frame, or a
    /// packet of the simulated network.
    pub fn poll_timeout(&self) -> Instant {
        let next_frame = self.started + FRAME * self.frames_due as u32;
        match self.netsim.as_ref().and_then(NetSim::poll_timeout) {
            Some(at) => at.min(next_frame),
            None => next_frame,
        }
    }

    fn write(&self, packet: &InFlight, audio: &EncodedAudio, out: &mut [u8]) -> usize {
        let payload = audio.payload(packet.frame);
        out[0] = 0x80;
        out[1] = self.payload_type | if packet.marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&packet.seq.to_be_bytes());
        out[4..8].copy_from_slice(&packet.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        HEADER_LEN + payload.len()
    }

    /// One datagram from the far end, at `now`. `deviations` is the run's
    /// transit-deviation histogram (1 ms bins). Non-RTP datagrams are ignored.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        bytes: &[u8],
        audio: &EncodedAudio,
        deviations: &mut [u64],
    ) {
        let Ok(packet) = parse_packet(bytes) else {
            return;
        };
        self.received += 1;
        self.first_received.get_or_insert(now);
        self.rx.on_packet(
            now,
            Ssrc(packet.ssrc.0),
            SeqNo(packet.seq.0),
            packet.timestamp,
            self.rx_clock,
            true,
        );
        self.jitter_max_ms = self.jitter_max_ms.max(self.rx.jitter_ms());

        // Transit deviation between consecutive packets (RFC 3550 D), in ms.
        let arrival_s = (now - self.started).as_secs_f64();
        let transit = arrival_s - f64::from(packet.timestamp) / f64::from(self.rx_clock);
        if let Some(last) = self.last_transit {
            let deviation_ms = ((transit - last).abs() * 1000.0) as usize;
            // A timestamp wrap or jump gives a huge deviation: not jitter.
            if deviation_ms < 60_000 {
                deviations[deviation_ms.min(DEVIATION_BINS - 1)] += 1;
            }
        }
        self.last_transit = Some(transit);

        if let Some(frame) = audio.frame_of(&bytes[packet.payload]) {
            self.on_echo(now, u64::from(frame), audio.frames());
        }
    }

    /// Our frame `frame` (index within one loop of the audio) came back:
    /// the round trip is since its most recent sending.
    fn on_echo(&mut self, now: Instant, frame: u64, loop_frames: u64) {
        if self.frames_due == 0 || frame >= self.frames_due {
            return;
        }
        let last = self.frames_due - 1;
        let sent = frame + (last - frame) / loop_frames * loop_frames;
        let sent_at = self.started + FRAME * sent as u32;
        let Some(rtt) = now.checked_duration_since(sent_at) else {
            return;
        };
        if rtt > MAX_ECHO_DELAY {
            return;
        }
        self.echo_frames += 1;
        if self.echo_us.len() < MAX_ECHO_SAMPLES {
            self.echo_us.push(rtt.as_micros() as u32);
        }
    }

    /// What the stream did so far.
    pub fn report(&self) -> RtpReport {
        let echo_rtt_ms = median(&self.echo_us).map(|us| us / 1000.0);
        RtpReport {
            sent: self.sent,
            received: self.received,
            lost: self.rx.packets_lost(),
            loss_percent: self.rx.loss_percent(),
            jitter_ms: self.rx.jitter_ms(),
            jitter_max_ms: self.jitter_max_ms,
            first_packet_ms: self
                .first_received
                .map(|at| at.saturating_duration_since(self.started).as_secs_f64() * 1000.0),
            echo_rtt_ms,
            echo_frames: self.echo_frames,
        }
    }
}

fn median(samples: &[u32]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    Some(f64::from(sorted[sorted.len() / 2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::LoadCodec;

    fn params(
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        network: Option<(NetSimConfig, u64)>,
    ) -> StreamParams {
        StreamParams {
            ssrc,
            seq,
            timestamp,
            payload_type: 0,
            rx_clock: 8000,
            network,
        }
    }

    fn audio() -> EncodedAudio {
        EncodedAudio::prepare(LoadCodec::Pcmu, None).expect("shipped clips")
    }

    fn collect(stream: &mut RtpStream, now: Instant, audio: &EncodedAudio) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        stream.on_tick(now, audio, &mut [0; MAX_DATAGRAM], |p| out.push(p.to_vec()));
        out
    }

    #[test]
    fn frames_are_paced_by_the_clock_with_continuous_numbers() {
        let audio = audio();
        let t0 = Instant::now();
        let mut stream = RtpStream::new(t0, params(7, 65_534, 1000, None));
        let first = collect(&mut stream, t0, &audio);
        assert_eq!(first.len(), 1, "the first frame goes at once");
        assert_eq!(first[0][1], 0x80, "marker on the first packet, PT 0");
        assert!(collect(&mut stream, t0 + Duration::from_millis(19), &audio).is_empty());
        let next = collect(&mut stream, t0 + Duration::from_millis(60), &audio);
        assert_eq!(next.len(), 3, "frames 1, 2 and 3 are due at 20, 40, 60 ms");
        let seqs: Vec<u16> = next
            .iter()
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        assert_eq!(seqs, vec![65_535, 0, 1], "sequence numbers wrap");
        let ts = u32::from_be_bytes([next[2][4], next[2][5], next[2][6], next[2][7]]);
        assert_eq!(ts, 1000 + 3 * 160);
        assert_eq!(&next[0][12..], audio.payload(1));
        assert_eq!(stream.poll_timeout(), t0 + Duration::from_millis(80));
        assert_eq!(stream.report().sent, 4);
    }

    #[test]
    fn a_starved_generator_skips_old_frames_but_keeps_the_rtp_clock() {
        let audio = audio();
        let t0 = Instant::now();
        let mut stream = RtpStream::new(t0, params(7, 0, 0, None));
        collect(&mut stream, t0, &audio);
        let burst = collect(&mut stream, t0 + Duration::from_secs(1), &audio);
        assert_eq!(burst.len() as u64, MAX_CATCH_UP);
        let last = burst.last().expect("frames");
        let ts = u32::from_be_bytes([last[4], last[5], last[6], last[7]]);
        assert_eq!(
            ts,
            50 * 160,
            "the frame due at 1 s carries the 1 s timestamp"
        );
        let seq = u16::from_be_bytes([last[2], last[3]]);
        assert_eq!(seq, MAX_CATCH_UP as u16, "no gap in sequence numbers");
    }

    fn packet(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn loss_and_jitter_come_from_the_far_ends_numbers() {
        let audio = audio();
        let t0 = Instant::now();
        let mut stream = RtpStream::new(t0, params(7, 0, 0, None));
        let mut hist = vec![0u64; DEVIATION_BINS];
        let silence = [0xffu8; 160];
        for seq in 0u16..100 {
            if seq % 10 == 5 {
                continue; // lost
            }
            // Every other packet 4 ms late.
            let late = if seq % 2 == 1 { 4 } else { 0 };
            let at = t0 + Duration::from_millis(u64::from(seq) * 20 + late);
            stream.on_datagram(
                at,
                &packet(seq, u32::from(seq) * 160, &silence),
                &audio,
                &mut hist,
            );
        }
        let report = stream.report();
        assert_eq!(report.received, 90);
        assert_eq!(report.lost, 10);
        assert!((report.loss_percent - 10.0).abs() < 0.2, "{report:?}");
        assert!(
            report.jitter_ms > 1.0 && report.jitter_ms < 4.0,
            "{report:?}"
        );
        assert_eq!(hist.iter().sum::<u64>(), 89);
        assert!(
            hist[4] > 40,
            "most deviations are the 4 ms offsets: {:?}",
            &hist[..6]
        );
        assert_eq!(
            report.echo_rtt_ms, None,
            "silence is never taken for an echo"
        );
        stream.on_datagram(t0, b"not rtp", &audio, &mut hist);
        assert_eq!(
            stream.report().received,
            90,
            "non-RTP datagrams are ignored"
        );
    }

    #[test]
    fn our_own_audio_coming_back_gives_the_round_trip() {
        let audio = audio();
        let t0 = Instant::now();
        let mut stream = RtpStream::new(t0, params(7, 0, 0, None));
        let mut hist = vec![0u64; DEVIATION_BINS];
        let mut previous: Vec<Vec<u8>> = Vec::new();
        for ms in (0..4000).step_by(20) {
            let now = t0 + Duration::from_millis(ms);
            // The far end echoes what we sent on the previous tick, 20 ms ago.
            for p in previous.drain(..) {
                stream.on_datagram(now, &p, &audio, &mut hist);
            }
            stream.on_tick(now, &audio, &mut [0; MAX_DATAGRAM], |p| {
                previous.push(p.to_vec())
            });
        }
        let report = stream.report();
        assert!(report.echo_frames > 50, "{report:?}");
        let rtt = report.echo_rtt_ms.expect("echo recognised");
        assert!(
            (rtt - 20.0).abs() < 0.5,
            "sent at now-20 ms, back now: {rtt}"
        );
    }

    #[test]
    fn a_simulated_network_drops_and_delays_what_is_sent() {
        let audio = audio();
        let t0 = Instant::now();
        let config = NetSimConfig::lossy();
        let mut stream = RtpStream::new(t0, params(7, 0, 0, Some((config, 42))));
        let mut sent = 0u64;
        let mut now = t0;
        while now < t0 + Duration::from_secs(20) {
            stream.on_tick(now, &audio, &mut [0; MAX_DATAGRAM], |_| sent += 1);
            now = stream.poll_timeout().max(now + Duration::from_micros(100));
        }
        let frames = 20 * 50;
        assert!(
            sent < frames && sent > frames * 8 / 10,
            "sent {sent} of {frames}"
        );
        assert_eq!(stream.report().sent, sent);
    }
}
