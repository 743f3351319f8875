//! The digest server side: stateless nonces and answer verification.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{Algorithm, AuthError, Authorization, Challenge};

/// How a [`DigestServer`] challenges and what it accepts.
#[derive(Clone)]
pub struct DigestServerConfig {
    /// The realm put in challenges and required in answers.
    pub realm: String,
    /// The key that signs nonces. Nodes sharing it accept each other's nonces.
    pub secret: Vec<u8>,
    /// The algorithm challenged for first (MD5 is what most SIP devices speak).
    pub algorithm: Algorithm,
    /// Further algorithms offered after [`algorithm`](Self::algorithm) and accepted in
    /// answers: RFC 8760 section 2.4 has one `WWW-Authenticate` per algorithm, the
    /// preferred first, and the client answers the first it supports.
    pub alternatives: Vec<Algorithm>,
    /// How long a nonce stays valid; older ones get a `stale=true` challenge.
    pub nonce_lifetime: Duration,
    /// Whether to offer and require `qop=auth` (with nonce counts, so replays are caught).
    /// When false, challenges carry no qop and answers use the RFC 2069 form.
    pub qop_auth: bool,
    /// Most nonces whose counts are tracked. When full, expired ones are forgotten first;
    /// if all are live, the oldest is, and every nonce issued until then turns stale (its
    /// user is challenged again with `stale=true`), so a forgotten count cannot be replayed.
    pub max_tracked_nonces: usize,
}

impl DigestServerConfig {
    /// A configuration with the defaults: MD5, `qop=auth`, nonces valid 5 minutes.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        DigestServerConfig {
            realm: realm.into(),
            secret: secret.into(),
            algorithm: Algorithm::Md5,
            alternatives: Vec::new(),
            nonce_lifetime: Duration::from_secs(300),
            qop_auth: true,
            max_tracked_nonces: 65_536,
        }
    }
}

impl std::fmt::Debug for DigestServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServerConfig")
            .field("realm", &self.realm)
            .field("secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("alternatives", &self.alternatives)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("qop_auth", &self.qop_auth)
            .field("max_tracked_nonces", &self.max_tracked_nonces)
            .finish()
    }
}

/// A verified request's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user whose password produced the response.
    pub username: String,
}

/// Issues digest challenges and verifies answers (RFC 3261 section 22.4 as a UAS).
///
/// Nonces carry their issue time, a random salt and an HMAC-SHA256 over both under the
/// configured secret, so any node holding the secret verifies them without state. The
/// server additionally remembers the highest nonce count seen per nonce to reject replays.
/// Wall-clock time is passed in.
#[derive(Debug)]
pub struct DigestServer {
    config: DigestServerConfig,
    /// Per nonce: its issue time (milliseconds since the epoch) and the highest `nc` accepted.
    counts: HashMap<String, (u64, u32)>,
    /// Nonces issued at or before this time (ms) whose counts may have been forgotten: they
    /// are stale unless still tracked.
    forgotten_until: Option<u64>,
}

impl DigestServer {
    /// A server with the given configuration.
    pub fn new(config: DigestServerConfig) -> Self {
        DigestServer {
            config,
            counts: HashMap::new(),
            forgotten_until: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DigestServerConfig {
        &self.config
    }

    /// A fresh challenge to send in a 401 `WWW-Authenticate` (or 407 `Proxy-Authenticate`);
    /// `stale` after [`AuthError::StaleNonce`]. Only the first algorithm: see
    /// [`DigestServer::challenges`] for all of them.
    pub fn challenge(&self, now: SystemTime, stale: bool) -> Challenge {
        self.challenge_with(self.config.algorithm, now, stale)
    }

    /// One challenge per configured algorithm, the preferred first, all with one fresh
    /// nonce (RFC 8760 section 2.4): one header each.
    pub fn challenges(&self, now: SystemTime, stale: bool) -> Vec<Challenge> {
        let first = self.challenge(now, stale);
        let mut all = Vec::with_capacity(1 + self.config.alternatives.len());
        for &algorithm in &self.config.alternatives {
            if algorithm != first.algorithm
                && all.iter().all(|c: &Challenge| c.algorithm != algorithm)
            {
                all.push(Challenge {
                    algorithm,
                    ..first.clone()
                });
            }
        }
        all.insert(0, first);
        all
    }

    fn challenge_with(&self, algorithm: Algorithm, now: SystemTime, stale: bool) -> Challenge {
        let salt: [u8; 8] = rand::random();
        Challenge {
            realm: self.config.realm.clone(),
            nonce: self.make_nonce(unix_millis(now), salt),
            opaque: None,
            algorithm,
            qop: if self.config.qop_auth {
                vec!["auth".to_owned()]
            } else {
                Vec::new()
            },
            stale,
        }
    }

    /// Verifies an `Authorization` / `Proxy-Authorization` value for a request with the
    /// given method and request-URI. `password_for` looks a user's password up.
    ///
    /// On [`AuthError::StaleNonce`] answer with `challenge(now, true)`; on other errors
    /// with a fresh challenge (or 403 when the same user keeps failing).
    pub fn verify(
        &mut self,
        authorization: &str,
        method: &str,
        request_uri: &str,
        now: SystemTime,
        password_for: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Authenticated, AuthError> {
        let answer: Authorization = authorization.parse()?;
        self.verify_parsed(&answer, method, request_uri, now, password_for)
    }

    /// [`DigestServer::verify`] for an already parsed answer.
    pub fn verify_parsed(
        &mut self,
        answer: &Authorization,
        method: &str,
        request_uri: &str,
        now: SystemTime,
        password_for: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Authenticated, AuthError> {
        if answer.realm != self.config.realm {
            return Err(AuthError::WrongRealm {
                expected: self.config.realm.clone(),
                got: answer.realm.clone(),
            });
        }
        if answer.algorithm != self.config.algorithm
            && !self.config.alternatives.contains(&answer.algorithm)
        {
            return Err(AuthError::AlgorithmMismatch(answer.algorithm));
        }
        if !uri_matches(&answer.uri, request_uri) {
            return Err(AuthError::UriMismatch {
                expected: request_uri.to_owned(),
                got: answer.uri.clone(),
            });
        }
        let issued = self.check_nonce(&answer.nonce)?;
        if self.config.qop_auth && answer.qop_auth.is_none() {
            return Err(AuthError::MissingParameter("qop"));
        }
        let password = password_for(&answer.username)
            .ok_or_else(|| AuthError::UnknownUser(answer.username.clone()))?;
        let expected = answer.expected_response(&password, method);
        if !constant_time_eq(expected.as_bytes(), answer.response.as_bytes()) {
            return Err(AuthError::WrongResponse {
                username: answer.username.clone(),
            });
        }
        // Staleness is reported only for otherwise correct answers (RFC 7616 section 3.3),
        // so the client knows a retry with the new nonce will work.
        let now = unix_millis(now);
        let lifetime = u64::try_from(self.config.nonce_lifetime.as_millis()).unwrap_or(u64::MAX);
        if now > issued.saturating_add(lifetime) || issued > now.saturating_add(lifetime) {
            return Err(AuthError::StaleNonce);
        }
        if let Some(qop) = &answer.qop_auth {
            match self.counts.get(&answer.nonce) {
                Some(&(_, last)) if qop.nc <= last => {
                    return Err(AuthError::ReplayedNonceCount { nc: qop.nc, last });
                }
                Some(_) => {}
                // Its count may have been forgotten to keep the table bounded.
                None if self.forgotten_until.is_some_and(|until| issued <= until) => {
                    return Err(AuthError::StaleNonce);
                }
                None => self.make_room(now, lifetime),
            }
            self.counts.insert(answer.nonce.clone(), (issued, qop.nc));
        }
        Ok(Authenticated {
            username: answer.username.clone(),
        })
    }

    /// How many nonces currently have their counts tracked.
    pub fn tracked_nonces(&self) -> usize {
        self.counts.len()
    }

    /// Frees a place in the count table when it is full: expired nonces go first, else the
    /// oldest live one, which makes every nonce issued until it stale.
    fn make_room(&mut self, now: u64, lifetime: u64) {
        if self.counts.len() < self.config.max_tracked_nonces.max(1) {
            return;
        }
        self.counts
            .retain(|_, (issued, _)| issued.saturating_add(lifetime) >= now);
        while self.counts.len() >= self.config.max_tracked_nonces.max(1) {
            let Some((nonce, issued)) = self
                .counts
                .iter()
                .min_by_key(|(_, (issued, _))| *issued)
                .map(|(nonce, (issued, _))| (nonce.clone(), *issued))
            else {
                break;
            };
            self.counts.remove(&nonce);
            self.forgotten_until = Some(self.forgotten_until.map_or(issued, |u| u.max(issued)));
        }
    }

    fn make_nonce(&self, issued: u64, salt: [u8; 8]) -> String {
        let mac = self.nonce_mac(issued, salt);
        let mut nonce = hex::encode(issued.to_be_bytes());
        nonce.push_str(&hex::encode(salt));
        nonce.push_str(&hex::encode(&mac[..NONCE_MAC_LEN]));
        nonce
    }

    /// The issue time of a nonce this server (or a node sharing its secret) made.
    fn check_nonce(&self, nonce: &str) -> Result<u64, AuthError> {
        if nonce.len() != 2 * (8 + 8 + NONCE_MAC_LEN) {
            return Err(AuthError::InvalidNonce);
        }
        let bytes = hex::decode(nonce).map_err(|_| AuthError::InvalidNonce)?;
        let (issued, rest) = bytes.split_at(8);
        let (salt, mac) = rest.split_at(8);
        let issued = u64::from_be_bytes(issued.try_into().expect("split at 8 bytes"));
        let salt: [u8; 8] = salt.try_into().expect("split at 8 bytes");
        let expected = self.nonce_mac(issued, salt);
        if constant_time_eq(&expected[..NONCE_MAC_LEN], mac) {
            Ok(issued)
        } else {
            Err(AuthError::InvalidNonce)
        }
    }

    fn nonce_mac(&self, issued: u64, salt: [u8; 8]) -> [u8; 32] {
        hmac_sha256(
            &self.config.secret,
            &[
                b"dialcore digest nonce",
                &issued.to_be_bytes(),
                &salt,
                self.config.realm.as_bytes(),
            ],
        )
    }
}

/// Whether an answer's digest-uri stands for the request-URI: the same text (RFC 3261
/// 22.4), or the request-URI's host and port alone (`sip:192.0.2.1:5060` for
/// `sip:+15551234567@192.0.2.1:5060;transport=udp`), which some user agents (SIPp among
/// them) send. The digest covers the uri as sent, so either way the caller proved the
/// password for this target; anything else (another host, port or scheme) does not match.
fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    /// `scheme`, `host[:port]` of a SIP URI, lowercased, without user, parameters or headers.
    fn target(uri: &str) -> Option<(String, String)> {
        let (scheme, rest) = uri.split_once(':')?;
        let rest = rest.split(['?', ';']).next()?;
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        (!host_port.is_empty())
            .then(|| (scheme.to_ascii_lowercase(), host_port.to_ascii_lowercase()))
    }
    let bare = digest_uri
        .split_once(':')
        .is_some_and(|(_, rest)| !rest.contains(['@', ';', '?']));
    bare && target(digest_uri).is_some() && target(digest_uri) == target(request_uri)
}

/// Bytes of the HMAC kept in a nonce (128 bits).
const NONCE_MAC_LEN: usize = 16;

/// Milliseconds since the epoch: nonces carry their issue time to the millisecond, so
/// "issued until the oldest forgotten one" rarely catches a nonce handed out just now.
fn unix_millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// HMAC-SHA256 (RFC 2104) over the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_uri_is_the_request_uri_or_its_host_and_port() {
        let request = "sip:+15550002222@127.0.0.1:5060;transport=UDP";
        assert!(uri_matches(request, request));
        assert!(uri_matches("sip:127.0.0.1:5060", request));
        assert!(uri_matches("SIP:127.0.0.1:5060", request));
        assert!(!uri_matches("sip:127.0.0.1:5061", request), "another port");
        assert!(!uri_matches("sip:127.0.0.2:5060", request), "another host");
        assert!(
            !uri_matches("sips:127.0.0.1:5060", request),
            "another scheme"
        );
        assert!(!uri_matches("sip:127.0.0.1", request), "port left out");
        assert!(
            !uri_matches("sip:+15559999999@127.0.0.1:5060", request),
            "another user"
        );
        assert!(!uri_matches("sip:127.0.0.1:5060;x=y", request), "not bare");
        assert!(!uri_matches("", request));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_hashes_long_keys() {
        let key = [0xaa_u8; 131];
        let mac = hmac_sha256(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn nonces_verify_only_under_their_secret() {
        let server = DigestServer::new(DigestServerConfig::new("r", b"one".to_vec()));
        let other = DigestServer::new(DigestServerConfig::new("r", b"two".to_vec()));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let nonce = server.challenge(now, false).nonce;
        assert_eq!(server.check_nonce(&nonce), Ok(1_700_000_000_000));
        assert_eq!(other.check_nonce(&nonce), Err(AuthError::InvalidNonce));
        let mut forged = nonce.clone();
        forged.replace_range(0..2, "ff");
        assert_eq!(server.check_nonce(&forged), Err(AuthError::InvalidNonce));
        assert_eq!(server.check_nonce("zz"), Err(AuthError::InvalidNonce));
        assert_eq!(
            server.check_nonce(&"g".repeat(64)),
            Err(AuthError::InvalidNonce)
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
