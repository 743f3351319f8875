//! Requests this user agent does not implement, and requests that need what it lacks:
//! an extension method gets 501 Not Implemented with `Allow` (RFC 3261 8.2.1), a non-SIP
//! Request-URI 416 Unsupported URI Scheme (8.2.2.1), an option tag in `Require` that we do
//! not support 420 Bad Extension with `Unsupported` (8.2.2.3). The same holds inside a dialog.
//!
//! The first two cannot be held by a [`Request`], so no server transaction is made for them:
//! they are answered statelessly (RFC 3261 8.2.7), each retransmission again, with a To tag
//! derived from the request so every copy gets the same one.

use std::hash::{Hash, Hasher};

use super::*;
use crate::message::{
    parse_any, response_for_headers, set_received_rport_headers, ParseConfig, Parsed,
    UnsupportedRequest,
};

/// The option tags we support (`Supported`) and accept in `Require`.
pub(super) const SUPPORTED: &[&str] = &["timer"];

impl Core {
    /// A valid request the message module could not hold as a [`Request`]: answered 501 or 416.
    pub(super) fn handle_unsupported(&mut self, bytes: &[u8], from: Peer) {
        let config = ParseConfig {
            max_size: bytes.len(),
            datagram: !from.transport.is_reliable(),
        };
        let Ok(Parsed::Unsupported(mut request)) = parse_any(bytes, &config) else {
            debug!(from = %from.addr, "unsupported request does not parse again; dropped");
            return;
        };
        if request.method == "ACK" {
            return; // an ACK is never answered, whatever its Request-URI (RFC 3261 17.2.1)
        }
        if let Err(error) = set_received_rport_headers(&mut request.headers, from.addr) {
            debug!(%error, from = %from.addr, "request without a usable Via; dropped");
            return;
        }
        info!(
            method = %crate::message::truncated(&request.method, 64),
            code = request.status_code(),
            from = %from.addr,
            "request not supported"
        );
        let mut response = response_for_headers(
            &request.headers,
            StatusCode::from(request.status_code()),
            Some(&stateless_tag(&request)),
        );
        if request.status_code() == 501 {
            push_before_length(
                &mut response,
                [crate::message::raw::headers::Allow::new(ALLOW).into()],
            );
        }
        self.outputs.push_back(CoreOutput::Transmit {
            to: from,
            message: response.into(),
        });
    }

    /// RFC 3261 8.2.2.3: a request requiring an option tag we do not support gets 420 listing
    /// them in `Unsupported`; returns true when it did. ACK and CANCEL are never refused so.
    pub(super) fn refuse_unsupported_extensions(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        request: &Request,
    ) -> bool {
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return false;
        }
        let unsupported: Vec<&str> = request
            .header_all("Require")
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .filter(|tag| !SUPPORTED.iter().any(|ours| ours.eq_ignore_ascii_case(tag)))
            .collect();
        if unsupported.is_empty() {
            return false;
        }
        let mut response = response_for(request, StatusCode::from(420), Some(&new_tag()));
        push_before_length(
            &mut response,
            [Header::Other("Unsupported".into(), unsupported.join(", "))],
        );
        self.respond(now, key, response);
        true
    }
}

/// A To tag that is the same for every copy of a request (RFC 3261 8.2.7): derived from its
/// Call-ID, From tag and top Via branch.
fn stateless_tag(request: &UnsupportedRequest) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    request.call_id().hash(&mut hasher);
    request.from_tag().hash(&mut hasher);
    request
        .top_via()
        .ok()
        .and_then(|via| via.branch)
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
