//! Writes a call's records in order, each before its webhook.
//!
//! One small task per call takes snapshots of the record from the call
//! task, so that the call task (and its timers) never waits on the
//! database. For each snapshot it writes the record (retrying a failed
//! write a few times), then emits its webhook event: a status is persisted
//! before it is reported. The last snapshot also settles the call's credit
//! (charge for the time used, release of its reservation) in the same
//! transaction as the record.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn, Instrument};

use crate::model::Call;
use crate::store::Store;
use crate::webhooks::Webhooks;

/// Attempts of one record write.
const WRITE_ATTEMPTS: u32 = 5;

struct Job {
    call: Call,
    event: Option<&'static str>,
    settle: Option<i64>,
    done: Option<oneshot::Sender<()>>,
}

/// The writer of one call's records.
pub struct Persister {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Persister {
    /// Spawns the writer task.
    pub fn spawn(store: Store, webhooks: Webhooks) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(store, webhooks, receiver).in_current_span());
        Self { jobs }
    }

    /// Queues a snapshot: written (with `settle`, the last one: settled,
    /// charging that many cents), then `event` emitted with the record; `done`
    /// fires after.
    pub fn save(
        &self,
        call: Call,
        event: Option<&'static str>,
        settle: Option<i64>,
        done: Option<oneshot::Sender<()>>,
    ) {
        let job = Job {
            call,
            event,
            settle,
            done,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            error!(call_id = %job.call.id, "call record writer gone; record not written");
        }
    }
}

async fn run(store: Store, webhooks: Webhooks, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let call = &job.call;
        if !write(&store, call, job.settle).await {
            // Not reported either: a webhook must not announce what is not stored.
            continue;
        }
        if let Some(event) = job.event {
            match serde_json::to_value(call) {
                Ok(data) => {
                    if let Err(error) = webhooks.emit(&call.org_id, event, data).await {
                        warn!(call_id = %call.id, %error, event, "webhook not queued");
                    }
                }
                Err(error) => warn!(call_id = %call.id, %error, "call not serializable"),
            }
        }
        if let Some(done) = job.done {
            let _ = done.send(());
        }
    }
}

async fn write(store: &Store, call: &Call, settle: Option<i64>) -> bool {
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=WRITE_ATTEMPTS {
        let written = match settle {
            None => store.update_call(call).await,
            Some(cents) => store.finish_call(call, cents).await.map(|settled| {
                if let Some(settled) = settled {
                    info!(
                        charged_cents = settled.charged_cents,
                        released_cents = settled.released_cents,
                        balance_cents = settled.balance_cents,
                        "call settled"
                    );
                }
            }),
        };
        match written {
            Ok(()) => return true,
            Err(error) if attempt < WRITE_ATTEMPTS => {
                warn!(call_id = %call.id, %error, attempt, "call record write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                error!(call_id = %call.id, %error, status = %call.status, "call record not written");
            }
        }
    }
    false
}
