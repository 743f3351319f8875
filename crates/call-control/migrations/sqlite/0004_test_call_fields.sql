-- dialcore schema, version 3: test-call runs and batches in the shape of DESIGN.md (issue 11).
-- Same conventions as version 1. A column's type or nullability changes the portable way
-- (both SQLite and PostgreSQL take it): add the new column, copy, drop the old, rename.

-- charge_multiplier is the operator's configuration, a whole number: stored as an integer
-- (runs accepted before carried whatever the caller sent, 1 to 100; rounded to the nearest).
ALTER TABLE test_call_runs ADD COLUMN charge_multiplier_int BIGINT NOT NULL DEFAULT 2;
UPDATE test_call_runs SET charge_multiplier_int = CAST(ROUND(charge_multiplier) AS BIGINT);
ALTER TABLE test_call_runs DROP COLUMN charge_multiplier;
ALTER TABLE test_call_runs RENAME COLUMN charge_multiplier_int TO charge_multiplier;

ALTER TABLE test_call_batches ADD COLUMN charge_multiplier_int BIGINT NOT NULL DEFAULT 2;
UPDATE test_call_batches SET charge_multiplier_int = CAST(ROUND(charge_multiplier) AS BIGINT);
ALTER TABLE test_call_batches DROP COLUMN charge_multiplier;
ALTER TABLE test_call_batches RENAME COLUMN charge_multiplier_int TO charge_multiplier;

-- scenario_prompt is optional on runs: NULL runs the bot's default scenario.
ALTER TABLE test_call_runs ADD COLUMN scenario_prompt_opt TEXT;
UPDATE test_call_runs SET scenario_prompt_opt = scenario_prompt;
ALTER TABLE test_call_runs DROP COLUMN scenario_prompt;
ALTER TABLE test_call_runs RENAME COLUMN scenario_prompt_opt TO scenario_prompt;

-- The batch's label, why it failed, the API key that asked for it, when its first run started.
ALTER TABLE test_call_batches ADD COLUMN name TEXT;
ALTER TABLE test_call_batches ADD COLUMN error_message TEXT;
ALTER TABLE test_call_batches ADD COLUMN requested_by_id TEXT;
ALTER TABLE test_call_batches ADD COLUMN started_at TEXT;
-- Batches from before: the first start of their runs, and for those that failed, the reason
-- recovery gave their runs.
UPDATE test_call_batches SET started_at = (SELECT MIN(r.started_at) FROM test_call_runs AS r
    WHERE r.batch_id = test_call_batches.id);
UPDATE test_call_batches SET error_message = (SELECT MIN(r.error_message)
    FROM test_call_runs AS r WHERE r.batch_id = test_call_batches.id
    AND r.error_message LIKE 'service\_%' ESCAPE '\')
    WHERE status = 'failed';
