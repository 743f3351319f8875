//! `sip` mode: both legs over real SIP and RTP through the service's own
//! listener on loopback.
//!
//! - `outbound`: the agent's leg is stored `queued` and placed by the
//!   engine, exactly like `POST /calls`, through a trunk value pointing at
//!   the bot's SIP address (never stored); the bot answers it.
//! - `inbound`: a single-use test route is registered with the engine and
//!   the bot dials its token at the service's SIP address; the engine
//!   answers it for the agent through the normal inbound path.
//!
//! After the bot's call, the agent's leg is awaited until the engine has
//! written its last record, and the bot's leg is stored as a second call
//! record (the opposite direction, the bot's SIP Call-ID and media stats).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bot_loopback::bot::{BotConfig, RunReport, RunSpec, TestBot};
use tracing::{info, warn, Instrument};

use super::bookkeeping::RunEnd;
use super::legs::{agent_leg, bot_leg, bot_trunk, Legs};
use super::{Inner, ANSWER_TIMEOUT};
use crate::engine::test_route::{new_token, TestRoute};
use crate::model::{Agent, CallDirection, CallOutcome, CallStatus, TestCallRun, TestDirection};

/// Runs `run` over SIP and returns how it ended.
pub(crate) async fn execute(
    inner: &Inner,
    run: &TestCallRun,
    agent: &Agent,
    spec: RunSpec,
    legs: &Legs,
) -> RunEnd {
    let media = match inner.bot_media() {
        Ok(media) => media,
        Err(error) => {
            warn!(%error, "test bot media unavailable");
            return RunEnd::failed(format!("test_bot_media: {error}"));
        }
    };
    let number = match run.direction {
        TestDirection::Outbound => run.target_number.clone(),
        TestDirection::Inbound => inner.config.test_calls.bot_number.clone(),
    };
    let config = BotConfig {
        number,
        sip_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        rtp_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let bot = match TestBot::start(config, media).await {
        Ok(bot) => bot,
        Err(error) => {
            warn!(%error, "test bot did not start");
            return RunEnd::failed(format!("test_bot: {error}"));
        }
    };
    match run.direction {
        TestDirection::Outbound => outbound(inner, run, agent, bot, spec, legs).await,
        TestDirection::Inbound => inbound(inner, run, bot, spec, legs).await,
    }
}

/// The agent calls the bot.
async fn outbound(
    inner: &Inner,
    run: &TestCallRun,
    agent: &Agent,
    bot: TestBot,
    spec: RunSpec,
    legs: &Legs,
) -> RunEnd {
    let from = inner.agent_caller_id(run).await;
    let call = agent_leg(
        run,
        agent,
        &inner.config,
        CallDirection::Outbound,
        &from,
        &run.target_number,
    );
    if let Err(error) = inner.store.insert_call(&call).await {
        warn!(%error, "agent leg not recorded");
        return RunEnd::failed(format!("store: {error}"));
    }
    legs.set_agent(&call.id);
    inner.link_agent_leg(run, &call.id).await;
    let trunk = bot_trunk(&run.org_id, bot.sip_addr());
    let call_id = call.id.clone();
    // The bot's user agent listens already: the INVITE waits for `answer`.
    if let Err(error) = inner
        .engine
        .place_call_to_test_bot(call.clone(), agent.clone(), trunk)
        .await
    {
        warn!(%error, "agent leg not placed");
        let mut call = call;
        let now = chrono::Utc::now();
        call.status = CallStatus::Failed;
        call.outcome = Some(CallOutcome::Error);
        call.end_reason = Some("not_placed".into());
        call.ended_at = Some(now);
        call.duration_seconds = Some(0.0);
        call.updated_at = now;
        if let Err(error) = inner.store.update_call(&call).await {
            warn!(%error, "unplaced agent leg not recorded");
        }
        return RunEnd::failed(format!("call_not_placed: {error}"));
    }
    info!(call_id, bot = %bot_addr(&bot), "agent leg placed to the test bot");
    let report = bot
        .answer(spec)
        .instrument(tracing::info_span!("bot", leg = "answer"))
        .await;
    after_call(
        inner,
        run,
        legs,
        Some(call_id),
        report,
        CallDirection::Inbound,
    )
    .await
}

/// The bot calls the agent.
async fn inbound(
    inner: &Inner,
    run: &TestCallRun,
    bot: TestBot,
    spec: RunSpec,
    legs: &Legs,
) -> RunEnd {
    let bot_number = inner.config.test_calls.bot_number.clone();
    let token = new_token(&run.id);
    let mut created = inner.engine.expect_test_call(
        token.clone(),
        TestRoute {
            org_id: run.org_id.clone(),
            agent_id: run.agent_id.clone(),
            from_number: bot_number.clone(),
            to_number: run.target_number.clone(),
            run_id: run.id.clone(),
        },
        ANSWER_TIMEOUT * 2,
    );
    let service = inner.engine.sip_addr();
    let ip = if service.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        service.ip()
    };
    let target = format!("sip:{token}@{}", SocketAddr::new(ip, service.port()));
    info!(bot = %bot_addr(&bot), "test bot calls the agent");
    let call = bot
        .call(&target, &bot_number, spec)
        .instrument(tracing::info_span!("bot", leg = "call"));
    tokio::pin!(call);
    // The agent leg's id comes as soon as its record is stored, before the
    // answer; it is linked to the run while the call goes on.
    let mut call_id = None;
    let mut waiting = true;
    let report = loop {
        tokio::select! {
            report = &mut call => break report,
            created = &mut created, if waiting => {
                waiting = false;
                if let Ok(id) = created {
                    legs.set_agent(&id);
                    inner.link_agent_leg(run, &id).await;
                    call_id = Some(id);
                }
            }
        }
    };
    if waiting {
        if let Ok(id) = created.try_recv() {
            legs.set_agent(&id);
            call_id = Some(id);
        }
    }
    after_call(inner, run, legs, call_id, report, CallDirection::Outbound).await
}

fn bot_addr(bot: &TestBot) -> SocketAddr {
    bot.sip_addr()
}

/// Waits for the agent's leg to be recorded, stores the bot's leg and
/// returns how the run ended.
async fn after_call(
    inner: &Inner,
    run: &TestCallRun,
    legs: &Legs,
    call_id: Option<String>,
    report: Result<RunReport, bot_loopback::bot::BotError>,
    bot_direction: CallDirection,
) -> RunEnd {
    let agent_leg = match &call_id {
        Some(call_id) => {
            legs.set_agent(call_id);
            if report.is_err() {
                inner.engine.hangup(call_id);
            }
            inner.engine.wait_call_ended(call_id).await;
            match inner.store.get_call_any(call_id).await {
                Ok(call) => Some(call),
                Err(error) => {
                    warn!(%error, call_id, "agent leg not readable");
                    None
                }
            }
        }
        None => None,
    };
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            warn!(%error, "test bot failed");
            return RunEnd::failed(format!("test_bot: {error}"));
        }
    };
    let (from, to) = match bot_direction {
        // The bot answered the agent's call.
        CallDirection::Inbound => (
            agent_leg
                .as_ref()
                .map(|leg| leg.from_number.clone())
                .unwrap_or_default(),
            run.target_number.clone(),
        ),
        // The bot called the agent.
        CallDirection::Outbound => (
            inner.config.test_calls.bot_number.clone(),
            run.target_number.clone(),
        ),
    };
    let record = bot_leg(
        run,
        agent_leg.as_ref(),
        &report,
        bot_direction,
        &from,
        &to,
        &inner.config,
    );
    match inner.store.insert_call(&record).await {
        Ok(()) => legs.set_bot(&record.id),
        Err(error) => warn!(%error, "bot leg not recorded"),
    }
    let mut end = RunEnd::reported(report);
    if end.error.is_none() && agent_leg.is_none() {
        end.error = Some("agent_leg_missing: the agent's call was not recorded".into());
    }
    end
}
