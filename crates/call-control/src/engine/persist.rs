//! Writes the records of every call of the engine, each before its webhook, in batches.
//!
//! One writer task serves all calls. A call task hands it snapshots of its record and
//! goes on: neither the call task nor its timers ever wait on the database. The writer
//! takes whatever has queued up (up to [`MAX_BATCH`] snapshots), keeps only the newest
//! snapshot of each call, and writes them: the calls still running in one transaction,
//! each ending call in its own (its record, its charge and the release of its reservation
//! together). Then it queues the webhook events of the batch, in order, each with the
//! snapshot it announces: a status is persisted before it is reported. Under load the
//! batches grow by themselves, so the database sees fewer, larger transactions just when
//! it is busiest.
//!
//! Nothing is dropped because the database is slow or away: a write or a webhook that
//! fails with [`StoreError::is_unavailable`] is retried, with a growing pause, until it
//! succeeds, and the wait is logged (a warning per failed attempt, an error once it has
//! lasted [`crate::store::retry::WAIT_REPORTED_AFTER`]). A call's writes stay in order because one task does
//! them all. Only a write the database refuses outright (a record this version cannot
//! write) is given up, loudly, and its webhook with it: a webhook must not announce what
//! is not stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn, Instrument};

use super::admission::{Ledger, REFRESH_INTERVAL};
use crate::model::Call;
use crate::store::retry::patiently;
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

/// Snapshots taken into one batch at most.
pub const MAX_BATCH: usize = 256;

struct Job {
    call: Call,
    /// A new call admitted from the ledger: stored first, holding this reservation.
    admit: Option<i64>,
    event: Option<&'static str>,
    settle: Option<i64>,
    done: Option<oneshot::Sender<()>>,
    span: tracing::Span,
}

/// The handle on the writer; clones share it, and the writer stops once every handle is
/// gone and what they queued is written.
#[derive(Clone)]
pub struct Persister {
    jobs: mpsc::UnboundedSender<Job>,
}

/// What the writer shares with the engine.
struct Writer {
    store: Store,
    webhooks: Webhooks,
    ledger: Arc<Ledger>,
}

impl Persister {
    /// Spawns the writer task; it keeps `ledger`'s usage ([`super::admission`]).
    pub fn spawn(store: Store, webhooks: Webhooks, ledger: Arc<Ledger>) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            store,
            webhooks,
            ledger,
        };
        tokio::spawn(writer.run(receiver));
        Self { jobs }
    }

    /// Queues the first record of a call the ledger admitted, holding `reserve_cents`:
    /// stored before any later snapshot of the call.
    pub fn admit(&self, call: Call, reserve_cents: i64) {
        self.queue(Job {
            call,
            admit: Some(reserve_cents),
            event: None,
            settle: None,
            done: None,
            span: tracing::Span::current(),
        });
    }

    /// Queues a snapshot: written (with `settle`, the last one of the call: settled,
    /// charging that many cents), then `event` emitted with the record; `done` fires after.
    pub fn save(
        &self,
        call: Call,
        event: Option<&'static str>,
        settle: Option<i64>,
        done: Option<oneshot::Sender<()>>,
    ) {
        self.queue(Job {
            call,
            admit: None,
            event,
            settle,
            done,
            span: tracing::Span::current(),
        });
    }

    fn queue(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            error!(call_id = %job.call.id, "call record writer gone; record not written");
        }
    }
}

/// What a batch holds for one call: its newest snapshot and what follows the write.
struct Pending {
    call: Call,
    admit: Option<i64>,
    settle: Option<i64>,
    /// The events, each with the snapshot it announces, in order.
    events: Vec<(&'static str, Call)>,
    done: Vec<oneshot::Sender<()>>,
    span: tracing::Span,
}

impl Writer {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                received = jobs.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    let pending = coalesce(batch.drain(..));
                    self.write_batch(&pending).await;
                    self.report(pending).await;
                }
                _ = refresh.tick() => self.refresh().await,
            }
        }
    }

    /// Reads every organisation's usage into the ledger (see [`super::admission`]).
    async fn refresh(&self) {
        let mark = self.ledger.refresh_mark();
        match self.store.all_org_usages().await {
            Ok(usages) => {
                self.ledger.store_answered();
                self.ledger.refresh(usages, mark);
            }
            Err(error) => {
                if error.is_unavailable() {
                    self.ledger.store_failed(&error, Instant::now());
                } else {
                    self.ledger.store_answered();
                }
                warn!(%error, "admission ledger not refreshed");
            }
        }
    }

    /// [`patiently`] with every attempt's outcome told to the ledger, which refuses new
    /// calls while the database fails for long ([`super::admission`]).
    async fn patiently<T, F, Fut>(&self, what: &'static str, attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let outcome = patiently(
            what,
            |error: &StoreError| {
                let unavailable = error.is_unavailable();
                if unavailable {
                    self.ledger.store_failed(error, Instant::now());
                }
                unavailable
            },
            attempt,
        )
        .await;
        self.ledger.store_answered();
        outcome
    }

    /// The events of the batch, in order, then its `done` signals.
    async fn report(&self, pending: Vec<Pending>) {
        for pending in pending {
            let Pending {
                events, done, span, ..
            } = pending;
            async {
                for (event, call) in events {
                    self.webhooks
                        .emit_patiently(&call.org_id, event, &call)
                        .await;
                }
            }
            .instrument(span)
            .await;
            for done in done {
                let _ = done.send(());
            }
        }
    }

    /// Writes the batch: the admitted calls first, then the running calls together, then
    /// each ending call with its charge. The calls whose record could not be written lose
    /// their events (logged).
    async fn write_batch(&self, pending: &[Pending]) {
        let store = &self.store;
        let admitted: Vec<(&Call, i64)> = pending
            .iter()
            .filter_map(|p| p.admit.map(|cents| (&p.call, cents)))
            .collect();
        if !admitted.is_empty() {
            let written = self
                .patiently("admitted calls", || store.insert_admitted_calls(&admitted))
                .await;
            match written {
                Ok(()) => {
                    for (call, cents) in &admitted {
                        self.ledger.written(&call.org_id, *cents);
                    }
                }
                Err(refused) => {
                    warn!(error = %refused, calls = admitted.len(), "batch of admitted calls refused; writing them one by one");
                    for one in &admitted {
                        let single = [*one];
                        let (call, cents) = *one;
                        match self
                            .patiently("admitted call", || store.insert_admitted_calls(&single))
                            .await
                        {
                            Ok(()) => self.ledger.written(&call.org_id, cents),
                            Err(error) => {
                                self.ledger.cancel(&call.org_id, cents);
                                error!(call_id = %call.id, %error, "admitted call not stored");
                            }
                        }
                    }
                }
            }
        }
        // The admitted calls were stored with their newest snapshot already.
        let running: Vec<&Call> = pending
            .iter()
            .filter(|p| p.settle.is_none() && p.admit.is_none())
            .map(|p| &p.call)
            .collect();
        if !running.is_empty() {
            let written = self
                .patiently("call records", || store.update_calls(&running))
                .await;
            if let Err(refused) = written {
                // One of them cannot be written: write them one by one, so the others land.
                warn!(error = %refused, calls = running.len(), "batch of call records refused; writing them one by one");
                for call in &running {
                    let one = [*call];
                    if let Err(error) = self
                        .patiently("call record", || store.update_calls(&one))
                        .await
                    {
                        error!(call_id = %call.id, %error, status = %call.status, "call record not written");
                    }
                }
            }
        }
        for entry in pending {
            let Some(cents) = entry.settle else {
                continue;
            };
            let call = &entry.call;
            let settled = self
                .patiently("ended call", || store.finish_call(call, cents))
                .instrument(entry.span.clone())
                .await;
            match settled {
                Ok(Some(settled)) => {
                    self.ledger.settled(&call.org_id, settled);
                    entry.span.in_scope(|| {
                        info!(
                            charged_cents = settled.charged_cents,
                            released_cents = settled.released_cents,
                            balance_cents = settled.balance_cents,
                            "call settled"
                        )
                    })
                }
                Ok(None) => {}
                Err(error) => {
                    error!(call_id = %call.id, %error, status = %call.status, "call record not written")
                }
            }
        }
    }
}

/// One entry per call, in the order of their first snapshot in the batch.
fn coalesce(jobs: impl Iterator<Item = Job>) -> Vec<Pending> {
    let mut pending: Vec<Pending> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for job in jobs {
        let Job {
            call,
            admit,
            event,
            settle,
            done,
            span,
        } = job;
        let slot = match index.get(&call.id) {
            Some(&slot) => slot,
            None => {
                index.insert(call.id.clone(), pending.len());
                pending.push(Pending {
                    call: call.clone(),
                    admit: None,
                    settle: None,
                    events: Vec::new(),
                    done: Vec::new(),
                    span,
                });
                pending.len() - 1
            }
        };
        let entry = &mut pending[slot];
        if let Some(event) = event {
            entry.events.push((event, call.clone()));
        }
        entry.call = call;
        entry.settle = settle.or(entry.settle);
        entry.admit = admit.or(entry.admit);
        entry.done.extend(done);
    }
    pending
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::events;
    use crate::model::{CallDirection, CallStatus};
    use crate::store::test_support::{call, temp_store, webhook};
    use crate::webhooks::DispatchConfig;

    fn job(call: &Call, event: Option<&'static str>, settle: Option<i64>) -> Job {
        Job {
            call: call.clone(),
            admit: None,
            event,
            settle,
            done: None,
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn a_batch_keeps_each_calls_newest_snapshot_and_every_event_with_its_own() {
        let mut a = call("org_a", "agt_1", CallDirection::Inbound, 0);
        let mut b = call("org_a", "agt_1", CallDirection::Outbound, 1);
        let mut jobs = vec![job(&a, None, None)];
        b.status = CallStatus::Ringing;
        jobs.push(job(&b, Some(events::CALL_RINGING), None));
        a.status = CallStatus::InProgress;
        jobs.push(job(&a, Some(events::CALL_ANSWERED), None));
        a.status = CallStatus::Ended;
        jobs.push(job(&a, Some(events::CALL_ENDED), Some(12)));
        let pending = coalesce(jobs.into_iter());
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].call.id, a.id, "in the order calls first appear");
        assert_eq!(pending[0].call.status, CallStatus::Ended);
        assert_eq!(pending[0].settle, Some(12));
        let announced: Vec<_> = pending[0]
            .events
            .iter()
            .map(|(event, call)| (*event, call.status))
            .collect();
        assert_eq!(
            announced,
            [
                (events::CALL_ANSWERED, CallStatus::InProgress),
                (events::CALL_ENDED, CallStatus::Ended)
            ]
        );
        assert_eq!(pending[1].call.status, CallStatus::Ringing);
        assert_eq!(pending[1].settle, None);
    }

    #[tokio::test]
    async fn a_store_that_cannot_serve_holds_writes_back_and_loses_nothing() {
        let (store, dir) = temp_store().await;
        let mut record = call("org_a", "agt_1", CallDirection::Inbound, 0);
        store.insert_call(&record).await.expect("call");
        let hook = webhook("org_a", &[events::CALL_RINGING, events::CALL_ANSWERED], 0);
        store.insert_webhook(&hook).await.expect("webhook");

        // The writer's store has one connection, which the test holds.
        let starved = dir.starved(Duration::from_millis(50)).await;
        let held = starved.pool().acquire().await.expect("the one connection");
        let dispatch = DispatchConfig {
            // Nothing is delivered in this test: the outbox is what is checked.
            base_delay: Duration::from_secs(3600),
            ..DispatchConfig::from_config(&crate::config::Config::default())
        };
        let persister = Persister::spawn(
            starved.clone(),
            Webhooks::start_with(starved.clone(), dispatch),
            Arc::default(),
        );
        record.status = CallStatus::Ringing;
        persister.save(record.clone(), Some(events::CALL_RINGING), None, None);
        record.status = CallStatus::InProgress;
        let (done, mut written) = oneshot::channel();
        persister.save(
            record.clone(),
            Some(events::CALL_ANSWERED),
            None,
            Some(done),
        );

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(written.try_recv().is_err(), "nothing written yet");
        let stored = store.get_call("org_a", &record.id).await.expect("read");
        assert_eq!(stored.status, CallStatus::Queued);

        drop(held);
        tokio::time::timeout(Duration::from_secs(10), written)
            .await
            .expect("written once the store answers")
            .expect("done");
        let stored = store.get_call("org_a", &record.id).await.expect("read");
        assert_eq!(stored.status, CallStatus::InProgress);
        let queued: Vec<(String, String)> = sqlx::query_as(&crate::store::numbered(
            "SELECT event, payload FROM webhook_outbox WHERE webhook_id = ? \
                 ORDER BY created_at, id",
        ))
        .bind(&hook.id)
        .fetch_all(store.pool())
        .await
        .expect("outbox");
        let announced: Vec<(String, String)> = queued
            .into_iter()
            .map(|(event, payload)| {
                let payload: serde_json::Value = serde_json::from_str(&payload).expect("JSON");
                (
                    event,
                    payload["data"]["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            announced,
            [
                (events::CALL_RINGING.to_owned(), "ringing".to_owned()),
                (events::CALL_ANSWERED.to_owned(), "in_progress".to_owned()),
            ],
            "every event, in order, each with the status it announces"
        );
    }
}
