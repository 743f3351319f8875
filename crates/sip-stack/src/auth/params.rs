//! The `auth-param` list grammar of Digest headers (RFC 7235, RFC 7616): tokens and
//! quoted-strings with backslash escapes.

use std::fmt;

use super::AuthError;

/// Writes a quoted-string, escaping `"` and `\`.
pub(super) struct Quoted<'a>(pub(super) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

/// The parameters of a Digest header value, names lowercased.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn require(&self, name: &'static str) -> Result<&str, AuthError> {
        self.get(name).ok_or(AuthError::MissingParameter(name))
    }
}

/// Parses `Digest name=value, name="quoted", ...`.
pub(super) fn parse_digest(value: &str) -> Result<Params, AuthError> {
    let value = value.trim_start();
    let scheme_end = value
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::UnsupportedScheme(scheme.to_owned()));
    }
    let bytes = rest.as_bytes();
    let offset = value.len() - rest.len();
    let malformed = |i: usize| AuthError::Malformed {
        position: offset + i,
    };
    let skip_space = |mut i: usize| {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        i
    };
    let mut params: Vec<(String, String)> = Vec::new();
    let mut i = skip_space(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(malformed(i));
        }
        let name = rest[start..i].to_ascii_lowercase();
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(malformed(i));
        }
        i = skip_space(i + 1);
        let mut parsed = String::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(malformed(i)),
                    Some(b'"') => break,
                    Some(b'\\') if i + 1 < bytes.len() => i += 1,
                    Some(_) => {}
                }
                // Copy one whole character (quoted strings may hold UTF-8).
                let ch = rest[i..].chars().next().ok_or_else(|| malformed(i))?;
                parsed.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && is_token_byte(bytes[i]) {
                i += 1;
            }
            if i == start {
                return Err(malformed(i));
            }
            parsed.push_str(&rest[start..i]);
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(AuthError::DuplicateParameter(name));
        }
        params.push((name, parsed));
        i = skip_space(i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i = skip_space(i + 1),
            Some(_) => return Err(malformed(i)),
        }
    }
    Ok(Params(params))
}

/// RFC 7230 tchar.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
