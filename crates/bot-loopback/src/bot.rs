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
use media::codec::SampleRate;
use media::stream::{MediaEngine, OpenOptions, StreamHandle};
use sip_stack::message::TransportKind;
use sip_stack::sdp::{
    answer as sdp_answer, build_offer, negotiated as sdp_negotiated, Codec, Direction, Negotiated,
    SessionDescription,
};
use sip_stack::transport::TransportConfig;
use sip_stack::ua::{
    CallEvent, CallHandle, IncomingCalls, OutgoingCall, Party as SipParty, UaConfig, UserAgent,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};

mod negotiate;
mod outcome;

use crate::brain::{Brain, BrainReport};
use crate::in_process;
use crate::measure::{Measurements, Party};
use crate::netprofile::NetworkProfile;
use crate::relay::{RelayError, RelayPeers, RelaySockets};
use crate::script::Script;
use crate::speech::{check_wav, SpeechError};
use agent_bridge::agent::{AgentRuntime, CallMetadata, Direction as CallDirection, RuntimeSession};
use agent_bridge::bridge::{Bridge, BridgeEvent, BridgeRuntime};

use self::negotiate::{media_config, metadata, session_id, supported_codecs};
pub(crate) use self::outcome::{assemble, lossless_mos, LinkStats, SipTimes};

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
        let stream: StreamHandle = self.media.open(config, OpenOptions::hooked())?;
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
        let bridge = Bridge {
            stream,
            recording: None,
            runtime: BridgeRuntime::Task {
                input: runtime_in,
                output: runtime_out,
            },
            events: events_tx,
            telephone_event: negotiated.telephone_event_pt.is_some(),
            frames_per_digit: FRAMES_PER_DIGIT,
        };
        let bridge = bridge.start();
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
        let end = bridge.stop().await;
        let link = match end.stream.close().await {
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
