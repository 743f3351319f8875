//! Answering requests that do not parse (RFC 3261 8.2 / 21.4.1: 400 Bad Request; 21.5.6: 505
//! Version Not Supported).
//!
//! When the parser rejects a request, an error response can still be built if the raw text
//! carries a Via: the Via, From, To, Call-ID and CSeq lines are copied as they are (RFC 4475
//! 3.3.1 asks for a 400 even when From, To and Call-ID are missing), so the sender learns what
//! was wrong instead of retransmitting into silence. Anything else is dropped.

/// Builds the error response (400, or 505 for another SIP version) for a request that failed
/// to parse, or `None` when the bytes are not recognisably a request (or are an ACK, which is
/// never answered).
pub fn bad_request(raw: &[u8], code: u16, reason: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let method = request_line.split(' ').next()?;
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
    let names_sip = request_line
        .trim_end()
        .rsplit(' ')
        .next()
        .is_some_and(|version| version.starts_with("SIP/"));
    if method.is_empty() || !method.bytes().all(is_token) || method == "ACK" || !names_sip {
        return None;
    }
    let mut vias = Vec::new();
    let mut copied = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let name = match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => {
                vias.push(value);
                continue;
            }
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        if !copied.iter().any(|(copied, _)| *copied == name) {
            copied.push((name, value));
        }
    }
    if vias.is_empty() {
        return None;
    }
    let status = match code {
        505 => "Version Not Supported",
        _ => "Bad Request",
    };
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
    let mut response = format!("SIP/2.0 {code} {status} ({})\r\n", phrase.trim());
    for via in vias {
        response.push_str(&format!("Via: {via}\r\n"));
    }
    for (name, value) in copied {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_a_broken_header_gets_400() {
        let raw = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: nonsense\r\n\r\n";
        let response = bad_request(raw.as_bytes(), 400, "bad Content-Length").expect("400");
        assert!(response.starts_with("SIP/2.0 400 Bad Request (bad Content-Length)\r\n"));
        assert!(response.contains("Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n"));
        assert!(response.contains("CSeq: 1 INVITE\r\n"));
    }

    #[test]
    fn trailing_spaces_and_missing_identifiers_still_get_an_answer() {
        let raw = "OPTIONS sip:a@b SIP/2.0  \r\nVia: SIP/2.0/TCP h;branch=z9hG4bKy\r\nCSeq: 2 OPTIONS\r\n\r\n";
        let response = bad_request(raw.as_bytes(), 400, "x").expect("400");
        assert!(response.contains("CSeq: 2 OPTIONS\r\n"));
        let raw = "OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP h;branch=z9hG4bKy\r\nCSeq: 2 OPTIONS\r\n\r\n";
        let response = bad_request(raw.as_bytes(), 505, "x").expect("505");
        assert!(response.starts_with("SIP/2.0 505 Version Not Supported"));
    }

    #[test]
    fn garbage_responses_and_acks_get_nothing() {
        assert_eq!(bad_request(b"\x00\xff garbage", 400, "x"), None);
        assert_eq!(
            bad_request(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", 400, "x"),
            None
        );
        assert_eq!(
            bad_request(b"ACK sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n", 400, "x"),
            None
        );
        assert_eq!(
            bad_request(b"INVITE sip:a@b SIP/2.0\r\nFrom: a\r\n\r\n", 400, "x"),
            None
        );
    }
}
