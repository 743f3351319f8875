-- dialcore schema, version 6 (issue 12): credit is reserved when a call starts and settled
-- when it ends, so that concurrent calls cannot overdraw an organisation; live calls write a
-- heartbeat so that restart recovery knows when a call was last alive.
--
-- orgs.reserved_cents and orgs.live_calls are what the calls of the organisation hold right
-- now: one conditional UPDATE of the organisation's row admits a call (the balance minus the
-- reservations covers it and the live calls are under the cap), which is atomic on SQLite
-- and on PostgreSQL alike (the row lock serialises concurrent admissions).
ALTER TABLE orgs ADD COLUMN reserved_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orgs ADD COLUMN live_calls BIGINT NOT NULL DEFAULT 0;

-- What the call holds (NULL: it was admitted without a reservation, before this version),
-- what it was charged and when that was settled (NULL while it runs), and the last
-- heartbeat of the node running it.
ALTER TABLE calls ADD COLUMN reserved_cents BIGINT;
ALTER TABLE calls ADD COLUMN charged_cents BIGINT;
ALTER TABLE calls ADD COLUMN settled_at TEXT;
ALTER TABLE calls ADD COLUMN last_seen_at TEXT;
