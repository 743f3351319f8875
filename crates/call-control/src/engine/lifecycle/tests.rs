//! Every transition and timer of the lifecycle, in made-up time.

use super::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn config() -> LifecycleConfig {
    LifecycleConfig {
        join_timeout: 30 * SEC,
        max_duration: 60 * SEC,
        inactivity_timeout: Some(10 * SEC),
        // 64*T1 with the RFC 3261 T1 of 500 ms.
        teardown_timeout: 32 * SEC,
        final_response_grace: 250 * MS,
    }
}

/// The end the lifecycle decides on an API hangup before the answer.
const API_CANCEL: Decision = Decision {
    status: FinalStatus::Cancelled,
    outcome: Outcome::Cancelled,
    reason: "api_hangup",
};

/// An outbound call whose trunk rings from t0 + 1 s.
fn ringing(t0: Instant) -> Lifecycle {
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    call.handle_trying(t0 + 10 * MS);
    call.handle_ringing(t0 + SEC);
    drain(&mut call);
    call
}

fn drain(lifecycle: &mut Lifecycle) -> Vec<Output> {
    std::iter::from_fn(|| lifecycle.poll_output()).collect()
}

fn finished(outputs: &[Output]) -> End {
    match outputs.last() {
        Some(Output::Finished(end)) => end.clone(),
        other => panic!("expected Finished last, got {other:?}"),
    }
}

/// An outbound call answered at t0 + 2 s.
fn answered(t0: Instant) -> Lifecycle {
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    call.handle_ringing(t0 + SEC);
    call.handle_answered(t0 + 2 * SEC);
    drain(&mut call);
    call
}

#[test]
fn outbound_statuses_in_order() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    assert_eq!(drain(&mut call), [Output::Status(Progress::Initiated)]);
    assert_eq!(call.poll_timeout(), Some(t0 + 30 * SEC));
    call.handle_ringing(t0 + SEC);
    call.handle_ringing(t0 + SEC + MS); // 183 after 180: reported once
    assert_eq!(drain(&mut call), [Output::Status(Progress::Ringing)]);
    call.handle_answered(t0 + 2 * SEC);
    assert_eq!(drain(&mut call), [Output::Status(Progress::InProgress)]);
    assert_eq!(call.phase(), Phase::InProgress);
    assert!(call.is_answered());
    assert_eq!(call.deadline(Timer::Join), None);
    assert_eq!(call.deadline(Timer::MaxDuration), Some(t0 + 62 * SEC));
    assert_eq!(call.deadline(Timer::Inactivity), Some(t0 + 12 * SEC));
}

#[test]
fn join_timeout_cancels_and_records_no_answer_with_the_code() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    call.handle_ringing(t0 + SEC);
    drain(&mut call);
    call.handle_timeout(t0 + 30 * SEC - MS);
    assert!(drain(&mut call).is_empty(), "not due yet");
    call.handle_timeout(t0 + 30 * SEC);
    assert_eq!(
        drain(&mut call),
        [Output::Cancel],
        "status stays until the 487, which comes at once"
    );
    assert_eq!(call.phase(), Phase::Ending);
    assert_eq!(call.poll_timeout(), Some(t0 + 62 * SEC), "64*T1 at most");
    call.handle_failed(t0 + 30 * SEC + 40 * MS, 487, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Failed);
    assert_eq!(end.outcome, Outcome::NoAnswer);
    assert_eq!(end.reason, "join_timeout");
    assert_eq!(end.sip_code, Some(487));
    assert_eq!(end.duration(), Duration::ZERO);
    assert!(call.is_done());
    assert_eq!(call.poll_timeout(), None);
}

#[test]
fn join_timeout_with_408_or_480_after_cancel_is_still_no_answer() {
    for code in [408, 480] {
        let t0 = Instant::now();
        let mut call = Lifecycle::new(config());
        call.handle_invite_sent(t0);
        call.handle_trying(t0 + 10 * MS);
        call.handle_timeout(t0 + 30 * SEC);
        drain(&mut call);
        call.handle_failed(t0 + 31 * SEC, code, None);
        let end = finished(&drain(&mut call));
        assert_eq!(end.outcome, Outcome::NoAnswer);
        assert_eq!(end.sip_code, Some(code));
    }
}

#[test]
fn cancel_never_confirmed_ends_at_the_teardown_guard_of_64_t1() {
    let t0 = Instant::now();
    let mut call = ringing(t0);
    call.handle_timeout(t0 + 30 * SEC);
    drain(&mut call);
    call.handle_timeout(t0 + 62 * SEC - MS);
    assert!(drain(&mut call).is_empty(), "not before 64*T1");
    call.handle_timeout(t0 + 62 * SEC);
    let end = finished(&drain(&mut call));
    assert_eq!(end.outcome, Outcome::NoAnswer);
    assert_eq!(end.ended_at, t0 + 62 * SEC);
    assert_eq!(end.sip_code, None);
    // A late 487 changes nothing.
    call.handle_failed(t0 + 36 * SEC, 487, None);
    assert!(drain(&mut call).is_empty());
}

#[test]
fn answer_crossing_our_cancel_is_hung_up() {
    let t0 = Instant::now();
    let mut call = ringing(t0);
    call.handle_timeout(t0 + 30 * SEC);
    assert_eq!(drain(&mut call), [Output::Cancel]);
    call.handle_answered(t0 + 30 * SEC + MS);
    assert_eq!(drain(&mut call), [Output::Bye]);
    call.handle_ended(t0 + 30 * SEC + 50 * MS, RemoteEnd::LocalBye, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.outcome, Outcome::NoAnswer);
    assert_eq!(end.sip_code, Some(200));
}

#[test]
fn busy_and_rejected_keep_code_and_cause() {
    let cases = [
        (486, Outcome::Busy),
        (600, Outcome::Busy),
        (403, Outcome::Rejected),
        (404, Outcome::Rejected),
        (408, Outcome::Rejected),
        (480, Outcome::Rejected),
        (503, Outcome::Rejected),
    ];
    for (code, outcome) in cases {
        let t0 = Instant::now();
        let mut call = Lifecycle::new(config());
        call.handle_invite_sent(t0);
        call.handle_failed(t0 + SEC, code, Some(17));
        let end = finished(&drain(&mut call)[1..]);
        assert_eq!(end.status, FinalStatus::Failed, "{code}");
        assert_eq!(end.outcome, outcome, "{code}");
        assert_eq!(end.sip_code, Some(code));
        assert_eq!(end.q850, Some(17));
    }
}

#[test]
fn max_duration_sends_bye_on_time() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    // Keep media alive so only max duration fires.
    for k in 1..=6 {
        call.handle_media_activity(t0 + 2 * SEC + k * 9 * SEC);
        call.handle_timeout(t0 + 2 * SEC + k * 9 * SEC);
    }
    assert!(drain(&mut call).is_empty());
    assert_eq!(call.poll_timeout(), Some(t0 + 62 * SEC));
    call.handle_timeout(t0 + 62 * SEC);
    assert_eq!(drain(&mut call), [Output::Bye]);
    call.handle_ended(t0 + 62 * SEC + 20 * MS, RemoteEnd::LocalBye, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Ended);
    assert_eq!(end.outcome, Outcome::MaxDuration);
    assert_eq!(end.reason, "max_duration");
    assert_eq!(end.sip_code, Some(200));
    assert_eq!(end.duration(), 60 * SEC + 20 * MS);
}

#[test]
fn bye_never_answered_still_ends_our_side() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    call.handle_hangup(t0 + 5 * SEC, Requester::Api);
    assert_eq!(drain(&mut call), [Output::Bye]);
    assert_eq!(call.poll_timeout(), Some(t0 + 37 * SEC));
    call.handle_timeout(t0 + 37 * SEC);
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Ended);
    assert_eq!(end.outcome, Outcome::AgentHangup);
    assert_eq!(end.reason, "api_hangup");
}

#[test]
fn bye_answered_481_ends_with_the_decided_outcome() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    call.handle_hangup(t0 + 5 * SEC, Requester::Agent);
    drain(&mut call);
    call.handle_ended(t0 + 5 * SEC + 30 * MS, RemoteEnd::DialogLost, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.outcome, Outcome::AgentHangup);
    assert_eq!(end.reason, "agent_hangup");
}

#[test]
fn remote_bye_is_caller_hangup_with_q850() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    call.handle_ended(t0 + 7 * SEC, RemoteEnd::Bye, Some(16));
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Ended);
    assert_eq!(end.outcome, Outcome::CallerHangup);
    assert_eq!(end.reason, "bye");
    assert_eq!(end.q850, Some(16));
    assert_eq!(end.duration(), 5 * SEC);
}

#[test]
fn media_inactivity_ends_with_error() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    call.handle_media_activity(t0 + 3 * SEC);
    assert_eq!(call.deadline(Timer::Inactivity), Some(t0 + 13 * SEC));
    call.handle_timeout(t0 + 13 * SEC - MS);
    assert!(drain(&mut call).is_empty());
    call.handle_timeout(t0 + 13 * SEC);
    assert_eq!(drain(&mut call), [Output::Bye]);
    call.handle_ended(t0 + 13 * SEC + 10 * MS, RemoteEnd::LocalBye, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Ended);
    assert_eq!(end.outcome, Outcome::Error);
    assert_eq!(end.reason, "media_timeout");
}

#[test]
fn inactivity_disabled_never_fires() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(LifecycleConfig {
        inactivity_timeout: None,
        ..config()
    });
    call.handle_invite_sent(t0);
    call.handle_answered(t0);
    drain(&mut call);
    assert_eq!(call.deadline(Timer::Inactivity), None);
    assert_eq!(call.poll_timeout(), Some(t0 + 60 * SEC));
}

#[test]
fn api_hangup_before_answer_shows_cancelled_at_once_and_ends_on_the_487() {
    let t0 = Instant::now();
    let mut call = ringing(t0);
    assert!(call.handle_hangup(t0 + 2 * SEC, Requester::Api));
    assert!(!call.handle_hangup(t0 + 2 * SEC, Requester::Api), "once");
    assert_eq!(
        drain(&mut call),
        [Output::Cancel, Output::Ending(API_CANCEL)],
        "the record shows cancelled as the CANCEL goes out"
    );
    call.handle_failed(t0 + 2 * SEC + 30 * MS, 487, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Cancelled);
    assert_eq!(end.outcome, Outcome::Cancelled);
    assert_eq!(end.sip_code, Some(487));
    assert_eq!(end.ended_at, t0 + 2 * SEC + 30 * MS, "on the 487");
}

#[test]
fn a_cancel_answered_without_its_487_ends_after_the_grace() {
    let t0 = Instant::now();
    let mut call = ringing(t0);
    call.handle_hangup(t0 + 2 * SEC, Requester::Api);
    drain(&mut call);
    call.handle_cancel_answered(t0 + 2 * SEC + 20 * MS);
    assert_eq!(call.poll_timeout(), Some(t0 + 2 * SEC + 270 * MS));
    call.handle_timeout(t0 + 2 * SEC + 270 * MS);
    let end = finished(&drain(&mut call));
    assert_eq!(end.status, FinalStatus::Cancelled);
    assert_eq!(end.sip_code, None, "no 487 came");
    assert!(
        end.ended_at - (t0 + 2 * SEC + 20 * MS) < SEC,
        "terminal within 1 s of the 200 to the CANCEL"
    );
}

#[test]
fn a_cancel_answered_then_its_487_ends_on_the_487() {
    let t0 = Instant::now();
    let mut call = ringing(t0);
    call.handle_hangup(t0 + 2 * SEC, Requester::Agent);
    drain(&mut call);
    call.handle_cancel_answered(t0 + 2 * SEC + 20 * MS);
    call.handle_failed(t0 + 2 * SEC + 21 * MS, 487, None);
    let end = finished(&drain(&mut call));
    assert_eq!(
        (end.status, end.outcome, end.reason),
        (FinalStatus::Cancelled, Outcome::AgentHangup, "agent_hangup")
    );
    assert_eq!(end.sip_code, Some(487));
    assert_eq!(end.ended_at, t0 + 2 * SEC + 21 * MS);
    assert_eq!(call.poll_timeout(), None);
}

#[test]
fn an_answer_to_cancel_after_the_answer_changes_nothing() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    call.handle_cancel_answered(t0 + 3 * SEC);
    assert!(drain(&mut call).is_empty());
    assert_eq!(call.poll_timeout(), Some(t0 + 12 * SEC), "inactivity only");
}

#[test]
fn an_unreachable_trunk_fails_at_once_with_the_os_error() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    drain(&mut call);
    call.handle_unreachable(t0 + 3 * MS, "Connection refused (os error 111)".into());
    let end = finished(&drain(&mut call));
    assert_eq!(
        (end.status, end.outcome, end.reason),
        (FinalStatus::Failed, Outcome::Error, "trunk_unreachable")
    );
    assert_eq!(
        end.detail.as_deref(),
        Some("Connection refused (os error 111)")
    );
    assert_eq!(end.sip_code, None, "nothing came over the wire");
    assert_eq!(end.ended_at, t0 + 3 * MS);
    assert!(call.is_done());
    assert_eq!(call.poll_timeout(), None, "no join timeout left behind");
}

#[test]
fn a_trunk_that_never_responds_is_trunk_no_response_not_no_answer() {
    // Timer B (64*T1) before the join timeout.
    let t0 = Instant::now();
    let mut call = Lifecycle::new(LifecycleConfig {
        join_timeout: 60 * SEC,
        ..config()
    });
    call.handle_invite_sent(t0);
    drain(&mut call);
    call.handle_no_response(t0 + 32 * SEC);
    let end = finished(&drain(&mut call));
    assert_eq!(
        (end.status, end.outcome, end.reason),
        (FinalStatus::Failed, Outcome::Error, "trunk_no_response")
    );
    assert_eq!(end.sip_code, None);

    // The join timeout before Timer B: nothing will confirm a CANCEL, so
    // the call ends there and then.
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    drain(&mut call);
    call.handle_timeout(t0 + 30 * SEC);
    let outputs = drain(&mut call);
    assert_eq!(outputs[0], Output::Cancel, "sent should a 1xx still come");
    let end = finished(&outputs);
    assert_eq!(
        (end.outcome, end.reason, end.ended_at),
        (Outcome::Error, "trunk_no_response", t0 + 30 * SEC)
    );
}

#[test]
fn a_trunk_that_sent_trying_and_then_nothing_is_no_answer() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    call.handle_trying(t0 + 5 * MS);
    drain(&mut call);
    call.handle_timeout(t0 + 30 * SEC);
    assert_eq!(drain(&mut call), [Output::Cancel]);
    call.handle_failed(t0 + 30 * SEC + 10 * MS, 487, None);
    let end = finished(&drain(&mut call));
    assert_eq!(
        (end.outcome, end.reason),
        (Outcome::NoAnswer, "join_timeout")
    );
}

#[test]
fn a_hangup_before_any_response_ends_at_once() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    call.handle_invite_sent(t0);
    drain(&mut call);
    call.handle_hangup(t0 + 400 * MS, Requester::Api);
    let outputs = drain(&mut call);
    assert_eq!(outputs[0], Output::Cancel);
    let end = finished(&outputs);
    assert_eq!(
        (end.status, end.outcome, end.ended_at),
        (FinalStatus::Cancelled, Outcome::Cancelled, t0 + 400 * MS)
    );
}

#[test]
fn session_timer_and_ack_timeout_are_errors() {
    for (how, reason) in [
        (RemoteEnd::SessionExpired, "session_expired"),
        (RemoteEnd::AckTimeout, "ack_timeout"),
        (RemoteEnd::DialogLost, "dialog_lost"),
    ] {
        let t0 = Instant::now();
        let mut call = answered(t0);
        call.handle_ended(t0 + 4 * SEC, how, None);
        let end = finished(&drain(&mut call));
        assert_eq!(
            (end.status, end.outcome),
            (FinalStatus::Ended, Outcome::Error)
        );
        assert_eq!(end.reason, reason);
    }
}

#[test]
fn shutdown_hangs_up_answered_and_unanswered_calls() {
    let t0 = Instant::now();
    let mut up = answered(t0);
    up.handle_hangup(t0 + 3 * SEC, Requester::Shutdown);
    assert_eq!(drain(&mut up), [Output::Bye]);
    up.handle_ended(t0 + 3 * SEC, RemoteEnd::Shutdown, None);
    let end = finished(&drain(&mut up));
    assert_eq!((end.status, end.reason), (FinalStatus::Ended, "shutdown"));

    let mut ringing = ringing(t0);
    ringing.handle_hangup(t0 + 2 * SEC, Requester::Shutdown);
    assert_eq!(drain(&mut ringing), [Output::Cancel]);
    ringing.handle_timeout(t0 + 34 * SEC);
    let end = finished(&drain(&mut ringing));
    assert_eq!(
        (end.status, end.outcome),
        (FinalStatus::Failed, Outcome::Error)
    );
    assert_eq!(end.reason, "shutdown");
}

#[test]
fn local_error_before_and_after_answer() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    assert!(call.handle_error(t0, "media_setup"));
    let end = finished(&drain(&mut call));
    assert_eq!(
        (end.status, end.outcome),
        (FinalStatus::Failed, Outcome::Error)
    );

    let mut call = answered(t0);
    assert!(call.handle_error(t0 + 3 * SEC, "no_common_codec"));
    assert_eq!(drain(&mut call), [Output::Bye]);
}

#[test]
fn inbound_call_statuses_and_caller_cancel() {
    let t0 = Instant::now();
    let mut call = Lifecycle::new(config());
    call.handle_incoming(t0);
    assert_eq!(
        drain(&mut call),
        [
            Output::Status(Progress::Initiated),
            Output::Status(Progress::Ringing)
        ]
    );
    assert_eq!(call.poll_timeout(), None, "no join timeout inbound");
    call.handle_failed(t0 + SEC, 487, None);
    let end = finished(&drain(&mut call));
    assert_eq!(
        (end.status, end.outcome),
        (FinalStatus::Cancelled, Outcome::CallerHangup)
    );

    let mut call = Lifecycle::new(config());
    call.handle_incoming(t0);
    call.handle_answered(t0 + 20 * MS);
    drain(&mut call);
    call.handle_ended(t0 + 9 * SEC, RemoteEnd::Bye, None);
    let end = finished(&drain(&mut call));
    assert_eq!(end.outcome, Outcome::CallerHangup);
}

#[test]
fn inputs_after_the_end_are_ignored() {
    let t0 = Instant::now();
    let mut call = answered(t0);
    call.handle_ended(t0 + 3 * SEC, RemoteEnd::Bye, None);
    drain(&mut call);
    call.handle_ended(t0 + 4 * SEC, RemoteEnd::Bye, None);
    call.handle_answered(t0 + 4 * SEC);
    call.handle_timeout(t0 + 100 * SEC);
    assert!(!call.handle_hangup(t0 + 100 * SEC, Requester::Api));
    assert!(drain(&mut call).is_empty());
}
