-- Nodes of a cluster. Every node records the calls and test runs it runs (`node_id`; null on
-- what was recorded before nodes had ids, which the node that starts next takes as its own)
-- and holds a lease on its row, renewed by its heartbeat: a node whose lease has expired is
-- lost, and a surviving node ends its unfinished calls (`node_lost`).
ALTER TABLE calls ADD COLUMN node_id TEXT;
ALTER TABLE test_call_runs ADD COLUMN node_id TEXT;
CREATE INDEX calls_unfinished_by_node ON calls (node_id) WHERE ended_at IS NULL;

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    -- host:port of the node's HTTP API for other nodes (null: none reachable)
    advertised_address TEXT,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    lease_expires_at TEXT NOT NULL
);

-- A webhook delivery is claimed by one node's dispatcher at a time (until claimed_until,
-- longer than one attempt takes), so that on a cluster every delivery is sent once; a
-- claim that a crashed node leaves runs out and another node sends it (at least once).
ALTER TABLE webhook_outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE webhook_outbox ADD COLUMN claimed_until TEXT;

-- Each node's count of API requests per key in its current rate-limit window, shared so
-- that a key's limit holds across the cluster (key_digest: hex SHA-256 of the key).
CREATE TABLE api_rate_windows (
    key_digest TEXT NOT NULL,
    node_id TEXT NOT NULL,
    window_start TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (key_digest, node_id)
);
