//! Guards digest authentication: the client reproduces the RFC 2617 section 3.5 and
//! RFC 7616 section 3.9.1 worked examples, and the server accepts right answers and
//! rejects stale nonces, replays, foreign nonces, wrong realms, users and passwords.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sip_stack::auth::{
    Algorithm, AuthError, Authorization, Challenge, Credentials, DigestServer, DigestServerConfig,
};

const RFC7616_CHALLENGE: &str = r#"Digest
    realm="http-auth@example.org",
    qop="auth, auth-int",
    algorithm=SHA-256,
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

fn mufasa(password: &str) -> Credentials {
    Credentials {
        username: "Mufasa".into(),
        password: password.into(),
    }
}

#[test]
fn rfc_2617_section_3_5_example() {
    let challenge: Challenge = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#
        .parse()
        .expect("RFC challenge parses");
    assert_eq!(challenge.algorithm, Algorithm::Md5);
    let answer = mufasa("Circle Of Life")
        .authorize(&challenge, "GET", "/dir/index.html", "0a4f113b", 1)
        .expect("auth offered");
    assert_eq!(answer.response, "6629fae49393a05397450978507c4ef1");
    let header = answer.to_string();
    assert!(header.contains("nc=00000001"));
    assert!(header.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
    // The RFC's own Authorization header parses to the same answer.
    let rfc: Authorization = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#
        .parse()
        .expect("RFC answer parses");
    assert_eq!(rfc, answer);
}

#[test]
fn rfc_7616_section_3_9_1_sha_256() {
    let challenge: Challenge = RFC7616_CHALLENGE.parse().expect("RFC challenge parses");
    let answer = mufasa("Circle of Life")
        .authorize(&challenge, "GET", "/dir/index.html", RFC7616_CNONCE, 1)
        .expect("auth offered");
    assert_eq!(
        answer.response,
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
    assert!(answer.to_string().contains("algorithm=SHA-256"));
}

#[test]
fn rfc_7616_section_3_9_1_md5() {
    let mut challenge: Challenge = RFC7616_CHALLENGE.parse().expect("RFC challenge parses");
    challenge.algorithm = Algorithm::Md5;
    let answer = mufasa("Circle of Life")
        .authorize(&challenge, "GET", "/dir/index.html", RFC7616_CNONCE, 1)
        .expect("auth offered");
    assert_eq!(answer.response, "8ca523f5e9506fed4657c9700eebdbec");
}

#[test]
fn no_qop_challenge_gets_rfc_2069_answer() {
    let challenge: Challenge = r#"Digest realm="trunk", nonce="abc""#.parse().expect("valid");
    let answer = mufasa("pw")
        .authorize(&challenge, "INVITE", "sip:+15550100@trunk", "unused", 1)
        .expect("no qop is fine");
    assert_eq!(answer.qop_auth, None);
    let header = answer.to_string();
    assert!(!header.contains("qop") && !header.contains("cnonce") && !header.contains("nc="));
    // response = H(HA1:nonce:HA2)
    let ha1 = Algorithm::Md5.hash(&["Mufasa", "trunk", "pw"]);
    let ha2 = Algorithm::Md5.hash(&["INVITE", "sip:+15550100@trunk"]);
    assert_eq!(answer.response, Algorithm::Md5.hash(&[&ha1, "abc", &ha2]));
}

fn t(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn users(name: &str) -> Option<String> {
    (name == "alice").then(|| "wonderland".to_owned())
}

const URI: &str = "sip:agent@dialcore.example";

fn server(algorithm: Algorithm) -> DigestServer {
    let mut config = DigestServerConfig::new("dialcore.example", b"node secret".to_vec());
    config.algorithm = algorithm;
    config.nonce_lifetime = Duration::from_secs(60);
    DigestServer::new(config)
}

fn alice_answers(challenge: &Challenge, nc: u32) -> String {
    Credentials {
        username: "alice".into(),
        password: "wonderland".into(),
    }
    .authorize(challenge, "INVITE", URI, "c0ffee", nc)
    .expect("challenge offers auth")
    .to_string()
}

#[test]
fn server_accepts_a_correct_answer_with_both_algorithms() {
    for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
        let mut server = server(algorithm);
        let challenge = server.challenge(t(0), false);
        let text = challenge.to_string();
        assert!(text.contains(r#"qop="auth""#));
        assert!(text.contains(&format!("algorithm={algorithm}")));
        let header = alice_answers(&challenge.to_string().parse().expect("parses"), 1);
        let who = server
            .verify(&header, "INVITE", URI, t(5), users)
            .expect("right password");
        assert_eq!(who.username, "alice");
        // The next request on the same nonce with a higher count is fine too.
        let header = alice_answers(&challenge, 2);
        assert!(server.verify(&header, "INVITE", URI, t(6), users).is_ok());
    }
}

#[test]
fn server_rejects_replayed_nonce_count() {
    let mut server = server(Algorithm::Md5);
    let challenge = server.challenge(t(0), false);
    let header = alice_answers(&challenge, 1);
    assert!(server.verify(&header, "INVITE", URI, t(1), users).is_ok());
    assert_eq!(
        server.verify(&header, "INVITE", URI, t(2), users),
        Err(AuthError::ReplayedNonceCount { nc: 1, last: 1 })
    );
    assert_eq!(server.tracked_nonces(), 1);
}

#[test]
fn server_reports_stale_nonce_only_for_right_answers() {
    let mut server = server(Algorithm::Md5);
    let challenge = server.challenge(t(0), false);
    let header = alice_answers(&challenge, 1);
    assert_eq!(
        server.verify(&header, "INVITE", URI, t(61), users),
        Err(AuthError::StaleNonce)
    );
    let wrong = Credentials {
        username: "alice".into(),
        password: "guess".into(),
    }
    .authorize(&challenge, "INVITE", URI, "c", 1)
    .expect("auth offered")
    .to_string();
    assert_eq!(
        server.verify(&wrong, "INVITE", URI, t(61), users),
        Err(AuthError::WrongResponse {
            username: "alice".into()
        })
    );
    let renewed = server.challenge(t(61), true);
    assert!(renewed.stale);
    assert!(renewed.to_string().contains("stale=true"));
    let header = alice_answers(&renewed, 1);
    assert!(server.verify(&header, "INVITE", URI, t(62), users).is_ok());
}

#[test]
fn server_rejects_wrong_answers() {
    let mut server = server(Algorithm::Md5);
    let challenge = server.challenge(t(0), false);
    let header = alice_answers(&challenge, 1);
    // Another method than the one answered for.
    assert_eq!(
        server.verify(&header, "BYE", URI, t(1), users),
        Err(AuthError::WrongResponse {
            username: "alice".into()
        })
    );
    // Another request-URI.
    assert!(matches!(
        server.verify(&header, "INVITE", "sip:other@x", t(1), users),
        Err(AuthError::UriMismatch { .. })
    ));
    // Unknown user.
    let mallory = Credentials {
        username: "mallory".into(),
        password: "x".into(),
    }
    .authorize(&challenge, "INVITE", URI, "c", 1)
    .expect("auth offered")
    .to_string();
    assert_eq!(
        server.verify(&mallory, "INVITE", URI, t(1), users),
        Err(AuthError::UnknownUser("mallory".into()))
    );
    // Another realm.
    let mut foreign = challenge.clone();
    foreign.realm = "elsewhere".into();
    assert_eq!(
        server.verify(&alice_answers(&foreign, 1), "INVITE", URI, t(1), users),
        Err(AuthError::WrongRealm {
            expected: "dialcore.example".into(),
            got: "elsewhere".into()
        })
    );
    // A nonce we never issued.
    let mut made_up = challenge.clone();
    made_up.nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093".into();
    assert_eq!(
        server.verify(&alice_answers(&made_up, 1), "INVITE", URI, t(1), users),
        Err(AuthError::InvalidNonce)
    );
    // A downgrade to another algorithm.
    let mut sha = challenge.clone();
    sha.algorithm = Algorithm::Sha256;
    assert_eq!(
        server.verify(&alice_answers(&sha, 1), "INVITE", URI, t(1), users),
        Err(AuthError::AlgorithmMismatch(Algorithm::Sha256))
    );
    // qop is required when challenged with it.
    let mut no_qop = challenge.clone();
    no_qop.qop.clear();
    assert_eq!(
        server.verify(&alice_answers(&no_qop, 1), "INVITE", URI, t(1), users),
        Err(AuthError::MissingParameter("qop"))
    );
    // Garbage.
    assert!(matches!(
        server.verify("Digest ,,,", "INVITE", URI, t(1), users),
        Err(AuthError::Malformed { .. })
    ));
    // After all that, the real answer still works.
    assert!(server.verify(&header, "INVITE", URI, t(1), users).is_ok());
}

#[test]
fn server_without_qop_accepts_rfc_2069_answers() {
    let mut config = DigestServerConfig::new("dialcore.example", b"s".to_vec());
    config.qop_auth = false;
    let mut server = DigestServer::new(config);
    let challenge = server.challenge(t(0), false);
    assert!(challenge.qop.is_empty());
    let header = alice_answers(&challenge, 1);
    assert!(!header.contains("qop"));
    assert!(server.verify(&header, "INVITE", URI, t(1), users).is_ok());
    assert_eq!(server.tracked_nonces(), 0);
}

#[test]
fn tracked_nonces_are_pruned_when_expired() {
    let mut config = DigestServerConfig::new("dialcore.example", b"s".to_vec());
    config.nonce_lifetime = Duration::from_secs(60);
    config.max_tracked_nonces = 4;
    let mut server = DigestServer::new(config);
    for i in 0..4 {
        let challenge = server.challenge(t(i), false);
        let header = alice_answers(&challenge, 1);
        assert!(server.verify(&header, "INVITE", URI, t(i), users).is_ok());
    }
    assert_eq!(server.tracked_nonces(), 4);
    let challenge = server.challenge(t(200), false);
    let header = alice_answers(&challenge, 1);
    assert!(server.verify(&header, "INVITE", URI, t(200), users).is_ok());
    assert_eq!(server.tracked_nonces(), 1);
}

#[test]
fn a_full_table_of_live_nonces_forgets_the_oldest_and_makes_it_stale() {
    let mut config = DigestServerConfig::new("dialcore.example", b"s".to_vec());
    config.nonce_lifetime = Duration::from_secs(60);
    config.max_tracked_nonces = 2;
    let mut server = DigestServer::new(config);
    let challenges: Vec<Challenge> = (0..3).map(|i| server.challenge(t(i), false)).collect();
    for (i, challenge) in challenges.iter().enumerate() {
        let header = alice_answers(challenge, 1);
        assert!(server
            .verify(&header, "INVITE", URI, t(i as u64 + 1), users)
            .is_ok());
        assert!(server.tracked_nonces() <= 2, "bounded");
    }
    // The oldest nonce's count was forgotten: a replay of it is not accepted, its user is
    // told to take a fresh nonce instead.
    let replay = alice_answers(&challenges[0], 1);
    assert_eq!(
        server.verify(&replay, "INVITE", URI, t(4), users),
        Err(AuthError::StaleNonce)
    );
    // Tracked ones still catch replays, and a nonce issued after keeps working.
    let replay = alice_answers(&challenges[2], 1);
    assert!(matches!(
        server.verify(&replay, "INVITE", URI, t(4), users),
        Err(AuthError::ReplayedNonceCount { .. })
    ));
    let fresh = server.challenge(t(5), false);
    assert!(server
        .verify(&alice_answers(&fresh, 1), "INVITE", URI, t(5), users)
        .is_ok());
    assert_eq!(server.tracked_nonces(), 2);
}

#[test]
fn a_server_with_alternatives_offers_each_algorithm_and_accepts_answers_to_any() {
    let mut config = DigestServerConfig::new("dialcore.example", b"s".to_vec());
    config.algorithm = Algorithm::Sha256;
    config.alternatives = vec![Algorithm::Md5, Algorithm::Sha256];
    let mut server = DigestServer::new(config);
    let offered = server.challenges(t(0), false);
    let algorithms: Vec<Algorithm> = offered.iter().map(|c| c.algorithm).collect();
    assert_eq!(
        algorithms,
        [Algorithm::Sha256, Algorithm::Md5],
        "once each, preferred first"
    );
    assert_eq!(offered[0].nonce, offered[1].nonce);
    for (i, challenge) in offered.iter().enumerate() {
        let fresh = Challenge {
            nonce: server.challenge(t(i as u64), false).nonce,
            ..challenge.clone()
        };
        assert!(server
            .verify(&alice_answers(&fresh, 1), "INVITE", URI, t(i as u64), users)
            .is_ok());
    }
}
