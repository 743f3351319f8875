//! End to end: the `websocket` agent runtime. The real dialcore service (its
//! library on free loopback ports) places and answers calls with SIPp as the
//! carrier or caller over real SIP and RTP, and a WebSocket server in the
//! test (tokio-tungstenite) plays the customer's AI, speaking the message
//! format of Twilio Media Streams.
//!
//! Guards issue 6: `start` carries the call's metadata and rendered prompt;
//! the caller's RTP audio and DTMF reach the agent as `media` and `dtmf`;
//! the agent's audio reaches the caller (SIPp echoes it back with
//! `-rtp_echo`, so the agent hears it only if SIPp received it); a `mark`
//! comes back once its audio was played; `clear` drops the rest of the
//! queued audio (the recording shows it was never played); transcript
//! events end up on the call record and in `call.ended`; the agent hangs
//! up. A WebSocket that refuses to connect and one that drops mid-call end
//! the call with outcome `error` and the reason on the record (after the
//! configured fallback audio).
//!
//! Guards issue 11: an agent that ends the conversation by closing its
//! WebSocket normally (a close frame, as Pipecat does) hangs up: its last
//! words are played, the caller gets a BYE, outcome `agent_hangup`; a drop
//! without a close frame stays `error`/`agent_disconnected`.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use media::codec::g711::{linear_to_ulaw, ulaw_to_linear};
use serde_json::{json, Value};
use service::TestService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const CALL_DONE: Duration = Duration::from_secs(60);
/// Longest wait for one expected message from the service.
const MESSAGE_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- the AI side

/// An accepted stream and the request headers it came with.
type Accepted = (WebSocketStream<TcpStream>, Vec<(String, String)>);

/// A WebSocket server standing for the customer's AI: hands every accepted
/// connection to the test, with the headers it came with.
struct AgentServer {
    url: String,
    connections: mpsc::Receiver<Accepted>,
}

impl AgentServer {
    // The handshake callback's error type is tungstenite's HTTP response.
    #[allow(clippy::result_large_err)]
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/media-stream", listener.local_addr().expect("addr"));
        let (tx, connections) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let headers = Arc::new(Mutex::new(Vec::new()));
                let seen = Arc::clone(&headers);
                let callback =
                    move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          response| {
                        let mut seen = seen.lock().expect("lock");
                        for (name, value) in request.headers() {
                            seen.push((
                                name.as_str().to_owned(),
                                value.to_str().unwrap_or("").to_owned(),
                            ));
                        }
                        Ok(response)
                    };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await {
                    let headers = headers.lock().expect("lock").clone();
                    if tx.send((ws, headers)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Self { url, connections }
    }

    async fn accept(&mut self) -> AgentConnection {
        let (ws, headers) = tokio::time::timeout(CALL_DONE, self.connections.recv())
            .await
            .expect("the service connects to the agent")
            .expect("server alive");
        AgentConnection {
            ws,
            headers,
            stream_sid: String::new(),
            caller_audio: Vec::new(),
            last_chunk: 0,
            last_sequence: 0,
            digits: String::new(),
            marks: Vec::new(),
            stopped: None,
        }
    }
}

/// One call's stream, seen from the AI.
struct AgentConnection {
    ws: WebSocketStream<TcpStream>,
    headers: Vec<(String, String)>,
    stream_sid: String,
    /// Every `media` payload received, decoded to PCM, in order.
    caller_audio: Vec<Vec<i16>>,
    last_chunk: u64,
    last_sequence: u64,
    digits: String,
    /// Mark names echoed, with when.
    marks: Vec<(String, Instant)>,
    stopped: Option<Value>,
}

impl AgentConnection {
    /// The next message; keeps the caller's audio, digits and marks, and
    /// checks the numbering of every message on the way.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(MESSAGE_WAIT, self.ws.next())
                .await
                .expect("a message from the service in time")
                .expect("the stream is open")
                .expect("no WebSocket error");
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("JSON from the service");
            if let Some(sequence) = value["sequenceNumber"].as_str() {
                let sequence: u64 = sequence.parse().expect("numeric sequenceNumber");
                assert!(
                    sequence > self.last_sequence,
                    "sequence numbers increase: {value}"
                );
                self.last_sequence = sequence;
            }
            match value["event"].as_str() {
                Some("media") => {
                    assert_eq!(value["streamSid"], self.stream_sid.as_str());
                    let media = &value["media"];
                    assert_eq!(media["track"], "inbound");
                    let chunk: u64 = media["chunk"].as_str().expect("chunk").parse().expect("n");
                    assert!(chunk > self.last_chunk, "chunks increase: {value}");
                    self.last_chunk = chunk;
                    let timestamp: u64 =
                        media["timestamp"].as_str().expect("ts").parse().expect("n");
                    assert_eq!(timestamp, (chunk - 1) * 20, "{value}");
                    let bytes = BASE64
                        .decode(media["payload"].as_str().expect("payload"))
                        .expect("base64");
                    assert_eq!(bytes.len(), 160, "20 ms of 8 kHz mu-law");
                    self.caller_audio
                        .push(bytes.iter().map(|&b| ulaw_to_linear(b)).collect());
                }
                Some("dtmf") => {
                    assert_eq!(value["dtmf"]["track"], "inbound_track");
                    self.digits
                        .push_str(value["dtmf"]["digit"].as_str().expect("digit"));
                }
                Some("mark") => self.marks.push((
                    value["mark"]["name"].as_str().expect("name").to_owned(),
                    Instant::now(),
                )),
                Some("stop") => self.stopped = Some(value.clone()),
                _ => {}
            }
            return value;
        }
    }

    /// Reads `connected` and `start`; returns `start`.
    async fn handshake(&mut self) -> Value {
        let connected = self.next().await;
        assert_eq!(
            connected,
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        );
        let start = self.next().await;
        assert_eq!(start["event"], "start", "{start}");
        assert_eq!(start["sequenceNumber"], "1");
        self.stream_sid = start["streamSid"].as_str().expect("streamSid").to_owned();
        assert_eq!(start["start"]["streamSid"], self.stream_sid.as_str());
        assert_eq!(
            start["start"]["mediaFormat"],
            json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
        );
        assert_eq!(start["start"]["tracks"], json!(["inbound"]));
        start
    }

    /// Reads until the mark `name` comes back; returns when it did.
    async fn wait_mark(&mut self, name: &str) -> Instant {
        loop {
            if let Some((_, at)) = self.marks.iter().find(|(n, _)| n == name) {
                return *at;
            }
            self.next().await;
        }
    }

    /// Reads until `frames` more 20 ms frames of the caller arrived: the
    /// call's own clock.
    async fn wait_frames(&mut self, frames: usize) {
        let target = self.caller_audio.len() + frames;
        while self.caller_audio.len() < target {
            self.next().await;
        }
    }

    async fn wait_digit(&mut self, digit: char) {
        while !self.digits.contains(digit) {
            self.next().await;
        }
    }

    /// Reads until `stop`, then until the service closes the socket.
    async fn wait_stop(&mut self) -> Value {
        while self.stopped.is_none() {
            self.next().await;
        }
        loop {
            match tokio::time::timeout(MESSAGE_WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("the service did not close the WebSocket after stop"),
            }
        }
        self.stopped.clone().expect("stop")
    }

    async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send to the service");
    }

    /// Sends audio as mu-law `media` messages of `chunk_bytes` each (a TTS
    /// engine sends faster than real time, in chunks of any size).
    async fn play(&mut self, pcm: &[i16], chunk_bytes: usize) {
        let ulaw: Vec<u8> = pcm.iter().map(|&s| linear_to_ulaw(s)).collect();
        for chunk in ulaw.chunks(chunk_bytes) {
            let sid = self.stream_sid.clone();
            self.send(json!({"event": "media", "streamSid": sid, "media": {"payload": BASE64.encode(chunk)}}))
                .await;
        }
    }

    async fn mark(&mut self, name: &str) {
        let sid = self.stream_sid.clone();
        self.send(json!({"event": "mark", "streamSid": sid, "mark": {"name": name}}))
            .await;
    }
}

// ---------------------------------------------------------------- audio

fn tone(hz: f64, ms: u32) -> Vec<i16> {
    let samples = ms as usize * 8;
    (0..samples)
        .map(|n| ((std::f64::consts::TAU * hz * n as f64 / 8000.0).sin() * 8000.0) as i16)
        .collect()
}

fn rms(pcm: &[i16]) -> f64 {
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / pcm.len().max(1) as f64).sqrt()
}

/// Dominant frequency of a tone by zero crossings.
fn frequency(pcm: &[i16]) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 * 8000.0 / pcm.len().max(1) as f64 / 2.0
}

/// Seconds of one channel of a stereo recording with sound (10 ms windows
/// above an RMS of 1000).
fn active_seconds(samples: &[i16], channel: usize, rate: u32) -> f64 {
    let window = rate as usize / 100;
    let channel: Vec<i16> = samples.iter().skip(channel).step_by(2).copied().collect();
    let active = channel.chunks(window).filter(|w| rms(w) > 1000.0).count();
    active as f64 * 0.01
}

/// The inbound call the service took, once it has ended.
async fn ended_inbound_call(svc: &TestService) -> Value {
    let call = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    svc.wait_terminal(call["id"].as_str().expect("id"), CALL_DONE)
        .await
}

async fn recording(svc: &TestService, call: &Value) -> (u32, Vec<i16>) {
    let reader = svc.recording(call).await;
    let rate = reader.spec().sample_rate;
    let samples = reader
        .into_samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    (rate, samples)
}

// ---------------------------------------------------------------- SIPp and webhooks

async fn carrier(scenario: &str) -> sipp::SippProcess {
    sipp::one_call_server(scenario, sipp::Transport::Udp, |server| {
        let media_port = sipp::free_port(sipp::Transport::Udp).expect("media port");
        server
            .timeout(Duration::from_secs(90))
            .arg("-mp")
            .arg(media_port.to_string())
    })
    .await
}

/// Starts SIPp calling `number` at the service; returns its outcome when it ends.
fn caller(
    svc: &TestService,
    scenario: &str,
    number: &str,
    extra: &[&str],
) -> tokio::task::JoinHandle<sipp::SippOutcome> {
    sipp::require_sipp();
    let media_port = sipp::free_port(sipp::Transport::Udp).expect("media port");
    let mut sipp = sipp::Sipp::client(sipp::Scenario::file(scenario), svc.sip)
        .service(number)
        .calls(1)
        .timeout(Duration::from_secs(90))
        .arg("-mp")
        .arg(media_port.to_string());
    for arg in extra {
        sipp = sipp.arg(*arg);
    }
    tokio::task::spawn_blocking(move || sipp.run().expect("SIPp ran"))
}

/// Collects webhook bodies posted to it.
async fn webhook_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                if let Ok(value) = serde_json::from_str::<Value>(&body) {
                    let _ = tx.send(value);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

async fn websocket_agent(
    svc: &TestService,
    carrier: SocketAddr,
    number: &str,
    url: &str,
) -> String {
    svc.agent_with_number(
        carrier,
        number,
        json!({"type": "websocket", "url": url, "headers": {"Authorization": "Bearer agent-secret"}}),
        &["127.0.0.0/8"],
    )
    .await
    .id
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hears_the_caller_plays_marks_clears_keeps_a_transcript_and_hangs_up() {
    let mut ai = AgentServer::start().await;
    let (hooks, mut deliveries) = webhook_receiver().await;
    let sipp = carrier("service/ws_carrier.xml").await;
    let svc = TestService::start().await;
    svc.create(
        "/webhooks",
        json!({"url": format!("http://{hooks}/hook"), "events": ["call.ended"], "secret": "whsec_ws_0123456789"}),
    )
    .await;
    let agent = websocket_agent(&svc, sipp.address(), "+15550001111", &ai.url).await;
    // The header value is write-only and encrypted at rest; the call below still sends it.
    let (_, read) = svc
        .request(
            reqwest::Method::GET,
            &format!("/agents/{agent}"),
            None,
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(
        read["data"]["runtime"]["headers"],
        json!({"Authorization": "<redacted>"}),
        "{read}"
    );
    let stored = svc.stored("SELECT runtime FROM agents").await;
    assert!(!stored[0].contains("agent-secret"), "{stored:?}");
    let (status, body) = svc
        .post(
            "/calls",
            json!({
                "agent_id": agent,
                "phone_number": "+15551234567",
                "variables": {"name": "Ada", "topic": "billing"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let call_id = body["data"]["id"].as_str().expect("id").to_owned();

    let mut ws = ai.accept().await;
    assert!(
        ws.headers
            .iter()
            .any(|(n, v)| n == "authorization" && v == "Bearer agent-secret"),
        "the agent's headers: {:?}",
        ws.headers
    );
    let start = ws.handshake().await;
    let info = &start["start"];
    assert_eq!(info["callSid"], call_id.as_str());
    assert!(info["accountSid"].as_str().is_some_and(|s| !s.is_empty()));
    let params = &info["customParameters"];
    assert_eq!(
        params["prompt"], "You are calling Ada about billing.",
        "{start}"
    );
    assert_eq!(params["greeting"], "Hello Ada!", "{start}");
    assert_eq!(params["direction"], "outbound");
    assert_eq!(params["from"], "+15550001111");
    assert_eq!(params["to"], "+15551234567");
    assert_eq!(params["agent_id"], agent.as_str());
    let variables: Value =
        serde_json::from_str(params["variables"].as_str().expect("variables")).expect("JSON");
    assert_eq!(variables, json!({"name": "Ada", "topic": "billing"}));

    // The greeting: 1 s of 1 kHz sent at once in odd-sized chunks; its mark
    // comes back only once it was played, in real time.
    let sent = Instant::now();
    ws.play(&tone(1000.0, 1000), 1234).await;
    ws.mark("greeting").await;
    let played = ws.wait_mark("greeting").await - sent;
    assert!(
        played >= Duration::from_millis(900) && played < Duration::from_secs(10),
        "the mark comes back after its 1 s of audio was played: {played:?}"
    );

    // A long answer, interrupted half a second in (the caller's 25 frames).
    ws.play(&tone(500.0, 5000), 3200).await;
    ws.mark("long answer").await;
    ws.wait_frames(25).await;
    let sid = ws.stream_sid.clone();
    ws.send(json!({"event": "clear", "streamSid": sid})).await;
    let cleared_at = Instant::now();
    let echoed = ws.wait_mark("long answer").await;
    assert!(
        echoed - cleared_at < Duration::from_secs(3),
        "the pending mark comes back at the clear, not after 4.5 s more audio"
    );

    // Malformed messages are skipped; the call goes on.
    ws.ws.send(Message::text("{oops")).await.expect("send");
    ws.send(json!({"event": "media", "media": {"payload": "not base64!"}}))
        .await;
    ws.send(json!({"event": "teleport"})).await;

    ws.send(json!({"event": "transcript", "speaker": "caller", "text": "I have a question about my bill", "final": true}))
        .await;
    ws.send(json!({"event": "transcript", "speaker": "agent", "text": "Sure", "final": false}))
        .await;
    ws.send(json!({"event": "transcript", "speaker": "agent", "text": "Sure, let me check that.", "final": true}))
        .await;

    // The caller's speech (the sip-tester recording) reached the agent, then
    // the digit it pressed after it.
    ws.wait_digit('1').await;
    let speech_frames = ws.caller_audio.iter().filter(|f| rms(f) > 300.0).count();
    assert!(
        speech_frames >= 50,
        "at least 1 s of the caller's speech arrived as media: {speech_frames} frames of {}",
        ws.caller_audio.len()
    );

    ws.play(&tone(750.0, 300), 2400).await;
    ws.mark("goodbye").await;
    ws.send(json!({"event": "hangup"})).await;
    ws.wait_mark("goodbye").await;
    let stop = ws.wait_stop().await;
    assert_eq!(stop["stop"]["callSid"], call_id.as_str());
    assert_eq!(stop["streamSid"], ws.stream_sid.as_str());

    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "agent_hangup", "{call}");
    let transcript = call["transcript"].as_array().expect("transcript");
    let lines: Vec<(&str, &str)> = transcript
        .iter()
        .map(|e| {
            (
                e["role"].as_str().unwrap_or(""),
                e["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            ("caller", "I have a question about my bill"),
            ("agent", "Sure, let me check that.")
        ],
        "only final entries, in order: {call}"
    );
    assert!(transcript.iter().all(|e| e["at"].is_string()));
    let stats = &call["media_stats"];
    assert!(stats["packets_sent"].as_u64().unwrap_or(0) > 100, "{stats}");

    // The recording's agent side: the greeting (1 s), half a second of the
    // long answer and the goodbye (0.3 s); the rest of the long answer
    // (about 4.5 s) was never played.
    let (rate, samples) = recording(&svc, &call).await;
    let agent_seconds = active_seconds(&samples, 1, rate);
    assert!(
        (1.5..3.8).contains(&agent_seconds),
        "agent audio played: {agent_seconds} s"
    );
    assert!(
        active_seconds(&samples, 0, rate) > 1.0,
        "the caller's speech is recorded"
    );

    let ended = tokio::time::timeout(CALL_DONE, deliveries.recv())
        .await
        .expect("call.ended delivered")
        .expect("receiver alive");
    assert_eq!(ended["type"], "call.ended");
    assert_eq!(ended["data"]["id"], call_id.as_str());
    assert_eq!(ended["data"]["transcript"], call["transcript"]);
    sipp::finish(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_audio_reaches_the_caller() {
    let mut ai = AgentServer::start().await;
    let svc = TestService::start().await;
    websocket_agent(
        &svc,
        "127.0.0.1:5999".parse().expect("addr"),
        "+15550002222",
        &ai.url,
    )
    .await;
    // SIPp returns every RTP packet it receives: the agent hears its own
    // tone only if it went out as RTP and SIPp got it.
    let sipp = caller(
        &svc,
        "service/ws_echo_until_bye.xml",
        "+15550002222",
        &["-rtp_echo"],
    );
    let mut ws = ai.accept().await;
    let start = ws.handshake().await;
    assert_eq!(start["start"]["customParameters"]["direction"], "inbound");
    assert_eq!(start["start"]["customParameters"]["to"], "+15550002222");
    let before = ws.caller_audio.len();
    ws.play(&tone(1000.0, 2000), 8000).await;
    ws.mark("tone").await;
    ws.wait_mark("tone").await;
    ws.wait_frames(25).await;
    let heard = ws.caller_audio[before..]
        .iter()
        .filter(|frame| rms(frame) > 1000.0 && (900.0..1100.0).contains(&frequency(frame)))
        .count();
    assert!(
        heard >= 50,
        "at least 1 s of the 1 kHz tone came back through SIPp: {heard} frames"
    );
    ws.send(json!({"event": "hangup"})).await;
    ws.wait_stop().await;
    sipp.await.expect("SIPp thread").assert_success();
    let call = ended_inbound_call(&svc).await;
    assert_eq!(call["outcome"], "agent_hangup", "{call}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_refuses_to_connect_ends_the_call_with_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/media-stream", closed.local_addr().expect("addr"));
    drop(closed);
    let svc = TestService::start().await;
    websocket_agent(
        &svc,
        "127.0.0.1:5999".parse().expect("addr"),
        "+15550003333",
        &url,
    )
    .await;
    let sipp = caller(&svc, "service/ws_caller_until_bye.xml", "+15550003333", &[]);
    sipp.await.expect("SIPp thread").assert_success();
    let call = ended_inbound_call(&svc).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "error", "{call}");
    assert_eq!(call["end_reason"], "agent_unreachable", "{call}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_close_by_the_agent_hangs_up_after_its_last_words() {
    let mut ai = AgentServer::start().await;
    let svc = TestService::start().await;
    websocket_agent(
        &svc,
        "127.0.0.1:5999".parse().expect("addr"),
        "+15550005555",
        &ai.url,
    )
    .await;
    let sipp = caller(&svc, "service/ws_caller_until_bye.xml", "+15550005555", &[]);
    let mut ws = ai.accept().await;
    ws.handshake().await;
    ws.wait_frames(10).await;
    // "Goodbye" (1 s, sent faster than real time), then the close frame a
    // framework sends when its pipeline ends.
    ws.play(&tone(600.0, 1000), 4000).await;
    ws.ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "pipeline ended".into(),
        }))
        .await
        .expect("close");
    // The service completes the closing handshake; media already in flight
    // may come first, a `stop` never does (the agent said goodbye).
    loop {
        match tokio::time::timeout(MESSAGE_WAIT, ws.ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Ok(Message::Text(text)))) => assert!(
                text.as_str().contains(r#""event":"media""#),
                "only media in flight precedes the close reply: {text}"
            ),
            Ok(Some(Ok(other))) => panic!("unexpected after the agent's close: {other:?}"),
            Ok(Some(Err(error))) => panic!("the closing handshake failed: {error}"),
            Err(_) => panic!("the service did not answer the close"),
        }
    }

    // SIPp got the BYE and answered it.
    sipp.await.expect("SIPp thread").assert_success();
    let call = ended_inbound_call(&svc).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "agent_hangup", "{call}");
    assert_eq!(call["end_reason"], "agent_hangup", "{call}");
    let (rate, samples) = recording(&svc, &call).await;
    let agent_seconds = active_seconds(&samples, 1, rate);
    assert!(
        (0.9..1.3).contains(&agent_seconds),
        "the goodbye sent before the close was played whole: {agent_seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_dropping_mid_call_plays_the_fallback_then_ends_with_an_error() {
    let fallback_dir = tempfile::tempdir().expect("dir");
    let fallback = fallback_dir.path().join("sorry.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&fallback, spec).expect("create");
    for sample in tone(700.0, 1500) {
        writer.write_sample(sample).expect("sample");
    }
    writer.finalize().expect("finalize");

    let mut ai = AgentServer::start().await;
    let path = fallback.clone();
    let svc = TestService::start_with(move |config| {
        config.websocket.fallback_audio = Some(path);
    })
    .await;
    websocket_agent(
        &svc,
        "127.0.0.1:5999".parse().expect("addr"),
        "+15550004444",
        &ai.url,
    )
    .await;
    let sipp = caller(&svc, "service/ws_caller_until_bye.xml", "+15550004444", &[]);
    let mut ws = ai.accept().await;
    ws.handshake().await;
    ws.wait_frames(25).await;
    let dropped = Instant::now();
    // No close frame: the TCP connection just ends, as when the agent dies.
    drop(ws);

    sipp.await.expect("SIPp thread").assert_success();
    let call = ended_inbound_call(&svc).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "error", "{call}");
    assert_eq!(call["end_reason"], "agent_disconnected", "{call}");
    assert!(
        dropped.elapsed() >= Duration::from_millis(1400),
        "the call lasted until the 1.5 s fallback was played"
    );
    let (rate, samples) = recording(&svc, &call).await;
    let agent_seconds = active_seconds(&samples, 1, rate);
    assert!(
        (1.3..2.0).contains(&agent_seconds),
        "the fallback audio (1.5 s) was played: {agent_seconds} s"
    );
}
