-- dialcore schema, version 3: an idempotency key remembers which request it answered
-- (issue 11), so that the same key sent with another method, path or body is refused
-- instead of replaying an answer to a different request. Rows stored before this version
-- have no fingerprint and are replayed as before.
ALTER TABLE idempotency_keys ADD COLUMN request_fingerprint TEXT;
