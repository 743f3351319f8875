//! The log of refused INVITEs, at a bounded rate: a scanner sending tens of INVITEs a
//! second gets one line when it starts and one summary per minute, not two lines per
//! request. Sans-IO: time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One summary line per source per this long.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most sources remembered; past it the oldest windows are summarised and forgotten.
pub const MAX_SOURCES: usize = 4096;

/// What to log for one refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The first refusal of a source in a window: log it whole.
    First,
    /// A window ended (or was forgotten to make room): `count` refusals of `source` in it,
    /// the first included.
    Summary {
        /// The source.
        source: IpAddr,
        /// Refusals in the window.
        count: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u64,
}

/// Counts refusals per source.
#[derive(Debug, Default)]
pub struct RejectionLog {
    sources: Mutex<HashMap<IpAddr, Window>>,
}

impl RejectionLog {
    /// Counts a refusal of `source` at `now`; returns what to log (nothing for a refusal
    /// inside a window already logged).
    pub fn record(&self, source: IpAddr, now: Instant) -> Vec<Entry> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        match sources.get_mut(&source) {
            Some(window) if now.saturating_duration_since(window.started) < WINDOW => {
                window.count += 1;
                return out;
            }
            Some(window) => {
                out.push(Entry::Summary {
                    source,
                    count: window.count,
                });
                *window = Window {
                    started: now,
                    count: 1,
                };
                out.push(Entry::First);
                return out;
            }
            None => {}
        }
        if sources.len() >= MAX_SOURCES {
            // Summarise and forget the windows that are over, else the oldest one.
            let over: Vec<IpAddr> = sources
                .iter()
                .filter(|(_, w)| now.saturating_duration_since(w.started) >= WINDOW)
                .map(|(ip, _)| *ip)
                .collect();
            let evicted = if over.is_empty() {
                sources
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(ip, _)| vec![*ip])
                    .unwrap_or_default()
            } else {
                over
            };
            for ip in evicted {
                if let Some(window) = sources.remove(&ip) {
                    if window.count > 1 {
                        out.push(Entry::Summary {
                            source: ip,
                            count: window.count,
                        });
                    }
                }
            }
        }
        sources.insert(
            source,
            Window {
                started: now,
                count: 1,
            },
        );
        out.push(Entry::First);
        out
    }

    /// Sources currently remembered.
    pub fn sources(&self) -> usize {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn one_line_per_source_then_one_summary_per_minute() {
        let log = RejectionLog::default();
        let t0 = Instant::now();
        assert_eq!(log.record(ip(1), t0), [Entry::First]);
        for i in 1..500u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 100);
            assert!(log.record(ip(1), at).is_empty(), "request {i}");
        }
        // Another source is logged on its own.
        assert_eq!(
            log.record(ip(2), t0 + Duration::from_secs(1)),
            [Entry::First]
        );
        let next = log.record(ip(1), t0 + WINDOW);
        assert_eq!(
            next,
            [
                Entry::Summary {
                    source: ip(1),
                    count: 500
                },
                Entry::First
            ]
        );
    }

    #[test]
    fn the_number_of_sources_remembered_is_bounded() {
        let log = RejectionLog::default();
        let t0 = Instant::now();
        for n in 0..(MAX_SOURCES as u32 + 1000) {
            let at = t0 + Duration::from_millis(u64::from(n));
            log.record(ip(n), at);
            log.record(ip(n), at);
        }
        assert!(log.sources() <= MAX_SOURCES);
        // The oldest were summarised as they were forgotten.
        let later = t0 + Duration::from_secs(1);
        let entries = log.record(ip(999_999), later);
        assert!(entries
            .iter()
            .any(|e| matches!(e, Entry::Summary { count: 2, .. })));
    }
}
