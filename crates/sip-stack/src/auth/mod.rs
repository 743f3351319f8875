//! Digest authentication (RFC 7616, RFC 2617, as SIP uses it per RFC 3261 section 22 and
//! RFC 8760): MD5 and SHA-256, `qop=auth` and the older no-qop form.
//!
//! Header values travel as plain strings: [`Challenge`] is a `WWW-Authenticate` /
//! `Proxy-Authenticate` value, [`Authorization`] an `Authorization` /
//! `Proxy-Authorization` value; both parse from and print to the text after the header
//! name. As a client, [`Credentials::authorize`] answers a challenge; as a server,
//! [`DigestServer`] issues stateless, self-verifying nonces and checks answers.
//!
//! ```
//! use sip_stack::auth::{Challenge, Credentials};
//!
//! let challenge: Challenge = r#"Digest realm="trunk.example", nonce="abc", qop="auth""#.parse().unwrap();
//! let credentials = Credentials { username: "alice".into(), password: "secret".into() };
//! let header = credentials.authorize(&challenge, "INVITE", "sip:bob@trunk.example", "0a4f113b", 1).unwrap();
//! assert!(header.to_string().starts_with(r#"Digest username="alice", realm="trunk.example""#));
//! ```

mod params;
mod server;

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use sha2::{Digest, Sha256};

use params::{parse_digest, Quoted};

pub use server::{Authenticated, DigestServer, DigestServerConfig};

/// Everything that can go wrong parsing, answering or verifying digest authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header does not use the Digest scheme.
    #[error("unsupported authentication scheme {0:?}")]
    UnsupportedScheme(String),
    /// The header's parameter list does not follow the grammar.
    #[error("malformed digest parameters at byte {position}")]
    Malformed {
        /// Byte offset where parsing stopped.
        position: usize,
    },
    /// A parameter appears twice.
    #[error("digest parameter {0:?} appears twice")]
    DuplicateParameter(String),
    /// A mandatory parameter is missing.
    #[error("digest parameter {0:?} missing")]
    MissingParameter(&'static str),
    /// A parameter has a value outside its grammar.
    #[error("digest parameter {name:?} has an invalid value")]
    InvalidParameter {
        /// The parameter name.
        name: &'static str,
    },
    /// An algorithm other than MD5 and SHA-256 (the `-sess` variants included).
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// A quality of protection other than `auth` (or none).
    #[error("unsupported qop {0:?}")]
    UnsupportedQop(String),
    /// The answer names another realm than ours.
    #[error("realm {got:?} is not ours ({expected:?})")]
    WrongRealm {
        /// Our realm.
        expected: String,
        /// The realm in the answer.
        got: String,
    },
    /// The answer uses another algorithm than the challenge asked for.
    #[error("algorithm {0} was not challenged for")]
    AlgorithmMismatch(Algorithm),
    /// The digest-uri differs from the request-URI.
    #[error("digest uri {got:?} differs from the request-URI {expected:?}")]
    UriMismatch {
        /// The request-URI.
        expected: String,
        /// The `uri` parameter.
        got: String,
    },
    /// The nonce was not issued by this server (or its secret).
    #[error("nonce was not issued here")]
    InvalidNonce,
    /// The nonce was ours but has expired: challenge again with `stale=true`.
    #[error("nonce is stale")]
    StaleNonce,
    /// The nonce count did not increase: a replayed request.
    #[error("nonce count {nc} replayed (last seen {last})")]
    ReplayedNonceCount {
        /// The count in this request.
        nc: u32,
        /// The highest count accepted before.
        last: u32,
    },
    /// The password lookup knows no such user.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The response digest does not match: wrong password or tampered request.
    #[error("wrong digest response for user {username:?}")]
    WrongResponse {
        /// The user that claimed to answer.
        username: String,
    },
}

/// The hash algorithm of a digest exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// MD5 (RFC 2617; the default when `algorithm` is absent).
    #[default]
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The lowercase hex digest of the parts joined by `:`.
    pub fn hash(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut digest = D::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    digest.update(b":");
                }
                digest.update(part.as_bytes());
            }
            hex::encode(digest.finalize())
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, AuthError> {
        if text.eq_ignore_ascii_case("MD5") {
            Ok(Algorithm::Md5)
        } else if text.eq_ignore_ascii_case("SHA-256") {
            Ok(Algorithm::Sha256)
        } else {
            Err(AuthError::UnsupportedAlgorithm(text.to_owned()))
        }
    }
}

/// A digest challenge: the value of `WWW-Authenticate` or `Proxy-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// Opaque data to echo back unchanged.
    pub opaque: Option<String>,
    /// The hash algorithm.
    pub algorithm: Algorithm,
    /// The offered qop values (empty for an RFC 2069 style challenge).
    pub qop: Vec<String>,
    /// Whether the previous answer failed only because its nonce expired.
    pub stale: bool,
}

impl Challenge {
    /// Whether the challenge offers `qop=auth`.
    pub fn offers_qop_auth(&self) -> bool {
        self.qop.iter().any(|q| q.eq_ignore_ascii_case("auth"))
    }
}

impl FromStr for Challenge {
    type Err = AuthError;

    fn from_str(value: &str) -> Result<Self, AuthError> {
        let params = parse_digest(value)?;
        let algorithm = match params.get("algorithm") {
            Some(a) => a.parse()?,
            None => Algorithm::Md5,
        };
        let qop = params
            .get("qop")
            .map(|q| {
                q.split(',')
                    .map(str::trim)
                    .filter(|q| !q.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Challenge {
            realm: params.require("realm")?.to_owned(),
            nonce: params.require("nonce")?.to_owned(),
            opaque: params.get("opaque").map(str::to_owned),
            algorithm,
            qop,
            stale: params
                .get("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest realm={}", Quoted(&self.realm))?;
        write!(f, ", nonce={}", Quoted(&self.nonce))?;
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", Quoted(opaque))?;
        }
        write!(f, ", algorithm={}", self.algorithm)?;
        if !self.qop.is_empty() {
            write!(f, ", qop={}", Quoted(&self.qop.join(",")))?;
        }
        if self.stale {
            write!(f, ", stale=true")?;
        }
        Ok(())
    }
}

/// A digest answer: the value of `Authorization` or `Proxy-Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The user name.
    pub username: String,
    /// The realm from the challenge.
    pub realm: String,
    /// The nonce from the challenge.
    pub nonce: String,
    /// The digest-uri (the request-URI in SIP).
    pub uri: String,
    /// The response digest in lowercase hex.
    pub response: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The opaque value from the challenge.
    pub opaque: Option<String>,
    /// With `qop=auth`: the client nonce and nonce count. `None` for the no-qop form.
    pub qop_auth: Option<QopAuth>,
}

/// The `qop=auth` parameters of an [`Authorization`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QopAuth {
    /// The client nonce.
    pub cnonce: String,
    /// The nonce count (printed as 8 hex digits).
    pub nc: u32,
}

impl Authorization {
    /// The response digest these parameters call for, given the password and the method.
    pub fn expected_response(&self, password: &str, method: &str) -> String {
        let ha1 = self
            .algorithm
            .hash(&[&self.username, &self.realm, password]);
        let ha2 = self.algorithm.hash(&[method, &self.uri]);
        match &self.qop_auth {
            Some(QopAuth { cnonce, nc }) => {
                let nc = format!("{nc:08x}");
                self.algorithm
                    .hash(&[&ha1, &self.nonce, &nc, cnonce, "auth", &ha2])
            }
            None => self.algorithm.hash(&[&ha1, &self.nonce, &ha2]),
        }
    }
}

impl FromStr for Authorization {
    type Err = AuthError;

    fn from_str(value: &str) -> Result<Self, AuthError> {
        let params = parse_digest(value)?;
        let algorithm = match params.get("algorithm") {
            Some(a) => a.parse()?,
            None => Algorithm::Md5,
        };
        let qop_auth = match params.get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = params.require("nc")?;
                if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(AuthError::InvalidParameter { name: "nc" });
                }
                Some(QopAuth {
                    cnonce: params.require("cnonce")?.to_owned(),
                    nc: u32::from_str_radix(nc, 16)
                        .map_err(|_| AuthError::InvalidParameter { name: "nc" })?,
                })
            }
            Some(other) => return Err(AuthError::UnsupportedQop(other.to_owned())),
        };
        let response = params.require("response")?;
        if response.is_empty() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::InvalidParameter { name: "response" });
        }
        Ok(Authorization {
            username: params.require("username")?.to_owned(),
            realm: params.require("realm")?.to_owned(),
            nonce: params.require("nonce")?.to_owned(),
            uri: params.require("uri")?.to_owned(),
            response: response.to_ascii_lowercase(),
            algorithm,
            opaque: params.get("opaque").map(str::to_owned),
            qop_auth,
        })
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest username={}", Quoted(&self.username))?;
        write!(f, ", realm={}", Quoted(&self.realm))?;
        write!(f, ", nonce={}", Quoted(&self.nonce))?;
        write!(f, ", uri={}", Quoted(&self.uri))?;
        write!(f, ", response={}", Quoted(&self.response))?;
        write!(f, ", algorithm={}", self.algorithm)?;
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", Quoted(opaque))?;
        }
        if let Some(QopAuth { cnonce, nc }) = &self.qop_auth {
            write!(f, ", qop=auth, nc={nc:08x}, cnonce={}", Quoted(cnonce))?;
        }
        Ok(())
    }
}

/// A user's digest credentials (for a trunk's 401/407).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Answers a challenge for a request: `method` (`INVITE`, ...), `uri` (the request-URI),
    /// a fresh client nonce (see [`new_cnonce`]) and the nonce count for this nonce (1 for
    /// the first request with it). Uses `qop=auth` when offered, the no-qop form when the
    /// challenge offers no qop; print the result as the `Authorization` (401) or
    /// `Proxy-Authorization` (407) value.
    pub fn authorize(
        &self,
        challenge: &Challenge,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> Result<Authorization, AuthError> {
        let qop_auth = if challenge.offers_qop_auth() {
            Some(QopAuth {
                cnonce: cnonce.to_owned(),
                nc,
            })
        } else if challenge.qop.is_empty() {
            None
        } else {
            return Err(AuthError::UnsupportedQop(challenge.qop.join(",")));
        };
        let mut authorization = Authorization {
            username: self.username.clone(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_owned(),
            response: String::new(),
            algorithm: challenge.algorithm,
            opaque: challenge.opaque.clone(),
            qop_auth,
        };
        authorization.response = authorization.expected_response(&self.password, method);
        Ok(authorization)
    }
}

/// A fresh random client nonce (16 hex digits).
pub fn new_cnonce() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenge_parameters() {
        let challenge: Challenge = "digest REALM=\"a\\\"b\", nonce=n1,qop=\"auth, auth-int\" ,  stale=TRUE, algorithm=sha-256, opaque=\"x,y\", domain=\"sip:a\""
            .parse()
            .expect("valid challenge");
        assert_eq!(challenge.realm, "a\"b");
        assert_eq!(challenge.nonce, "n1");
        assert_eq!(challenge.qop, ["auth", "auth-int"]);
        assert!(challenge.stale);
        assert!(challenge.offers_qop_auth());
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        assert_eq!(challenge.opaque.as_deref(), Some("x,y"));
        let reparsed: Challenge = challenge.to_string().parse().expect("printed parses");
        assert_eq!(reparsed, challenge);
    }

    #[test]
    fn rejects_bad_headers() {
        let parse = |s: &str| s.parse::<Challenge>();
        assert_eq!(
            parse("Basic realm=\"x\""),
            Err(AuthError::UnsupportedScheme("Basic".into()))
        );
        assert_eq!(
            parse("Digest realm=\"x"),
            Err(AuthError::Malformed { position: 15 })
        );
        assert_eq!(
            parse("Digest realm"),
            Err(AuthError::Malformed { position: 12 })
        );
        assert_eq!(
            parse("Digest realm=x nonce=y"),
            Err(AuthError::Malformed { position: 15 })
        );
        assert_eq!(
            parse("Digest nonce=y"),
            Err(AuthError::MissingParameter("realm"))
        );
        assert_eq!(
            parse("Digest realm=x, realm=y, nonce=z"),
            Err(AuthError::DuplicateParameter("realm".into()))
        );
        assert_eq!(
            parse("Digest realm=x, nonce=z, algorithm=MD5-sess"),
            Err(AuthError::UnsupportedAlgorithm("MD5-sess".into()))
        );
        assert_eq!(
            parse("Digest realm=\"é\", nonce=z").map(|c| c.realm),
            Ok("é".to_owned())
        );
    }

    #[test]
    fn authorization_round_trips_and_checks_nc() {
        let text = "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"n\", uri=\"sip:bob@biloxi.com\", response=\"ABCDEF\", qop=auth, nc=0000000a, cnonce=\"c\"";
        let auth: Authorization = text.parse().expect("valid");
        assert_eq!(auth.response, "abcdef");
        assert_eq!(auth.qop_auth.as_ref().map(|q| q.nc), Some(10));
        assert_eq!(auth.to_string().parse::<Authorization>(), Ok(auth));
        let bad_nc = text.replace("0000000a", "1");
        assert_eq!(
            bad_nc.parse::<Authorization>(),
            Err(AuthError::InvalidParameter { name: "nc" })
        );
        let no_cnonce = text.replace(", cnonce=\"c\"", "");
        assert_eq!(
            no_cnonce.parse::<Authorization>(),
            Err(AuthError::MissingParameter("cnonce"))
        );
        let auth_int = text.replace("qop=auth", "qop=auth-int");
        assert_eq!(
            auth_int.parse::<Authorization>(),
            Err(AuthError::UnsupportedQop("auth-int".into()))
        );
    }

    #[test]
    fn client_refuses_auth_int_only() {
        let challenge: Challenge = "Digest realm=r, nonce=n, qop=auth-int"
            .parse()
            .expect("valid");
        let credentials = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(
            credentials.authorize(&challenge, "INVITE", "sip:x", "c", 1),
            Err(AuthError::UnsupportedQop("auth-int".into()))
        );
        assert!(format!("{credentials:?}").contains("<redacted>"));
        assert_eq!(new_cnonce().len(), 16);
    }
}
