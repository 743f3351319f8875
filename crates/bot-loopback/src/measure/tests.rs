use super::*;

fn utterance(start_ms: u64, end_ms: u64) -> Utterance {
    Utterance {
        span: Span::new(start_ms, end_ms),
        barge_in: false,
    }
}

fn measurements() -> Measurements {
    Measurements {
        response_latency_ms: LatencySummary::of(&[400.0, 600.0]),
        response_latencies_ms: vec![400, 600],
        dead_air_ms_max: 900,
        dead_air_count: 0,
        one_way_audio: false,
        mos: 4.3,
        post_dial_delay_ms: Some(20),
        answer_delay_ms: Some(40),
        time_to_first_agent_audio_ms: Some(300),
        barge_in_stop_ms: None,
        barge_in_attempts: 0,
        barge_in_stopped: 0,
        packets_sent: 100,
        packets_received: 98,
        packets_lost: 2,
        packets_dropped_outbound: 0,
        loss_percent: 2.0,
        jitter_ms: 1.5,
        dtmf_sent: String::new(),
        dtmf_heard: String::new(),
        hangup_by: Party::Bot,
        duration_ms: 5000,
        utterances: 2,
        expect_timeouts: 0,
        network_profile: NetworkProfile::Clean,
    }
}

#[test]
fn a_reply_after_the_utterance_counts_from_its_end() {
    let timeline = Timeline {
        duration_ms: 6000,
        bot_speech: vec![utterance(1000, 2000)],
        agent_speech: vec![Span::new(0, 800), Span::new(2600, 3500)],
        ..Timeline::default()
    };
    assert_eq!(timeline.response_latencies(), [600]);
}

#[test]
fn a_reply_during_the_utterance_counts_from_its_onset() {
    // An echo agent: its voice starts 140 ms into the bot's utterance.
    let timeline = Timeline {
        duration_ms: 6000,
        bot_speech: vec![utterance(1000, 2000)],
        agent_speech: vec![Span::new(1140, 2140)],
        ..Timeline::default()
    };
    assert_eq!(timeline.response_latencies(), [140]);
}

#[test]
fn speech_running_at_the_onset_is_not_a_reply_and_a_reply_must_precede_the_next_utterance() {
    let timeline = Timeline {
        duration_ms: 10_000,
        bot_speech: vec![utterance(1000, 2000), utterance(4000, 5000)],
        // Running at 1000: not a reply. Nothing before 4000 either.
        agent_speech: vec![Span::new(500, 1500), Span::new(5200, 6000)],
        ..Timeline::default()
    };
    assert_eq!(timeline.response_latencies(), [200]);
}

#[test]
fn dead_air_skips_scripted_waits_and_counts_the_long_silences() {
    let timeline = Timeline {
        duration_ms: 10_000,
        bot_speech: vec![utterance(2000, 3000)],
        bot_dtmf: vec![Span::new(3000, 3400)],
        agent_speech: vec![Span::new(5000, 6000)],
        scripted_waits: vec![Span::new(6000, 9000)],
    };
    // Silences: 0-2000, 3400-5000, 9000-10000.
    assert_eq!(
        timeline.silences(),
        [
            Span::new(0, 2000),
            Span::new(3400, 5000),
            Span::new(9000, 10_000)
        ]
    );
    assert_eq!(timeline.dead_air(1500), (2000, 2));
    assert_eq!(timeline.dead_air(2500), (2000, 0));
    assert_eq!(Timeline::default().dead_air(1500), (0, 0));
}

#[test]
fn barge_in_stop_is_measured_only_when_the_agent_yields() {
    let mut timeline = Timeline {
        duration_ms: 10_000,
        bot_speech: vec![Utterance {
            span: Span::new(2000, 3000),
            barge_in: true,
        }],
        agent_speech: vec![Span::new(1000, 2400)],
        ..Timeline::default()
    };
    assert_eq!(timeline.barge_ins(), (1, 1, Some(400)));
    timeline.agent_speech = vec![Span::new(1000, 3600)];
    assert_eq!(timeline.barge_ins(), (1, 0, None), "talked through");
    timeline.bot_speech[0].barge_in = false;
    assert_eq!(timeline.barge_ins(), (0, 0, None));
}

#[test]
fn percentiles_interpolate_between_ranks() {
    let summary = LatencySummary::of(&[100.0, 300.0, 200.0, 400.0]).expect("values");
    assert_eq!(summary.p50, 250.0);
    assert!((summary.p95 - 385.0).abs() < 1e-9);
    assert_eq!(summary.max, 400.0);
    assert!(LatencySummary::of(&[]).is_none());
    assert!(LatencySummary::of(&[f64::NAN]).is_none());
}

#[test]
fn thresholds_report_each_failure_with_limit_and_actual() {
    let run = measurements();
    let thresholds = Thresholds {
        response_latency_p95_ms: Some(500.0),
        mos_min: Some(4.0),
        loss_percent_max: Some(1.0),
        one_way_audio_allowed: Some(false),
        ..Thresholds::default()
    };
    let verdict = thresholds.evaluate(&run);
    assert!(!verdict.passed);
    let names: Vec<&str> = verdict.failed.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["response_latency_p95_ms", "loss_percent_max"]);
    assert_eq!(verdict.failed[1].limit, serde_json::json!(1.0));
    assert_eq!(verdict.failed[1].actual, serde_json::json!(2.0));
    assert!(Thresholds::default().evaluate(&run).passed);
}

#[test]
fn a_missing_value_fails_its_threshold() {
    let mut run = measurements();
    run.response_latency_ms = None;
    run.one_way_audio = true;
    let thresholds = Thresholds {
        response_latency_p50_ms: Some(1000.0),
        one_way_audio_allowed: Some(false),
        ..Thresholds::default()
    };
    let verdict = thresholds.evaluate(&run);
    assert_eq!(verdict.failed.len(), 2);
    assert_eq!(verdict.failed[0].actual, serde_json::Value::Null);
}

#[test]
fn thresholds_reject_unknown_fields() {
    let parsed: Result<Thresholds, _> = serde_json::from_str(r#"{"mos_minimum": 4}"#);
    assert!(parsed.is_err());
    let parsed: Thresholds =
        serde_json::from_str(r#"{"mos_min": 4, "response_latency_p95_ms": 800}"#).expect("valid");
    assert_eq!(parsed.mos_min, Some(4.0));
    assert!(!parsed.is_empty());
}

#[test]
fn thresholds_validate_their_limits() {
    assert!(Thresholds::default().validate().is_ok());
    let good = Thresholds {
        mos_min: Some(3.5),
        loss_percent_max: Some(0.0),
        ..Thresholds::default()
    };
    assert!(good.validate().is_ok());
    let negative = Thresholds {
        dead_air_ms_max: Some(-1.0),
        ..Thresholds::default()
    };
    assert!(negative
        .validate()
        .is_err_and(|e| e.contains("dead_air_ms_max")));
    let mos = Thresholds {
        mos_min: Some(5.0),
        ..Thresholds::default()
    };
    assert!(mos.validate().is_err_and(|e| e.contains("mos_min")));
}

#[test]
fn a_batch_pools_latencies_and_takes_the_worst_run_for_the_rest() {
    let good = measurements();
    let mut bad = measurements();
    bad.mos = 3.1;
    bad.response_latencies_ms = vec![2000];
    bad.response_latency_ms = LatencySummary::of(&[2000.0]);
    let thresholds = Thresholds {
        mos_min: Some(3.5),
        response_latency_max_ms: Some(1000.0),
        ..Thresholds::default()
    };
    let verdict = thresholds.evaluate_batch(&[good.clone(), bad]);
    let names: Vec<&str> = verdict.failed.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["response_latency_max_ms", "mos_min"]);
    assert!(thresholds.evaluate_batch(&[good.clone(), good]).passed);
    assert!(!thresholds.evaluate_batch(&[]).passed);
}

#[test]
fn aggregate_gives_median_and_p95_per_measure_and_counts() {
    let mut runs: Vec<Measurements> = (0..5).map(|_| measurements()).collect();
    for (i, run) in runs.iter_mut().enumerate() {
        run.mos = 4.0 + i as f64 * 0.1;
    }
    runs[4].response_latency_ms = None;
    runs[4].response_latencies_ms.clear();
    runs[3].hangup_by = Party::Agent;
    let aggregate = Aggregate::of(&runs);
    assert_eq!(aggregate.runs, 5);
    let mos = aggregate.measures["mos"];
    assert_eq!(mos.count, 5);
    assert!((mos.median - 4.2).abs() < 1e-9);
    assert!((mos.p95 - 4.38).abs() < 1e-9);
    assert_eq!(aggregate.measures["response_latency_p50_ms"].count, 4);
    assert_eq!(aggregate.measures["response_latency_ms"].count, 8);
    assert_eq!(aggregate.runs_without_reply, 1);
    assert_eq!((aggregate.hangup_by_bot, aggregate.hangup_by_agent), (4, 1));
    assert!(!aggregate.measures.contains_key("barge_in_stop_ms"));
}

#[test]
fn measurements_round_trip_through_json() {
    let run = measurements();
    let json = serde_json::to_value(&run).expect("serializes");
    assert_eq!(json["hangup_by"], "bot");
    assert_eq!(json["network_profile"], "clean");
    assert_eq!(json["response_latency_ms"]["p50"], 500.0);
    let back: Measurements = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, run);
}
