use proptest::prelude::*;

use super::*;

#[test]
fn every_command_parses() {
    let script = Script::parse(
        "# a comment\n\
         \n\
         expect_speech 4s\n\
         say Hello, I would like to check my order.\n\
         say clips/hello.WAV\n\
         dtmf 12*#A\n\
         wait 500ms\n\
         wait 1.5s\n\
         expect_speech\n\
         barge_in Wait, a question.\n\
         hangup\n",
    )
    .expect("valid");
    assert_eq!(
        script.commands,
        [
            Command::ExpectSpeech(Duration::from_secs(4)),
            Command::Say(Speech::Text(
                "Hello, I would like to check my order.".into()
            )),
            Command::Say(Speech::File("clips/hello.WAV".into())),
            Command::Dtmf("12*#A".into()),
            Command::Wait(Duration::from_millis(500)),
            Command::Wait(Duration::from_millis(1500)),
            Command::ExpectSpeech(EXPECT_TIMEOUT),
            Command::BargeIn(Speech::Text("Wait, a question.".into())),
            Command::Hangup,
        ]
    );
    assert_eq!(script.audio_files().len(), 1);
}

#[test]
fn errors_name_their_line() {
    let cases = [
        ("say hi\nsing a song", 2, "unknown command \"sing\""),
        ("say", 1, "say needs an argument"),
        ("\n\nwait 2 minutes", 3, "invalid duration"),
        ("wait 700s", 1, "longer than 600s"),
        ("dtmf 12x", 1, "invalid DTMF digits"),
        ("hangup now", 1, "hangup takes no argument"),
        ("expect_speech soon", 1, "invalid duration"),
        ("# only a comment", 0, "no command"),
    ];
    for (text, line, message) in cases {
        let error = Script::parse(text).expect_err(text);
        assert_eq!(error.line, line, "{text}");
        assert!(error.to_string().contains(message), "{error} for {text}");
    }
}

#[test]
fn free_text_runs_the_default_script() {
    let prompt = "Pretend to be a customer asking about a late delivery. Be polite.";
    assert!(!Script::looks_like_script(prompt));
    let script = Script::parse_or_default(prompt).expect("free text never fails");
    assert_eq!(
        script.commands,
        [
            Command::ExpectSpeech(GREETING_TIMEOUT),
            Command::Say(Speech::Text(
                "Pretend to be a customer asking about a late delivery.".into()
            )),
            Command::ExpectSpeech(EXPECT_TIMEOUT),
            Command::Hangup,
        ]
    );
    let empty = Script::parse_or_default("   ").expect("default");
    assert!(matches!(&empty.commands[1], Command::Say(Speech::Text(t)) if !t.is_empty()));
}

#[test]
fn a_prompt_that_starts_like_a_script_must_be_one() {
    assert!(Script::looks_like_script("\n  say hello\nwat 2s"));
    assert!(Script::looks_like_script("# scenario\nsay hi"));
    let error = Script::parse_or_default("say hello\nwat 2s").expect_err("typo");
    assert_eq!(error.line, 2);
    assert!(!Script::looks_like_script("Say hello to the agent."));
}

fn speech() -> impl Strategy<Value = Speech> {
    prop_oneof![
        "[A-Za-z][A-Za-z ,.?!']{0,40}[A-Za-z.?!]"
            .prop_filter("not a file name", |t| !t
                .to_ascii_lowercase()
                .ends_with(".wav"))
            .prop_map(Speech::Text),
        "[a-z/_]{1,20}\\.wav".prop_map(|p| Speech::File(p.into())),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        speech().prop_map(Command::Say),
        speech().prop_map(Command::BargeIn),
        "[0-9*#A-D]{1,12}".prop_map(Command::Dtmf),
        (0u64..600_000).prop_map(|ms| Command::Wait(Duration::from_millis(ms))),
        (0u64..600_000).prop_map(|ms| Command::ExpectSpeech(Duration::from_millis(ms))),
        Just(Command::Hangup),
    ]
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "\\PC*") {
        let _ = Script::parse(&text);
        let _ = Script::parse_or_default(&text);
    }

    #[test]
    fn parsing_never_panics_on_near_scripts(
        lines in proptest::collection::vec(
            "(say|dtmf|wait|expect_speech|barge_in|hangup|#)?[ ]?[0-9a-zA-Z.*#]{0,8}(s|ms)?",
            0..8,
        )
    ) {
        let _ = Script::parse(&lines.join("\n"));
    }

    #[test]
    fn scripts_round_trip_through_their_text(commands in proptest::collection::vec(command(), 1..12)) {
        let script = Script { commands };
        let text = script.to_string();
        prop_assert_eq!(Script::parse(&text), Ok(script.clone()));
        prop_assert_eq!(Script::parse_or_default(&text), Ok(script));
    }
}
