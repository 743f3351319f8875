//! `kill -9` mid-call (issue 12): the real `dialcore serve` binary places a real call to SIPp
//! (answering with audio), is killed with SIGKILL while the call is talking, and is started
//! again on the same database after some downtime. The call must then be over with the
//! duration it really had (ended at its last heartbeat, not at the restart), the
//! organisation charged for it and its reservation released, and its partial recording
//! served with a valid WAV header whose sizes match the file.

#[path = "../../../tests/support/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use call_control::engine::billing::HEARTBEAT_INTERVAL;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const KEY: &str = "sk_live_crash_recovery_0123456789";
/// Credits of the bootstrap organisation, and the price of a minute.
const BALANCE: i64 = 10_000;
const PER_MINUTE: i64 = 2;
/// How long the call talks before the kill, and how long the service stays down.
const TALK: Duration = Duration::from_secs(5);
const DOWNTIME: Duration = Duration::from_secs(4);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// `dialcore serve` on `http` and `sip`, its database and recordings in `dir`.
async fn serve(dir: &tempfile::TempDir, http: SocketAddr, sip: SocketAddr) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_dialcore"))
        .arg("serve")
        .env("DIALCORE_HTTP_LISTEN", http.to_string())
        .env("DIALCORE_SIP_LISTEN", sip.to_string())
        .env(
            "DIALCORE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("dialcore.db").display()),
        )
        .env("DIALCORE_RECORDINGS_DIR", dir.path().join("recordings"))
        .env("DIALCORE_API_KEY", KEY)
        .env(
            "DIALCORE_CREDITS_STARTING_BALANCE_CENTS",
            BALANCE.to_string(),
        )
        .env("DIALCORE_CREDITS_PER_MINUTE_CENTS", PER_MINUTE.to_string())
        .env("DIALCORE_LOG_LEVEL", "warn")
        // SIPp, the carrier, is on loopback.
        .env("DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS", "true")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("dialcore runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while healthz(http).await != Some(200) {
        assert!(Instant::now() < deadline, "service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

async fn healthz(addr: SocketAddr) -> Option<u16> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: dialcore\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        let text = String::from_utf8_lossy(&reply);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("service answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {reply}");
        reply["data"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        let (status, reply) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {reply}");
        reply["data"].clone()
    }

    async fn bytes(&self, path: &str) -> Vec<u8> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("service answers");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.bytes().await.expect("body").to_vec()
    }
}

fn stamp(call: &Value, field: &str) -> DateTime<Utc> {
    call[field]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .unwrap_or_else(|| panic!("{field} missing: {call}"))
        .with_timezone(&Utc)
}

/// The little-endian u32 at `at`.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_killed_mid_way_is_ended_charged_and_its_recording_served() {
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sipp/service/carrier_answer_media.xml"
    );
    let carrier = sipp::one_call_server(scenario, sipp::Transport::Udp, |s| s).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sip = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let api = Api {
        base: format!("http://{http}/api/public/v1"),
        client: reqwest::Client::new(),
    };
    let mut service = serve(&dir, http, sip).await;

    let agent = api
        .create(
            "/agents",
            json!({"name": "echo", "prompt": "Repeat.", "status": "active",
                   "runtime": {"type": "echo"}}),
        )
        .await;
    let trunk = api
        .create(
            "/trunks",
            json!({"name": "SIPp", "host": "127.0.0.1", "port": carrier.port(),
                   "transport": "udp", "allowed_networks": ["127.0.0.0/8"]}),
        )
        .await;
    api.create(
        "/phone-numbers",
        json!({"number": "+15550001111", "trunk_id": trunk["id"], "agent_id": agent["id"]}),
    )
    .await;
    let call = api
        .create(
            "/calls",
            json!({"agent_id": agent["id"], "phone_number": "+15551234567",
                   "call_settings": {"max_duration": "600s"}}),
        )
        .await;
    let call_id = call["id"].as_str().expect("call id").to_owned();

    // Talking: answered, media flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let call = api.get(&format!("/calls/{call_id}")).await;
        if call["status"] == json!("in_progress") {
            break stamp(&call, "answered_at");
        }
        assert!(Instant::now() < deadline, "call not answered: {call}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(TALK).await;
    service.start_kill().expect("SIGKILL");
    service.wait().await.expect("killed");
    let killed = Utc::now();
    let talked = (killed - answered).to_std().expect("killed after answer");

    tokio::time::sleep(DOWNTIME).await;
    let mut service = serve(&dir, http, sip).await;

    let call = api.get(&format!("/calls/{call_id}")).await;
    assert_eq!(call["status"], json!("ended"), "{call}");
    assert_eq!(call["end_reason"], json!("service_restart"), "{call}");
    let duration = call["duration_seconds"].as_f64().expect("duration");
    // Ended at the last heartbeat before the kill: at most one interval (and the time that
    // write took) early, never later than the kill, and never counting the downtime.
    let earliest =
        talked.as_secs_f64() - (HEARTBEAT_INTERVAL + Duration::from_secs(1)).as_secs_f64();
    assert!(
        (earliest..=talked.as_secs_f64()).contains(&duration),
        "talked {talked:?} until the kill, recorded {duration} s: {call}"
    );
    assert!(stamp(&call, "ended_at") <= killed, "{call}");

    // Charged for the minute it used; nothing held any more.
    let organization = api.get("/organization").await;
    assert_eq!(
        organization["balance_cents"],
        json!(BALANCE - PER_MINUTE),
        "{organization}"
    );

    // The recording cut off by the kill is served, with sizes that match the file.
    let url = call["recording_url"].as_str().expect("recording_url");
    let wav = api
        .bytes(url.strip_prefix("/api/public/v1").expect("API path"))
        .await;
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(u32_at(&wav, 4) as usize, wav.len() - 8, "RIFF size");
    let data = wav
        .windows(4)
        .position(|w| w == b"data")
        .expect("data chunk");
    let data_len = u32_at(&wav, data + 4) as usize;
    assert_eq!(data_len, wav.len() - data - 8, "data size");
    let reader = hound::WavReader::new(std::io::Cursor::new(wav.clone())).expect("a WAV file");
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample), (2, 16));
    let seconds = f64::from(reader.duration()) / f64::from(spec.sample_rate);
    assert!(
        seconds > 1.0 && seconds <= talked.as_secs_f64() + 0.1,
        "{seconds} s of audio recorded in a {talked:?} call"
    );

    // A second restart changes nothing: the call was settled once.
    service.start_kill().expect("SIGKILL");
    service.wait().await.expect("killed");
    let _service = serve(&dir, http, sip).await;
    let again = api.get(&format!("/calls/{call_id}")).await;
    assert_eq!(again["duration_seconds"], call["duration_seconds"]);
    assert_eq!(
        api.get("/organization").await["balance_cents"],
        json!(BALANCE - PER_MINUTE)
    );
    drop(carrier);
}
