//! Incoming calls: who may call which number, and answering them.
//!
//! First of all the node must have a free slot (`[node] max_calls`; 503 with
//! `Retry-After` otherwise, so a load balancer tries another node). Then the checks, in
//! order: the dialled number must be one of ours (404); the
//! INVITE must come from the allowed networks of that number's trunk (403,
//! before anything about the agent is revealed); the number must be
//! assigned to an active agent (480); the offer must hold a codec we speak
//! (488); the organisation must have a minute of credit beside what its live
//! calls hold (402) and be under its cap of live calls (486). Only then is a
//! call record created, holding its reservation, and the call answered.
//!
//! A store that fails on the way (a pool timeout under load, a database
//! gone) is said as it is: 503 with `Retry-After` and an error in the log,
//! never a 403 or 404 that would tell the carrier something untrue.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
pub use media::rtp_session::IpNet;
use sip_stack::auth::Credentials;
use sip_stack::sdp::{answer, Direction, SessionDescription};
use sip_stack::ua::{CallEvent, CallHandle, IncomingCall, IncomingCalls};
use tokio::sync::oneshot;
use tracing::{error, info, warn, Instrument};

use super::billing;
use super::call::CallTask;
use super::negotiate::{media_config, media_networks, supported_codecs};
use super::rejections::Entry as RejectionEntry;
use super::test_route::TestRoute;
use super::Shared;
use crate::ids::new_id;
use crate::model::{
    format_duration_secs, Agent, AgentStatus, Call, CallDirection, CallOutcome, CallSettings,
    CallStatus, InboundAuth,
};
use crate::store::{Admission, CallAdmission, StoreError};

/// How long a carrier is asked to wait (`Retry-After`) before it retries an
/// INVITE we refused with 503 because the store or the media ports failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Takes incoming calls until the user agent stops.
pub async fn accept_loop(shared: Arc<Shared>, mut incoming: IncomingCalls) {
    while let Some(call) = incoming.recv().await {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move { handle(shared, call).await });
    }
}

/// Whether `ip` is inside one of `networks` (CIDRs such as `10.0.0.0/8`,
/// `2001:db8::/32`, or plain addresses). Unparsable entries match nothing.
pub fn allowed(networks: &[String], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    parse_networks(networks)
        .iter()
        .any(|network| network.contains(&ip))
}

/// A trunk's `allowed_networks` as networks: CIDRs, or plain addresses as one-address
/// networks. Entries that do not parse (validated when the trunk was written) are skipped.
pub fn parse_networks(networks: &[String]) -> Vec<IpNet> {
    networks.iter().filter_map(|n| parse_network(n)).collect()
}

/// One entry of `allowed_networks`: a CIDR, or a plain address as a one-address network.
pub fn parse_network(network: &str) -> Option<IpNet> {
    let network = network.trim();
    network
        .parse::<IpNet>()
        .ok()
        .or_else(|| network.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The dialled number as E.164: `+` added when the carrier left it out.
pub fn normalize_number(user: &str) -> String {
    let digits = user.trim();
    if digits.starts_with('+') {
        digits.to_owned()
    } else {
        format!("+{digits}")
    }
}

/// Who an accepted INVITE is for.
struct Accepted {
    org_id: String,
    agent: Agent,
    /// The called number recorded on the call.
    to_number: String,
    /// The caller number recorded on the call (from the INVITE when `None`).
    from_number: Option<String>,
    /// A test route waiting for the id of the call record.
    created: Option<oneshot::Sender<String>>,
    /// Networks besides the offer's address that the call's media may come from.
    media_networks: Vec<IpNet>,
}

async fn handle(shared: Arc<Shared>, incoming: IncomingCall) {
    // Boxed: what routing and answering need (the INVITE, both SDPs, the store's futures)
    // is gone once the call runs; awaited inline, it would keep its room in the call's
    // task for the whole call.
    let Some(answered) = Box::pin(accept(&shared, incoming)).await else {
        return;
    };
    answered.task.run().instrument(answered.span).await;
    shared.unregister(&answered.call_id);
    drop(answered.slot);
}

/// Call setup should not wait on the store; a wait longer than this is logged.
const SETUP_STORE_WAIT_WARNING: Duration = Duration::from_millis(50);

/// Awaits `work`, a store operation of an INVITE's setup, and logs a warning when it took
/// longer than [`SETUP_STORE_WAIT_WARNING`]: routing reads memory, so a wait means the
/// directory was being reloaded or the call record's write was slow.
async fn setup_wait<T>(what: &'static str, work: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let done = work.await;
    let waited = started.elapsed();
    if waited > SETUP_STORE_WAIT_WARNING {
        warn!(
            what,
            waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            "call setup waited on the store"
        );
    }
    done
}

/// Routes an incoming call and answers it, or refuses it (`None`).
async fn accept(shared: &Arc<Shared>, incoming: IncomingCall) -> Option<Answered> {
    let IncomingCall {
        invite,
        call: mut sip,
    } = incoming;
    if shared.is_shutting_down() {
        sip.reject(503);
        return None;
    }
    // Held until the call's task ends (or dropped with a refusal below).
    let slot = match shared.capacity.try_take() {
        Ok(slot) => slot,
        Err(full) => {
            info!(source = %invite.source.addr, limit = full.limit,
                "incoming call refused: the node runs its most calls ([node] max_calls)");
            sip.reject_retry_after(503, RETRY_AFTER);
            return None;
        }
    };
    let test_route_of = invite
        .called_user
        .as_deref()
        .and_then(|user| shared.test_routes.take(user));
    let routed = match test_route_of {
        // An unguessable single-use token the test runner registered.
        Some((route, created)) => test_route(shared, route, created).await,
        // The source first: a sender outside every trunk learns nothing of our numbers.
        None => match known_source(shared, invite.source.addr).await {
            Err(code) => Err(code),
            Ok(()) => match invite.called_user.as_deref() {
                Some(user) => trunk_route(shared, &invite, &mut sip, user).await,
                None => {
                    log_refusal(shared, invite.source.addr, "", 404, "no dialled number");
                    Err(404)
                }
            },
        },
    };
    match routed {
        Ok(accepted) => answer_call(Arc::clone(shared), invite, sip, accepted, slot).await,
        Err(code) => {
            refuse(&sip, code);
            None
        }
    }
}

/// An answered call, ready to run.
struct Answered {
    task: CallTask,
    span: tracing::Span,
    call_id: String,
    /// The call's slot of the node's capacity.
    slot: super::admission::Slot,
}

/// Refuses (403) a source in no trunk's allowed networks, before anything else is looked at.
async fn known_source(shared: &Shared, source: SocketAddr) -> Result<(), u16> {
    let known = setup_wait(
        "trunks",
        shared
            .store
            .routing_any_trunk(|trunk| allowed(&trunk.allowed_networks, source.ip())),
    )
    .await
    .map_err(|failure| store_failed(&failure, "trunks"))?;
    if known {
        Ok(())
    } else {
        log_refusal(
            shared,
            source,
            "",
            403,
            "source in no trunk's allowed networks",
        );
        Err(403)
    }
}

/// Logs a refused INVITE at a bounded rate: the first of a source, then one summary per
/// source per minute ([`RejectionLog`]).
fn log_refusal(shared: &Shared, source: SocketAddr, number: &str, code: u16, why: &'static str) {
    for entry in shared.rejections.record(source.ip(), Instant::now()) {
        match entry {
            RejectionEntry::First => info!(
                %source, number, code, why,
                "incoming call refused (more from this source are summarised each minute)"
            ),
            RejectionEntry::Summary { source, count } => {
                info!(%source, count, "incoming calls refused from this source in the last minute")
            }
        }
    }
}

/// The SIP answer to an INVITE its organisation cannot take: 402 Payment Required when the
/// balance does not cover a minute beside what its live calls hold, 486 Busy Here when it
/// has `[api] max_concurrent_calls_per_org` calls live.
pub fn refusal_code(refused: CallAdmission) -> u16 {
    match refused {
        CallAdmission::ConcurrentCallLimit { .. } => 486,
        CallAdmission::InsufficientCredits { .. } => 402,
        // Not asked for inbound calls; a conflict, try again.
        CallAdmission::IdempotencyKeyTaken | CallAdmission::Admitted => 503,
    }
}

/// Rejects with `code`; a 503 (we cannot serve now) says when to retry.
fn refuse(sip: &CallHandle, code: u16) {
    if code == 503 {
        sip.reject_retry_after(code, RETRY_AFTER);
    } else {
        sip.reject(code);
    }
}

/// The answer to an INVITE when the store failed reading or writing `what`:
/// 503 (retry later, [`StoreError::is_unavailable`]) when the database could not
/// serve it now, 500 when it failed otherwise or holds something this version
/// cannot read. Logged as an error either way.
fn store_failed(failure: &StoreError, what: &str) -> u16 {
    let code = if failure.is_unavailable() { 503 } else { 500 };
    error!(error = %failure, what, code, "store failed during an incoming INVITE");
    code
}

/// An INVITE for a registered test route: answered for the route's agent
/// (any status: test calls validate agents before they go live).
async fn test_route(
    shared: &Shared,
    route: TestRoute,
    created: oneshot::Sender<String>,
) -> Result<Accepted, u16> {
    match setup_wait(
        "agent of a test route",
        shared.store.routing_agent(&route.org_id, &route.agent_id),
    )
    .await
    {
        Ok(agent) => {
            info!(run_id = %route.run_id, agent_id = %agent.id, "incoming test call");
            Ok(Accepted {
                org_id: route.org_id,
                agent,
                to_number: route.to_number,
                from_number: Some(route.from_number),
                created: Some(created),
                // The bot's own SDP address is where its media comes from.
                media_networks: Vec::new(),
            })
        }
        Err(StoreError::NotFound) => {
            info!(run_id = %route.run_id, "agent of a test route is gone: 404");
            Err(404)
        }
        Err(failure) => Err(store_failed(&failure, "agent of a test route")),
    }
}

/// An INVITE to one of our numbers: the trunk and agent checks.
async fn trunk_route(
    shared: &Shared,
    invite: &sip_stack::ua::IncomingInvite,
    sip: &mut CallHandle,
    user: &str,
) -> Result<Accepted, u16> {
    let source = invite.source.addr;
    let number = normalize_number(user);
    let owned = match setup_wait("dialled number", shared.store.routing_number(&number)).await {
        Ok(Some(owned)) => owned,
        Ok(None) => {
            log_refusal(shared, source, &number, 404, "unknown number");
            return Err(404);
        }
        Err(failure) => return Err(store_failed(&failure, "dialled number")),
    };
    let trunk = match setup_wait("trunk", shared.store.routing_trunk(&owned.trunk_id)).await {
        Ok(trunk) => trunk,
        Err(StoreError::NotFound) => {
            log_refusal(shared, source, &number, 403, "the number's trunk is gone");
            return Err(403);
        }
        Err(failure) => return Err(store_failed(&failure, "trunk of the number")),
    };
    if !allowed(&trunk.allowed_networks, source.ip()) {
        log_refusal(
            shared,
            source,
            &number,
            403,
            "outside the networks of the number's trunk",
        );
        return Err(403);
    }
    if let Some(auth) = &trunk.inbound_auth {
        authenticate(shared, sip, auth, source, &number).await?;
    }
    let agent = match &owned.agent_id {
        Some(agent_id) => {
            match setup_wait("agent", shared.store.routing_agent(&owned.org_id, agent_id)).await {
                Ok(agent) if agent.status == AgentStatus::Active => Some(agent),
                Ok(_) | Err(StoreError::NotFound) => None,
                Err(failure) => return Err(store_failed(&failure, "agent of the number")),
            }
        }
        None => None,
    };
    let Some(agent) = agent else {
        log_refusal(
            shared,
            source,
            &number,
            480,
            "number without an active agent",
        );
        return Err(480);
    };
    Ok(Accepted {
        org_id: owned.org_id,
        agent,
        to_number: number,
        from_number: None,
        created: None,
        media_networks: media_networks(&trunk.allowed_networks, Some(source.ip())),
    })
}

/// A trunk with `inbound_auth`: the user agent checks the INVITE's digest answer against
/// the trunk's credentials and, when it fails, answers 401 (a fresh challenge: the first
/// INVITE of every call) or 403 itself. `Err` carries that code, already sent.
async fn authenticate(
    shared: &Shared,
    sip: &mut CallHandle,
    auth: &InboundAuth,
    source: SocketAddr,
    number: &str,
) -> Result<(), u16> {
    sip.authenticate(Credentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
    });
    while let Some(event) = sip.next_event().await {
        match event {
            CallEvent::Authenticated { .. } => return Ok(()),
            CallEvent::Failed { code, .. } => {
                if code == 403 {
                    log_refusal(shared, source, number, 403, "wrong digest answer");
                }
                return Err(code);
            }
            CallEvent::Ended { .. } => return Err(487),
            _ => {}
        }
    }
    Err(503)
}

/// Negotiates media, records and answers an accepted call, registered to run (`None`:
/// refused).
async fn answer_call(
    shared: Arc<Shared>,
    invite: sip_stack::ua::IncomingInvite,
    sip: CallHandle,
    accepted: Accepted,
    slot: super::admission::Slot,
) -> Option<Answered> {
    let source = invite.source.addr;
    let Accepted {
        org_id,
        agent,
        to_number: number,
        from_number,
        created,
        media_networks,
    } = accepted;
    // CANCEL, BYE and re-INVITEs of this call: from the INVITE's source or the trunk's
    // networks only.
    sip.trust_sources(media_networks.clone());
    let Some(offer) = invite
        .sdp
        .as_deref()
        .and_then(|sdp| SessionDescription::parse(sdp).ok())
    else {
        info!(number, "incoming call without a usable SDP offer: 488");
        sip.reject(488);
        return None;
    };
    let codecs = supported_codecs();
    let session_id = u64::from(rand::random::<u32>());
    let Ok(draft) = answer(
        &offer,
        shared.sdp_ip,
        9,
        &codecs,
        Direction::SendRecv,
        session_id,
        1,
    ) else {
        info!(number, "incoming call with no codec in common: 488");
        sip.reject(488);
        return None;
    };
    let Ok(config) = media_config(&draft.negotiated, &media_networks) else {
        sip.reject(488);
        return None;
    };
    let telephone_event = config.telephone_event_pt.is_some();
    let stream = match shared
        .media
        .open(config, media::stream::OpenOptions::hooked())
    {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "no media stream for an incoming call: 503");
            refuse(&sip, 503);
            return None;
        }
    };
    let port = stream.local_addr().port();
    let Ok(reply) = answer(
        &offer,
        shared.sdp_ip,
        port,
        &codecs,
        Direction::SendRecv,
        session_id,
        1,
    ) else {
        sip.reject(488);
        return None;
    };

    let now = Utc::now();
    let settings = &agent.default_call_settings;
    let caller = from_number.unwrap_or_else(|| {
        invite
            .caller_user
            .as_deref()
            .map(normalize_number)
            .unwrap_or_default()
    });
    let call = Call {
        id: new_id("call"),
        org_id,
        agent_id: agent.id.clone(),
        status: CallStatus::Queued,
        outcome: None,
        direction: CallDirection::Inbound,
        phone_number: caller.clone(),
        from_number: caller,
        to_number: number.clone(),
        variables: Default::default(),
        call_settings: CallSettings {
            recording_enabled: settings.recording_enabled,
            transcription_enabled: settings.transcription_enabled,
            greeting: None,
            max_duration: Some(format_duration_secs(settings.max_duration_secs)),
            join_timeout: Some(format_duration_secs(settings.join_timeout_secs)),
        },
        max_duration_secs: settings.max_duration_secs,
        join_timeout_secs: settings.join_timeout_secs,
        sip_call_id: Some(invite.call_id.clone()),
        sip_final_code: None,
        q850_cause: None,
        end_reason: None,
        error_message: None,
        duration_seconds: None,
        transcript: Vec::new(),
        recording_url: None,
        media_stats: None,
        node_id: Some(shared.node_id.clone()),
        rendered_prompt: Some(agent.prompt.clone()),
        rendered_greeting: agent.greeting.clone(),
        created_at: now,
        started_at: None,
        answered_at: None,
        ended_at: None,
        updated_at: now,
    };
    let admission = Admission {
        reserve_cents: billing::reservation_cents(shared.per_minute_cents),
        max_live_calls: shared.max_live_calls,
    };
    // From the ledger in memory (the organisation's usage is read from the database only
    // for its first call since the start); the record writer stores the call.
    let admitted = setup_wait(
        "organisation usage",
        shared.ledger.admit(&shared.store, &call.org_id, admission),
    )
    .await;
    match admitted {
        Ok(CallAdmission::Admitted) => {
            shared
                .inbound_created
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared
                .persister
                .admit(call.clone(), admission.reserve_cents);
        }
        Ok(refused) => {
            let code = refusal_code(refused);
            info!(number, org_id = %call.org_id, code, refused = ?refused,
                "incoming call refused by the organisation's credit or call limit");
            refuse(&sip, code);
            return None;
        }
        Err(failure) => {
            refuse(&sip, store_failed(&failure, "organisation usage"));
            return None;
        }
    }
    let call_id = call.id.clone();
    let span = tracing::info_span!("call", call_id = %call_id, direction = "inbound");
    let Some(commands) = shared.register(&call_id) else {
        sip.reject(503);
        let mut refused = call;
        refused.status = CallStatus::Failed;
        refused.outcome = Some(CallOutcome::Error);
        refused.end_reason = Some("service_unavailable".into());
        refused.ended_at = Some(Utc::now());
        refused.duration_seconds = Some(0.0);
        // Stored (by the writer, after its admission) as refused, nothing charged.
        shared.persister.save(refused, None, Some(0), None);
        return None;
    };
    let test_leg = created.is_some();
    if let Some(created) = created {
        // The run may have given up waiting; the call goes on regardless.
        let _ = created.send(call_id.clone());
    }
    let mut task = CallTask::new(Arc::clone(&shared), call, agent, sip, commands);
    if test_leg {
        task.priced_by_test_run();
    }
    span.in_scope(|| {
        info!(%source, number, "incoming call answered");
        task.answer_inbound(stream, reply.sdp.to_string(), telephone_event);
    });
    Some(Answered {
        task,
        span,
        call_id,
        slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cidr_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let list = nets(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            "bogus",
            "1.2.3.4/40",
        ]);
        assert!(allowed(&list, ip("10.1.2.3")));
        assert!(allowed(&list, ip("192.0.2.7")));
        assert!(!allowed(&list, ip("192.0.2.8")));
        assert!(allowed(&list, ip("2001:db8:1::5")));
        assert!(!allowed(&list, ip("2001:db9::1")));
        assert!(
            !allowed(&list, ip("1.2.3.4")),
            "invalid prefix matches nothing"
        );
        assert!(allowed(&list, ip("::ffff:10.9.9.9")), "v4-mapped v6 source");
        assert!(allowed(&nets(&["0.0.0.0/0"]), ip("203.0.113.1")));
        assert!(!allowed(&[], ip("127.0.0.1")), "empty list allows none");
    }

    #[test]
    fn store_failures_are_503_or_500_never_a_refusal() {
        let timeout = StoreError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(store_failed(&timeout, "trunk of the number"), 503);
        let closed = StoreError::Database(sqlx::Error::PoolClosed);
        assert_eq!(store_failed(&closed, "dialled number"), 503);
        let unreadable = StoreError::Corrupt {
            column: "transport",
            value: "sctp".into(),
        };
        assert_eq!(store_failed(&unreadable, "trunk of the number"), 500);
    }

    #[test]
    fn dialled_numbers_are_normalized() {
        assert_eq!(normalize_number("+15551234567"), "+15551234567");
        assert_eq!(normalize_number("15551234567"), "+15551234567");
    }
}
