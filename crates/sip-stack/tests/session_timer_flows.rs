//! Guards RFC 4028 session timers: UAC request headers, 422 retries, reading the 2xx, UAS
//! decisions (Require, refresher choice, 422), and the refresh / BYE schedule in virtual
//! time, including calls held for hours with refreshes from either side.

use std::time::{Duration, Instant};

use sip_stack::session_timer::{
    uas_negotiate, Action, MinSe, Negotiated, Refresher, SessionExpires, SessionTimer,
    SessionTimerConfig, SessionTimerError, UacSessionTimer, UasDecision,
};

const S: Duration = Duration::from_secs(1);

fn accept(decision: UasDecision) -> (SessionExpires, bool, Negotiated) {
    match decision {
        UasDecision::Accept {
            response,
            negotiated,
        } => (response.session_expires, response.require_timer, negotiated),
        UasDecision::Reject { min_se } => panic!("unexpected 422 with Min-SE {min_se}"),
    }
}

#[test]
fn uac_asks_with_defaults_and_reads_the_2xx() {
    let config = SessionTimerConfig::default();
    let uac = UacSessionTimer::new(&config);
    let headers = uac.request_headers();
    assert_eq!(headers.session_expires.to_string(), "1800");
    assert_eq!(headers.min_se.to_string(), "90");

    let ours = uac.handle_2xx(Some("1800;refresher=uac")).expect("valid");
    assert_eq!(
        ours,
        Some(Negotiated {
            interval: 1800 * S,
            refresher: Refresher::Uac,
            local_refresher: true
        })
    );
    let theirs = uac
        .handle_2xx(Some("900;refresher=uas"))
        .expect("valid")
        .expect("timer");
    assert!(!theirs.local_refresher);
    assert_eq!(theirs.interval, 900 * S);
    // A Session-Expires without refresher (inserted by a proxy): we refresh.
    let proxy = uac.handle_2xx(Some("1200")).expect("valid").expect("timer");
    assert!(proxy.local_refresher);
    // No Session-Expires: no session timer.
    assert_eq!(uac.handle_2xx(None), Ok(None));
    // Too small an interval is raised to our Min-SE.
    let small = uac
        .handle_2xx(Some("30;refresher=uac"))
        .expect("valid")
        .expect("timer");
    assert_eq!(small.interval, 90 * S);
    assert!(uac.handle_2xx(Some("soon")).is_err());
}

#[test]
fn uac_retries_after_422_with_the_larger_min_se() {
    let config = SessionTimerConfig {
        session_expires: 120,
        min_se: 90,
    };
    let mut uac = UacSessionTimer::new(&config);
    let retry = uac.handle_422(Some("600")).expect("retry possible");
    assert_eq!(retry.session_expires.delta_seconds, 600);
    assert_eq!(retry.min_se, MinSe(600));
    assert_eq!(uac.request_headers(), retry);
    // A second 422 that does not raise the bar would loop forever.
    assert_eq!(
        uac.handle_422(Some("600")),
        Err(SessionTimerError::MinSeNotRaised {
            min_se: 600,
            requested: 600
        })
    );
    assert_eq!(uac.handle_422(None), Err(SessionTimerError::MissingMinSe));
    assert!(matches!(
        uac.handle_422(Some("lots")),
        Err(SessionTimerError::InvalidMinSe(_))
    ));
}

#[test]
fn uas_requires_timer_and_lets_a_capable_uac_refresh() {
    let config = SessionTimerConfig::default();
    let (se, require, negotiated) =
        accept(uas_negotiate(&config, true, Some("1800"), Some("90")).expect("valid"));
    assert!(require);
    assert_eq!(se.to_string(), "1800;refresher=uac");
    assert!(!negotiated.local_refresher);

    // The UAC's own refresher choice is kept.
    let (se, _, negotiated) =
        accept(uas_negotiate(&config, true, Some("1800;refresher=uas"), None).expect("valid"));
    assert_eq!(se.refresher, Some(Refresher::Uas));
    assert!(negotiated.local_refresher);

    // Supported: timer without Session-Expires: we still run a timer, the UAC refreshes.
    let (se, require, _) = accept(uas_negotiate(&config, true, None, None).expect("valid"));
    assert!(require);
    assert_eq!(se.to_string(), "1800;refresher=uac");
}

#[test]
fn uas_refreshes_itself_for_a_uac_without_timer_support() {
    let config = SessionTimerConfig::default();
    let (se, require, negotiated) =
        accept(uas_negotiate(&config, false, None, None).expect("valid"));
    assert!(!require);
    assert_eq!(se.to_string(), "1800;refresher=uas");
    assert!(negotiated.local_refresher);

    // A proxy asked for a timer below our minimum on behalf of such a UAC: no 422 (the UAC
    // would not understand it), the interval is raised instead.
    let (se, _, _) =
        accept(uas_negotiate(&config, false, Some("60;refresher=uac"), None).expect("valid"));
    assert_eq!(se.to_string(), "90;refresher=uas");
}

#[test]
fn uas_rejects_too_small_intervals_with_422() {
    let config = SessionTimerConfig {
        session_expires: 1800,
        min_se: 300,
    };
    assert_eq!(
        uas_negotiate(&config, true, Some("120"), Some("90")),
        Ok(UasDecision::Reject { min_se: MinSe(300) })
    );
    // The UAC retries as RFC 4028 section 7.4 says and is accepted.
    let mut uac = UacSessionTimer::new(&SessionTimerConfig {
        session_expires: 120,
        min_se: 90,
    });
    let retry = uac.handle_422(Some("300")).expect("retry");
    let (se, _, negotiated) = accept(
        uas_negotiate(
            &config,
            true,
            Some(&retry.session_expires.to_string()),
            Some(&retry.min_se.to_string()),
        )
        .expect("valid"),
    );
    assert_eq!(se.delta_seconds, 300);
    assert_eq!(negotiated.interval, 300 * S);
}

#[test]
fn uas_shortens_long_intervals_but_respects_both_minimums() {
    let config = SessionTimerConfig {
        session_expires: 1800,
        min_se: 90,
    };
    let (se, _, _) = accept(uas_negotiate(&config, true, Some("7200"), None).expect("valid"));
    assert_eq!(se.delta_seconds, 1800);
    let (se, _, _) =
        accept(uas_negotiate(&config, true, Some("7200"), Some("3600")).expect("valid"));
    assert_eq!(se.delta_seconds, 3600);
    assert!(uas_negotiate(&config, true, Some("x"), None).is_err());
    assert!(uas_negotiate(&config, true, Some("1800"), Some("y")).is_err());
}

#[test]
fn refresher_sends_refresh_at_half_interval() {
    let config = SessionTimerConfig::default();
    let t0 = Instant::now();
    let negotiated = Negotiated {
        interval: 1800 * S,
        refresher: Refresher::Uac,
        local_refresher: true,
    };
    let mut timer = SessionTimer::new(t0, &negotiated, &config);
    assert!(timer.is_local_refresher());
    assert_eq!(timer.poll_timeout(), Some(t0 + 900 * S));
    assert_eq!(timer.handle_timeout(t0 + 899 * S), None);
    assert_eq!(
        timer.handle_timeout(t0 + 900 * S),
        Some(Action::SendRefresh)
    );
    let headers = timer.refresh_headers();
    assert_eq!(headers.session_expires.to_string(), "1800;refresher=uac");
    assert_eq!(headers.min_se, MinSe(90));
    // The refresh is in flight: next deadline is the expiry, not another refresh.
    assert_eq!(timer.poll_timeout(), Some(t0 + 1768 * S));
    // If the refresh never succeeds, the session ends.
    assert_eq!(timer.handle_timeout(t0 + 1768 * S), Some(Action::SendBye));
    assert_eq!(timer.poll_timeout(), None);
    assert_eq!(timer.handle_timeout(t0 + 4000 * S), None);
}

#[test]
fn non_refresher_sends_bye_when_refreshes_stop() {
    let config = SessionTimerConfig::default();
    let t0 = Instant::now();
    // 90 s interval: the margin is interval / 3 = 30 s (less than 32 s).
    let negotiated = Negotiated {
        interval: 90 * S,
        refresher: Refresher::Uac,
        local_refresher: false,
    };
    let mut timer = SessionTimer::new(t0, &negotiated, &config);
    assert_eq!(timer.poll_timeout(), Some(t0 + 60 * S));
    assert_eq!(timer.handle_timeout(t0 + 59 * S), None);
    // A refresh arrives in time: the deadline moves.
    timer.handle_refresh(t0 + 45 * S, &negotiated);
    assert_eq!(timer.poll_timeout(), Some(t0 + 105 * S));
    assert_eq!(timer.handle_timeout(t0 + 60 * S), None);
    assert_eq!(timer.handle_timeout(t0 + 105 * S), Some(Action::SendBye));
}

#[test]
fn refresh_can_change_interval_and_refresher() {
    let config = SessionTimerConfig::default();
    let t0 = Instant::now();
    let mut timer = SessionTimer::new(
        t0,
        &Negotiated {
            interval: 1800 * S,
            refresher: Refresher::Uac,
            local_refresher: false,
        },
        &config,
    );
    // The peer's re-INVITE made us the refresher with a shorter interval.
    timer.handle_refresh(
        t0 + 600 * S,
        &Negotiated {
            interval: 600 * S,
            refresher: Refresher::Uas,
            local_refresher: true,
        },
    );
    assert_eq!(timer.interval(), 600 * S);
    assert_eq!(timer.poll_timeout(), Some(t0 + 900 * S));
    assert_eq!(
        timer.handle_timeout(t0 + 900 * S),
        Some(Action::SendRefresh)
    );
}

/// Drives a timer through virtual time: jump to each deadline, answer refreshes after
/// `response_delay`, and return the actions in order with their times.
fn run(
    timer: &mut SessionTimer,
    negotiated: &Negotiated,
    until: Instant,
    response_delay: Duration,
) -> Vec<(Instant, Action)> {
    let mut actions = Vec::new();
    while let Some(deadline) = timer.poll_timeout() {
        if deadline > until {
            break;
        }
        if let Some(action) = timer.handle_timeout(deadline) {
            actions.push((deadline, action));
            if action == Action::SendRefresh {
                timer.handle_refresh(deadline + response_delay, negotiated);
            }
        }
    }
    actions
}

#[test]
fn call_held_for_hours_stays_up_while_we_refresh() {
    let config = SessionTimerConfig::default();
    let t0 = Instant::now();
    let negotiated = Negotiated {
        interval: 1800 * S,
        refresher: Refresher::Uas,
        local_refresher: true,
    };
    let mut timer = SessionTimer::new(t0, &negotiated, &config);
    let five_hours = t0 + 5 * 3600 * S;
    let actions = run(&mut timer, &negotiated, five_hours, 2 * S);
    assert!(actions.iter().all(|(_, a)| *a == Action::SendRefresh));
    // One refresh every 902 s (900 s plus the 2 s the 2xx took): 19 in five hours.
    assert_eq!(actions.len(), 19);
    for pair in actions.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 902 * S);
    }
}

#[test]
fn call_held_for_hours_with_peer_refreshing_then_peer_vanishes() {
    let config = SessionTimerConfig::default();
    let t0 = Instant::now();
    let negotiated = Negotiated {
        interval: 1800 * S,
        refresher: Refresher::Uac,
        local_refresher: false,
    };
    let mut timer = SessionTimer::new(t0, &negotiated, &config);
    // The peer refreshes every 900 s for three hours (the call is on hold meanwhile).
    let mut now = t0;
    for _ in 0..12 {
        now += 900 * S;
        assert_eq!(timer.poll_timeout(), Some(now - 900 * S + 1768 * S));
        assert_eq!(timer.handle_timeout(now), None);
        timer.handle_refresh(now, &negotiated);
    }
    assert_eq!(now, t0 + 3 * 3600 * S);
    // Then it goes silent: BYE 1768 s after its last refresh, and nothing after.
    let actions = run(&mut timer, &negotiated, now + 3600 * S, S);
    assert_eq!(actions, [(now + 1768 * S, Action::SendBye)]);
    assert_eq!(timer.poll_timeout(), None);
}
