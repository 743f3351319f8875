//! A SIP UAS for interop and load checks: answers every INVITE with 180 then
//! 200 OK carrying an SDP answer, acknowledges BYE, CANCEL and OPTIONS, and
//! runs until killed.
//!
//! `cargo run --release -p sip-stack --example uas -- --listen 127.0.0.1:5070 [--tcp]`

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use sip_stack::sdp::{self, Codec, Direction, SessionDescription};
use sip_stack::ua::{CallEvent, UaConfig, UserAgent};
use tokio::net::UdpSocket;

#[derive(Parser)]
struct Args {
    /// Address to listen on (UDP, and TCP with --tcp).
    #[arg(long, default_value = "127.0.0.1:5070")]
    listen: SocketAddr,
    /// Listen on TCP too, on the same address.
    #[arg(long)]
    tcp: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut config = UaConfig::default();
    config.transport.udp = Some(args.listen);
    config.transport.tcp = args.tcp.then_some(args.listen);
    let (_ua, mut incoming) = UserAgent::start(config).await.context("starting the UAS")?;

    // One RTP socket for every call: the example answers media but plays none,
    // and drains what arrives so the peer's packets are not refused.
    let rtp = UdpSocket::bind(SocketAddr::new(args.listen.ip(), 0)).await?;
    let rtp_port = rtp.local_addr()?.port();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while rtp.recv_from(&mut buf).await.is_ok() {}
    });
    println!("uas listening on {} (tcp: {})", args.listen, args.tcp);

    let local_ip = args.listen.ip();
    let mut session_id = 1u64;
    while let Some(mut incoming_call) = incoming.recv().await {
        session_id += 1;
        let answer = incoming_call
            .invite
            .sdp
            .as_deref()
            .and_then(|offer| SessionDescription::parse(offer).ok())
            .and_then(|offer| {
                sdp::answer(
                    &offer,
                    local_ip,
                    rtp_port,
                    &Codec::default_set(),
                    Direction::SendRecv,
                    session_id,
                    1,
                )
                .ok()
            });
        tokio::spawn(async move {
            let call = &mut incoming_call.call;
            match answer {
                Some(answer) => {
                    call.ring(None);
                    call.answer(answer.sdp.to_string());
                }
                None if incoming_call.invite.sdp.is_none() => {
                    // No offer: make ours, to be answered in the ACK.
                    let offer = sdp::build_offer(
                        local_ip,
                        rtp_port,
                        &Codec::default_set(),
                        Direction::SendRecv,
                        session_id,
                        1,
                    );
                    call.ring(None);
                    call.answer(offer.to_string());
                }
                None => call.reject(488),
            }
            while let Some(event) = call.next_event().await {
                if matches!(event, CallEvent::Failed { .. } | CallEvent::Ended { .. }) {
                    break;
                }
            }
        });
    }
    Ok(())
}
