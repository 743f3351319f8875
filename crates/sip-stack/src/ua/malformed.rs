//! Answering requests that do not parse (RFC 3261 8.2 / 21.4.1: 400 Bad Request).
//!
//! When the parser rejects a request, a 400 can still be built if the raw
//! text carries the headers a response needs (Via, From, To, Call-ID,
//! CSeq): they are copied line by line, so the sender learns what was wrong
//! instead of retransmitting into silence. Anything else is dropped.

/// Builds a 400 response for a request that failed to parse, or `None` when
/// the bytes are not recognisably a request (or are an ACK, which is never answered).
pub fn bad_request(raw: &[u8], reason: &str) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?;
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || method == "ACK"
        || !request_line.ends_with("SIP/2.0")
    {
        return None;
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => vias.push(value),
            "from" | "f" => from = Some(value),
            "to" | "t" => to = Some(value),
            "call-id" | "i" => call_id = Some(value),
            "cseq" => cseq = Some(value),
            _ => {}
        }
    }
    if vias.is_empty() {
        return None;
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    // The reason goes into the phrase: keep it printable and on one line.
    let phrase: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(100)
        .collect();
    let mut response = format!("SIP/2.0 400 Bad Request ({})\r\n", phrase.trim());
    for via in vias {
        response.push_str(&format!("Via: {via}\r\n"));
    }
    response.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    ));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_broken_header_gets_400() {
        let raw = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: nonsense\r\n\r\n";
        let response = bad_request(raw.as_bytes(), "bad Content-Length").expect("400");
        assert!(response.starts_with("SIP/2.0 400 Bad Request (bad Content-Length)\r\n"));
        assert!(response.contains("Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n"));
        assert!(response.contains("CSeq: 1 INVITE\r\n"));
    }

    #[test]
    fn garbage_responses_and_acks_get_nothing() {
        assert_eq!(bad_request(b"\x00\xff garbage", "x"), None);
        assert_eq!(bad_request(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", "x"), None);
        assert_eq!(
            bad_request(b"ACK sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n", "x"),
            None
        );
        assert_eq!(
            bad_request(b"INVITE sip:a@b SIP/2.0\r\nFrom: a\r\n\r\n", "x"),
            None
        );
    }
}
