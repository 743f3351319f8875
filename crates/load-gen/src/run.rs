//! A whole run: the user agent, the media shards, the calls placed on
//! schedule (or answered), and the report.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::netsim::NetSimConfig;
use sip_stack::message::TransportKind;
use sip_stack::sdp::{self, Codec, Direction, SessionDescription};
use sip_stack::transport::TransportConfig;
use sip_stack::ua::{CallEvent, CallHandle, OutgoingCall, Party, UaConfig, UserAgent};
use tokio::task::JoinSet;

use crate::audio::{AudioError, EncodedAudio, LoadCodec};
use crate::mux::MediaMux;
use crate::report::{timeline, CallRecord, Outcome, Report, Summary, Threshold};
use crate::rtp::StreamParams;
use crate::schedule::{Profile, Schedule};

/// An answered call held this long without a packet back has one-way audio.
const ONE_WAY_MIN_HOLD: Duration = Duration::from_secs(1);
/// How long the generator waits for the far end's BYE to be answered, and
/// for the last calls to end, before it gives up on them.
const END_GRACE: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Whom to call (`sip:user@host:port`); unused when answering.
    pub target: String,
    /// Calls to place (or to answer).
    pub calls: u64,
    /// New calls per second.
    pub rate: f64,
    /// How long each answered call is held before the generator hangs up
    /// (`None` when answering: hold until the caller hangs up).
    pub hold: Option<Duration>,
    /// The codec offered.
    pub codec: LoadCodec,
    /// The speech to send (the shipped clips when `None`).
    pub audio: Option<PathBuf>,
    /// SIP over TCP instead of UDP.
    pub tcp: bool,
    /// The arrival profile.
    pub profile: Profile,
    /// A simulated network for the RTP the generator sends.
    pub network: Option<NetSimConfig>,
    /// What the run is judged by.
    pub thresholds: Vec<Threshold>,
    /// Answer calls on this address instead of placing them.
    pub answer_on: Option<SocketAddr>,
    /// The local address for SIP and RTP (the target's side of loopback by default).
    pub local_ip: Option<IpAddr>,
    /// Media shards (default: one per core).
    pub shards: Option<usize>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The audio could not be prepared.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The SIP user agent could not start, or the target does not resolve.
    #[error("SIP: {0}")]
    Sip(#[from] sip_stack::ua::UaError),
    /// A socket could not be bound.
    #[error("cannot bind the media sockets: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters for a progress display, updated as calls go.
#[derive(Debug, Default)]
pub struct Progress {
    /// Calls started.
    pub started: AtomicU64,
    /// Calls answered.
    pub answered: AtomicU64,
    /// Calls that failed.
    pub failed: AtomicU64,
    /// Calls over (failed or ended).
    pub finished: AtomicU64,
}

impl Progress {
    /// Calls up now.
    pub fn live(&self) -> u64 {
        let answered = self.answered.load(Ordering::Relaxed);
        let finished = self.finished.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        answered.saturating_sub(finished.saturating_sub(failed))
    }
}

struct Shared {
    config: LoadConfig,
    ua: UserAgent,
    mux: MediaMux,
    local_ip: IpAddr,
    t0: Instant,
    progress: Arc<Progress>,
    peer: Option<(TransportKind, SocketAddr)>,
}

impl Shared {
    fn since_start(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64() * 1000.0
    }
}

/// Runs `config` to its end; `progress` is updated while it runs.
pub async fn run(config: LoadConfig, progress: Arc<Progress>) -> Result<Report, LoadError> {
    validate(&config)?;
    let audio = Arc::new(EncodedAudio::prepare(
        config.codec,
        config.audio.as_deref(),
    )?);
    let peer = match config.answer_on {
        Some(_) => None,
        None => {
            let outgoing = OutgoingCall::to(&config.target, "sip:load@127.0.0.1").await?;
            let kind = if config.tcp {
                TransportKind::Tcp
            } else {
                outgoing.peer.transport
            };
            Some((kind, outgoing.peer.addr))
        }
    };
    let local_ip = config
        .local_ip
        .unwrap_or_else(|| match (config.answer_on, peer) {
            (Some(listen), _) => listen.ip(),
            (None, Some((_, addr))) if addr.ip().is_loopback() => addr.ip(),
            _ => IpAddr::from([0, 0, 0, 0]),
        });
    let sip_addr = config.answer_on.unwrap_or(SocketAddr::new(local_ip, 0));
    let ua_config = UaConfig {
        transport: TransportConfig {
            udp: Some(sip_addr),
            tcp: (config.tcp || config.answer_on.is_some()).then_some(sip_addr),
            ..TransportConfig::default()
        },
        user_agent: concat!("dialcore-load/", env!("CARGO_PKG_VERSION")).to_owned(),
        contact_user: Some("load".to_owned()),
        ..UaConfig::default()
    };
    let (ua, mut incoming) = UserAgent::start(ua_config).await?;
    let shards = config
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mux = MediaMux::start(local_ip, shards, audio.clone())?;
    let cpu_before = process_cpu_seconds();
    let shared = Arc::new(Shared {
        ua,
        mux,
        local_ip,
        t0: Instant::now(),
        progress,
        peer,
        config,
    });

    let mut calls = JoinSet::new();
    if shared.config.answer_on.is_some() {
        let mut index = 0;
        while index < shared.config.calls {
            let Some(call) = incoming.recv().await else {
                break;
            };
            let shared = shared.clone();
            calls.spawn(answer(shared, index, call.invite.sdp, call.call));
            index += 1;
        }
    } else {
        let schedule = Schedule::new(
            shared.config.profile,
            shared.config.calls,
            shared.config.rate,
        );
        for index in 0..shared.config.calls {
            tokio::time::sleep_until((shared.t0 + schedule.start_of(index)).into()).await;
            calls.spawn(place(shared.clone(), index));
        }
    }
    let mut records = Vec::with_capacity(shared.config.calls as usize);
    while let Some(record) = calls.join_next().await {
        if let Ok(record) = record {
            records.push(record);
        }
    }
    records.sort_by_key(|r| r.index);
    let duration_s = shared.t0.elapsed().as_secs_f64();
    let cpu_s = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    shared.ua.shutdown(Duration::from_secs(1)).await;
    let Ok(shared) = Arc::try_unwrap(shared) else {
        return Err(LoadError::Invalid(
            "calls still running at the end of the run".into(),
        ));
    };
    let totals = shared.mux.finish().await;
    let timeline = timeline(&records);
    let summary = Summary::of(
        &records,
        &timeline,
        &totals.deviations,
        duration_s,
        cpu_s,
        totals.send_errors,
    );
    Ok(Report::new(
        summary,
        &shared.config.thresholds,
        timeline,
        records,
    ))
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    if config.calls == 0 {
        return Err(LoadError::Invalid("--calls must be at least 1".into()));
    }
    if !(config.rate.is_finite() && config.rate > 0.0) {
        return Err(LoadError::Invalid(format!(
            "--rate must be a positive number of calls per second, not {}",
            config.rate
        )));
    }
    if config.answer_on.is_none() && config.hold.is_none() {
        return Err(LoadError::Invalid(
            "--hold is needed when placing calls".into(),
        ));
    }
    Ok(())
}

fn offer(shared: &Shared, rtp: SocketAddr, session: u64) -> SessionDescription {
    let codecs = [
        shared.config.codec.sdp_codec(),
        Codec::telephone_event(sdp::PayloadType::TELEPHONE_EVENT_DEFAULT),
    ];
    sdp::build_offer(
        shared.local_ip,
        rtp.port(),
        &codecs,
        Direction::SendRecv,
        session,
        1,
    )
}

fn params(shared: &Shared, negotiated: &sdp::Negotiated, index: u64) -> StreamParams {
    StreamParams::random(
        negotiated.payload_type.get(),
        negotiated.codec.clock_rate,
        shared.config.network.clone().map(|n| (n, index)),
    )
}

/// Places call `index` and follows it to its end.
async fn place(shared: Arc<Shared>, index: u64) -> CallRecord {
    let started = Instant::now();
    shared.progress.started.fetch_add(1, Ordering::Relaxed);
    let (key, rtp) = shared.mux.assign();
    let local_offer = offer(&shared, rtp, index + 1);
    let mut record = CallRecord::started(index, String::new(), shared.since_start(started));
    let from = format!("sip:load-{index}@{}", shared.local_ip);
    let outgoing = match OutgoingCall::to(&shared.config.target, &from).await {
        Ok(outgoing) => outgoing,
        Err(error) => return finish_failed(&shared, record, error.to_string()),
    };
    let outgoing = match shared.peer {
        Some((kind, addr)) => outgoing.via(kind, addr),
        None => outgoing,
    }
    .with_sdp(local_offer.to_string());
    let mut call = match shared.ua.invite(outgoing).await {
        Ok(call) => call,
        Err(error) => return finish_failed(&shared, record, error.to_string()),
    };
    record.sip_call_id = call.sip_call_id().to_owned();
    let since = |at: Instant| at.duration_since(started).as_secs_f64() * 1000.0;
    let mut answered_at = None;
    while let Some(event) = call.next_event().await {
        match event {
            CallEvent::Ringing { .. } if record.ringing_ms.is_none() => {
                record.ringing_ms = Some(since(Instant::now()));
            }
            CallEvent::Answered { sdp } => {
                let now = Instant::now();
                record.answer_ms = Some(since(now));
                record.final_code = Some(200);
                record.outcome = Outcome::Answered;
                shared.progress.answered.fetch_add(1, Ordering::Relaxed);
                answered_at = Some(now);
                let negotiated = sdp
                    .as_deref()
                    .ok_or_else(|| "the 200 OK has no SDP answer".to_owned())
                    .and_then(|text| SessionDescription::parse(text).map_err(|e| e.to_string()))
                    .and_then(|answer| {
                        sdp::negotiated(&local_offer, &answer).map_err(|e| e.to_string())
                    });
                match negotiated {
                    Ok(negotiated) => {
                        let p = params(&shared, &negotiated, index);
                        shared.mux.open(key, negotiated.remote, p);
                    }
                    Err(error) => {
                        record.error = Some(format!("SDP answer: {error}"));
                        call.hangup();
                        continue;
                    }
                }
                let hold = shared.config.hold.unwrap_or_default();
                if hold_or_remote_end(&mut call, hold, &mut record).await {
                    break;
                }
            }
            CallEvent::Failed { code, reason, .. } => {
                record.final_code = Some(code);
                record.error = Some(format!("{code} {reason}"));
                break;
            }
            CallEvent::Ended { by, .. } => {
                record.ended_by = Some(party(by));
                break;
            }
            _ => {}
        }
    }
    finish(&shared, record, key, answered_at).await
}

/// Holds an answered call for `hold`, then hangs up; returns true when the
/// call is over (the far end hung up first, or the end was seen).
async fn hold_or_remote_end(
    call: &mut CallHandle,
    hold: Duration,
    record: &mut CallRecord,
) -> bool {
    let deadline = tokio::time::sleep(hold);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                call.hangup();
                break;
            }
            event = call.next_event() => match event {
                Some(CallEvent::Ended { by, .. }) => {
                    record.ended_by = Some(party(by));
                    return true;
                }
                Some(_) => {}
                None => return true,
            }
        }
    }
    // Wait for our BYE's transaction (or the UA's verdict) to end the call.
    let ended = tokio::time::timeout(END_GRACE, async {
        while let Some(event) = call.next_event().await {
            if let CallEvent::Ended { by, .. } = event {
                return Some(by);
            }
        }
        None
    })
    .await;
    record.ended_by = Some(match ended {
        Ok(Some(by)) => party(by),
        _ => "local",
    });
    true
}

/// Answers incoming call `index` and follows it to its end.
async fn answer(
    shared: Arc<Shared>,
    index: u64,
    offer_sdp: Option<String>,
    mut call: CallHandle,
) -> CallRecord {
    let started = Instant::now();
    shared.progress.started.fetch_add(1, Ordering::Relaxed);
    let mut record = CallRecord::started(
        index,
        call.sip_call_id().to_owned(),
        shared.since_start(started),
    );
    let (key, rtp) = shared.mux.assign();
    let supported = [
        shared.config.codec.sdp_codec(),
        Codec::telephone_event(sdp::PayloadType::TELEPHONE_EVENT_DEFAULT),
    ];
    let answered = offer_sdp
        .as_deref()
        .ok_or_else(|| "the INVITE has no SDP offer".to_owned())
        .and_then(|text| SessionDescription::parse(text).map_err(|e| e.to_string()))
        .and_then(|offer| {
            sdp::answer(
                &offer,
                shared.local_ip,
                rtp.port(),
                &supported,
                Direction::SendRecv,
                index + 1,
                1,
            )
            .map_err(|e| e.to_string())
        });
    let answer = match answered {
        Ok(answer) => answer,
        Err(error) => {
            call.reject(488);
            record.final_code = Some(488);
            return finish_failed(&shared, record, error);
        }
    };
    call.answer(answer.sdp.to_string());
    let now = Instant::now();
    record.answer_ms = Some(now.duration_since(started).as_secs_f64() * 1000.0);
    record.final_code = Some(200);
    record.outcome = Outcome::Answered;
    shared.progress.answered.fetch_add(1, Ordering::Relaxed);
    let p = params(&shared, &answer.negotiated, index);
    shared.mux.open(key, answer.negotiated.remote, p);
    match shared.config.hold {
        Some(hold) => {
            hold_or_remote_end(&mut call, hold, &mut record).await;
        }
        None => {
            while let Some(event) = call.next_event().await {
                match event {
                    CallEvent::Ended { by, .. } => {
                        record.ended_by = Some(party(by));
                        break;
                    }
                    CallEvent::Failed { code, reason, .. } => {
                        record.error = Some(format!("{code} {reason}"));
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    finish(&shared, record, key, Some(now)).await
}

fn party(by: Party) -> &'static str {
    match by {
        Party::Local => "local",
        Party::Remote => "remote",
    }
}

fn finish_failed(shared: &Shared, mut record: CallRecord, error: String) -> CallRecord {
    record.error = Some(error);
    record.ended_ms = shared.since_start(Instant::now());
    shared.progress.failed.fetch_add(1, Ordering::Relaxed);
    shared.progress.finished.fetch_add(1, Ordering::Relaxed);
    record
}

async fn finish(
    shared: &Shared,
    mut record: CallRecord,
    key: crate::mux::StreamKey,
    answered_at: Option<Instant>,
) -> CallRecord {
    let ended = Instant::now();
    record.ended_ms = shared.since_start(ended);
    record.rtp = shared.mux.close(key).await;
    if record.outcome == Outcome::Failed {
        shared.progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    if let (Some(at), Some(rtp)) = (answered_at, record.rtp.as_ref()) {
        record.one_way_audio = rtp.received == 0 && ended.duration_since(at) >= ONE_WAY_MIN_HOLD;
    }
    shared.progress.finished.fetch_add(1, Ordering::Relaxed);
    record
}

/// CPU time (user + system) of this process so far, from /proc.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}
