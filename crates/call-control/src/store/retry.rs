//! Waiting out a store that cannot serve now.
//!
//! What the service has promised (a call's record, a webhook) is never dropped because the
//! database was slow or away: the write is retried, with a growing pause, until it lands,
//! and the wait is logged (a warning per failed attempt, an error once it has lasted
//! [`WAIT_REPORTED_AFTER`], and a note when the store is back).

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

/// The first pause after a failed attempt; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// A wait on the store this long is reported as an error (once per wait).
pub const WAIT_REPORTED_AFTER: Duration = Duration::from_secs(10);

/// Runs `attempt` until it succeeds or fails with an error that `retry` does not accept
/// (a store that cannot serve now, [`StoreError::is_unavailable`]), pausing longer after
/// each failure and saying so.
pub async fn patiently<T, E, F, Fut>(
    what: &'static str,
    retry: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut reported = false;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match attempt().await {
            Err(error) if retry(&error) => {
                let waited = started.elapsed();
                if waited >= WAIT_REPORTED_AFTER && !reported {
                    reported = true;
                    error!(what, %error, attempts, waited_s = waited.as_secs(),
                        "still waiting for the store; nothing is dropped, retrying");
                } else {
                    warn!(what, %error, attempts, "store unavailable; retrying");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            done => {
                if reported {
                    info!(
                        what,
                        attempts,
                        waited_s = started.elapsed().as_secs(),
                        "store back; written"
                    );
                }
                return done;
            }
        }
    }
}
