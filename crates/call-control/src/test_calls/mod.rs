//! The test runner: executes test-call runs and batches with the test bot
//! (DESIGN.md, "REST API: test calls"; the bot is [`bot_loopback`]).
//!
//! ```text
//!  API ──launch(runs, batch, delays)──▶ TestRunner ──spawn per run──▶ run task
//!                                                                     │ in_progress
//!        sip, outbound: agent leg placed by the engine ──▶ TestBot::answer
//!        sip, inbound:  TestBot::call ──▶ engine (single-use test route) ──▶ agent
//!        bot:           agent runtime ◀── in-process ──▶ bot brain
//!                                                                     │ completed / failed
//!                    measurements (+ verdict), charge, test_call.completed,
//!                    batch counters, aggregate, test_call_batch.completed
//! ```
//!
//! Every run ends `completed` (the call happened and was measured) or
//! `failed` (`error_message` says why): a run whose call does not finish
//! within `test_calls.max_run_seconds` plus a setup margin is failed as
//! timed out, and a run the service stopped (or crashed) during is failed
//! at the next start ([`recover`]), its batch `failed`.
//!
//! The bots' media (one [`MediaEngine`] shared by every bot, started on the
//! first `sip` run) binds to 127.0.0.1 only: the bot lives on the service's
//! host and is never reachable from outside. Its ports come from the top
//! quarter of the service's RTP range, where the service's own allocator
//! (which starts at the bottom) arrives last; both allocators skip ports in
//! use, so they never share one.

mod bookkeeping;
mod in_process;
mod legs;
mod recovery;
mod sip_mode;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bot_loopback::bot::RunSpec;
use bot_loopback::netprofile::NetworkProfile;
use bot_loopback::script::{Command, Script, Speech};
use chrono::Utc;
use dashmap::DashMap;
use media::stream::{EngineConfig, MediaEngine};
use tokio::sync::{watch, Notify};
use tracing::{info, warn, Instrument};

use self::bookkeeping::{finish_run, RunEnd};
pub use self::recovery::{
    fail_interrupted, recover, BATCH_RESTART_REASON, BATCH_SHUTDOWN_REASON, RESTART_REASON,
    SHUTDOWN_REASON,
};
use crate::audio_files::AudioFileError;
use crate::config::Config;
use crate::engine::CallEngine;
use crate::model::{TestCallBatch, TestCallRun, TestMode, TestRunStatus};
use crate::store::Store;
use crate::webhooks::Webhooks;

/// How long setup (bot start, INVITE, ringing) may take on top of
/// `test_calls.max_run_seconds` before a run is failed as timed out.
const SETUP_MARGIN: Duration = Duration::from_secs(45);

/// How long the bot waits for the agent's INVITE, or for its own to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for run tasks to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Executes test-call runs. Cheap to clone; held in the API state.
#[derive(Clone)]
pub struct TestRunner {
    inner: Arc<Inner>,
}

/// What every run task shares.
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) engine: CallEngine,
    pub(crate) webhooks: Webhooks,
    pub(crate) config: Arc<Config>,
    bot_media: Mutex<Option<MediaEngine>>,
    /// One lock per batch with runs ending: their bookkeeping takes turns.
    batch_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    stop: watch::Sender<bool>,
    stopping: AtomicBool,
    running: AtomicUsize,
    idle: Notify,
}

impl std::fmt::Debug for TestRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRunner")
            .field("running", &self.inner.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TestRunner {
    /// A runner placing its calls through `engine`, recording in `store`
    /// and reporting through `webhooks`.
    pub fn new(
        store: Store,
        engine: CallEngine,
        webhooks: Webhooks,
        config: Arc<Config>,
    ) -> TestRunner {
        let (stop, _) = watch::channel(false);
        TestRunner {
            inner: Arc::new(Inner {
                store,
                engine,
                webhooks,
                config,
                bot_media: Mutex::new(None),
                batch_locks: DashMap::new(),
                stop,
                stopping: AtomicBool::new(false),
                running: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Starts executing runs already stored `queued` (status moves to
    /// `in_progress`, then `completed`/`failed`; the batch counters and
    /// webhooks are updated by the runner). `delays[i]` is when run `i`
    /// starts (stagger; missing entries start at once); returns at once.
    pub fn launch(
        &self,
        runs: Vec<TestCallRun>,
        batch: Option<TestCallBatch>,
        delays: Vec<Duration>,
    ) {
        let batch_id = batch.map(|batch| batch.id);
        for (index, run) in runs.into_iter().enumerate() {
            let delay = delays.get(index).copied().unwrap_or_default();
            let mut run = run;
            if run.batch_id.is_none() {
                run.batch_id.clone_from(&batch_id);
            }
            self.spawn_run(run, delay);
        }
    }

    /// Validates a scenario prompt without running it: a script with an
    /// error is refused with the error (line number included); free text is
    /// always valid (it runs the default script).
    pub fn check_scenario(prompt: &str, audio_dir: Option<&Path>) -> Result<(), String> {
        scenario_script(prompt, audio_dir).map(|_| ())
    }

    /// Runs still executing (started or waiting for their stagger).
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Waits until no run is executing.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Stops taking runs: every run still executing or waiting for its
    /// stagger stops where it is, without recording an end (its call is hung
    /// up by the engine's shutdown). The service then fails them and their
    /// batches with [`fail_interrupted`]; if it cannot (a crash, a store
    /// error), [`recover`] does at the next start. Returns once every run
    /// task has stopped (or after a grace).
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.stop.send_replace(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, self.wait_idle())
            .await
            .is_err()
        {
            warn!(
                running = self.running(),
                "test runs still executing after the shutdown grace"
            );
        }
    }

    fn spawn_run(&self, run: TestCallRun, delay: Duration) {
        let inner = Arc::clone(&self.inner);
        inner.running.fetch_add(1, Ordering::AcqRel);
        let span = tracing::info_span!(
            "test_run",
            run_id = %run.id,
            batch_id = run.batch_id.as_deref().unwrap_or(""),
            mode = %run.mode,
            direction = %run.direction,
            call_id = tracing::field::Empty,
            sip_call_id = tracing::field::Empty,
        );
        tokio::spawn(
            async move {
                let mut stop = inner.stop.subscribe();
                let started = !inner.stopping.load(Ordering::Acquire)
                    && tokio::select! {
                        () = tokio::time::sleep(delay) => true,
                        _ = stop.wait_for(|stop| *stop) => false,
                    };
                if started {
                    execute(&inner, run, &mut stop).await;
                } else {
                    info!("service stopping: the run is left to restart recovery");
                }
                if inner.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inner.idle.notify_waiters();
                }
            }
            .instrument(span),
        );
    }
}

impl Inner {
    /// The lock the ending runs of batch `batch_id` take turns on.
    pub(crate) fn batch_lock(&self, batch_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.batch_locks
                .entry(batch_id.to_owned())
                .or_default()
                .value(),
        )
    }

    /// Batch `batch_id` is over: its lock is no longer needed.
    pub(crate) fn batch_over(&self, batch_id: &str) {
        self.batch_locks.remove(batch_id);
    }

    /// The media engine of the bots, started on first use.
    pub(crate) fn bot_media(&self) -> Result<MediaEngine, media::stream::EngineError> {
        let mut slot = self.bot_media.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(media) = slot.as_ref() {
            return Ok(media.clone());
        }
        let (port_min, port_max) =
            bot_port_range(self.config.rtp.port_min, self.config.rtp.port_max);
        let media = MediaEngine::start(EngineConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min,
            port_max,
            ..EngineConfig::default()
        })?;
        info!(port_min, port_max, "test bot media started");
        *slot = Some(media.clone());
        Ok(media)
    }

    /// The bot's script and settings for `run` (without a scenario prompt: the default
    /// script with its generic opening line).
    fn spec(&self, run: &TestCallRun) -> Result<RunSpec, String> {
        let scenario = scenario_script(
            run.scenario_prompt.as_deref().unwrap_or_default(),
            self.config.test_calls.audio_dir.as_deref(),
        )
        .map_err(|error| format!("invalid_scenario: {error}"))?;
        let network_profile = run
            .network_profile
            .parse::<NetworkProfile>()
            .map_err(|error| format!("invalid_network_profile: {error}"))?;
        Ok(RunSpec {
            scenario,
            network_profile,
            max_duration: self.config.test_calls.max_run(),
            answer_timeout: ANSWER_TIMEOUT,
            seed: rand::random(),
        })
    }

    /// The caller id of the agent's leg when the agent calls: one of the
    /// agent's numbers, else the bot's own number.
    pub(crate) async fn agent_caller_id(&self, run: &TestCallRun) -> String {
        match self
            .store
            .numbers_of_agent(&run.org_id, &run.agent_id)
            .await
        {
            Ok(numbers) if !numbers.is_empty() => numbers[0].number.clone(),
            Ok(_) => self.config.test_calls.bot_number.clone(),
            Err(error) => {
                warn!(%error, "numbers of the agent not readable");
                self.config.test_calls.bot_number.clone()
            }
        }
    }

    /// Stores the agent's leg on the run while it is in progress (so that
    /// the API shows it, and a restart finds it linked).
    pub(crate) async fn link_agent_leg(&self, run: &TestCallRun, call_id: &str) {
        let mut linked = run.clone();
        linked.call_id = Some(call_id.to_owned());
        linked.updated_at = Utc::now();
        if let Err(error) = self.store.update_test_run(&linked).await {
            warn!(%error, call_id, "agent leg not linked to the run");
        }
    }

    /// The longest a run may take from start to end.
    fn run_deadline(&self) -> Duration {
        self.config.test_calls.max_run() + SETUP_MARGIN
    }
}

/// The ports of the bots' media: the top quarter of the service's RTP
/// range (at least a few ports, even-aligned).
fn bot_port_range(port_min: u16, port_max: u16) -> (u16, u16) {
    let span = port_max.saturating_sub(port_min);
    let quarter = (span / 4).max(8);
    let low = port_max.saturating_sub(quarter).max(port_min);
    (low + low % 2, port_max)
}

/// Runs `run` to its end and records it.
async fn execute(inner: &Arc<Inner>, mut run: TestCallRun, stop: &mut watch::Receiver<bool>) {
    let agent = match inner.store.get_agent(&run.org_id, &run.agent_id).await {
        Ok(agent) => agent,
        Err(error) => {
            warn!(%error, "agent of the run not readable");
            return finish_run(
                inner,
                run,
                RunEnd::failed(format!("agent_unavailable: {error}")),
            )
            .await;
        }
    };
    let now = Utc::now();
    run.status = TestRunStatus::InProgress;
    run.started_at = Some(now);
    run.updated_at = now;
    match inner.store.update_test_run(&run).await {
        Ok(stored) => run = stored,
        Err(error) => {
            warn!(%error, "run not marked in progress");
            return finish_run(inner, run, RunEnd::failed(format!("store: {error}"))).await;
        }
    }
    if let Some(batch_id) = &run.batch_id {
        if let Err(error) = inner.store.mark_test_batch_started(batch_id, &now).await {
            warn!(%error, batch_id, "batch start not recorded");
        }
    }
    let spec = match inner.spec(&run) {
        Ok(spec) => spec,
        Err(message) => return finish_run(inner, run, RunEnd::failed(message)).await,
    };
    let legs = legs::Legs::default();
    let work = async {
        match run.mode {
            TestMode::Sip => sip_mode::execute(inner, &run, &agent, spec, &legs).await,
            TestMode::Bot => in_process::execute(inner, &run, &agent, spec, &legs).await,
        }
    };
    let deadline = inner.run_deadline();
    let end = tokio::select! {
        end = tokio::time::timeout(deadline, work) => match end {
            Ok(end) => end,
            Err(_) => {
                warn!(seconds = deadline.as_secs(), "test run timed out");
                legs.hang_up(&inner.engine);
                RunEnd::failed(format!(
                    "timeout: the run did not finish within {} s",
                    deadline.as_secs()
                ))
            }
        },
        _ = stop.wait_for(|stop| *stop) => {
            // The engine hangs the call up as it stops; the run stays in
            // flight in the store and the next start fails it (and its
            // batch) with the restart reason.
            info!("service stopping: the run is left to restart recovery");
            return;
        }
    };
    let end = end.with_legs(&legs);
    finish_run(inner, run, end).await;
}

/// The script of a scenario prompt with its audio files confined to
/// `audio_dir`: prompts come from API clients, so `say <file.wav>` may only
/// name a file inside the configured directory, by a plain relative path
/// (no `..`, not absolute), and the file must exist. Without an audio
/// directory, scripts speak only the shipped speech.
fn scenario_script(prompt: &str, audio_dir: Option<&Path>) -> Result<Script, String> {
    let mut script = Script::parse_or_default(prompt).map_err(|error| error.to_string())?;
    for command in &mut script.commands {
        let (Command::Say(Speech::File(path)) | Command::BargeIn(Speech::File(path))) = command
        else {
            continue;
        };
        let inside = crate::audio_files::resolve(audio_dir, path, "[test_calls] audio_dir")
            .map_err(|error| match error {
                AudioFileError::NoDirectory { .. } => {
                    format!("{error}; say text to use the shipped speech")
                }
                other => other.to_string(),
            })?;
        *path = inside;
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_play_audio_files_only_from_inside_the_audio_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("hello.wav"), b"RIFF").expect("write");
        let script = |text: &str| scenario_script(text, Some(dir.path()));

        let resolved = script("say hello.wav\nhangup").expect("file inside the dir");
        assert_eq!(
            resolved.audio_files(),
            vec![&dir.path().join("hello.wav")],
            "resolved against the audio dir"
        );
        for escape in [
            "say ../hello.wav",
            "say /etc/passwd.wav",
            "barge_in ./hello.wav",
        ] {
            let error = script(escape).expect_err(escape);
            assert!(error.contains("relative path inside"), "{escape}: {error}");
        }
        let error = script("say missing.wav").expect_err("missing file");
        assert!(error.contains("no such file"), "{error}");
        let error = scenario_script("say hello.wav", None).expect_err("no audio dir");
        assert!(error.contains("audio_dir"), "{error}");
        assert!(scenario_script("say hello there\nhangup", None).is_ok());
    }

    #[test]
    fn bot_ports_are_the_top_quarter_of_the_rtp_range() {
        assert_eq!(bot_port_range(20000, 30000), (27500, 30000));
        assert_eq!(bot_port_range(40000, 40049), (40038, 40049));
        let (low, high) = bot_port_range(5000, 5002);
        assert!(low >= 5000 && high == 5002 && low % 2 == 0);
    }

    #[test]
    fn scenarios_are_checked_without_running() {
        assert!(TestRunner::check_scenario("Hi, I would like to book a table.", None).is_ok());
        assert!(TestRunner::check_scenario("say hello\nwait 1s\nhangup", None).is_ok());
        let error = TestRunner::check_scenario("say hello\nwait forever\nhangup", None)
            .expect_err("bad wait");
        assert!(error.contains('2'), "names the line: {error}");
    }
}
