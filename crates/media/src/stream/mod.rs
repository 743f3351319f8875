//! A media stream for one call leg: RTP in -> jitter buffer -> decode ->
//! 20 ms PCM frames for the application, and application frames -> encode
//! -> RTP out, both paced by one 20 ms clock.
//!
//! [`MediaStream`] is the sans-IO core. It owns the RTP sender and receiver
//! ([`crate::rtp_session`]), the RTCP session ([`crate::rtcp`]), the jitter
//! buffer ([`crate::jitter`]), the codec pair and resamplers, and the RFC 4733
//! telephone-event sender and receiver. It never reads a clock or touches a
//! socket:
//!
//! - [`MediaStream::handle_datagram`] takes every datagram that arrives for
//!   the stream, with its arrival time and source;
//! - [`MediaStream::tick`] is called every 20 ms: it plays one frame out of
//!   the jitter buffer (decoded, concealed, recovered from Opus FEC, or
//!   silence) into [`MediaStream::frame`], encodes the application's
//!   outgoing frame (or comfort silence, or nothing) into an RTP packet,
//!   sends due telephone-events instead of audio, and writes RTCP reports
//!   when they are due;
//! - [`MediaStream::poll_transmit`] hands out the datagrams to send and
//!   [`MediaStream::poll_event`] the [`MediaEvent`]s (DTMF digits, SSRC
//!   changes, latching, inactivity, RTCP BYE).
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use media::codec::CodecSpec;
//! use media::rtcp::NtpTime;
//! use media::rtp_session::PayloadType;
//! use media::stream::{MediaConfig, MediaStream};
//!
//! let remote: SocketAddr = "127.0.0.1:40000".parse().unwrap();
//! let config = MediaConfig::new(CodecSpec::Pcmu, PayloadType::PCMU, remote);
//! let t0 = Instant::now();
//! let mut stream = MediaStream::new(config, t0, NtpTime(0), &mut rand::thread_rng()).unwrap();
//! let speech = [0i16; 160];
//! for k in 0..5u32 {
//!     let now = t0 + Duration::from_millis(20) * k;
//!     // Datagrams from the socket go to `stream.handle_datagram(now, from, bytes)`.
//!     stream.tick(now, Some(&speech)).unwrap();
//!     let _for_the_app: &[i16] = stream.frame();
//!     while let Some(transmit) = stream.poll_transmit() {
//!         // socket.send_to(transmit.payload, transmit.destination)
//!         assert_eq!(transmit.destination, remote);
//!     }
//! }
//! assert_eq!(stream.stats().stream.packets_sent, 5);
//! ```
//!
//! RTP and RTCP: the stream tells them apart by content (RFC 5761
//! [`is_rtcp`]), so the same call works with RTCP multiplexed on the RTP port
//! and with the classic separate RTCP port (RTP port + 1): the driver feeds
//! datagrams from both sockets into `handle_datagram`. Outgoing RTCP goes to
//! the RTP destination when [`MediaConfig::rtcp_mux`] is set, else to the
//! peer's RTCP port (the address RTCP last came from, or the SDP `a=rtcp`
//! address, or the RTP address + 1), flagged [`Component::Rtcp`] so that the
//! driver sends it from its own RTCP socket.
//!
//! Telephone-events do not enter the jitter buffer: they go straight to the
//! DTMF receiver. A peer that replaces audio by events therefore leaves a
//! gap the jitter buffer conceals (it fades to silence); the RTP loss
//! statistics are not affected.
//!
//! Steady state does not allocate: every buffer (decoded PCM, payload,
//! outgoing datagrams) is allocated once when the stream is built, and
//! received payloads are slices of the caller's datagram. Only rare paths
//! allocate (parsing a received RTCP compound packet, queueing DTMF digits,
//! events).

pub mod arrival;
mod engine;
mod tx;

pub use engine::{
    AudioFrame, EngineConfig, EngineError, FrameHook, MediaEngine, OpenOptions, StreamClosed,
    StreamHandle, MAX_APP_FRAME,
};
pub use tx::{Component, Transmit};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use crate::codec::dtmf::{
    DtmfDigit, DtmfError, DtmfPacket, DtmfReceiver, DtmfSender, DtmfSenderConfig,
};
use crate::codec::{
    AudioDecoder, AudioEncoder, CodecError, CodecSpec, SampleRate, FRAME_MS, MAX_PAYLOAD_BYTES,
};
use crate::jitter::{JitterBuffer, JitterConfig, JitterError, JitterPacket, JitterStats, Playout};
use crate::resample::{ResampleError, Resampler};
use crate::rtcp::{is_rtcp, NtpTime, RtcpConfig, RtcpError, RtcpSession};
use crate::rtp_session::{
    IpNet, PayloadFormat, PayloadType, ReceiverConfig, RtpError, RtpReceiver, RtpSender, Ssrc,
};
use crate::stats::{CodecQuality, StreamStats};

use tx::TxQueue;

/// The frame interval of the stream clock.
pub const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);

/// Errors of the stream module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// An RTP datagram was rejected (malformed, unexpected payload type or
    /// source), or an RTP packet could not be written.
    #[error("RTP: {0}")]
    Rtp(#[from] RtpError),
    /// An RTCP datagram was rejected, or a report could not be written.
    #[error("RTCP: {0}")]
    Rtcp(#[from] RtcpError),
    /// The codec could not be built or failed to encode.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The jitter buffer configuration is invalid.
    #[error("jitter buffer: {0}")]
    Jitter(#[from] JitterError),
    /// The resampler could not be built or failed.
    #[error("resampler: {0}")]
    Resample(#[from] ResampleError),
    /// A telephone-event packet or digit string was rejected.
    #[error("telephone-event: {0}")]
    Dtmf(#[from] DtmfError),
    /// The application's outgoing frame is not 20 ms at the application rate.
    #[error("outgoing frame of {actual} samples, expected {expected}")]
    FrameLength {
        /// Samples in 20 ms at the application rate.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// DTMF was requested but no telephone-event payload type was negotiated.
    #[error("no telephone-event payload type negotiated")]
    NoTelephoneEvent,
    /// The stream was closed.
    #[error("media stream closed")]
    Closed,
}

/// What the stream sends while the application has no outgoing frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAudio {
    /// Encode silence (keeps NAT bindings and peers that expect continuous
    /// RTP happy).
    Silence,
    /// Send nothing; the next packet carries the marker bit and a timestamp
    /// that accounts for the gap.
    Nothing,
}

/// Settings of one [`MediaStream`], mostly from the SDP offer/answer.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Payload type of the audio codec.
    pub payload_type: PayloadType,
    /// The negotiated codec. For Opus, `sample_rate` is replaced by
    /// [`MediaConfig::app_rate`]: libopus encodes and decodes at that rate
    /// directly, so no resampling is needed.
    pub codec: CodecSpec,
    /// Payload type of RFC 4733 telephone-events, at the codec's clock rate.
    pub telephone_event_pt: Option<PayloadType>,
    /// The peer's RTP address from its SDP (until symmetric RTP latches).
    pub remote: SocketAddr,
    /// The peer's RTCP address from SDP `a=rtcp`, when not RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP is multiplexed on the RTP port (RFC 5761, SDP `a=rtcp-mux`).
    pub rtcp_mux: bool,
    /// Rate of the PCM frames exchanged with the application.
    pub app_rate: SampleRate,
    /// The peer's packetization time in ms (SDP `a=ptime`, 20 by default).
    /// Outgoing packets are always 20 ms; incoming packets of any duration
    /// are decoded into a queue that the 20 ms clock plays from.
    pub remote_ptime_ms: u32,
    /// Jitter buffer settings; `clock_rate` and `frame_ms` are set from the
    /// codec and [`MediaConfig::remote_ptime_ms`].
    pub jitter: JitterConfig,
    /// RTCP CNAME.
    pub cname: String,
    /// Mean interval between RTCP reports.
    pub rtcp_interval: Duration,
    /// What to send when the application has no frame.
    pub idle: IdleAudio,
    /// Digit duration, gap and volume of outgoing DTMF; `clock_rate` is set
    /// from the codec.
    pub dtmf: DtmfSenderConfig,
    /// Raise [`MediaEvent::Timeout`] after this long without RTP.
    pub inactivity_timeout: Option<Duration>,
    /// Consecutive packets from a new source before latching onto it.
    pub latch_after_packets: u32,
    /// Re-latch onto a new source after the latched one was silent this long.
    pub relatch_after: Option<Duration>,
    /// Networks besides the IP address of [`MediaConfig::remote`] that the
    /// peer's RTP and RTCP may come from (a trunk's allowed networks); anything
    /// else is dropped and counted in [`MediaStats::foreign_datagrams`].
    pub allowed_networks: Vec<IpNet>,
}

impl MediaConfig {
    /// Defaults for `codec` on `payload_type` towards `remote`: 8 kHz
    /// application audio, separate RTCP port, 5 s RTCP interval, comfort
    /// silence when idle, no DTMF, no inactivity timeout, latch on the first
    /// packet and re-latch after 2 s of silence.
    pub fn new(codec: CodecSpec, payload_type: PayloadType, remote: SocketAddr) -> MediaConfig {
        MediaConfig {
            payload_type,
            codec,
            telephone_event_pt: None,
            remote,
            remote_rtcp: None,
            rtcp_mux: false,
            app_rate: SampleRate::Hz8000,
            remote_ptime_ms: FRAME_MS,
            jitter: JitterConfig::with_clock_rate(codec.clock_rate()),
            cname: String::from("dialcore"),
            rtcp_interval: Duration::from_secs(5),
            idle: IdleAudio::Silence,
            dtmf: DtmfSenderConfig::default(),
            inactivity_timeout: None,
            latch_after_packets: 1,
            relatch_after: Some(Duration::from_secs(2)),
            allowed_networks: Vec::new(),
        }
    }
}

/// What happened on the stream, for the application or the service.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// A DTMF digit was received as RFC 4733 telephone-events.
    Dtmf(DtmfDigit),
    /// The peer's SSRC changed (the jitter buffer restarted).
    SsrcChanged {
        /// The previous SSRC.
        old: Ssrc,
        /// The new SSRC.
        new: Ssrc,
    },
    /// Outgoing RTP now goes to the peer's real source address.
    RemoteLatched(SocketAddr),
    /// No RTP for [`MediaConfig::inactivity_timeout`].
    Timeout {
        /// How long the stream has been silent.
        inactive_for: Duration,
    },
    /// The peer sent RTCP BYE.
    RemoteBye,
}

/// How the last inbound frame was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Decoded from a received packet.
    Voice,
    /// Recovered from the Opus in-band FEC of the next packet.
    Recovered,
    /// Packet loss concealment.
    Concealed,
    /// Nothing to play: before the first packet, silence gaps, long outages.
    Silence,
}

/// Statistics of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaStats {
    /// Codec, packets, loss, jitter, RTT and the E-model MOS.
    pub stream: StreamStats,
    /// Audio made up by concealment or FEC, in milliseconds.
    pub concealed_ms: u64,
    /// Frames of [`MediaStats::concealed_ms`] recovered from Opus FEC.
    pub recovered_frames: u64,
    /// Jitter buffer counters and delays.
    pub jitter: JitterStats,
    /// Packets the decoder rejected (concealed instead).
    pub decode_errors: u64,
    /// Datagrams rejected as malformed, unexpected or from a wrong source.
    pub rejected_datagrams: u64,
    /// Of [`MediaStats::rejected_datagrams`], those from an address that is
    /// neither the signalled peer nor in [`MediaConfig::allowed_networks`].
    pub foreign_datagrams: u64,
    /// DTMF digits queued for sending.
    pub dtmf_sent: u64,
    /// DTMF digits received.
    pub dtmf_received: u64,
    /// Outgoing datagrams dropped because the driver did not drain them.
    pub transmit_dropped: u64,
}

/// The sans-IO media stream of one call leg. See the module docs.
pub struct MediaStream {
    config: MediaConfig,
    sender: RtpSender,
    receiver: RtpReceiver,
    rtcp: RtcpSession,
    jitter: JitterBuffer,
    encoder: Box<dyn AudioEncoder + Send>,
    decoder: Box<dyn AudioDecoder + Send>,
    fec_capable: bool,
    quality: CodecQuality,
    dtmf_sender: DtmfSender,
    dtmf_receiver: Option<DtmfReceiver>,
    dtmf_queue: VecDeque<(Instant, DtmfPacket)>,
    resample_in: Option<Resampler>,
    resample_out: Option<Resampler>,
    decoded: Vec<i16>,
    queue: Vec<i16>,
    queued: usize,
    queued_kind: FrameKind,
    packet_samples: usize,
    frame: Vec<i16>,
    /// The frame [`MediaStream::tick_with`]'s application wrote, and whether it was sent.
    reply: Vec<i16>,
    reply_sent: bool,
    silence: Vec<i16>,
    codec_frame: Vec<i16>,
    payload: Vec<u8>,
    tx: TxQueue,
    events: VecDeque<MediaEvent>,
    ntp_anchor: (Instant, NtpTime),
    created_at: Instant,
    last_tick: Option<Instant>,
    next_tick: Instant,
    frame_step: u32,
    pending_samples: u32,
    talking: bool,
    frame_kind: FrameKind,
    remote_ssrc: Option<Ssrc>,
    latched_reported: bool,
    timeout_reported: bool,
    bye_reported: bool,
    rtcp_source: Option<SocketAddr>,
    counters: Counters,
    closed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    concealed_samples: u64,
    recovered_frames: u64,
    decode_errors: u64,
    rejected: u64,
    dtmf_sent: u64,
    dtmf_received: u64,
}

/// The rank of a frame kind when packets of several kinds make one frame.
fn rank(kind: FrameKind) -> u8 {
    match kind {
        FrameKind::Silence => 0,
        FrameKind::Voice => 1,
        FrameKind::Recovered => 2,
        FrameKind::Concealed => 3,
    }
}

/// The payload formats a stream of `config` accepts: its codec and, when
/// negotiated, telephone-event, both on the codec's RTP clock.
fn payload_formats(config: &MediaConfig, clock_rate: u32) -> Vec<PayloadFormat> {
    let mut formats = vec![PayloadFormat {
        payload_type: config.payload_type,
        clock_rate,
        telephone_event: false,
    }];
    if let Some(payload_type) = config.telephone_event_pt {
        formats.push(PayloadFormat {
            payload_type,
            clock_rate,
            telephone_event: true,
        });
    }
    formats
}

/// Longest packet the decoder is given room for: 120 ms.
const MAX_PACKET_MS: usize = 120;
/// Most frame periods one tick catches up after a stall.
const MAX_CATCH_UP: u32 = 50;
/// Outgoing datagrams the stream buffers between two drains.
const TX_SLOTS: usize = 4;

impl MediaStream {
    /// Builds a stream at `now`; `ntp` is the wall clock at `now` (for RTCP
    /// sender reports), `rng` draws the SSRC, initial sequence number and
    /// timestamp and the RTCP schedule.
    pub fn new<R: Rng + ?Sized>(
        mut config: MediaConfig,
        now: Instant,
        ntp: NtpTime,
        rng: &mut R,
    ) -> Result<MediaStream, StreamError> {
        if let CodecSpec::Opus(opus) = &mut config.codec {
            opus.sample_rate = config.app_rate;
        }
        let codec = config.codec;
        let clock_rate = codec.clock_rate();
        let encoder = codec.make_encoder()?;
        let decoder = codec.make_decoder()?;
        let codec_rate = codec.sample_rate();
        let resamplers = if codec_rate == config.app_rate {
            (None, None)
        } else {
            (
                Some(Resampler::new(codec_rate, config.app_rate)?),
                Some(Resampler::new(config.app_rate, codec_rate)?),
            )
        };
        config.jitter.clock_rate = clock_rate;
        config.jitter.frame_ms = config.remote_ptime_ms;
        let jitter = JitterBuffer::new(config.jitter.clone())?;
        config.dtmf.clock_rate = clock_rate;
        let dtmf_sender = DtmfSender::new(config.dtmf)?;
        let formats = payload_formats(&config, clock_rate);
        let dtmf_receiver = match config.telephone_event_pt {
            Some(_) => Some(DtmfReceiver::new(clock_rate)?),
            None => None,
        };
        let receiver = RtpReceiver::new(
            ReceiverConfig {
                formats,
                latch_after_packets: config.latch_after_packets,
                relatch_after: config.relatch_after,
                allowed_networks: config.allowed_networks.clone(),
            },
            config.remote,
        );
        let sender = RtpSender::new(clock_rate, rng);
        let rtcp = RtcpSession::new(
            RtcpConfig {
                cname: config.cname.clone(),
                interval: config.rtcp_interval,
            },
            now,
            rng,
        );
        let app_frame = config.app_rate.frame_samples();
        let codec_frame = codec_rate.frame_samples();
        // Room for the longest packet plus one more frame of concealment.
        let decoded_len = codec_rate.hz() as usize * MAX_PACKET_MS / 1000 + codec_frame;
        let quality = CodecQuality::from_encoding_name(codec.sdp_format().encoding_name)
            .unwrap_or(CodecQuality::PCMU);
        Ok(MediaStream {
            fec_capable: matches!(codec, CodecSpec::Opus(_)),
            quality,
            frame_step: encoder.rtp_timestamp_step(),
            sender,
            receiver,
            rtcp,
            jitter,
            encoder,
            decoder,
            dtmf_sender,
            dtmf_receiver,
            dtmf_queue: VecDeque::new(),
            resample_in: resamplers.0,
            resample_out: resamplers.1,
            decoded: vec![0; decoded_len],
            queue: vec![0; decoded_len + codec_frame],
            queued: 0,
            queued_kind: FrameKind::Silence,
            packet_samples: codec_rate.hz() as usize * config.remote_ptime_ms as usize / 1000,
            frame: vec![0; app_frame],
            reply: vec![0; app_frame],
            reply_sent: false,
            silence: vec![0; app_frame],
            codec_frame: vec![0; codec_frame],
            payload: vec![0; MAX_PAYLOAD_BYTES],
            tx: TxQueue::new(TX_SLOTS, MAX_PAYLOAD_BYTES + 64),
            events: VecDeque::with_capacity(8),
            ntp_anchor: (now, ntp),
            created_at: now,
            last_tick: None,
            next_tick: now,
            pending_samples: 0,
            talking: false,
            frame_kind: FrameKind::Silence,
            remote_ssrc: None,
            latched_reported: false,
            timeout_reported: false,
            bye_reported: false,
            rtcp_source: None,
            counters: Counters::default(),
            closed: false,
            config,
        })
    }

    /// Changes the stream's codec, payload types, packetization, rate or
    /// peer in place (the answer to an offer picked another codec than the
    /// stream was opened with): the same sockets, SSRC, sequence numbers,
    /// RTCP session and receive statistics go on; the codec state, jitter
    /// buffer, resamplers and queued audio start afresh for `config`.
    pub fn reconfigure<R: Rng + ?Sized>(
        &mut self,
        config: MediaConfig,
        now: Instant,
        rng: &mut R,
    ) -> Result<(), StreamError> {
        let (anchor, ntp) = self.ntp_anchor;
        let mut fresh = MediaStream::new(config, anchor, ntp, rng)?;
        let clock_rate = fresh.sender.clock_rate();
        fresh.sender = self.sender.with_clock_rate(clock_rate);
        let formats = payload_formats(&fresh.config, clock_rate);
        let old = std::mem::replace(self, fresh);
        self.rtcp = old.rtcp;
        self.receiver = old.receiver;
        self.receiver.set_formats(formats);
        self.receiver.set_sdp_addr(self.config.remote);
        self.counters = old.counters;
        self.created_at = old.created_at;
        self.last_tick = old.last_tick;
        self.next_tick = old.next_tick.max(now);
        self.remote_ssrc = old.remote_ssrc;
        self.latched_reported = old.latched_reported;
        self.rtcp_source = old.rtcp_source;
        Ok(())
    }

    // Getters.

    /// The configuration in use (codec as actually built).
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.sender.ssrc()
    }

    /// Where RTP goes: the latched source of the peer, or its SDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.receiver.remote_addr()
    }

    /// The inbound frame played by the last [`tick`](Self::tick): 20 ms at
    /// the application rate (silence before the first tick).
    pub fn frame(&self) -> &[i16] {
        &self.frame
    }

    /// How the last inbound frame was made.
    pub fn frame_kind(&self) -> FrameKind {
        self.frame_kind
    }

    /// When the last RTP packet was accepted (for an inactivity timeout).
    pub fn last_activity(&self) -> Option<Instant> {
        self.receiver.last_activity()
    }

    /// Round-trip time measured through RTCP, once known.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtcp.rtt()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Statistics so far. The MOS counts half the RTT, the jitter buffer's
    /// mean delay and one frame of packetization as one-way delay.
    pub fn stats(&self) -> MediaStats {
        let jitter = self.jitter.stats();
        let resampler_delay = self
            .resample_in
            .as_ref()
            .map_or(Duration::ZERO, Resampler::delay);
        let local_delay = jitter.mean_delay + FRAME + resampler_delay;
        let stream = StreamStats::compute(
            self.quality,
            self.sender.packets_sent(),
            self.receiver.stats(),
            self.rtcp.rtt(),
            local_delay,
        );
        MediaStats {
            stream,
            concealed_ms: self.counters.concealed_samples * 1000
                / u64::from(self.decoder.sample_rate().hz()),
            recovered_frames: self.counters.recovered_frames,
            jitter,
            decode_errors: self.counters.decode_errors,
            rejected_datagrams: self.counters.rejected,
            foreign_datagrams: self.receiver.foreign_datagrams(),
            dtmf_sent: self.counters.dtmf_sent,
            dtmf_received: self.counters.dtmf_received,
            transmit_dropped: self.tx.dropped(),
        }
    }

    // Input.

    /// Handles one datagram received at `now` from `from`: RTCP (by RFC 5761
    /// content) or RTP. Hostile or unexpected datagrams give an error and
    /// leave the stream as it was.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: Bytes,
    ) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        let result = if is_rtcp(&datagram) {
            self.handle_rtcp(now, from, &datagram)
        } else {
            self.handle_rtp(now, from, datagram)
        };
        if result.is_err() {
            self.counters.rejected += 1;
        }
        result
    }

    /// One 20 ms step of the stream clock at `now`: plays one inbound frame
    /// into [`frame`](Self::frame) and returns its kind, sends `outgoing`
    /// (20 ms at the application rate; `None` when the application has
    /// nothing) or due DTMF, and writes due RTCP. Call it every 20 ms; after
    /// a stall the RTP timestamp accounts for the frames that were skipped.
    pub fn tick(
        &mut self,
        now: Instant,
        outgoing: Option<&[i16]>,
    ) -> Result<FrameKind, StreamError> {
        if let Some(pcm) = outgoing {
            if pcm.len() != self.frame.len() {
                return Err(StreamError::FrameLength {
                    expected: self.frame.len(),
                    actual: pcm.len(),
                });
            }
        }
        self.begin_tick(now)?;
        self.frame_kind = self.play_inbound(now)?;
        self.send_outbound(now, outgoing)?;
        self.end_tick(now)?;
        Ok(self.frame_kind)
    }

    /// [`tick`](Self::tick) for an application that answers the inbound frame in the same
    /// tick: `reply` gets the frame just decoded (and how it was made) and writes the frame
    /// to send into its third argument, returning false to send nothing. So audio ready now
    /// leaves now, not one frame period later.
    pub fn tick_with(
        &mut self,
        now: Instant,
        reply: impl FnOnce(&[i16], FrameKind, &mut [i16]) -> bool,
    ) -> Result<FrameKind, StreamError> {
        self.begin_tick(now)?;
        self.frame_kind = self.play_inbound(now)?;
        let mut out = std::mem::take(&mut self.reply);
        let send = reply(&self.frame, self.frame_kind, &mut out);
        let sent = self.send_outbound(now, send.then_some(&out[..]));
        self.reply = out;
        self.reply_sent = send;
        sent?;
        self.end_tick(now)?;
        Ok(self.frame_kind)
    }

    /// The frame the last [`tick_with`](Self::tick_with) sent, if it sent one.
    pub fn reply(&self) -> Option<&[i16]> {
        self.reply_sent.then_some(&self.reply[..])
    }

    fn begin_tick(&mut self, now: Instant) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        let periods = match self.last_tick {
            Some(last) => {
                let elapsed = now.saturating_duration_since(last) + FRAME / 2;
                let periods = elapsed.as_micros() / FRAME.as_micros();
                u32::try_from(periods)
                    .unwrap_or(u32::MAX)
                    .clamp(1, MAX_CATCH_UP)
            }
            None => 1,
        };
        self.last_tick = Some(now);
        self.next_tick = now + FRAME;
        self.pending_samples = self
            .pending_samples
            .wrapping_add(self.frame_step.wrapping_mul(periods));
        self.poll_dtmf_in(now);
        Ok(())
    }

    fn end_tick(&mut self, now: Instant) -> Result<(), StreamError> {
        self.send_rtcp(now)?;
        self.check_inactivity(now);
        Ok(())
    }

    // Commands.

    /// Queues `digits` (0-9, `*`, `#`, A-D) as RFC 4733 events, sent from
    /// the next due tick on in place of audio; digits queued while others
    /// are being sent follow them after the configured gap.
    pub fn send_dtmf(&mut self, now: Instant, digits: &str) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        if self.config.telephone_event_pt.is_none() {
            return Err(StreamError::NoTelephoneEvent);
        }
        let packets = self.dtmf_sender.packets(digits)?;
        let start = match self.dtmf_queue.back() {
            Some((last, _)) => (*last + self.config.dtmf.gap).max(now),
            None => now,
        };
        for packet in packets {
            self.dtmf_queue
                .push_back((start + packet.send_offset, packet));
        }
        self.counters.dtmf_sent += digits.chars().count() as u64;
        Ok(())
    }

    /// A new remote address from a re-INVITE: RTP goes there and latches
    /// afresh.
    pub fn set_remote(&mut self, remote: SocketAddr, remote_rtcp: Option<SocketAddr>) {
        self.config.remote = remote;
        self.config.remote_rtcp = remote_rtcp;
        self.receiver.set_sdp_addr(remote);
        self.rtcp_source = None;
        self.latched_reported = false;
    }

    /// Ends the stream at `now`: queues a final RTCP report with BYE and
    /// returns the final statistics. Later input is refused with
    /// [`StreamError::Closed`]; queued datagrams can still be drained.
    pub fn close(&mut self, now: Instant) -> Result<MediaStats, StreamError> {
        if !self.closed {
            self.closed = true;
            let ntp = self.ntp_at(now);
            let destination = self.rtcp_destination();
            let buffer = self.tx.next_buffer();
            let len = self.rtcp.write_bye(
                now,
                ntp,
                &self.sender,
                self.receiver.stats_mut(),
                None,
                buffer,
            )?;
            self.tx.commit(len, destination, self.rtcp_component());
        }
        Ok(self.stats())
    }

    // Output.

    /// The next datagram to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        self.tx.pop()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// When [`tick`](Self::tick) is next due; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.closed).then_some(self.next_tick)
    }
}

// Helpers.
impl MediaStream {
    fn handle_rtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: Bytes,
    ) -> Result<(), StreamError> {
        let received = self.receiver.handle_packet(now, from, datagram)?;
        self.timeout_reported = false;
        if !self.latched_reported && self.receiver.is_latched() {
            self.latched_reported = true;
            self.events
                .push_back(MediaEvent::RemoteLatched(self.receiver.remote_addr()));
        }
        if let Some(old) = self.remote_ssrc {
            if old != received.ssrc {
                self.events.push_back(MediaEvent::SsrcChanged {
                    old,
                    new: received.ssrc,
                });
            }
        }
        self.remote_ssrc = Some(received.ssrc);
        if received.format.telephone_event {
            if let Some(dtmf) = &mut self.dtmf_receiver {
                dtmf.handle_packet(now, received.timestamp, &received.payload)?;
            }
            self.drain_digits();
            return Ok(());
        }
        self.jitter.push(
            now,
            JitterPacket {
                ssrc: received.ssrc.0,
                seq: received.seq.0,
                timestamp: received.timestamp,
                marker: received.marker,
                payload: received.payload,
            },
        );
        Ok(())
    }

    fn handle_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), StreamError> {
        if !self.receiver.is_allowed_source(from.ip()) {
            // A forged RTCP BYE must not end the call.
            return Err(self.receiver.reject_foreign(from).into());
        }
        let ntp = self.ntp_at(now);
        self.rtcp
            .handle_packet(now, ntp, self.sender.ssrc(), datagram)?;
        if !self.config.rtcp_mux && from.ip() == self.receiver.remote_addr().ip() {
            // Symmetric RTCP: answer where the peer's reports come from.
            self.rtcp_source = Some(from);
        }
        if self.rtcp.bye_received() && !self.bye_reported {
            self.bye_reported = true;
            self.events.push_back(MediaEvent::RemoteBye);
        }
        Ok(())
    }

    fn poll_dtmf_in(&mut self, now: Instant) {
        if let Some(dtmf) = &mut self.dtmf_receiver {
            dtmf.handle_timeout(now);
        }
        self.drain_digits();
    }

    fn drain_digits(&mut self) {
        let Some(dtmf) = &mut self.dtmf_receiver else {
            return;
        };
        while let Some(digit) = dtmf.poll_digit() {
            self.counters.dtmf_received += 1;
            self.events.push_back(MediaEvent::Dtmf(digit));
        }
    }

    /// Fills `self.frame` at the application rate from the decoded-PCM
    /// queue, popping and decoding packets while it holds less than 20 ms
    /// (once per tick for 20 ms packets; every 30 ms on average for 30 ms
    /// packets, and so on).
    fn play_inbound(&mut self, now: Instant) -> Result<FrameKind, StreamError> {
        let frame = self.codec_frame.len();
        // Samples left over from the previous packet keep its kind.
        let mut kind = if self.queued > 0 {
            self.queued_kind
        } else {
            FrameKind::Silence
        };
        while self.queued < frame {
            let (packet_kind, written) = self.pop_packet(now);
            let end = (self.queued + written).min(self.queue.len());
            let count = end - self.queued;
            self.queue[self.queued..end].copy_from_slice(&self.decoded[..count]);
            self.queued = end;
            self.queued_kind = packet_kind;
            if rank(packet_kind) > rank(kind) {
                kind = packet_kind;
            }
        }
        let codec_pcm = &self.queue[..frame];
        match &mut self.resample_in {
            Some(resampler) => {
                resampler.process(codec_pcm, &mut self.frame)?;
            }
            None => self.frame.copy_from_slice(codec_pcm),
        }
        self.queue.copy_within(frame..self.queued, 0);
        self.queued -= frame;
        Ok(kind)
    }

    /// Pops one packet's worth of playout from the jitter buffer and decodes
    /// it into `self.decoded`; returns how it was made and its length.
    fn pop_packet(&mut self, now: Instant) -> (FrameKind, usize) {
        let packet = self.packet_samples;
        let (kind, written) = match self.jitter.pop(now) {
            Playout::Frame { payload, .. } => {
                match self.decoder.decode(&payload, &mut self.decoded) {
                    Ok(written) if written > 0 => (FrameKind::Voice, written),
                    Ok(_) | Err(_) => {
                        tracing::debug!(len = payload.len(), "undecodable payload concealed");
                        self.counters.decode_errors += 1;
                        (FrameKind::Concealed, self.conceal(packet))
                    }
                }
            }
            Playout::Conceal { fec: Some(next) } if self.fec_capable => {
                match self.decoder.decode_fec(&next, &mut self.decoded) {
                    Ok(written) if written > 0 => (FrameKind::Recovered, written),
                    Ok(_) | Err(_) => (FrameKind::Concealed, self.conceal(packet)),
                }
            }
            Playout::Conceal { .. } => (FrameKind::Concealed, self.conceal(packet)),
            Playout::Silence => {
                self.decoded[..packet].fill(0);
                (FrameKind::Silence, packet)
            }
        };
        match kind {
            FrameKind::Recovered => {
                self.counters.recovered_frames += 1;
                self.counters.concealed_samples += written as u64;
            }
            FrameKind::Concealed => self.counters.concealed_samples += written as u64,
            FrameKind::Voice | FrameKind::Silence => {}
        }
        (kind, written)
    }

    /// Runs the decoder's concealment into `self.decoded` until `samples`
    /// are written (silence if the decoder fails).
    fn conceal(&mut self, samples: usize) -> usize {
        let mut written = 0;
        while written < samples {
            match self.decoder.conceal(&mut self.decoded[written..]) {
                Ok(count) if count > 0 => written += count,
                Ok(_) | Err(_) => {
                    self.decoded[written..samples].fill(0);
                    written = samples;
                }
            }
        }
        written
    }

    fn send_outbound(&mut self, now: Instant, outgoing: Option<&[i16]>) -> Result<(), StreamError> {
        let destination = self.receiver.remote_addr();
        let tolerance = FRAME / 2;
        if let Some(&(due, packet)) = self.dtmf_queue.front() {
            if due <= now + tolerance {
                self.dtmf_queue.pop_front();
                let pt = self
                    .config
                    .telephone_event_pt
                    .expect("DTMF is only queued with a telephone-event payload type");
                let buffer = self.tx.next_buffer();
                let len = self.sender.build_event(
                    now,
                    &packet.payload,
                    self.pending_samples,
                    packet.marker,
                    pt,
                    buffer,
                )?;
                self.tx.commit(len, destination, Component::Rtp);
                self.pending_samples = 0;
                self.talking = false;
                return Ok(());
            }
        }
        let pcm = match (outgoing, self.config.idle) {
            (Some(pcm), _) => pcm,
            (None, IdleAudio::Silence) => &self.silence[..],
            (None, IdleAudio::Nothing) => {
                self.talking = false;
                return Ok(());
            }
        };
        let codec_pcm = match &mut self.resample_out {
            Some(resampler) => {
                resampler.process(pcm, &mut self.codec_frame)?;
                &self.codec_frame[..]
            }
            None => pcm,
        };
        let len = self.encoder.encode(codec_pcm, &mut self.payload)?;
        if len == 0 {
            // Opus DTX: nothing to send, the timestamp keeps running.
            self.talking = false;
            return Ok(());
        }
        let buffer = self.tx.next_buffer();
        let written = self.sender.build(
            now,
            &self.payload[..len],
            self.pending_samples,
            !self.talking,
            self.config.payload_type,
            buffer,
        )?;
        self.tx.commit(written, destination, Component::Rtp);
        self.pending_samples = 0;
        self.talking = true;
        Ok(())
    }

    fn send_rtcp(&mut self, now: Instant) -> Result<(), StreamError> {
        match self.rtcp.poll_timeout() {
            Some(due) if now >= due => {}
            _ => return Ok(()),
        }
        let ntp = self.ntp_at(now);
        let destination = self.rtcp_destination();
        let component = self.rtcp_component();
        let buffer = self.tx.next_buffer();
        if let Some(len) =
            self.rtcp
                .poll_transmit(now, ntp, &self.sender, self.receiver.stats_mut(), buffer)?
        {
            self.tx.commit(len, destination, component);
        }
        Ok(())
    }

    fn check_inactivity(&mut self, now: Instant) {
        let Some(limit) = self.config.inactivity_timeout else {
            return;
        };
        let since = self.receiver.last_activity().unwrap_or(self.created_at);
        let inactive_for = now.saturating_duration_since(since);
        if inactive_for >= limit && !self.timeout_reported {
            self.timeout_reported = true;
            self.events.push_back(MediaEvent::Timeout { inactive_for });
        }
    }

    fn rtcp_component(&self) -> Component {
        if self.config.rtcp_mux {
            Component::Rtp
        } else {
            Component::Rtcp
        }
    }

    fn rtcp_destination(&self) -> SocketAddr {
        let rtp = self.receiver.remote_addr();
        if self.config.rtcp_mux {
            return rtp;
        }
        if let Some(source) = self.rtcp_source {
            return source;
        }
        if let Some(sdp) = self.config.remote_rtcp {
            if !self.receiver.is_latched() {
                return sdp;
            }
        }
        SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
    }

    /// The wall clock at `now`, from the anchor given at construction.
    fn ntp_at(&self, now: Instant) -> NtpTime {
        let (anchor, ntp) = self.ntp_anchor;
        let elapsed = now.saturating_duration_since(anchor);
        let fraction = (u64::from(elapsed.subsec_nanos()) << 32) / 1_000_000_000;
        let delta = (elapsed.as_secs() << 32).wrapping_add(fraction);
        NtpTime(ntp.0.wrapping_add(delta))
    }
}

impl std::fmt::Debug for MediaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStream")
            .field("ssrc", &self.sender.ssrc())
            .field("codec", &self.config.codec)
            .field("remote", &self.receiver.remote_addr())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pair(codec: CodecSpec, pt: PayloadType) -> (MediaStream, MediaStream, Instant) {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut a = MediaConfig::new(codec, pt, addr(2000));
        a.telephone_event_pt = PayloadType::new(101);
        let mut b = a.clone();
        b.remote = addr(1000);
        let a = MediaStream::new(a, t0, NtpTime(1 << 40), &mut rng).unwrap();
        let b = MediaStream::new(b, t0, NtpTime(1 << 40), &mut rng).unwrap();
        (a, b, t0)
    }

    /// Moves every queued datagram of `from` (whose RTP address is
    /// `from_addr`, RTCP one port above) into `to` at `now`; returns the
    /// RTCP datagrams' destinations.
    fn deliver(
        from: &mut MediaStream,
        from_addr: SocketAddr,
        to: &mut MediaStream,
        now: Instant,
    ) -> Vec<SocketAddr> {
        let mut datagrams = Vec::new();
        let mut rtcp = Vec::new();
        while let Some(transmit) = from.poll_transmit() {
            let source = match transmit.component {
                Component::Rtp => from_addr,
                Component::Rtcp => {
                    rtcp.push(transmit.destination);
                    SocketAddr::new(from_addr.ip(), from_addr.port() + 1)
                }
            };
            datagrams.push((source, Bytes::copy_from_slice(transmit.payload)));
        }
        for (source, datagram) in datagrams {
            to.handle_datagram(now, source, datagram).unwrap();
        }
        rtcp
    }

    #[test]
    fn silence_is_sent_when_idle_and_marker_only_first() {
        let (mut a, _, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        let mut markers = Vec::new();
        for k in 0..3u32 {
            a.tick(t0 + FRAME * k, None).unwrap();
            let transmit = a.poll_transmit().unwrap();
            assert_eq!(transmit.payload.len(), 12 + 160);
            assert_eq!(transmit.component, Component::Rtp);
            markers.push(transmit.payload[1] & 0x80 != 0);
        }
        assert_eq!(markers, [true, false, false]);
    }

    #[test]
    fn idle_nothing_leaves_a_timestamp_gap() {
        let (mut a, _, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        a.config.idle = IdleAudio::Nothing;
        let speech = [1000i16; 160];
        a.tick(t0, Some(&speech)).unwrap();
        let first = a.poll_transmit().map(|t| t.payload.to_vec()).unwrap();
        a.tick(t0 + FRAME, None).unwrap();
        assert!(a.poll_transmit().is_none());
        a.tick(t0 + FRAME * 2, Some(&speech)).unwrap();
        let second = a.poll_transmit().map(|t| t.payload.to_vec()).unwrap();
        let ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(ts(&second).wrapping_sub(ts(&first)), 320);
        assert!(second[1] & 0x80 != 0, "a new talkspurt is marked");
    }

    #[test]
    fn tick_with_answers_the_inbound_frame_in_the_same_tick() {
        let (mut a, mut b, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        b.config.idle = IdleAudio::Nothing;
        let speech: Vec<i16> = (0..160)
            .map(|i| if i % 20 < 10 { 6000 } else { -6000 })
            .collect();
        let mut heard_at = None;
        for k in 0..20u32 {
            let now = t0 + FRAME * k;
            a.tick(now, Some(&speech)).unwrap();
            deliver(&mut a, addr(1000), &mut b, now);
            // b echoes what it decodes, in the tick it decodes it.
            let mut seen = false;
            b.tick_with(now, |inbound, kind, out| {
                seen = kind == FrameKind::Voice && inbound.iter().any(|s| s.unsigned_abs() > 3000);
                out.copy_from_slice(inbound);
                seen
            })
            .unwrap();
            if seen {
                let echoed = b.reply().expect("the reply was sent").to_vec();
                let transmit = b.poll_transmit().expect("sent in this tick");
                assert_eq!(transmit.component, Component::Rtp);
                let decoded: Vec<i16> = transmit.payload[12..]
                    .iter()
                    .map(|&code| crate::codec::g711::ulaw_to_linear(code))
                    .collect();
                assert_eq!(decoded, echoed, "the packet carries this tick's reply");
                heard_at.get_or_insert(k);
            } else {
                assert!(b.reply().is_none());
                assert!(b.poll_transmit().is_none(), "nothing to send: nothing sent");
            }
        }
        assert!(
            heard_at.is_some(),
            "the jitter buffer let the speech through"
        );
    }

    #[test]
    fn wrong_frame_length_is_refused() {
        let (mut a, _, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        let error = a.tick(t0, Some(&[0; 100])).unwrap_err();
        assert!(matches!(
            error,
            StreamError::FrameLength {
                expected: 160,
                actual: 100
            }
        ));
    }

    #[test]
    fn hostile_datagrams_are_errors() {
        let (mut a, _, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        for bytes in [
            &b""[..],
            b"\x80",
            b"\x80\xc8\x00\xff",
            b"\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            assert!(a
                .handle_datagram(t0, addr(2000), Bytes::copy_from_slice(bytes))
                .is_err());
        }
        assert_eq!(a.stats().rejected_datagrams, 4);
    }

    #[test]
    fn dtmf_round_trip_and_latching() {
        let (mut a, mut b, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        a.send_dtmf(t0, "1#").unwrap();
        let mut events = Vec::new();
        for k in 0..40u32 {
            let now = t0 + FRAME * k;
            a.tick(now, None).unwrap();
            b.tick(now, None).unwrap();
            deliver(&mut a, addr(1000), &mut b, now);
            events.extend(std::iter::from_fn(|| b.poll_event()));
        }
        let digits: Vec<char> = events
            .iter()
            .filter_map(|event| match event {
                MediaEvent::Dtmf(digit) => Some(digit.digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits, ['1', '#']);
        assert_eq!(events[0], MediaEvent::RemoteLatched(addr(1000)));
        assert_eq!(b.stats().dtmf_received, 2);
    }

    #[test]
    fn rtcp_goes_to_the_port_above_rtp_and_measures_rtt() {
        let (mut a, mut b, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        let mut a_rtcp = 0;
        for k in 0..1000u32 {
            let now = t0 + FRAME * k;
            a.tick(now, None).unwrap();
            b.tick(now, None).unwrap();
            let destinations = deliver(&mut a, addr(1000), &mut b, now);
            assert!(destinations.iter().all(|&to| to == addr(2001)));
            a_rtcp += destinations.len();
            deliver(&mut b, addr(2000), &mut a, now);
        }
        assert!(a_rtcp >= 2, "reports every 5 s on average");
        assert!(a.rtt().is_some() && b.rtt().is_some());
        assert!(a.rtt().unwrap() < Duration::from_millis(2));
        let stats = b.stats();
        assert_eq!(stats.stream.packets_received, 1000);
        assert_eq!(stats.stream.packets_lost, 0);
    }

    #[test]
    fn close_sends_bye_and_refuses_input() {
        let (mut a, mut b, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        a.tick(t0, None).unwrap();
        let stats = a.close(t0 + FRAME).unwrap();
        assert_eq!(stats.stream.packets_sent, 1);
        deliver(&mut a, addr(1000), &mut b, t0 + FRAME);
        assert_eq!(b.poll_event(), Some(MediaEvent::RemoteLatched(addr(1000))));
        assert_eq!(b.poll_event(), Some(MediaEvent::RemoteBye));
        assert!(matches!(
            a.tick(t0 + FRAME * 2, None),
            Err(StreamError::Closed)
        ));
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn forged_rtp_and_rtcp_bye_from_another_address_change_nothing() {
        let (mut a, mut b, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        let attacker = SocketAddr::from(([10, 9, 9, 9], 1000));
        a.tick(t0, None).unwrap();
        a.close(t0 + FRAME).unwrap();
        let mut datagrams = Vec::new();
        while let Some(transmit) = a.poll_transmit() {
            datagrams.push(Bytes::copy_from_slice(transmit.payload));
        }
        assert_eq!(datagrams.len(), 2, "one RTP packet and the RTCP BYE");
        for datagram in &datagrams {
            let err = b
                .handle_datagram(t0 + FRAME, attacker, datagram.clone())
                .expect_err("foreign source");
            assert!(matches!(
                err,
                StreamError::Rtp(RtpError::ForeignSource { from }) if from == attacker
            ));
        }
        assert_eq!(b.poll_event(), None, "no latch, no BYE");
        assert_eq!(b.remote_addr(), addr(1000));
        let stats = b.stats();
        assert_eq!(stats.foreign_datagrams, 2);
        assert_eq!(stats.rejected_datagrams, 2);
        assert_eq!(stats.stream.packets_received, 0);
        // The same datagrams from the signalled peer do what they say.
        for datagram in datagrams {
            b.handle_datagram(t0 + FRAME, addr(1000), datagram).unwrap();
        }
        assert_eq!(b.poll_event(), Some(MediaEvent::RemoteLatched(addr(1000))));
        assert_eq!(b.poll_event(), Some(MediaEvent::RemoteBye));
    }

    #[test]
    fn inactivity_is_reported_once() {
        let (mut a, _, t0) = pair(CodecSpec::Pcmu, PayloadType::PCMU);
        a.config.inactivity_timeout = Some(Duration::from_millis(100));
        let mut timeouts = 0;
        for k in 0..20u32 {
            a.tick(t0 + FRAME * k, None).unwrap();
            while let Some(event) = a.poll_event() {
                timeouts += usize::from(matches!(event, MediaEvent::Timeout { .. }));
            }
        }
        assert_eq!(timeouts, 1);
    }
}
