//! Transaction identity (RFC 3261 17.1.3 and 17.2.3).

use std::hash::{Hash, Hasher};

use crate::message::{MessageError, MessageExt, Method, Request, Response};

use super::TransactionError;

/// Which side of a transaction we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// Identifies a transaction: the top Via branch and the method (ACK counted as INVITE,
/// CANCEL as itself), plus the Via sent-by on the server side. For requests whose branch
/// lacks the magic cookie (RFC 2543 peers), the branch is replaced by the Request-URI, From
/// tag, Call-ID, CSeq number, top Via and, except for INVITE/ACK, the To tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionKey {
    role: Role,
    branch: String,
    sent_by: String,
    method: Method,
}

impl TransactionKey {
    /// The key of a client transaction for a request we send.
    pub fn for_client(request: &Request) -> Result<Self, TransactionError> {
        let via = request.top_via()?;
        if !via.has_magic_cookie() {
            return Err(TransactionError::MissingBranch);
        }
        Ok(Self {
            role: Role::Client,
            branch: via.branch.unwrap_or_default(),
            sent_by: String::new(),
            method: request.method,
        })
    }

    /// The key of the client transaction a response belongs to (branch + CSeq method).
    pub fn for_response(response: &Response) -> Result<Self, TransactionError> {
        let via = response.top_via()?;
        let branch = via
            .branch
            .ok_or(MessageError::MissingHeader { name: "Via branch" })?;
        Ok(Self {
            role: Role::Client,
            branch,
            sent_by: String::new(),
            method: response.cseq()?.method,
        })
    }

    /// The key of the server transaction a received request belongs to (ACK maps to the
    /// INVITE's transaction).
    pub fn for_server(request: &Request) -> Result<Self, TransactionError> {
        let via = request.top_via()?;
        let invite_like = matches!(request.method, Method::Invite | Method::Ack);
        let method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method
        };
        if via.has_magic_cookie() {
            return Ok(Self {
                role: Role::Server,
                branch: via.branch.clone().unwrap_or_default(),
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            });
        }
        let call_id = request
            .call_id()
            .ok_or(MessageError::MissingHeader { name: "Call-ID" })?;
        let to_tag = if invite_like {
            ""
        } else {
            request.to_tag().unwrap_or_default()
        };
        let branch = format!(
            "rfc2543|{}|{}|{}|{}|{}|{}|{}",
            request.uri,
            request.from_tag().unwrap_or_default(),
            to_tag,
            call_id,
            request.cseq()?.seq,
            via.sent_by().to_ascii_lowercase(),
            via.branch.as_deref().unwrap_or_default(),
        );
        Ok(Self {
            role: Role::Server,
            branch,
            sent_by: String::new(),
            method,
        })
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The branch (for RFC 2543 server transactions, the synthesized identity).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The method of the transaction (INVITE for an INVITE's ACK).
    pub fn method(&self) -> Method {
        self.method
    }

    /// The same key with another method (e.g. the INVITE a CANCEL refers to).
    pub(crate) fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
}

impl Hash for TransactionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.role.hash(state);
        self.branch.hash(state);
        self.sent_by.hash(state);
        std::mem::discriminant(&self.method).hash(state);
    }
}

impl std::fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        write!(f, "{role} {} {}", self.method, self.branch)?;
        if !self.sent_by.is_empty() {
            write!(f, " from {}", self.sent_by)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, SipMessage};

    fn request(text: &str) -> Request {
        match parse(text.as_bytes()).expect("valid test request") {
            SipMessage::Request(request) => request,
            SipMessage::Response(_) => panic!("expected a request"),
        }
    }

    const INVITE: &str =
        "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP A.example:5060;branch=z9hG4bK1\r\n\
        From: <sip:a@h>;tag=f\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";

    #[test]
    fn ack_and_cancel_keys() {
        let invite = TransactionKey::for_server(&request(INVITE)).expect("key");
        let ack = request(
            &INVITE
                .replace("1 INVITE", "1 ACK")
                .replace("INVITE sip", "ACK sip"),
        );
        assert_eq!(TransactionKey::for_server(&ack).expect("key"), invite);
        let cancel = request(
            &INVITE
                .replace("1 INVITE", "1 CANCEL")
                .replace("INVITE sip", "CANCEL sip"),
        );
        let cancel = TransactionKey::for_server(&cancel).expect("key");
        assert_ne!(cancel, invite);
        assert_eq!(cancel.with_method(Method::Invite), invite);
        let other_host = request(&INVITE.replace("A.example", "b.example"));
        assert_ne!(
            TransactionKey::for_server(&other_host).expect("key"),
            invite
        );
        let case = request(&INVITE.replace("A.example", "a.EXAMPLE"));
        assert_eq!(TransactionKey::for_server(&case).expect("key"), invite);
    }

    #[test]
    fn rfc2543_keys_ignore_the_to_tag_of_an_ack() {
        let old = INVITE.replace("branch=z9hG4bK1", "branch=old1");
        let invite = TransactionKey::for_server(&request(&old)).expect("key");
        assert!(invite.branch().starts_with("rfc2543|"));
        let ack = old
            .replace("1 INVITE", "1 ACK")
            .replace("INVITE sip", "ACK sip")
            .replace("To: <sip:b@h>", "To: <sip:b@h>;tag=x");
        assert_eq!(
            TransactionKey::for_server(&request(&ack)).expect("key"),
            invite
        );
        let other = old.replace("CSeq: 1", "CSeq: 2");
        assert_ne!(
            TransactionKey::for_server(&request(&other)).expect("key"),
            invite
        );
    }

    #[test]
    fn client_keys_need_a_magic_cookie() {
        let old = request(&INVITE.replace("branch=z9hG4bK1", "branch=old1"));
        assert_eq!(
            TransactionKey::for_client(&old),
            Err(TransactionError::MissingBranch)
        );
        let key = TransactionKey::for_client(&request(INVITE)).expect("key");
        assert_eq!((key.role(), key.method()), (Role::Client, Method::Invite));
        assert_eq!(key.to_string(), "client INVITE z9hG4bK1");
    }
}
