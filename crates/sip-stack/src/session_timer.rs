//! Session timers (RFC 4028), sans-IO: negotiation of `Session-Expires` / `Min-SE` and the
//! refresh / expiry schedule of an established session, with time passed in.
//!
//! As UAC: put [`UacSessionTimer::request_headers`] in the INVITE (with `timer` in
//! `Supported`), feed a 422 to [`UacSessionTimer::handle_422`] and retry, and read the 2xx
//! with [`UacSessionTimer::handle_2xx`]. As UAS: [`uas_negotiate`] decides the 2xx headers
//! or a 422. Either way the result starts a [`SessionTimer`], which says when to send a
//! refresh (we are the refresher) or a BYE (the peer stopped refreshing).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sip_stack::session_timer::{uas_negotiate, Action, SessionTimer, SessionTimerConfig, UasDecision};
//!
//! let config = SessionTimerConfig::default();
//! let UasDecision::Accept { response, negotiated } =
//!     uas_negotiate(&config, true, Some("1800"), Some("90")).unwrap() else { panic!("accepted") };
//! assert_eq!(response.session_expires.to_string(), "1800;refresher=uac");
//! let t0 = Instant::now();
//! let mut timer = SessionTimer::new(t0, &negotiated, &config);
//! // The caller refreshes; if it stops, we hang up 32 s before the session would expire.
//! assert_eq!(timer.poll_timeout(), Some(t0 + Duration::from_secs(1768)));
//! assert_eq!(timer.handle_timeout(t0 + Duration::from_secs(1768)), Some(Action::SendBye));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The option tag for `Supported` / `Require`.
pub const OPTION_TAG: &str = "timer";
/// The session interval asked for by default (RFC 4028 recommends 1800 s).
pub const DEFAULT_SESSION_EXPIRES: u32 = 1800;
/// The smallest session interval accepted by default, and RFC 4028's floor.
pub const DEFAULT_MIN_SE: u32 = 90;

/// Errors from session timer headers and negotiation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionTimerError {
    /// A `Session-Expires` value that does not follow `delta-seconds *(;param)`.
    #[error("invalid Session-Expires value {0:?}")]
    InvalidSessionExpires(String),
    /// A `Min-SE` value that does not follow `delta-seconds *(;param)`.
    #[error("invalid Min-SE value {0:?}")]
    InvalidMinSe(String),
    /// A 422 response without a `Min-SE` header.
    #[error("422 response without Min-SE")]
    MissingMinSe,
    /// A 422 whose `Min-SE` does not exceed what we already asked for: retrying cannot help.
    #[error("422 Min-SE {min_se} does not exceed the interval already requested ({requested})")]
    MinSeNotRaised {
        /// The `Min-SE` of the 422.
        min_se: u32,
        /// The `Session-Expires` we sent.
        requested: u32,
    },
}

/// Which side of the refreshing transaction refreshes (`refresher=uac|uas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refresher {
    /// The client of the INVITE/UPDATE carrying the header.
    Uac,
    /// The server of the INVITE/UPDATE carrying the header.
    Uas,
}

impl Refresher {
    fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A `Session-Expires` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval in seconds.
    pub delta_seconds: u32,
    /// The `refresher` parameter, if present.
    pub refresher: Option<Refresher>,
}

impl FromStr for SessionExpires {
    type Err = SessionTimerError;

    fn from_str(value: &str) -> Result<Self, SessionTimerError> {
        let invalid = || SessionTimerError::InvalidSessionExpires(value.to_owned());
        let (delta_seconds, params) = parse_delta(value).ok_or_else(invalid)?;
        let mut refresher = None;
        for (name, param) in params {
            if name.eq_ignore_ascii_case("refresher") {
                refresher = match param {
                    Some(v) if v.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
                    Some(v) if v.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
                    _ => return Err(invalid()),
                };
            }
        }
        Ok(SessionExpires {
            delta_seconds,
            refresher,
        })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta_seconds)?;
        if let Some(refresher) = self.refresher {
            write!(f, ";refresher={}", refresher.as_str())?;
        }
        Ok(())
    }
}

/// A `Min-SE` header value: the smallest session interval, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MinSe(pub u32);

impl FromStr for MinSe {
    type Err = SessionTimerError;

    fn from_str(value: &str) -> Result<Self, SessionTimerError> {
        parse_delta(value)
            .map(|(delta, _)| MinSe(delta))
            .ok_or_else(|| SessionTimerError::InvalidMinSe(value.to_owned()))
    }
}

impl fmt::Display for MinSe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a `Supported` or `Require` value lists the `timer` option tag.
pub fn lists_timer(option_tags: &str) -> bool {
    option_tags
        .split(',')
        .any(|tag| tag.trim().eq_ignore_ascii_case(OPTION_TAG))
}

/// Local session timer preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The session interval we ask for, in seconds.
    pub session_expires: u32,
    /// The smallest session interval we accept, in seconds. RFC 4028 puts
    /// the floor at 90 (the default); smaller values are honoured so that
    /// tests can exercise refreshes in seconds, and should not be used
    /// against real carriers.
    pub min_se: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            session_expires: DEFAULT_SESSION_EXPIRES,
            min_se: DEFAULT_MIN_SE,
        }
    }
}

/// Headers for an INVITE or UPDATE: `Session-Expires`, `Min-SE`, and `timer` in `Supported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeaders {
    /// The `Session-Expires` value.
    pub session_expires: SessionExpires,
    /// The `Min-SE` value.
    pub min_se: MinSe,
}

/// Headers for a 2xx answering a session timer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// Whether to put `Require: timer` (the UAC supports it).
    pub require_timer: bool,
    /// The `Session-Expires` value, always with the refresher.
    pub session_expires: SessionExpires,
}

/// The outcome of a negotiation: the session interval and who refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The session interval.
    pub interval: Duration,
    /// The refresher as the headers of the negotiating transaction said it.
    pub refresher: Refresher,
    /// Whether that is us.
    pub local_refresher: bool,
}

/// The UAC side of the negotiation for one INVITE (and its 422 retries).
#[derive(Debug, Clone)]
pub struct UacSessionTimer {
    session_expires: u32,
    min_se: u32,
}

impl UacSessionTimer {
    /// Starts from the local preferences.
    pub fn new(config: &SessionTimerConfig) -> Self {
        let min_se = config.min_se.max(1);
        UacSessionTimer {
            session_expires: config.session_expires.max(min_se),
            min_se,
        }
    }

    /// What to put in the INVITE. The refresher is left to the UAS (RFC 4028 section 7.1).
    pub fn request_headers(&self) -> RequestHeaders {
        RequestHeaders {
            session_expires: SessionExpires {
                delta_seconds: self.session_expires,
                refresher: None,
            },
            min_se: MinSe(self.min_se),
        }
    }

    /// A 422 (Session Interval Too Small) came back with this `Min-SE`: the headers for the
    /// retried INVITE (section 7.4), or an error when retrying cannot succeed.
    pub fn handle_422(
        &mut self,
        min_se: Option<&str>,
    ) -> Result<RequestHeaders, SessionTimerError> {
        let MinSe(theirs) = min_se.ok_or(SessionTimerError::MissingMinSe)?.parse()?;
        if theirs <= self.session_expires {
            return Err(SessionTimerError::MinSeNotRaised {
                min_se: theirs,
                requested: self.session_expires,
            });
        }
        self.min_se = self.min_se.max(theirs);
        self.session_expires = theirs;
        Ok(self.request_headers())
    }

    /// Reads the 2xx's `Session-Expires` (section 7.2). `None` when the response has none:
    /// the session does not expire. Without a refresher parameter the UAS did not take part,
    /// so we (the UAC) refresh. An interval below our `Min-SE` is raised to it.
    pub fn handle_2xx(
        &self,
        session_expires: Option<&str>,
    ) -> Result<Option<Negotiated>, SessionTimerError> {
        let Some(value) = session_expires else {
            return Ok(None);
        };
        let header: SessionExpires = value.parse()?;
        let refresher = header.refresher.unwrap_or(Refresher::Uac);
        Ok(Some(Negotiated {
            interval: Duration::from_secs(header.delta_seconds.max(self.min_se).into()),
            refresher,
            local_refresher: refresher == Refresher::Uac,
        }))
    }
}

/// What the UAS does with a session timer request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasDecision {
    /// Answer 2xx with these headers and run a [`SessionTimer`] with `negotiated`.
    Accept {
        /// Headers for the 2xx.
        response: ResponseHeaders,
        /// The interval and refresher.
        negotiated: Negotiated,
    },
    /// Answer 422 Session Interval Too Small with this `Min-SE`.
    Reject {
        /// The `Min-SE` to put in the 422.
        min_se: MinSe,
    },
}

/// The UAS decision for an INVITE or UPDATE (RFC 4028 section 9), given whether its
/// `Supported` lists `timer` (see [`lists_timer`]) and its `Session-Expires` and `Min-SE`.
///
/// A request below our minimum from a UAC that supports timers gets a 422; from one that
/// does not, the interval is raised instead. A request without `Session-Expires` still gets
/// a session timer (dialcore never lets a call outlive its limits): ours, with the UAC as
/// refresher when it supports timers and us otherwise.
pub fn uas_negotiate(
    config: &SessionTimerConfig,
    supported_timer: bool,
    session_expires: Option<&str>,
    min_se: Option<&str>,
) -> Result<UasDecision, SessionTimerError> {
    let requested: Option<SessionExpires> = session_expires.map(str::parse).transpose()?;
    let their_min = match min_se {
        Some(value) => value.parse::<MinSe>()?.0,
        None => 0,
    };
    let our_min = config.min_se.max(1);
    let floor = our_min.max(their_min);
    let interval = match requested {
        Some(SessionExpires { delta_seconds, .. })
            if delta_seconds < our_min && supported_timer =>
        {
            return Ok(UasDecision::Reject {
                min_se: MinSe(our_min),
            });
        }
        // We may shorten the interval, but never below either side's minimum.
        Some(SessionExpires { delta_seconds, .. }) => {
            delta_seconds.min(config.session_expires).max(floor)
        }
        None => config.session_expires.max(floor),
    };
    let refresher = match requested.and_then(|r| r.refresher) {
        Some(refresher) if supported_timer => refresher,
        _ if supported_timer => Refresher::Uac,
        _ => Refresher::Uas,
    };
    Ok(UasDecision::Accept {
        response: ResponseHeaders {
            require_timer: supported_timer,
            session_expires: SessionExpires {
                delta_seconds: interval,
                refresher: Some(refresher),
            },
        },
        negotiated: Negotiated {
            interval: Duration::from_secs(interval.into()),
            refresher,
            local_refresher: refresher == Refresher::Uas,
        },
    })
}

/// What the session timer asks the dialog to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// We are the refresher and half the interval has passed: send a re-INVITE or UPDATE
    /// with [`SessionTimer::refresh_headers`].
    SendRefresh,
    /// No refresh succeeded in time: end the session with BYE.
    SendBye,
}

/// The refresh and expiry schedule of an established session.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    interval: Duration,
    local_refresher: bool,
    min_se: u32,
    refresh_at: Option<Instant>,
    expire_at: Option<Instant>,
}

impl SessionTimer {
    /// Starts the timer when the negotiating transaction succeeded (2xx sent or received).
    pub fn new(now: Instant, negotiated: &Negotiated, config: &SessionTimerConfig) -> Self {
        let mut timer = SessionTimer {
            interval: negotiated.interval,
            local_refresher: negotiated.local_refresher,
            min_se: config.min_se.max(1),
            refresh_at: None,
            expire_at: None,
        };
        timer.handle_refresh(now, negotiated);
        timer
    }

    /// The next time [`SessionTimer::handle_timeout`] has something to do; `None` once the
    /// BYE was asked for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.refresh_at, self.expire_at) {
            (Some(refresh), Some(expire)) => Some(refresh.min(expire)),
            (refresh, expire) => refresh.or(expire),
        }
    }

    /// Advances to `now`: [`Action::SendRefresh`] at half the interval when we refresh,
    /// [`Action::SendBye`] when no refresh succeeded by `interval - min(32 s, interval / 3)`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        if self.expire_at.is_some_and(|at| now >= at) {
            self.expire_at = None;
            self.refresh_at = None;
            return Some(Action::SendBye);
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh_at = None;
            return Some(Action::SendRefresh);
        }
        None
    }

    /// A refresh (re-INVITE or UPDATE, sent by either side) succeeded at `now`, with the
    /// interval and refresher it negotiated: the schedule restarts.
    pub fn handle_refresh(&mut self, now: Instant, negotiated: &Negotiated) {
        self.interval = negotiated.interval;
        self.local_refresher = negotiated.local_refresher;
        let margin = (self.interval / 3).min(Duration::from_secs(32));
        self.expire_at = now.checked_add(self.interval - margin);
        self.refresh_at = if self.local_refresher {
            now.checked_add(self.interval / 2)
        } else {
            None
        };
    }

    /// The headers for a refresh we send (we are its UAC): the current interval, keeping
    /// the refresher role as it is.
    pub fn refresh_headers(&self) -> RequestHeaders {
        let interval = u32::try_from(self.interval.as_secs()).unwrap_or(u32::MAX);
        RequestHeaders {
            session_expires: SessionExpires {
                delta_seconds: interval,
                refresher: Some(if self.local_refresher {
                    Refresher::Uac
                } else {
                    Refresher::Uas
                }),
            },
            min_se: MinSe(self.min_se),
        }
    }

    /// The current session interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether we are the refresher.
    pub fn is_local_refresher(&self) -> bool {
        self.local_refresher
    }
}

/// A generic header parameter: name and optional value.
type Param<'a> = (&'a str, Option<&'a str>);

/// Splits `delta-seconds *(SEMI generic-param)` into the delta and `(name, value)` params.
fn parse_delta(value: &str) -> Option<(u32, Vec<Param<'_>>)> {
    let mut parts = value.split(';');
    let delta = parts.next()?.trim();
    if delta.is_empty() || delta.len() > 10 || !delta.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let delta: u32 = delta.parse().ok()?;
    let mut params = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (param.trim(), None),
        };
        if name.is_empty() || value.is_some_and(str::is_empty) {
            return None;
        }
        params.push((name, value));
    }
    Some((delta, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_headers() {
        let se: SessionExpires = "1800 ; Refresher = UAS;x=1".parse().expect("valid");
        assert_eq!(se.delta_seconds, 1800);
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(se.to_string(), "1800;refresher=uas");
        let bare: SessionExpires = "90".parse().expect("valid");
        assert_eq!(bare.to_string(), "90");
        assert_eq!("120;lr".parse::<MinSe>(), Ok(MinSe(120)));
        for bad in [
            "",
            "x",
            "-1",
            "1800;refresher=both",
            "1800;refresher",
            "99999999999",
            "1800;=x",
        ] {
            assert!(bad.parse::<SessionExpires>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "abc".parse::<MinSe>(),
            Err(SessionTimerError::InvalidMinSe("abc".into()))
        );
        assert!(lists_timer("100rel, Timer"));
        assert!(!lists_timer("100rel, timers"));
    }

    #[test]
    fn huge_intervals_do_not_overflow() {
        let negotiated = Negotiated {
            interval: Duration::from_secs(u64::from(u32::MAX)),
            refresher: Refresher::Uac,
            local_refresher: true,
        };
        let t0 = Instant::now();
        let mut timer = SessionTimer::new(t0, &negotiated, &SessionTimerConfig::default());
        assert_eq!(timer.handle_timeout(t0), None);
        assert_eq!(
            timer.refresh_headers().session_expires.delta_seconds,
            u32::MAX
        );
    }
}
