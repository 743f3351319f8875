//! The HTTP server against idle, slow and stuck clients: with `ulimit -n 1024`, 1100 idle
//! connections do not stop `GET /healthz` from answering; a client that never finishes its
//! headers is closed; a slow handler is answered 408; an open connection does not stall
//! SIGTERM past the grace period. The real binary is used where the process's limits or
//! signals matter, `http_server::serve` on a real socket elsewhere.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use call_control::config::HttpConfig;
use call_control::http_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// `dialcore serve` with at most `nofile` file descriptors and `settings` as environment.
async fn serve_binary(
    dir: &tempfile::TempDir,
    nofile: u32,
    settings: &[(&str, &str)],
) -> (Child, SocketAddr) {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_dialcore"))
        .arg("serve")
        .env("DIALCORE_HTTP_LISTEN", http.to_string())
        .env("DIALCORE_SIP_LISTEN", "127.0.0.1:0")
        .env(
            "DIALCORE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("dialcore.db").display()),
        )
        .env("DIALCORE_RECORDINGS_DIR", dir.path().join("recordings"))
        .env("DIALCORE_API_KEY", "sk_live_http_limits")
        .env("DIALCORE_LOG_LEVEL", "warn")
        .env("DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS", "true")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in settings {
        command.env(key, value);
    }
    let child = command.spawn().expect("prlimit runs dialcore");
    let deadline = Instant::now() + Duration::from_secs(30);
    while healthz(http, Duration::from_secs(1)).await.is_none() {
        assert!(Instant::now() < deadline, "service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, http)
}

/// The status of `GET /healthz` on a fresh connection, `None` when no answer came in time.
async fn healthz(addr: SocketAddr, within: Duration) -> Option<u16> {
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
    tokio::time::timeout(within, attempt).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_descriptor_limit_do_not_lock_out_healthz() {
    // This process opens the 1100 connections: make sure its own limit allows them.
    let _ = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg("--nofile=8192:8192")
        .status();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, http) = serve_binary(&dir, 1024, &[]).await;
    let mut idle = Vec::with_capacity(1100);
    for _ in 0..1100 {
        // Connecting succeeds even when the server cannot accept (the kernel's backlog).
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(http)).await {
            Ok(Ok(stream)) => idle.push(stream),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(idle.len() >= 1024, "only {} connections opened", idle.len());
    let status = healthz(http, Duration::from_secs(5)).await;
    assert_eq!(
        status,
        Some(200),
        "healthz behind {} idle connections",
        idle.len()
    );
    drop(idle);
    child.kill().await.expect("stop");
}

#[tokio::test]
async fn sigterm_is_not_stalled_by_an_open_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut child, http) = serve_binary(
        &dir,
        4096,
        &[
            ("DIALCORE_HTTP_HEADER_READ_TIMEOUT_MS", "600000"),
            ("DIALCORE_HTTP_SHUTDOWN_GRACE_MS", "500"),
        ],
    )
    .await;
    // One idle keep-alive connection and one that stops in the middle of its headers.
    let mut idle = TcpStream::connect(http).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: dialcore\r\n\r\n")
        .await
        .expect("request");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut stuck = TcpStream::connect(http).await.expect("connect");
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: dial")
        .await
        .expect("partial request");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = child.id().expect("running");
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success());
    let exited = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    let status = exited
        .expect("the service exits despite open connections")
        .expect("status");
    assert!(status.success(), "{status}");
}

/// `http_server::serve` of `app` with `config` on a fresh loopback port.
async fn serve_app(app: Router, config: HttpConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(http_server::serve(
        listener,
        app,
        config,
        std::future::pending(),
    ));
    addr
}

fn slow_app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed() {
    let config = HttpConfig {
        header_read_timeout_ms: 300,
        ..HttpConfig::default()
    };
    let addr = serve_app(slow_app(), config).await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "connection still open");
    // A keep-alive connection idle past the timeout is closed too.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "idle keep-alive connection still open");
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn a_slow_request_is_answered_408() {
    let config = HttpConfig {
        request_timeout_ms: 200,
        ..HttpConfig::default()
    };
    let addr = serve_app(slow_app(), config).await;
    let reply = reqwest::get(format!("http://{addr}/slow"))
        .await
        .expect("answer");
    assert_eq!(reply.status().as_u16(), 408);
    let body: serde_json::Value = reply.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "request_timeout");
}

#[tokio::test]
async fn at_the_connection_limit_the_idlest_connection_makes_room() {
    let config = HttpConfig {
        max_connections: 4,
        ..HttpConfig::default()
    };
    let addr = serve_app(slow_app(), config).await;
    // Two busy connections (slow requests in flight) and two idle ones.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        busy.push(stream);
    }
    let mut older = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The fifth connection closes the idlest one, never a busy one.
    assert_eq!(healthz(addr, Duration::from_secs(5)).await, Some(200));
    assert!(
        closed_within(&mut older, Duration::from_secs(5)).await,
        "idlest kept"
    );
    assert!(
        is_open(&newer).await,
        "a newer idle connection was closed too"
    );
    // And again, with the next idlest.
    let mut newer = newer;
    let _newest = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(healthz(addr, Duration::from_secs(5)).await, Some(200));
    assert!(
        closed_within(&mut newer, Duration::from_secs(5)).await,
        "idlest kept"
    );
    for stream in &busy {
        assert!(is_open(stream).await, "a busy connection was closed");
    }
}

/// Whether the server closed `stream` within `limit` (everything it sent is discarded).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Whether `stream` is still open and silent (nothing to read for 100 ms).
async fn is_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut byte))
        .await
        .is_err()
}
