//! Component schemas, parameters, responses and security scheme of the OpenAPI document.

use serde_json::{json, Map, Value};

const E164: &str = r"^\+[1-9]\d{1,14}$";
const DURATION: &str = r"^\d+[smh]?$";

/// The `components` object.
pub(super) fn components() -> Value {
    json!({
        "securitySchemes": {
            "bearerAuth": { "type": "http", "scheme": "bearer",
                            "description": "An API key: `Authorization: Bearer sk_live_...`" },
        },
        "parameters": {
            "Limit": { "name": "limit", "in": "query", "required": false,
                       "description": "Page size", "schema": { "type": "integer", "minimum": 1, "maximum": 200, "default": 50 } },
            "Offset": { "name": "offset", "in": "query", "required": false,
                        "description": "Items to skip", "schema": { "type": "integer", "minimum": 0, "default": 0 } },
            "IdempotencyKey": { "name": "X-Idempotency-Key", "in": "header", "required": false,
                "description": "A retry of the same request (method, path and JSON body; key order \
                    and spacing do not count) with the same key returns the original status and \
                    body, with `Idempotent-Replayed: true`, and creates nothing. The same key with \
                    a different request is 422 `idempotency_key_reused`. Only successes are kept: \
                    a refused or failed request keeps nothing, so a corrected retry with the same \
                    key is served. Keys are scoped to the organisation and kept in the database: \
                    they survive restarts.",
                "schema": { "type": "string", "minLength": 1, "maxLength": 255 } },
        },
        "responses": {
            "Unauthorized": { "description": "unauthorized: missing or invalid API key; details.reason \
                    says what to send (`Include Authorization: Bearer <your_api_key>`)",
                              "content": error_content() },
            "NotFound": { "description": "<resource>_not_found (objects of other organisations are not found either)",
                          "content": error_content() },
            "ValidationError": { "description": "validation_error (details.fields names each bad field), \
                    invalid_phone_number, invalid_from_number, no_phone_number_configured, agent_not_active, \
                    agent_archived, idempotency_key_reused",
                "content": error_content() },
            "RateLimited": {
                "description": "rate_limited: details.reset_at says when the key's window reopens",
                "headers": { "Retry-After": { "description": "Seconds until the window reopens",
                                              "schema": { "type": "integer" } } },
                "content": error_content(),
            },
        },
        "schemas": schemas(),
    })
}

fn error_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
}

fn schemas() -> Value {
    let timestamp = json!({ "type": "string", "format": "date-time" });
    let nullable_timestamp = json!({ "type": ["string", "null"], "format": "date-time" });
    let id = json!({ "type": "string", "readOnly": true });
    let mut schemas = Map::new();
    schemas.insert(
        "Meta".into(),
        json!({
            "type": "object", "required": ["request_id", "ts"],
            "properties": { "request_id": { "type": "string" }, "ts": timestamp },
        }),
    );
    schemas.insert(
        "Pagination".into(),
        json!({
            "type": "object", "required": ["limit", "offset", "total"],
            "properties": { "limit": { "type": "integer" }, "offset": { "type": "integer" },
                            "total": { "type": "integer" } },
        }),
    );
    schemas.insert("Error".into(), json!({
            "type": "object", "required": ["error"],
            "properties": {
                "error": {
                    "type": "object", "required": ["code", "message", "details"],
                    "properties": {
                        "code": { "type": "string", "examples": ["validation_error", "agent_not_found"] },
                        "message": { "type": "string" },
                        "details": { "type": "object",
                            "properties": { "fields": { "type": "object", "additionalProperties": { "type": "string" } },
                                            "reason": { "type": "string" },
                                            "reset_at": timestamp } },
                    },
                },
                "meta": { "$ref": "#/components/schemas/Meta" },
            },
        }));
    schemas.insert(
        "Deleted".into(),
        json!({
            "type": "object", "required": ["id", "deleted"],
            "properties": { "id": { "type": "string" }, "deleted": { "const": true } },
        }),
    );
    schemas.insert(
        "Health".into(),
        json!({
            "type": "object",
            "properties": { "status": { "type": "string", "enum": ["ok", "unavailable"] },
                            "database": { "type": "string" }, "live_calls": { "type": "integer" } },
        }),
    );
    schemas.insert(
        "AgentStatus".into(),
        json!({ "type": "string", "enum": ["draft", "active", "paused", "archived"],
                "description": "`archived` is set by DELETE only" }),
    );
    schemas.insert(
        "AgentDeleted".into(),
        json!({
            "type": "object", "required": ["id", "deleted", "archived"],
            "properties": { "id": { "type": "string" },
                            "deleted": { "type": "boolean", "description": "The agent is gone" },
                            "archived": { "type": "boolean",
                                          "description": "Calls or test runs name the agent: it was archived instead" } },
        }),
    );
    schemas.insert("Runtime".into(), json!({
            "oneOf": [
                { "type": "object", "required": ["type"], "additionalProperties": false,
                  "properties": { "type": { "const": "echo" } } },
                { "type": "object", "required": ["type", "url"], "additionalProperties": false,
                  "properties": { "type": { "const": "websocket" },
                                  "url": { "type": "string", "format": "uri", "pattern": "^wss?://" },
                                  "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                                  "format": { "type": "string", "enum": ["twilio", "audio/x-mulaw", "audio/l16;rate=16000"] } } },
                { "type": "object", "required": ["type", "steps"], "additionalProperties": false,
                  "properties": { "type": { "const": "scripted" },
                                  "steps": { "type": "array", "maxItems": 1000,
                                             "items": { "$ref": "#/components/schemas/ScriptStep" } } } },
            ],
            "discriminator": { "propertyName": "type" },
        }));
    schemas.insert("ScriptStep".into(), json!({
            "oneOf": [
                { "type": "object", "required": ["action"],
                  "properties": { "action": { "const": "say" }, "text": { "type": "string" },
                                  "audio": { "type": "string", "description": "Path of a WAV file" } } },
                { "type": "object", "required": ["action", "frequency_hz", "duration_ms"],
                  "properties": { "action": { "const": "tone" },
                                  "frequency_hz": { "type": "integer", "minimum": 20, "maximum": 8000 },
                                  "duration_ms": { "type": "integer", "minimum": 1, "maximum": 60000 } } },
                { "type": "object", "required": ["action", "digits"],
                  "properties": { "action": { "const": "dtmf" },
                                  "digits": { "type": "string", "pattern": "^[0-9*#A-D]{1,64}$" } } },
                { "type": "object", "required": ["action", "ms"],
                  "properties": { "action": { "const": "wait" },
                                  "ms": { "type": "integer", "minimum": 0, "maximum": 600000 } } },
                { "type": "object", "required": ["action", "timeout_ms"],
                  "properties": { "action": { "const": "wait_for_dtmf" },
                                  "timeout_ms": { "type": "integer", "minimum": 0, "maximum": 600000 } } },
                { "type": "object", "required": ["action"],
                  "properties": { "action": { "const": "hangup" } } },
            ],
            "discriminator": { "propertyName": "action" },
        }));
    schemas.insert("AgentCallSettings".into(), json!({
            "type": "object",
            "properties": {
                "max_duration": { "type": "string", "pattern": DURATION, "default": "1800s",
                                  "description": "Longest call, at most 86400s" },
                "join_timeout": { "type": "string", "pattern": DURATION, "default": "30s",
                                  "description": "How long an outbound call may ring, at most 600s" },
                "max_duration_secs": { "type": "integer", "minimum": 1, "maximum": 86400, "writeOnly": true,
                                       "deprecated": true, "description": "Integer alias of max_duration" },
                "join_timeout_secs": { "type": "integer", "minimum": 1, "maximum": 600, "writeOnly": true,
                                       "deprecated": true, "description": "Integer alias of join_timeout" },
                "recording_enabled": { "type": "boolean", "default": true },
                "transcription_enabled": { "type": "boolean", "default": true },
            },
        }));
    schemas.insert("Agent".into(), json!({
            "type": "object",
            "required": ["id", "name", "prompt", "status", "runtime", "default_call_settings", "created_at", "updated_at"],
            "properties": {
                "id": id, "name": { "type": "string" },
                "prompt": { "type": "string", "description": "May hold {{variables}}" },
                "greeting": { "type": ["string", "null"] },
                "status": { "$ref": "#/components/schemas/AgentStatus" },
                "runtime": { "$ref": "#/components/schemas/Runtime" },
                "default_call_settings": { "$ref": "#/components/schemas/AgentCallSettings" },
                "created_at": timestamp, "updated_at": timestamp,
            },
        }));
    schemas.insert("AgentCreate".into(), agent_input(&["name"]));
    schemas.insert("AgentUpdate".into(), agent_input(&[]));
    schemas.insert("Trunk".into(), json!({
            "type": "object",
            "required": ["id", "name", "host", "port", "transport", "has_password", "allowed_networks", "created_at", "updated_at"],
            "properties": {
                "id": id, "name": { "type": "string" }, "host": { "type": "string" },
                "port": { "type": "integer" }, "transport": { "type": "string", "enum": ["udp", "tcp"] },
                "username": { "type": ["string", "null"] },
                "has_password": { "type": "boolean", "description": "The password itself is write-only" },
                "allowed_networks": { "type": "array", "items": { "type": "string" } },
                "created_at": timestamp, "updated_at": timestamp,
            },
        }));
    schemas.insert("TrunkCreate".into(), trunk_input(&["name", "host"]));
    schemas.insert("TrunkUpdate".into(), trunk_input(&[]));
    schemas.insert("PhoneNumber".into(), json!({
            "type": "object", "required": ["id", "number", "trunk_id", "agent_id", "created_at", "updated_at"],
            "properties": {
                "id": id, "number": { "type": "string", "pattern": E164 },
                "trunk_id": { "type": "string" }, "agent_id": { "type": ["string", "null"] },
                "created_at": timestamp, "updated_at": timestamp,
            },
        }));
    schemas.insert(
        "PhoneNumberCreate".into(),
        number_input(&["number", "trunk_id"]),
    );
    schemas.insert("PhoneNumberUpdate".into(), number_input(&[]));
    schemas.insert("CallSettings".into(), json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "recording_enabled": { "type": "boolean", "default": true },
                "transcription_enabled": { "type": "boolean", "default": true },
                "greeting": { "type": ["string", "null"],
                              "description": "Overrides the agent's greeting; left out of a call without an override" },
                "max_duration": { "type": "string", "pattern": DURATION, "examples": ["1800s"],
                                  "description": "Default: the agent's; at most 86400s (also max_duration_secs, an integer)" },
                "join_timeout": { "type": "string", "pattern": DURATION, "examples": ["30s"],
                                  "description": "Default: the agent's; at most 600s (also join_timeout_secs, an integer)" },
            },
        }));
    schemas.insert("CallCreate".into(), json!({
            "type": "object", "required": ["agent_id", "phone_number"], "additionalProperties": false,
            "properties": {
                "agent_id": { "type": "string" },
                "phone_number": { "type": "string", "pattern": E164 },
                "from_number": { "type": "string", "pattern": E164,
                                 "description": "A number of the organisation assigned to the agent; default: one of the agent's" },
                "call_settings": { "$ref": "#/components/schemas/CallSettings" },
                "variables": { "type": "object", "additionalProperties": { "type": "string" },
                               "description": "Rendered into {{name}} / {{ name }} of the prompt and greeting; unknown names render empty" },
            },
        }));
    schemas.insert(
        "MediaStats".into(),
        json!({
            "type": "object",
            "properties": {
                "codec": { "type": "string" }, "packets_sent": { "type": "integer" },
                "packets_received": { "type": "integer" }, "packets_lost": { "type": "integer" },
                "loss_percent": { "type": "number" }, "jitter_ms": { "type": "number" },
                "concealed_ms": { "type": "integer" }, "mos": { "type": "number" },
            },
        }),
    );
    schemas.insert("TranscriptEntry".into(), json!({
            "type": "object", "required": ["role", "text", "at"],
            "properties": { "role": { "type": "string" }, "text": { "type": "string" }, "at": timestamp },
        }));
    schemas.insert("Call".into(), json!({
            "type": "object",
            "required": ["id", "agent_id", "status", "direction", "phone_number", "from_number", "to_number", "created_at", "updated_at"],
            "properties": {
                "id": id, "agent_id": { "type": "string" },
                "status": { "type": "string",
                            "enum": ["queued", "initiated", "ringing", "in_progress", "ended", "failed", "cancelled"] },
                "outcome": { "type": ["string", "null"],
                             "enum": ["completed", "no_answer", "busy", "rejected", "max_duration",
                                      "caller_hangup", "agent_hangup", "cancelled", "error", null] },
                "direction": { "type": "string", "enum": ["outbound", "inbound"] },
                "phone_number": { "type": "string", "description": "The remote party" },
                "from_number": { "type": "string" }, "to_number": { "type": "string" },
                "variables": { "type": "object", "additionalProperties": { "type": "string" } },
                "call_settings": { "$ref": "#/components/schemas/CallSettings" },
                "max_duration_secs": { "type": "integer" }, "join_timeout_secs": { "type": "integer" },
                "sip_call_id": { "type": ["string", "null"] },
                "sip_final_code": { "type": ["integer", "null"] },
                "q850_cause": { "type": ["integer", "null"] },
                "end_reason": { "type": ["string", "null"],
                                "examples": ["bye", "cancel", "media_timeout", "session_expired", "shutdown",
                                             "trunk_unreachable", "trunk_no_response"] },
                "error_message": { "type": ["string", "null"],
                                   "description": "What went wrong when end_reason alone does not say it (the OS error of an unreachable trunk)" },
                "duration_seconds": { "type": ["number", "null"], "description": "Rounded to milliseconds" },
                "transcript": { "type": ["array", "null"], "items": { "$ref": "#/components/schemas/TranscriptEntry" },
                                "description": "null until the first transcript event" },
                "recording_url": { "type": ["string", "null"] },
                "media_stats": { "oneOf": [{ "$ref": "#/components/schemas/MediaStats" }, { "type": "null" }] },
                "created_at": timestamp, "started_at": nullable_timestamp,
                "answered_at": nullable_timestamp, "ended_at": nullable_timestamp,
                "updated_at": timestamp,
            },
        }));
    schemas.insert("WebhookEvent".into(), json!({ "type": "string",
            "enum": ["call.ringing", "call.answered", "call.ended", "test_call.completed", "test_call_batch.completed"] }));
    schemas.insert("Webhook".into(), json!({
            "type": "object", "required": ["id", "url", "events", "has_secret", "created_at"],
            "properties": {
                "id": id, "url": { "type": "string", "format": "uri" },
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/WebhookEvent" } },
                "has_secret": { "type": "boolean", "description": "The secret itself is write-only" },
                "created_at": timestamp,
            },
        }));
    schemas.insert(
        "WebhookCreated".into(),
        json!({
            "allOf": [{ "$ref": "#/components/schemas/Webhook" }, {
                "type": "object",
                "properties": { "secret": { "type": "string",
                    "description": "Present only when the service generated the secret" } },
            }],
        }),
    );
    schemas.insert("WebhookCreate".into(), json!({
            "type": "object", "required": ["url", "events"], "additionalProperties": false,
            "properties": {
                "url": { "type": "string", "format": "uri", "pattern": "^https?://" },
                "events": { "type": "array", "minItems": 1,
                            "items": { "$ref": "#/components/schemas/WebhookEvent" } },
                "secret": { "type": "string", "minLength": 16, "maxLength": 256, "writeOnly": true,
                            "description": "HMAC-SHA256 key of X-Dialcore-Signature; generated when omitted" },
            },
        }));
    super::openapi::test_calls::schemas(&mut schemas);
    Value::Object(schemas)
}

fn agent_input(required: &[&str]) -> Value {
    json!({
        "type": "object", "required": required, "additionalProperties": false,
        "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 200 },
            "prompt": { "type": ["string", "null"], "maxLength": 100000 },
            "greeting": { "type": ["string", "null"], "maxLength": 5000 },
            "status": { "type": "string", "enum": ["draft", "active", "paused"] },
            "runtime": { "$ref": "#/components/schemas/Runtime" },
            "default_call_settings": { "$ref": "#/components/schemas/AgentCallSettings" },
        },
    })
}

fn trunk_input(required: &[&str]) -> Value {
    json!({
        "type": "object", "required": required, "additionalProperties": false,
        "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 200 },
            "host": { "type": "string", "description": "Host name or IP address" },
            "port": { "type": "integer", "minimum": 1, "maximum": 65535, "default": 5060 },
            "transport": { "type": "string", "enum": ["udp", "tcp"], "default": "udp" },
            "username": { "type": ["string", "null"] },
            "password": { "type": ["string", "null"], "writeOnly": true },
            "allowed_networks": { "type": "array", "maxItems": 100,
                                  "items": { "type": "string", "description": "CIDR, e.g. 203.0.113.0/24" } },
        },
    })
}

fn number_input(required: &[&str]) -> Value {
    json!({
        "type": "object", "required": required, "additionalProperties": false,
        "properties": {
            "number": { "type": "string", "pattern": E164 },
            "trunk_id": { "type": "string" },
            "agent_id": { "type": ["string", "null"] },
        },
    })
}
