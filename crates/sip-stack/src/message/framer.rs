//! Sans-IO framing of a SIP byte stream (TCP, RFC 3261 18.3) with RFC 5626 CRLF keepalives.
//!
//! The driver pushes whatever bytes the socket gave and then pulls with
//! [`StreamFramer::next_output`] until it returns `Ok(None)`. Each
//! [`FramerOutput::Message`] holds the exact bytes of one message (header section and
//! `Content-Length` bytes of body), ready for [`parse`](super::parse). An `Err` means the stream
//! is garbage or hostile: the connection must be closed (the framer stays failed).

use bytes::{Bytes, BytesMut};

use super::{find, DEFAULT_MAX_MESSAGE_SIZE};

/// Limits of a [`StreamFramer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerConfig {
    /// Largest header section (start line and headers) in bytes; default 16 KiB.
    pub max_header_size: usize,
    /// Largest whole message (headers and body) in bytes; default 64 KiB.
    pub max_message_size: usize,
}

impl Default for FramerConfig {
    fn default() -> Self {
        Self {
            max_header_size: 16 * 1024,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// What [`StreamFramer::next_output`] found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramerOutput {
    /// The bytes of one complete SIP message, to be given to [`parse`](super::parse).
    Message(Bytes),
    /// A keepalive ping (`CRLF CRLF`): the caller must answer with a pong (`CRLF`).
    Ping,
    /// A keepalive pong (a lone `CRLF`), the answer to a ping we sent.
    Pong,
}

/// Errors of the framer; after any of them the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramerError {
    /// No end of the header section within the limit.
    #[error("header section exceeds {max} bytes")]
    HeaderTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// The announced message is larger than the limit.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Header section plus Content-Length.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The first line is not the start of a SIP message.
    #[error("stream does not start with a SIP start line")]
    Garbage,
    /// Content-Length has no value, is not a number, or two of them disagree.
    #[error("invalid Content-Length in stream")]
    InvalidContentLength,
    /// The framer failed earlier; the connection must be closed.
    #[error("framer already failed")]
    Failed,
}

/// Frames SIP messages out of a byte stream by their Content-Length.
#[derive(Debug, Clone, Default)]
pub struct StreamFramer {
    config: FramerConfig,
    buffer: BytesMut,
    failed: bool,
}

impl StreamFramer {
    /// A framer accepting messages up to `max_message_size` bytes (header sections up to
    /// 16 KiB or `max_message_size`, whichever is smaller).
    pub fn new(max_message_size: usize) -> Self {
        Self::with_config(FramerConfig {
            max_header_size: FramerConfig::default()
                .max_header_size
                .min(max_message_size),
            max_message_size,
        })
    }

    /// A framer with these limits.
    pub fn with_config(config: FramerConfig) -> Self {
        Self {
            config,
            buffer: BytesMut::new(),
            failed: false,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_output(&mut self) -> Result<Option<FramerOutput>, FramerError> {
        if self.failed {
            return Err(FramerError::Failed);
        }
        let outcome = self.next_frame();
        if outcome.is_err() {
            self.failed = true;
            self.buffer = BytesMut::new();
        }
        outcome
    }

    fn next_frame(&mut self) -> Result<Option<FramerOutput>, FramerError> {
        if self.buffer.starts_with(b"\r\n\r\n") {
            let _ = self.buffer.split_to(4);
            return Ok(Some(FramerOutput::Ping));
        }
        // A lone CRLF is a pong, reported as soon as it is seen (so a ping split right in
        // its middle reads as two pongs; senders write the four bytes at once).
        if self.buffer.starts_with(b"\r\n") && !(self.buffer.len() == 3 && self.buffer[2] == b'\r')
        {
            let _ = self.buffer.split_to(2);
            return Ok(Some(FramerOutput::Pong));
        }
        if self.buffer.is_empty()
            || self.buffer[..] == b"\r"[..]
            || self.buffer[..] == b"\r\n\r"[..]
        {
            return Ok(None);
        }
        self.check_start_line()?;
        let max_header = self.config.max_header_size;
        let Some(head_end) = find(&self.buffer, b"\r\n\r\n") else {
            if self.buffer.len() > max_header {
                return Err(FramerError::HeaderTooLarge { max: max_header });
            }
            return Ok(None);
        };
        let head_len = head_end + 4;
        if head_len > max_header {
            return Err(FramerError::HeaderTooLarge { max: max_header });
        }
        let body_len = content_length(&self.buffer[..head_end])?;
        let size = head_len.saturating_add(body_len);
        if size > self.config.max_message_size {
            return Err(FramerError::MessageTooLarge {
                size,
                max: self.config.max_message_size,
            });
        }
        if self.buffer.len() < size {
            return Ok(None);
        }
        Ok(Some(FramerOutput::Message(
            self.buffer.split_to(size).freeze(),
        )))
    }

    /// Rejects a stream whose first line cannot start a SIP message, as early as possible.
    fn check_start_line(&self) -> Result<(), FramerError> {
        let line_end = find(&self.buffer, b"\r\n").unwrap_or(self.buffer.len());
        let line = &self.buffer[..line_end];
        // Without its LF yet, a final CR is the start of the line ending.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(FramerError::Garbage);
        }
        if line_end > self.config.max_header_size {
            return Err(FramerError::HeaderTooLarge {
                max: self.config.max_header_size,
            });
        }
        // "SIP/2.0 200 OK", "INVITE sip:..." and an extension method such as
        // "!interesting-Method0123456789_*+`.%indeed'~ sip:..." all begin with a token.
        if !line
            .first()
            .is_some_and(|&b| super::header::is_token_byte(b))
        {
            return Err(FramerError::Garbage);
        }
        // A whole first line must name the protocol: `SIP/2.0 ...` or `... SIP/2.0`.
        let complete = line_end < self.buffer.len();
        let names_sip = line.starts_with(b"SIP/") || find(line, b" SIP/").is_some();
        if complete && !names_sip {
            return Err(FramerError::Garbage);
        }
        Ok(())
    }
}

/// Content-Length (or `l`) of a raw header section; absent means 0.
fn content_length(head: &[u8]) -> Result<usize, FramerError> {
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"Content-Length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FramerError::InvalidContentLength);
        }
        let parsed = value
            .iter()
            .fold(0usize, |acc, digit| acc * 10 + usize::from(digit - b'0'));
        if length.is_some_and(|previous| previous != parsed) {
            return Err(FramerError::InvalidContentLength);
        }
        length = Some(parsed);
    }
    Ok(length.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageExt;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\
        From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 3\r\n\r\nabc";

    #[test]
    fn frames_messages_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        for chunk in [1, 2, 7, 64, stream.len()] {
            let mut framer = StreamFramer::default();
            framer.push(b"\r\n\r\n");
            let mut frames = vec![framer.next_output().expect("ping").expect("complete")];
            for piece in stream.chunks(chunk) {
                framer.push(piece);
                while let Some(frame) = framer.next_output().expect("valid stream") {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 4, "chunk size {chunk}");
            assert_eq!(frames[0], FramerOutput::Ping);
            let FramerOutput::Message(bytes) = &frames[1] else {
                panic!("expected a message")
            };
            let message = crate::message::parse(bytes).expect("framed message parses");
            assert_eq!(message.body(), b"abc");
            assert_eq!(message.call_id(), Some("c"));
            assert_eq!(frames[3], FramerOutput::Pong);
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn garbage_fails_and_stays_failed() {
        let mut framer = StreamFramer::default();
        framer.push(b"\x16\x03\x01 hello");
        assert_eq!(framer.next_output(), Err(FramerError::Garbage));
        framer.push(OPTIONS);
        assert_eq!(framer.next_output(), Err(FramerError::Failed));
    }

    #[test]
    fn limits_are_enforced() {
        let config = FramerConfig {
            max_header_size: 64,
            max_message_size: 128,
        };
        let mut framer = StreamFramer::with_config(config);
        framer.push(&[b'A'; 70]);
        assert_eq!(
            framer.next_output(),
            Err(FramerError::HeaderTooLarge { max: 64 })
        );

        let mut framer = StreamFramer::with_config(FramerConfig {
            max_header_size: 1024,
            max_message_size: 300,
        });
        let big = String::from_utf8_lossy(OPTIONS).replace("Content-Length: 3", "l: 999");
        framer.push(big.as_bytes());
        assert!(matches!(
            framer.next_output(),
            Err(FramerError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn bad_content_length_and_bad_message_fail() {
        let mut framer = StreamFramer::default();
        let bad =
            String::from_utf8_lossy(OPTIONS).replace("Content-Length: 3", "Content-Length: x");
        framer.push(bad.as_bytes());
        assert_eq!(framer.next_output(), Err(FramerError::InvalidContentLength));

        let mut framer = StreamFramer::new(1024);
        framer.push(b"hello world\r\n");
        assert_eq!(framer.next_output(), Err(FramerError::Garbage));
    }
}
