-- dialcore schema, version 2: test-call runs and batches (issue 5).
-- Same conventions as version 1: TEXT ids, RFC 3339 UTC timestamps as TEXT, JSON as TEXT.

CREATE TABLE test_call_batches (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    mode TEXT NOT NULL,
    target_number TEXT NOT NULL,
    scenario_prompt TEXT,
    scenario_prompts TEXT NOT NULL,
    network_profile TEXT NOT NULL,
    thresholds TEXT,
    charge_multiplier DOUBLE PRECISION NOT NULL,
    estimated_cost_cents BIGINT NOT NULL,
    run_count BIGINT NOT NULL,
    stagger_seconds BIGINT NOT NULL,
    status TEXT NOT NULL,
    total_runs BIGINT NOT NULL,
    completed_runs BIGINT NOT NULL,
    failed_runs BIGINT NOT NULL,
    run_ids TEXT NOT NULL,
    aggregate TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX test_call_batches_by_org ON test_call_batches (org_id, created_at);
CREATE INDEX test_call_batches_by_status ON test_call_batches (status);

CREATE TABLE test_call_runs (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    target_number TEXT NOT NULL,
    scenario_prompt TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    network_profile TEXT NOT NULL,
    thresholds TEXT,
    charge_multiplier DOUBLE PRECISION NOT NULL,
    estimated_cost_cents BIGINT NOT NULL,
    call_id TEXT,
    sip_call_id TEXT,
    measurements TEXT,
    error_message TEXT,
    batch_id TEXT REFERENCES test_call_batches (id) ON DELETE CASCADE,
    started_at TEXT,
    completed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX test_call_runs_by_org ON test_call_runs (org_id, created_at);
CREATE INDEX test_call_runs_by_status ON test_call_runs (status);
CREATE INDEX test_call_runs_by_batch ON test_call_runs (batch_id);
