//! The test-call part of the OpenAPI document: `/test-calls`, `/test-call-batches` and
//! `POST /agents/{id}/test-call`, and their schemas.

use serde_json::{json, Map, Value};

use super::{body, error_content, id_param, list_of, one, query_enum, ref_param, responses};

const E164: &str = r"^\+[1-9]\d{1,14}$";

/// Adds the test-call paths to `paths`.
pub(in crate::api) fn paths(paths: &mut Map<String, Value>) {
    paths.insert(
        "/api/public/v1/agents/{id}/test-call".into(),
        json!({
            "parameters": [id_param("agent")],
            "post": {
                "operationId": "createAgentTestCall",
                "summary": "Place a real outbound call with the agent",
                "description": "Placed exactly as POST /calls places it (same checks and errors, \
                    `to` in the role of phone_number), except that the agent may be draft or \
                    paused: the endpoint verifies an agent before it goes live.",
                "tags": ["test_calls"],
                "parameters": [ref_param("IdempotencyKey")],
                "requestBody": body("AgentTestCallCreate"),
                "responses": responses(201, &one("AgentTestCall"), &[401, 402, 404, 409, 422, 429, 503]),
            },
        }),
    );
    let mut create_run = responses(
        201,
        &one("TestCallRun"),
        &[400, 401, 402, 404, 409, 422, 429],
    );
    decorate(&mut create_run);
    paths.insert(
        "/api/public/v1/test-calls".into(),
        json!({
            "get": {
                "operationId": "listTestCalls",
                "summary": "List test-call runs, newest first",
                "tags": ["test_calls"],
                "parameters": [
                    ref_param("Limit"), ref_param("Offset"),
                    query_enum("target_type", "Only runs whose target is of this type",
                        &["agent", "phone_number"]),
                    query_enum("status", "Only runs with this status",
                        &["queued", "in_progress", "completed", "failed"]),
                    { "name": "agent_id", "in": "query", "required": false,
                      "description": "Only runs testing this agent", "schema": { "type": "string" } },
                    { "name": "batch_id", "in": "query", "required": false,
                      "description": "Only runs of this batch", "schema": { "type": "string" } },
                ],
                "responses": responses(200, &list_of("TestCallRun"), &[401, 422, 429]),
            },
            "post": {
                "operationId": "createTestCall",
                "summary": "Run a test call: the test bot calls the agent or is called by it",
                "description": "Checked in this order: 422 validation_error (scenario scripts \
                    are parsed), 400 consent_required (details.estimated_cost_cents), 404 \
                    agent_not_found / phone_number_not_found (422 when the number is assigned \
                    to no agent), 429 rate_limited (the organisation's runs in flight plus this \
                    one would pass test_calls.max_concurrent_runs), 402 insufficient_credits \
                    (the balance is below the estimate). Answers at once with the run `queued`.",
                "tags": ["test_calls"],
                "parameters": [ref_param("IdempotencyKey")],
                "requestBody": body("TestCallCreate"),
                "responses": create_run,
            },
        }),
    );
    paths.insert(
        "/api/public/v1/test-calls/{id}".into(),
        json!({
            "parameters": [id_param("test-call run")],
            "get": {
                "operationId": "getTestCall",
                "summary": "Read a test-call run (404 test_call_not_found)",
                "tags": ["test_calls"],
                "responses": responses(200, &one("TestCallRun"), &[401, 404, 429]),
            },
        }),
    );
    let mut create_batch = responses(
        201,
        &one("TestCallBatch"),
        &[400, 401, 402, 404, 409, 422, 429],
    );
    decorate(&mut create_batch);
    paths.insert(
        "/api/public/v1/test-call-batches".into(),
        json!({
            "get": {
                "operationId": "listTestCallBatches",
                "summary": "List test-call batches, newest first",
                "tags": ["test_calls"],
                "parameters": [
                    ref_param("Limit"), ref_param("Offset"),
                    query_enum("status", "Only batches with this status",
                        &["in_progress", "completed", "failed"]),
                ],
                "responses": responses(200, &list_of("TestCallBatch"), &[401, 422, 429]),
            },
            "post": {
                "operationId": "createTestCallBatch",
                "summary": "Run the same scenario run_count times in parallel",
                "description": "The checks and errors of POST /test-calls, for run_count runs \
                    (1-20) started stagger_seconds apart; scenario_prompts rotate over the runs. \
                    Answers at once with the batch `in_progress` and its run_ids.",
                "tags": ["test_calls"],
                "parameters": [ref_param("IdempotencyKey")],
                "requestBody": body("TestCallBatchCreate"),
                "responses": create_batch,
            },
        }),
    );
    paths.insert(
        "/api/public/v1/test-call-batches/{id}".into(),
        json!({
            "parameters": [id_param("test-call batch")],
            "get": {
                "operationId": "getTestCallBatch",
                "summary": "Read a test-call batch: progress, then the aggregate (404 test_call_batch_not_found)",
                "tags": ["test_calls"],
                "responses": responses(200, &one("TestCallBatch"), &[401, 404, 429]),
            },
        }),
    );
}

/// The 400 and 429 of the create routes say what they mean there.
fn decorate(responses: &mut Value) {
    responses["400"] = json!({
        "description": "consent_required: consent_to_charge is not true \
            (details.estimated_cost_cents tells the price); invalid_json",
        "content": error_content(),
    });
    responses["429"] = json!({
        "description": "rate_limited: the organisation's test runs in flight plus those asked \
            for would pass the limit (details.limit, details.active, details.requested), or \
            the key's request window is used up (details.reset_at, Retry-After)",
        "content": error_content(),
    });
}

/// Adds the test-call schemas to `schemas`.
pub(in crate::api) fn schemas(schemas: &mut Map<String, Value>) {
    let timestamp = json!({ "type": "string", "format": "date-time" });
    let nullable_timestamp = json!({ "type": ["string", "null"], "format": "date-time" });
    let nullable_string = json!({ "type": ["string", "null"] });
    let id = json!({ "type": "string", "readOnly": true });
    let target_type = json!({ "type": "string", "enum": ["agent", "phone_number"] });
    let direction = json!({ "type": "string", "enum": ["outbound", "inbound"],
        "description": "outbound: the agent calls the test bot; inbound: the bot calls the agent" });
    let mode = json!({ "type": "string", "enum": ["bot", "sip"],
        "description": "bot: joined in-process, no SIP; sip: both legs over real SIP and RTP on loopback" });
    let mode_in = json!({ "type": "string", "enum": ["bot", "sip"], "default": "bot",
        "description": "bot (the default): joined in-process, no SIP; sip: both legs over real \
            SIP and RTP on loopback (two legs: twice the price)" });
    let multiplier = json!({ "type": "integer", "minimum": 0, "readOnly": true,
        "description": "Price of each leg over a normal call's: the operator's \
            [test_calls] charge_multiplier (default 2), read-only" });
    let network_profile = json!({ "type": "string",
        "enum": ["clean", "lossy", "jittery", "bad_mobile"] });
    let thresholds = json!({ "oneOf": [{ "$ref": "#/components/schemas/TestThresholds" },
                                       { "type": "null" }] });

    schemas.insert(
        "TestThresholds".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "description": "Pass/fail gates; a run passed when every gate given held",
            "properties": {
                "response_latency_p95_ms": { "type": "number", "minimum": 0 },
                "response_latency_p50_ms": { "type": "number", "minimum": 0 },
                "mos_min": { "type": "number", "minimum": 1, "maximum": 4.5 },
                "dead_air_ms_max": { "type": "number", "minimum": 0 },
                "loss_percent_max": { "type": "number", "minimum": 0 },
            },
        }),
    );
    schemas.insert(
        "TestMeasurements".into(),
        json!({
            "type": "object", "additionalProperties": true,
            "description": "What the test bot measured; `passed` and `failed_thresholds` when \
                the run carried thresholds",
            "properties": {
                "response_latency_ms": { "type": ["object", "null"], "properties": {
                    "p50": { "type": "number" }, "p95": { "type": "number" },
                    "max": { "type": "number" } } },
                "dead_air_ms_max": { "type": ["number", "null"] },
                "one_way_audio": { "type": "boolean" },
                "mos": { "type": ["number", "null"] },
                "loss_percent": { "type": ["number", "null"] },
                "passed": { "type": "boolean" },
                "failed_thresholds": { "type": "array" },
            },
        }),
    );
    let target_fields = json!({
        "target_type": target_type,
        "target_id": { "type": "string", "description": "An agent id or a phone number id" },
        "direction": direction,
        "target_number": { "type": "string", "pattern": E164,
            "description": "The number called; default: the test bot's own number \
                (test_calls.bot_number) for outbound, the agent's for inbound" },
        "mode": mode_in,
        "network_profile": network_profile,
        "thresholds": { "$ref": "#/components/schemas/TestThresholds" },
        "charge_multiplier": { "type": "number", "readOnly": true,
            "description": "Read-only: the operator's [test_calls] charge_multiplier. A request \
                may repeat that value; any other is 422 validation_error" },
        "consent_to_charge": { "type": "boolean", "const": true,
            "description": "Must be true: test calls are charged" },
    });
    let mut run_create = target_fields.clone();
    run_create["scenario_prompt"] = json!({ "type": "string", "minLength": 1, "maxLength": 20000,
        "description": "A bot script (say, dtmf, wait, expect_speech, hangup lines) or free text \
            that runs the default script; optional: without one the bot runs its default \
            scenario (waits for the greeting, asks a generic question, waits for the reply, \
            hangs up)" });
    schemas.insert(
        "TestCallCreate".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "required": ["target_type", "target_id", "consent_to_charge"],
            "properties": run_create,
        }),
    );
    let mut batch_create = run_create;
    batch_create["scenario_prompts"] = json!({ "type": "array", "minItems": 1, "maxItems": 100,
        "items": { "type": "string", "minLength": 1 },
        "description": "Rotated over the runs (run i gets prompt i mod n); instead of scenario_prompt" });
    batch_create["run_count"] = json!({ "type": "integer", "minimum": 1, "maximum": 20 });
    batch_create["name"] = json!({ "type": "string", "minLength": 1, "maxLength": 200,
        "description": "A label for the batch" });
    batch_create["stagger_seconds"] =
        json!({ "type": "integer", "minimum": 0, "maximum": 60, "default": 0 });
    schemas.insert(
        "TestCallBatchCreate".into(),
        json!({
            "type": "object", "additionalProperties": false,
            "required": ["target_type", "target_id", "run_count", "consent_to_charge"],
            "properties": batch_create,
        }),
    );
    schemas.insert(
        "TestCallRun".into(),
        json!({
            "type": "object",
            "required": ["id", "target_type", "target_id", "agent_id", "direction", "target_number",
                         "scenario_prompt", "mode", "status", "network_profile", "charge_multiplier",
                         "estimated_cost_cents", "created_at", "updated_at"],
            "properties": {
                "id": id, "target_type": target_type, "target_id": { "type": "string" },
                "agent_id": { "type": "string", "description": "The agent under test" },
                "direction": direction, "target_number": { "type": "string" },
                "scenario_prompt": { "type": ["string", "null"],
                    "description": "null: the bot ran its default scenario" }, "mode": mode,
                "status": { "type": "string", "enum": ["queued", "in_progress", "completed", "failed"] },
                "network_profile": network_profile, "thresholds": thresholds,
                "charge_multiplier": multiplier,
                "estimated_cost_cents": { "type": "integer" },
                "call_id": { "type": ["string", "null"], "description": "The agent's leg" },
                "sip_call_id": { "type": ["string", "null"],
                                 "description": "sip mode: the call record of the bot's leg" },
                "measurements": { "oneOf": [{ "$ref": "#/components/schemas/TestMeasurements" },
                                            { "type": "null" }] },
                "error_message": nullable_string, "batch_id": nullable_string,
                "started_at": nullable_timestamp, "completed_at": nullable_timestamp,
                "created_at": timestamp, "updated_at": timestamp,
            },
        }),
    );
    schemas.insert(
        "TestCallBatch".into(),
        json!({
            "type": "object",
            "required": ["id", "target_type", "target_id", "agent_id", "direction", "mode",
                         "target_number", "status", "total_runs", "completed_runs", "failed_runs",
                         "run_ids", "created_at", "updated_at"],
            "properties": {
                "id": id, "target_type": target_type, "target_id": { "type": "string" },
                "agent_id": { "type": "string" }, "direction": direction, "mode": mode,
                "name": nullable_string,
                "target_number": { "type": "string" },
                "scenario_prompt": nullable_string,
                "scenario_prompts": { "type": "array", "items": { "type": "string" } },
                "network_profile": network_profile, "thresholds": thresholds,
                "charge_multiplier": multiplier,
                "estimated_cost_cents": { "type": "integer" },
                "run_count": { "type": "integer" }, "stagger_seconds": { "type": "integer" },
                "status": { "type": "string", "enum": ["in_progress", "completed", "failed"],
                    "description": "completed when every run is over (some may have failed); \
                        failed when the batch could not run to its end (e.g. a restart)" },
                "total_runs": { "type": "integer" }, "completed_runs": { "type": "integer" },
                "failed_runs": { "type": "integer" },
                "run_ids": { "type": "array", "items": { "type": "string" } },
                "aggregate": { "type": ["object", "null"], "additionalProperties": true,
                    "description": "Median and p95 of the runs' measurements; passed when thresholds" },
                "error_message": { "type": ["string", "null"],
                    "description": "Why the batch failed (e.g. a restart cut it short)" },
                "requested_by_id": { "type": ["string", "null"],
                    "description": "The id of the API key that created the batch (key_...)" },
                "created_at": timestamp, "updated_at": timestamp,
                "started_at": { "type": ["string", "null"], "format": "date-time",
                    "description": "When its first run started" },
                "completed_at": nullable_timestamp,
            },
        }),
    );
    schemas.insert(
        "AgentTestCallCreate".into(),
        json!({
            "type": "object", "required": ["to"], "additionalProperties": false,
            "properties": {
                "to": { "type": "string", "pattern": E164 },
                "from_number": { "type": "string", "pattern": E164,
                    "description": "One of the agent's numbers (default: one of them)" },
            },
        }),
    );
    schemas.insert(
        "AgentTestCall".into(),
        json!({
            "type": "object", "required": ["call_id", "status", "to", "agent_id"],
            "properties": {
                "call_id": { "type": "string" },
                "status": { "type": "string", "const": "initiated" },
                "to": { "type": "string" }, "agent_id": { "type": "string" },
            },
        }),
    );
}
