//! The TCP listener against clients that hold connections: too many from one source or in
//! all are closed at once, a client that trickles bytes without ever finishing a message
//! is closed, and a silent connection is closed after its idle time. Real sockets on
//! loopback.

use std::net::SocketAddr;
use std::time::Duration;

use sip_stack::message::TransportKind;
use sip_stack::transport::{TransportConfig, Transports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

async fn listener(adjust: impl FnOnce(&mut TransportConfig)) -> (Transports, SocketAddr) {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = TransportConfig {
        udp: None,
        tcp: Some(any),
        ..TransportConfig::default()
    };
    adjust(&mut config);
    let (received, mut rx) = mpsc::channel(64);
    let transports = Transports::bind(config, received).await.expect("bind");
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let addr = transports
        .local_addr(TransportKind::Tcp)
        .expect("TCP listening");
    (transports, addr)
}

/// Whether the server closes `stream` within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Whether `stream` is still open (nothing to read, no close, for 200 ms).
async fn is_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(200), stream.peek(&mut byte))
        .await
        .is_err()
}

#[tokio::test]
async fn connections_past_the_per_source_limit_are_closed_at_once() {
    let (transports, addr) = listener(|config| config.tcp_max_per_source = 3).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..2 {
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_within(&mut extra, Duration::from_secs(5)).await,
            "extra kept"
        );
    }
    for stream in &kept {
        assert!(
            is_open(stream).await,
            "a connection within the limit was closed"
        );
    }
    assert_eq!(transports.refused_connections(), 2);
    // A slot freed is a slot to take.
    drop(kept.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = TcpStream::connect(addr).await.expect("connect");
    assert!(is_open(&again).await, "the freed slot was not given again");
}

#[tokio::test]
async fn connections_past_the_total_limit_are_closed_at_once() {
    let (transports, addr) = listener(|config| config.tcp_max_connections = 2).await;
    let first = TcpStream::connect(addr).await.expect("connect");
    let second = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    assert!(is_open(&first).await && is_open(&second).await);
    assert_eq!(transports.refused_connections(), 1);
}

#[tokio::test]
async fn a_client_trickling_bytes_is_closed_after_the_first_message_timeout() {
    let (_transports, addr) = listener(|config| {
        config.tcp_first_message_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    // One byte every 100 ms never makes a message: the bytes do not extend its time.
    let mut closed = false;
    for byte in b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
        .iter()
        .cycle()
        .take(100)
    {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickling client was kept");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_its_idle_time_and_keepalives_count() {
    let (_transports, addr) = listener(|config| {
        config.tcp_idle_timeout = Duration::from_millis(400);
    })
    .await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    // RFC 5626 keepalives: a double CRLF is answered with a CRLF and keeps it open.
    for _ in 0..4 {
        client.write_all(b"\r\n\r\n").await.expect("ping");
        let mut pong = [0u8; 2];
        client.read_exact(&mut pong).await.expect("pong");
        assert_eq!(&pong, b"\r\n");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then silence: closed.
    assert!(closed_within(&mut client, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_trunk_network_exempt_from_the_per_source_cap_may_open_more() {
    let (transports, addr) = listener(|config| config.tcp_max_per_source = 2).await;
    // A carrier's SBC on loopback opens more connections than one source may.
    transports.set_per_source_exempt(vec!["127.0.0.0/8".parse().expect("network")]);
    let mut sbc = Vec::new();
    for _ in 0..5 {
        sbc.push(TcpStream::connect(addr).await.expect("connect"));
    }
    for stream in &sbc {
        assert!(is_open(stream).await, "an exempt connection was closed");
    }
    assert_eq!(transports.refused_connections(), 0);
    // Once the trunk is gone, the cap holds again for new connections (the five
    // exempt ones do not count against it, and are kept).
    transports.set_per_source_exempt(Vec::new());
    let first = TcpStream::connect(addr).await.expect("connect");
    let second = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "over the cap kept"
    );
    assert!(is_open(&first).await && is_open(&second).await);
    for stream in &sbc {
        assert!(is_open(stream).await);
    }
    assert_eq!(transports.refused_connections(), 1);
}
