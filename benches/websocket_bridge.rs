//! Added latency of the `websocket` runtime's bridge, with many concurrent
//! calls (default 100): caller RTP in -> `media` message at the agent
//! ("uplink"), and agent `media` -> RTP out at the caller ("downlink").
//!
//! Not a criterion bench: it measures a running system. `cargo bench --bench
//! websocket_bridge` runs it; `DIALCORE_BENCH_CALLS` (default 100) and
//! `DIALCORE_BENCH_SECONDS` (default 20) change the load and its length.
//!
//! Every call is a real inbound call: SIP through our own user agent to the
//! service (the library on loopback ports), PCMU RTP from a plain UDP socket
//! every 20 ms, and a WebSocket server in this process as the AI, speaking
//! Twilio Media Streams. Twice a second a loud packet goes each way among
//! silence; the time from its send to its arrival is one sample. Both clocks
//! are this process's.
//!
//! Baseline, measured in the same run under the same load: the same callers
//! and AI through a bare relay (UDP packet -> base64 JSON `media` -> WebSocket
//! and back, no jitter buffer, no pacing). The difference is what dialcore's
//! path adds: jitter buffer, decode/encode, bridge, runtime, real-time
//! playout (a frame waits for the next 20 ms tick).

#[path = "../tests/support/service.rs"]
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use media::codec::g711::{linear_to_ulaw, ulaw_to_linear};
use serde_json::{json, Value};
use sip_stack::ua::{CallEvent, OutgoingCall, UaConfig, UserAgent};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The service's number every call dials.
const NUMBER: &str = "+15550002222";
/// A loud probe frame goes each way this often.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Probes of the first seconds are not counted (jitter buffer settling).
const WARM_UP: Duration = Duration::from_secs(2);
/// Mean absolute sample above which a 20 ms frame counts as a probe.
const LOUD: f64 = 4000.0;

/// Pending probes and measured latencies, per call.
#[derive(Default)]
struct Probes {
    /// Uplink probe sent by the caller, not yet seen by the agent.
    uplink_sent: Option<Instant>,
    /// Downlink probe sent by the agent, not yet seen by the caller.
    downlink_sent: Option<Instant>,
}

#[derive(Default)]
struct Results {
    uplink: Vec<Duration>,
    downlink: Vec<Duration>,
}

type Calls = Arc<Mutex<HashMap<String, Arc<Mutex<Probes>>>>>;

/// One run's calls and samples.
struct Measurement {
    calls: Calls,
    results: Mutex<Results>,
    /// Probes sent before this are not counted (set once every call is up).
    counting_from: Mutex<Instant>,
}

impl Measurement {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Calls::default(),
            results: Mutex::default(),
            counting_from: Mutex::new(Instant::now() + Duration::from_secs(24 * 3600)),
        })
    }

    /// Counts probes from `WARM_UP` after now; returns when counting starts.
    fn start_counting(&self) -> Instant {
        let from = Instant::now() + WARM_UP;
        *self.counting_from.lock().expect("lock") = from;
        from
    }

    fn add_call(&self, number: &str) -> Arc<Mutex<Probes>> {
        let probes = Arc::new(Mutex::new(Probes::default()));
        self.calls
            .lock()
            .expect("lock")
            .insert(number.to_owned(), Arc::clone(&probes));
        probes
    }

    fn take(&self) -> Summary {
        let results = std::mem::take(&mut *self.results.lock().expect("lock"));
        Summary {
            uplink: results.uplink,
            downlink: results.downlink,
        }
    }

    fn record(&self, uplink: bool, sent: Instant, arrived: Instant) {
        if sent < *self.counting_from.lock().expect("lock") {
            return;
        }
        let mut results = self.results.lock().expect("lock");
        let list = if uplink {
            &mut results.uplink
        } else {
            &mut results.downlink
        };
        list.push(arrived.saturating_duration_since(sent));
    }
}

fn loud(ulaw: &[u8]) -> bool {
    let sum: f64 = ulaw
        .iter()
        .map(|&b| f64::from(ulaw_to_linear(b)).abs())
        .sum();
    sum / ulaw.len().max(1) as f64 > LOUD
}

fn probe_frame() -> Vec<u8> {
    // A 400 Hz square wave at half scale: loud after any codec.
    (0..160)
        .map(|n| linear_to_ulaw(if (n / 10) % 2 == 0 { 16000 } else { -16000 }))
        .collect()
}

// ------------------------------------------------------------------ the AI

/// Accepts the streams; on each, reports uplink probes and sends downlink ones.
async fn ai_server(measurement: Arc<Measurement>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let measurement = Arc::clone(&measurement);
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    ai_stream(ws, measurement).await;
                }
            });
        }
    });
    addr
}

async fn ai_stream(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    measurement: Arc<Measurement>,
) {
    let (mut sink, mut source) = ws.split();
    let mut probes: Option<Arc<Mutex<Probes>>> = None;
    let mut stream_sid = String::new();
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.tick().await;
    // Downlink probes halfway between uplink ones.
    tokio::time::sleep(PROBE_EVERY / 2).await;
    let probe = BASE64.encode(probe_frame());
    loop {
        tokio::select! {
            message = source.next() => {
                let arrived = Instant::now();
                let Some(Ok(Message::Text(text))) = message else {
                    if matches!(message, None | Some(Err(_))) { return; }
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                match value["event"].as_str() {
                    Some("start") => {
                        stream_sid = value["streamSid"].as_str().unwrap_or("").to_owned();
                        let from = value["start"]["customParameters"]["from"].as_str().unwrap_or("");
                        probes = measurement.calls.lock().expect("lock").get(from).cloned();
                    }
                    Some("media") => {
                        let bytes = BASE64
                            .decode(value["media"]["payload"].as_str().unwrap_or(""))
                            .unwrap_or_default();
                        if let (true, Some(probes)) = (loud(&bytes), &probes) {
                            let sent = probes.lock().expect("lock").uplink_sent.take();
                            if let Some(sent) = sent {
                                measurement.record(true, sent, arrived);
                            }
                        }
                    }
                    Some("stop") => return,
                    _ => {}
                }
            }
            _ = ticker.tick(), if probes.is_some() => {
                let message = json!({"event": "media", "streamSid": stream_sid, "media": {"payload": probe}});
                if let Some(probes) = &probes {
                    probes.lock().expect("lock").downlink_sent = Some(Instant::now());
                }
                if sink.send(Message::text(message.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ------------------------------------------------------------------ callers

/// Sends PCMU every 20 ms to `remote` (a loud probe every 500 ms) and
/// reports downlink probes arriving, until `until`.
async fn caller_media(
    socket: Arc<UdpSocket>,
    remote: SocketAddr,
    probes: Arc<Mutex<Probes>>,
    measurement: Arc<Measurement>,
    until: Instant,
) {
    let receiver = {
        let socket = Arc::clone(&socket);
        let probes = Arc::clone(&probes);
        let measurement = Arc::clone(&measurement);
        tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            while let Ok(len) = socket.recv(&mut buffer).await {
                let arrived = Instant::now();
                let Some(payload) = rtp_payload(&buffer[..len]) else {
                    continue;
                };
                // The first loud packet after a probe was sent is that probe
                // (probes are 500 ms apart, one frame long).
                if loud(payload) {
                    let sent = probes.lock().expect("lock").downlink_sent.take();
                    if let Some(sent) = sent {
                        measurement.record(false, sent, arrived);
                    }
                }
            }
        })
    };
    let ssrc: u32 = rand::random();
    let silence = vec![0xffu8; 160];
    let probe = probe_frame();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut seq: u16 = rand::random();
    let mut timestamp: u32 = rand::random();
    let mut frame = 0u64;
    while Instant::now() < until {
        ticker.tick().await;
        let is_probe = frame == 0;
        let payload = if is_probe { &probe } else { &silence };
        let mut packet = Vec::with_capacity(172);
        packet.extend_from_slice(&[0x80, 0x00]);
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        if is_probe {
            probes.lock().expect("lock").uplink_sent = Some(Instant::now());
        }
        let _ = socket.send_to(&packet, remote).await;
        seq = seq.wrapping_add(1);
        timestamp = timestamp.wrapping_add(160);
        // 25 frames of 20 ms: one probe per PROBE_EVERY.
        frame = (frame + 1) % 25;
    }
    receiver.abort();
}

/// The payload of an RTP packet (PCMU), if it is one.
fn rtp_payload(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 12 || packet[0] >> 6 != 2 || packet[1] & 0x7f != 0 {
        return None;
    }
    let csrc = usize::from(packet[0] & 0x0f) * 4;
    packet.get(12 + csrc..)
}

fn sdp_offer(port: u16) -> String {
    format!(
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn media_address(sdp: &str) -> Option<SocketAddr> {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .parse()
        .ok()?;
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

fn caller_number(index: usize) -> String {
    format!("+1555100{index:04}")
}

// ------------------------------------------------------------------ the bare relay

/// The baseline: for each caller, a UDP socket and a WebSocket to the AI,
/// moving payloads both ways at once.
async fn relay(ai: SocketAddr, caller: String) -> SocketAddr {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = socket.local_addr().expect("addr");
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{ai}/relay"), None, true)
            .await
            .expect("relay connects");
    let (mut sink, mut source) = ws.split();
    let start = json!({"event": "start", "streamSid": "MZrelay",
                       "start": {"customParameters": {"from": caller}}});
    sink.send(Message::text(start.to_string()))
        .await
        .expect("start");
    let (peer_tx, mut peer_rx) = mpsc::channel::<SocketAddr>(1);
    let up_socket = Arc::clone(&socket);
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        let mut peer_sent = false;
        while let Ok((len, from)) = up_socket.recv_from(&mut buffer).await {
            if !peer_sent {
                let _ = peer_tx.send(from).await;
                peer_sent = true;
            }
            let Some(payload) = rtp_payload(&buffer[..len]) else {
                continue;
            };
            let message = json!({"event": "media", "streamSid": "MZrelay",
                                 "media": {"payload": BASE64.encode(payload)}});
            if sink.send(Message::text(message.to_string())).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let Some(peer) = peer_rx.recv().await else {
            return;
        };
        let mut seq: u16 = 0;
        while let Some(Ok(message)) = source.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let Ok(payload) = BASE64.decode(value["media"]["payload"].as_str().unwrap_or(""))
            else {
                continue;
            };
            let mut packet = vec![0x80, 0x00];
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&[0; 8]);
            packet.extend_from_slice(&payload);
            seq = seq.wrapping_add(1);
            let _ = socket.send_to(&packet, peer).await;
        }
    });
    addr
}

// ------------------------------------------------------------------ runs

struct Summary {
    uplink: Vec<Duration>,
    downlink: Vec<Duration>,
}

/// A caller's media socket, where its media goes, and the probes it records into.
type CallerLeg = (Arc<UdpSocket>, SocketAddr, Arc<Mutex<Probes>>);

/// Streams every leg's caller media at once for `seconds` (after the warm-up),
/// recording into `measurement`, and returns when all have stopped.
async fn stream_calls(measurement: &Arc<Measurement>, legs: Vec<CallerLeg>, seconds: u64) {
    let until = measurement.start_counting() + Duration::from_secs(seconds);
    let tasks: Vec<_> = legs
        .into_iter()
        .map(|(socket, remote, probes)| {
            tokio::spawn(caller_media(
                socket,
                remote,
                probes,
                Arc::clone(measurement),
                until,
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

async fn run_baseline(calls: usize, seconds: u64) -> Summary {
    let measurement = Measurement::new();
    let ai = ai_server(Arc::clone(&measurement)).await;
    let mut legs = Vec::new();
    for index in 0..calls {
        let number = caller_number(index);
        let probes = measurement.add_call(&number);
        let remote = relay(ai, number).await;
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        legs.push((socket, remote, probes));
    }
    stream_calls(&measurement, legs, seconds).await;
    measurement.take()
}

async fn run_dialcore(calls: usize, seconds: u64) -> Summary {
    let measurement = Measurement::new();
    let ai = ai_server(Arc::clone(&measurement)).await;
    let svc = service::TestService::start().await;
    svc.agent_with_number(
        "127.0.0.1:5999".parse().expect("addr"),
        NUMBER,
        json!({"type": "websocket", "url": format!("ws://{ai}/media")}),
        &["127.0.0.0/8"],
    )
    .await;
    let mut ua_config = UaConfig::default();
    ua_config.transport.udp = Some("127.0.0.1:0".parse().expect("addr"));
    let (ua, _incoming) = UserAgent::start(ua_config).await.expect("caller UA");
    let target = format!("sip:{NUMBER}@{}", svc.sip);

    let mut legs = Vec::new();
    let mut handles = Vec::new();
    for index in 0..calls {
        let number = caller_number(index);
        let probes = measurement.add_call(&number);
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let port = socket.local_addr().expect("addr").port();
        let call = OutgoingCall::to(&target, &format!("sip:{number}@127.0.0.1"))
            .await
            .expect("target")
            .with_sdp(sdp_offer(port));
        let mut handle = ua.invite(call).await.expect("INVITE");
        let remote = loop {
            match handle.next_event().await {
                Some(CallEvent::Answered { sdp }) => {
                    break sdp.as_deref().and_then(media_address).expect("SDP answer");
                }
                Some(CallEvent::Failed { code, .. }) => panic!("call {index} failed: {code}"),
                Some(_) => continue,
                None => panic!("call {index} ended"),
            }
        };
        legs.push((socket, remote, probes));
        handles.push(handle);
    }
    // Every call is up: measure from here.
    stream_calls(&measurement, legs, seconds).await;
    for handle in &handles {
        handle.hangup();
    }
    let summary = measurement.take();
    svc.stop().await;
    ua.shutdown(Duration::from_secs(1)).await;
    summary
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn report(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let median = percentile(samples, 0.5);
    let p99 = percentile(samples, 0.99);
    println!(
        "{name:<28} samples {:>6}  median {:>8.2} ms  p99 {:>8.2} ms",
        samples.len(),
        median.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );
    (median, p99)
}

fn main() {
    let calls = std::env::var("DIALCORE_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seconds = std::env::var("DIALCORE_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // `cargo bench` passes --bench; a filter argument that is not ours skips the run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "websocket_bridge".contains(a.as_str())) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        println!("websocket bridge latency: {calls} concurrent calls, {seconds} s each run");
        let mut baseline = run_baseline(calls, seconds).await;
        let mut dialcore = run_dialcore(calls, seconds).await;
        let (bu, _) = report("baseline relay  uplink", &mut baseline.uplink);
        let (bd, _) = report("baseline relay  downlink", &mut baseline.downlink);
        let (du, _) = report("dialcore bridge uplink", &mut dialcore.uplink);
        let (dd, _) = report("dialcore bridge downlink", &mut dialcore.downlink);
        println!(
            "added by dialcore (median): uplink {:.2} ms, downlink {:.2} ms",
            (du.as_secs_f64() - bu.as_secs_f64()) * 1000.0,
            (dd.as_secs_f64() - bd.as_secs_f64()) * 1000.0
        );
    });
}
