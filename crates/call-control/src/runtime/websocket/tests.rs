//! The runtime against a real WebSocket server (tokio-tungstenite) on
//! loopback, with the test playing the bridge's side of the session.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use media::stream::{AudioFrame, FrameKind};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::session::abnormal_close;
use super::*;
use crate::redact::loggable_url;
use crate::runtime::{Direction, RuntimeInput, RuntimeOutput};

const WAIT: Duration = Duration::from_secs(10);

fn metadata(rate: u32) -> CallMetadata {
    CallMetadata {
        call_id: "call_ws".into(),
        org_id: "org_ws".into(),
        agent_id: "agt_ws".into(),
        direction: Direction::Outbound,
        from_number: "+15550001111".into(),
        to_number: "+15550002222".into(),
        prompt: "You are calling Ada.".into(),
        greeting: Some("Hello Ada!".into()),
        variables: [("name".to_owned(), "Ada".to_owned())].into(),
        sip_call_id: Some("abc@host".into()),
        sample_rate: rate,
    }
}

fn settings() -> WebsocketSettings {
    WebsocketSettings {
        connect_timeout: Duration::from_secs(5),
        fallback_audio: None,
        // The agents of these tests listen on loopback.
        destinations: crate::destinations::DestinationPolicy::new(true),
    }
}

/// A server accepting one WebSocket and handing it to the test.
// The handshake callback's error type is tungstenite's HTTP response.
#[allow(clippy::result_large_err)]
async fn server() -> (
    String,
    tokio::task::JoinHandle<WebSocketStream<tokio::net::TcpStream>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "ws://{}/agent?token=secret",
        listener.local_addr().expect("addr")
    );
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        tokio_tungstenite::accept_hdr_async(
            tcp,
            |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                assert_eq!(
                    request
                        .headers()
                        .get("x-api-key")
                        .map(|v| v.to_str().unwrap_or("")),
                    Some("k123"),
                    "the agent's headers are sent"
                );
                Ok(response)
            },
        )
        .await
        .expect("handshake")
    });
    (url, accept)
}

async fn next_json(ws: &mut WebSocketStream<tokio::net::TcpStream>) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

/// The next message of `event`, skipping others (mostly `media`).
async fn next_event(ws: &mut WebSocketStream<tokio::net::TcpStream>, event: &str) -> Value {
    loop {
        let value = next_json(ws).await;
        if value["event"] == event {
            return value;
        }
    }
}

async fn send(ws: &mut WebSocketStream<tokio::net::TcpStream>, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

async fn next_output(output: &mut mpsc::Receiver<RuntimeOutput>) -> RuntimeOutput {
    tokio::time::timeout(WAIT, output.recv())
        .await
        .expect("an output in time")
        .expect("runtime alive")
}

fn frame(value: i16, samples: usize) -> RuntimeInput {
    let pcm = vec![value; samples];
    RuntimeInput::Audio(AudioFrame::new(&pcm, FrameKind::Voice).expect("frame"))
}

/// What the spawned runtime `task` returned, once it has ended (within [`WAIT`]).
async fn ended<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("runtime ends")
        .expect("no panic")
}

/// Runs a call against `url` and checks that it ends as agent unreachable.
async fn assert_unreachable(url: &str) {
    let (session, _input, _output) = RuntimeSession::channel(8);
    let result = runtime(url, WireFormat::Mulaw8k)
        .run(metadata(8000), session)
        .await;
    assert!(
        matches!(result, Err(RuntimeError::Unreachable(_))),
        "{result:?}"
    );
}

fn runtime(url: &str, format: WireFormat) -> Box<Websocket> {
    Box::new(Websocket::new(
        url,
        [("X-Api-Key".to_owned(), "k123".to_owned())].into(),
        format,
        settings(),
    ))
}

#[tokio::test]
async fn streams_both_ways_in_the_twilio_format() {
    let (url, accept) = server().await;
    let (session, input, mut output) = RuntimeSession::channel(64);
    let task = tokio::spawn(runtime(&url, WireFormat::Mulaw8k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");

    let connected = next_json(&mut ws).await;
    assert_eq!(
        connected,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = next_json(&mut ws).await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["sequenceNumber"], "1");
    let sid = start["streamSid"].as_str().expect("sid").to_owned();
    assert!(sid.starts_with("MZ") && sid.len() == 34, "{sid}");
    let info = &start["start"];
    assert_eq!(info["streamSid"], sid.as_str());
    assert_eq!(info["callSid"], "call_ws");
    assert_eq!(info["accountSid"], "org_ws");
    assert_eq!(info["tracks"], json!(["inbound"]));
    assert_eq!(
        info["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    let params = &info["customParameters"];
    assert_eq!(params["prompt"], "You are calling Ada.");
    assert_eq!(params["greeting"], "Hello Ada!");
    assert_eq!(params["from"], "+15550001111");
    assert_eq!(params["to"], "+15550002222");
    assert_eq!(params["from_number"], "+15550001111");
    assert_eq!(params["to_number"], "+15550002222");
    assert_eq!(params["direction"], "outbound");
    assert_eq!(params["variables"], r#"{"name":"Ada"}"#);

    // Caller audio: one media message per frame, numbered.
    for _ in 0..3 {
        input.send(frame(1000, 160)).await.expect("runtime alive");
    }
    for chunk in 1..=3u64 {
        let media = next_json(&mut ws).await;
        assert_eq!(media["event"], "media", "{media}");
        assert_eq!(media["streamSid"], sid.as_str());
        assert_eq!(media["sequenceNumber"], (chunk + 1).to_string());
        assert_eq!(media["media"]["chunk"], chunk.to_string());
        assert_eq!(media["media"]["timestamp"], ((chunk - 1) * 20).to_string());
        assert_eq!(media["media"]["track"], "inbound");
        let payload = media["media"]["payload"].as_str().expect("payload");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .expect("base64");
        assert_eq!(bytes.len(), 160);
        assert!(bytes
            .iter()
            .all(|&b| b == media::codec::g711::linear_to_ulaw(1000)));
    }
    input.send(RuntimeInput::Dtmf('7')).await.expect("alive");
    let dtmf = next_event(&mut ws, "dtmf").await;
    assert_eq!(
        dtmf["dtmf"],
        json!({"track": "inbound_track", "digit": "7"})
    );

    // Agent audio of any length becomes PCM at the call's rate.
    let ulaw = vec![media::codec::g711::linear_to_ulaw(-2000); 500];
    let payload = base64::engine::general_purpose::STANDARD.encode(&ulaw);
    send(
        &mut ws,
        json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}),
    )
    .await;
    match next_output(&mut output).await {
        RuntimeOutput::Audio(pcm) => {
            assert_eq!(pcm.len(), 500);
            assert!(
                pcm.iter().all(|&s| (s + 2000).abs() < 100),
                "{:?}",
                &pcm[..4]
            );
        }
        other => panic!("expected audio, got {other:?}"),
    }
    // Malformed messages are skipped; the stream goes on.
    ws.send(Message::text("{not json")).await.expect("send");
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    send(
        &mut ws,
        json!({"event": "media", "media": {"payload": "@@@"}}),
    )
    .await;
    send(
        &mut ws,
        json!({"event": "mark", "streamSid": sid, "mark": {"name": "greeting done"}}),
    )
    .await;
    let RuntimeOutput::Mark(id) = next_output(&mut output).await else {
        panic!("expected a mark");
    };
    // The bridge reports the mark reached: echoed by name.
    input
        .send(RuntimeInput::Mark { id, cleared: false })
        .await
        .expect("alive");
    let mark = next_event(&mut ws, "mark").await;
    assert_eq!(mark["mark"]["name"], "greeting done");
    assert_eq!(mark["streamSid"], sid.as_str());

    send(&mut ws, json!({"event": "clear", "streamSid": sid})).await;
    assert_eq!(next_output(&mut output).await, RuntimeOutput::Clear);
    send(
        &mut ws,
        json!({"event": "transcript", "speaker": "agent", "text": "Hi there", "final": true}),
    )
    .await;
    assert_eq!(
        next_output(&mut output).await,
        RuntimeOutput::Transcript {
            role: "agent".into(),
            text: "Hi there".into(),
            is_final: true
        }
    );
    send(&mut ws, json!({"event": "hangup"})).await;
    assert_eq!(next_output(&mut output).await, RuntimeOutput::Hangup);
    // After its hang-up the agent may close at once: not an error.
    ws.close(None).await.expect("close");
    drop(input);
    let result = ended(task).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn the_call_ending_sends_stop_and_closes() {
    let (url, accept) = server().await;
    let (session, input, _output) = RuntimeSession::channel(64);
    let task = tokio::spawn(runtime(&url, WireFormat::Mulaw8k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    let start = next_event(&mut ws, "start").await;
    drop(input);
    let stop = next_event(&mut ws, "stop").await;
    assert_eq!(stop["streamSid"], start["streamSid"]);
    assert_eq!(
        stop["stop"],
        json!({"accountSid": "org_ws", "callSid": "call_ws"})
    );
    assert_eq!(stop["sequenceNumber"], "2");
    let closed = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("close in time");
    assert!(
        matches!(closed, Some(Ok(Message::Close(_))) | None),
        "{closed:?}"
    );
    let result = ended(task).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn l16_at_16k_for_an_8k_call_is_resampled_both_ways() {
    let (url, accept) = server().await;
    let (session, input, mut output) = RuntimeSession::channel(64);
    let task = tokio::spawn(runtime(&url, WireFormat::L16At16k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    let start = next_event(&mut ws, "start").await;
    assert_eq!(
        start["start"]["mediaFormat"],
        json!({"encoding": "audio/l16", "sampleRate": 16000, "channels": 1})
    );
    input.send(frame(0, 160)).await.expect("alive");
    let media = next_event(&mut ws, "media").await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(media["media"]["payload"].as_str().expect("payload"))
        .expect("base64");
    assert_eq!(bytes.len(), 640, "20 ms of 16-bit samples at 16 kHz");
    // 30 ms at 16 kHz: one whole 20 ms frame now, the rest at the mark.
    let pcm16: Vec<u8> = (0..480).flat_map(|_| 500i16.to_le_bytes()).collect();
    let payload = base64::engine::general_purpose::STANDARD.encode(&pcm16);
    send(
        &mut ws,
        json!({"event": "media", "media": {"payload": payload}}),
    )
    .await;
    assert!(
        matches!(next_output(&mut output).await, RuntimeOutput::Audio(pcm) if pcm.len() == 160)
    );
    send(&mut ws, json!({"event": "mark", "mark": {"name": "m"}})).await;
    assert!(
        matches!(next_output(&mut output).await, RuntimeOutput::Audio(pcm) if pcm.len() == 160)
    );
    assert!(matches!(
        next_output(&mut output).await,
        RuntimeOutput::Mark(_)
    ));
    drop(input);
    let result = ended(task).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_refused_connection_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    drop(listener);
    assert_unreachable(&url).await;
}

#[tokio::test]
async fn a_wss_peer_that_is_not_tls_is_unreachable() {
    // Accepts TCP and answers garbage: the TLS handshake fails (the TLS
    // stack is built in and picks its crypto provider without panicking).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("wss://{}/", listener.local_addr().expect("addr"));
    let peer = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, b"HTTP/1.1 400 no\r\n\r\n").await;
    });
    assert_unreachable(&url).await;
    peer.await.expect("peer");
}

#[tokio::test]
async fn a_server_that_never_answers_the_handshake_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // Holds the TCP connection open without ever answering.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let mut rt = runtime(&url, WireFormat::Mulaw8k);
    rt.settings.connect_timeout = Duration::from_millis(300);
    let (session, _input, _output) = RuntimeSession::channel(8);
    let started = std::time::Instant::now();
    let result = rt.run(metadata(8000), session).await;
    assert!(
        matches!(&result, Err(RuntimeError::Unreachable(reason)) if reason.contains("300 ms")),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn a_drop_mid_call_is_a_disconnect_after_the_fallback_audio() {
    let dir = tempfile::tempdir().expect("dir");
    let wav = dir.path().join("sorry.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&wav, spec).expect("create");
    for _ in 0..800 {
        writer.write_sample(1234i16).expect("sample");
    }
    writer.finalize().expect("finalize");

    let (url, accept) = server().await;
    let mut rt = runtime(&url, WireFormat::Mulaw8k);
    rt.settings.fallback_audio = Some(wav);
    let (session, input, mut output) = RuntimeSession::channel(64);
    let task = tokio::spawn(rt.run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    next_event(&mut ws, "start").await;
    drop(ws);
    assert_eq!(next_output(&mut output).await, RuntimeOutput::Clear);
    let RuntimeOutput::Audio(pcm) = next_output(&mut output).await else {
        panic!("fallback audio expected");
    };
    assert_eq!(pcm.len(), 800);
    assert!(pcm.iter().all(|&s| s == 1234));
    let RuntimeOutput::Mark(id) = next_output(&mut output).await else {
        panic!("a mark after the fallback audio");
    };
    assert!(!task.is_finished(), "waits for the fallback audio to play");
    input
        .send(RuntimeInput::Mark { id, cleared: false })
        .await
        .expect("alive");
    let result = ended(task).await;
    assert!(
        matches!(result, Err(RuntimeError::Disconnected(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_normal_close_by_the_agent_is_its_hang_up() {
    let (url, accept) = server().await;
    let (session, input, mut output) = RuntimeSession::channel(64);
    let task = tokio::spawn(runtime(&url, WireFormat::Mulaw8k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    let sid = next_event(&mut ws, "start").await["streamSid"].clone();

    // Its last words, then the close frame a framework sends at the end of
    // its pipeline.
    let ulaw = vec![media::codec::g711::linear_to_ulaw(3000); 400];
    let payload = base64::engine::general_purpose::STANDARD.encode(&ulaw);
    send(
        &mut ws,
        json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}),
    )
    .await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "pipeline ended".into(),
    }))
    .await
    .expect("close");
    assert!(
        matches!(next_output(&mut output).await, RuntimeOutput::Audio(pcm) if pcm.len() == 400)
    );
    assert_eq!(
        next_output(&mut output).await,
        RuntimeOutput::Hangup,
        "the bridge hangs up once the audio before the close was played"
    );

    // The runtime answers the closing handshake and sends nothing more,
    // though the call goes on until the bridge has played the audio.
    input.send(frame(1000, 160)).await.expect("runtime alive");
    input.send(RuntimeInput::Dtmf('5')).await.expect("alive");
    let after = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the handshake ends in time");
    assert!(
        matches!(after, Some(Ok(Message::Close(_))) | None),
        "only the close reply follows the agent's close: {after:?}"
    );
    assert!(!task.is_finished(), "the runtime lives until the call ends");
    drop(input);
    let result = ended(task).await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_close_with_an_error_status_is_a_disconnect() {
    let (url, accept) = server().await;
    let (session, _input, mut output) = RuntimeSession::channel(64);
    let task = tokio::spawn(runtime(&url, WireFormat::Mulaw8k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    next_event(&mut ws, "start").await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Error,
        reason: "llm crashed".into(),
    }))
    .await
    .expect("close");
    let result = ended(task).await;
    assert!(
        matches!(&result, Err(RuntimeError::Disconnected(reason)) if reason.contains("1011") && reason.contains("llm crashed")),
        "{result:?}"
    );
    assert_eq!(output.recv().await, None, "no hang-up was asked for");
}

#[tokio::test]
async fn pending_marks_are_bounded() {
    let (url, accept) = server().await;
    let (session, input, mut output) = RuntimeSession::channel(4096);
    let task = tokio::spawn(runtime(&url, WireFormat::Mulaw8k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    let sid = next_event(&mut ws, "start").await["streamSid"].clone();
    // An agent that sends marks and never lets them play: none is ever reached.
    let sent = session::MAX_PENDING_MARKS + 500;
    for i in 0..sent {
        send(
            &mut ws,
            json!({"event": "mark", "streamSid": sid, "mark": {"name": format!("m{i}")}}),
        )
        .await;
    }
    send(&mut ws, json!({"event": "hangup", "streamSid": sid})).await;
    let mut marks = 0;
    loop {
        match next_output(&mut output).await {
            RuntimeOutput::Mark(_) => marks += 1,
            RuntimeOutput::Hangup => break,
            _ => {}
        }
    }
    assert_eq!(marks, session::MAX_PENDING_MARKS, "the rest were dropped");
    drop(input);
    let _ = ended(task).await;
}

#[tokio::test]
async fn a_message_larger_than_the_limit_ends_the_stream() {
    let (url, accept) = server().await;
    let (session, _input, _output) = RuntimeSession::channel(64);
    let task = tokio::spawn(runtime(&url, WireFormat::Mulaw8k).run(metadata(8000), session));
    let mut ws = accept.await.expect("accepted");
    let sid = next_event(&mut ws, "start").await["streamSid"].clone();
    let huge = "A".repeat(session::MAX_MESSAGE_SIZE + 1);
    let _ = ws
        .send(Message::text(
            json!({"event": "media", "streamSid": sid, "media": {"payload": huge}}).to_string(),
        ))
        .await;
    let result = ended(task).await;
    assert!(
        matches!(&result, Err(RuntimeError::Disconnected(_))),
        "{result:?}"
    );
}

#[test]
fn only_status_1000_or_none_is_a_normal_close() {
    let close = |code: u16| CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    assert_eq!(abnormal_close(None), None);
    assert_eq!(abnormal_close(Some(&close(1000))), None);
    for code in [1001, 1002, 1008, 1011, 1012, 4000] {
        let reason = abnormal_close(Some(&close(code))).expect("abnormal");
        assert!(reason.contains(&code.to_string()), "{reason}");
    }
}

#[test]
fn urls_are_logged_without_secrets() {
    assert_eq!(
        loggable_url("wss://user:pw@agent.example:443/stream?token=abc"),
        "wss://agent.example:443/stream"
    );
    assert_eq!(loggable_url("ws://127.0.0.1:9000"), "ws://127.0.0.1:9000/");
}

/// A runtime for `url` with the default destination policy (private addresses refused).
fn refusing(url: &str, headers: BTreeMap<String, String>) -> Box<Websocket> {
    let settings = WebsocketSettings {
        destinations: crate::destinations::DestinationPolicy::default(),
        ..settings()
    };
    Box::new(Websocket::new(url, headers, WireFormat::Mulaw8k, settings))
}

#[tokio::test]
async fn an_agent_on_loopback_is_refused_when_connecting_and_never_reached() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("addr").port();
    for url in [
        format!("ws://127.0.0.1:{port}/agent"),
        format!("ws://localhost:{port}/agent"),
        format!("wss://localhost:{port}/agent"),
        format!("ws://[::ffff:127.0.0.1]:{port}/agent"),
        // The resolver reads this as 127.0.0.1: the check is on what it returns.
        format!("ws://2130706433:{port}/agent"),
    ] {
        let (session, _input, _output) = RuntimeSession::channel(8);
        let result = refusing(&url, BTreeMap::new())
            .run(metadata(8000), session)
            .await;
        assert!(
            matches!(&result, Err(RuntimeError::Refused(reason))
                if reason.contains("loopback address")
                    && reason.contains(crate::destinations::SETTING)),
            "{url}: {result:?}"
        );
    }
    // Every attempt is over: a connection made would be queued by now.
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the refused agent was connected to from {from}"),
        Err(error) => panic!("listener: {error}"),
    }
}

#[tokio::test]
async fn headers_over_unencrypted_ws_are_refused_unless_allowed() {
    let headers: BTreeMap<String, String> =
        [("Authorization".to_owned(), "Bearer agent-secret".to_owned())].into();
    // Refused before the host is looked up or connected to.
    let (session, _input, _output) = RuntimeSession::channel(8);
    let result = refusing("ws://agent.example/stream", headers.clone())
        .run(metadata(8000), session)
        .await;
    assert!(
        matches!(&result, Err(RuntimeError::Refused(reason))
            if reason.contains("ws://") && reason.contains("wss://")),
        "{result:?}"
    );
    // With the setting, the headers go over ws:// (the server checks they arrive).
    let (url, accept) = server().await;
    let (session, input, _output) = RuntimeSession::channel(8);
    let allowed = Box::new(Websocket::new(
        &url,
        [("X-Api-Key".to_owned(), "k123".to_owned())].into(),
        WireFormat::Mulaw8k,
        WebsocketSettings {
            destinations: crate::destinations::DestinationPolicy::new(true),
            ..settings()
        },
    ));
    let task = tokio::spawn(allowed.run(metadata(8000), session));
    let mut ws = ended(accept).await;
    next_event(&mut ws, "start").await;
    drop(input);
    next_event(&mut ws, "stop").await;
    let result = ended(task).await;
    assert!(result.is_ok(), "{result:?}");
}
