//! Our own reading of a request's start line (RFC 3261 7.1, 25.1), so that `rsip` never has to
//! accept what it cannot represent: extension methods (`!interesting-Method...`, `RE%47IST%45R`),
//! a `;` or `?` in the user part of a SIP URI, and schemes other than `sip`/`sips`.
//!
//! `rsip` still tokenizes the header section: [`parse`](super::parse) hands it a placeholder
//! start line and puts the method and Request-URI read here into the result.

use rsip::common::uri::Auth;

use super::header::{is_token_byte, rsip_uri};
use super::{MessageError, Method, Uri};

/// What the start line of a request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestLine<'a> {
    /// The method token exactly as written (methods are case-sensitive).
    pub(crate) method: &'a str,
    /// The Request-URI exactly as written.
    pub(crate) uri: &'a str,
}

/// A Request-URI, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestUri {
    /// A `sip:` or `sips:` URI.
    Sip(Uri),
    /// A well-formed absolute URI of another scheme (answered 416 by a SIP UA).
    Other {
        /// The scheme, as written.
        scheme: String,
    },
}

/// Reads `Method SP Request-URI SP SIP-Version` with exactly one SP between the three parts
/// and none after the version (RFC 4475 3.1.2.9, 3.1.2.10).
pub(crate) fn request_line(line: &str) -> Result<RequestLine<'_>, MessageError> {
    let syntax = |reason: &str| MessageError::Syntax {
        reason: format!("request line: {reason}"),
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(syntax(
            "expected `Method SP Request-URI SP SIP/2.0` with single spaces",
        ));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(syntax("the method is not a token"));
    }
    if uri.is_empty() {
        return Err(syntax("empty Request-URI"));
    }
    check_version(version)?;
    Ok(RequestLine { method, uri })
}

/// `SIP/2.0` (the protocol name is case-insensitive); another `SIP/x.y` is
/// [`MessageError::UnsupportedVersion`] (answered 505), anything else a syntax error.
fn check_version(version: &str) -> Result<(), MessageError> {
    let Some((name, number)) = version.split_once('/') else {
        return Err(MessageError::Syntax {
            reason: format!("request line: bad SIP-Version {version:?}"),
        });
    };
    let numeric = number
        .split_once('.')
        .is_some_and(|(major, minor)| all_digits(major) && all_digits(minor));
    if !name.eq_ignore_ascii_case("SIP") || !numeric {
        return Err(MessageError::Syntax {
            reason: format!("request line: bad SIP-Version {version:?}"),
        });
    }
    if number != "2.0" {
        return Err(MessageError::UnsupportedVersion {
            version: version.to_owned(),
        });
    }
    Ok(())
}

/// The RFC 3261 method this stack knows by that exact (upper-case) name; `None` for an extension
/// method. `%` is no escape here: `RE%47IST%45R` is not REGISTER (RFC 4475 3.1.1.5).
pub(crate) fn known_method(method: &str) -> Option<Method> {
    Method::all()
        .into_iter()
        .find(|known| known.to_string() == method)
}

/// Reads a Request-URI: `sip`/`sips` URIs into a [`Uri`], other absolute URIs as their scheme.
/// Angle brackets (RFC 4475 3.1.2.7) and escaped headers (3.1.2.11) are errors.
pub(crate) fn request_uri(text: &str) -> Result<RequestUri, MessageError> {
    let bad = || MessageError::InvalidRequestUri {
        uri: super::truncated(text, 128).to_owned(),
    };
    let (scheme, rest) = text.split_once(':').ok_or_else(bad)?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let bytes_ok = text
        .bytes()
        .all(|b| b > 0x20 && b < 0x7f && !matches!(b, b'<' | b'>' | b'"'));
    if !scheme_ok || !bytes_ok || rest.is_empty() {
        return Err(bad());
    }
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Ok(RequestUri::Other {
            scheme: scheme.to_owned(),
        });
    }
    sip_uri(scheme, rest, true)
        .map(RequestUri::Sip)
        .map_err(|_| bad())
}

/// A SIP URI whose user part may hold everything RFC 3261 allows there (`;`, `?`, `/`, ...),
/// which `rsip` would take for parameters: the userinfo is split off here, the host, port and
/// parameters are read by `rsip`. A Request-URI (`request_uri`) may not carry headers.
pub(crate) fn sip_uri(scheme: &str, rest: &str, request_uri: bool) -> Result<Uri, MessageError> {
    let bad = || MessageError::invalid("URI", rest);
    // '@' cannot appear unescaped in a userinfo, so the first one ends it.
    let (userinfo, host_part) = match rest.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    if request_uri && host_part.contains('?') {
        return Err(bad());
    }
    let auth = match userinfo {
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let user_ok = !user.is_empty() && valid_chars(user, b"&=+$,;?/");
            let password_ok = password.is_none_or(|password| valid_chars(password, b"&=+$,"));
            if !user_ok || !password_ok {
                return Err(bad());
            }
            Some(Auth {
                user: user.to_owned(),
                password: password.map(str::to_owned),
            })
        }
        None => None,
    };
    let mut uri = rsip_uri(&format!("{scheme}:{host_part}"))?;
    if uri.auth.is_some() {
        return Err(bad());
    }
    uri.auth = auth;
    Ok(uri)
}

/// unreserved / escaped / the extra characters allowed in that URI component.
fn valid_chars(text: &str, extra: &[u8]) -> bool {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let escaped = bytes
                .get(index + 1..index + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
            if !escaped {
                return false;
            }
            index += 3;
            continue;
        }
        let unreserved = byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte);
        if !unreserved && !extra.contains(&byte) {
            return false;
        }
        index += 1;
    }
    true
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_needs_single_spaces_and_sip_2_0() {
        let line = request_line("NEWMETHOD sip:a@b SIP/2.0").expect("valid");
        assert_eq!((line.method, line.uri), ("NEWMETHOD", "sip:a@b"));
        assert!(request_line("INVITE  sip:a@b SIP/2.0").is_err());
        assert!(request_line("INVITE sip:a@b SIP/2.0 ").is_err());
        assert!(request_line("INV(TE sip:a@b SIP/2.0").is_err());
        assert!(request_line("INVITE sip:a@b HTTP/1.1").is_err());
        assert_eq!(
            request_line("OPTIONS sip:a@b SIP/7.0"),
            Err(MessageError::UnsupportedVersion {
                version: "SIP/7.0".into()
            })
        );
    }

    #[test]
    fn methods_are_case_sensitive_and_percent_is_no_escape() {
        assert_eq!(known_method("INVITE"), Some(Method::Invite));
        assert_eq!(known_method("PRACK"), Some(Method::PRack));
        assert_eq!(known_method("invite"), None);
        assert_eq!(known_method("RE%47IST%45R"), None);
    }

    #[test]
    fn user_part_may_hold_semicolons_and_escapes() {
        let RequestUri::Sip(uri) =
            request_uri("sip:user;par=u%40example.net@example.com").expect("valid")
        else {
            panic!("a SIP URI")
        };
        assert_eq!(uri.user(), Some("user;par=u%40example.net"));
        assert_eq!(uri.host().to_string(), "example.com");
        assert_eq!(uri.to_string(), "sip:user;par=u%40example.net@example.com");
        let RequestUri::Sip(uri) =
            request_uri("sip:u:pa$s@h.example:5070;transport=tcp").expect("valid")
        else {
            panic!("a SIP URI")
        };
        assert_eq!(
            uri.auth.and_then(|auth| auth.password).as_deref(),
            Some("pa$s")
        );
    }

    #[test]
    fn other_schemes_and_broken_uris() {
        assert_eq!(
            request_uri("nobodyKnowsThisScheme:totallyopaquecontent"),
            Ok(RequestUri::Other {
                scheme: "nobodyKnowsThisScheme".into()
            })
        );
        assert!(request_uri("<sip:user@example.com>").is_err());
        assert!(request_uri("sip:user@example.com?Route=%3Csip:example.com%3E").is_err());
        assert!(request_uri("sip:us er@example.com").is_err());
        assert!(request_uri("sip:user%zz@example.com").is_err());
        assert!(request_uri("noscheme").is_err());
    }
}
