//! A live stream changes codec in place (the answer to an outbound offer
//! picked Opus while the stream was opened for PCMU): same local port, same
//! SSRC, sequence numbers running on, the new payload type and 16 kHz frames
//! to the application; a raw UDP socket plays the peer and reads every packet.

use std::net::SocketAddr;
use std::time::Duration;

use media::codec::{CodecSpec, OpusConfig, SampleRate};
use media::rtp_session::{parse_packet, PayloadType};
use media::stream::{EngineConfig, EngineError, IdleAudio, MediaConfig, MediaEngine, OpenOptions};
use tokio::net::UdpSocket;

fn config(codec: CodecSpec, pt: u8, rate: SampleRate, remote: SocketAddr) -> MediaConfig {
    let mut config = MediaConfig::new(codec, PayloadType::new(pt).expect("valid"), remote);
    config.app_rate = rate;
    config.idle = IdleAudio::Silence;
    config.inactivity_timeout = None;
    config
}

/// The next RTP packets from the stream: (payload type, SSRC, sequence number).
async fn packets(peer: &UdpSocket, count: usize) -> Vec<(u8, u32, u16)> {
    let mut buf = [0u8; 1500];
    let mut out = Vec::new();
    while out.len() < count {
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
            .await
            .expect("the stream keeps sending")
            .expect("recv");
        let packet = parse_packet(&buf[..len]).expect("RTP");
        out.push((packet.payload_type.value(), packet.ssrc.0, packet.seq.0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_change_keeps_the_ports_ssrc_and_sequence_numbers() {
    let engine = MediaEngine::start(EngineConfig::default()).expect("engine");
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let remote = peer.local_addr().expect("addr");
    let mut stream = engine
        .open(
            config(CodecSpec::Pcmu, 0, SampleRate::Hz8000, remote),
            OpenOptions::default(),
        )
        .expect("open");
    let local = stream.local_addr();
    let rtcp = stream.local_rtcp_addr();
    let before = packets(&peer, 5).await;
    assert!(before.iter().all(|(pt, _, _)| *pt == 0), "{before:?}");

    let opus = CodecSpec::Opus(OpusConfig::default());
    stream
        .reconfigure(config(opus, 111, SampleRate::Hz16000, remote))
        .await
        .expect("reconfigured");
    assert_eq!(stream.local_addr(), local, "same RTP port");
    assert_eq!(stream.local_rtcp_addr(), rtcp, "same RTCP port");
    assert_eq!(stream.app_rate(), SampleRate::Hz16000);
    stream
        .send_frame(&[0i16; 320])
        .await
        .expect("20 ms at the new rate is accepted");
    assert!(
        matches!(
            stream.try_send_frame(&[0i16; 160]),
            Err(EngineError::FrameLength { .. })
        ),
        "the old frame size is not"
    );

    let mut after = packets(&peer, 30).await;
    // Packets already in flight when the change landed may still be PCMU.
    after.retain(|(pt, _, _)| *pt == 111);
    assert!(after.len() > 20, "Opus packets follow: {after:?}");
    let ssrc = before[0].1;
    assert!(
        after.iter().all(|(_, s, _)| *s == ssrc),
        "same SSRC: {before:?} {after:?}"
    );
    let mut all: Vec<u16> = before
        .iter()
        .chain(&after)
        .map(|(_, _, seq)| *seq)
        .collect();
    all.dedup();
    for pair in all.windows(2) {
        let step = pair[1].wrapping_sub(pair[0]);
        assert!((1..=3).contains(&step), "sequence numbers run on: {all:?}");
    }

    // The stream takes Opus from the peer now.
    let mut encoder = opus.make_encoder().expect("encoder");
    let mut payload = vec![0u8; 1500];
    let len = encoder.encode(&[0i16; 960], &mut payload).expect("encode");
    let mut packet = vec![0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42];
    packet.extend_from_slice(&payload[..len]);
    for seq in 1u16..=10 {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
        peer.send_to(&packet, local).await.expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = stream.stats().await.expect("stats");
    assert!(stats.stream.packets_received >= 9, "{stats:?}");
    assert_eq!(
        stats.rejected_datagrams, 0,
        "no packet refused for its payload type: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_multiplexing_cannot_change_on_a_live_stream() {
    let engine = MediaEngine::start(EngineConfig::default()).expect("engine");
    let remote = "127.0.0.1:9".parse().expect("addr");
    let mut stream = engine
        .open(
            config(CodecSpec::Pcmu, 0, SampleRate::Hz8000, remote),
            OpenOptions::default(),
        )
        .expect("open");
    let mut muxed = config(CodecSpec::Pcma, 8, SampleRate::Hz8000, remote);
    muxed.rtcp_mux = true;
    let error = stream.reconfigure(muxed).await.expect_err("refused");
    assert!(matches!(error, EngineError::Unchangeable(_)), "{error}");
    assert_eq!(stream.app_rate(), SampleRate::Hz8000, "unchanged");
}
