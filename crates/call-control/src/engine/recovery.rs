//! Calls that no process runs any more are ended and settled: at start, the calls this
//! node left unfinished when it stopped without ending them (a crash, a kill), and, on a
//! cluster, the calls of a node that was lost ([`crate::lease`]).

use tracing::{info, warn};

use super::billing;
use super::EngineError;
use crate::model::{events, CallOutcome, CallStatus};
use crate::store::{Store, StoreError, UnfinishedCall};
use crate::webhooks::Webhooks;

/// Why a call that no process runs is being ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// The node that ran it restarted: `ended` if it had been answered, else `failed`;
    /// `end_reason` `service_restart`.
    Restart,
    /// The node that ran it was lost (its lease expired): `failed`, `end_reason`
    /// `node_lost`.
    NodeLost,
}

impl Interruption {
    fn end_reason(self) -> &'static str {
        match self {
            Interruption::Restart => "service_restart",
            Interruption::NodeLost => "node_lost",
        }
    }
}

/// Records every call node `node_id` left unfinished (and those recorded before nodes had
/// ids) as over, [`Interruption::Restart`]: the start of the node that ran them.
pub async fn recover(
    store: &Store,
    webhooks: &Webhooks,
    recordings_dir: &std::path::Path,
    per_minute_cents: i64,
    node_id: &str,
) -> Result<(), EngineError> {
    let why = Interruption::Restart;
    end_node_calls(
        store,
        webhooks,
        recordings_dir,
        per_minute_cents,
        node_id,
        why,
    )
    .await?;
    Ok(())
}

/// Records every unfinished call of node `node_id` as over, ended as `why` says (on a
/// restart also those recorded before nodes had ids, which the starting node takes as
/// its own); returns how many there were. See [`end_interrupted`].
pub async fn end_node_calls(
    store: &Store,
    webhooks: &Webhooks,
    recordings_dir: &std::path::Path,
    per_minute_cents: i64,
    node_id: &str,
    why: Interruption,
) -> Result<usize, StoreError> {
    let unfinished = store
        .unfinished_calls(node_id, why == Interruption::Restart)
        .await?;
    let count = unfinished.len();
    match why {
        Interruption::Restart if count > 0 => {
            info!(
                calls = count,
                "recording calls left unfinished by the last run"
            );
        }
        Interruption::Restart => {}
        Interruption::NodeLost => {
            warn!(
                node_id,
                calls = count,
                "node lost (its lease expired): ending its calls"
            );
        }
    }
    end_interrupted(
        store,
        webhooks,
        recordings_dir,
        per_minute_cents,
        unfinished,
        why,
    )
    .await?;
    Ok(count)
}

/// Records each of `unfinished` as over, outcome `error`, with the end `why` gives, and
/// reports it (`call.ended`). A call whose end was already decided (a CANCEL of ours was
/// out) keeps that end.
///
/// The call ends where it was last known alive ([`billing::interrupted_end`]: its last
/// heartbeat), not now; it is charged for the time it talked until then and its
/// reservation released. A recording that was cut off gets its WAV header finalized and
/// is served (an empty one is removed), when it is in `recordings_dir`.
async fn end_interrupted(
    store: &Store,
    webhooks: &Webhooks,
    recordings_dir: &std::path::Path,
    per_minute_cents: i64,
    unfinished: Vec<UnfinishedCall>,
    why: Interruption,
) -> Result<(), StoreError> {
    for unfinished in unfinished {
        let mut call = unfinished.call;
        if !call.status.is_terminal() {
            call.status = match why {
                Interruption::Restart if call.answered_at.is_some() => CallStatus::Ended,
                Interruption::Restart | Interruption::NodeLost => CallStatus::Failed,
            };
            call.outcome = Some(CallOutcome::Error);
            call.end_reason = Some(why.end_reason().to_owned());
        }
        let ended_at = billing::interrupted_end(&call, unfinished.last_seen_at);
        let talked = billing::talked(&call, ended_at);
        call.ended_at = Some(ended_at);
        call.duration_seconds = Some(talked.as_millis() as f64 / 1000.0);
        if call.recording_url.is_none() {
            call.recording_url = recover_recording(recordings_dir, &call.id).await;
        }
        let charge = billing::charge_cents(call.answered_at.is_some(), talked, per_minute_cents);
        if let Some(settled) = store.finish_call(&call, charge).await? {
            info!(call_id = %call.id, duration_s = talked.as_secs_f64(),
                charged_cents = settled.charged_cents, end_reason = why.end_reason(),
                "interrupted call settled");
        }
        webhooks
            .emit_patiently(&call.org_id, events::CALL_ENDED, &call)
            .await;
    }
    Ok(())
}

/// The `recording_url` of call `call_id` whose recording a crash cut off, once its WAV
/// header is finalized; `None` (and the file removed) when it holds no audio or cannot be
/// made whole, or when there is no file.
async fn recover_recording(dir: &std::path::Path, call_id: &str) -> Option<String> {
    let path = dir.join(format!("{call_id}.wav"));
    if !path.is_file() {
        return None;
    }
    let repairing = path.clone();
    let repaired =
        tokio::task::spawn_blocking(move || media::record::finalize_partial(repairing)).await;
    match repaired {
        Ok(Ok(summary)) if summary.frames > 0 => {
            info!(
                call_id,
                frames = summary.frames,
                "partial recording finalized"
            );
            return Some(format!("/api/public/v1/calls/{call_id}/recording"));
        }
        Ok(Ok(_)) => info!(call_id, "partial recording holds no audio; removed"),
        Ok(Err(error)) => warn!(call_id, %error, "partial recording unusable; removed"),
        Err(error) => {
            warn!(call_id, %error, "partial recording not finalized; left as it is");
            return None;
        }
    }
    if let Err(error) = std::fs::remove_file(&path) {
        warn!(call_id, %error, path = %path.display(), "partial recording not removed");
    }
    None
}
