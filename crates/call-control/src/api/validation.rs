//! Request-body validation that names every bad field at once.
//!
//! A [`Body`] wraps a JSON object; typed getters take fields out of it, record a message for
//! each one that is missing or malformed, and [`Body::finish`] turns the collected messages
//! (plus any field nobody asked for) into one 422 `validation_error`.
//!
//! An optional field sent as `null` is "not given", the same as leaving it out, for every getter
//! except the nullable ones ([`Body::nullable_string`], [`Body::text`]), where `null` clears the
//! value (PATCH).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Field name (dotted for nested fields) to what is wrong with it.
pub type FieldErrors = BTreeMap<String, String>;

/// A JSON object being validated.
#[derive(Debug)]
pub struct Body {
    prefix: String,
    map: Map<String, Value>,
    errors: FieldErrors,
}

impl Body {
    /// Parses a request body, which must be a JSON object (an empty body counts as `{}`).
    pub fn parse(bytes: &[u8]) -> Result<Body, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body::from_map(String::new(), Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Body::from_map(String::new(), map)),
            Ok(_) => Err(ApiError::InvalidJson {
                message: "the request body must be a JSON object".to_owned(),
            }),
            Err(err) => Err(ApiError::InvalidJson {
                message: format!(
                    "the request body is not valid JSON: {} at line {}, column {}",
                    match err.classify() {
                        serde_json::error::Category::Eof => "it ends too early",
                        _ => "unexpected text",
                    },
                    err.line(),
                    err.column()
                ),
            }),
        }
    }

    fn from_map(prefix: String, map: Map<String, Value>) -> Body {
        Body {
            prefix,
            map,
            errors: FieldErrors::new(),
        }
    }

    /// The full (dotted) name of a field of this object.
    pub fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// Records that `field` is invalid (the first message per field wins).
    pub fn invalid(&mut self, field: &str, message: impl Into<String>) {
        let name = self.name(field);
        self.errors.entry(name).or_insert_with(|| message.into());
    }

    /// Whether `field` is given (`null` counts as not given).
    pub fn has(&self, field: &str) -> bool {
        self.map.get(field).is_some_and(|value| !value.is_null())
    }

    /// `field` as JSON, left in place for the typed getters.
    pub fn peek(&self, field: &str) -> Option<&Value> {
        self.map.get(field)
    }

    /// Takes `field` as JSON for a check of the caller's own; `None` when it is absent or
    /// `null` (an optional field not given).
    pub fn value(&mut self, field: &str) -> Option<Value> {
        self.take(field)
    }

    /// Removes `field`; `None` when it is absent or `null` (an optional field not given).
    fn take(&mut self, field: &str) -> Option<Value> {
        self.map.remove(field).filter(|value| !value.is_null())
    }

    /// Records `is required` for every listed field that is absent or null.
    pub fn require(&mut self, fields: &[&str]) {
        for field in fields {
            if matches!(self.map.get(*field), None | Some(Value::Null)) {
                self.invalid(field, "is required");
            }
        }
    }

    /// Takes a string field of `1..=max_len` characters; absent or null gives `None`.
    pub fn string(&mut self, field: &str, max_len: usize) -> Option<String> {
        match self.take(field)? {
            Value::String(s) => self.check_len(field, s, max_len),
            other => {
                self.invalid(field, format!("must be a string, not {}", shown(&other)));
                None
            }
        }
    }

    /// Takes a string field that may be null: `None` when absent, `Some(None)` when null.
    pub fn nullable_string(&mut self, field: &str, max_len: usize) -> Option<Option<String>> {
        match self.map.remove(field)? {
            Value::Null => Some(None),
            Value::String(s) => self.check_len(field, s, max_len).map(Some),
            _ => {
                self.invalid(field, "must be a string or null");
                None
            }
        }
    }

    /// Takes free text that may be empty or null: `None` when absent, `Some(None)` when null or
    /// empty.
    pub fn text(&mut self, field: &str, max_len: usize) -> Option<Option<String>> {
        match self.map.remove(field)? {
            Value::Null => Some(None),
            Value::String(s) if s.is_empty() => Some(None),
            Value::String(s) if s.chars().count() <= max_len => Some(Some(s)),
            Value::String(_) => {
                self.invalid(field, format!("must be at most {max_len} characters long"));
                None
            }
            _ => {
                self.invalid(field, "must be a string or null");
                None
            }
        }
    }

    /// Takes a boolean field; absent or null gives `None`.
    pub fn bool(&mut self, field: &str) -> Option<bool> {
        match self.take(field)? {
            Value::Bool(b) => Some(b),
            other => {
                self.invalid(
                    field,
                    format!("must be true or false, not {}", shown(&other)),
                );
                None
            }
        }
    }

    /// Takes an integer field in `min..=max`; absent or null gives `None`.
    pub fn u32_in(&mut self, field: &str, min: u32, max: u32) -> Option<u32> {
        let value = self.take(field)?;
        match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.invalid(
                    field,
                    format!(
                        "must be an integer from {min} to {max}, not {}",
                        shown(&value)
                    ),
                );
                None
            }
        }
    }

    /// Takes a list of strings (each `1..=max_len` characters); absent or null gives `None`.
    pub fn string_list(&mut self, field: &str, max_len: usize) -> Option<Vec<String>> {
        let Value::Array(items) = self.take(field)? else {
            self.invalid(field, "must be a list of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Value::String(s) if !s.is_empty() && s.chars().count() <= max_len => out.push(s),
                _ => self.invalid(
                    &format!("{field}[{i}]"),
                    format!("must be a string of 1 to {max_len} characters"),
                ),
            }
        }
        Some(out)
    }

    /// Takes an object whose values are all strings; absent or null gives `None`.
    pub fn string_map(&mut self, field: &str) -> Option<BTreeMap<String, String>> {
        let Value::Object(map) = self.take(field)? else {
            self.invalid(field, "must be an object of string values");
            return None;
        };
        let mut out = BTreeMap::new();
        for (key, value) in map {
            match value {
                Value::String(s) => {
                    out.insert(key, s);
                }
                _ => self.invalid(&format!("{field}.{key}"), "must be a string"),
            }
        }
        Some(out)
    }

    /// Takes a number field (integer or not); absent or null gives `None`.
    pub fn number(&mut self, field: &str) -> Option<f64> {
        let value = self.take(field)?;
        match value.as_f64() {
            Some(number) => Some(number),
            None => {
                self.invalid(field, format!("must be a number, not {}", shown(&value)));
                None
            }
        }
    }

    /// Takes a string field naming one of `all` (its `Display` names); absent or null gives
    /// `None`. A bad value is reported with what was given and what is allowed:
    /// `"published" is not one of draft, active, paused`.
    pub fn enumeration<T>(&mut self, field: &str, all: &[T]) -> Option<T>
    where
        T: std::str::FromStr + std::fmt::Display + PartialEq,
    {
        let value = self.take(field)?;
        if let Value::String(text) = &value {
            // Only the values offered: a name the type knows but `all` leaves out (an
            // agent's `archived`) is refused like an unknown one.
            if let Some(parsed) = text.parse().ok().filter(|parsed| all.contains(parsed)) {
                return Some(parsed);
            }
        }
        self.invalid(field, not_one_of(&value, all));
        None
    }

    /// Takes a string field that must be one of `names`; absent or null gives `None`.
    pub fn choice(&mut self, field: &str, names: &[&'static str]) -> Option<&'static str> {
        let value = self.take(field)?;
        if let Some(name) = value
            .as_str()
            .and_then(|text| names.iter().find(|name| **name == text))
        {
            return Some(name);
        }
        self.invalid(field, not_one_of(&value, names));
        None
    }

    /// Takes a duration field within `1..=max_secs` seconds, given as a string such as `"30s"`,
    /// `"5m"`, `"1h"` under `field`, or as an integer of seconds under `alias_secs` (the older
    /// spelling, e.g. `join_timeout_secs`); absent or null gives `None`.
    pub fn duration(&mut self, field: &str, alias_secs: &str, max_secs: u32) -> Option<u32> {
        let range =
            || format!("must be a duration from \"1s\" to \"{max_secs}s\" (e.g. \"30s\", \"5m\")");
        match (self.take(field), self.take(alias_secs)) {
            (Some(_), Some(_)) => {
                self.invalid(
                    alias_secs,
                    format!("give {field} or {alias_secs}, not both"),
                );
                None
            }
            (Some(Value::String(text)), None) => match crate::model::parse_duration_secs(&text) {
                Ok(secs) if (1..=max_secs).contains(&secs) => Some(secs),
                _ => {
                    self.invalid(
                        field,
                        format!("{} {}", shown(&Value::String(text)), range()),
                    );
                    None
                }
            },
            (Some(other), None) => {
                self.invalid(field, format!("{} {}", shown(&other), range()));
                None
            }
            (None, Some(value)) => match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
                Some(secs) if (1..=max_secs).contains(&secs) => Some(secs),
                _ => {
                    self.invalid(
                        alias_secs,
                        format!(
                            "must be an integer from 1 to {max_secs}, not {}",
                            shown(&value)
                        ),
                    );
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// Takes a list of objects (absent or null gives `None`); each is a [`Body`] named
    /// `field[i].`, to validate and hand back with [`Body::absorb`]. Items that are not
    /// objects are recorded as invalid and left out.
    pub fn object_list(&mut self, field: &str) -> Option<Vec<Body>> {
        let Value::Array(items) = self.take(field)? else {
            self.invalid(field, "must be a list of objects");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let name = format!("{field}[{i}]");
            match item {
                Value::Object(map) => {
                    out.push(Body::from_map(format!("{}.", self.name(&name)), map));
                }
                other => self.invalid(&name, format!("must be an object, not {}", shown(&other))),
            }
        }
        Some(out)
    }

    /// Drops the fields nobody took, so that [`Body::finish`] does not report them (when an
    /// earlier error, such as an unknown `type`, makes them meaningless).
    pub fn ignore_rest(&mut self) {
        self.map.clear();
    }

    /// Takes a field and deserializes it with serde; absent or null gives `None`. A value
    /// serde refuses is reported in the API's words ([`serde_problem`]), never the parser's.
    pub fn typed<T: DeserializeOwned>(&mut self, field: &str) -> Option<T> {
        let value = self.take(field)?;
        match serde_json::from_value(value.clone()) {
            Ok(v) => Some(v),
            Err(err) => {
                self.invalid(field, serde_problem(&err.to_string(), &value));
                None
            }
        }
    }

    /// Takes a nested object (absent or null gives `None`); validate it, then hand it back with
    /// [`Body::absorb`].
    pub fn object(&mut self, field: &str) -> Option<Body> {
        match self.take(field)? {
            Value::Object(map) => Some(Body::from_map(format!("{}.", self.name(field)), map)),
            _ => {
                self.invalid(field, "must be an object");
                None
            }
        }
    }

    /// Takes a nested object that may be null: `None` when absent, `Some(None)` when null
    /// (PATCH: remove it), `Some(Some(body))` to validate and hand back with [`Body::absorb`].
    pub fn nullable_object(&mut self, field: &str) -> Option<Option<Body>> {
        match self.map.remove(field)? {
            Value::Null => Some(None),
            Value::Object(map) => Some(Some(Body::from_map(format!("{}.", self.name(field)), map))),
            other => {
                self.invalid(
                    field,
                    format!("must be an object or null, not {}", shown(&other)),
                );
                None
            }
        }
    }

    /// Merges the errors (and unknown fields) of a nested object taken with [`Body::object`].
    pub fn absorb(&mut self, nested: Body) {
        let Body {
            prefix,
            map,
            errors,
        } = nested;
        for field in map.keys() {
            self.errors
                .entry(format!("{prefix}{field}"))
                .or_insert_with(|| "is not a known field".to_owned());
        }
        self.errors.extend(errors);
    }

    /// Whether any error was recorded so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Ends validation: 422 naming every bad or unknown field, or `Ok`.
    pub fn finish(self) -> Result<(), ApiError> {
        let mut errors = self.errors;
        for field in self.map.keys() {
            errors
                .entry(format!("{}{field}", self.prefix))
                .or_insert_with(|| "is not a known field".to_owned());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation { fields: errors })
        }
    }

    fn check_len(&mut self, field: &str, s: String, max_len: usize) -> Option<String> {
        let len = s.chars().count();
        if len == 0 || len > max_len {
            self.invalid(field, format!("must be 1 to {max_len} characters long"));
            return None;
        }
        Some(s)
    }
}

/// How a value a client sent is quoted in a message: strings in quotes, short values as JSON,
/// objects and lists by kind.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(text) if text.chars().count() <= 64 => format!("{text:?}"),
        Value::String(_) => "a long string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        other => other.to_string(),
    }
}

/// A serde message about `value` in the API's words: `unknown variant `x`, expected one of
/// `a`, `b`` becomes `"x" is not one of a, b`, `missing field `url`` becomes
/// `url is required`, an invalid type says what was given; backquotes never show.
pub fn serde_problem(message: &str, value: &Value) -> String {
    // serde_json appends " at line L column C" when it knows a position.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head);
    let names = |list: &str| -> String {
        list.split([',', ' '])
            .filter(|word| word.starts_with('`'))
            .map(|word| word.trim_matches('`'))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((given, expected)) = rest.split_once("`, expected ") {
            return format!("{given:?} is not one of {}", names(expected));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((given, _)) = rest.split_once('`') {
            return format!("{given} is not a known field");
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("{} is required", rest.trim_end_matches('`'));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((_, expected)) = rest.split_once(", expected ") {
            return format!(
                "must be {}, not {}",
                expected.replace('`', ""),
                shown(value)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((_, expected)) = rest.split_once(", expected ") {
            return format!(
                "must be {}, not {}",
                expected.replace('`', ""),
                shown(value)
            );
        }
    }
    message.replace('`', "\"")
}

/// `"jump" is not one of say, tone, ...`: the value given and the names allowed.
fn not_one_of<T: std::fmt::Display>(value: &Value, all: &[T]) -> String {
    let names: Vec<String> = all.iter().map(ToString::to_string).collect();
    format!("{} is not one of {}", shown(value), names.join(", "))
}

/// The message for a value that is not one of `values`: "must be one of a, b, c".
pub fn one_of<T: std::fmt::Display>(values: &[T]) -> String {
    let names: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("must be one of {}", names.join(", "))
}

/// The query parameter `field` parsed as a value of an enumeration whose values are `all`;
/// `None` when it is absent, or when it names no value (then recorded in `errors`).
pub fn query_enum<T>(
    query: &std::collections::HashMap<String, String>,
    field: &str,
    all: &[T],
    errors: &mut FieldErrors,
) -> Option<T>
where
    T: std::str::FromStr + std::fmt::Display,
{
    let text = query.get(field)?;
    match text.parse() {
        Ok(value) => Some(value),
        Err(_) => {
            errors.insert(
                field.to_owned(),
                not_one_of(&Value::String(text.clone()), all),
            );
            None
        }
    }
}

/// Whether `cidr` is an IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
pub fn is_cidr(cidr: &str) -> bool {
    // The parser the engine matches sources with: what is accepted here is what it uses.
    cidr.trim() == cidr && crate::engine::inbound::parse_network(cidr).is_some()
}

/// Whether `host` is an IP address or a DNS name (letters, digits, `-`, `.`; at most 253).
pub fn is_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `url` parses and uses one of `schemes`, with a host.
pub fn is_url(url: &str, schemes: &[&str]) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| schemes.contains(&u.scheme()) && u.host_str().is_some_and(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerations_take_only_the_values_offered() {
        use crate::model::AgentStatus;
        let offered = [AgentStatus::Draft, AgentStatus::Active];
        let mut body =
            Body::parse(br#"{"status": "archived", "other": "active"}"#).expect("object");
        assert_eq!(body.enumeration("status", &offered), None);
        assert_eq!(
            body.enumeration("other", &offered),
            Some(AgentStatus::Active)
        );
        let fields = match body.finish() {
            Err(ApiError::Validation { fields }) => fields,
            other => panic!("archived was accepted: {other:?}"),
        };
        assert!(fields["status"].contains("draft, active"), "{fields:?}");
    }

    #[test]
    fn cidrs_and_hosts() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("127.0.0.1"));
        assert!(is_cidr("2001:db8::/32"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0/8"));
        assert!(!is_cidr("10.0.0.0/"));
        assert!(is_host("sip.example.com"));
        assert!(is_host("127.0.0.1"));
        assert!(!is_host("bad host"));
        assert!(!is_host(""));
        assert!(is_url("https://example.com/hook", &["http", "https"]));
        assert!(!is_url("ftp://example.com", &["http", "https"]));
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut body = Body::parse(br#"{"name": 5, "extra": 1, "settings": {"x": true, "n": 0}}"#)
            .expect("object");
        body.require(&["name", "prompt"]);
        let _ = body.string("name", 10);
        if let Some(mut nested) = body.object("settings") {
            let _ = nested.u32_in("n", 1, 10);
            body.absorb(nested);
        }
        let Err(ApiError::Validation { fields }) = body.finish() else {
            panic!("expected a validation error");
        };
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["extra", "name", "prompt", "settings.n", "settings.x"]
        );
    }

    #[test]
    fn serde_messages_are_put_in_the_api_words() {
        let status = serde_problem(
            "unknown variant `published`, expected one of `draft`, `active`, `paused`",
            &Value::String("published".into()),
        );
        assert_eq!(status, "\"published\" is not one of draft, active, paused");
        let pair = serde_problem(
            "unknown variant `x`, expected `a` or `b` at line 1 column 3",
            &Value::String("x".into()),
        );
        assert_eq!(pair, "\"x\" is not one of a, b");
        assert_eq!(
            serde_problem("missing field `url`", &Value::Null),
            "url is required"
        );
        assert_eq!(
            serde_problem(
                "invalid type: string \"7\", expected u32",
                &Value::String("7".into())
            ),
            "must be u32, not \"7\""
        );
        let mut body = Body::parse(br#"{"mode": "fast", "n": null}"#).expect("object");
        assert_eq!(body.typed::<crate::model::AgentStatus>("mode"), None);
        assert_eq!(body.typed::<u32>("n"), None, "null is not given");
        let Err(ApiError::Validation { fields }) = body.finish() else {
            panic!("expected a validation error");
        };
        assert_eq!(
            fields["mode"],
            "\"fast\" is not one of draft, active, paused, archived"
        );
    }

    #[test]
    fn rejects_non_objects() {
        assert!(matches!(
            Body::parse(b"[1]"),
            Err(ApiError::InvalidJson { .. })
        ));
        let Err(ApiError::InvalidJson { message }) = Body::parse(b"{") else {
            panic!("expected invalid JSON");
        };
        assert_eq!(
            message,
            "the request body is not valid JSON: it ends too early at line 1, column 1"
        );
        assert!(Body::parse(b"  ").is_ok());
    }
}
