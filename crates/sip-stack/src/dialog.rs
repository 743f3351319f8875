//! Dialog state (RFC 3261 section 12), sans-IO.
//!
//! A [`Dialog`] is created from the INVITE and the response that established
//! it (UAC side, [`Dialog::uac`]) or from the INVITE we answer (UAS side,
//! [`Dialog::uas`]). It owns the identifiers (Call-ID, tags), the CSeq
//! spaces, the route set and the remote target, and builds every in-dialog
//! request ([`Dialog::request`]) so that BYE, re-INVITE, UPDATE and ACK
//! reach the peer with the tags and routes it expects: a BYE with a wrong tag
//! gets 481 and a call that never ends.

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::prelude::HeadersExt;
use rsip::{Header, Method, Request, Response, Uri};

use crate::message::{new_branch, Peer, TransportKind};

/// The identity of a dialog: Call-ID plus the two tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag (From tag for the UAC, To tag for the UAS).
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// Whether the dialog is early (provisional) or confirmed (2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// Errors creating or using a dialog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogError {
    /// A header the dialog needs is missing or unparseable.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The response or request has no tag where one is required.
    #[error("missing {0} tag")]
    MissingTag(&'static str),
    /// An in-dialog request with a CSeq lower than one already seen (12.2.2: answer 500).
    #[error("CSeq {got} is not above the last remote CSeq {last}")]
    CSeqOutOfOrder {
        /// The CSeq received.
        got: u32,
        /// The highest CSeq seen before.
        last: u32,
    },
}

/// Our own addressing, used in Via and Contact of requests we build.
#[derive(Debug, Clone)]
pub struct LocalContact {
    /// The transport requests go out on.
    pub transport: TransportKind,
    /// The address advertised in Via sent-by and Contact.
    pub addr: std::net::SocketAddr,
    /// The user part of our Contact URI.
    pub user: Option<String>,
}

impl LocalContact {
    /// The Contact header value, e.g. `<sip:dialcore@127.0.0.1:5060;transport=tcp>`.
    pub fn contact_value(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        match self.transport {
            TransportKind::Udp => format!("<sip:{user}{}>", self.addr),
            TransportKind::Tcp => format!("<sip:{user}{};transport=tcp>", self.addr),
        }
    }

    /// A top Via header value with a fresh branch and `rport` (RFC 3581).
    pub fn via_value(&self, branch: &str) -> String {
        let proto = match self.transport {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        };
        format!("SIP/2.0/{proto} {};branch={branch};rport", self.addr)
    }
}

/// One dialog's state.
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    state: DialogState,
    /// The From header value we send (our URI and tag).
    local_party: String,
    /// The To header value we send (their URI and tag).
    remote_party: String,
    local_seq: u32,
    remote_seq: Option<u32>,
    remote_target: Uri,
    route_set: Vec<String>,
}

impl Dialog {
    /// The UAC side: from the INVITE we sent and a 1xx (with To tag) or 2xx we received.
    pub fn uac(invite: &Request, response: &Response) -> Result<Self, DialogError> {
        let call_id = invite
            .call_id_header()
            .map_err(|_| DialogError::Header("Call-ID"))?
            .value()
            .to_string();
        let from = invite
            .from_header()
            .map_err(|_| DialogError::Header("From"))?;
        let local_tag = tag_of(from.value()).ok_or(DialogError::MissingTag("From"))?;
        let to = response
            .to_header()
            .map_err(|_| DialogError::Header("To"))?;
        let remote_tag = tag_of(to.value()).ok_or(DialogError::MissingTag("To"))?;
        let local_seq = cseq_number(invite)?;
        // 12.1.2: the route set is the Record-Route list of the response, reversed.
        let mut route_set = record_routes(response.headers.iter());
        route_set.reverse();
        let remote_target =
            contact_uri(response.headers.iter()).unwrap_or_else(|| invite.uri.clone());
        let state = if response.status_code.code() >= 200 {
            DialogState::Confirmed
        } else {
            DialogState::Early
        };
        Ok(Self {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            state,
            local_party: from.value().to_string(),
            remote_party: to.value().to_string(),
            local_seq,
            remote_seq: None,
            remote_target,
            route_set,
        })
    }

    /// The UAS side: from the INVITE we received and the To tag we chose.
    pub fn uas(invite: &Request, local_tag: &str) -> Result<Self, DialogError> {
        let call_id = invite
            .call_id_header()
            .map_err(|_| DialogError::Header("Call-ID"))?
            .value()
            .to_string();
        let from = invite
            .from_header()
            .map_err(|_| DialogError::Header("From"))?;
        let remote_tag = tag_of(from.value()).ok_or(DialogError::MissingTag("From"))?;
        let to = invite.to_header().map_err(|_| DialogError::Header("To"))?;
        let local_party = match tag_of(to.value()) {
            Some(_) => to.value().to_string(),
            None => format!("{};tag={local_tag}", to.value()),
        };
        let remote_seq = cseq_number(invite)?;
        let route_set = record_routes(invite.headers.iter());
        let remote_target =
            contact_uri(invite.headers.iter()).ok_or(DialogError::Header("Contact"))?;
        Ok(Self {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_string(),
                remote_tag,
            },
            state: DialogState::Early,
            local_party,
            remote_party: from.value().to_string(),
            // Our own CSeq space starts fresh (12.1.1); any value below 2^31 is fine.
            local_seq: rand::random::<u16>() as u32 + 1,
            remote_seq: Some(remote_seq),
            remote_target,
            route_set,
        })
    }

    /// The dialog's identity.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Marks the dialog confirmed (2xx sent or received).
    pub fn confirm(&mut self) {
        self.state = DialogState::Confirmed;
    }

    /// Updates an early UAC dialog from a later response of the same dialog
    /// (a 2xx after 18x): route set and remote target may change.
    pub fn update_from_response(&mut self, response: &Response) {
        if let Some(target) = contact_uri(response.headers.iter()) {
            self.remote_target = target;
        }
        if self.state == DialogState::Early {
            let mut routes = record_routes(response.headers.iter());
            routes.reverse();
            self.route_set = routes;
        }
        if response.status_code.code() >= 200 {
            self.state = DialogState::Confirmed;
        }
    }

    /// The URI requests are sent to: the remote target.
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The route set, in the order Route headers are written.
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// The current local CSeq number (that of the last request we built).
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// Where an in-dialog request goes: the first loose-routing Route, or the remote target.
    pub fn next_hop(&self) -> Uri {
        self.route_set
            .first()
            .and_then(|route| parse_name_addr_uri(route))
            .unwrap_or_else(|| self.remote_target.clone())
    }

    /// Checks an incoming in-dialog request (12.2.2): CSeq must increase
    /// (ACK and CANCEL carry the INVITE's); a target refresh request
    /// (re-INVITE, UPDATE) with a Contact replaces the remote target.
    pub fn handle_request(&mut self, request: &Request) -> Result<(), DialogError> {
        let seq = cseq_number(request)?;
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if seq <= last {
                    return Err(DialogError::CSeqOutOfOrder { got: seq, last });
                }
            }
            self.remote_seq = Some(seq);
        }
        if matches!(request.method, Method::Invite | Method::Update) {
            if let Some(target) = contact_uri(request.headers.iter()) {
                self.remote_target = target;
            }
        }
        Ok(())
    }

    /// Builds an in-dialog request (12.2.1.1): Request-URI is the remote
    /// target, Route headers from the route set, our tags, the next CSeq
    /// (ACK reuses the INVITE's number, given as `ack_of`).
    pub fn request(
        &mut self,
        method: Method,
        local: &LocalContact,
        body: Option<(&str, Vec<u8>)>,
        ack_of: Option<u32>,
    ) -> Request {
        let seq = match (method, ack_of) {
            (Method::Ack, Some(seq)) => seq,
            _ => {
                self.local_seq += 1;
                self.local_seq
            }
        };
        let mut headers: Vec<Header> = Vec::with_capacity(12);
        headers.push(rsip::headers::Via::new(local.via_value(&new_branch())).into());
        headers.push(rsip::headers::MaxForwards::new("70").into());
        headers.push(rsip::headers::From::new(self.local_party.clone()).into());
        headers.push(rsip::headers::To::new(self.remote_party.clone()).into());
        headers.push(rsip::headers::CallId::new(self.id.call_id.clone()).into());
        headers.push(rsip::headers::CSeq::new(format!("{seq} {method}")).into());
        for route in &self.route_set {
            headers.push(rsip::headers::Route::new(route.clone()).into());
        }
        if matches!(method, Method::Invite | Method::Update) {
            headers.push(rsip::headers::Contact::new(local.contact_value()).into());
        }
        let body = match body {
            Some((content_type, bytes)) => {
                headers.push(rsip::headers::ContentType::new(content_type).into());
                bytes
            }
            None => Vec::new(),
        };
        headers.push(rsip::headers::ContentLength::new(body.len().to_string()).into());
        Request {
            method,
            uri: self.remote_target.clone(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body,
        }
    }

    /// Where to send an in-dialog request over the given transport, given a
    /// resolved address of [`Dialog::next_hop`].
    pub fn peer_for(addr: std::net::SocketAddr, transport: TransportKind) -> Peer {
        Peer { transport, addr }
    }
}

/// The `tag` parameter of a From/To header value.
pub fn tag_of(header_value: &str) -> Option<String> {
    // Parameters after the name-addr's closing '>' (or after the URI when there are no brackets).
    let params = match header_value.rfind('>') {
        Some(end) => &header_value[end + 1..],
        None => header_value,
    };
    params.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| value.trim().to_string())
            .filter(|tag| !tag.is_empty())
    })
}

fn cseq_number(request: &Request) -> Result<u32, DialogError> {
    let cseq = request
        .cseq_header()
        .map_err(|_| DialogError::Header("CSeq"))?;
    cseq.value()
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(DialogError::Header("CSeq"))
}

/// Record-Route values in message order, one per route (comma lists split).
fn record_routes<'a>(headers: impl Iterator<Item = &'a Header>) -> Vec<String> {
    let mut routes = Vec::new();
    for header in headers {
        if let Header::RecordRoute(rr) = header {
            routes.extend(split_list(rr.value()));
        }
    }
    routes
}

fn contact_uri<'a>(mut headers: impl Iterator<Item = &'a Header>) -> Option<Uri> {
    headers.find_map(|header| match header {
        Header::Contact(contact) => contact.typed().ok().map(|c| c.uri),
        _ => None,
    })
}

fn parse_name_addr_uri(value: &str) -> Option<Uri> {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.split(';').next()?,
    };
    Uri::try_from(inner.trim()).ok()
}

/// Splits a comma-separated header list, respecting `<...>` and quotes.
fn split_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0u32;
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                items.push(value[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = value[start..].trim();
    if !last.is_empty() {
        items.push(last.to_string());
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_request(text: &str) -> Request {
        Request::try_from(text.replace('\n', "\r\n").as_bytes()).expect("test request parses")
    }

    fn parse_response(text: &str) -> Response {
        Response::try_from(text.replace('\n', "\r\n").as_bytes()).expect("test response parses")
    }

    const INVITE: &str = "INVITE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@192.0.2.4>
From: Alice <sip:alice@192.0.2.1>;tag=1928301774
Call-ID: a84b4c76e66710@pc33
CSeq: 314159 INVITE
Contact: <sip:alice@192.0.2.1:5060>
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>
Content-Length: 0

";

    const OK: &str = "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds
To: Bob <sip:bob@192.0.2.4>;tag=a6c85cf
From: Alice <sip:alice@192.0.2.1>;tag=1928301774
Call-ID: a84b4c76e66710@pc33
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4:5070>
Record-Route: <sip:p1.example.com;lr>
Record-Route: <sip:p2.example.com;lr>
Content-Length: 0

";

    fn local() -> LocalContact {
        LocalContact {
            transport: TransportKind::Udp,
            addr: "192.0.2.1:5060".parse().expect("addr"),
            user: Some("alice".into()),
        }
    }

    #[test]
    fn tags_are_found_after_the_name_addr() {
        assert_eq!(tag_of("<sip:a@b;tag=x>;tag=1"), Some("1".into()));
        assert_eq!(tag_of("sip:a@b;tag=2"), Some("2".into()));
        assert_eq!(tag_of("\"A;tag=3\" <sip:a@b>"), None);
        assert_eq!(tag_of("<sip:a@b>;tag="), None);
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_targets_contact() {
        let invite = parse_request(INVITE);
        let mut dialog = Dialog::uac(&invite, &parse_response(OK)).expect("dialog");
        assert_eq!(dialog.id().local_tag, "1928301774");
        assert_eq!(dialog.id().remote_tag, "a6c85cf");
        assert_eq!(dialog.state(), DialogState::Confirmed);
        assert_eq!(
            dialog.route_set(),
            ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        );
        assert_eq!(dialog.remote_target().to_string(), "sip:bob@192.0.2.4:5070");
        let bye = dialog.request(Method::Bye, &local(), None, None);
        let text = bye.to_string();
        assert!(
            text.starts_with("BYE sip:bob@192.0.2.4:5070 SIP/2.0"),
            "{text}"
        );
        assert!(text.contains("CSeq: 314160 BYE"), "{text}");
        assert!(text.contains(";tag=a6c85cf"), "{text}");
        assert!(text.contains("Route: <sip:p2.example.com;lr>"), "{text}");
        let ack = dialog.request(Method::Ack, &local(), None, Some(314159));
        assert!(ack.to_string().contains("CSeq: 314159 ACK"));
        assert_eq!(dialog.next_hop().to_string(), "sip:p2.example.com;lr");
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_checks_cseq() {
        let invite = parse_request(INVITE);
        let mut dialog = Dialog::uas(&invite, "ourtag").expect("dialog");
        assert_eq!(dialog.id().remote_tag, "1928301774");
        assert_eq!(
            dialog.route_set(),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        let bye = dialog.request(Method::Bye, &local(), None, None);
        let text = bye.to_string();
        assert!(
            text.contains("From: Bob <sip:bob@192.0.2.4>;tag=ourtag"),
            "{text}"
        );
        assert!(
            text.contains("To: Alice <sip:alice@192.0.2.1>;tag=1928301774"),
            "{text}"
        );

        let reinvite = parse_request(&INVITE.replace("314159 INVITE", "314160 INVITE").replace(
            "Contact: <sip:alice@192.0.2.1:5060>",
            "Contact: <sip:alice@198.51.100.7:5062>",
        ));
        dialog.handle_request(&reinvite).expect("in order");
        assert_eq!(
            dialog.remote_target().to_string(),
            "sip:alice@198.51.100.7:5062"
        );
        assert_eq!(
            dialog.handle_request(&reinvite),
            Err(DialogError::CSeqOutOfOrder {
                got: 314160,
                last: 314160
            })
        );
    }

    #[test]
    fn uac_dialog_needs_a_to_tag() {
        let invite = parse_request(INVITE);
        let no_tag = parse_response(&OK.replace(";tag=a6c85cf", ""));
        assert_eq!(
            Dialog::uac(&invite, &no_tag).err(),
            Some(DialogError::MissingTag("To"))
        );
    }
}
