//! The `dialcore load` binary against real peers on loopback: SIPp's UAS and
//! UAC with RTP echo, and a real `dialcore` service answering with its echo
//! agent. Its JSON report, its exit status (0 all good, 1 a failed call or a
//! missed threshold, 2 a run that cannot start) and what the far end saw.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Output, Stdio};
use std::time::Duration;

use call_control::service::{Service, ServiceHandle};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

mod api_support;

const KEY: &str = "sk_live_loadtest0123456789abcdefghij";

/// A free UDP port on loopback (even, so that SIPp's media port and the next one are free).
fn free_port() -> u16 {
    for _ in 0..100 {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        if port.is_multiple_of(2)
            && port < 65_000
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair on loopback");
}

/// SIPp, killed when dropped.
struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn sipp(args: &[&str]) -> Sipp {
    let child = Command::new("sipp")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("SIPp runs (scripts/prereqs.sh installs sip-tester)");
    Sipp(child)
}

/// SIPp's built-in UAS on a free port, echoing the RTP it gets (`-rtp_echo`).
async fn sipp_echo_uas() -> (Sipp, SocketAddr) {
    let port = free_port();
    let media = free_port();
    let process = sipp(&[
        "-sn",
        "uas",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-mp",
        &media.to_string(),
        "-rtp_echo",
        "-nostdin",
    ]);
    // SIPp binds at once; give it a moment to do so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (process, SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dialcore"))
        .arg("load")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("dialcore runs")
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON report ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn exit_code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_calls_to_sipp_are_answered_and_their_echo_is_timed() {
    let (_sipp, uas) = sipp_echo_uas().await;
    let target = format!("sip:+15550001111@{uas}");
    let output = load(&[
        &target,
        "--calls",
        "20",
        "--rate",
        "20",
        "--hold",
        "2s",
        "--json",
        "--threshold",
        "loss_percent=0.1",
    ])
    .await;
    let report = report(&output);
    assert_eq!(exit_code(&output), Some(0), "{report}");
    let summary = &report["summary"];
    assert_eq!(summary["answered"], 20, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["final_codes"]["200"], 20, "{summary}");
    // 2 s of 20 ms frames each way, per call.
    let sent = summary["rtp_sent"].as_u64().expect("sent");
    let received = summary["rtp_received"].as_u64().expect("received");
    assert!(sent >= 20 * 95, "{summary}");
    assert!(
        received >= sent * 9 / 10,
        "SIPp echoed what it got: {summary}"
    );
    assert_eq!(summary["one_way_calls"], 0, "{summary}");
    assert_eq!(
        summary["echo_rtt_ms"]["count"], 20,
        "every call's echo: {summary}"
    );
    let rtt = summary["echo_rtt_ms"]["p50"].as_f64().expect("rtt");
    assert!(rtt > 0.0 && rtt < 100.0, "loopback echo: {rtt} ms");
    assert!(summary["setup_ms"]["p50"].as_f64().expect("setup") > 0.0);
    assert_eq!(report["calls"].as_array().map(Vec::len), Some(20));
    let call = &report["calls"][0];
    assert_eq!(call["final_code"], 200, "{call}");
    assert_eq!(call["ended_by"], "local", "{call}");
    assert!(call["rtp"]["jitter_ms"].as_f64().is_some(), "{call}");
    let timeline = report["timeline"].as_array().expect("timeline");
    let started: u64 = timeline
        .iter()
        .map(|s| s["started"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(started, 20);
    assert!(
        timeline.iter().any(|s| s["live"].as_u64() >= Some(10)),
        "calls overlapped: {timeline:?}"
    );
    assert_eq!(report["thresholds"][0]["passed"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_threshold_or_a_failed_call_exits_1_and_bad_arguments_exit_2() {
    let (_sipp, uas) = sipp_echo_uas().await;
    let target = format!("sip:+15550001111@{uas}");
    let output = load(&[
        &target,
        "--calls",
        "2",
        "--hold",
        "500ms",
        "--threshold",
        "setup_p99_ms=0",
    ])
    .await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(exit_code(&output), Some(1), "{text}");
    assert!(
        text.contains("setup_p99_ms <= 0") && text.contains("MISSED"),
        "{text}"
    );
    assert!(text.contains("2 answered, 0 failed"), "{text}");

    // Nobody listens on this TCP port: the call fails at once with a transport error.
    let closed = free_port();
    let target = format!("sip:+15550001111@127.0.0.1:{closed}");
    let output = load(&[&target, "--calls", "1", "--hold", "1s", "--tcp", "--json"]).await;
    let report = report(&output);
    assert_eq!(exit_code(&output), Some(1), "{report}");
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    assert_eq!(report["calls"][0]["final_code"], 503, "{report}");
    assert!(report["calls"][0]["error"].as_str().is_some(), "{report}");

    let output = load(&[&target, "--rate", "0", "--hold", "1s"]).await;
    assert_eq!(exit_code(&output), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--rate must be a positive number"),
        "{stderr}"
    );
    let output = load(&[&target, "--hold", "1s", "--threshold", "mos=4"]).await;
    assert_eq!(exit_code(&output), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown threshold"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_sipps_calls_measures_them_the_same_way() {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen_arg = listen.to_string();
    let generator = tokio::spawn(async move {
        load(&[
            "--answer",
            "--listen",
            &listen_arg,
            "--calls",
            "3",
            "--json",
        ])
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SIPp's built-in UAC: 3 calls held 2 s each, echoing our RTP.
    let media = free_port();
    let mut caller = sipp(&[
        "-sn",
        "uac",
        "-i",
        "127.0.0.1",
        "-p",
        &free_port().to_string(),
        "-mp",
        &media.to_string(),
        "-rtp_echo",
        "-d",
        "2000",
        "-m",
        "3",
        "-r",
        "3",
        "-nostdin",
        &listen.to_string(),
    ]);
    let status = tokio::time::timeout(Duration::from_secs(30), caller.0.wait())
        .await
        .expect("SIPp finishes")
        .expect("SIPp ran");
    assert!(status.success(), "SIPp's calls succeeded: {status:?}");
    let output = tokio::time::timeout(Duration::from_secs(30), generator)
        .await
        .expect("the generator stops after its calls")
        .expect("joined");
    let report = report(&output);
    assert_eq!(exit_code(&output), Some(0), "{report}");
    let summary = &report["summary"];
    assert_eq!(summary["answered"], 3, "{summary}");
    assert_eq!(
        report["calls"][0]["ended_by"], "remote",
        "SIPp hung up: {report}"
    );
    assert!(summary["rtp_sent"].as_u64() > Some(3 * 80), "{summary}");
    assert_eq!(
        summary["echo_rtt_ms"]["count"], 3,
        "SIPp echoed our audio: {summary}"
    );
}

/// A service on loopback (its trunks there too: the shared test configuration allows
/// private destinations), with the known API key.
async fn start_service(dir: &tempfile::TempDir) -> ServiceHandle {
    let mut config = api_support::config(dir, 100_000);
    config.api.key = Some(KEY.to_owned());
    Service::start(config).await.expect("service starts")
}

async fn create(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let reply: Value = client
        .post(format!("{base}/api/public/v1{path}"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("service answers")
        .json()
        .await
        .expect("JSON");
    assert!(reply["data"]["id"].is_string(), "{path}: {reply}");
    reply["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialcore_service_answers_every_call_with_its_echo_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service = start_service(&dir).await;
    let base = format!("http://{}", service.http_addr);
    let client = reqwest::Client::new();
    let agent = create(
        &client,
        &base,
        "/agents",
        json!({"name": "echo", "prompt": "Repeat.", "status": "active",
               "runtime": {"type": "echo"}}),
    )
    .await;
    let trunk = create(
        &client,
        &base,
        "/trunks",
        json!({"name": "load", "host": "127.0.0.1", "port": 5999, "transport": "udp",
               "allowed_networks": ["127.0.0.0/8"]}),
    )
    .await;
    create(
        &client,
        &base,
        "/phone-numbers",
        json!({"number": "+15550002222", "trunk_id": trunk["id"], "agent_id": agent["id"]}),
    )
    .await;

    let target = format!("sip:+15550002222@{}", service.sip_addr);
    let output = load(&[
        &target,
        "--calls",
        "20",
        "--rate",
        "10",
        "--hold",
        "3s",
        "--json",
        "--threshold",
        "loss_percent=0.5",
        "--threshold",
        "one_way_calls=0",
    ])
    .await;
    let report = report(&output);
    assert_eq!(exit_code(&output), Some(0), "{}", report["summary"]);
    let summary = &report["summary"];
    assert_eq!(summary["answered"], 20, "{summary}");
    assert!(
        summary["rtp_received"].as_u64() > Some(20 * 100),
        "the echo agent sent audio back on every call: {summary}"
    );

    // The service saw the same 20 calls, ended by the caller.
    let mut calls = Value::Null;
    for _ in 0..50 {
        calls = client
            .get(format!(
                "{base}/api/public/v1/calls?direction=inbound&limit=100"
            ))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("service answers")
            .json()
            .await
            .expect("JSON");
        let data = calls["data"].as_array().cloned().unwrap_or_default();
        if data.len() == 20 && data.iter().all(|c| c["status"] == "ended") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = calls["data"].as_array().expect("calls");
    assert_eq!(data.len(), 20, "{calls}");
    for call in data {
        assert_eq!(call["status"], "ended", "{call}");
        assert_eq!(call["outcome"], "caller_hangup", "{call}");
        assert!(
            call["media_stats"]["packets_received"].as_u64() > Some(100),
            "the service got the generator's audio: {call}"
        );
    }
    service.shutdown().await.expect("graceful shutdown");
}
