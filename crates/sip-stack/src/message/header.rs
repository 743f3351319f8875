//! Header access: typed accessors, compact names, and the header-section normalization that
//! runs before `rsip` sees any byte.

use std::str::FromStr;

use rsip::headers::UntypedHeader;

use super::{MessageError, Method, Request, Response, SipMessage, Uri, BRANCH_MAGIC_COOKIE};
use rsip::{Header, Headers};

/// The parsed top (first) Via of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token of the sent-protocol, upper-cased (`UDP`, `TCP`, `TLS`, ...).
    pub transport: String,
    /// Host part of sent-by (an IPv6 address keeps its brackets).
    pub host: String,
    /// Port part of sent-by, if present.
    pub port: Option<u16>,
    /// The `branch` parameter.
    pub branch: Option<String>,
    /// True when an `rport` parameter is present (with or without value, RFC 3581).
    pub has_rport: bool,
    /// The value of `rport`, when it has one.
    pub rport: Option<u16>,
    /// The `received` parameter.
    pub received: Option<String>,
    /// All parameters in order, names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via value (`SIP/2.0/UDP host:port;branch=...`).
    pub fn parse(value: &str) -> Result<Via, MessageError> {
        let bad = || MessageError::invalid("Via", value);
        let value = value.trim();
        let mut parts = value.splitn(3, '/');
        let name = parts.next().ok_or_else(bad)?.trim();
        let version = parts.next().ok_or_else(bad)?.trim();
        let rest = parts.next().ok_or_else(bad)?.trim_start();
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(bad());
        }
        let transport_end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .ok_or_else(bad)?;
        let transport = &rest[..transport_end];
        if transport.is_empty() || !transport.bytes().all(is_token_byte) {
            return Err(bad());
        }
        let rest = rest[transport_end..].trim_start();
        let mut segments = split_outside_quotes(rest, b';').into_iter();
        let sent_by = segments.next().ok_or_else(bad)?.trim();
        let (host, port) = split_host_port(sent_by).ok_or_else(bad)?;
        let mut via = Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            branch: None,
            has_rport: false,
            rport: None,
            received: None,
            params: Vec::new(),
        };
        for segment in segments {
            let (name, param_value) = split_param(segment).ok_or_else(bad)?;
            match name.as_str() {
                "branch" => via.branch = Some(param_value.clone().ok_or_else(bad)?),
                "rport" => {
                    via.has_rport = true;
                    via.rport = match &param_value {
                        Some(port) => Some(port.parse().map_err(|_| bad())?),
                        None => None,
                    };
                }
                "received" => via.received = Some(param_value.clone().ok_or_else(bad)?),
                _ => {}
            }
            via.params.push((name, param_value));
        }
        Ok(via)
    }

    /// The sent-by as written: `host` or `host:port`.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{}", self.host, port),
            None => self.host.clone(),
        }
    }

    /// True when the branch starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_magic_cookie(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|branch| branch.starts_with(BRANCH_MAGIC_COOKIE))
    }
}

/// The parsed CSeq header: sequence number and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value (`314159 INVITE`).
    pub fn parse(value: &str) -> Result<CSeq, MessageError> {
        let (seq, method) = cseq_parts(value)?;
        let method = Method::from_str(method).map_err(|_| MessageError::invalid("CSeq", value))?;
        Ok(CSeq { seq, method })
    }
}

/// The sequence number (at most 2**32-1) and the method token of a CSeq value, for any method.
pub(crate) fn cseq_parts(value: &str) -> Result<(u32, &str), MessageError> {
    let bad = || MessageError::invalid("CSeq", value);
    let mut words = value.split_ascii_whitespace();
    let seq = words.next().ok_or_else(bad)?;
    let method = words.next().ok_or_else(bad)?;
    if words.next().is_some()
        || !seq.bytes().all(|b| b.is_ascii_digit())
        || !method.bytes().all(is_token_byte)
    {
        return Err(bad());
    }
    let seq = seq.parse().map_err(|_| bad())?;
    Ok((seq, method))
}

/// Typed access to the headers of a [`Request`], [`Response`] or [`SipMessage`].
///
/// Lookups by name are case-insensitive and accept compact forms (`i`, `f`, `t`, `v`, `m`,
/// `l`, `c`, `k`, `e`, `s`, `o`, `x`, `r`, `b`, `u`).
pub trait MessageExt {
    /// The message's header list.
    fn header_list(&self) -> &Headers;

    /// The value of the first header with this name.
    fn header(&self, name: &str) -> Option<&str> {
        let wanted = canonical_header_name(name);
        self.header_list()
            .iter()
            .find(|header| canonical_header_name(header_name(header)).eq_ignore_ascii_case(wanted))
            .map(header_value)
    }

    /// The values of all headers with this name, in order (one entry per header line).
    fn header_all(&self, name: &str) -> Vec<&str> {
        let wanted = canonical_header_name(name);
        self.header_list()
            .iter()
            .filter(|header| {
                canonical_header_name(header_name(header)).eq_ignore_ascii_case(wanted)
            })
            .map(header_value)
            .collect()
    }

    /// The top Via (the first entry of the first Via header).
    fn top_via(&self) -> Result<Via, MessageError> {
        let value = self
            .header("Via")
            .ok_or(MessageError::MissingHeader { name: "Via" })?;
        let first = split_list(value)
            .into_iter()
            .next()
            .ok_or_else(|| MessageError::invalid("Via", value))?;
        Via::parse(first)
    }

    /// The number of Via entries (across all Via header lines).
    fn via_count(&self) -> usize {
        self.header_all("Via")
            .into_iter()
            .map(|value| split_list(value).len())
            .sum()
    }

    /// The Call-ID.
    fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
            .map(str::trim)
            .filter(|id| !id.is_empty())
    }

    /// The CSeq number and method.
    fn cseq(&self) -> Result<CSeq, MessageError> {
        let value = self
            .header("CSeq")
            .ok_or(MessageError::MissingHeader { name: "CSeq" })?;
        CSeq::parse(value)
    }

    /// The `tag` parameter of From.
    #[allow(clippy::wrong_self_convention)] // named after the From header, not a conversion
    fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(tag_param)
    }

    /// The `tag` parameter of To.
    fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(tag_param)
    }

    /// The URI of From.
    #[allow(clippy::wrong_self_convention)] // named after the From header, not a conversion
    fn from_uri(&self) -> Result<Uri, MessageError> {
        let value = self
            .header("From")
            .ok_or(MessageError::MissingHeader { name: "From" })?;
        name_addr_uri(value).map_err(|_| MessageError::invalid("From", value))
    }

    /// The URI of To.
    fn to_uri(&self) -> Result<Uri, MessageError> {
        let value = self
            .header("To")
            .ok_or(MessageError::MissingHeader { name: "To" })?;
        name_addr_uri(value).map_err(|_| MessageError::invalid("To", value))
    }

    /// The URI of the first Contact entry; `None` without Contact or for `Contact: *`.
    fn contact_uri(&self) -> Result<Option<Uri>, MessageError> {
        let Some(value) = self.header("Contact") else {
            return Ok(None);
        };
        let Some(first) = split_list(value).into_iter().next() else {
            return Ok(None);
        };
        if first.trim() == "*" {
            return Ok(None);
        }
        name_addr_uri(first)
            .map(Some)
            .map_err(|_| MessageError::invalid("Contact", value))
    }

    /// The Content-Length value, if the header is present.
    fn content_length(&self) -> Result<Option<u32>, MessageError> {
        self.header("Content-Length")
            .map(|value| parse_number("Content-Length", value))
            .transpose()
    }

    /// The Max-Forwards value, if the header is present.
    fn max_forwards(&self) -> Result<Option<u32>, MessageError> {
        self.header("Max-Forwards")
            .map(|value| parse_number("Max-Forwards", value))
            .transpose()
    }

    /// Every Record-Route entry in order (e.g. `<sip:p1.example.com;lr>`), across header lines.
    fn record_route(&self) -> Vec<String> {
        list_entries(self.header_all("Record-Route"))
    }

    /// Every Route entry in order, across header lines.
    fn route(&self) -> Vec<String> {
        list_entries(self.header_all("Route"))
    }
}

impl MessageExt for Request {
    fn header_list(&self) -> &Headers {
        &self.headers
    }
}

impl MessageExt for Response {
    fn header_list(&self) -> &Headers {
        &self.headers
    }
}

impl MessageExt for SipMessage {
    fn header_list(&self) -> &Headers {
        match self {
            SipMessage::Request(request) => &request.headers,
            SipMessage::Response(response) => &response.headers,
        }
    }
}

/// Expands a compact header name to its full form (`v` -> `Via`); other names are returned
/// unchanged.
pub fn canonical_header_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'x' => "Session-Expires",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        _ => name,
    }
}

macro_rules! header_names {
    ($header:expr; $($variant:ident => $name:literal),* $(,)?) => {
        match $header {
            $(Header::$variant(inner) => ($name, inner.value()),)*
            Header::Other(name, value) => (name.as_str(), value.as_str()),
        }
    };
}

fn name_and_value(header: &Header) -> (&str, &str) {
    header_names!(header;
        Accept => "Accept", AcceptEncoding => "Accept-Encoding",
        AcceptLanguage => "Accept-Language", AlertInfo => "Alert-Info", Allow => "Allow",
        AuthenticationInfo => "Authentication-Info", Authorization => "Authorization",
        CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info", Contact => "Contact",
        ContentDisposition => "Content-Disposition", ContentEncoding => "Content-Encoding",
        ContentLanguage => "Content-Language", ContentLength => "Content-Length",
        ContentType => "Content-Type", Date => "Date", ErrorInfo => "Error-Info",
        Event => "Event", Expires => "Expires", From => "From", InReplyTo => "In-Reply-To",
        MaxForwards => "Max-Forwards", MimeVersion => "MIME-Version",
        MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
        ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
        ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
        Require => "Require", RetryAfter => "Retry-After", Route => "Route", Server => "Server",
        Subject => "Subject", SubscriptionState => "Subscription-State",
        Supported => "Supported", Timestamp => "Timestamp", To => "To",
        Unsupported => "Unsupported", UserAgent => "User-Agent", Via => "Via",
        Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
    )
}

/// The name of a header as it appears on the wire (full form).
pub fn header_name(header: &Header) -> &str {
    name_and_value(header).0
}

/// The value of a header (everything after `name:`, leading whitespace removed).
pub fn header_value(header: &Header) -> &str {
    name_and_value(header).1
}

/// Splits a comma-separated header value into entries, ignoring commas inside quotes and
/// angle brackets. Entries are trimmed; empty entries are dropped.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut entries = Vec::new();
    let mut depth_angle = false;
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (index, byte) in value.bytes().enumerate() {
        if quoted {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => quoted = true,
            b'<' => depth_angle = true,
            b'>' => depth_angle = false,
            b',' if !depth_angle => {
                entries.push(value[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
    }
    entries.push(value[start..].trim());
    entries.retain(|entry| !entry.is_empty());
    entries
}

/// Splits on `separator` outside double quotes.
fn split_outside_quotes(value: &str, separator: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, byte) in value.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            _ if byte == separator && !quoted => {
                parts.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// `name[=value]` with the name lower-cased and quotes removed from the value.
fn split_param(segment: &str) -> Option<(String, Option<String>)> {
    let segment = segment.trim();
    let (name, value) = match segment.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"').to_owned())),
        None => (segment, None),
    };
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return None;
    }
    Some((name.to_ascii_lowercase(), value))
}

/// Splits `host[:port]`, `[v6][:port]`.
fn split_host_port(sent_by: &str) -> Option<(&str, Option<u16>)> {
    if sent_by.is_empty() {
        return None;
    }
    let (host, port) = if sent_by.starts_with('[') {
        let close = sent_by.find(']')?;
        let host = &sent_by[..=close];
        match &sent_by[close + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match sent_by.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (sent_by, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !host_ok {
        return None;
    }
    let port = match port {
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => Some(port.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

/// The header parameters of a name-addr / addr-spec value (`From`, `To`, `Contact`, ...).
fn header_params(value: &str) -> &str {
    let value = value.trim();
    let after_uri = match find_outside_quotes(value, b'<') {
        Some(open) => match value[open..].find('>') {
            Some(close) => &value[open + close + 1..],
            None => "",
        },
        None => value,
    };
    match find_outside_quotes(after_uri, b';') {
        Some(semi) => &after_uri[semi + 1..],
        None => "",
    }
}

/// Position of `wanted` outside quoted strings (whose quoted-pairs, like `\"`, are skipped).
fn find_outside_quotes(value: &str, wanted: u8) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (index, byte) in value.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if byte == wanted && !quoted => return Some(index),
            _ => {}
        }
    }
    None
}

/// The `tag` parameter of a From/To value.
pub(crate) fn tag_param(value: &str) -> Option<&str> {
    header_params(value).split(';').find_map(|param| {
        let (name, tag) = param.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("tag") && !tag.trim().is_empty()).then(|| tag.trim())
    })
}

/// The URI inside a name-addr (`"Bob" <sip:bob@host>;tag=x`) or addr-spec (`sip:bob@host;tag=x`).
pub(crate) fn name_addr_uri(value: &str) -> Result<Uri, MessageError> {
    let value = value.trim();
    let uri_text = match find_outside_quotes(value, b'<') {
        Some(open) => {
            let close = value[open..]
                .find('>')
                .ok_or_else(|| MessageError::invalid("URI", value))?;
            &value[open + 1..open + close]
        }
        None => value.split(';').next().unwrap_or(value),
    };
    parse_uri(uri_text.trim())
}

/// Parses a URI as it appears in a header or on a request line: a `sip:`/`sips:` URI's user
/// part may hold `;`, `?` and escapes (RFC 3261 25.1, RFC 4475 3.1.1.9), which this reads
/// itself; host, port and parameters, and other schemes, are read by `rsip` behind the panic
/// guard used for all network input.
pub fn parse_uri(text: &str) -> Result<Uri, MessageError> {
    match text.split_once(':') {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") =>
        {
            super::start_line::sip_uri(scheme, rest, false)
        }
        _ => rsip_uri(text),
    }
}

/// `rsip`'s reading of a URI, with the panic guard.
pub(crate) fn rsip_uri(text: &str) -> Result<Uri, MessageError> {
    match std::panic::catch_unwind(|| Uri::try_from(text)) {
        Ok(Ok(uri)) => Ok(uri),
        Ok(Err(_)) => Err(MessageError::invalid("URI", text)),
        Err(_) => Err(MessageError::ParserPanic),
    }
}

fn list_entries(values: Vec<&str>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(split_list)
        .map(str::to_owned)
        .collect()
}

fn parse_number(name: &'static str, value: &str) -> Result<u32, MessageError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MessageError::invalid(name, value));
    }
    trimmed
        .parse()
        .map_err(|_| MessageError::invalid(name, value))
}

pub(crate) fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&byte)
}

/// Rewrites a header section into the form `rsip` parses: folded lines joined, compact and
/// oddly spaced names replaced by `Full-Name: value`, ending in CRLF CRLF.
/// `offset` is where `head` starts in the original input (for error positions).
pub(crate) fn normalize_head(head: &[u8], offset: usize) -> Result<String, MessageError> {
    if let Some(index) = forbidden_byte(head) {
        return Err(MessageError::ForbiddenByte {
            byte: head[index],
            offset: offset + index,
        });
    }
    let text = std::str::from_utf8(head).map_err(|error| MessageError::ForbiddenByte {
        byte: head[error.valid_up_to()],
        offset: offset + error.valid_up_to(),
    })?;
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or_default();
    if start_line.is_empty() || start_line.contains(['\r', '\n']) {
        return Err(MessageError::MalformedHeaderLine { line: 1 });
    }
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(start_line);
    let mut header_count = 0;
    for (index, line) in lines.enumerate() {
        let line_number = index + 2;
        if line.contains(['\r', '\n']) {
            return Err(MessageError::MalformedHeaderLine { line: line_number });
        }
        if line.starts_with([' ', '\t']) {
            if header_count == 0 {
                return Err(MessageError::MalformedHeaderLine { line: line_number });
            }
            let continuation = line.trim();
            if !continuation.is_empty() {
                out.push(' ');
                out.push_str(continuation);
            }
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(MessageError::MalformedHeaderLine { line: line_number })?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(MessageError::MalformedHeaderLine { line: line_number });
        }
        out.push_str("\r\n");
        out.push_str(canonical_header_name(name));
        out.push_str(": ");
        out.push_str(value.trim());
        header_count += 1;
    }
    out.push_str("\r\n\r\n");
    Ok(out)
}

/// The first control byte of a header section that is not allowed where it stands: CR and LF
/// only as line ends, HTAB anywhere, any other control byte (NUL, BEL, DEL, ...) only as the
/// second byte of a quoted-pair inside a quoted string (RFC 3261 25.1, RFC 4475 3.1.1.2).
fn forbidden_byte(head: &[u8]) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (index, &byte) in head.iter().enumerate() {
        if byte == b'\n'
            && head
                .get(index + 1)
                .is_some_and(|&next| next != b' ' && next != b'\t')
        {
            // A new header line: no quoted string runs across it.
            (quoted, escaped) = (false, false);
            continue;
        }
        let control = (byte < 0x20 && !matches!(byte, b'\r' | b'\n' | b'\t')) || byte == 0x7f;
        if escaped {
            escaped = false;
            continue;
        }
        if control {
            return Some(index);
        }
        match byte {
            b'"' => quoted = !quoted,
            b'\\' if quoted => escaped = true,
            _ => {}
        }
    }
    None
}

/// The Content-Length of a normalized header section; conflicting values are an error.
pub(crate) fn content_length_of(normalized: &str) -> Result<Option<usize>, MessageError> {
    let mut found: Option<usize> = None;
    for line in normalized.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let length = parse_number("Content-Length", value)? as usize;
        match found {
            Some(previous) if previous != length => {
                return Err(MessageError::ConflictingContentLength)
            }
            _ => found = Some(length),
        }
    }
    Ok(found)
}

/// Checks the headers every message needs (RFC 3261 8.1.1): a top Via that parses, one each of
/// From, To, Call-ID and CSeq (and at most one Max-Forwards and Content-Type), From, To and
/// Contact values that are name-addr or addr-spec, and for a request (`request_method`, as
/// written on its start line) a CSeq method equal to it.
pub(crate) fn validate(
    message: &SipMessage,
    request_method: Option<&str>,
) -> Result<(), MessageError> {
    message.top_via()?;
    for name in ["From", "To", "Call-ID", "CSeq"] {
        match message.header_all(name).len() {
            0 => return Err(MessageError::MissingHeader { name }),
            1 => {}
            _ => return Err(MessageError::DuplicateHeader { name }),
        }
    }
    for name in ["Max-Forwards", "Content-Type"] {
        if message.header_all(name).len() > 1 {
            return Err(MessageError::DuplicateHeader { name });
        }
    }
    if message.call_id().is_none() {
        return Err(MessageError::MissingHeader { name: "Call-ID" });
    }
    for name in ["From", "To"] {
        let value = message.header(name).unwrap_or_default();
        check_address(name, value)?;
    }
    for value in message.header_all("Contact") {
        for entry in split_list(value) {
            if entry != "*" {
                check_address("Contact", entry)?;
            }
        }
    }
    let cseq = message.header("CSeq").unwrap_or_default();
    let (_, cseq_method) = cseq_parts(cseq)?;
    if let Some(method) = request_method {
        if method != cseq_method {
            return Err(MessageError::CSeqMethodMismatch {
                request: super::truncated(method, 128).to_owned(),
                cseq: super::truncated(cseq_method, 128).to_owned(),
            });
        }
    }
    Ok(())
}

/// A From, To or Contact value must be a name-addr (`[display-name] <URI>` with the display
/// name a quoted string or tokens) or an addr-spec without `,` or `?` (RFC 3261 20.10, 25.1):
/// RFC 4475 3.1.2.6 (unterminated quote), 3.1.2.13 (escaped header outside `<>`), 3.1.2.14
/// (spaces in the addr-spec) and 3.1.2.15 (unquoted non-token display name) are errors.
fn check_address(name: &'static str, value: &str) -> Result<(), MessageError> {
    let bad = || MessageError::invalid(name, value);
    let value = value.trim();
    let open = if let Some(quoted) = value.strip_prefix('"') {
        let close = closing_quote(quoted).ok_or_else(bad)?;
        let after = &quoted[close + 1..];
        let spaces = after.len() - after.trim_start().len();
        if !after.trim_start().starts_with('<') {
            return Err(bad());
        }
        Some(value.len() - after.len() + spaces)
    } else {
        match value.find('<') {
            Some(open) => {
                let tokens_only = value[..open]
                    .split_ascii_whitespace()
                    .all(|word| word.bytes().all(is_token_byte));
                if !tokens_only {
                    return Err(bad());
                }
                Some(open)
            }
            None => None,
        }
    };
    let uri = match open {
        Some(open) => {
            let close = value[open..].find('>').ok_or_else(bad)? + open;
            &value[open + 1..close]
        }
        None => {
            let uri = value.split(';').next().unwrap_or_default().trim();
            if uri.contains([',', '?']) {
                return Err(bad());
            }
            uri
        }
    };
    if uri.is_empty() || uri.bytes().any(|b| b.is_ascii_whitespace()) || !uri.contains(':') {
        return Err(bad());
    }
    Ok(())
}

/// Index of the quote that ends a quoted string whose opening quote was just consumed.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(index),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    const REQUEST: &str = "BYE sip:bob@192.0.2.4 SIP/2.0\r\n\
        v: SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKnashds7;rport=5071;received=192.0.2.1,\r\n \
        SIP/2.0/TCP proxy.example.com;branch=z9hG4bK1\r\n\
        Via: SIP/2.0/UDP third.example.com;branch=z9hG4bK2\r\n\
        Max-Forwards : 69\r\n\
        t: \"Bob, B.\" <sip:bob@biloxi.example.com>;tag=8321234356\r\n\
        f: sip:alice@atlanta.example.com;tag=9fxced76sl\r\n\
        i: 3848276298220188511@atlanta.example.com\r\n\
        CSeq: 231 BYE\r\n\
        m: <sip:alice@client.atlanta.example.com;transport=tcp>;expires=60, <sip:x@y>\r\n\
        Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
        Record-Route: <sip:p3.example.com;lr>\r\n\
        X-Custom: hello\r\n\
        l: 0\r\n\
        \r\n";

    #[test]
    fn accessors_read_compact_and_folded_headers() {
        let message = parse(REQUEST.as_bytes()).expect("valid BYE");
        let via = message.top_via().expect("top via");
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, "[2001:db8::9]");
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.branch.as_deref(), Some("z9hG4bKnashds7"));
        assert!(via.has_rport);
        assert_eq!(via.rport, Some(5071));
        assert_eq!(via.received.as_deref(), Some("192.0.2.1"));
        assert!(via.has_magic_cookie());
        assert_eq!(message.via_count(), 3);
        assert_eq!(
            message.call_id(),
            Some("3848276298220188511@atlanta.example.com")
        );
        let cseq = message.cseq().expect("cseq");
        assert_eq!((cseq.seq, cseq.method), (231, Method::Bye));
        assert_eq!(message.from_tag(), Some("9fxced76sl"));
        assert_eq!(message.to_tag(), Some("8321234356"));
        let contact = message.contact_uri().expect("contact").expect("present");
        assert_eq!(contact.user(), Some("alice"));
        assert_eq!(message.content_length(), Ok(Some(0)));
        assert_eq!(message.max_forwards(), Ok(Some(69)));
        assert_eq!(
            message.record_route(),
            vec![
                "<sip:p1.example.com;lr>",
                "<sip:p2.example.com;lr>",
                "<sip:p3.example.com;lr>"
            ]
        );
        assert!(message.route().is_empty());
        assert_eq!(message.header("x-custom"), Some("hello"));
        assert_eq!(message.header("I"), message.header("call-id"));
        assert_eq!(message.to_uri().expect("to").user(), Some("bob"));
        assert_eq!(message.from_uri().expect("from").user(), Some("alice"));
    }

    #[test]
    fn via_parse_rejects_nonsense() {
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("HTTP/1.1/TCP host").is_err());
        assert!(Via::parse("SIP/2.0/UDP host:99999;branch=x").is_err());
        assert!(Via::parse("SIP/2.0/UDP ho st").is_err());
        assert!(Via::parse("SIP/2.0/UDP host;rport=abc").is_err());
        let via = Via::parse("SIP/2.0/udp h.example;rport;branch=1").expect("valid");
        assert!(via.has_rport && via.rport.is_none());
        assert!(!via.has_magic_cookie());
        assert_eq!(via.sent_by(), "h.example");
    }

    #[test]
    fn cseq_parse() {
        assert_eq!(
            CSeq::parse(" 1 OPTIONS "),
            Ok(CSeq {
                seq: 1,
                method: Method::Options
            })
        );
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert!(CSeq::parse("99999999999 INVITE").is_err());
    }

    #[test]
    fn tags_ignore_uri_parameters_and_quotes() {
        assert_eq!(tag_param("<sip:a@b;tag=uri>;tag=real"), Some("real"));
        assert_eq!(tag_param("\"x;tag=no\" <sip:a@b>"), None);
        assert_eq!(tag_param("sip:a@b;tag=t1"), Some("t1"));
        assert_eq!(tag_param("<sip:a@b"), None);
        assert_eq!(tag_param(r#""J \\\" x" <sip:a@b> ; tag = t2"#), Some("t2"));
    }

    #[test]
    fn addresses_follow_the_name_addr_and_addr_spec_grammar() {
        for valid in [
            "sip:a@b;tag=1",
            "caller<sip:caller@example.com>;tag=323",
            r#""J Rosenberg \\\"" <sip:j@example.com> ; tag = 98"#,
            "token1~` token2'+_ <sip:mundane@example.com>",
            "<sip:x@y;p=1,2>",
        ] {
            assert!(check_address("To", valid).is_ok(), "{valid}");
        }
        for invalid in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b",
            "nothing",
        ] {
            assert!(check_address("To", invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn control_bytes_only_as_quoted_pairs() {
        assert_eq!(forbidden_byte(b"To: \"a\\\x00b\" <sip:a@b>"), None);
        assert_eq!(forbidden_byte(b"To: a\x00b"), Some(5));
        assert_eq!(forbidden_byte(b"To: a\\\x07"), Some(6));
        // A quote left open on one header line does not cover the next one.
        assert_eq!(forbidden_byte(b"Call-ID: a\"b\r\nTo: \\\x00"), Some(19));
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        assert_eq!(
            split_list("\"a, b\" <sip:x@y;p=1,2>, <sip:z@w>,,"),
            vec!["\"a, b\" <sip:x@y;p=1,2>", "<sip:z@w>"]
        );
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let text = REQUEST.replace("l: 0\r\n", "l: 0\r\nContent-Length: 5\r\n");
        assert_eq!(
            parse(text.as_bytes()),
            Err(MessageError::ConflictingContentLength)
        );
    }

    #[test]
    fn folded_line_without_header_is_rejected() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\n continued\r\n\r\n";
        assert_eq!(
            parse(text.as_bytes()),
            Err(MessageError::MalformedHeaderLine { line: 2 })
        );
    }
}
