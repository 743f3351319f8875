//! Guards the digest header parsers against hostile input: arbitrary text never panics,
//! and printed challenges and answers parse back to the same values.

use proptest::prelude::*;
use sip_stack::auth::{Algorithm, Authorization, Challenge, QopAuth};

fn text() -> impl Strategy<Value = String> {
    "[ -~é\\\\\"]{0,24}"
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Md5), Just(Algorithm::Sha256)]
}

proptest! {
    #[test]
    fn arbitrary_values_never_panic(value in any::<String>()) {
        let _ = value.parse::<Challenge>();
        let _ = value.parse::<Authorization>();
        let digest = format!("Digest {value}");
        let _ = digest.parse::<Challenge>();
        let _ = digest.parse::<Authorization>();
    }

    #[test]
    fn challenge_round_trips(
        realm in text(),
        nonce in text(),
        opaque in proptest::option::of(text()),
        algorithm in algorithm(),
        qop in proptest::collection::vec("[a-z-]{1,8}", 0..3),
        stale in any::<bool>(),
    ) {
        let challenge = Challenge { realm, nonce, opaque, algorithm, qop, stale };
        prop_assert_eq!(challenge.to_string().parse::<Challenge>(), Ok(challenge));
    }

    #[test]
    fn authorization_round_trips(
        (username, realm, nonce, uri) in (text(), text(), text(), text()),
        response in "[0-9a-f]{32}",
        algorithm in algorithm(),
        opaque in proptest::option::of(text()),
        qop_auth in proptest::option::of((text(), any::<u32>())),
    ) {
        let authorization = Authorization {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            opaque,
            qop_auth: qop_auth.map(|(cnonce, nc)| QopAuth { cnonce, nc }),
        };
        prop_assert_eq!(authorization.to_string().parse::<Authorization>(), Ok(authorization));
    }
}
