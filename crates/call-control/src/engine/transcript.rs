//! A call's transcript within bounds: at most [`MAX_ENTRIES`] events and [`MAX_BYTES`] of
//! text, each event cut at [`MAX_TEXT`], so that a runtime cannot grow a call record (and
//! its webhooks and list answers) without bound. What exceeds them is counted and the
//! record says so in a last `system` entry.

use chrono::{DateTime, Utc};

use crate::model::TranscriptEntry;

/// Most transcript events kept per call.
pub const MAX_ENTRIES: usize = 2_000;
/// Most bytes of transcript text kept per call.
pub const MAX_BYTES: usize = 512 * 1024;
/// Longest text of one event (longer ones are cut at a character boundary).
pub const MAX_TEXT: usize = 8 * 1024;

/// What one call's transcript has used of its bounds.
#[derive(Debug, Default)]
pub struct TranscriptLimit {
    bytes: usize,
    dropped: u64,
}

impl TranscriptLimit {
    /// Appends an event to `transcript` unless a bound is reached; returns whether it was
    /// kept. The first drop is logged.
    pub fn push(
        &mut self,
        transcript: &mut Vec<TranscriptEntry>,
        role: String,
        mut text: String,
        at: DateTime<Utc>,
    ) -> bool {
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let size = role.len() + text.len();
        if transcript.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            self.dropped += 1;
            if self.dropped == 1 {
                tracing::warn!(
                    entries = transcript.len(),
                    bytes = self.bytes,
                    "transcript limit reached: further events are dropped"
                );
            }
            return false;
        }
        self.bytes += size;
        transcript.push(TranscriptEntry { role, text, at });
        true
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// At the end of the call: a last `system` entry saying how many events were dropped.
    pub fn finish(&self, transcript: &mut Vec<TranscriptEntry>, at: DateTime<Utc>) {
        if self.dropped == 0 {
            return;
        }
        transcript.push(TranscriptEntry {
            role: "system".into(),
            text: format!(
                "{} transcript events dropped: a call keeps at most {MAX_ENTRIES} events and \
                 {MAX_BYTES} bytes",
                self.dropped
            ),
            at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_bytes_and_text_are_bounded_and_the_record_says_so() {
        let now = Utc::now();
        let mut limit = TranscriptLimit::default();
        let mut transcript = Vec::new();
        for i in 0..MAX_ENTRIES + 300 {
            limit.push(&mut transcript, "agent".into(), format!("line {i}"), now);
        }
        assert_eq!(transcript.len(), MAX_ENTRIES);
        assert_eq!(limit.dropped(), 300);
        limit.finish(&mut transcript, now);
        let last = transcript.last().expect("note");
        assert_eq!(last.role, "system");
        assert!(
            last.text.starts_with("300 transcript events dropped"),
            "{}",
            last.text
        );

        // 5000 events of 10 KB: each is cut to MAX_TEXT, the total to MAX_BYTES.
        let mut limit = TranscriptLimit::default();
        let mut transcript = Vec::new();
        for _ in 0..5000 {
            limit.push(&mut transcript, "user".into(), "é".repeat(5_000), now);
        }
        let bytes: usize = transcript.iter().map(|e| e.role.len() + e.text.len()).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert!(transcript.iter().all(|e| e.text.len() <= MAX_TEXT));
        assert!(transcript[0].text.chars().all(|c| c == 'é'));
        assert_eq!(limit.dropped() as usize + transcript.len(), 5000);
    }
}
