//! Test bots against each other over real SIP and RTP on loopback, and the
//! in-process mode against an echo runtime.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use agent_bridge::agent::echo::Echo;
use agent_bridge::agent::{CallMetadata, Direction};
use bot_loopback::{
    run_in_process, BotConfig, NetworkProfile, Party, RunReport, RunSpec, Script, TestBot,
};
use media::stream::{EngineConfig, MediaEngine};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const AGENT_NUMBER: &str = "+15550100000";
const CALLER_NUMBER: &str = "+15550100001";

/// The answering bot plays the agent: greets, waits for the caller, answers.
const AGENT_SCRIPT: &str = "\
say Hello, can you hear me?
expect_speech
say Yes, that is right.
wait 8s
hangup
";

/// The calling bot: waits for the greeting, dials, speaks, waits for the reply.
fn caller_script(extra_wait: &str) -> String {
    format!(
        "expect_speech 4s\n\
         dtmf 1234\n\
         say My order number is one two three four.\n\
         expect_speech\n\
         {extra_wait}\
         hangup\n"
    )
}

fn spec(script: &str, profile: NetworkProfile, seed: u64) -> RunSpec {
    RunSpec {
        scenario: Script::parse(script).expect("valid script"),
        network_profile: profile,
        max_duration: Duration::from_secs(40),
        answer_timeout: Duration::from_secs(10),
        seed,
    }
}

async fn bot(number: &str, media: &MediaEngine) -> TestBot {
    TestBot::start(
        BotConfig {
            number: number.into(),
            sip_listen: SocketAddr::new(LOCAL, 0),
            rtp_ip: LOCAL,
        },
        media.clone(),
    )
    .await
    .expect("bot starts")
}

fn media() -> MediaEngine {
    MediaEngine::start(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    })
    .expect("media engine")
}

/// One call from a caller bot to an agent bot; (caller, agent) reports.
async fn call_between_bots(
    caller_profile: NetworkProfile,
    extra_wait: &str,
) -> (RunReport, RunReport) {
    let media = media();
    let agent = bot(AGENT_NUMBER, &media).await;
    let caller = bot(CALLER_NUMBER, &media).await;
    let target = format!("sip:{AGENT_NUMBER}@{}", agent.sip_addr());
    let agent_run = tokio::spawn(agent.answer(spec(AGENT_SCRIPT, NetworkProfile::Clean, 1)));
    let caller_report = tokio::time::timeout(
        Duration::from_secs(60),
        caller.call(
            &target,
            CALLER_NUMBER,
            spec(&caller_script(extra_wait), caller_profile, 42),
        ),
    )
    .await
    .expect("the call ends in time")
    .expect("the caller's run completes");
    let agent_report = tokio::time::timeout(Duration::from_secs(20), agent_run)
        .await
        .expect("the agent's run ends")
        .expect("task")
        .expect("the agent's run completes");
    (caller_report, agent_report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_talk_over_sip_and_rtp_and_measure_the_call() {
    let (caller, agent) = call_between_bots(NetworkProfile::Clean, "").await;
    let m = &caller.measurements;
    assert_eq!(caller.error, None);
    assert_eq!(caller.sip_final_code, Some(200));
    assert!(caller.codec.is_some());
    assert!(caller.sip_call_id.is_some());
    assert_eq!(caller.hangup_by, Party::Bot, "the caller's script hangs up");
    assert_eq!(agent.hangup_by, Party::Agent, "seen from the answering bot");
    assert_eq!(m.hangup_by, Party::Bot);
    assert!(m.post_dial_delay_ms.is_some_and(|d| d < 2000), "{m:?}");
    assert!(m.answer_delay_ms.is_some_and(|d| d < 2000), "{m:?}");
    let greeting = m
        .time_to_first_agent_audio_ms
        .expect("the greeting was heard");
    assert!(greeting < 2000, "greeting after {greeting} ms");
    let latency = m.response_latency_ms.expect("the agent bot replied");
    // The agent bot waits out its VAD hangover (300 ms), then the reply
    // crosses both jitter buffers.
    assert!(
        (200.0..2500.0).contains(&latency.p50),
        "response latency {latency:?}"
    );
    assert_eq!(m.utterances, 1);
    assert!(m.mos > 3.5, "clean MOS {}", m.mos);
    assert!(m.packets_sent > 100 && m.packets_received > 100, "{m:?}");
    assert!(m.loss_percent < 1.0, "{m:?}");
    assert!(!m.one_way_audio);
    assert_eq!(m.dtmf_sent, "1234");
    assert_eq!(
        agent.measurements.dtmf_heard, "1234",
        "RFC 4733 digits arrived"
    );
    assert_eq!(agent.measurements.utterances, 2);
    assert!(m.duration_ms > 3000 && m.duration_ms < 30_000, "{m:?}");
    assert!(caller.answered_at >= caller.invite_at && caller.ended_at >= caller.answered_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_path_shows_in_loss_and_mos() {
    let (clean, _) = call_between_bots(NetworkProfile::Clean, "wait 6s\n").await;
    let (lossy, _) = call_between_bots(NetworkProfile::Lossy, "wait 6s\n").await;
    let (c, l) = (&clean.measurements, &lossy.measurements);
    assert_eq!(l.network_profile, NetworkProfile::Lossy);
    assert!(
        l.loss_percent > c.loss_percent,
        "loss clean {} lossy {}",
        c.loss_percent,
        l.loss_percent
    );
    assert!(l.packets_lost > 0);
    assert!(l.mos < c.mos, "MOS clean {} lossy {}", c.mos, l.mos);
}

#[tokio::test]
async fn answer_gives_up_when_no_call_arrives() {
    let media = media();
    let agent = bot(AGENT_NUMBER, &media).await;
    let mut spec = spec(AGENT_SCRIPT, NetworkProfile::Clean, 1);
    spec.answer_timeout = Duration::from_millis(200);
    let error = agent.answer(spec).await.expect_err("nobody calls");
    assert!(error.to_string().contains("no call arrived"), "{error}");
}

#[tokio::test]
async fn an_unanswered_call_is_cancelled_at_the_answer_timeout() {
    let media = media();
    // A bot that never answers: its INVITEs get 100 Trying and nothing more.
    let silent = bot(AGENT_NUMBER, &media).await;
    let caller = bot(CALLER_NUMBER, &media).await;
    let target = format!("sip:{AGENT_NUMBER}@{}", silent.sip_addr());
    let mut spec = spec(&caller_script(""), NetworkProfile::Clean, 5);
    spec.answer_timeout = Duration::from_millis(500);
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        caller.call(&target, CALLER_NUMBER, spec),
    )
    .await
    .expect("gives up in time")
    .expect("a report, not an error");
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not answered")),
        "{report:?}"
    );
    assert_eq!(report.hangup_by, Party::Bot);
    assert_eq!(report.answered_at, None);
    assert!(report.sip_call_id.is_some());
    assert_eq!(report.measurements.response_latency_ms, None);
    drop(silent);
}

fn echo_metadata() -> CallMetadata {
    CallMetadata {
        call_id: "call_inprocess".into(),
        org_id: "org_test".into(),
        agent_id: "agt_echo".into(),
        direction: Direction::Inbound,
        from_number: CALLER_NUMBER.into(),
        to_number: AGENT_NUMBER.into(),
        prompt: String::new(),
        greeting: None,
        variables: Default::default(),
        sip_call_id: None,
        sample_rate: 8000,
    }
}

#[tokio::test]
async fn in_process_echo_replies_within_a_few_frames() {
    let report = run_in_process(
        Box::new(Echo),
        echo_metadata(),
        spec(
            "say Hello, can you hear me?\nexpect_speech\nhangup\n",
            NetworkProfile::Clean,
            3,
        ),
    )
    .await
    .expect("runs");
    let m = &report.measurements;
    assert_eq!(report.error, None);
    assert_eq!(report.hangup_by, Party::Bot);
    let latency = m.response_latency_ms.expect("the echo replied");
    assert!(latency.p50 <= 100.0, "echo latency {latency:?}");
    assert!(!m.one_way_audio);
    assert_eq!(m.utterances, 1);
    assert!(m.mos > 4.0);
    assert!(m.packets_sent > 50);
}

#[tokio::test]
async fn in_process_run_stops_at_max_duration() {
    let mut spec = spec("wait 60s\n", NetworkProfile::Clean, 4);
    spec.max_duration = Duration::from_millis(600);
    let report = run_in_process(Box::new(Echo), echo_metadata(), spec)
        .await
        .expect("runs");
    assert_eq!(report.hangup_by, Party::Bot);
    let duration = report.measurements.duration_ms;
    assert!(
        (400..=2000).contains(&duration),
        "stopped after {duration} ms"
    );
}
