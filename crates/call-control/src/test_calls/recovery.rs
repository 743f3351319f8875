//! Runs that cannot finish are failed with a reason and their batches
//! closed, so that nothing stays in flight forever: at shutdown, the runs
//! this process stops ([`SHUTDOWN_REASON`]); at start, whatever a previous
//! process left queued or in progress because it crashed ([`RESTART_REASON`]).

use tracing::info;

use crate::model::events;
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

/// The reason recorded on runs a restart found unfinished.
pub const RESTART_REASON: &str = "service_restart: the service restarted before the run finished";

/// The reason recorded on runs a graceful shutdown stopped.
pub const SHUTDOWN_REASON: &str = "service_shutdown: the service stopped before the run finished";

/// The reason recorded on batches a restart found with runs unfinished.
pub const BATCH_RESTART_REASON: &str =
    "service_restart: the service restarted before every run of the batch finished";

/// The reason recorded on batches a graceful shutdown cut short.
pub const BATCH_SHUTDOWN_REASON: &str =
    "service_shutdown: the service stopped before every run of the batch finished";

/// Fails every unfinished run of node `node_id` with [`RESTART_REASON`], closes their
/// batches (failed ones with [`BATCH_RESTART_REASON`]), and emits `test_call.completed` / `test_call_batch.completed`
/// for what changed. Call at start, before any run is launched.
pub async fn recover(store: &Store, webhooks: &Webhooks, node_id: &str) -> Result<(), StoreError> {
    fail_unfinished(
        store,
        webhooks,
        node_id,
        RESTART_REASON,
        BATCH_RESTART_REASON,
    )
    .await
}

/// Like [`recover`] with [`SHUTDOWN_REASON`] and [`BATCH_SHUTDOWN_REASON`]: call at shutdown once the
/// runner has stopped its runs, while the webhook outbox still takes rows
/// (their deliveries go out after the next start).
pub async fn fail_interrupted(
    store: &Store,
    webhooks: &Webhooks,
    node_id: &str,
) -> Result<(), StoreError> {
    fail_unfinished(
        store,
        webhooks,
        node_id,
        SHUTDOWN_REASON,
        BATCH_SHUTDOWN_REASON,
    )
    .await
}

async fn fail_unfinished(
    store: &Store,
    webhooks: &Webhooks,
    node_id: &str,
    reason: &str,
    batch_reason: &str,
) -> Result<(), StoreError> {
    let recovered = store
        .fail_unfinished_test_runs(node_id, reason, batch_reason)
        .await?;
    if recovered.runs.is_empty() && recovered.batches.is_empty() {
        return Ok(());
    }
    info!(
        runs = recovered.runs.len(),
        batches = recovered.batches.len(),
        reason,
        "unfinished test runs failed"
    );
    for run in &recovered.runs {
        emit(webhooks, &run.org_id, events::TEST_CALL_COMPLETED, run).await;
    }
    for batch in &recovered.batches {
        emit(
            webhooks,
            &batch.org_id,
            events::TEST_CALL_BATCH_COMPLETED,
            batch,
        )
        .await;
    }
    Ok(())
}

async fn emit<T: serde::Serialize>(webhooks: &Webhooks, org_id: &str, event: &str, object: &T) {
    webhooks.emit_patiently(org_id, event, object).await;
}
