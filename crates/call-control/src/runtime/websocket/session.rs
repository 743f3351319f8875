//! One call's WebSocket stream: connect, then move messages both ways until
//! the call or the connection ends.
//!
//! The socket is split: a writer task owns the sending half behind a
//! bounded queue, so a slow agent never stalls the reading of its own
//! messages or of the call's frames. When the queue is full, caller audio
//! is dropped (counted, logged at the end); control messages wait for room.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use media::codec::SampleRate;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{client_async_tls_with_config, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, info_span, warn, Instrument};

use super::messages::{
    self, AgentMessage, DtmfInfo, MarkInfo, MediaFormat, MediaInfo, StartInfo, StopInfo,
    StreamMessage, DTMF_TRACK, INBOUND_TRACK,
};
use super::payload::{Downlink, Uplink, WireFormat};
use super::Websocket;
use crate::destinations::DestinationError;
use crate::redact::loggable_url;
use crate::runtime::audio::load_wav;
use crate::runtime::{CallMetadata, RuntimeError, RuntimeInput, RuntimeOutput, RuntimeSession};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages waiting for the writer: 5 s of caller audio.
const OUTBOUND_QUEUE: usize = 256;
/// How long the closing handshake may take once the call is over.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Malformed messages logged as warnings per call; the rest at debug level.
const WARNINGS_PER_CALL: u64 = 10;
/// Marks of the agent waiting for their audio to play; more are dropped (and counted).
pub const MAX_PENDING_MARKS: usize = 1_000;
/// Largest message the agent may send: 1 MiB holds over a minute of 8 kHz mu-law audio in
/// base64; tungstenite's default (64 MiB) would let one agent hold that much per call.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// The mark that follows the fallback audio (agent marks count up from 1).
const FALLBACK_MARK: u64 = u64::MAX;
/// Time allowed beyond the fallback audio's length for it to play out.
const FALLBACK_SLACK: Duration = Duration::from_secs(5);

/// Runs the runtime for one call.
pub(super) async fn run(
    runtime: Websocket,
    metadata: CallMetadata,
    mut session: RuntimeSession,
) -> Result<(), RuntimeError> {
    let span = info_span!(
        "websocket",
        url = %loggable_url(&runtime.url),
        format = runtime.format.encoding(),
    );
    async move {
        let result = match connect(&runtime).await {
            Ok(socket) => match Stream::new(runtime.format, &metadata) {
                Ok(stream) => stream.run(socket, &metadata, &mut session).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            warn!(%error, "agent stream failed");
            if let Some(path) = &runtime.settings.fallback_audio {
                play_fallback(path, metadata.sample_rate, &mut session).await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Opens the WebSocket (TCP_NODELAY: every message is a frame of live audio) to an
/// address of the URL's host that the destination policy allows: the runtime resolves the
/// host, checks every address, and runs the handshake (and TLS for `wss://`) over its own
/// connection to a checked one.
async fn connect(runtime: &Websocket) -> Result<Socket, RuntimeError> {
    let unreachable = RuntimeError::Unreachable;
    let mut request = runtime
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| unreachable(format!("invalid URL: {e}")))?;
    let secure = match request.uri().scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        other => {
            return Err(unreachable(format!(
                "unsupported URL scheme {:?}",
                other.unwrap_or("")
            )))
        }
    };
    let policy = runtime.settings.destinations;
    if !secure && !runtime.headers.is_empty() && !policy.allows_private() {
        return Err(RuntimeError::Refused(format!(
            "the agent URL is ws:// and the agent has headers, which would cross the network \
             unencrypted: use wss:// (or set {}, or {}=true)",
            crate::destinations::SETTING,
            crate::destinations::SETTING_ENV
        )));
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| unreachable("the URL has no host".into()))?
        .to_owned();
    let port = request
        .uri()
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    for (name, value) in &runtime.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| unreachable(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| unreachable(format!("invalid value of header {name:?}")))?;
        request.headers_mut().insert(header, value);
    }
    let timeout = runtime.settings.connect_timeout;
    let limits = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let connecting = async {
        let addrs = policy
            .resolve(&host, port)
            .await
            .map_err(|error| match error {
                DestinationError::Refused { .. } => RuntimeError::Refused(error.to_string()),
                _ => unreachable(error.to_string()),
            })?;
        let tcp = connect_tcp(&addrs).await.map_err(unreachable)?;
        client_async_tls_with_config(request, tcp, Some(limits), None)
            .await
            .map_err(|error| unreachable(error.to_string()))
    };
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(unreachable(format!(
            "no WebSocket connection within {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(error)) => Err(error),
        Ok(Ok((socket, response))) => {
            debug!(status = response.status().as_u16(), "agent connected");
            Ok(socket)
        }
    }
}

/// A TCP connection to the first of `addrs` that accepts one.
async fn connect_tcp(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = String::from("no addresses");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                if let Err(error) = tcp.set_nodelay(true) {
                    debug!(%error, "TCP_NODELAY not set");
                }
                return Ok(tcp);
            }
            Err(error) => last = format!("{addr}: {error}"),
        }
    }
    Err(last)
}

/// The state of one stream.
struct Stream {
    stream_sid: String,
    format: WireFormat,
    uplink: Uplink,
    downlink: Downlink,
    /// Last `sequenceNumber` sent.
    sequence: u64,
    /// Caller frames seen (the `chunk` of the last one).
    chunks: u64,
    /// Marks of the agent not yet echoed, by the id given to the bridge.
    marks: HashMap<u64, String>,
    next_mark: u64,
    /// The agent asked to hang up: its connection may close now.
    hangup_requested: bool,
    /// The agent sent its close frame: nothing more is sent to it.
    agent_closed: bool,
    dropped_frames: u64,
    skipped_messages: u64,
    /// Agent marks dropped because [`MAX_PENDING_MARKS`] were pending.
    dropped_marks: u64,
}

impl Stream {
    fn new(format: WireFormat, metadata: &CallMetadata) -> Result<Self, RuntimeError> {
        let rate = SampleRate::from_hz(metadata.sample_rate).ok_or_else(|| {
            RuntimeError::Failed(format!("call rate {} Hz", metadata.sample_rate))
        })?;
        let resampler_error =
            |e: media::resample::ResampleError| RuntimeError::Failed(e.to_string());
        Ok(Self {
            stream_sid: format!("MZ{:032x}", rand::random::<u128>()),
            format,
            uplink: Uplink::new(format, rate).map_err(resampler_error)?,
            downlink: Downlink::new(format, rate).map_err(resampler_error)?,
            sequence: 0,
            chunks: 0,
            marks: HashMap::new(),
            next_mark: 1,
            hangup_requested: false,
            agent_closed: false,
            dropped_frames: 0,
            skipped_messages: 0,
            dropped_marks: 0,
        })
    }

    async fn run(
        mut self,
        socket: Socket,
        metadata: &CallMetadata,
        session: &mut RuntimeSession,
    ) -> Result<(), RuntimeError> {
        let (sink, mut source) = socket.split();
        let (outbound, queue) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
        let mut writer: JoinHandle<Result<(), tungstenite::Error>> =
            tokio::spawn(write_all(sink, queue).in_current_span());
        let mut writer_done = false;
        let mut agent_open = true;

        send(
            &outbound,
            &StreamMessage::Connected {
                protocol: messages::PROTOCOL,
                version: messages::VERSION,
            },
        )
        .await;
        let start = self.start_message(metadata);
        send(&outbound, &start).await;
        info!(stream_sid = %self.stream_sid, "agent stream started");

        let result = loop {
            tokio::select! {
                input = session.input.recv() => match input {
                    Some(input) => self.on_input(input, &outbound).await,
                    None => break Ok(()),
                },
                // After a close frame the stream is read on: the next read
                // sends tungstenite's reply and then ends the stream.
                message = source.next(), if agent_open => match message {
                    Some(Ok(Message::Close(frame))) => {
                        if let Err(error) = self.on_close(frame, session).await {
                            break Err(error);
                        }
                    }
                    Some(Ok(message)) => self.on_message(message, session).await,
                    Some(Err(error)) => {
                        agent_open = false;
                        if !self.hangup_requested {
                            break Err(RuntimeError::Disconnected(error.to_string()));
                        }
                    }
                    None => {
                        agent_open = false;
                        if !self.hangup_requested {
                            break Err(RuntimeError::Disconnected(
                                "the connection ended without a close frame".into(),
                            ));
                        }
                    }
                },
                written = &mut writer, if !writer_done => {
                    writer_done = true;
                    agent_open = false;
                    if !self.hangup_requested {
                        let reason = match written {
                            Ok(Ok(())) => "writer stopped".to_owned(),
                            Ok(Err(error)) => error.to_string(),
                            Err(error) => error.to_string(),
                        };
                        break Err(RuntimeError::Disconnected(reason));
                    }
                }
            }
        };

        if result.is_ok() && !writer_done && !self.agent_closed {
            let stop = StreamMessage::Stop {
                stream_sid: self.stream_sid.clone(),
                sequence_number: self.next_sequence(),
                stop: StopInfo {
                    account_sid: metadata.org_id.clone(),
                    call_sid: metadata.call_id.clone(),
                },
            };
            send(&outbound, &stop).await;
        }
        drop(outbound);
        if !writer_done && tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
            debug!("closing handshake unfinished");
            writer.abort();
        }
        info!(
            frames = self.chunks,
            dropped_frames = self.dropped_frames,
            skipped_messages = self.skipped_messages,
            dropped_marks = self.dropped_marks,
            "agent stream ended"
        );
        result
    }

    fn start_message(&mut self, metadata: &CallMetadata) -> StreamMessage {
        let mut parameters = BTreeMap::from([
            ("prompt".to_owned(), metadata.prompt.clone()),
            ("from".to_owned(), metadata.from_number.clone()),
            ("to".to_owned(), metadata.to_number.clone()),
            // The names Pipecat's `parse_telephony_websocket` reads the numbers from.
            ("from_number".to_owned(), metadata.from_number.clone()),
            ("to_number".to_owned(), metadata.to_number.clone()),
            (
                "direction".to_owned(),
                metadata.direction.as_str().to_owned(),
            ),
            ("agent_id".to_owned(), metadata.agent_id.clone()),
            (
                "variables".to_owned(),
                serde_json::to_string(&metadata.variables).unwrap_or_default(),
            ),
        ]);
        if let Some(greeting) = &metadata.greeting {
            parameters.insert("greeting".to_owned(), greeting.clone());
        }
        if let Some(sip_call_id) = &metadata.sip_call_id {
            parameters.insert("sip_call_id".to_owned(), sip_call_id.clone());
        }
        StreamMessage::Start {
            sequence_number: self.next_sequence(),
            start: StartInfo {
                stream_sid: self.stream_sid.clone(),
                account_sid: metadata.org_id.clone(),
                call_sid: metadata.call_id.clone(),
                tracks: vec![INBOUND_TRACK],
                custom_parameters: parameters,
                media_format: MediaFormat {
                    encoding: self.format.encoding(),
                    sample_rate: self.format.rate().hz(),
                    channels: 1,
                },
            },
            stream_sid: self.stream_sid.clone(),
        }
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// The agent's close frame. A normal close (status 1000, or none) is
    /// how frameworks end a conversation: the agent hangs up, once the audio
    /// it sent before was played. Any other status (1001 going away, 1011
    /// internal error, ...) is a failure of the agent.
    async fn on_close(
        &mut self,
        frame: Option<CloseFrame>,
        session: &RuntimeSession,
    ) -> Result<(), RuntimeError> {
        self.agent_closed = true;
        if self.hangup_requested {
            debug!(?frame, "agent closed the stream after hanging up");
            return Ok(());
        }
        match abnormal_close(frame.as_ref()) {
            None => {
                info!(?frame, "agent closed the stream: it hangs up");
                self.apply(AgentMessage::Hangup, session).await;
                Ok(())
            }
            Some(reason) => Err(RuntimeError::Disconnected(reason)),
        }
    }

    /// What the call hands the runtime: caller audio, digits, marks reached.
    async fn on_input(&mut self, input: RuntimeInput, outbound: &mpsc::Sender<Message>) {
        if self.agent_closed {
            // The agent said goodbye: it hears nothing more of the call.
            return;
        }
        match input {
            RuntimeInput::Audio(frame) => {
                self.chunks += 1;
                let timestamp = (self.chunks - 1) * 20;
                let Ok(permit) = outbound.try_reserve() else {
                    self.dropped_frames += 1;
                    return;
                };
                let payload = match self.uplink.encode(frame.samples()) {
                    Ok(bytes) => messages::encode_payload(bytes),
                    Err(error) => {
                        debug!(%error, "caller frame not encoded");
                        return;
                    }
                };
                let message = StreamMessage::Media {
                    sequence_number: self.next_sequence(),
                    media: MediaInfo {
                        track: INBOUND_TRACK,
                        chunk: self.chunks.to_string(),
                        timestamp: timestamp.to_string(),
                        payload,
                    },
                    stream_sid: self.stream_sid.clone(),
                };
                permit.send(Message::text(message.to_json()));
            }
            RuntimeInput::Dtmf(digit) => {
                let message = StreamMessage::Dtmf {
                    stream_sid: self.stream_sid.clone(),
                    sequence_number: self.next_sequence(),
                    dtmf: DtmfInfo {
                        track: DTMF_TRACK,
                        digit: digit.to_string(),
                    },
                };
                send(outbound, &message).await;
            }
            RuntimeInput::Mark { id, cleared } => {
                let Some(name) = self.marks.remove(&id) else {
                    return;
                };
                debug!(name, cleared, "mark reached");
                let message = StreamMessage::Mark {
                    stream_sid: self.stream_sid.clone(),
                    sequence_number: self.next_sequence(),
                    mark: MarkInfo { name },
                };
                send(outbound, &message).await;
            }
        }
    }

    /// One frame from the agent.
    async fn on_message(&mut self, message: Message, session: &RuntimeSession) {
        let parsed = match message {
            Message::Text(text) => messages::parse(text.as_str()),
            Message::Binary(bytes) => Err(messages::ParseError::Binary(bytes.len())),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => return,
        };
        match parsed {
            Ok(message) => self.apply(message, session).await,
            Err(error) => {
                self.skipped_messages += 1;
                if self.skipped_messages <= WARNINGS_PER_CALL {
                    warn!(%error, "agent message skipped");
                } else {
                    debug!(%error, "agent message skipped");
                }
            }
        }
    }

    async fn apply(&mut self, message: AgentMessage, session: &RuntimeSession) {
        let mut pcm = Vec::new();
        let decoded = match &message {
            AgentMessage::Media { payload } => self.downlink.decode(payload, &mut pcm),
            AgentMessage::Mark { .. } | AgentMessage::Hangup | AgentMessage::Dtmf { .. } => {
                self.downlink.flush(&mut pcm)
            }
            AgentMessage::Clear => {
                self.downlink.clear();
                Ok(())
            }
            AgentMessage::Transcript { .. } => Ok(()),
        };
        if let Err(error) = decoded {
            debug!(%error, "agent audio not decoded");
        }
        if !pcm.is_empty() {
            session.send(RuntimeOutput::Audio(pcm)).await;
        }
        let output = match message {
            AgentMessage::Media { .. } => return,
            AgentMessage::Mark { name } => {
                if self.marks.len() >= MAX_PENDING_MARKS {
                    self.dropped_marks += 1;
                    if self.dropped_marks == 1 {
                        warn!(
                            limit = MAX_PENDING_MARKS,
                            "agent marks pending at the limit: further marks are dropped"
                        );
                    }
                    return;
                }
                let id = self.next_mark;
                self.next_mark += 1;
                self.marks.insert(id, name);
                RuntimeOutput::Mark(id)
            }
            AgentMessage::Clear => RuntimeOutput::Clear,
            AgentMessage::Transcript {
                role,
                text,
                is_final,
            } => RuntimeOutput::Transcript {
                role: role.to_owned(),
                text,
                is_final,
            },
            AgentMessage::Hangup => {
                info!("agent hangs up");
                self.hangup_requested = true;
                RuntimeOutput::Hangup
            }
            AgentMessage::Dtmf { digits } => RuntimeOutput::Dtmf(digits),
        };
        // Fails only once the call is over; its input ends next.
        session.send(output).await;
    }
}

/// Why a close frame ends the stream as a failure, or `None` for a normal
/// close (status 1000 or no status at all, as `close()` without arguments
/// sends in most WebSocket libraries).
pub(super) fn abnormal_close(frame: Option<&CloseFrame>) -> Option<String> {
    let frame = frame?;
    if frame.code == CloseCode::Normal {
        return None;
    }
    let code = u16::from(frame.code);
    Some(if frame.reason.is_empty() {
        format!("the agent closed the WebSocket with status {code}")
    } else {
        format!(
            "the agent closed the WebSocket with status {code}: {}",
            frame.reason
        )
    })
}

/// Queues a control message (waits for room; a gone writer is reported by its task).
async fn send(outbound: &mpsc::Sender<Message>, message: &StreamMessage) {
    let _ = outbound.send(Message::text(message.to_json())).await;
}

/// Sends what is queued, flushing once per burst, then closes the socket.
async fn write_all(
    mut sink: SplitSink<Socket, Message>,
    mut queue: mpsc::Receiver<Message>,
) -> Result<(), tungstenite::Error> {
    while let Some(message) = queue.recv().await {
        sink.feed(message).await?;
        while let Ok(more) = queue.try_recv() {
            sink.feed(more).await?;
        }
        sink.flush().await?;
    }
    sink.close().await
}

/// Plays the fallback audio and waits until it was sent (or the call ended).
async fn play_fallback(path: &Path, rate: u32, session: &mut RuntimeSession) {
    let file = path.to_path_buf();
    let pcm = match tokio::task::spawn_blocking(move || load_wav(&file, rate)).await {
        Ok(Ok(pcm)) => pcm,
        Ok(Err(error)) => {
            warn!(%error, "fallback audio not played");
            return;
        }
        Err(error) => {
            warn!(%error, "fallback audio loader failed");
            return;
        }
    };
    let length = Duration::from_millis(pcm.len() as u64 * 1000 / u64::from(rate.max(1)));
    let queued = session.send(RuntimeOutput::Clear).await
        && session.send(RuntimeOutput::Audio(pcm)).await
        && session.send(RuntimeOutput::Mark(FALLBACK_MARK)).await;
    if !queued {
        return;
    }
    let played = async {
        while let Some(input) = session.input.recv().await {
            if let RuntimeInput::Mark {
                id: FALLBACK_MARK, ..
            } = input
            {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(length + FALLBACK_SLACK, played).await {
        Ok(true) => info!(
            length_ms = length.as_millis() as u64,
            "fallback audio played"
        ),
        Ok(false) => debug!("call ended during the fallback audio"),
        Err(_) => warn!("fallback audio did not play out in time"),
    }
}
