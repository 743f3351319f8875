//! The admission ledger: inbound calls are admitted from memory, so an INVITE is answered
//! without waiting on the database.
//!
//! The ledger holds each organisation's usage (balance, what its live calls hold, how many
//! are live) as the database last showed it, plus what this node admitted since and has
//! not written yet. An inbound call is admitted when the balance, less both holds, covers
//! its reservation and the organisation is under its cap: the same rule as
//! [`Store::admit_call`], which the API's outbound calls still go through. The admitted
//! call is then stored by the record writer ([`super::persist`]) like its later states.
//! An outbound call the API admitted in the database counts here at once, as unwritten,
//! until a refresh that began after it read it back ([`Ledger::admitted_by_api`]).
//!
//! Before any of that, a call takes one of the node's own slots ([`NodeCapacity`], `[node]
//! max_calls`): a node at its most calls refuses the next one at once (SIP 503 with
//! `Retry-After`, so a load balancer tries another node; API 503 `unavailable`), whoever
//! its organisation.
//!
//! Only the writer task changes the usage: after it stored admitted calls (their holds
//! move from "unwritten" into the usage), after it settled a call (the charge and release
//! it reports), and on its refresh every [`REFRESH_INTERVAL`], which reads every cached
//! organisation's usage from the database: what other nodes, the API and the heartbeat's
//! grown holds did. Because one task does all three, a refresh never misses a write of
//! this node nor counts it twice. Across nodes the view is up to one refresh old, so two
//! nodes can both admit against the same last cents; the heartbeat then ends whichever
//! call the balance cannot carry into its next minute (`insufficient_credits`).
//!
//! The ledger also knows whether the database answers: the writer tells it after each of
//! its attempts. A blip (a pool timeout under load) changes nothing, since the writer
//! retries until the records land; but a database that has failed every attempt for
//! [`FAILING_REFUSES_AFTER`], or a store that was closed, refuses new calls with 503 and
//! `Retry-After` ([`StoreError::Failing`]): a call answered then could not be recorded
//! or billed for as long as the outage lasts, and the carrier can try another node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Admission, CallAdmission, OrgUsage, Settlement, Store, StoreError};

/// How often the writer reads the cached organisations' usage from the database.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// How long the database must have failed every attempt before new calls are refused.
pub const FAILING_REFUSES_AFTER: Duration = Duration::from_secs(5);

/// One organisation in the ledger.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// As the database showed it at the last refresh, with this node's writes since.
    usage: OrgUsage,
    /// Admitted here and not written yet.
    unwritten_cents: i64,
    unwritten_calls: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Ledger {
    orgs: Mutex<HashMap<String, Entry>>,
    /// Calls this node's API admitted in the database (outbound), held as unwritten until a
    /// refresh that began after them: (sequence, organisation, reservation).
    api_admitted: Mutex<Vec<(u64, String, i64)>>,
    /// Numbers [`Ledger::api_admitted`]; read by a refresh before it reads the database.
    api_sequence: std::sync::atomic::AtomicU64,
    /// Since when every attempt of the writer failed, and the last failure.
    failing: Mutex<Option<(Instant, String)>>,
}

impl Ledger {
    fn orgs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.orgs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a call of `org_id` asking `admission` from memory, holding its reservation
    /// as unwritten; `None` when the organisation is not in the ledger yet
    /// ([`Ledger::admit`] reads it then).
    fn try_admit(&self, org_id: &str, admission: Admission) -> Option<CallAdmission> {
        let mut orgs = self.orgs();
        let entry = orgs.get_mut(org_id)?;
        let live = entry.usage.live_calls + entry.unwritten_calls;
        let reserved = entry.usage.reserved_cents + entry.unwritten_cents;
        if let Some(limit) = admission.max_live_calls {
            if live >= u64::from(limit) {
                return Some(CallAdmission::ConcurrentCallLimit {
                    live_calls: live,
                    limit,
                });
            }
        }
        if entry.usage.balance_cents - reserved < admission.reserve_cents {
            return Some(CallAdmission::InsufficientCredits {
                balance_cents: entry.usage.balance_cents,
                reserved_cents: reserved,
                required_cents: admission.reserve_cents,
            });
        }
        entry.unwritten_cents += admission.reserve_cents;
        entry.unwritten_calls += 1;
        Some(CallAdmission::Admitted)
    }

    /// Admits a call of `org_id` (see the module docs). Reads the organisation's usage
    /// from the database only the first time it calls ([`StoreError::NotFound`] for an
    /// unknown organisation).
    pub async fn admit(
        &self,
        store: &Store,
        org_id: &str,
        admission: Admission,
    ) -> Result<CallAdmission, StoreError> {
        self.store_answers(store, Instant::now())?;
        if let Some(decided) = self.try_admit(org_id, admission) {
            return Ok(decided);
        }
        let usage = store.org_usage(org_id).await?;
        self.orgs().entry(org_id.to_owned()).or_insert(Entry {
            usage,
            unwritten_cents: 0,
            unwritten_calls: 0,
        });
        Ok(self
            .try_admit(org_id, admission)
            .expect("the organisation was just added"))
    }

    /// `Ok` unless `store` was closed or has been failing for [`FAILING_REFUSES_AFTER`] at
    /// `now` (see the module docs).
    fn store_answers(&self, store: &Store, now: Instant) -> Result<(), StoreError> {
        if store.is_closed() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match &*failing {
            Some((since, last_error))
                if now.saturating_duration_since(*since) >= FAILING_REFUSES_AFTER =>
            {
                Err(StoreError::Failing {
                    seconds: now.saturating_duration_since(*since).as_secs(),
                    last_error: last_error.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The writer's attempt at `now` failed with `error`, a store that cannot serve now.
    pub(super) fn store_failed(&self, error: &StoreError, now: Instant) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *failing {
            Some((_, last_error)) => *last_error = error.to_string(),
            None => *failing = Some((now, error.to_string())),
        }
    }

    /// The database answered one of the writer's attempts.
    pub(super) fn store_answered(&self) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether `org_id` is in the ledger (tests wait for the writer's first refresh).
    #[cfg(test)]
    pub(super) fn knows(&self, org_id: &str) -> bool {
        self.orgs().contains_key(org_id)
    }

    /// Takes back an admission that will not be written (the call could not start).
    pub fn cancel(&self, org_id: &str, reserve_cents: i64) {
        if let Some(entry) = self.orgs().get_mut(org_id) {
            entry.unwritten_cents -= reserve_cents;
            entry.unwritten_calls = entry.unwritten_calls.saturating_sub(1);
        }
    }

    /// This node's API stored an admitted call of `org_id` itself ([`Store::admit_call`],
    /// outbound): it is held as unwritten, so that the next inbound call counts it, until
    /// a refresh that began after it has read it from the database.
    pub fn admitted_by_api(&self, org_id: &str, reserve_cents: i64) {
        let mut orgs = self.orgs();
        let Some(entry) = orgs.get_mut(org_id) else {
            // Not cached: the organisation's first inbound call reads its usage.
            return;
        };
        entry.unwritten_cents += reserve_cents;
        entry.unwritten_calls += 1;
        let sequence = self.api_sequence.fetch_add(1, Ordering::AcqRel);
        self.api_admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((sequence, org_id.to_owned(), reserve_cents));
    }

    /// Where the API's admissions stand: a refresh takes this before it reads the database
    /// and passes it to [`Ledger::refresh`].
    pub(super) fn refresh_mark(&self) -> u64 {
        self.api_sequence.load(Ordering::Acquire)
    }

    /// The writer stored an admitted call: its hold is in the usage now.
    pub(super) fn written(&self, org_id: &str, reserve_cents: i64) {
        if let Some(entry) = self.orgs().get_mut(org_id) {
            entry.unwritten_cents -= reserve_cents;
            entry.unwritten_calls = entry.unwritten_calls.saturating_sub(1);
            entry.usage.reserved_cents += reserve_cents;
            entry.usage.live_calls += 1;
        }
    }

    /// The writer settled a call of `org_id` that held a live-call slot.
    pub(super) fn settled(&self, org_id: &str, settlement: Settlement) {
        if let Some(entry) = self.orgs().get_mut(org_id) {
            entry.usage.balance_cents = settlement.balance_cents;
            entry.usage.reserved_cents -= settlement.released_cents;
            entry.usage.live_calls = entry.usage.live_calls.saturating_sub(1);
        }
    }

    /// The usage of every organisation as the database shows it now (the writer's
    /// refresh, read after [`Ledger::refresh_mark`] gave `mark`): cached ones are replaced,
    /// new ones added, unwritten holds kept but for the API's admissions before `mark`,
    /// which the database showed.
    pub(super) fn refresh(&self, usages: Vec<(String, OrgUsage)>, mark: u64) {
        let mut orgs = self.orgs();
        self.api_admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(sequence, org_id, cents)| {
                if *sequence >= mark {
                    return true;
                }
                if let Some(entry) = orgs.get_mut(org_id) {
                    entry.unwritten_cents -= cents;
                    entry.unwritten_calls = entry.unwritten_calls.saturating_sub(1);
                }
                false
            });
        for (org_id, usage) in usages {
            orgs.entry(org_id)
                .and_modify(|entry| entry.usage = usage)
                .or_insert(Entry {
                    usage,
                    unwritten_cents: 0,
                    unwritten_calls: 0,
                });
        }
    }
}

/// The node's slots for live calls, inbound and outbound: at most `[node] max_calls` taken
/// at once (unlimited when 0). A call holds its [`Slot`] from admission until its task
/// ends; dropping the slot frees it.
#[derive(Debug)]
pub struct NodeCapacity {
    limit: Option<u32>,
    taken: AtomicU32,
}

/// A refusal of [`NodeCapacity::try_take`]: every slot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtCapacity {
    /// `[node] max_calls`.
    pub limit: u32,
}

impl NodeCapacity {
    /// Slots for at most `limit` calls (`None`: no limit, only counted).
    pub fn new(limit: Option<u32>) -> Arc<NodeCapacity> {
        Arc::new(NodeCapacity {
            limit,
            taken: AtomicU32::new(0),
        })
    }

    /// Takes a slot, or says that none is free.
    pub fn try_take(self: &Arc<Self>) -> Result<Slot, AtCapacity> {
        let limit = self.limit.unwrap_or(u32::MAX);
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < limit).then_some(taken + 1)
            })
            .map(|_| Slot(Arc::clone(self)))
            .map_err(|_| AtCapacity { limit })
    }

    /// Whether every slot is taken (a new call would be refused now).
    pub fn is_full(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.taken.load(Ordering::Acquire) >= limit)
    }

    /// Slots taken.
    pub fn taken(&self) -> u32 {
        self.taken.load(Ordering::Acquire)
    }

    /// `[node] max_calls` (`None`: no limit).
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }
}

/// One call's slot of [`NodeCapacity`], freed when dropped.
#[derive(Debug)]
pub struct Slot(Arc<NodeCapacity>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_slots_are_taken_up_to_the_limit_and_freed_when_dropped() {
        let capacity = NodeCapacity::new(Some(2));
        let first = capacity.try_take().expect("one of two");
        let second = capacity.try_take().expect("two of two");
        assert!(capacity.is_full());
        assert_eq!(capacity.try_take().err(), Some(AtCapacity { limit: 2 }));
        assert_eq!(capacity.taken(), 2, "a refusal takes nothing");
        drop(first);
        assert!(!capacity.is_full());
        let third = capacity.try_take().expect("a freed slot");
        drop((second, third));
        assert_eq!(capacity.taken(), 0);

        let unlimited = NodeCapacity::new(None);
        let slots: Vec<Slot> = (0..1000)
            .map(|_| unlimited.try_take().expect("no limit"))
            .collect();
        assert!(!unlimited.is_full());
        assert_eq!(unlimited.taken(), 1000);
        drop(slots);
        assert_eq!(unlimited.taken(), 0);
    }

    fn usage(balance: i64, reserved: i64, live: u64) -> OrgUsage {
        OrgUsage {
            balance_cents: balance,
            reserved_cents: reserved,
            live_calls: live,
        }
    }

    const ASK: Admission = Admission {
        reserve_cents: 10,
        max_live_calls: Some(3),
    };

    #[test]
    fn the_apis_admissions_count_until_a_refresh_that_began_after_them() {
        let ledger = Ledger::default();
        ledger.admitted_by_api("org", 10);
        ledger.refresh(
            vec![("org".into(), usage(100, 0, 0))],
            ledger.refresh_mark(),
        );
        assert_eq!(ledger.try_admit("org", ASK), Some(CallAdmission::Admitted));
        ledger.written("org", 10);
        // Two outbound calls through the API: with the inbound one, the cap of 3 is full.
        ledger.admitted_by_api("org", 10);
        ledger.admitted_by_api("org", 10);
        assert!(matches!(
            ledger.try_admit("org", ASK),
            Some(CallAdmission::ConcurrentCallLimit {
                live_calls: 3,
                limit: 3
            })
        ));
        // A refresh that had begun before the second: the database showed the first.
        let mark = ledger.refresh_mark() - 1;
        ledger.refresh(vec![("org".into(), usage(100, 20, 2))], mark);
        assert!(matches!(
            ledger.try_admit("org", ASK),
            Some(CallAdmission::ConcurrentCallLimit {
                live_calls: 3,
                limit: 3
            })
        ));
        // One that began after both, once the database shows all three: still 3, not 4.
        ledger.refresh(
            vec![("org".into(), usage(100, 30, 3))],
            ledger.refresh_mark(),
        );
        assert!(matches!(
            ledger.try_admit("org", ASK),
            Some(CallAdmission::ConcurrentCallLimit {
                live_calls: 3,
                limit: 3
            })
        ));
        // One of them ends: room for one.
        ledger.refresh(
            vec![("org".into(), usage(100, 20, 2))],
            ledger.refresh_mark(),
        );
        assert_eq!(ledger.try_admit("org", ASK), Some(CallAdmission::Admitted));
    }

    #[test]
    fn unwritten_admissions_count_until_written_and_a_refresh_keeps_them() {
        let ledger = Ledger::default();
        assert_eq!(ledger.try_admit("org", ASK), None, "not loaded");
        ledger.refresh(vec![("org".into(), usage(35, 0, 0))], ledger.refresh_mark());
        assert_eq!(ledger.try_admit("org", ASK), Some(CallAdmission::Admitted));
        assert_eq!(ledger.try_admit("org", ASK), Some(CallAdmission::Admitted));
        assert_eq!(ledger.try_admit("org", ASK), Some(CallAdmission::Admitted));
        // 30 of 35 held, 3 of 3 live: the cap speaks first.
        assert!(matches!(
            ledger.try_admit("org", ASK),
            Some(CallAdmission::ConcurrentCallLimit {
                live_calls: 3,
                limit: 3
            })
        ));
        // A refresh from the database (which has none of them yet) keeps them.
        ledger.refresh(vec![("org".into(), usage(35, 0, 0))], ledger.refresh_mark());
        assert!(matches!(
            ledger.try_admit("org", ASK),
            Some(CallAdmission::ConcurrentCallLimit { .. })
        ));
        // Written, then settled: charged 4, released 10, one slot free again.
        ledger.written("org", 10);
        ledger.settled(
            "org",
            Settlement {
                charged_cents: 4,
                released_cents: 10,
                balance_cents: 31,
            },
        );
        // 31 less 20 held: 11 covers one more reservation of 10, not two.
        let uncapped = Admission {
            max_live_calls: None,
            ..ASK
        };
        assert_eq!(
            ledger.try_admit("org", uncapped),
            Some(CallAdmission::Admitted)
        );
        assert_eq!(
            ledger.try_admit("org", uncapped),
            Some(CallAdmission::InsufficientCredits {
                balance_cents: 31,
                reserved_cents: 30,
                required_cents: 10
            })
        );
        // A call that could not start gives its hold back.
        ledger.cancel("org", 10);
        assert_eq!(
            ledger.try_admit("org", uncapped),
            Some(CallAdmission::Admitted)
        );
    }

    #[tokio::test]
    async fn a_store_failing_for_a_while_or_closed_refuses_new_calls() {
        let (store, _db) = crate::store::test_support::temp_store().await;
        let ledger = Ledger::default();
        let start = Instant::now();
        assert!(ledger.store_answers(&store, start).is_ok());
        let timeout = StoreError::Database(sqlx::Error::PoolTimedOut);
        ledger.store_failed(&timeout, start);
        ledger.store_failed(&timeout, start + Duration::from_secs(2));
        // A blip: the writer retries, calls go on being admitted.
        assert!(ledger
            .store_answers(
                &store,
                start + FAILING_REFUSES_AFTER - Duration::from_millis(1)
            )
            .is_ok());
        let refused = ledger
            .store_answers(&store, start + FAILING_REFUSES_AFTER)
            .expect_err("failing for long enough");
        assert!(refused.is_unavailable(), "a 503, not a 500: {refused}");
        assert!(
            matches!(refused, StoreError::Failing { seconds: 5, .. }),
            "{refused:?}"
        );
        // One answer is enough to admit again.
        ledger.store_answered();
        assert!(ledger
            .store_answers(&store, start + Duration::from_secs(60))
            .is_ok());
        store.close().await;
        let closed = ledger.store_answers(&store, start).expect_err("closed");
        assert!(closed.is_unavailable(), "{closed}");
    }
}
