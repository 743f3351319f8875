//! How each configuration value is read: every key takes its text form (a TOML string,
//! number or boolean, or an environment variable's value), trimmed, and parses it with the
//! rules of its key. Used as `#[serde(deserialize_with = "...")]` on the section structs,
//! so the file and the environment go through the same code.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

use super::{LogFormat, OutboundProxy, MAX_CHARGE_MULTIPLIER};

/// A value's text form: TOML scalars as they are written, anything else refused.
struct Text(String);

impl<'de> de::Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
                Ok(Text(value.trim().to_owned()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
                Ok(Text(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
                Ok(Text(value.to_string()))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Text, E> {
                Ok(Text(value.to_string()))
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Text, E> {
                Ok(Text(value.to_string()))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    <Text as de::Deserialize>::deserialize(deserializer).map(|Text(text)| text)
}

fn parse_text<T>(value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.parse().map_err(|error: T::Err| error.to_string())
}

/// Any `FromStr` value.
pub(super) fn parsed<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    parse_text(&text(deserializer)?).map_err(de::Error::custom)
}

/// A number above zero.
pub(super) fn positive<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Default + PartialEq,
    T::Err: fmt::Display,
{
    let parsed: T = parsed(deserializer)?;
    if parsed == T::default() {
        return Err(de::Error::custom("must be greater than zero"));
    }
    Ok(parsed)
}

/// A number of zero or more.
pub(super) fn non_negative<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let cents: i64 = parsed(deserializer)?;
    if cents < 0 {
        return Err(de::Error::custom("must not be negative"));
    }
    Ok(cents)
}

/// An optional value: empty text means none (so an empty environment variable unsets what
/// the file set).
pub(super) fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let value = text(deserializer)?;
    if value.is_empty() {
        Ok(None)
    } else {
        parse_text(&value).map(Some).map_err(de::Error::custom)
    }
}

/// `true`/`false` (any case), `1`/`0`.
pub(super) fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match text(deserializer)?.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(de::Error::custom("expected true or false")),
    }
}

/// A non-empty directory path.
pub(super) fn directory<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let value = text(deserializer)?;
    if value.is_empty() {
        return Err(de::Error::custom("expected a directory path"));
    }
    Ok(PathBuf::from(value))
}

/// A sqlx URL of a backend the store runs on: SQLite or PostgreSQL.
pub(super) fn database_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = text(deserializer)?;
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|scheme| value.starts_with(scheme)) {
        return Err(de::Error::custom(
            "expected a sqlite: or postgres:// URL such as sqlite://dialcore.db \
             or postgres://dialcore@127.0.0.1/dialcore",
        ));
    }
    Ok(value)
}

/// An E.164 number.
pub(super) fn e164<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = text(deserializer)?;
    if !crate::model::is_e164(&value) {
        return Err(de::Error::custom(
            "expected an E.164 number such as +15550100000",
        ));
    }
    Ok(value)
}

/// A whole number from 0 to [`MAX_CHARGE_MULTIPLIER`].
pub(super) fn charge_multiplier<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    match text(deserializer)?.parse::<u32>() {
        Ok(multiplier) if multiplier <= MAX_CHARGE_MULTIPLIER => Ok(multiplier),
        _ => Err(de::Error::custom(format!(
            "expected a whole number from 0 to {MAX_CHARGE_MULTIPLIER}"
        ))),
    }
}

/// A `tracing` filter directive.
pub(super) fn log_level<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = text(deserializer)?;
    tracing_subscriber::EnvFilter::try_new(&value).map_err(de::Error::custom)?;
    Ok(value)
}

/// `text` or `json`, any case.
pub(super) fn log_format<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<LogFormat, D::Error> {
    match text(deserializer)?.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(de::Error::custom("expected \"text\" or \"json\"")),
    }
}

/// `MD5,SHA-256`: digest algorithms, at least one, each once.
pub(super) fn digest_algorithms<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<sip_stack::auth::Algorithm>, D::Error> {
    let value = text(deserializer)?;
    let mut algorithms = Vec::new();
    for name in value.split(',') {
        let algorithm: sip_stack::auth::Algorithm = name.trim().parse().map_err(|_| {
            de::Error::custom(format!(
                "expected MD5 and/or SHA-256, comma-separated, not {name:?}"
            ))
        })?;
        if algorithms.contains(&algorithm) {
            return Err(de::Error::custom(format!("{algorithm} is listed twice")));
        }
        algorithms.push(algorithm);
    }
    Ok(algorithms)
}

/// The secret key, 32 bytes as base64 or hex (empty: none). Its text is never repeated in
/// an error (see `Config::build`, which redacts the value).
pub(super) fn secret_key<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<crate::secrets::SecretKey>, D::Error> {
    let value = text(deserializer)?;
    if value.is_empty() {
        return Ok(None);
    }
    crate::secrets::SecretKey::parse(&value)
        .map(Some)
        .map_err(de::Error::custom)
}

/// A duration: `90s`, `30m`, `1h`, or a number of seconds.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let value = text(deserializer)?;
    crate::model::parse_duration_secs(&value)
        .map(|secs| Duration::from_secs(u64::from(secs)))
        .map_err(|_| {
            de::Error::custom("expected a duration such as \"90s\", \"30m\" or \"1h\", or seconds")
        })
}

/// A node's lease: a duration of at least [`MIN_LEASE_SECS`].
pub(super) fn lease<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let lease = duration(deserializer)?;
    if lease.as_secs() < MIN_LEASE_SECS {
        return Err(de::Error::custom(format!(
            "a lease shorter than {MIN_LEASE_SECS}s would expire between heartbeats"
        )));
    }
    Ok(lease)
}

/// Shortest `[node] lease`, seconds.
pub(super) const MIN_LEASE_SECS: u64 = 3;

/// A node id: what the node's calls and runs are recorded with.
pub(super) fn node_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = text(deserializer)?;
    check_node_id(&value).map_err(de::Error::custom)?;
    Ok(value)
}

/// Longest node id.
pub(super) const MAX_NODE_ID_LEN: usize = 64;

fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("expected a node id such as dialcore-1".into());
    }
    if id.len() > MAX_NODE_ID_LEN {
        return Err(format!("at most {MAX_NODE_ID_LEN} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only letters, digits, `-`, `_` and `.`".into());
    }
    Ok(())
}

/// `host:port` that other nodes can reach (empty: none).
pub(super) fn advertised_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = text(deserializer)?;
    if value.is_empty() {
        return Ok(None);
    }
    let (host, port) = split_host_port(&value)
        .ok_or_else(|| de::Error::custom("expected host:port, e.g. 10.0.0.5:8080"))?;
    if matches!(port, None | Some(0)) {
        return Err(de::Error::custom(
            "expected host:port with a port from 1 to 65535",
        ));
    }
    if host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(de::Error::custom(
            "an unspecified address (0.0.0.0, ::) cannot be reached by other nodes",
        ));
    }
    Ok(Some(value))
}

/// `sip:host:port;transport=udp`, `host:port` or `host` (empty: none).
pub(super) fn outbound_proxy<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OutboundProxy>, D::Error> {
    optional(deserializer)
}

/// `host` and its port when given: `host:port`, `[v6]:port`, `[v6]`, `host`. `None` when
/// the host is empty, the brackets unbalanced or the port not a number.
pub(super) fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')));
    if !valid_host {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("10.0.0.5:8080"),
            Some(("10.0.0.5", Some(8080)))
        );
        assert_eq!(
            split_host_port("node-a.example"),
            Some(("node-a.example", None))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:5060"),
            Some(("2001:db8::1", Some(5060)))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]"),
            Some(("2001:db8::1", None))
        );
        for bad in [
            "",
            ":80",
            "a b:80",
            "host:x",
            "host:70000",
            "[::1",
            "[nope]:1",
            "[::1]80",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_ids() {
        assert!(check_node_id("dialcore-1.eu_west").is_ok());
        assert!(check_node_id("").is_err());
        assert!(check_node_id("a b").is_err());
        assert!(check_node_id(&"n".repeat(MAX_NODE_ID_LEN + 1)).is_err());
    }
}
