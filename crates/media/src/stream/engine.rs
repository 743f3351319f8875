//! The tokio driver of [`MediaStream`]s: sockets, one 20 ms clock, and the
//! application's audio channels.
//!
//! A [`MediaEngine`] runs a few worker tasks (one per core by default). Each
//! worker owns its streams outright (no locks around them) and drives all of
//! them from one loop:
//!
//! - one `tokio::time::Interval` of 20 ms per worker (the workers' phases are
//!   spread over the period) ticks every stream of the worker in turn, with
//!   [`MissedTickBehavior::Skip`]: after a stall the next tick comes on the
//!   regular grid, and the stream's RTP timestamp accounts for the frames
//!   that were skipped;
//! - sockets are not read by a task each, and a datagram wakes nobody: on
//!   each tick the worker first reads every stream's RTP socket (and, every
//!   25th tick, its RTCP socket) until they would block, in batches of up to
//!   four datagrams per `recvmmsg`, each datagram with the kernel's receive
//!   timestamp ([`super::arrival`]), so the jitter buffer and the statistics
//!   see the real arrival times, then ticks the stream. A packet is never needed
//!   before the tick that plays it, and one wake-up per 20 ms serves all of a
//!   worker's streams. The sockets are not registered with tokio's reactor
//!   either: there, each datagram (and each freed send buffer) would be an
//!   epoll event waking the I/O driver for nothing;
//! - received datagrams are split off a shared receive buffer (a `BytesMut`
//!   refilled 64 KiB at a time), so no allocation happens per packet;
//! - commands from [`StreamHandle`]s (stats, close, re-INVITE, DTMF) come
//!   over one channel per worker.
//!
//! The application side of a stream is a pair of bounded channels of
//! [`AudioFrame`]s (fixed-size, no heap): inbound frames are offered with
//! `try_send` (the audio path never waits for a slow application: a full
//! channel drops the frame), outbound frames are taken with `try_recv` on
//! each tick (none: comfort silence). [`StreamHandle::send_frame`] waits for
//! room, which paces an application that produces audio faster than real
//! time.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Interval, MissedTickBehavior};

use super::{
    arrival, Component, FrameKind, MediaConfig, MediaEvent, MediaStats, MediaStream, StreamError,
    FRAME,
};
use crate::codec::SampleRate;
use crate::record::{RecordError, RecordingHandle, RecordingSummary};
use crate::rtcp::NtpTime;

/// Largest application frame: 20 ms at 16 kHz.
pub const MAX_APP_FRAME: usize = 320;

/// Size of one receive buffer refill.
const RECEIVE_CHUNK: usize = 64 * 1024;
/// Room for one datagram.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read from one stream's sockets per tick at most (a flood beyond it
/// waits in, and overflows, the socket's buffer).
const READ_BUDGET: usize = 64;
/// A stream's RTCP socket is read every this many ticks (500 ms): RTCP comes every few
/// seconds and nothing waits on it (statistics, round trip, BYE), while an empty read
/// still costs a system call.
const RTCP_READ_TICKS: u64 = 25;

/// Errors of the media engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Not called inside a tokio runtime.
    #[error("the media engine needs a tokio runtime")]
    NoRuntime,
    /// The port range is empty or holds no even port.
    #[error("RTP port range {min}-{max} holds no even port")]
    EmptyPortRange {
        /// Lowest port.
        min: u16,
        /// Highest port.
        max: u16,
    },
    /// Every port of the range is taken.
    #[error("no free RTP port in {min}-{max} on {ip}")]
    NoFreePort {
        /// Address bound.
        ip: IpAddr,
        /// Lowest port.
        min: u16,
        /// Highest port.
        max: u16,
    },
    /// A socket could not be set up.
    #[error("RTP socket {addr}: {source}")]
    Socket {
        /// Address being bound.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The engine supports 8 and 16 kHz application audio.
    #[error("application rate {0} Hz is not supported by the engine (8000 or 16000)")]
    AppRate(u32),
    /// An outgoing frame is not 20 ms at the stream's application rate.
    #[error("outgoing frame of {actual} samples, expected {expected}")]
    FrameLength {
        /// Samples expected.
        expected: usize,
        /// Samples given.
        actual: usize,
    },
    /// The outbound queue is full ([`StreamHandle::try_send_frame`]).
    #[error("outbound audio queue is full")]
    Full,
    /// The stream core refused the operation.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream's worker is gone (engine shut down or stream closed).
    #[error("media stream is closed")]
    Closed,
    /// The stream was opened without frame channels ([`OpenOptions::frame_channels`]).
    #[error("media stream has no frame channels (its audio goes through a frame hook)")]
    NoFrameChannels,
    /// [`StreamHandle::reconfigure`] asked for what a live stream cannot change.
    #[error("a live stream cannot change {0}")]
    Unchangeable(&'static str),
}

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Address the RTP sockets bind to.
    pub bind_ip: IpAddr,
    /// Lowest RTP port (RTP takes even ports, RTCP the odd one above).
    pub port_min: u16,
    /// Highest port.
    pub port_max: u16,
    /// Worker tasks; 0 means one per available core.
    pub workers: usize,
    /// Inbound frames buffered for the application (each 20 ms).
    pub inbound_frames: usize,
    /// Outbound frames buffered from the application (each 20 ms).
    pub outbound_frames: usize,
}

impl Default for EngineConfig {
    /// 127.0.0.1, ports 20000-30000, one worker per core, 200 ms of inbound
    /// and 1 s of outbound buffering.
    fn default() -> Self {
        EngineConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 20000,
            port_max: 30000,
            workers: 0,
            inbound_frames: 10,
            outbound_frames: 50,
        }
    }
}

/// Per-stream options of [`MediaEngine::open`].
#[derive(Debug)]
pub struct OpenOptions {
    /// Record the call: decoded inbound audio (caller, left) and outbound
    /// audio (agent, right) at the application rate.
    pub recording: Option<RecordingHandle>,
    /// Give the stream its pair of frame channels ([`StreamHandle::recv_frame`],
    /// [`StreamHandle::send_frame`]); true by default. A stream whose audio goes through
    /// a [`FrameHook`] needs none: without them it saves their memory (two queues of
    /// 20 ms frames, about 40 kB), drops its inbound frames and sends comfort silence
    /// until a hook is attached, and the frame methods fail with
    /// [`EngineError::NoFrameChannels`].
    pub frame_channels: bool,
}

impl OpenOptions {
    /// The options of a stream whose audio will go through a [`FrameHook`]: no frame
    /// channels, no recording of its own (the hook records).
    pub fn hooked() -> OpenOptions {
        OpenOptions {
            recording: None,
            frame_channels: false,
        }
    }
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            recording: None,
            frame_channels: true,
        }
    }
}

/// Application code the media worker runs on every 20 ms tick of one stream, in place
/// of the stream's frame channels ([`StreamHandle::attach`]): it gets each decoded inbound
/// frame and writes the frame to send in the same tick, so a reply ready now leaves now and
/// no task or channel hop per frame is needed. It runs on the worker that drives many
/// streams: it must never block, wait or do more than a frame's worth of work.
pub trait FrameHook: Send {
    /// One tick: `inbound` is what the far end sent in the last 20 ms (silence or
    /// concealment included, as `kind` says). Write the frame to send into `out` (20 ms at
    /// the stream's application rate) and return true, or return false to send nothing.
    fn on_frame(&mut self, inbound: &[i16], kind: FrameKind, out: &mut [i16]) -> bool;

    /// A media event of the stream (a DTMF digit received, ...); return true to keep it
    /// from the stream's event channel.
    fn on_event(&mut self, event: &MediaEvent) -> bool {
        let _ = event;
        false
    }

    /// Digits to send now as RFC 4733 telephone-events, asked after every tick.
    fn poll_dtmf(&mut self) -> Option<String> {
        None
    }

    /// The hook leaves the stream (detached, or the stream closed): the last call it gets.
    fn on_detach(self: Box<Self>) {}
}

/// 20 ms of mono PCM, stored inline (no heap).
#[derive(Clone, Copy)]
pub struct AudioFrame {
    samples: [i16; MAX_APP_FRAME],
    len: u16,
    kind: FrameKind,
}

impl AudioFrame {
    /// A frame holding `pcm` (at most [`MAX_APP_FRAME`] samples).
    pub fn new(pcm: &[i16], kind: FrameKind) -> Result<AudioFrame, EngineError> {
        if pcm.len() > MAX_APP_FRAME {
            return Err(EngineError::FrameLength {
                expected: MAX_APP_FRAME,
                actual: pcm.len(),
            });
        }
        let mut samples = [0; MAX_APP_FRAME];
        samples[..pcm.len()].copy_from_slice(pcm);
        Ok(AudioFrame {
            samples,
            // At most MAX_APP_FRAME, checked above.
            len: pcm.len() as u16,
            kind,
        })
    }

    /// The samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples[..usize::from(self.len)]
    }

    /// How an inbound frame was made ([`FrameKind::Voice`] for outbound).
    pub fn kind(&self) -> FrameKind {
        self.kind
    }
}

impl Deref for AudioFrame {
    type Target = [i16];

    fn deref(&self) -> &[i16] {
        self.samples()
    }
}

impl std::fmt::Debug for AudioFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioFrame")
            .field("len", &self.len)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What [`StreamHandle::close`] returns.
#[derive(Debug)]
pub struct StreamClosed {
    /// Final statistics.
    pub stats: MediaStats,
    /// How the recording ended, when the stream was recorded.
    pub recording: Option<Result<RecordingSummary, RecordError>>,
}

/// Drives many media streams from a few tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    inner: Arc<EngineInner>,
}

#[derive(Debug)]
struct EngineInner {
    config: EngineConfig,
    workers: Vec<mpsc::UnboundedSender<Command>>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
}

impl MediaEngine {
    /// Starts the worker tasks on the current tokio runtime.
    pub fn start(config: EngineConfig) -> Result<MediaEngine, EngineError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let first_even = config.port_min.saturating_add(config.port_min % 2);
        if first_even > config.port_max || config.port_max == 0 {
            return Err(EngineError::EmptyPortRange {
                min: config.port_min,
                max: config.port_max,
            });
        }
        let count = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let start = tokio::time::Instant::now();
        let workers = (0..count)
            .map(|index| {
                let (commands, receiver) = mpsc::unbounded_channel();
                // Spread the workers' ticks over the frame period.
                let phase = FRAME * index as u32 / count as u32;
                let mut interval = tokio::time::interval_at(start + phase, FRAME);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                runtime.spawn(Worker::new(receiver, interval).run());
                commands
            })
            .collect();
        Ok(MediaEngine {
            inner: Arc::new(EngineInner {
                config,
                workers,
                next_worker: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Binds the stream's sockets (an even RTP port, and the RTCP port above
    /// it unless `config.rtcp_mux`), builds the stream and hands it to a
    /// worker. Put [`StreamHandle::local_addr`] in the SDP.
    pub fn open(
        &self,
        config: MediaConfig,
        options: OpenOptions,
    ) -> Result<StreamHandle, EngineError> {
        let app_rate = config.app_rate;
        if app_rate.frame_samples() > MAX_APP_FRAME {
            return Err(EngineError::AppRate(app_rate.hz()));
        }
        let (rtp, rtcp) = self.bind_pair(!config.rtcp_mux)?;
        let local = local_addr(&rtp)?;
        let local_rtcp = rtcp.as_ref().map(local_addr).transpose()?;
        let now = tokio::time::Instant::now().into_std();
        let ntp = NtpTime::from_system_time(SystemTime::now());
        let stream = MediaStream::new(config, now, ntp, &mut rand::thread_rng())?;
        nonblocking(&rtp, local)?;
        if let (Some(socket), Some(addr)) = (&rtcp, local_rtcp) {
            nonblocking(socket, addr)?;
        }
        let (inbound_tx, inbound_rx) = options
            .frame_channels
            .then(|| mpsc::channel(self.inner.config.inbound_frames.max(1)))
            .unzip();
        let (outbound_tx, outbound_rx) = options
            .frame_channels
            .then(|| mpsc::channel(self.inner.config.outbound_frames.max(1)))
            .unzip();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let worker =
            self.inner.next_worker.fetch_add(1, Ordering::Relaxed) % self.inner.workers.len();
        let commands = self.inner.workers[worker].clone();
        let entry = Entry {
            id,
            stream,
            rtp,
            rtcp,
            inbound: inbound_tx,
            outbound: outbound_rx,
            events: events_tx,
            recording: options.recording,
            recording_errors: 0,
            bad_frames: 0,
            hook: None,
        };
        commands
            .send(Command::Open(Box::new(entry)))
            .map_err(|_| EngineError::Closed)?;
        Ok(StreamHandle {
            id,
            local,
            local_rtcp,
            frame_samples: app_rate.frame_samples(),
            app_rate,
            commands,
            inbound: inbound_rx,
            outbound: outbound_tx,
            events: Some(events_rx),
            closed: false,
        })
    }

    /// Binds an even port (and the one above it when `rtcp` is set) from the
    /// configured range: the search starts at a random pair, so that nobody can
    /// guess the port of the next call and send to it first.
    fn bind_pair(&self, rtcp: bool) -> Result<(StdUdpSocket, Option<StdUdpSocket>), EngineError> {
        let config = &self.inner.config;
        let first = config.port_min.saturating_add(config.port_min % 2);
        let pairs = usize::from((config.port_max - first) / 2) + 1;
        let start = rand::Rng::gen_range(&mut rand::thread_rng(), 0..pairs);
        for index in (start..pairs).chain(0..start) {
            // `index < pairs` keeps the port within `first..=port_max`.
            let port = first + 2 * index as u16;
            if rtcp && port == u16::MAX {
                continue;
            }
            let Some(socket) = try_bind(config.bind_ip, port)? else {
                continue;
            };
            if !rtcp {
                return Ok((socket, None));
            }
            if let Some(rtcp_socket) = try_bind(config.bind_ip, port + 1)? {
                return Ok((socket, Some(rtcp_socket)));
            }
        }
        Err(EngineError::NoFreePort {
            ip: config.bind_ip,
            min: config.port_min,
            max: config.port_max,
        })
    }
}

/// The application's side of one stream. Dropping it closes the stream.
#[derive(Debug)]
pub struct StreamHandle {
    id: u64,
    local: SocketAddr,
    local_rtcp: Option<SocketAddr>,
    app_rate: SampleRate,
    frame_samples: usize,
    commands: mpsc::UnboundedSender<Command>,
    inbound: Option<mpsc::Receiver<AudioFrame>>,
    outbound: Option<mpsc::Sender<AudioFrame>>,
    events: Option<mpsc::UnboundedReceiver<MediaEvent>>,
    closed: bool,
}

impl StreamHandle {
    /// The local RTP address (for the SDP `c=`/`m=` lines).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The local RTCP address, unless RTCP is multiplexed.
    pub fn local_rtcp_addr(&self) -> Option<SocketAddr> {
        self.local_rtcp
    }

    /// Rate of the frames exchanged with the application.
    pub fn app_rate(&self) -> SampleRate {
        self.app_rate
    }

    /// The next inbound 20 ms frame (one every 20 ms, silence included);
    /// `None` once the stream is closed or the receiver was taken.
    pub async fn recv_frame(&mut self) -> Option<AudioFrame> {
        self.inbound.as_mut()?.recv().await
    }

    /// Takes the inbound frame receiver, to read it from another task.
    pub fn take_inbound(&mut self) -> Option<mpsc::Receiver<AudioFrame>> {
        self.inbound.take()
    }

    /// A sender of outbound frames, to write from another task (`None` without frame
    /// channels).
    pub fn outbound_sender(&self) -> Option<mpsc::Sender<AudioFrame>> {
        self.outbound.clone()
    }

    /// Queues one outbound 20 ms frame, waiting while the queue is full
    /// (which paces an application faster than real time).
    pub async fn send_frame(&self, pcm: &[i16]) -> Result<(), EngineError> {
        let frame = self.outbound_frame(pcm)?;
        self.outbound
            .as_ref()
            .ok_or(EngineError::NoFrameChannels)?
            .send(frame)
            .await
            .map_err(|_| EngineError::Closed)
    }

    /// Queues one outbound frame without waiting.
    pub fn try_send_frame(&self, pcm: &[i16]) -> Result<(), EngineError> {
        let frame = self.outbound_frame(pcm)?;
        let outbound = self.outbound.as_ref().ok_or(EngineError::NoFrameChannels)?;
        outbound.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => EngineError::Full,
            mpsc::error::TrySendError::Closed(_) => EngineError::Closed,
        })
    }

    /// Drops the outbound audio not yet sent (barge-in).
    pub fn clear_outbound(&self) -> Result<(), EngineError> {
        self.command(Command::ClearOutbound { id: self.id })
    }

    /// The next event; `None` once the stream is closed or the receiver was
    /// taken.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Takes the event receiver, to read it from another task.
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<MediaEvent>> {
        self.events.take()
    }

    /// Statistics so far.
    pub async fn stats(&self) -> Result<MediaStats, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Stats { id: self.id, reply })?;
        answer.await.map_err(|_| EngineError::Closed)
    }

    /// Sends `digits` as RFC 4733 telephone-events.
    pub async fn send_dtmf(&self, digits: &str) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::SendDtmf {
            id: self.id,
            digits: digits.to_owned(),
            reply,
        })?;
        Ok(answer.await.map_err(|_| EngineError::Closed)??)
    }

    /// A new remote address after a re-INVITE.
    pub fn set_remote(
        &self,
        remote: SocketAddr,
        remote_rtcp: Option<SocketAddr>,
    ) -> Result<(), EngineError> {
        self.command(Command::SetRemote {
            id: self.id,
            remote,
            remote_rtcp,
        })
    }

    /// Changes the stream's codec, payload types, packetization, application
    /// rate or peer in place, on the same ports, SSRC and sequence numbers
    /// (see [`MediaStream::reconfigure`]). Frames queued for sending are
    /// dropped; afterwards frames are 20 ms at the new [`app_rate`](Self::app_rate).
    /// RTCP multiplexing, and the rate of a stream the engine records, cannot
    /// change.
    pub async fn reconfigure(&mut self, config: MediaConfig) -> Result<(), EngineError> {
        let app_rate = config.app_rate;
        if app_rate.frame_samples() > MAX_APP_FRAME {
            return Err(EngineError::AppRate(app_rate.hz()));
        }
        let (reply, answer) = oneshot::channel();
        self.command(Command::Reconfigure {
            id: self.id,
            config: Box::new(config),
            reply,
        })?;
        answer.await.map_err(|_| EngineError::Closed)??;
        self.app_rate = app_rate;
        self.frame_samples = app_rate.frame_samples();
        Ok(())
    }

    /// Hands the stream's frames to `hook`, run by the media worker on every tick, instead
    /// of the inbound and outbound frame channels (see [`FrameHook`]). A hook attached
    /// before replaces the earlier one (which is detached).
    pub fn attach(&self, hook: Box<dyn FrameHook>) -> Result<(), EngineError> {
        self.command(Command::Attach { id: self.id, hook })
    }

    /// Takes the hook off (its [`FrameHook::on_detach`] has run when this returns): the
    /// frame channels carry the audio again.
    pub async fn detach(&self) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Detach { id: self.id, reply })?;
        answer.await.map_err(|_| EngineError::Closed)
    }

    /// Closes the stream (RTCP BYE sent, sockets released) and returns the
    /// final statistics and the recording's outcome.
    pub async fn close(mut self) -> Result<StreamClosed, EngineError> {
        self.closed = true;
        let (reply, answer) = oneshot::channel();
        self.command(Command::Close {
            id: self.id,
            reply: Some(reply),
        })?;
        let (stats, recording) = answer.await.map_err(|_| EngineError::Closed)?;
        let stats = stats?;
        let recording = match recording {
            Some(handle) => Some(handle.finish().await),
            None => None,
        };
        Ok(StreamClosed { stats, recording })
    }

    fn outbound_frame(&self, pcm: &[i16]) -> Result<AudioFrame, EngineError> {
        if pcm.len() != self.frame_samples {
            return Err(EngineError::FrameLength {
                expected: self.frame_samples,
                actual: pcm.len(),
            });
        }
        AudioFrame::new(pcm, FrameKind::Voice)
    }

    fn command(&self, command: Command) -> Result<(), EngineError> {
        self.commands.send(command).map_err(|_| EngineError::Closed)
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.commands.send(Command::Close {
                id: self.id,
                reply: None,
            });
        }
    }
}

type CloseReply = oneshot::Sender<(Result<MediaStats, StreamError>, Option<RecordingHandle>)>;

enum Command {
    Open(Box<Entry>),
    Close {
        id: u64,
        reply: Option<CloseReply>,
    },
    Stats {
        id: u64,
        reply: oneshot::Sender<MediaStats>,
    },
    SendDtmf {
        id: u64,
        digits: String,
        reply: oneshot::Sender<Result<(), StreamError>>,
    },
    SetRemote {
        id: u64,
        remote: SocketAddr,
        remote_rtcp: Option<SocketAddr>,
    },
    ClearOutbound {
        id: u64,
    },
    Reconfigure {
        id: u64,
        config: Box<MediaConfig>,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Attach {
        id: u64,
        hook: Box<dyn FrameHook>,
    },
    Detach {
        id: u64,
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Command::Open(_) => "Open",
            Command::Close { .. } => "Close",
            Command::Stats { .. } => "Stats",
            Command::SendDtmf { .. } => "SendDtmf",
            Command::SetRemote { .. } => "SetRemote",
            Command::ClearOutbound { .. } => "ClearOutbound",
            Command::Reconfigure { .. } => "Reconfigure",
            Command::Attach { .. } => "Attach",
            Command::Detach { .. } => "Detach",
        };
        f.write_str(name)
    }
}

/// One stream owned by a worker.
struct Entry {
    id: u64,
    stream: MediaStream,
    rtp: StdUdpSocket,
    rtcp: Option<StdUdpSocket>,
    /// The frame channels, unless opened without ([`OpenOptions::frame_channels`]).
    inbound: Option<mpsc::Sender<AudioFrame>>,
    outbound: Option<mpsc::Receiver<AudioFrame>>,
    events: mpsc::UnboundedSender<MediaEvent>,
    recording: Option<RecordingHandle>,
    recording_errors: u64,
    bad_frames: u64,
    /// The application's code, run in the tick instead of the frame channels.
    hook: Option<Box<dyn FrameHook>>,
}

enum Wakeup {
    Tick,
    Command(Option<Command>),
}

struct Worker {
    commands: mpsc::UnboundedReceiver<Command>,
    interval: Interval,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    index: HashMap<u64, usize>,
    receive: BytesMut,
    /// Ticks so far: which streams' RTCP sockets are read on this one.
    ticks: u64,
}

impl Worker {
    fn new(commands: mpsc::UnboundedReceiver<Command>, interval: Interval) -> Worker {
        Worker {
            commands,
            interval,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            receive: BytesMut::with_capacity(RECEIVE_CHUNK),
            ticks: 0,
        }
    }

    async fn run(mut self) {
        loop {
            match poll_fn(|cx| self.poll_wakeup(cx)).await {
                Wakeup::Tick => self.tick_all(),
                Wakeup::Command(Some(command)) => self.handle_command(command),
                Wakeup::Command(None) => return,
            }
            // Commands count against tokio's cooperative budget; give the
            // runtime its turn when it is spent rather than spin.
            tokio::task::consume_budget().await;
        }
    }

    fn poll_wakeup(&mut self, cx: &mut Context<'_>) -> Poll<Wakeup> {
        if self.interval.poll_tick(cx).is_ready() {
            return Poll::Ready(Wakeup::Tick);
        }
        if let Poll::Ready(command) = self.commands.poll_recv(cx) {
            return Poll::Ready(Wakeup::Command(command));
        }
        Poll::Pending
    }

    fn tick_all(&mut self) {
        let now = tokio::time::Instant::now().into_std();
        let clock = arrival::Clock::at(now);
        // Made per tick (three small allocations): its raw message headers cannot be
        // kept in the worker's future, which moves between threads.
        let mut batch = arrival::BatchReceiver::default();
        self.ticks = self.ticks.wrapping_add(1);
        for entry in self.slots.iter_mut().flatten() {
            // Each stream on its own tick of the cycle, so the reads spread out.
            let rtcp = (self.ticks.wrapping_add(entry.id)) % RTCP_READ_TICKS == 0;
            read_sockets(entry, rtcp, &mut batch, &mut self.receive, &clock);
            if entry.hook.is_some() {
                tick_hooked(entry, now);
            } else {
                tick_channels(entry, now);
            }
            flush(entry);
        }
    }

    fn handle_command(&mut self, command: Command) {
        let now = tokio::time::Instant::now().into_std();
        match command {
            Command::Open(entry) => self.insert(*entry),
            Command::Close { id, reply } => {
                let Some(mut entry) = self.remove(id) else {
                    return;
                };
                let stats = entry.stream.close(now);
                flush(&mut entry);
                if entry.bad_frames > 0 || entry.recording_errors > 0 {
                    tracing::debug!(
                        id,
                        bad_frames = entry.bad_frames,
                        recording_errors = entry.recording_errors,
                        "media stream closed with dropped frames"
                    );
                }
                let recording = entry.recording.take();
                if let Some(hook) = entry.hook.take() {
                    hook.on_detach();
                }
                // The sockets are freed before the reply: whoever awaits it
                // may bind the same port at once (a stream reopened with the
                // negotiated codec).
                drop(entry);
                if let Some(reply) = reply {
                    let _ = reply.send((stats, recording));
                }
            }
            Command::Stats { id, reply } => {
                if let Some(entry) = self.entry(id) {
                    let _ = reply.send(entry.stream.stats());
                }
            }
            Command::SendDtmf { id, digits, reply } => {
                if let Some(entry) = self.entry(id) {
                    let _ = reply.send(entry.stream.send_dtmf(now, &digits));
                }
            }
            Command::SetRemote {
                id,
                remote,
                remote_rtcp,
            } => {
                if let Some(entry) = self.entry(id) {
                    entry.stream.set_remote(remote, remote_rtcp);
                }
            }
            Command::ClearOutbound { id } => {
                if let Some(entry) = self.entry(id) {
                    drain(&mut entry.outbound);
                }
            }
            Command::Reconfigure { id, config, reply } => {
                if let Some(entry) = self.entry(id) {
                    let _ = reply.send(reconfigure(entry, *config, now));
                }
            }
            Command::Attach { id, hook } => match self.entry(id) {
                Some(entry) => {
                    if let Some(previous) = entry.hook.replace(hook) {
                        previous.on_detach();
                    }
                }
                None => hook.on_detach(),
            },
            Command::Detach { id, reply } => {
                if let Some(hook) = self.entry(id).and_then(|entry| entry.hook.take()) {
                    hook.on_detach();
                }
                let _ = reply.send(());
            }
        }
    }

    fn insert(&mut self, entry: Entry) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.index.insert(entry.id, slot);
        self.slots[slot] = Some(entry);
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let slot = self.index.remove(&id)?;
        self.free.push(slot);
        self.slots[slot].take()
    }

    fn entry(&mut self, id: u64) -> Option<&mut Entry> {
        let slot = *self.index.get(&id)?;
        self.slots[slot].as_mut()
    }
}

/// Reads the RTP socket of `entry`, and its RTCP socket if `rtcp`, until they would
/// block (or the tick's budget is spent: the rest waits for the next tick), each datagram
/// at its kernel arrival time. A batch shorter than [`arrival::BATCH`] means the socket
/// is drained: no second system call to hear `WouldBlock`.
fn read_sockets(
    entry: &mut Entry,
    rtcp: bool,
    batch: &mut arrival::BatchReceiver,
    receive: &mut BytesMut,
    clock: &arrival::Clock,
) {
    let room = arrival::BATCH * MAX_DATAGRAM;
    let mut budget = READ_BUDGET;
    let sockets = [Some(&entry.rtp), entry.rtcp.as_ref().filter(|_| rtcp)];
    for socket in sockets.into_iter().flatten() {
        while budget > 0 {
            if receive.capacity() < room {
                // What is left is filler: do not copy it into the new chunk.
                receive.clear();
                receive.reserve(RECEIVE_CHUNK);
            }
            // The rest stays in the buffer: this fills only what the last batch took.
            receive.resize(room, 0);
            let mut got = [arrival::Received::NONE; arrival::BATCH];
            let count = match batch.recv(socket, &mut receive[..], MAX_DATAGRAM, &mut got) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(id = entry.id, %error, "RTP socket receive error");
                    break;
                }
            };
            budget = budget.saturating_sub(count.max(1));
            // Datagram i sits at i * MAX_DATAGRAM: move each next to the one before, so
            // they are split off one after the other and the buffer stays dense.
            let mut end = 0;
            for (i, datagram) in got[..count].iter().enumerate() {
                let start = i * MAX_DATAGRAM;
                if start != end {
                    receive.copy_within(start..start + datagram.len, end);
                }
                end += datagram.len;
            }
            for datagram in &got[..count] {
                let bytes = receive.split_to(datagram.len).freeze();
                let at = clock.instant_of(datagram.stamp);
                let from = datagram.from;
                if let Err(error) = entry.stream.handle_datagram(at, from, bytes) {
                    tracing::trace!(id = entry.id, %from, %error, "datagram rejected");
                }
            }
            if count < arrival::BATCH {
                break;
            }
        }
    }
}

/// One tick of a stream whose application is on the channels (or that has neither
/// channels nor a hook yet: it hears nothing and sends comfort silence).
fn tick_channels(entry: &mut Entry, now: std::time::Instant) {
    let outgoing = match entry.outbound.as_mut().map(mpsc::Receiver::try_recv) {
        Some(Ok(frame)) if frame.len() == entry.stream.frame().len() => Some(frame),
        Some(Ok(_)) => {
            entry.bad_frames += 1;
            None
        }
        Some(Err(_)) | None => None,
    };
    let outgoing = outgoing.as_ref().map(AudioFrame::samples);
    match entry.stream.tick(now, outgoing) {
        Ok(kind) => {
            let inbound = entry.stream.frame();
            if let Some(channel) = &entry.inbound {
                if let Ok(frame) = AudioFrame::new(inbound, kind) {
                    // A full channel drops the frame: the audio path never waits for the
                    // application.
                    let _ = channel.try_send(frame);
                }
            }
            if let Some(recording) = &mut entry.recording {
                if recording.write_frame(Some(inbound), outgoing).is_err() {
                    entry.recording_errors += 1;
                }
            }
        }
        Err(error) => tracing::debug!(id = entry.id, %error, "media tick failed"),
    }
}

/// One tick of a stream with a [`FrameHook`]: the hook answers the frame in the tick.
fn tick_hooked(entry: &mut Entry, now: std::time::Instant) {
    let Some(hook) = entry.hook.as_mut() else {
        return;
    };
    match entry
        .stream
        .tick_with(now, |inbound, kind, out| hook.on_frame(inbound, kind, out))
    {
        Ok(_) => {
            if let Some(recording) = &mut entry.recording {
                let inbound = entry.stream.frame();
                if recording
                    .write_frame(Some(inbound), entry.stream.reply())
                    .is_err()
                {
                    entry.recording_errors += 1;
                }
            }
        }
        Err(error) => tracing::debug!(id = entry.id, %error, "media tick failed"),
    }
    while let Some(digits) = hook.poll_dtmf() {
        if let Err(error) = entry.stream.send_dtmf(now, &digits) {
            tracing::debug!(id = entry.id, %error, digits, "DTMF not sent");
        }
    }
}

/// [`Command::Reconfigure`] on a worker's entry.
fn reconfigure(
    entry: &mut Entry,
    config: MediaConfig,
    now: std::time::Instant,
) -> Result<(), EngineError> {
    let current = entry.stream.config();
    if config.rtcp_mux != current.rtcp_mux {
        return Err(EngineError::Unchangeable(
            "RTCP multiplexing (its sockets are bound)",
        ));
    }
    if entry.recording.is_some() && config.app_rate != current.app_rate {
        return Err(EngineError::Unchangeable("the rate of its recording"));
    }
    entry
        .stream
        .reconfigure(config, now, &mut rand::thread_rng())?;
    drain(&mut entry.outbound);
    Ok(())
}

/// Drops the frames queued on an outbound channel.
fn drain(outbound: &mut Option<mpsc::Receiver<AudioFrame>>) {
    if let Some(outbound) = outbound {
        while outbound.try_recv().is_ok() {}
    }
}

/// Sends the stream's queued datagrams and forwards its events.
fn flush(entry: &mut Entry) {
    while let Some(transmit) = entry.stream.poll_transmit() {
        let socket = match transmit.component {
            Component::Rtp => &entry.rtp,
            Component::Rtcp => entry.rtcp.as_ref().unwrap_or(&entry.rtp),
        };
        // UDP: a full socket buffer drops the datagram, as the network would.
        if let Err(error) = socket.send_to(transmit.payload, transmit.destination) {
            tracing::trace!(id = entry.id, %error, "RTP send failed");
        }
    }
    while let Some(event) = entry.stream.poll_event() {
        let taken = entry
            .hook
            .as_mut()
            .is_some_and(|hook| hook.on_event(&event));
        if !taken {
            let _ = entry.events.send(event);
        }
    }
}

fn try_bind(ip: IpAddr, port: u16) -> Result<Option<StdUdpSocket>, EngineError> {
    let addr = SocketAddr::new(ip, port);
    match StdUdpSocket::bind(addr) {
        Ok(socket) => {
            arrival::enable_timestamps(&socket);
            Ok(Some(socket))
        }
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(source) => Err(EngineError::Socket { addr, source }),
    }
}

fn local_addr(socket: &StdUdpSocket) -> Result<SocketAddr, EngineError> {
    socket.local_addr().map_err(|source| EngineError::Socket {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        source,
    })
}

fn nonblocking(socket: &StdUdpSocket, addr: SocketAddr) -> Result<(), EngineError> {
    socket
        .set_nonblocking(true)
        .map_err(|source| EngineError::Socket { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_frames_hold_up_to_16k_frames() {
        let frame = AudioFrame::new(&[7; 160], FrameKind::Voice).unwrap();
        assert_eq!(frame.len(), 160);
        assert_eq!(frame[159], 7);
        assert!(AudioFrame::new(&[0; 961], FrameKind::Voice).is_err());
    }

    /// An engine on ports `port_min..=port_max` and a PCMU stream
    /// configuration sending to a discard address.
    fn pcmu_engine(port_min: u16, port_max: u16, workers: usize) -> (MediaEngine, MediaConfig) {
        let engine = MediaEngine::start(EngineConfig {
            port_min,
            port_max,
            workers,
            ..EngineConfig::default()
        })
        .unwrap();
        let remote = SocketAddr::from(([127, 0, 0, 1], 9));
        let config = MediaConfig::new(
            crate::codec::CodecSpec::Pcmu,
            crate::rtp_session::PayloadType::PCMU,
            remote,
        );
        (engine, config)
    }

    #[tokio::test]
    async fn ports_are_even_pairs_from_the_range() {
        let (engine, config) = pcmu_engine(43101, 43199, 1);
        let a = engine.open(config.clone(), OpenOptions::default()).unwrap();
        let b = engine.open(config, OpenOptions::default()).unwrap();
        for handle in [&a, &b] {
            let port = handle.local_addr().port();
            assert!(port % 2 == 0 && (43102..43199).contains(&port));
            assert_eq!(handle.local_rtcp_addr().unwrap().port(), port + 1);
        }
        assert_ne!(a.local_addr(), b.local_addr());
        let closed = a.close().await.unwrap();
        assert!(closed.recording.is_none());
    }

    #[tokio::test]
    async fn a_stream_opened_for_a_hook_has_no_frame_channels_and_still_sends() {
        let (engine, mut config) = pcmu_engine(43301, 43399, 1);
        let far = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        far.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        config.remote = far.local_addr().unwrap();
        let mut stream = engine.open(config, OpenOptions::hooked()).unwrap();
        assert!(stream.take_inbound().is_none());
        assert!(stream.outbound_sender().is_none());
        assert!(matches!(
            stream.try_send_frame(&[0; 160]),
            Err(EngineError::NoFrameChannels)
        ));
        assert!(matches!(
            stream.send_frame(&[0; 160]).await,
            Err(EngineError::NoFrameChannels)
        ));
        assert!(stream.recv_frame().await.is_none());
        // Without a hook it sends comfort silence: the far end hears RTP.
        let mut buf = [0u8; 256];
        let far_end =
            tokio::task::spawn_blocking(move || far.recv(&mut buf).map(|n| buf[..n].to_vec()));
        let packet = far_end.await.unwrap().expect("an RTP packet");
        assert_eq!(packet[0] >> 6, 2, "RTP version 2");
        stream.close().await.unwrap();
    }

    #[tokio::test]
    async fn ports_are_drawn_at_random_yet_every_free_pair_is_found() {
        // Sequential ports let anyone who saw one call's port send to the next call's
        // first: the next port must not be predictable.
        let (engine, config) = pcmu_engine(44000, 47998, 1);
        let streams: Vec<StreamHandle> = (0..8)
            .map(|_| engine.open(config.clone(), OpenOptions::default()).unwrap())
            .collect();
        let ports: Vec<u16> = streams.iter().map(|s| s.local_addr().port()).collect();
        let steps: Vec<i32> = ports
            .windows(2)
            .map(|w| i32::from(w[1]) - i32::from(w[0]))
            .collect();
        // 2000 pairs: eight ports in order two apart would be a 1 in 2000^7 draw.
        assert!(
            steps.iter().any(|&step| step != 2),
            "ports in sequence: {ports:?}"
        );
        drop(streams);

        // A range of three pairs: wherever the search starts, all three are found,
        // then the range is exhausted.
        let (engine, config) = pcmu_engine(44100, 44105, 1);
        let mut taken: Vec<StreamHandle> = Vec::new();
        for _ in 0..3 {
            taken.push(engine.open(config.clone(), OpenOptions::default()).unwrap());
        }
        let mut ports: Vec<u16> = taken.iter().map(|s| s.local_addr().port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [44100, 44102, 44104]);
        assert!(matches!(
            engine.open(config, OpenOptions::default()),
            Err(EngineError::NoFreePort { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_streams_ports_are_free_when_close_returns() {
        let (engine, config) = pcmu_engine(43201, 43299, 2);
        for _ in 0..50 {
            let stream = engine.open(config.clone(), OpenOptions::default()).unwrap();
            let (rtp, rtcp) = (stream.local_addr(), stream.local_rtcp_addr().unwrap());
            stream.close().await.unwrap();
            // Reopening on the same port right away must not find it taken.
            let again = (StdUdpSocket::bind(rtp), StdUdpSocket::bind(rtcp));
            assert!(again.0.is_ok() && again.1.is_ok(), "{again:?}");
        }
    }

    #[test]
    fn empty_range_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let result = MediaEngine::start(EngineConfig {
            port_min: 5001,
            port_max: 5001,
            ..EngineConfig::default()
        });
        assert!(matches!(result, Err(EngineError::EmptyPortRange { .. })));
    }
}
