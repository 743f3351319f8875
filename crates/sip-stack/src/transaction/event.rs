//! What the transaction layer hands to its driver: [`Output`], [`TransactionEvent`] and the
//! [`TransactionState`] of a transaction.

use super::{Timer, TransactionKey};
use crate::message::{Peer, Request, Response, SipMessage};

/// Something the driver must do: send a message, or hand an event to the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to `to`.
    Transmit {
        /// Destination.
        to: Peer,
        /// The message to send.
        message: SipMessage,
    },
    /// An event for the transaction user.
    Event(TransactionEvent),
}

/// What the transaction layer tells its user (the dialog / user agent core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionEvent {
    /// A new server transaction: the TU must answer with [`Transactions::send_response`](super::Transactions::send_response).
    /// For a CANCEL, [`Transactions::cancel_target`](super::Transactions::cancel_target) finds the INVITE it refers to.
    Request {
        /// The new server transaction.
        key: TransactionKey,
        /// The request.
        request: Request,
        /// Where it came from (responses go back there).
        from: Peer,
    },
    /// A response on a client transaction, provisional or final.
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Response,
        /// True for a 2xx retransmission in Accepted: the TU must re-send its ACK.
        retransmission: bool,
    },
    /// Timer B, F or H fired (or [`Timer::TuGuard`]): the transaction failed and is gone.
    Timeout {
        /// The transaction.
        key: TransactionKey,
        /// The timer that fired.
        timer: Timer,
    },
    /// A 2xx sent by a server INVITE transaction was never ACKed within 64*T1: the TU should
    /// end the dialog with BYE (RFC 3261 13.3.1.4).
    AckTimeout {
        /// The server INVITE transaction.
        key: TransactionKey,
    },
    /// The ACK for a 2xx, matched to its server INVITE transaction in Accepted state by
    /// Call-ID, CSeq number and From tag. Later copies of the same ACK are passed up too.
    Ack {
        /// The server INVITE transaction.
        key: TransactionKey,
        /// The ACK.
        request: Request,
        /// Where it came from.
        from: Peer,
    },
    /// A response that matches no client transaction (passed up, the TU may ignore it).
    StrayResponse {
        /// The response.
        response: Response,
        /// Where it came from.
        from: Peer,
    },
    /// An ACK that matches no transaction (e.g. for a 2xx after Timer L; the TU may match it
    /// to a dialog or ignore it).
    StrayAck {
        /// The ACK.
        request: Request,
        /// Where it came from.
        from: Peer,
    },
    /// The transaction ended and was removed from the table.
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
}

/// The state of a transaction (the union of the four machines' states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// Client INVITE: request sent, no response yet.
    Calling,
    /// Non-INVITE: no response yet.
    Trying,
    /// A provisional response was received or sent.
    Proceeding,
    /// INVITE: a 2xx was received or sent (RFC 6026).
    Accepted,
    /// A non-2xx final response was received or sent.
    Completed,
    /// Server INVITE: the ACK for a non-2xx final response arrived.
    Confirmed,
    /// Ended; such transactions are removed from the table.
    Terminated,
}
