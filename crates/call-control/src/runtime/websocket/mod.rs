//! The `websocket` runtime: streams a call to the customer's AI over a
//! WebSocket, both ways, in the message format of Twilio Media Streams.
//!
//! When the call is answered the runtime connects to the agent's URL
//! (with its extra headers, within [`WebsocketSettings::connect_timeout`]),
//! sends `connected` and `start` (the call's metadata and rendered prompt
//! in `customParameters`), then one `media` message per 20 ms of what the
//! caller says, `dtmf` for the digits they press, `mark` when playback
//! reaches (or `clear` drops) a mark of the agent, and `stop` when the call
//! is over. From the agent it takes `media` (audio to play, any length),
//! `mark`, `clear`, and the extensions `transcript`, `hangup` and `dtmf`
//! (see [`messages`]). The engine's bridge paces the agent's audio in real
//! time, so marks are echoed only once their audio was sent.
//!
//! `start.customParameters` (all strings): `prompt` (rendered), `greeting`
//! (when the agent has one), `from`, `to` (also as `from_number`, `to_number`, the names
//! Pipecat reads), `direction` (`inbound` or
//! `outbound`), `agent_id`, `sip_call_id`, and `variables` (the call's
//! variables as a JSON object in a string). `start.callSid` is our call id,
//! `start.accountSid` the organisation.
//!
//! Extensions the agent may send besides Twilio's `media`, `mark`, `clear`:
//!
//! ```json
//! {"event": "transcript", "speaker": "caller", "text": "Hi", "final": true}
//! {"event": "hangup"}
//! {"event": "dtmf", "dtmf": {"digits": "12#"}}
//! ```
//!
//! `speaker` is `agent` (or `assistant`, `bot`) or `caller` (or `user`,
//! `customer`, `human`); `role` is accepted for `speaker`, `is_final` for
//! `final` (default true), and the fields may sit under a `transcript`
//! object. Only final entries are kept on the call. `hangup` and `dtmf`
//! take effect once the audio queued before them was played.
//!
//! Ending: the agent hangs up with the `hangup` event or by closing the
//! WebSocket normally (a close frame with status 1000 or none, the way
//! Pipecat and most frameworks end a conversation); either way the call
//! ends with outcome `agent_hangup` once the audio sent before was played.
//! After its close frame the agent is sent nothing more (no `stop`).
//!
//! Destinations: the URL's host is resolved by the runtime and every address checked
//! against [`WebsocketSettings::destinations`] before the TCP connection is made to an
//! allowed one (the handshake then runs over that connection), so a loopback, private or
//! link-local agent address is refused at connect time ([`RuntimeError::Refused`]), as is
//! a `ws://` URL with headers (they would cross the network in clear), unless `[security]
//! allow_private_destinations` allows both.
//!
//! Failures: no connection within the timeout ([`RuntimeError::Unreachable`])
//! or a connection that ends before the agent hung up without a normal
//! close (no close frame, a transport or protocol error, or a close frame
//! with any other status, such as 1011 internal error:
//! [`RuntimeError::Disconnected`]) end the call with outcome `error`;
//! with [`WebsocketSettings::fallback_audio`] set, that audio is played to
//! the caller first. Malformed messages are logged and skipped.

pub mod messages;
pub mod payload;
mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

pub use payload::WireFormat;

use super::{AgentRuntime, CallMetadata, RuntimeError, RuntimeSession};
use crate::destinations::DestinationPolicy;

/// Settings of the WebSocket runtime shared by all agents (`[websocket]`
/// in the service's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebsocketSettings {
    /// How long connecting (TCP, TLS and the WebSocket handshake) may take.
    pub connect_timeout: Duration,
    /// A WAV file played to the caller when the agent cannot be reached or
    /// drops mid-call, before the call ends (none: it ends at once).
    pub fallback_audio: Option<PathBuf>,
    /// Which agent addresses may be connected to; allowing private ones also allows
    /// headers over `ws://`.
    pub destinations: DestinationPolicy,
}

impl Default for WebsocketSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            fallback_audio: None,
            destinations: DestinationPolicy::default(),
        }
    }
}

/// The runtime of one call of a `websocket` agent.
#[derive(Clone)]
pub struct Websocket {
    url: String,
    headers: BTreeMap<String, String>,
    format: WireFormat,
    settings: WebsocketSettings,
}

impl std::fmt::Debug for Websocket {
    /// Header values and the URL's query and credentials are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Websocket")
            .field("url", &crate::redact::loggable_url(&self.url))
            .field("headers", &crate::redact::header_names(&self.headers))
            .field("format", &self.format)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Websocket {
    /// A runtime connecting to `url` with the extra `headers`, streaming
    /// audio as `format`.
    pub fn new(
        url: impl Into<String>,
        headers: BTreeMap<String, String>,
        format: WireFormat,
        settings: WebsocketSettings,
    ) -> Self {
        Self {
            url: url.into(),
            headers,
            format,
            settings,
        }
    }
}

impl AgentRuntime for Websocket {
    fn kind(&self) -> &'static str {
        "websocket"
    }

    fn run(
        self: Box<Self>,
        metadata: CallMetadata,
        session: RuntimeSession,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        session::run(*self, metadata, session).boxed()
    }
}

#[cfg(test)]
mod tests;
