//! Interop: decodes the RTP that SIPp plays from the pcap files shipped with
//! the sip-tester package (`scripts/prereqs.sh` installs it): the G.711 A-law
//! speech of `g711a.pcap` (30 ms packets) must come out of a `MediaStream`
//! as speech-level PCM with no loss, and every `dtmf_2833_*.pcap` must yield
//! its RFC 2833/4733 digit with a plausible duration.
//!
//! The pcap reader is a small one written for the test: the classic pcap
//! format (either byte order, micro- or nanosecond stamps), Ethernet (with an
//! optional VLAN tag) or Linux cooked capture, IPv4, UDP.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::codec::g711::alaw_to_linear;
use media::codec::CodecSpec;
use media::rtcp::NtpTime;
use media::rtp_session::PayloadType;
use media::stream::{FrameKind, MediaConfig, MediaEvent, MediaStream};
use rand::rngs::StdRng;
use rand::SeedableRng;

const FRAME: Duration = Duration::from_millis(20);

/// One UDP datagram of a capture.
struct Datagram {
    /// Capture time since the first record.
    at: Duration,
    source: SocketAddr,
    payload: Vec<u8>,
}

fn pcap_dir() -> PathBuf {
    for dir in [
        "/usr/share/sip-tester",
        "/usr/share/sip-tester/pcap",
        "/usr/share/sipp/pcap",
    ] {
        if Path::new(dir).join("g711a.pcap").exists() {
            return PathBuf::from(dir);
        }
    }
    panic!(
        "the SIPp pcap files (g711a.pcap, dtmf_2833_*.pcap) were not found under \
         /usr/share/sip-tester: install the sip-tester package (scripts/prereqs.sh)"
    );
}

fn u16_at(bytes: &[u8], at: usize, big_endian: bool) -> u16 {
    let pair = [bytes[at], bytes[at + 1]];
    if big_endian {
        u16::from_be_bytes(pair)
    } else {
        u16::from_le_bytes(pair)
    }
}

fn u32_at(bytes: &[u8], at: usize, big_endian: bool) -> u32 {
    let quad = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if big_endian {
        u32::from_be_bytes(quad)
    } else {
        u32::from_le_bytes(quad)
    }
}

/// Reads every IPv4/UDP datagram of a classic pcap file.
fn read_pcap(path: &Path) -> Vec<Datagram> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        data.len() >= 24,
        "{}: no pcap global header",
        path.display()
    );
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (big_endian, nanos) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        other => panic!(
            "{}: not a classic pcap file (magic {other:#x})",
            path.display()
        ),
    };
    assert_eq!(u16_at(&data, 4, big_endian), 2, "pcap major version");
    let link_type = u32_at(&data, 20, big_endian);
    let mut datagrams = Vec::new();
    let mut first = None;
    let mut offset = 24;
    while offset + 16 <= data.len() {
        let seconds = u32_at(&data, offset, big_endian);
        let fraction = u32_at(&data, offset + 4, big_endian);
        let captured = u32_at(&data, offset + 8, big_endian) as usize;
        let start = offset + 16;
        let end = start + captured;
        assert!(end <= data.len(), "{}: truncated record", path.display());
        offset = end;
        let stamp = Duration::from_secs(u64::from(seconds))
            + if nanos {
                Duration::from_nanos(u64::from(fraction))
            } else {
                Duration::from_micros(u64::from(fraction))
            };
        let first = *first.get_or_insert(stamp);
        if let Some((source, payload)) = udp_payload(&data[start..end], link_type) {
            datagrams.push(Datagram {
                at: stamp.saturating_sub(first),
                source,
                payload: payload.to_vec(),
            });
        }
    }
    datagrams
}

/// The source and payload of an IPv4/UDP frame, `None` for anything else.
fn udp_payload(frame: &[u8], link_type: u32) -> Option<(SocketAddr, &[u8])> {
    let (mut ethertype_at, mut ip_at) = match link_type {
        1 => (12, 14),   // Ethernet
        113 => (14, 16), // Linux cooked capture
        other => panic!("unsupported pcap link type {other}"),
    };
    let mut ethertype =
        u16::from_be_bytes([*frame.get(ethertype_at)?, *frame.get(ethertype_at + 1)?]);
    if ethertype == 0x8100 {
        ethertype_at += 4;
        ip_at += 4;
        ethertype = u16::from_be_bytes([*frame.get(ethertype_at)?, *frame.get(ethertype_at + 1)?]);
    }
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(ip_at..)?;
    let header_len = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 || header_len < 20 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let ip = ip.get(..total_len.min(ip.len()))?;
    let source_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let udp = ip.get(header_len..)?;
    let source_port = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let udp_len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let payload = udp.get(8..udp_len.min(udp.len()))?;
    Some((
        SocketAddr::V4(SocketAddrV4::new(source_ip, source_port)),
        payload,
    ))
}

/// Plays `datagrams` into `stream` at their capture times (from `t0`),
/// ticking every 20 ms until `tail` after the last one; returns the frames
/// played and the events raised.
fn replay(
    stream: &mut MediaStream,
    datagrams: &[Datagram],
    t0: Instant,
    tail: Duration,
) -> (Vec<i16>, Vec<FrameKind>, Vec<MediaEvent>) {
    let end = datagrams.last().map_or(Duration::ZERO, |d| d.at) + tail;
    let mut pcm = Vec::new();
    let mut kinds = Vec::new();
    let mut events = Vec::new();
    let mut next = datagrams.iter().peekable();
    let mut tick = Duration::ZERO;
    while tick <= end {
        while let Some(datagram) = next.next_if(|d| d.at <= tick) {
            stream
                .handle_datagram(
                    t0 + datagram.at,
                    datagram.source,
                    Bytes::copy_from_slice(&datagram.payload),
                )
                .expect("SIPp's RTP is accepted");
        }
        kinds.push(stream.tick(t0 + tick, None).expect("tick"));
        pcm.extend_from_slice(stream.frame());
        events.extend(std::iter::from_fn(|| stream.poll_event()));
        tick += FRAME;
    }
    (pcm, kinds, events)
}

fn stream(codec: CodecSpec, pt: PayloadType, remote: SocketAddr) -> MediaConfig {
    let mut config = MediaConfig::new(codec, pt, remote);
    config.telephone_event_pt = PayloadType::new(101);
    config
}

#[test]
fn g711a_pcap_decodes_to_speech_without_loss() {
    let datagrams = read_pcap(&pcap_dir().join("g711a.pcap"));
    assert_eq!(datagrams.len(), 236, "packets in SIPp's g711a.pcap");
    let t0 = Instant::now();
    let mut config = stream(CodecSpec::Pcma, PayloadType::PCMA, datagrams[0].source);
    config.remote_ptime_ms = 30;
    let mut media =
        MediaStream::new(config, t0, NtpTime(0), &mut StdRng::seed_from_u64(3)).unwrap();
    let (pcm, kinds, events) = replay(&mut media, &datagrams, t0, Duration::from_millis(500));

    let stats = media.stats();
    assert_eq!(stats.stream.codec, "PCMA");
    assert_eq!(stats.stream.packets_received, 236);
    assert_eq!(stats.stream.packets_lost, 0);
    assert_eq!(stats.rejected_datagrams, 0);
    assert_eq!(stats.decode_errors, 0);
    assert_eq!(stats.jitter.lost, 0);
    assert_eq!(stats.jitter.late, 0);
    // Every packet played, but for the odd one the adaptive buffer drops to
    // bring its delay down to target.
    assert_eq!(
        stats.jitter.played + stats.jitter.discarded,
        236,
        "{:?}",
        stats.jitter
    );
    assert!(stats.jitter.discarded <= 3, "{:?}", stats.jitter);
    assert!(events.contains(&MediaEvent::RemoteLatched(datagrams[0].source)));

    // Speech level: the voice frames carry real signal.
    let voice: Vec<i16> = pcm
        .chunks(160)
        .zip(&kinds)
        .filter(|(_, kind)| **kind == FrameKind::Voice)
        .flat_map(|(frame, _)| frame.iter().copied())
        .collect();
    assert!(
        voice.len() >= 236 * 240 * 9 / 10,
        "{} voice samples",
        voice.len()
    );
    let rms =
        (voice.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / voice.len() as f64).sqrt();
    let peak = voice.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(
        rms > 300.0 && peak > 4000,
        "speech level: RMS {rms:.0}, peak {peak}"
    );

    // And it is SIPp's audio: the played PCM contains the directly decoded
    // payloads sample for sample (G.711 is exact, nothing resampled).
    let direct: Vec<i16> = datagrams
        .iter()
        .flat_map(|d| d.payload[12..].iter().map(|&code| alaw_to_linear(code)))
        .collect();
    // Probe 50 ms stretches, one every half second: apart from the few
    // frames the jitter buffer drops or conceals, each is found verbatim.
    let probes: Vec<&[i16]> = direct
        .chunks(4000)
        .map(|chunk| &chunk[..400.min(chunk.len())])
        .collect();
    let found = probes
        .iter()
        .filter(|probe| pcm.windows(probe.len()).any(|window| window == **probe))
        .count();
    assert!(
        found + 2 >= probes.len(),
        "{found} of {} stretches of the pcap's audio found unchanged",
        probes.len()
    );
}

fn digit_of(path: &Path) -> char {
    let name = path.file_stem().unwrap().to_string_lossy();
    match name.rsplit('_').next().unwrap() {
        "pound" => '#',
        "star" => '*',
        digit if digit.len() == 1 => digit.chars().next().unwrap(),
        other => panic!("unexpected DTMF pcap name {other}"),
    }
}

#[test]
fn dtmf_pcaps_yield_their_digits() {
    let dir = pcap_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dtmf_2833_")
        })
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        12,
        "SIPp ships dtmf_2833_0..9, pound and star: {files:?}"
    );
    for path in files {
        let expected = digit_of(&path);
        let datagrams = read_pcap(&path);
        assert!(!datagrams.is_empty(), "{}: no RTP", path.display());
        let t0 = Instant::now();
        let config = stream(CodecSpec::Pcmu, PayloadType::PCMU, datagrams[0].source);
        let mut media =
            MediaStream::new(config, t0, NtpTime(0), &mut StdRng::seed_from_u64(5)).unwrap();
        let (_, _, events) = replay(&mut media, &datagrams, t0, Duration::from_millis(500));
        let digits: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                MediaEvent::Dtmf(digit) => Some(*digit),
                _ => None,
            })
            .collect();
        assert_eq!(digits.len(), 1, "{}: digits {digits:?}", path.display());
        assert_eq!(digits[0].digit, expected, "{}", path.display());
        let duration = digits[0].duration_ms;
        assert!(
            (40..=2000).contains(&duration),
            "{}: {duration} ms",
            path.display()
        );
        let stats = media.stats();
        assert_eq!(stats.stream.packets_lost, 0);
        assert_eq!(stats.dtmf_received, 1);
    }
}
