//! Building messages: identifiers, responses (RFC 3261 8.2.6), ACK for non-2xx (17.1.1.3),
//! CANCEL (9.1), out-of-dialog requests (8.1.1) and `received`/`rport` (18.2.1, RFC 3581).

use std::net::SocketAddr;

use rand::distributions::Alphanumeric;
use rand::Rng;
use rsip::headers::UntypedHeader;
use rsip::{headers as h, Header, Headers};

use super::header::{canonical_header_name, header_name, header_value, split_list, Via};
use super::{
    MessageError, MessageExt, Method, Request, Response, StatusCode, TransportKind, Uri, Version,
    BRANCH_MAGIC_COOKIE,
};

/// A fresh RFC 3261 branch: the magic cookie `z9hG4bK` followed by 16 random characters.
pub fn new_branch() -> String {
    let mut branch = String::with_capacity(BRANCH_MAGIC_COOKIE.len() + 16);
    branch.push_str(BRANCH_MAGIC_COOKIE);
    branch.extend(random_chars(16));
    branch
}

/// A fresh From/To tag (12 random alphanumeric characters).
pub fn new_tag() -> String {
    random_chars(12).collect()
}

/// A fresh Call-ID: 24 random characters `@host`.
pub fn new_call_id(host: &str) -> String {
    let mut id: String = random_chars(24).collect();
    if !host.is_empty() {
        id.push('@');
        id.push_str(host);
    }
    id
}

/// A response to `request` (RFC 3261 8.2.6): Via headers, From, To, Call-ID and CSeq copied;
/// `to_tag` is added to To unless To already carries a tag; `Content-Length: 0`.
///
/// Add Contact, Record-Route (for dialog-creating responses) and a body as needed.
pub fn response_for(request: &Request, status: StatusCode, to_tag: Option<&str>) -> Response {
    response_for_headers(&request.headers, status, to_tag)
}

/// A response to a request of which only the headers are at hand (an
/// [`UnsupportedRequest`](super::UnsupportedRequest)); see [`response_for`].
pub fn response_for_headers(
    request: &Headers,
    status: StatusCode,
    to_tag: Option<&str>,
) -> Response {
    let mut headers = Headers::default();
    for header in request.iter() {
        match canonical_header_name(header_name(header)) {
            "Via" => headers.push(Header::Via(h::Via::new(header_value(header)))),
            "From" => headers.push(Header::From(h::From::new(header_value(header)))),
            "Call-ID" => headers.push(Header::CallId(h::CallId::new(header_value(header)))),
            "CSeq" => headers.push(Header::CSeq(h::CSeq::new(header_value(header)))),
            "To" => {
                let mut value = header_value(header).to_owned();
                if let (Some(tag), None) = (to_tag, super::header::tag_param(&value)) {
                    value.push_str(";tag=");
                    value.push_str(tag);
                }
                headers.push(Header::To(h::To::new(value)));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(h::ContentLength::new("0")));
    Response {
        status_code: status,
        version: Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The ACK a client INVITE transaction sends for a non-2xx final response (RFC 3261
/// 17.1.1.3): the INVITE's Request-URI, top Via, From, Call-ID and Route, To from the
/// response, CSeq number of the INVITE with method ACK.
pub fn ack_for_non_2xx(invite: &Request, response: &Response) -> Result<Request, MessageError> {
    let to = response
        .header("To")
        .ok_or(MessageError::MissingHeader { name: "To" })?;
    derived_request(invite, Method::Ack, to)
}

/// A CANCEL for `invite` (RFC 3261 9.1): same Request-URI, top Via (same branch), From, To,
/// Call-ID and Route; CSeq number of the INVITE with method CANCEL.
pub fn cancel_for(invite: &Request) -> Result<Request, MessageError> {
    let to = invite
        .header("To")
        .ok_or(MessageError::MissingHeader { name: "To" })?;
    derived_request(invite, Method::Cancel, to)
}

/// Writes `received` and `rport` into the top Via of an incoming request (RFC 3261 18.2.1,
/// RFC 3581): `received` when the sent-by host differs from the source address or `rport`
/// was requested; `rport=<source port>` when `rport` was requested.
pub fn set_received_rport(request: &mut Request, source: SocketAddr) -> Result<(), MessageError> {
    set_received_rport_headers(&mut request.headers, source)
}

/// [`set_received_rport`] on the headers of a request (an
/// [`UnsupportedRequest`](super::UnsupportedRequest)'s).
pub fn set_received_rport_headers(
    request: &mut Headers,
    source: SocketAddr,
) -> Result<(), MessageError> {
    let index = request
        .iter()
        .position(|header| canonical_header_name(header_name(header)) == "Via")
        .ok_or(MessageError::MissingHeader { name: "Via" })?;
    let header = request
        .iter()
        .nth(index)
        .expect("the index was just found in this header list");
    let entries = split_list(header_value(header));
    let (first, others) = entries
        .split_first()
        .ok_or_else(|| MessageError::invalid("Via", header_value(header)))?;
    let via = Via::parse(first)?;
    let source_ip = source.ip().to_string();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let add_received = via.has_rport || host != source_ip;

    let mut rewritten = format!("SIP/2.0/{} {}", via.transport, via.sent_by());
    for (name, value) in &via.params {
        match name.as_str() {
            "received" if add_received => continue,
            "rport" if via.has_rport => continue,
            _ => {}
        }
        rewritten.push(';');
        rewritten.push_str(name);
        if let Some(value) = value {
            rewritten.push('=');
            rewritten.push_str(value);
        }
    }
    if add_received {
        rewritten.push_str(";received=");
        rewritten.push_str(&source_ip);
    }
    if via.has_rport {
        rewritten.push_str(&format!(";rport={}", source.port()));
    }
    for other in others {
        rewritten.push_str(", ");
        rewritten.push_str(other);
    }
    let mut headers: Vec<Header> = std::mem::take(request).into();
    headers[index] = Header::Via(h::Via::new(rewritten));
    *request = headers.into();
    Ok(())
}

/// Builder of an out-of-dialog request (RFC 3261 8.1.1).
///
/// `from` and `via` are required; To defaults to the Request-URI, Call-ID to a fresh one at the
/// Via host, the branch to [`new_branch`], CSeq to 1, Max-Forwards to 70. The Via carries
/// `rport` (RFC 3581).
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: Method,
    uri: Uri,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: u32,
    via: Option<(TransportKind, String)>,
    branch: Option<String>,
    contact: Option<String>,
    max_forwards: u32,
    extra: Vec<Header>,
    body: Option<(String, Vec<u8>)>,
}

impl RequestBuilder {
    /// Starts a request with this method and Request-URI.
    pub fn new(method: Method, request_uri: Uri) -> Self {
        Self {
            method,
            uri: request_uri,
            from: None,
            to: None,
            call_id: None,
            cseq: 1,
            via: None,
            branch: None,
            contact: None,
            max_forwards: 70,
            extra: Vec::new(),
            body: None,
        }
    }

    /// From: the local identity, with optional display name and the local tag.
    pub fn from(mut self, uri: &Uri, display_name: Option<&str>, tag: &str) -> Self {
        self.from = Some(format!("{};tag={}", name_addr(uri, display_name), tag));
        self
    }

    /// To: the remote identity (no tag outside a dialog).
    pub fn to(mut self, uri: &Uri, display_name: Option<&str>) -> Self {
        self.to = Some(name_addr(uri, display_name));
        self
    }

    /// Call-ID (default: [`new_call_id`] at the Via host).
    pub fn call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = Some(call_id.into());
        self
    }

    /// CSeq number (default 1).
    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = seq;
        self
    }

    /// Via transport and sent-by (`host` or `host:port`).
    pub fn via(mut self, transport: TransportKind, sent_by: impl Into<String>) -> Self {
        self.via = Some((transport, sent_by.into()));
        self
    }

    /// Via branch (default: [`new_branch`]).
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = Some(branch.into());
        self
    }

    /// Contact URI.
    pub fn contact(mut self, uri: &Uri) -> Self {
        self.contact = Some(format!("<{uri}>"));
        self
    }

    /// Max-Forwards (default 70).
    pub fn max_forwards(mut self, hops: u32) -> Self {
        self.max_forwards = hops;
        self
    }

    /// Any further header (Route, Allow, Supported, Authorization, ...), kept in order.
    pub fn header(mut self, header: Header) -> Self {
        self.extra.push(header);
        self
    }

    /// A body with its Content-Type.
    pub fn body(mut self, content_type: impl Into<String>, body: Vec<u8>) -> Self {
        self.body = Some((content_type.into(), body));
        self
    }

    /// Builds the request.
    pub fn build(self) -> Result<Request, MessageError> {
        let from = self
            .from
            .ok_or(MessageError::BuilderMissing { field: "from" })?;
        let (transport, sent_by) = self
            .via
            .ok_or(MessageError::BuilderMissing { field: "via" })?;
        let to = self.to.unwrap_or_else(|| format!("<{}>", self.uri));
        let branch = self.branch.unwrap_or_else(new_branch);
        let call_id = self.call_id.unwrap_or_else(|| {
            let host = sent_by
                .rsplit_once(':')
                .map_or(sent_by.as_str(), |(h, _)| h);
            new_call_id(host)
        });
        let mut headers = Headers::default();
        headers.push(Header::Via(h::Via::new(format!(
            "SIP/2.0/{} {};branch={};rport",
            transport.via_token(),
            sent_by,
            branch
        ))));
        headers.push(Header::MaxForwards(h::MaxForwards::new(
            self.max_forwards.to_string(),
        )));
        headers.push(Header::From(h::From::new(from)));
        headers.push(Header::To(h::To::new(to)));
        headers.push(Header::CallId(h::CallId::new(call_id)));
        headers.push(Header::CSeq(h::CSeq::new(format!(
            "{} {}",
            self.cseq, self.method
        ))));
        if let Some(contact) = self.contact {
            headers.push(Header::Contact(h::Contact::new(contact)));
        }
        headers.extend(self.extra);
        let body = match self.body {
            Some((content_type, body)) => {
                headers.push(Header::ContentType(h::ContentType::new(content_type)));
                body
            }
            None => Vec::new(),
        };
        headers.push(Header::ContentLength(h::ContentLength::new(
            body.len().to_string(),
        )));
        Ok(Request {
            method: self.method,
            uri: self.uri,
            version: Version::V2,
            headers,
            body,
        })
    }
}

/// ACK and CANCEL share their shape: INVITE's URI, top Via, From, Call-ID, Route; given To.
fn derived_request(invite: &Request, method: Method, to: &str) -> Result<Request, MessageError> {
    let via_value = invite
        .header("Via")
        .ok_or(MessageError::MissingHeader { name: "Via" })?;
    let top_via = split_list(via_value)
        .into_iter()
        .next()
        .ok_or_else(|| MessageError::invalid("Via", via_value))?;
    let from = invite
        .header("From")
        .ok_or(MessageError::MissingHeader { name: "From" })?;
    let call_id = invite
        .call_id()
        .ok_or(MessageError::MissingHeader { name: "Call-ID" })?;
    let cseq = invite.cseq()?;
    let mut headers = Headers::default();
    headers.push(Header::Via(h::Via::new(top_via)));
    headers.push(Header::MaxForwards(h::MaxForwards::new("70")));
    headers.push(Header::From(h::From::new(from)));
    headers.push(Header::To(h::To::new(to)));
    headers.push(Header::CallId(h::CallId::new(call_id)));
    headers.push(Header::CSeq(h::CSeq::new(format!(
        "{} {}",
        cseq.seq, method
    ))));
    for route in invite.header_all("Route") {
        headers.push(Header::Route(h::Route::new(route)));
    }
    headers.push(Header::ContentLength(h::ContentLength::new("0")));
    Ok(Request {
        method,
        uri: invite.uri.clone(),
        version: Version::V2,
        headers,
        body: Vec::new(),
    })
}

fn name_addr(uri: &Uri, display_name: Option<&str>) -> String {
    match display_name {
        Some(name) => {
            let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{uri}>")
        }
        None => format!("<{uri}>"),
    }
}

fn random_chars(count: usize) -> impl Iterator<Item = char> {
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(count)
        .map(char::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, SipMessage};

    fn uri(text: &str) -> Uri {
        Uri::try_from(text).expect("valid test URI")
    }

    fn invite() -> Request {
        RequestBuilder::new(Method::Invite, uri("sip:bob@biloxi.example.com"))
            .from(
                &uri("sip:alice@atlanta.example.com"),
                Some("Al \"A\""),
                "t1",
            )
            .to(&uri("sip:bob@biloxi.example.com"), None)
            .via(TransportKind::Udp, "192.0.2.1:5060")
            .call_id("c1@192.0.2.1")
            .cseq(7)
            .contact(&uri("sip:alice@192.0.2.1:5060"))
            .header(Header::Route(h::Route::new("<sip:p1.example.com;lr>")))
            .body("application/sdp", b"v=0\r\n".to_vec())
            .build()
            .expect("complete builder")
    }

    #[test]
    fn builder_output_parses_back() {
        let request = invite();
        let SipMessage::Request(parsed) = parse(request.to_string().as_bytes()).expect("parses")
        else {
            panic!("expected a request")
        };
        let via = parsed.top_via().expect("via");
        assert!(via.has_magic_cookie() && via.has_rport && via.rport.is_none());
        assert_eq!(via.sent_by(), "192.0.2.1:5060");
        assert_eq!(parsed.from_tag(), Some("t1"));
        assert_eq!(parsed.cseq().expect("cseq").seq, 7);
        assert_eq!(parsed.max_forwards(), Ok(Some(70)));
        assert_eq!(parsed.header("Content-Type"), Some("application/sdp"));
        assert_eq!(parsed.body, b"v=0\r\n");
        assert_eq!(parsed.route(), vec!["<sip:p1.example.com;lr>"]);
    }

    #[test]
    fn builder_requires_from_and_via() {
        let missing = RequestBuilder::new(Method::Options, uri("sip:a@b")).build();
        assert_eq!(
            missing.err(),
            Some(MessageError::BuilderMissing { field: "from" })
        );
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_tag() {
        let request = invite();
        let response = response_for(&request, StatusCode::Ringing, Some("srv"));
        assert_eq!(response.to_tag(), Some("srv"));
        assert_eq!(response.from_tag(), Some("t1"));
        assert_eq!(response.call_id(), Some("c1@192.0.2.1"));
        assert_eq!(response.cseq(), request.cseq());
        assert_eq!(response.top_via(), request.top_via());
        assert!(response.header("Contact").is_none());
        let again = response_for(&request, StatusCode::OK, None);
        assert_eq!(again.to_tag(), None);
    }

    #[test]
    fn ack_and_cancel_follow_the_invite() {
        let request = invite();
        let response = response_for(&request, StatusCode::BusyHere, Some("srv"));
        let ack = ack_for_non_2xx(&request, &response).expect("ack");
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, request.uri);
        assert_eq!(ack.to_tag(), Some("srv"));
        assert_eq!(ack.top_via(), request.top_via());
        assert_eq!(ack.cseq().expect("cseq").method, Method::Ack);
        assert_eq!(ack.route(), request.route());
        let cancel = cancel_for(&request).expect("cancel");
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(cancel.to_tag(), None);
        assert_eq!(cancel.cseq().expect("cseq").seq, 7);
        assert!(parse(cancel.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn rport_and_received_are_filled() {
        let mut request = invite();
        set_received_rport(&mut request, "203.0.113.9:40000".parse().expect("addr"))
            .expect("has a via");
        let via = request.top_via().expect("via");
        assert_eq!(via.rport, Some(40000));
        assert_eq!(via.received.as_deref(), Some("203.0.113.9"));
        assert!(via.has_magic_cookie());

        let mut plain = parse(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx, SIP/2.0/UDP p\r\n\
              From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        )
        .expect("valid");
        let SipMessage::Request(plain) = &mut plain else {
            panic!("request")
        };
        set_received_rport(plain, "192.0.2.1:5060".parse().expect("addr")).expect("via");
        let via = plain.top_via().expect("via");
        assert_eq!((via.received, via.has_rport), (None, false));
        assert_eq!(plain.via_count(), 2);
    }

    #[test]
    fn identifiers_are_fresh() {
        assert!(new_branch().starts_with(BRANCH_MAGIC_COOKIE));
        assert_ne!(new_branch(), new_branch());
        assert_eq!(new_tag().len(), 12);
        assert!(new_call_id("host").ends_with("@host"));
    }
}
