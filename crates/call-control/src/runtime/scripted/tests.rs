//! The scripted runtime against a fake bridge fed with synthetic frames.

use media::stream::{AudioFrame, FrameKind};

use super::*;

fn metadata(greeting: Option<&str>) -> CallMetadata {
    CallMetadata {
        call_id: "call_test".into(),
        org_id: "org_test".into(),
        agent_id: "agt_test".into(),
        direction: crate::runtime::Direction::Outbound,
        from_number: "+15550001111".into(),
        to_number: "+15550002222".into(),
        prompt: "be brief".into(),
        greeting: greeting.map(str::to_owned),
        variables: Default::default(),
        sip_call_id: None,
        sample_rate: 8000,
    }
}

/// What the fake bridge saw.
#[derive(Debug, Default)]
struct Seen {
    outputs: Vec<RuntimeOutput>,
    /// Inbound frames delivered when the runtime hung up (or stopped).
    frames_at_end: u64,
}

/// Runs `steps` with a bridge that answers every mark at once, feeds
/// silent frames, presses `digits` (frame index, digit) and stops after
/// `max_frames` frames.
async fn drive(
    greeting: Option<&str>,
    steps: Vec<ScriptStep>,
    digits: &[(u64, char)],
    max_frames: u64,
) -> Seen {
    drive_with(greeting, steps, digits, max_frames, None).await
}

/// [`drive`] with `[agents] audio_dir` set to `audio_dir`.
async fn drive_with(
    greeting: Option<&str>,
    steps: Vec<ScriptStep>,
    digits: &[(u64, char)],
    max_frames: u64,
    audio_dir: Option<std::path::PathBuf>,
) -> Seen {
    let (session, input, mut output) = RuntimeSession::channel(1);
    let task =
        tokio::spawn(Box::new(Scripted::new(steps, audio_dir)).run(metadata(greeting), session));
    let silence = AudioFrame::new(&[0; 160], FrameKind::Silence).expect("fits");
    let mut seen = Seen::default();
    let mut frames = 0u64;
    let mut pending: VecDeque<RuntimeInput> = VecDeque::new();
    let mut pressed = std::collections::HashSet::new();
    loop {
        if frames >= max_frames && pending.is_empty() {
            seen.frames_at_end = frames;
            break;
        }
        let digit = digits
            .iter()
            .find(|(at, _)| *at == frames && !pressed.contains(at));
        let next = match (pending.front(), digit) {
            (Some(input), _) => *input,
            (None, Some((_, digit))) => RuntimeInput::Dtmf(*digit),
            (None, None) => RuntimeInput::Audio(silence),
        };
        tokio::select! {
            biased;
            out = output.recv() => match out {
                Some(RuntimeOutput::Mark(id)) => {
                    pending.push_back(RuntimeInput::Mark { id, cleared: false });
                    seen.outputs.push(RuntimeOutput::Mark(id));
                }
                Some(RuntimeOutput::Hangup) => {
                    seen.outputs.push(RuntimeOutput::Hangup);
                    seen.frames_at_end = frames;
                    break;
                }
                Some(other) => seen.outputs.push(other),
                None => {
                    seen.frames_at_end = frames;
                    break;
                }
            },
            sent = input.send(next) => {
                sent.expect("runtime alive");
                if pending.pop_front().is_none() {
                    match next {
                        RuntimeInput::Audio(_) => frames += 1,
                        _ => {
                            pressed.insert(frames);
                        }
                    }
                }
            }
        }
    }
    drop(input);
    task.await.expect("no panic").expect("no error");
    seen
}

fn kinds(outputs: &[RuntimeOutput]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            RuntimeOutput::Audio(pcm) => format!("audio{}", pcm.len()),
            RuntimeOutput::Mark(id) => format!("mark{id}"),
            RuntimeOutput::Clear => "clear".into(),
            RuntimeOutput::Dtmf(d) => format!("dtmf:{d}"),
            RuntimeOutput::Transcript { role, text, .. } => format!("{role}:{text}"),
            RuntimeOutput::Hangup => "hangup".into(),
        })
        .collect()
}

#[tokio::test]
async fn greeting_then_steps_in_order_each_after_its_mark() {
    let steps = vec![
        ScriptStep::Say {
            text: Some("press one".into()),
            audio: None,
        },
        ScriptStep::Tone {
            frequency_hz: 1000,
            duration_ms: 100,
        },
        ScriptStep::Dtmf {
            digits: "12#".into(),
        },
        ScriptStep::Hangup,
    ];
    let seen = drive(Some("hello there"), steps, &[], 1000).await;
    assert_eq!(
        kinds(&seen.outputs),
        [
            "agent:hello there",
            "audio2880",
            "mark0",
            "agent:press one",
            "audio2880",
            "mark1",
            "audio800",
            "mark2",
            "dtmf:12#",
            "mark3",
            "hangup",
        ]
    );
}

#[tokio::test]
async fn wait_counts_call_time_in_frames() {
    let steps = vec![ScriptStep::Wait { ms: 1000 }, ScriptStep::Hangup];
    let seen = drive(None, steps, &[], 1000).await;
    assert_eq!(kinds(&seen.outputs), ["hangup"]);
    // 50 frames consumed; the bridge may have one more in the channel.
    assert!(
        (50..=51).contains(&seen.frames_at_end),
        "hung up after {} frames",
        seen.frames_at_end
    );
}

#[tokio::test]
async fn wait_for_dtmf_returns_at_the_digit() {
    let steps = vec![
        ScriptStep::WaitForDtmf { timeout_ms: 5000 },
        ScriptStep::Hangup,
    ];
    let seen = drive(None, steps, &[(10, '7')], 1000).await;
    let kinds = kinds(&seen.outputs);
    assert_eq!(kinds[kinds.len() - 2..], ["caller:DTMF 7", "hangup"]);
    assert!(seen.frames_at_end <= 12, "{}", seen.frames_at_end);
}

#[tokio::test]
async fn wait_for_dtmf_times_out() {
    let steps = vec![
        ScriptStep::WaitForDtmf { timeout_ms: 200 },
        ScriptStep::Hangup,
    ];
    let seen = drive(None, steps, &[], 1000).await;
    assert_eq!(kinds(&seen.outputs), ["hangup"]);
    assert!((10..=11).contains(&seen.frames_at_end));
}

#[tokio::test]
async fn without_hangup_the_agent_stays_until_the_call_ends() {
    let steps = vec![ScriptStep::Tone {
        frequency_hz: 440,
        duration_ms: 20,
    }];
    let seen = drive(None, steps, &[], 30).await;
    assert_eq!(kinds(&seen.outputs), ["audio160", "mark0"]);
    assert_eq!(seen.frames_at_end, 30);
}

#[tokio::test]
async fn say_plays_files_only_from_inside_the_audio_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let audio = dir.path().join("audio");
    std::fs::create_dir(&audio).expect("dir");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    for path in [audio.join("hello.wav"), dir.path().join("recording.wav")] {
        let mut wav = hound::WavWriter::create(path, spec).expect("wav");
        for _ in 0..160 {
            wav.write_sample(1000i16).expect("sample");
        }
        wav.finalize().expect("finalize");
    }
    let say = |audio: &str| {
        vec![ScriptStep::Say {
            text: Some("hi".into()),
            audio: Some(audio.into()),
        }]
    };
    let seen = drive_with(None, say("hello.wav"), &[], 10, Some(audio.clone())).await;
    assert!(
        kinds(&seen.outputs).contains(&"audio160".to_owned()),
        "{:?}",
        kinds(&seen.outputs)
    );

    // Another organisation's recording, by absolute path, by `..`, or without a directory.
    let outside = dir.path().join("recording.wav").display().to_string();
    for (name, dir) in [
        (outside.as_str(), Some(audio.clone())),
        ("../recording.wav", Some(audio.clone())),
        ("hello.wav", None),
        ("missing.wav", Some(audio.clone())),
    ] {
        let (session, _input, _output) = RuntimeSession::channel(4);
        let result = Box::new(Scripted::new(say(name), dir))
            .run(metadata(None), session)
            .await;
        let Err(RuntimeError::Failed(message)) = result else {
            panic!("{name}: {result:?}");
        };
        assert!(message.starts_with("say: "), "{message}");
    }
}
