//! A SIP UAC for interop and load checks: places N calls at R per second,
//! hangs each up after the hold time, prints how many succeeded and failed,
//! and exits 0 only when all succeeded.
//!
//! `cargo run --release -p sip-stack --example uac -- --target sip:+15551234567@127.0.0.1:5080 [--calls N] [--rate R] [--hold 2s] [--tcp]`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use sip_stack::message::TransportKind;
use sip_stack::sdp::{build_offer, Codec, Direction};
use sip_stack::ua::{CallEvent, OutgoingCall, UaConfig, UserAgent};

#[derive(Parser)]
struct Args {
    /// The SIP URI to call.
    #[arg(long)]
    target: String,
    /// Number of calls to place.
    #[arg(long, default_value_t = 1)]
    calls: usize,
    /// Calls started per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long each answered call is held before hanging up (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    hold: Duration,
    /// Use TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// Local address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Give up on a call that has not ended after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    if args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let mut config = UaConfig::default();
    config.transport.udp = Some(args.listen);
    config.transport.tcp = args.tcp.then_some(args.listen);
    let (ua, _incoming) = UserAgent::start(config).await.context("starting the UAC")?;
    let transport = if args.tcp {
        TransportKind::Tcp
    } else {
        TransportKind::Udp
    };
    let local = ua.local_addr(transport).context("transport not bound")?;
    let template = OutgoingCall::to(&args.target, &format!("sip:dialcore@{local}"))
        .await
        .context("bad --target")?;
    let peer_addr = template.peer.addr;

    let succeeded = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(args.calls);
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut ticker = tokio::time::interval(interval);
    for n in 0..args.calls {
        ticker.tick().await;
        let offer = build_offer(
            local.ip(),
            40_000,
            &Codec::default_set(),
            Direction::SendRecv,
            n as u64 + 1,
            1,
        );
        let mut call = OutgoingCall::to(&args.target, &format!("sip:dialcore@{local}"))
            .await?
            .via(transport, peer_addr)
            .with_sdp(offer.to_string());
        call.call_id = sip_stack::message::new_call_id(&local.ip().to_string());
        let ua = ua.clone();
        let (succeeded, failed) = (Arc::clone(&succeeded), Arc::clone(&failed));
        let (hold, timeout) = (args.hold, args.timeout);
        tasks.push(tokio::spawn(async move {
            let ok = tokio::time::timeout(timeout, run_call(&ua, call, hold))
                .await
                .unwrap_or(false);
            if ok { &succeeded } else { &failed }.fetch_add(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let (ok, bad) = (
        succeeded.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("calls: {} succeeded: {ok} failed: {bad}", args.calls);
    ua.shutdown(Duration::from_secs(2)).await;
    if bad > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// One call: answered, held, hung up by us. True when all of that happened.
async fn run_call(ua: &UserAgent, call: OutgoingCall, hold: Duration) -> bool {
    let Ok(mut handle) = ua.invite(call).await else {
        return false;
    };
    while let Some(event) = handle.next_event().await {
        match event {
            CallEvent::Answered { .. } => {
                tokio::time::sleep(hold).await;
                handle.hangup();
            }
            CallEvent::Ended { by, .. } => return by == sip_stack::ua::Party::Local,
            CallEvent::Failed { code, reason, .. } => {
                eprintln!("call {} failed: {code} {reason}", handle.sip_call_id());
                return false;
            }
            _ => {}
        }
    }
    false
}
