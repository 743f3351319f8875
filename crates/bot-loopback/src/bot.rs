//! The test bot: a real SIP user agent with its own media that answers or
//! places one test call, runs a scenario with its [`Brain`], and reports
//! the call's [`Measurements`].
//!
//! Its leg is built like any of the service's calls: SDP offer/answer
//! (Opus, PCMU, PCMA and telephone-event), a media stream from the shared
//! [`MediaEngine`], and the same [`Bridge`] between the stream and the
//! brain. Its SDP advertises its [`crate::relay`], which applies the run's
//! network profile to both directions. The bot hangs up at the end of its
//! script or at the run's `max_duration`, and reports who hung up.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use media::codec::{CodecSpec, SampleRate};
use media::rtp_session::PayloadType as RtpPayloadType;
use media::stats::{CodecQuality, EModel};
use media::stream::{IdleAudio, MediaConfig, MediaEngine, OpenOptions, StreamHandle};
use sip_stack::message::TransportKind;
use sip_stack::sdp::{
    answer as sdp_answer, build_offer, negotiated as sdp_negotiated, Codec, Direction, Negotiated,
    PayloadType, SessionDescription,
};
use sip_stack::transport::TransportConfig;
use sip_stack::ua::{
    CallEvent, CallHandle, IncomingCalls, OutgoingCall, Party as SipParty, UaConfig, UserAgent,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};

use crate::agent::{AgentRuntime, CallMetadata, Direction as CallDirection, RuntimeSession};
use crate::brain::{Brain, BrainReport};
use crate::bridge::{Bridge, BridgeCommand, BridgeEvent};
use crate::in_process;
use crate::measure::{LatencySummary, Measurements, Party, DEAD_AIR_THRESHOLD_MS};
use crate::netprofile::NetworkProfile;
use crate::relay::{RelayError, RelayPeers, RelaySockets};
use crate::script::Script;
use crate::speech::{check_wav, SpeechError};

/// Messages between the bridge and the brain, each way.
const RUNTIME_CHANNEL: usize = 64;
/// Frames of pause per DTMF digit (100 ms tone, 100 ms gap).
const FRAMES_PER_DIGIT: u32 = 10;
/// How long the bot waits for its BYE/CANCEL to complete.
const TEARDOWN_WAIT: Duration = Duration::from_secs(5);

/// Errors of the test bot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// The SIP user agent failed.
    #[error("SIP: {0}")]
    Sip(#[from] sip_stack::ua::UaError),
    /// The media stream could not be opened.
    #[error("media: {0}")]
    Media(#[from] media::stream::EngineError),
    /// The relay could not start.
    #[error("relay: {0}")]
    Relay(#[from] RelayError),
    /// No INVITE arrived in time (`answer`).
    #[error("no call arrived within {0:?}")]
    NoIncomingCall(Duration),
    /// The far end's SDP could not be used.
    #[error("SDP: {0}")]
    Sdp(String),
    /// An audio file of the script cannot be played.
    #[error(transparent)]
    Speech(#[from] SpeechError),
}

/// The bot's identity and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotConfig {
    /// The bot's E.164 number (From of its calls, expected To of calls to it).
    pub number: String,
    /// SIP listen address (UDP), e.g. `127.0.0.1:0`.
    pub sip_listen: SocketAddr,
    /// Address of the bot's media (relay) in its SDP.
    pub rtp_ip: IpAddr,
}

/// One run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// What the bot does.
    pub scenario: Script,
    /// The simulated path of the bot's media.
    pub network_profile: NetworkProfile,
    /// The bot hangs up this long after answer at the latest.
    pub max_duration: Duration,
    /// How long to wait for the INVITE (`answer`) or the answer (`call`).
    pub answer_timeout: Duration,
    /// Seed of the network simulation.
    pub seed: u64,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The measurements (complete when the call was answered; zeros and
    /// nulls otherwise).
    pub measurements: Measurements,
    /// The bot leg's SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// The final SIP status of the bot's INVITE (`call`) or the one it
    /// sent (`answer`: 200).
    pub sip_final_code: Option<u16>,
    /// The negotiated codec (`PCMU`, `PCMA`, `opus`).
    pub codec: Option<String>,
    /// INVITE sent or received.
    pub invite_at: Option<DateTime<Utc>>,
    /// First 180/183 sent or received.
    pub ringing_at: Option<DateTime<Utc>>,
    /// Answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Who hung up.
    pub hangup_by: Party,
    /// Why the run did not complete, if it did not.
    pub error: Option<String>,
}

impl RunReport {
    fn unanswered(profile: NetworkProfile, error: String) -> RunReport {
        RunReport {
            measurements: assemble(
                &BrainReport::default(),
                &LinkStats::default(),
                SipTimes::default(),
                Party::Agent,
                profile,
            ),
            sip_call_id: None,
            sip_final_code: None,
            codec: None,
            invite_at: None,
            ringing_at: None,
            answered_at: None,
            ended_at: Some(Utc::now()),
            hangup_by: Party::Agent,
            error: Some(error),
        }
    }
}

/// RTP figures of the bot's leg.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LinkStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub packets_dropped_outbound: u64,
    pub loss_percent: f64,
    pub jitter_ms: f64,
    pub mos: f64,
}

/// SIP delays of the bot's leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SipTimes {
    pub post_dial_delay_ms: Option<u64>,
    pub answer_delay_ms: Option<u64>,
}

/// Builds the measurements from the brain's report and the leg's figures.
pub(crate) fn assemble(
    brain: &BrainReport,
    link: &LinkStats,
    sip: SipTimes,
    hangup_by: Party,
    profile: NetworkProfile,
) -> Measurements {
    let timeline = &brain.timeline;
    let latencies = timeline.response_latencies();
    let as_f64: Vec<f64> = latencies.iter().map(|&v| v as f64).collect();
    let (dead_air_ms_max, dead_air_count) = timeline.dead_air(DEAD_AIR_THRESHOLD_MS);
    let (barge_in_attempts, barge_in_stopped, barge_in_stop_ms) = timeline.barge_ins();
    let spoke = !timeline.bot_speech.is_empty();
    let heard = !timeline.agent_speech.is_empty();
    let one_way_audio = (spoke && !heard) || (link.packets_sent > 0 && link.packets_received == 0);
    Measurements {
        response_latency_ms: LatencySummary::of(&as_f64),
        response_latencies_ms: latencies,
        dead_air_ms_max,
        dead_air_count,
        one_way_audio,
        mos: link.mos,
        post_dial_delay_ms: sip.post_dial_delay_ms,
        answer_delay_ms: sip.answer_delay_ms,
        time_to_first_agent_audio_ms: timeline.first_agent_audio_ms(),
        barge_in_stop_ms,
        barge_in_attempts,
        barge_in_stopped,
        packets_sent: link.packets_sent,
        packets_received: link.packets_received,
        packets_lost: link.packets_lost,
        packets_dropped_outbound: link.packets_dropped_outbound,
        loss_percent: link.loss_percent,
        jitter_ms: link.jitter_ms,
        dtmf_sent: brain.dtmf_sent.clone(),
        dtmf_heard: brain.dtmf_heard.clone(),
        hangup_by,
        duration_ms: timeline.duration_ms,
        utterances: u32::try_from(timeline.bot_speech.len()).unwrap_or(u32::MAX),
        expect_timeouts: brain.expect_timeouts,
        network_profile: profile,
    }
}

/// The MOS of a lossless, undelayed PCM path (the in-process `bot` mode).
pub(crate) fn lossless_mos() -> f64 {
    EModel::new(CodecQuality::PCMU).mos()
}

/// A test bot: one SIP user agent, one run.
pub struct TestBot {
    config: BotConfig,
    ua: UserAgent,
    incoming: IncomingCalls,
    media: MediaEngine,
    sip_addr: SocketAddr,
}

impl std::fmt::Debug for TestBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBot")
            .field("number", &self.config.number)
            .field("sip_addr", &self.sip_addr)
            .finish_non_exhaustive()
    }
}

/// What both directions share once the call is set up.
struct Leg {
    call: CallHandle,
    negotiated: Negotiated,
    relay: RelaySockets,
    metadata: CallMetadata,
    times: SipTimes,
    invite_at: DateTime<Utc>,
    ringing_at: Option<DateTime<Utc>>,
    answered_at: DateTime<Utc>,
    final_code: u16,
}

impl TestBot {
    /// Starts the bot's SIP user agent (UDP on `config.sip_listen`); its
    /// media streams come from `media` (shared between bots).
    pub async fn start(config: BotConfig, media: MediaEngine) -> Result<TestBot, BotError> {
        let ua_config = UaConfig {
            transport: TransportConfig {
                udp: Some(config.sip_listen),
                tcp: None,
                ..TransportConfig::default()
            },
            contact_user: Some(config.number.clone()),
            user_agent: concat!("dialcore-test-bot/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..UaConfig::default()
        };
        let (ua, incoming) = UserAgent::start(ua_config).await?;
        let sip_addr = ua
            .local_addr(TransportKind::Udp)
            .unwrap_or(config.sip_listen);
        Ok(TestBot {
            config,
            ua,
            incoming,
            media,
            sip_addr,
        })
    }

    /// The bound SIP address (UDP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// `outbound` direction: waits (up to `spec.answer_timeout`) for one
    /// INVITE, answers it with 180 then 200, runs the scenario.
    pub async fn answer(mut self, spec: RunSpec) -> Result<RunReport, BotError> {
        let brain = prepared_brain(&spec.scenario).await?;
        let incoming = tokio::time::timeout(spec.answer_timeout, self.incoming.recv())
            .await
            .ok()
            .flatten()
            .ok_or(BotError::NoIncomingCall(spec.answer_timeout))?;
        let invite_at = Utc::now();
        let invite = incoming.invite;
        let call = incoming.call;
        let span = tracing::info_span!("bot", sip_call_id = %invite.call_id, direction = "answer");
        async move {
            let called = invite.called_user.as_deref().unwrap_or_default();
            if called.trim_start_matches('+') != self.config.number.trim_start_matches('+') {
                warn!(called, number = %self.config.number, "call for another number; answered anyway");
            }
            let offer = invite
                .sdp
                .as_deref()
                .ok_or_else(|| "INVITE without SDP".to_owned())
                .and_then(|sdp| SessionDescription::parse(sdp).map_err(|e| e.to_string()));
            let offer = match offer {
                Ok(offer) => offer,
                Err(error) => {
                    call.reject(488);
                    return Err(BotError::Sdp(error));
                }
            };
            let relay = RelaySockets::bind(self.config.rtp_ip).await?;
            let port = relay.far_rtp_addr().map_err(RelayError::Bind)?.port();
            let reply = match sdp_answer(
                &offer,
                self.config.rtp_ip,
                port,
                &supported_codecs(),
                Direction::SendRecv,
                session_id(spec.seed),
                1,
            ) {
                Ok(reply) => reply,
                Err(error) => {
                    call.reject(488);
                    return Err(BotError::Sdp(error.to_string()));
                }
            };
            call.ring(None);
            let ringing_at = Some(Utc::now());
            call.answer(reply.sdp.to_string());
            let answered_at = Utc::now();
            info!("answered");
            let metadata = metadata(
                &invite.call_id,
                invite.caller_user.clone().unwrap_or_default(),
                self.config.number.clone(),
                CallDirection::Inbound,
                &reply.negotiated,
            )?;
            let leg = Leg {
                call,
                negotiated: reply.negotiated,
                relay,
                metadata,
                times: SipTimes {
                    post_dial_delay_ms: None,
                    answer_delay_ms: Some(elapsed_ms(invite_at, answered_at)),
                },
                invite_at,
                ringing_at,
                answered_at,
                final_code: 200,
            };
            self.run_leg(leg, spec, brain).await
        }
        .instrument(span)
        .await
    }

    /// `inbound` direction: calls `target_uri` (e.g.
    /// `sip:TOKEN@127.0.0.1:5060`) from `from_number`, runs the scenario.
    pub async fn call(
        self,
        target_uri: &str,
        from_number: &str,
        spec: RunSpec,
    ) -> Result<RunReport, BotError> {
        let brain = prepared_brain(&spec.scenario).await?;
        let relay = RelaySockets::bind(self.config.rtp_ip).await?;
        let port = relay.far_rtp_addr().map_err(RelayError::Bind)?.port();
        let offer = build_offer(
            self.config.rtp_ip,
            port,
            &Codec::default_set(),
            Direction::SendRecv,
            session_id(spec.seed),
            1,
        );
        let from = format!("sip:{from_number}@{}", self.sip_addr);
        let outgoing = OutgoingCall::to(target_uri, &from)
            .await?
            .with_sdp(offer.to_string());
        let sip_call_id = outgoing.call_id.clone();
        let span = tracing::info_span!("bot", sip_call_id = %sip_call_id, direction = "call");
        async move {
            let invite_at = Utc::now();
            let mut call = self.ua.invite(outgoing).await?;
            let mut ringing_at = None;
            let deadline = tokio::time::Instant::now() + spec.answer_timeout;
            let answer_sdp = loop {
                let event = tokio::time::timeout_at(deadline, call.next_event()).await;
                match event {
                    Ok(Some(CallEvent::Ringing { .. })) => {
                        ringing_at.get_or_insert_with(Utc::now);
                    }
                    Ok(Some(CallEvent::Answered { sdp })) => break sdp,
                    Ok(Some(CallEvent::Failed { code, reason, .. })) => {
                        info!(code, reason, "call failed");
                        let mut report = RunReport::unanswered(
                            spec.network_profile,
                            format!("call failed: {code} {reason}"),
                        );
                        report.sip_call_id = Some(sip_call_id.clone());
                        report.sip_final_code = Some(code);
                        report.invite_at = Some(invite_at);
                        report.ringing_at = ringing_at;
                        report.measurements.post_dial_delay_ms =
                            ringing_at.map(|at| elapsed_ms(invite_at, at));
                        return Ok(report);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        call.cancel();
                        let _ = tokio::time::timeout(TEARDOWN_WAIT, drain(&mut call)).await;
                        let mut report = RunReport::unanswered(
                            spec.network_profile,
                            format!("not answered within {:?}", spec.answer_timeout),
                        );
                        report.sip_call_id = Some(sip_call_id.clone());
                        report.invite_at = Some(invite_at);
                        report.ringing_at = ringing_at;
                        report.hangup_by = Party::Bot;
                        report.measurements.hangup_by = Party::Bot;
                        return Ok(report);
                    }
                }
            };
            let answered_at = Utc::now();
            info!("answered");
            let negotiated = answer_sdp
                .as_deref()
                .ok_or_else(|| "answer without SDP".to_owned())
                .and_then(|sdp| SessionDescription::parse(sdp).map_err(|e| e.to_string()))
                .and_then(|sdp| sdp_negotiated(&offer, &sdp).map_err(|e| e.to_string()));
            let negotiated = match negotiated {
                Ok(negotiated) => negotiated,
                Err(error) => {
                    call.hangup();
                    return Err(BotError::Sdp(error));
                }
            };
            let metadata = metadata(
                &sip_call_id,
                from_number.to_owned(),
                target_uri.to_owned(),
                CallDirection::Outbound,
                &negotiated,
            )?;
            let leg = Leg {
                call,
                negotiated,
                relay,
                metadata,
                times: SipTimes {
                    post_dial_delay_ms: ringing_at.map(|at| elapsed_ms(invite_at, at)),
                    answer_delay_ms: Some(elapsed_ms(invite_at, answered_at)),
                },
                invite_at,
                ringing_at,
                answered_at,
                final_code: 200,
            };
            self.run_leg(leg, spec, brain).await
        }
        .instrument(span)
        .await
    }

    /// Media, brain and bridge of an answered call, until it ends.
    async fn run_leg(
        self,
        leg: Leg,
        spec: RunSpec,
        brain: (Brain, oneshot::Receiver<BrainReport>),
    ) -> Result<RunReport, BotError> {
        let (brain, report_rx) = brain;
        let Leg {
            mut call,
            negotiated,
            relay,
            metadata,
            times,
            invite_at,
            ringing_at,
            answered_at,
            final_code,
        } = leg;
        let near_rtp = relay.near_rtp_addr().map_err(RelayError::Bind)?;
        let near_rtcp = relay.near_rtcp_addr().map_err(RelayError::Bind)?;
        let config = match media_config(&negotiated, near_rtp, near_rtcp) {
            Ok(config) => config,
            Err(error) => {
                call.hangup();
                return Err(error);
            }
        };
        let codec = negotiated.codec.name.clone();
        let stream: StreamHandle = self.media.open(config, OpenOptions::default())?;
        let relay = relay.start(
            RelayPeers {
                bot_rtp: stream.local_addr(),
                bot_rtcp: stream
                    .local_rtcp_addr()
                    .unwrap_or_else(|| stream.local_addr()),
                far_rtp: negotiated.remote,
            },
            spec.network_profile,
            spec.seed,
        )?;
        let (session, runtime_in, runtime_out) = RuntimeSession::channel(RUNTIME_CHANNEL);
        let mut brain_task = tokio::spawn(Box::new(brain).run(metadata, session).in_current_span());
        let mut brain_result = None;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let bridge = Bridge {
            stream,
            recording: None,
            runtime_in,
            runtime_out,
            events: events_tx,
            telephone_event: negotiated.telephone_event_pt.is_some(),
            frames_per_digit: FRAMES_PER_DIGIT,
        };
        let bridge_task = tokio::spawn(bridge.run(commands_rx).in_current_span());
        let limit = tokio::time::sleep(spec.max_duration);
        tokio::pin!(limit);
        let mut ended_by_sip = false;
        let hangup_by = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(BridgeEvent::Hangup) => break Party::Bot,
                    Some(_) => {}
                    None => break Party::Bot,
                },
                event = call.next_event() => match event {
                    Some(CallEvent::Ended { by, reason, .. }) => {
                        info!(?by, ?reason, "call ended");
                        ended_by_sip = true;
                        break if by == SipParty::Remote { Party::Agent } else { Party::Bot };
                    }
                    Some(CallEvent::Failed { code, .. }) => {
                        info!(code, "call failed after answer");
                        ended_by_sip = true;
                        break Party::Agent;
                    }
                    Some(CallEvent::RemoteUpdate { sdp }) => {
                        info!(sdp_len = sdp.len(), "re-INVITE answered");
                    }
                    Some(_) => {}
                    None => { ended_by_sip = true; break Party::Agent; }
                },
                result = &mut brain_task, if brain_result.is_none() => {
                    // Normally the brain runs until the call is over; ending
                    // first means it failed (e.g. an unreadable audio file).
                    warn!("bot brain stopped before the call ended");
                    brain_result = Some(result);
                    break Party::Bot;
                }
                _ = &mut limit => {
                    info!("max duration reached");
                    break Party::Bot;
                }
            }
        };
        if !ended_by_sip {
            call.hangup();
        }
        let _ = commands.send(BridgeCommand::Stop);
        let link = match bridge_task.await {
            Ok(end) => match end.stream.close().await {
                Ok(closed) => {
                    let s = closed.stats.stream;
                    LinkStats {
                        packets_sent: s.packets_sent,
                        packets_received: s.packets_received,
                        packets_lost: s.packets_lost,
                        packets_dropped_outbound: 0,
                        loss_percent: s.loss_percent,
                        jitter_ms: s.jitter_ms,
                        mos: s.mos,
                    }
                }
                Err(error) => {
                    warn!(%error, "media stats lost");
                    LinkStats::default()
                }
            },
            Err(error) => {
                warn!(%error, "bridge task failed");
                LinkStats::default()
            }
        };
        let relay_stats = relay.stop().await;
        info!(?relay_stats, "relay stopped");
        let mut link = link;
        link.packets_dropped_outbound =
            relay_stats.uplink.lost_random + relay_stats.uplink.lost_burst;
        let brain_result = match brain_result {
            Some(result) => result,
            None => brain_task.await,
        };
        let brain_error = match brain_result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(format!("brain task failed: {error}")),
        };
        let brain = report_rx.await.unwrap_or_default();
        if !ended_by_sip {
            let _ = tokio::time::timeout(TEARDOWN_WAIT, drain(&mut call)).await;
        }
        let ended_at = Utc::now();
        let measurements = assemble(&brain, &link, times, hangup_by, spec.network_profile);
        info!(
            hangup_by = hangup_by.as_str(),
            utterances = measurements.utterances,
            "run complete"
        );
        Ok(RunReport {
            measurements,
            sip_call_id: Some(call.sip_call_id().to_owned()),
            sip_final_code: Some(final_code),
            codec: Some(codec),
            invite_at: Some(invite_at),
            ringing_at,
            answered_at: Some(answered_at),
            ended_at: Some(ended_at),
            hangup_by,
            error: brain_error,
        })
    }
}

/// `bot` mode: the bot's brain and an agent runtime joined in-process, no
/// SIP, paced every 20 ms with the same playout logic both ways.
pub async fn run_in_process(
    agent: Box<dyn AgentRuntime>,
    agent_metadata: CallMetadata,
    spec: RunSpec,
) -> Result<RunReport, BotError> {
    preflight(&spec.scenario)?;
    in_process::run(agent, agent_metadata, spec).await
}

/// Checks the script's audio files before any call is made.
pub(crate) fn preflight(script: &Script) -> Result<(), BotError> {
    for path in script.audio_files() {
        check_wav(path)?;
    }
    Ok(())
}

/// A brain for `script` with its speech rendered at both call rates
/// (8 kHz for G.711, 16 kHz for Opus) before the call starts.
async fn prepared_brain(
    script: &Script,
) -> Result<(Brain, oneshot::Receiver<BrainReport>), BotError> {
    preflight(script)?;
    let (mut brain, report) = Brain::new(script.clone());
    brain
        .prepare(&[SampleRate::Hz8000, SampleRate::Hz16000])
        .await?;
    Ok((brain, report))
}

/// Waits for the call's terminal event.
async fn drain(call: &mut CallHandle) {
    while let Some(event) = call.next_event().await {
        if event.is_terminal() {
            return;
        }
    }
}

fn elapsed_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

fn session_id(seed: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1
}

/// What the bot accepts in an offer (the offerer's order wins).
fn supported_codecs() -> Vec<Codec> {
    let mut codecs = Codec::default_set();
    codecs.push(Codec::telephone_event_at(
        PayloadType::TELEPHONE_EVENT_DEFAULT,
        48_000,
    ));
    codecs
}

fn metadata(
    sip_call_id: &str,
    from_number: String,
    to_number: String,
    direction: CallDirection,
    negotiated: &Negotiated,
) -> Result<CallMetadata, BotError> {
    let rate = app_rate(negotiated)?;
    Ok(CallMetadata {
        call_id: sip_call_id.to_owned(),
        org_id: String::new(),
        agent_id: String::new(),
        direction,
        from_number,
        to_number,
        prompt: String::new(),
        greeting: None,
        variables: Default::default(),
        sip_call_id: Some(sip_call_id.to_owned()),
        sample_rate: rate.hz(),
    })
}

fn codec_spec(negotiated: &Negotiated) -> Result<CodecSpec, BotError> {
    let codec = &negotiated.codec;
    CodecSpec::from_rtpmap(&codec.name, codec.clock_rate).ok_or_else(|| {
        BotError::Sdp(format!(
            "unsupported codec {}/{}",
            codec.name, codec.clock_rate
        ))
    })
}

fn app_rate(negotiated: &Negotiated) -> Result<SampleRate, BotError> {
    Ok(match codec_spec(negotiated)? {
        CodecSpec::Opus(_) => SampleRate::Hz16000,
        _ => SampleRate::Hz8000,
    })
}

/// The bot's stream: the negotiated codec, talking to the relay's near side.
fn media_config(
    negotiated: &Negotiated,
    near_rtp: SocketAddr,
    near_rtcp: SocketAddr,
) -> Result<MediaConfig, BotError> {
    let spec = codec_spec(negotiated)?;
    let pt = |value: u8| {
        RtpPayloadType::new(value).ok_or_else(|| BotError::Sdp(format!("payload type {value}")))
    };
    let mut config = MediaConfig::new(spec, pt(negotiated.payload_type.get())?, near_rtp);
    config.remote_rtcp = Some(near_rtcp);
    config.telephone_event_pt = negotiated
        .telephone_event_pt
        .map(|p| pt(p.get()))
        .transpose()?;
    config.app_rate = app_rate(negotiated)?;
    config.remote_ptime_ms = negotiated.ptime.clamp(10, 120);
    config.idle = IdleAudio::Nothing;
    config.inactivity_timeout = None;
    config.cname = String::from("dialcore-test-bot");
    Ok(config)
}
