-- dialcore schema, version 7 (issue 12): API keys can be revoked, and keep a shorter
-- display prefix.
-- A revoked key keeps its row (so that it is answered 401 `revoked`, not `unknown`, and
-- listed with the time it was revoked).
ALTER TABLE api_keys ADD COLUMN revoked_at TEXT;
-- The display prefix used to be the key's first 12 characters: nearly all of a short key
-- given in DIALCORE_API_KEY. Rows from before keep only their first 8 (the `sk_live_` tag
-- of generated keys); new rows keep the tag and at most 8 characters of the rest, never
-- more than a quarter of it.
UPDATE api_keys SET key_prefix = substr(key_prefix, 1, 8);
-- Trunk passwords, webhook secrets and agent header values are encrypted at rest from this
-- version on. SQL cannot encrypt: the service seals the plaintext values left by older
-- versions when it starts (store/sealed.rs), before it serves a request.
