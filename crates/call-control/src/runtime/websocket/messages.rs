//! The messages of the Twilio Media Streams format, both ways.
//!
//! To the agent: [`StreamMessage`] (`connected`, `start`, `media`, `dtmf`,
//! `mark`, `stop`), serialized as Twilio sends them: camelCase fields, and
//! `sequenceNumber`, `chunk` and `timestamp` as decimal strings.
//!
//! From the agent: [`parse`] turns one text frame into an [`AgentMessage`]
//! (`media`, `mark`, `clear`, and our extensions `transcript`, `hangup`
//! and `dtmf`). Fields this module does not use are ignored, so agents
//! written for Twilio (which add `streamSid` and sometimes more) parse
//! unchanged. Anything else is a [`ParseError`] the caller logs and skips.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `protocol` of the `connected` message.
pub const PROTOCOL: &str = "Call";
/// `version` of the `connected` message.
pub const VERSION: &str = "1.0.0";
/// The only track streamed to the agent: what the caller says.
pub const INBOUND_TRACK: &str = "inbound";
/// The track named in `dtmf` messages.
pub const DTMF_TRACK: &str = "inbound_track";

/// A message to the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "event",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum StreamMessage {
    /// The first message once the WebSocket is open.
    Connected {
        /// Always [`PROTOCOL`].
        protocol: &'static str,
        /// Always [`VERSION`].
        version: &'static str,
    },
    /// The stream's metadata, once, right after `connected`.
    Start {
        /// `"1"`: the first numbered message.
        sequence_number: String,
        /// What is streamed and for which call.
        start: StartInfo,
        /// The stream's id.
        stream_sid: String,
    },
    /// 20 ms of the caller's audio.
    Media {
        /// Order of this message in the stream.
        sequence_number: String,
        /// The audio.
        media: MediaInfo,
        /// The stream's id.
        stream_sid: String,
    },
    /// A digit the caller pressed.
    Dtmf {
        /// The stream's id.
        stream_sid: String,
        /// Order of this message in the stream.
        sequence_number: String,
        /// The digit.
        dtmf: DtmfInfo,
    },
    /// A mark of the agent was reached (or dropped by `clear`).
    Mark {
        /// The stream's id.
        stream_sid: String,
        /// Order of this message in the stream.
        sequence_number: String,
        /// The mark's name as the agent sent it.
        mark: MarkInfo,
    },
    /// The stream ends (the call is over).
    Stop {
        /// The stream's id.
        stream_sid: String,
        /// Order of this message in the stream.
        sequence_number: String,
        /// Whose stream ended.
        stop: StopInfo,
    },
}

impl StreamMessage {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        // Plain strings, numbers and maps with string keys: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `start.start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInfo {
    /// The stream's id.
    pub stream_sid: String,
    /// The organisation.
    pub account_sid: String,
    /// Our call id.
    pub call_sid: String,
    /// `["inbound"]`.
    pub tracks: Vec<&'static str>,
    /// Metadata of the call: prompt, greeting, numbers, direction, ...
    pub custom_parameters: BTreeMap<String, String>,
    /// The audio format of `media` payloads, both ways.
    pub media_format: MediaFormat,
}

/// `start.start.mediaFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw` or `audio/l16`.
    pub encoding: &'static str,
    /// 8000 or 16000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u32,
}

/// `media.media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaInfo {
    /// `inbound`.
    pub track: &'static str,
    /// Number of this chunk, from 1.
    pub chunk: String,
    /// Milliseconds of the stream before this chunk.
    pub timestamp: String,
    /// The audio, base64.
    pub payload: String,
}

/// `dtmf.dtmf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DtmfInfo {
    /// `inbound_track`.
    pub track: &'static str,
    /// The digit.
    pub digit: String,
}

/// `mark.mark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkInfo {
    /// The name the agent gave the mark.
    pub name: String,
}

/// `stop.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopInfo {
    /// The organisation.
    pub account_sid: String,
    /// Our call id.
    pub call_sid: String,
}

/// The payload of a `media` message: base64 of the encoded audio.
pub fn encode_payload(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A message from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentMessage {
    /// Audio to play, encoded as the stream's media format.
    Media {
        /// The decoded payload bytes.
        payload: Vec<u8>,
    },
    /// Tell me when playback reaches here.
    Mark {
        /// The mark's name, echoed back.
        name: String,
    },
    /// Drop all queued audio now.
    Clear,
    /// A transcript event (extension).
    Transcript {
        /// `agent` or `caller`.
        role: &'static str,
        /// What was said.
        text: String,
        /// Whether the text is final.
        is_final: bool,
    },
    /// Hang up once playback reaches here (extension).
    Hangup,
    /// Send these DTMF digits once playback reaches here (extension).
    Dtmf {
        /// 0-9, *, #, A-D.
        digits: String,
    },
}

/// Why a message from the agent was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON without a string `event`.
    #[error("no \"event\" field")]
    NoEvent,
    /// An event this runtime does not know.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A known event with fields missing or of the wrong type.
    #[error("{event}: {reason}")]
    Invalid {
        /// The event.
        event: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A binary frame (the format is JSON text only).
    #[error("binary frame of {0} bytes")]
    Binary(usize),
}

#[derive(Deserialize)]
struct MediaBody {
    media: MediaPayload,
}

#[derive(Deserialize)]
struct MediaPayload {
    payload: String,
}

#[derive(Deserialize)]
struct MarkBody {
    mark: MarkName,
}

#[derive(Deserialize)]
struct MarkName {
    name: String,
}

#[derive(Deserialize)]
struct TranscriptBody {
    #[serde(alias = "role")]
    speaker: String,
    text: String,
    #[serde(default = "final_by_default", alias = "is_final", alias = "isFinal")]
    r#final: bool,
}

fn final_by_default() -> bool {
    true
}

#[derive(Deserialize)]
struct DtmfBody {
    dtmf: DtmfDigits,
}

#[derive(Deserialize)]
struct DtmfDigits {
    #[serde(alias = "digit")]
    digits: String,
}

/// Parses one text frame from the agent.
pub fn parse(text: &str) -> Result<AgentMessage, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
    let event = value
        .get("event")
        .and_then(Value::as_str)
        .ok_or(ParseError::NoEvent)?;
    match event {
        "media" => {
            let body: MediaBody = fields("media", value.clone())?;
            let payload = BASE64
                .decode(body.media.payload.trim())
                .map_err(|e| invalid("media", format!("payload is not base64: {e}")))?;
            Ok(AgentMessage::Media { payload })
        }
        "mark" => {
            let body: MarkBody = fields("mark", value.clone())?;
            Ok(AgentMessage::Mark {
                name: body.mark.name,
            })
        }
        "clear" => Ok(AgentMessage::Clear),
        "hangup" => Ok(AgentMessage::Hangup),
        "transcript" => {
            // Either the fields themselves or an object under `transcript`.
            let inner = match value.get("transcript") {
                Some(inner @ Value::Object(_)) => inner.clone(),
                _ => value.clone(),
            };
            let body: TranscriptBody = fields("transcript", inner)?;
            let role = role(&body.speaker).ok_or_else(|| {
                invalid(
                    "transcript",
                    format!(
                        "speaker {:?}: expected agent or caller (assistant/user)",
                        body.speaker
                    ),
                )
            })?;
            Ok(AgentMessage::Transcript {
                role,
                text: body.text,
                is_final: body.r#final,
            })
        }
        "dtmf" => {
            let body: DtmfBody = fields("dtmf", value.clone())?;
            let digits = body.dtmf.digits;
            let valid = !digits.is_empty()
                && digits.len() <= 64
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'A'..=b'D'));
            if !valid {
                return Err(invalid("dtmf", format!("digits {digits:?}")));
            }
            Ok(AgentMessage::Dtmf { digits })
        }
        other => Err(ParseError::UnknownEvent(other.chars().take(64).collect())),
    }
}

fn fields<T: serde::de::DeserializeOwned>(
    event: &'static str,
    value: Value,
) -> Result<T, ParseError> {
    serde_json::from_value(value).map_err(|e| invalid(event, e.to_string()))
}

fn invalid(event: &'static str, reason: String) -> ParseError {
    ParseError::Invalid { event, reason }
}

/// The transcript role for a speaker name.
fn role(speaker: &str) -> Option<&'static str> {
    match speaker.to_ascii_lowercase().as_str() {
        "agent" | "assistant" | "bot" => Some("agent"),
        "caller" | "user" | "customer" | "human" => Some("caller"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn twilio_agent_messages_parse() {
        let media = parse(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/38A"}}"#);
        assert_eq!(
            media,
            Ok(AgentMessage::Media {
                payload: vec![0xff, 0x7f, 0x00]
            })
        );
        let mark = parse(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"turn 1"}}"#);
        assert_eq!(
            mark,
            Ok(AgentMessage::Mark {
                name: "turn 1".into()
            })
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"MZ1"}"#),
            Ok(AgentMessage::Clear)
        );
    }

    #[test]
    fn extensions_parse() {
        assert_eq!(parse(r#"{"event":"hangup"}"#), Ok(AgentMessage::Hangup));
        let flat = parse(r#"{"event":"transcript","speaker":"user","text":"hi","final":false}"#);
        assert_eq!(
            flat,
            Ok(AgentMessage::Transcript {
                role: "caller",
                text: "hi".into(),
                is_final: false
            })
        );
        let nested =
            parse(r#"{"event":"transcript","transcript":{"role":"assistant","text":"hello"}}"#);
        assert_eq!(
            nested,
            Ok(AgentMessage::Transcript {
                role: "agent",
                text: "hello".into(),
                is_final: true
            })
        );
        assert_eq!(
            parse(r#"{"event":"dtmf","dtmf":{"digits":"12#"}}"#),
            Ok(AgentMessage::Dtmf {
                digits: "12#".into()
            })
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(matches!(parse("not json"), Err(ParseError::Json(_))));
        assert!(matches!(parse("[1,2]"), Err(ParseError::NoEvent)));
        assert!(matches!(parse(r#"{"event":5}"#), Err(ParseError::NoEvent)));
        assert_eq!(
            parse(r#"{"event":"dance"}"#),
            Err(ParseError::UnknownEvent("dance".into()))
        );
        for bad in [
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"payload":5}}"#,
            r#"{"event":"media","media":{"payload":"***"}}"#,
            r#"{"event":"mark","mark":{}}"#,
            r#"{"event":"transcript","text":"x"}"#,
            r#"{"event":"transcript","speaker":"narrator","text":"x"}"#,
            r#"{"event":"dtmf","dtmf":{"digits":"12x"}}"#,
            r#"{"event":"dtmf","dtmf":{"digits":""}}"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Invalid { .. })),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        // Arbitrary bytes as text never panic.
        for text in ["", "{", "\u{0}", "{\"event\":\"media\",\"media\":null}"] {
            assert!(parse(text).is_err());
        }
    }

    #[test]
    fn stream_messages_have_the_twilio_shape() {
        let start = StreamMessage::Start {
            sequence_number: "1".into(),
            start: StartInfo {
                stream_sid: "MZ1".into(),
                account_sid: "org_1".into(),
                call_sid: "call_1".into(),
                tracks: vec![INBOUND_TRACK],
                custom_parameters: BTreeMap::from([("prompt".into(), "Be nice".into())]),
                media_format: MediaFormat {
                    encoding: "audio/x-mulaw",
                    sample_rate: 8000,
                    channels: 1,
                },
            },
            stream_sid: "MZ1".into(),
        };
        let value: Value = serde_json::from_str(&start.to_json()).expect("JSON");
        assert_eq!(
            value,
            json!({
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": "MZ1",
                "start": {
                    "streamSid": "MZ1",
                    "accountSid": "org_1",
                    "callSid": "call_1",
                    "tracks": ["inbound"],
                    "customParameters": {"prompt": "Be nice"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                }
            })
        );
        let media = StreamMessage::Media {
            sequence_number: "2".into(),
            media: MediaInfo {
                track: INBOUND_TRACK,
                chunk: "1".into(),
                timestamp: "0".into(),
                payload: encode_payload(&[0xff, 0x7f, 0x00]),
            },
            stream_sid: "MZ1".into(),
        };
        let value: Value = serde_json::from_str(&media.to_json()).expect("JSON");
        assert_eq!(
            value,
            json!({"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
                   "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "/38A"}})
        );
        let connected = StreamMessage::Connected {
            protocol: PROTOCOL,
            version: VERSION,
        };
        assert_eq!(
            serde_json::from_str::<Value>(&connected.to_json()).expect("JSON"),
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        );
        let stop = StreamMessage::Stop {
            stream_sid: "MZ1".into(),
            sequence_number: "9".into(),
            stop: StopInfo {
                account_sid: "org_1".into(),
                call_sid: "call_1".into(),
            },
        };
        assert_eq!(
            serde_json::from_str::<Value>(&stop.to_json()).expect("JSON"),
            json!({"event": "stop", "streamSid": "MZ1", "sequenceNumber": "9",
                   "stop": {"accountSid": "org_1", "callSid": "call_1"}})
        );
    }
}
