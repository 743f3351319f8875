//! A scripted agent's `say` audio is a plain file name inside `[agents] audio_dir`, never a
//! path on the server: a tenant who names another organisation's recording, `/etc/...`
//! or `../` gets 422 naming the step, with or without an audio directory.

mod api_support;

use api_support::TestApi;
use axum::http::StatusCode;
use serde_json::{json, Value};

const AGENTS: &str = "/api/public/v1/agents";

fn scripted(audio: &str) -> Value {
    json!({
        "name": "Reader",
        "runtime": {"type": "scripted", "steps": [
            {"action": "wait", "ms": 100},
            {"action": "say", "text": "hello", "audio": audio}
        ]}
    })
}

#[tokio::test]
async fn agents_cannot_name_files_outside_the_audio_dir() {
    let audio_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(audio_dir.path().join("greeting.wav"), b"RIFF").expect("write");
    let dir = audio_dir.path().to_owned();
    let api = TestApi::with_config(move |config| config.agents.audio_dir = Some(dir)).await;
    // Another organisation's recording lives in the recordings directory.
    let recordings = api.state.config.recordings.dir.clone();
    std::fs::create_dir_all(&recordings).expect("recordings");
    let theirs = recordings.join("call_theirs.wav");
    std::fs::write(&theirs, b"RIFF").expect("write");

    for name in [
        theirs.display().to_string(),
        "/etc/passwd".to_owned(),
        "../greeting.wav".to_owned(),
        "missing.wav".to_owned(),
    ] {
        let reply = api.post(AGENTS, scripted(&name)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            reply.body
        );
        let problem = &reply.body["error"]["details"]["fields"]["runtime.steps[1].audio"];
        assert!(
            problem.as_str().is_some_and(|p| p.starts_with(&name)),
            "{}",
            reply.body
        );
    }
    let reply = api.post(AGENTS, scripted("greeting.wav")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);

    // PATCHing a runtime is checked the same way.
    let id = reply.data()["id"].as_str().expect("id").to_owned();
    let patch = api
        .patch(
            &format!("{AGENTS}/{id}"),
            json!({"runtime": scripted("/etc/passwd")["runtime"]}),
        )
        .await;
    assert_eq!(
        patch.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        patch.body
    );
}

#[tokio::test]
async fn without_an_audio_dir_no_file_can_be_named() {
    let api = TestApi::start().await;
    let reply = api.post(AGENTS, scripted("greeting.wav")).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.body["error"]["details"]["fields"]["runtime.steps[1].audio"],
        "greeting.wav: audio files need [agents] audio_dir on the server"
    );
    // Text-only steps need no directory.
    let text_only = json!({
        "name": "Talker",
        "runtime": {"type": "scripted", "steps": [{"action": "say", "text": "hello"}]}
    });
    assert_eq!(
        api.post(AGENTS, text_only).await.status,
        StatusCode::CREATED
    );
}
