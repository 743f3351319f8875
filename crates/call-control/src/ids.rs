//! Identifiers: a type prefix, an underscore and 24 random base62 characters
//! (`agt_7fK2...`), so that an id says what it names and cannot be guessed.

use rand::Rng;

/// Prefix of agent ids.
pub const AGENT: &str = "agt";
/// Prefix of phone number ids.
pub const PHONE_NUMBER: &str = "num";
/// Prefix of trunk ids.
pub const TRUNK: &str = "trk";
/// Prefix of call ids.
pub const CALL: &str = "call";
/// Prefix of webhook ids.
pub const WEBHOOK: &str = "whk";
/// Prefix of organisation ids.
pub const ORG: &str = "org";
/// Prefix of API key ids (the id of the key record, not the secret key).
pub const API_KEY: &str = "key";
/// Prefix of request ids (`meta.request_id` of every response).
pub const REQUEST: &str = "req";
/// Prefix of webhook event ids.
pub const EVENT: &str = "evt";
/// Prefix of webhook delivery (outbox entry) ids.
pub const DELIVERY: &str = "dlv";
/// Prefix of test-call run ids.
pub const TEST_CALL_RUN: &str = "tcr";
/// Prefix of test-call batch ids.
pub const TEST_CALL_BATCH: &str = "tcb";

/// Number of random characters after the prefix.
pub const RANDOM_LEN: usize = 24;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new id: `prefix` + `_` + 24 random base62 characters.
///
/// ```
/// let id = call_control::ids::new_id(call_control::ids::CALL);
/// assert!(id.starts_with("call_"));
/// assert_eq!(id.len(), "call_".len() + 24);
/// ```
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 1 + RANDOM_LEN);
    id.push_str(prefix);
    id.push('_');
    push_random_base62(&mut id, RANDOM_LEN);
    id
}

/// A new secret API key: `sk_live_` + 32 random base62 characters (about 190 bits).
pub fn new_api_key() -> String {
    let mut key = String::with_capacity(8 + 32);
    key.push_str("sk_live_");
    push_random_base62(&mut key, 32);
    key
}

/// A new webhook signing secret: `whsec_` + 32 random base62 characters.
pub fn new_webhook_secret() -> String {
    let mut secret = String::with_capacity(6 + 32);
    secret.push_str("whsec_");
    push_random_base62(&mut secret, 32);
    secret
}

/// Whether `id` has the shape of an id with `prefix` (it may still name nothing).
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn push_random_base62(out: &mut String, len: usize) {
    let mut rng = rand::thread_rng();
    for _ in 0..len {
        let index = rng.gen_range(0..BASE62.len());
        out.push(char::from(BASE62[index]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_have_prefix_and_length() {
        for prefix in [
            AGENT,
            PHONE_NUMBER,
            TRUNK,
            CALL,
            WEBHOOK,
            ORG,
            API_KEY,
            REQUEST,
            TEST_CALL_RUN,
            TEST_CALL_BATCH,
        ] {
            let id = new_id(prefix);
            assert!(id.starts_with(&format!("{prefix}_")), "{id}");
            assert_eq!(id.len(), prefix.len() + 1 + RANDOM_LEN);
            assert!(has_prefix(&id, prefix));
        }
    }

    #[test]
    fn ids_are_distinct() {
        let ids: HashSet<String> = (0..1000).map(|_| new_id(CALL)).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn has_prefix_rejects_other_shapes() {
        assert!(!has_prefix("agt_", AGENT));
        assert!(!has_prefix("agtx_abc", AGENT));
        assert!(!has_prefix("call_abc", AGENT));
        assert!(!has_prefix("agt_ab-c", AGENT));
        assert!(has_prefix("agt_abc", AGENT));
    }

    #[test]
    fn api_keys_look_like_live_keys() {
        let key = new_api_key();
        assert!(key.starts_with("sk_live_"));
        assert_eq!(key.len(), 40);
        assert_ne!(key, new_api_key());
    }
}
