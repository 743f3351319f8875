//! RFC 4475 (SIP torture test messages) against our parser and a running user agent.
//!
//! Guards: every valid message of section 3.1.1 parses and gets the answer its method deserves
//! from a user agent that is no proxy and no registrar (OPTIONS 200, an INVITE offered to the
//! application, REGISTER and MESSAGE 405 with `Allow`, an extension method 501 with `Allow`,
//! responses nothing); every invalid message of 3.1.2 gets 400 (505 for the unknown version),
//! or nothing for a response; the 3.2 and 3.3 messages that apply to a user agent get what the
//! RFC expects (416, 420, 400, 200). Over TCP an extension method gets 501 and the connection
//! stays open for the next request.
//!
//! The messages are in `tests/rfc4475/*.dat`, byte for byte as the RFC gives them (CRLF line
//! ends, raw NUL/BEL/DEL in `intmeth`, binary body in `mpart01`). Each is sent over UDP from a
//! real socket on loopback to a user agent on its own port; a request that must get no answer
//! is followed by an OPTIONS probe whose 200 must be the first thing that comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sip_stack::message::{
    parse, parse_any, FramerOutput, MessageExt, Method, ParseConfig, Parsed, Response, SipMessage,
    StreamFramer, TransportKind, Unsupported,
};
use sip_stack::ua::{IncomingInvite, UaConfig, UserAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Upper bound for one answer to arrive; only reached when the user agent fails to answer.
const STEP: Duration = Duration::from_secs(10);

macro_rules! message {
    ($name:literal) => {
        include_bytes!(concat!("rfc4475/", $name, ".dat")).as_slice()
    };
}

/// A user agent on loopback that rejects every incoming call with 486 and reports it, and a
/// UDP socket that talks to it.
struct Harness {
    _ua: UserAgent,
    calls: mpsc::UnboundedReceiver<IncomingInvite>,
    socket: UdpSocket,
    target: SocketAddr,
    tcp_target: SocketAddr,
}

impl Harness {
    async fn start() -> Self {
        let mut config = UaConfig::default();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        config.transport.udp = Some(any);
        config.transport.tcp = Some(any);
        let (ua, mut incoming) = UserAgent::start(config).await.expect("UA starts");
        let (tx, calls) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(call) = incoming.recv().await {
                let _ = tx.send(call.invite);
                call.call.reject(486);
            }
        });
        let target = ua.local_addr(TransportKind::Udp).expect("UDP bound");
        let tcp_target = ua.local_addr(TransportKind::Tcp).expect("TCP bound");
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
        Self {
            _ua: ua,
            calls,
            socket,
            target,
            tcp_target,
        }
    }

    async fn receive(&self) -> Answer {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = tokio::time::timeout(STEP, self.socket.recv_from(&mut buf))
            .await
            .expect("the user agent answers")
            .expect("UDP receive");
        Answer::read(&buf[..n])
    }

    /// Sends `bytes` and returns the final response to them (matched by Call-ID and CSeq as
    /// written), skipping provisional ones.
    async fn final_answer(&self, bytes: &[u8]) -> Answer {
        let key = identity(bytes);
        self.socket
            .send_to(bytes, self.target)
            .await
            .expect("UDP send");
        loop {
            let response = self.receive().await;
            if response.identity() == key && response.code >= 200 {
                return response;
            }
        }
    }

    /// Sends `bytes`, then an OPTIONS probe: the probe's 200 must come back first, so nothing
    /// was sent in answer to `bytes` (the user agent handles datagrams in order).
    async fn no_answer(&self, bytes: &[u8]) {
        self.socket
            .send_to(bytes, self.target)
            .await
            .expect("UDP send");
        self.probe_first().await;
    }

    /// Sends an OPTIONS probe whose 200 must be the next datagram that comes back.
    async fn probe_first(&self) {
        let probe = probe(self.socket.local_addr().expect("bound"));
        let key = identity(probe.as_bytes());
        self.socket
            .send_to(probe.as_bytes(), self.target)
            .await
            .expect("UDP send");
        let response = self.receive().await;
        assert_eq!(response.identity(), key, "the probe is answered first");
        assert_eq!(response.code, 200);
    }
}

/// An OPTIONS from `from` with a fresh Call-ID.
fn probe(from: SocketAddr) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKprobe{n}\r\n\
         To: <sip:probe@127.0.0.1>\r\nFrom: <sip:tester@127.0.0.1>;tag=p{n}\r\n\
         Call-ID: probe-{n}@127.0.0.1\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The Call-ID and CSeq values of a raw message, as written (`i:` counts as Call-ID).
fn identity(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(bytes);
    // Unfold continuation lines (wsinv folds its CSeq).
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    let value = |names: &[&str]| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (name, value) = line.split_once(':')?;
            names
                .iter()
                .any(|wanted| name.trim().eq_ignore_ascii_case(wanted))
                .then(|| value.split_whitespace().collect::<Vec<_>>().join(" "))
        })
    };
    (value(&["Call-ID", "i"]), value(&["CSeq"]))
}

/// A response as it came off the wire. An error answer echoes the broken header it is about
/// (RFC 4475 3.1.2), so answers are read line by line here, not with the parser under test.
#[derive(Debug)]
struct Answer {
    code: u16,
    head: String,
}

impl Answer {
    fn read(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_string();
        let code = head
            .strip_prefix("SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("expected a response, got {head:?}"));
        Self { code, head }
    }

    /// Every value of a header (our user agent writes full names).
    fn header_all(&self, name: &str) -> Vec<&str> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(found, _)| found.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    fn identity(&self) -> (Option<String>, Option<String>) {
        (
            self.header("Call-ID").map(str::to_string),
            self.header("CSeq").map(str::to_string),
        )
    }
}

fn allow_lists_our_methods(response: &Answer) {
    let allow = response.header("Allow").expect("Allow header");
    for method in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"] {
        assert!(allow.contains(method), "Allow {allow:?} lists {method}");
    }
}

fn request(bytes: &[u8]) -> sip_stack::message::Request {
    match parse(bytes) {
        Ok(SipMessage::Request(request)) => request,
        other => panic!("expected a valid request, got {other:?}"),
    }
}

fn response(bytes: &[u8]) -> Response {
    match parse(bytes) {
        Ok(SipMessage::Response(response)) => response,
        other => panic!("expected a valid response, got {other:?}"),
    }
}

fn unsupported(bytes: &[u8]) -> sip_stack::message::UnsupportedRequest {
    match parse_any(bytes, &ParseConfig::default()) {
        Ok(Parsed::Unsupported(request)) => request,
        other => panic!("expected a valid unsupported request, got {other:?}"),
    }
}

async fn expect_status(bytes: &[u8], code: u16) -> Answer {
    let harness = Harness::start().await;
    let response = harness.final_answer(bytes).await;
    assert_eq!(response.code, code, "answer: {}", response.head);
    response
}

/// An INVITE is offered to the application (which rejects it here with 486).
async fn expect_offered(bytes: &[u8]) -> IncomingInvite {
    let mut harness = Harness::start().await;
    let response = harness.final_answer(bytes).await;
    assert_eq!(response.code, 486, "the application's answer");
    harness.calls.try_recv().expect("the INVITE was offered")
}

// ----- 3.1.1 valid messages -----

/// 3.1.1.1: folding, LWS everywhere, compact and odd-case names. Its To carries a tag, so it
/// is a mid-dialog INVITE for a dialog this user agent does not have: 481.
#[tokio::test]
async fn wsinv_parses_and_gets_481_for_the_unknown_dialog() {
    let bytes = message!("wsinv");
    let request = request(bytes);
    assert_eq!(request.method, Method::Invite);
    assert_eq!(request.to_tag(), Some("1918181833n"));
    assert_eq!(request.from_tag(), Some("98asjd8"));
    assert_eq!(request.max_forwards(), Ok(Some(68)));
    assert_eq!(request.cseq().map(|cseq| cseq.seq), Ok(9));
    assert_eq!(request.via_count(), 3);
    let via = request.top_via().expect("top Via");
    assert_eq!(
        (via.transport.as_str(), via.host.as_str()),
        ("UDP", "192.0.2.2")
    );
    assert_eq!(via.branch.as_deref(), Some("390skdjuw"));
    assert_eq!(
        request.header("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        request.header("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    assert_eq!(request.header("Subject"), Some(""));
    assert_eq!(request.body.len(), 150);
    expect_status(bytes, 481).await;
}

/// 3.1.1.2: an extension method of every token character, quoted-pair NUL/BEL/DEL in To,
/// UTF-8 in a parameter and in an extension header. "Endpoints will generate a 501 listing
/// the methods they understand in an Allow header field."
#[tokio::test]
async fn intmeth_parses_and_gets_501_with_allow() {
    let bytes = message!("intmeth");
    let request = unsupported(bytes);
    assert_eq!(request.reason, Unsupported::Method);
    assert_eq!(
        request.method,
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert!(request
        .header("To")
        .expect("To")
        .contains("NUL:\\\u{0} DEL:\\\u{7f}"));
    assert_eq!(request.from_tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        request.header("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
    let response = expect_status(bytes, 501).await;
    allow_lists_our_methods(&response);
    assert_eq!(
        response.header("CSeq"),
        Some("139122385 !interesting-Method0123456789_*+`.%indeed'~")
    );
    assert!(
        response.header("To").is_some_and(|to| to.contains(";tag=")),
        "501 adds a To tag"
    );
}

/// The 501 is stateless (no transaction can hold an extension method), yet RFC 3261 8.2.6.2
/// wants one To tag for every copy of a request: a retransmission gets the same tag.
#[tokio::test]
async fn a_retransmitted_unknown_method_gets_the_same_to_tag() {
    let harness = Harness::start().await;
    let first = harness.final_answer(message!("esc02")).await;
    let again = harness.final_answer(message!("esc02")).await;
    assert_eq!(first.code, 501);
    assert_eq!(first.header("To"), again.header("To"));
    let other = harness.final_answer(message!("intmeth")).await;
    assert_ne!(
        first
            .header("To")
            .and_then(|to| to.split_once(";tag="))
            .map(|(_, tag)| tag),
        other
            .header("To")
            .and_then(|to| to.split_once(";tag="))
            .map(|(_, tag)| tag),
        "another request, another tag"
    );
}

/// 3.1.1.3: % escapes in the Request-URI user part, To, From and Contact.
#[tokio::test]
async fn esc01_parses_and_is_offered_to_the_application() {
    let bytes = message!("esc01");
    let request = request(bytes);
    assert_eq!(request.uri.user(), Some("sips%3Auser%40example.com"));
    assert_eq!(request.to_uri().expect("To URI").user(), Some("%75se%72"));
    assert_eq!(
        request
            .contact_uri()
            .expect("Contact")
            .expect("present")
            .user(),
        Some("cal%6Cer")
    );
    let invite = expect_offered(bytes).await;
    assert_eq!(
        invite.called_user.as_deref(),
        Some("sips%3Auser%40example.com")
    );
    assert_eq!(invite.call_id, "esc01.239409asdfakjkn23onasd0-3234");
    assert_eq!(invite.sdp.map(|sdp| sdp.len()), Some(150));
}

/// 3.1.1.4: escaped NULs in URIs; a REGISTER, and this user agent is no registrar.
#[tokio::test]
async fn escnull_parses_and_gets_405_with_allow() {
    let bytes = message!("escnull");
    let request = request(bytes);
    assert_eq!(request.method, Method::Register);
    assert_eq!(
        request.to_uri().expect("To URI").user(),
        Some("null-%00-null")
    );
    assert_eq!(request.header_all("Contact").len(), 2);
    let response = expect_status(bytes, 405).await;
    allow_lists_our_methods(&response);
}

/// 3.1.1.5: `RE%47IST%45R` is an unknown method, not REGISTER; `C%6Fntact` is not Contact.
/// "An endpoint would reject this message with a 501."
#[tokio::test]
async fn esc02_parses_as_an_unknown_method_and_gets_501() {
    let bytes = message!("esc02");
    let request = unsupported(bytes);
    assert_eq!(request.method, "RE%47IST%45R");
    assert_eq!(request.header_all("Contact").len(), 2);
    assert_eq!(
        request.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    let response = expect_status(bytes, 501).await;
    allow_lists_our_methods(&response);
}

/// 3.1.1.6: no LWS between the display name and `<`.
#[tokio::test]
async fn lwsdisp_parses_and_gets_200() {
    let bytes = message!("lwsdisp");
    let request = request(bytes);
    assert_eq!(request.from_uri().expect("From URI").user(), Some("caller"));
    expect_status(bytes, 200).await;
}

/// 3.1.1.7: long values and 34 Via entries under every spelling of the name.
#[tokio::test]
async fn longreq_parses_and_is_offered_to_the_application() {
    let bytes = message!("longreq");
    let request = request(bytes);
    assert_eq!(request.via_count(), 34);
    assert_eq!(
        request.top_via().expect("top Via").host,
        "sip33.example.com"
    );
    assert_eq!(request.from_tag().map(str::len), Some(155));
    let invite = expect_offered(bytes).await;
    assert!(invite.call_id.starts_with("longreq.onereally"));
}

/// 3.1.1.8: a REGISTER followed in the same datagram by bytes that look like an INVITE,
/// which must be ignored: 405 to the REGISTER, no call offered.
#[tokio::test]
async fn dblreq_answers_the_register_and_ignores_the_trailing_invite() {
    let bytes = message!("dblreq");
    let request = request(bytes);
    assert_eq!(request.method, Method::Register);
    assert!(request.body.is_empty());
    let mut harness = Harness::start().await;
    assert_eq!(harness.final_answer(bytes).await.code, 405);
    harness.probe_first().await;
    assert!(harness.calls.try_recv().is_err(), "no INVITE was seen");
}

/// 3.1.1.9: "The Request-URI will parse so that the user part is `user;par=u@example.net`".
#[tokio::test]
async fn semiuri_parses_the_user_part_and_gets_200() {
    let bytes = message!("semiuri");
    let request = request(bytes);
    assert_eq!(request.uri.user(), Some("user;par=u%40example.net"));
    assert_eq!(request.uri.host().to_string(), "example.com");
    expect_status(bytes, 200).await;
}

/// 3.1.1.10: Vias with UDP, SCTP, TLS, UNKNOWN and TCP; the 200 carries all five back.
#[tokio::test]
async fn transports_parses_and_gets_200_with_every_via() {
    let bytes = message!("transports");
    let request = request(bytes);
    assert_eq!(request.via_count(), 5);
    let response = expect_status(bytes, 200).await;
    let vias = response.header_all("Via");
    assert_eq!(vias.len(), 5);
    assert!(vias[3].starts_with("SIP/2.0/UNKNOWN t4.example.com"));
}

/// 3.1.1.11: a MESSAGE with a multipart body whose binary part holds NULs; framed by
/// Content-Length. MESSAGE is not a method this user agent accepts: 405 with Allow.
#[tokio::test]
async fn mpart01_frames_the_binary_body_and_gets_405() {
    let bytes = message!("mpart01");
    let request = request(bytes);
    assert_eq!(request.method, Method::Message);
    assert_eq!(request.body.len(), 553);
    assert!(request.body.contains(&0));
    assert!(request.body.ends_with(b"--7a9cbec02ceef655--\r\n"));
    let response = expect_status(bytes, 405).await;
    allow_lists_our_methods(&response);
}

/// 3.1.1.12: a 200 with a UTF-8 reason phrase: parses; a stray response gets no answer.
#[tokio::test]
async fn unreason_parses_and_gets_no_answer() {
    let bytes = message!("unreason");
    assert_eq!(response(bytes).status_code.code(), 200);
    Harness::start().await.no_answer(bytes).await;
}

/// 3.1.1.13: `SIP/2.0 100 ` with an empty reason phrase.
#[tokio::test]
async fn noreason_parses_and_gets_no_answer() {
    let bytes = message!("noreason");
    assert_eq!(response(bytes).status_code.code(), 100);
    Harness::start().await.no_answer(bytes).await;
}

// ----- 3.1.2 invalid messages -----

async fn expect_400(bytes: &[u8]) {
    assert!(parse(bytes).is_err(), "the parser rejects it");
    expect_status(bytes, 400).await;
}

/// 3.1.2.1: extra `;` and `,` in Via and Contact.
#[tokio::test]
async fn badinv01_gets_400() {
    expect_400(message!("badinv01")).await;
}

/// 3.1.2.2: Content-Length larger than the datagram.
#[tokio::test]
async fn clerr_gets_400() {
    expect_400(message!("clerr")).await;
}

/// 3.1.2.3: negative Content-Length.
#[tokio::test]
async fn ncl_gets_400() {
    expect_400(message!("ncl")).await;
}

/// 3.1.2.4: CSeq beyond 2**32-1 (and other overlarge scalars).
#[tokio::test]
async fn scalar02_gets_400() {
    expect_400(message!("scalar02")).await;
}

/// 3.1.2.5: a response with overlarge scalars is discarded.
#[tokio::test]
async fn scalarlg_is_discarded() {
    let bytes = message!("scalarlg");
    assert!(parse(bytes).is_err());
    Harness::start().await.no_answer(bytes).await;
}

/// 3.1.2.6: unterminated quoted string in To.
#[tokio::test]
async fn quotbal_gets_400() {
    expect_400(message!("quotbal")).await;
}

/// 3.1.2.7: `<>` around the Request-URI.
#[tokio::test]
async fn ltgtruri_gets_400() {
    expect_400(message!("ltgtruri")).await;
}

/// 3.1.2.8: LWS inside the Request-URI.
#[tokio::test]
async fn lwsruri_gets_400() {
    expect_400(message!("lwsruri")).await;
}

/// 3.1.2.9: several SP between request-line elements.
#[tokio::test]
async fn lwsstart_gets_400() {
    expect_400(message!("lwsstart")).await;
}

/// 3.1.2.10: SP after SIP/2.0 on the request line.
#[tokio::test]
async fn trws_gets_400() {
    expect_400(message!("trws")).await;
}

/// 3.1.2.11: escaped headers in a SIP Request-URI.
#[tokio::test]
async fn escruri_gets_400() {
    expect_400(message!("escruri")).await;
}

/// 3.1.2.12: a non-GMT Date. "An element shouldn't [reject it] unless the contents of the Date
/// header field were actually important to its processing": we do not use Date, so the INVITE
/// is offered like any other.
#[tokio::test]
async fn baddate_is_accepted_because_date_is_not_used() {
    let bytes = message!("baddate");
    request(bytes);
    expect_offered(bytes).await;
}

/// 3.1.2.13: an escaped header in a Contact URI outside `<>`.
#[tokio::test]
async fn regbadct_gets_400() {
    expect_400(message!("regbadct")).await;
}

/// 3.1.2.14: spaces within the addr-spec of To.
#[tokio::test]
async fn badaspec_gets_400() {
    expect_400(message!("badaspec")).await;
}

/// 3.1.2.15: unquoted display names with non-token characters.
#[tokio::test]
async fn baddn_gets_400() {
    expect_400(message!("baddn")).await;
}

/// 3.1.2.16: SIP/7.0. "The element should respond to the request with a 505."
#[tokio::test]
async fn badvers_gets_505() {
    let bytes = message!("badvers");
    assert!(parse(bytes).is_err());
    expect_status(bytes, 505).await;
}

/// 3.1.2.17: request line OPTIONS, CSeq INVITE.
#[tokio::test]
async fn mismatch01_gets_400() {
    expect_400(message!("mismatch01")).await;
}

/// 3.1.2.18: an unknown method with a CSeq naming another. The RFC prefers 501 and allows
/// 400; the CSeq mismatch makes it invalid before its method is looked at, so 400.
#[tokio::test]
async fn mismatch02_gets_400() {
    expect_400(message!("mismatch02")).await;
}

/// 3.1.2.19: a response code above 699 is dropped.
#[tokio::test]
async fn bigcode_is_dropped() {
    let bytes = message!("bigcode");
    assert!(parse(bytes).is_err());
    Harness::start().await.no_answer(bytes).await;
}

// ----- 3.2 transaction layer, 3.3 application layer -----

/// 3.2.1: a branch that is only the magic cookie. The element "could fall back"; it is a
/// usable transaction identifier here, and the OPTIONS is answered.
#[tokio::test]
async fn badbranch_is_answered() {
    let bytes = message!("badbranch");
    request(bytes);
    expect_status(bytes, 200).await;
}

/// 3.3.1: no Call-ID, From or To. "Ideally, it will respond with a 400".
#[tokio::test]
async fn insuf_gets_400() {
    expect_400(message!("insuf")).await;
}

/// 3.3.2: an unknown Request-URI scheme: 416.
#[tokio::test]
async fn unkscm_gets_416() {
    let bytes = message!("unkscm");
    assert_eq!(unsupported(bytes).reason, Unsupported::UriScheme);
    expect_status(bytes, 416).await;
}

/// An ACK is never answered, not even with 416 for unkscm's unknown scheme.
#[tokio::test]
async fn an_ack_with_an_unknown_scheme_gets_no_answer() {
    let text = String::from_utf8_lossy(message!("unkscm"))
        .replace("OPTIONS nobody", "ACK nobody")
        .replace("3923423 OPTIONS", "3923423 ACK");
    assert_eq!(unsupported(text.as_bytes()).method, "ACK");
    Harness::start().await.no_answer(text.as_bytes()).await;
}

/// 3.3.3: a known but atypical scheme (`soap.beep`) that a SIP UA does not serve: 416.
#[tokio::test]
async fn novelsc_gets_416() {
    let bytes = message!("novelsc");
    assert_eq!(unsupported(bytes).reason, Unsupported::UriScheme);
    expect_status(bytes, 416).await;
}

/// 3.3.5: Require with option tags we do not support: 420 listing them in Unsupported (a
/// UAS ignores Proxy-Require).
#[tokio::test]
async fn bext01_gets_420_with_unsupported() {
    let bytes = message!("bext01");
    request(bytes);
    let response = expect_status(bytes, 420).await;
    assert_eq!(
        response.header("Unsupported"),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
}

/// 3.3.8: several values in single-value headers (To, From, Call-ID, CSeq): 400.
#[tokio::test]
async fn multi01_gets_400() {
    expect_400(message!("multi01")).await;
}

/// 3.3.9: two Content-Length values: 400.
#[tokio::test]
async fn mcl01_gets_400() {
    expect_400(message!("mcl01")).await;
}

/// 3.3.11: Max-Forwards 0 matters only to an element that forwards; the UAS answers.
#[tokio::test]
async fn zeromf_gets_200() {
    let bytes = message!("zeromf");
    assert_eq!(request(bytes).max_forwards(), Ok(Some(0)));
    expect_status(bytes, 200).await;
}

// ----- over TCP -----

/// An extension method over TCP (intmeth's Via says TCP) gets 501 on the same connection,
/// which stays open: the OPTIONS sent after it on that connection gets its 200.
#[tokio::test]
async fn unknown_methods_over_tcp_get_501_and_the_connection_stays_open() {
    let harness = Harness::start().await;
    let mut stream = TcpStream::connect(harness.tcp_target)
        .await
        .expect("connect");
    let local = stream.local_addr().expect("bound");
    let mut framer = StreamFramer::default();
    let options = probe(local).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    for (bytes, code) in [
        (message!("intmeth"), 501),
        (message!("esc02"), 501),
        (options.as_bytes(), 200),
    ] {
        stream.write_all(bytes).await.expect("TCP write");
        let response = next_on_stream(&mut stream, &mut framer).await;
        assert_eq!(response.code, code, "answer: {}", response.head);
        assert_eq!(response.identity(), identity(bytes));
    }
}

async fn next_on_stream(stream: &mut TcpStream, framer: &mut StreamFramer) -> Answer {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(FramerOutput::Message(bytes)) = framer.next_output().expect("framed") {
            return Answer::read(&bytes);
        }
        let n = tokio::time::timeout(STEP, stream.read(&mut buf))
            .await
            .expect("the user agent answers")
            .expect("TCP read");
        assert!(n > 0, "the user agent closed the connection");
        framer.push(&buf[..n]);
    }
}

// ----- 3.4 backward compatibility -----

/// 3.4.1: an RFC 2543 INVITE (no branch, no Max-Forwards, no From tag, no Contact). The RFC
/// asks elements "that want to maintain backwards compatibility" to accept it. The parser and
/// the transaction layer do (RFC 2543 transaction matching); the dialog layer needs a From tag
/// and a Contact, so this user agent refuses the call with 400 rather than offer a call it
/// could not address in-dialog requests for.
#[tokio::test]
async fn inv2543_parses_and_the_tagless_dialog_is_refused() {
    let bytes = message!("inv2543");
    let request = request(bytes);
    assert_eq!(request.top_via().expect("top Via").branch, None);
    assert_eq!(request.from_tag(), None);
    let mut harness = Harness::start().await;
    assert_eq!(harness.final_answer(bytes).await.code, 400);
    assert!(harness.calls.try_recv().is_err(), "no call offered");
}
