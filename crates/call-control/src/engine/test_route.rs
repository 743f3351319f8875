//! Single-use inbound routes for test calls.
//!
//! An inbound test run has the test bot call the agent through the
//! service's own SIP listener. The bot is not a trunk and the agent may
//! have no number on one, so the run registers a route first: an
//! unguessable token that the bot dials as the Request-URI user
//! (`sip:TOKEN@host:port`). An INVITE whose user is a registered token is
//! taken by that route exactly once and answered for the route's agent
//! through the normal inbound path; a token that was used, expired or never
//! registered is just an unknown number (404), so the trunk rules stay
//! whole for everything else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rand::Rng;
use tokio::sync::oneshot;

/// How long a registered route waits for its INVITE by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Who an inbound test call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRoute {
    /// The organisation of the run.
    pub org_id: String,
    /// The agent that answers.
    pub agent_id: String,
    /// The caller's number recorded on the agent's leg (the bot's).
    pub from_number: String,
    /// The called number recorded on the agent's leg.
    pub to_number: String,
    /// The test-call run (`tcr_...`), for logs.
    pub run_id: String,
}

/// A new route token for `run_id`: the run id and 32 random hex digits
/// (128 bits), usable as a SIP URI user.
pub fn new_token(run_id: &str) -> String {
    let random: u128 = rand::thread_rng().gen();
    format!("{run_id}_{random:032x}")
}

struct Pending {
    serial: u64,
    route: TestRoute,
    created: oneshot::Sender<String>,
}

/// The registered routes, by token.
#[derive(Default, Clone)]
pub(crate) struct TestRoutes {
    pending: Arc<DashMap<String, Pending>>,
    serial: Arc<AtomicU64>,
}

impl TestRoutes {
    /// Registers `token` for `route` for `ttl`; the receiver gets the id of
    /// the agent's call record once the INVITE is accepted, or an error when
    /// the route expires unused (or is replaced by a later registration of
    /// the same token).
    pub(crate) fn expect(
        &self,
        token: String,
        route: TestRoute,
        ttl: Duration,
    ) -> oneshot::Receiver<String> {
        let (created, receiver) = oneshot::channel();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(
            token.clone(),
            Pending {
                serial,
                route,
                created,
            },
        );
        let pending = Arc::downgrade(&self.pending);
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            if let Some(pending) = pending.upgrade() {
                // Dropping the entry drops its sender: the receiver learns
                // that no call came.
                pending.remove_if(&token, |_, entry| entry.serial == serial);
            }
        });
        receiver
    }

    /// Takes the route registered for the Request-URI user `user`, if any
    /// (once: a second INVITE with the same token finds nothing).
    pub(crate) fn take(&self, user: &str) -> Option<(TestRoute, oneshot::Sender<String>)> {
        self.pending
            .remove(user)
            .map(|(_, entry)| (entry.route, entry.created))
    }

    /// Routes waiting for their INVITE.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> TestRoute {
        TestRoute {
            org_id: "org_1".into(),
            agent_id: "agt_1".into(),
            from_number: "+15550100000".into(),
            to_number: "+15550100001".into(),
            run_id: "tcr_1".into(),
        }
    }

    #[test]
    fn tokens_carry_the_run_and_128_random_bits() {
        let a = new_token("tcr_abc");
        let b = new_token("tcr_abc");
        assert!(a.starts_with("tcr_abc_"));
        assert_eq!(a.len(), "tcr_abc_".len() + 32);
        assert!(a["tcr_abc_".len()..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_route_is_taken_once() {
        let routes = TestRoutes::default();
        let receiver = routes.expect("tok".into(), route(), DEFAULT_TTL);
        assert!(routes.take("other").is_none());
        let (taken, created) = routes.take("tok").expect("registered");
        assert_eq!(taken, route());
        assert!(routes.take("tok").is_none(), "single use");
        created.send("call_1".into()).expect("receiver alive");
        assert_eq!(receiver.await.expect("sent"), "call_1");
    }

    #[tokio::test]
    async fn an_unused_route_expires_and_tells_the_waiter() {
        let routes = TestRoutes::default();
        let receiver = routes.expect("tok".into(), route(), Duration::from_millis(50));
        assert_eq!(routes.len(), 1);
        let expired = tokio::time::timeout(Duration::from_secs(30), receiver)
            .await
            .expect("expiry in time");
        assert!(expired.is_err(), "expired without a call");
        assert_eq!(routes.len(), 0);
        assert!(routes.take("tok").is_none());
    }

    #[tokio::test]
    async fn the_expiry_of_a_replaced_route_spares_the_new_one() {
        let routes = TestRoutes::default();
        let first = routes.expect("tok".into(), route(), Duration::from_millis(50));
        let _second = routes.expect("tok".into(), route(), Duration::from_secs(60));
        assert!(first.await.is_err(), "replaced");
        // A later route's expiry: by then the first route's timer has run.
        let probe = routes.expect("probe".into(), route(), Duration::from_millis(300));
        let _ = tokio::time::timeout(Duration::from_secs(30), probe)
            .await
            .expect("probe expires");
        assert!(routes.take("tok").is_some(), "the later registration stays");
    }
}
