-- dialcore schema, version 1.
-- PostgreSQL: the SQLite schema (../sqlite) with BIGINT for every integer, as the store
-- binds them 64-bit. TEXT ids, RFC 3339 UTC timestamps as TEXT (fixed width: they sort as
-- time in the C collation), JSON documents as TEXT, BIGINT money in cents.

CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    balance_cents BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    name TEXT NOT NULL,
    prompt TEXT NOT NULL,
    greeting TEXT,
    status TEXT NOT NULL,
    runtime TEXT NOT NULL,
    default_call_settings TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX agents_by_org ON agents (org_id, created_at);

CREATE TABLE trunks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    transport TEXT NOT NULL,
    username TEXT,
    password TEXT,
    allowed_networks TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX trunks_by_org ON trunks (org_id, created_at);

CREATE TABLE phone_numbers (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    number TEXT NOT NULL UNIQUE,
    trunk_id TEXT NOT NULL REFERENCES trunks (id),
    agent_id TEXT REFERENCES agents (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX phone_numbers_by_org ON phone_numbers (org_id, created_at);
CREATE INDEX phone_numbers_by_agent ON phone_numbers (agent_id);
CREATE INDEX phone_numbers_by_trunk ON phone_numbers (trunk_id);

CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    direction TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    from_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    variables TEXT NOT NULL,
    call_settings TEXT NOT NULL,
    max_duration_secs BIGINT NOT NULL,
    join_timeout_secs BIGINT NOT NULL,
    sip_call_id TEXT,
    sip_final_code BIGINT,
    q850_cause BIGINT,
    end_reason TEXT,
    duration_seconds DOUBLE PRECISION,
    transcript TEXT NOT NULL,
    recording_url TEXT,
    media_stats TEXT,
    rendered_prompt TEXT,
    rendered_greeting TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    answered_at TEXT,
    ended_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX calls_by_org ON calls (org_id, created_at);
CREATE INDEX calls_by_status ON calls (status);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX webhooks_by_org ON webhooks (org_id, created_at);

CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at);

CREATE TABLE idempotency_keys (
    org_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, idempotency_key)
);
