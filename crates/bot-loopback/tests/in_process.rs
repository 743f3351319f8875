//! The bot's brain against small agent runtimes in `bot` mode: barge-in,
//! DTMF both ways, timeouts, the agent hanging up, dead air.

use std::time::Duration;

use agent_bridge::agent::{
    AgentRuntime, CallMetadata, Direction, RuntimeError, RuntimeInput, RuntimeOutput,
    RuntimeSession,
};
use bot_loopback::speech::Library;
use bot_loopback::vad::level_dbfs;
use bot_loopback::{run_in_process, NetworkProfile, Party, RunReport, RunSpec, Script};
use futures_util::future::BoxFuture;
use media::codec::SampleRate;

/// A configurable test agent.
#[derive(Default, Clone)]
struct TestAgent {
    /// Said at once.
    greeting: Option<&'static str>,
    /// Stop talking (clear) once the caller is heard for 60 ms.
    yields: bool,
    /// Press back every digit heard.
    echo_digits: bool,
    /// Hang up once the greeting has played.
    hang_up_after_greeting: bool,
}

impl AgentRuntime for TestAgent {
    fn kind(&self) -> &'static str {
        "test_agent"
    }

    fn run(
        self: Box<Self>,
        _metadata: CallMetadata,
        mut session: RuntimeSession,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        Box::pin(async move {
            if let Some(text) = self.greeting {
                let audio = tokio::task::spawn_blocking(move || {
                    Library::at(SampleRate::Hz8000).map(|l| l.say(text))
                })
                .await
                .map_err(|e| RuntimeError::Failed(e.to_string()))?
                .map_err(|e| RuntimeError::Failed(e.to_string()))?;
                session.send(RuntimeOutput::Audio(audio)).await;
                if self.hang_up_after_greeting {
                    session.send(RuntimeOutput::Hangup).await;
                }
            }
            let mut voiced = 0;
            let mut cleared = false;
            while let Some(input) = session.input.recv().await {
                match input {
                    RuntimeInput::Audio(frame) => {
                        voiced = if level_dbfs(frame.samples()) > -40.0 {
                            voiced + 1
                        } else {
                            0
                        };
                        if self.yields && voiced >= 3 && !cleared {
                            cleared = true;
                            session.send(RuntimeOutput::Clear).await;
                        }
                    }
                    RuntimeInput::Dtmf(digit) if self.echo_digits => {
                        session.send(RuntimeOutput::Dtmf(digit.to_string())).await;
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
}

const LONG_TALK: &str = "Thank you for calling. Our opening hours are from nine in the \
    morning to five in the afternoon, every day of the week except public holidays, \
    and you can also reach our support team by email at any time.";

fn metadata() -> CallMetadata {
    CallMetadata {
        call_id: "call_inprocess".into(),
        org_id: "org_test".into(),
        agent_id: "agt_test".into(),
        direction: Direction::Inbound,
        from_number: "+15550100001".into(),
        to_number: "+15550100000".into(),
        prompt: String::new(),
        greeting: None,
        variables: Default::default(),
        sip_call_id: None,
        sample_rate: 8000,
    }
}

async fn run(agent: TestAgent, script: &str) -> RunReport {
    let spec = RunSpec {
        scenario: Script::parse_or_default(script).expect("valid script"),
        network_profile: NetworkProfile::Clean,
        max_duration: Duration::from_secs(40),
        answer_timeout: Duration::from_secs(5),
        seed: 1,
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        run_in_process(Box::new(agent), metadata(), spec),
    )
    .await
    .expect("the run ends in time")
    .expect("the run completes")
}

#[tokio::test]
async fn an_agent_that_yields_to_barge_in_is_measured() {
    let agent = TestAgent {
        greeting: Some(LONG_TALK),
        yields: true,
        ..TestAgent::default()
    };
    let report = run(
        agent,
        "wait 1s\nbarge_in Wait, I have a question before you go on.\nwait 1s\nhangup\n",
    )
    .await;
    let m = &report.measurements;
    assert_eq!((m.barge_in_attempts, m.barge_in_stopped), (1, 1), "{m:?}");
    let stop = m.barge_in_stop_ms.expect("the agent stopped");
    // 60 ms of caller voice to react, then the clear takes effect at the next frame.
    assert!((20..=400).contains(&stop), "stopped after {stop} ms");
    assert!(
        m.time_to_first_agent_audio_ms.is_some_and(|t| t <= 200),
        "{m:?}"
    );
}

#[tokio::test]
async fn an_agent_that_talks_through_a_barge_in_has_no_stop_time() {
    let agent = TestAgent {
        greeting: Some(LONG_TALK),
        ..TestAgent::default()
    };
    let report = run(
        agent,
        "wait 1s\nbarge_in Sorry, I did not catch that.\nwait 1s\nhangup\n",
    )
    .await;
    let m = &report.measurements;
    assert_eq!((m.barge_in_attempts, m.barge_in_stopped), (1, 0), "{m:?}");
    assert_eq!(m.barge_in_stop_ms, None);
}

#[tokio::test]
async fn digits_go_both_ways() {
    let agent = TestAgent {
        echo_digits: true,
        ..TestAgent::default()
    };
    let report = run(agent, "dtmf 42#\nwait 1s\nhangup\n").await;
    let m = &report.measurements;
    assert_eq!(m.dtmf_sent, "42#");
    assert_eq!(m.dtmf_heard, "42#");
}

#[tokio::test]
async fn a_silent_agent_times_out_the_expectation_and_is_one_way_audio() {
    let report = run(
        TestAgent::default(),
        "expect_speech 500ms\nsay Hello, can you hear me?\nexpect_speech 1s\nhangup\n",
    )
    .await;
    let m = &report.measurements;
    assert_eq!(m.expect_timeouts, 2);
    assert!(m.one_way_audio, "the bot spoke and heard nothing");
    assert_eq!(m.response_latency_ms, None);
    assert_eq!(m.time_to_first_agent_audio_ms, None);
    // Waiting 500 ms before speaking and 1 s after: both are dead air.
    assert!((900..=2000).contains(&m.dead_air_ms_max), "{m:?}");
    assert_eq!(report.hangup_by, Party::Bot);
}

#[tokio::test]
async fn an_agent_hanging_up_ends_the_run() {
    let agent = TestAgent {
        greeting: Some("Thank you, goodbye."),
        hang_up_after_greeting: true,
        ..TestAgent::default()
    };
    let report = run(agent, "Ask about the opening hours.").await;
    assert_eq!(report.hangup_by, Party::Agent);
    let m = &report.measurements;
    assert!(m.time_to_first_agent_audio_ms.is_some());
    assert!(m.duration_ms < 5000, "{m:?}");
}

#[tokio::test]
async fn scripted_waits_are_not_dead_air() {
    let report = run(
        TestAgent::default(),
        "say Okay, sounds good.\nwait 3s\nhangup\n",
    )
    .await;
    let m = &report.measurements;
    assert!(m.dead_air_ms_max < 1000, "{m:?}");
    assert_eq!(m.dead_air_count, 0);
}

#[tokio::test]
async fn a_missing_audio_file_fails_before_the_call() {
    let spec = RunSpec {
        scenario: Script::parse("say /nonexistent/clip.wav\n").expect("valid"),
        network_profile: NetworkProfile::Clean,
        max_duration: Duration::from_secs(5),
        answer_timeout: Duration::from_secs(5),
        seed: 1,
    };
    let error = run_in_process(Box::new(TestAgent::default()), metadata(), spec)
        .await
        .expect_err("missing file");
    assert!(
        error.to_string().contains("/nonexistent/clip.wav"),
        "{error}"
    );
}
