//! The OpenAPI 3.1 document of the API, written by hand so it says exactly what the routes do.
//! Paths are here; component schemas are in `openapi_schemas`.

use serde_json::{json, Map, Value};

use super::openapi_schemas as schemas;

pub(super) mod test_calls;

/// The whole document (`GET /openapi.json`).
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dialcore API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Telephony core for voice-AI agents: agents, phone numbers, SIP trunks, \
                calls, recordings, test calls and webhooks. Every response is an envelope \
                {\"data\", \"meta\": {\"request_id\", \"ts\"}} (lists add \"pagination\": {\"limit\", \"offset\", \"total\"} beside them); \
                errors are {\"error\": {\"code\", \"message\", \"details\"}}.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearerAuth": [] }],
        "paths": paths(),
        "components": schemas::components(),
    })
}

fn paths() -> Value {
    let mut paths = Map::new();
    crud(
        &mut paths,
        "agents",
        "agent",
        "Agent",
        "AgentCreate",
        "AgentUpdate",
        &[],
    );
    agent_archiving(&mut paths);
    crud(
        &mut paths,
        "phone-numbers",
        "phone number",
        "PhoneNumber",
        "PhoneNumberCreate",
        "PhoneNumberUpdate",
        &[409],
    );
    crud(
        &mut paths,
        "trunks",
        "trunk",
        "Trunk",
        "TrunkCreate",
        "TrunkUpdate",
        &[],
    );
    paths.insert(
        "/api/public/v1/calls".into(),
        json!({
            "get": {
                "operationId": "listCalls",
                "summary": "List calls, newest first",
                "tags": ["calls"],
                "parameters": [
                    ref_param("Limit"), ref_param("Offset"),
                    query_enum("status", "Only calls with this status",
                        &["queued", "initiated", "ringing", "in_progress", "ended", "failed", "cancelled"]),
                    { "name": "agent_id", "in": "query", "required": false,
                      "description": "Only calls of this agent", "schema": { "type": "string" } },
                    query_enum("direction", "Only calls in this direction", &["outbound", "inbound"]),
                ],
                "responses": responses(200, &list_of("Call"), &[401, 422, 429]),
            },
            "post": {
                "operationId": "createCall",
                "summary": "Place an outbound call",
                "description": "Validates, picks the caller id (from_number, or one of the agent's \
                    numbers) and its trunk, checks that the balance covers one minute, renders \
                    {{variables}} into the prompt and greeting, stores the call `queued` and hands \
                    it to the engine. Errors: 404 agent_not_found, 422 invalid_phone_number, \
                    invalid_from_number, no_phone_number_configured, agent_not_active, \
                    validation_error, 402 insufficient_credits, 429 rate_limited.",
                "tags": ["calls"],
                "parameters": [ref_param("IdempotencyKey")],
                "requestBody": body("CallCreate"),
                "responses": responses(201, &one("Call"), &[401, 402, 404, 409, 422, 429, 503]),
            },
        }),
    );
    paths.insert(
        "/api/public/v1/calls/{id}".into(),
        json!({
            "parameters": [id_param("call")],
            "get": {
                "operationId": "getCall",
                "summary": "Read a call",
                "tags": ["calls"],
                "responses": responses(200, &one("Call"), &[401, 404, 429]),
            },
        }),
    );
    paths.insert(
        "/api/public/v1/calls/{id}/hangup".into(),
        json!({
            "parameters": [id_param("call")],
            "post": {
                "operationId": "hangupCall",
                "summary": "Cancel a call not yet answered, or hang up an answered one",
                "description": "202 with the call as stored; its terminal status follows. 409 \
                    call_already_ended or call_not_live.",
                "tags": ["calls"],
                "parameters": [ref_param("IdempotencyKey")],
                "responses": responses(202, &one("Call"), &[401, 404, 409, 429]),
            },
        }),
    );
    paths.insert(
        "/api/public/v1/calls/{id}/recording".into(),
        json!({
            "parameters": [id_param("call")],
            "get": {
                "operationId": "getCallRecording",
                "summary": "Download the call's WAV recording (stereo: caller left, agent right)",
                "tags": ["calls"],
                "responses": {
                    "200": { "description": "The recording",
                             "content": { "audio/wav": { "schema": { "type": "string", "format": "binary" } } } },
                    "401": ref_response("Unauthorized"),
                    "404": { "description": "call_not_found or recording_not_found",
                             "content": error_content() },
                    "429": ref_response("RateLimited"),
                },
            },
        }),
    );
    paths.insert(
        "/api/public/v1/webhooks".into(),
        json!({
            "get": {
                "operationId": "listWebhooks",
                "summary": "List webhooks",
                "tags": ["webhooks"],
                "parameters": [ref_param("Limit"), ref_param("Offset")],
                "responses": responses(200, &list_of("Webhook"), &[401, 422, 429]),
            },
            "post": {
                "operationId": "createWebhook",
                "summary": "Subscribe a URL to events",
                "description": "Without `secret`, one is generated and returned once in this \
                    response; it is never shown again.",
                "tags": ["webhooks"],
                "parameters": [ref_param("IdempotencyKey")],
                "requestBody": body("WebhookCreate"),
                "responses": responses(201, &one("WebhookCreated"), &[401, 409, 422, 429]),
            },
        }),
    );
    paths.insert(
        "/api/public/v1/webhooks/{id}".into(),
        json!({
            "parameters": [id_param("webhook")],
            "get": {
                "operationId": "getWebhook",
                "summary": "Read a webhook (its secret is never shown)",
                "tags": ["webhooks"],
                "responses": responses(200, &one("Webhook"), &[401, 404, 429]),
            },
            "delete": {
                "operationId": "deleteWebhook",
                "summary": "Delete a webhook",
                "tags": ["webhooks"],
                "responses": responses(200, &one("Deleted"), &[401, 404, 429]),
            },
        }),
    );
    let openapi_get = |operation_id: &str| {
        json!({ "get": {
            "operationId": operation_id,
            "summary": "This OpenAPI document",
            "tags": ["service"],
            "security": [],
            "responses": { "200": { "description": "OpenAPI 3.1 document",
                "content": { "application/json": { "schema": { "type": "object" } } } } },
        }})
    };
    paths.insert("/openapi.json".into(), openapi_get("getOpenApi"));
    paths.insert(
        "/api/public/v1/openapi.json".into(),
        openapi_get("getOpenApiV1"),
    );
    paths.insert(
        "/healthz".into(),
        json!({ "get": {
            "operationId": "healthz",
            "summary": "Liveness and store health",
            "tags": ["service"],
            "security": [],
            "responses": {
                "200": { "description": "Healthy", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Health" } } } },
                "503": { "description": "The store does not answer", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Health" } } } },
            },
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({ "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format 0.0.4)",
            "tags": ["service"],
            "security": [],
            "responses": { "200": { "description": "Metrics",
                "content": { "text/plain": { "schema": { "type": "string" } } } } },
        }}),
    );
    test_calls::paths(&mut paths);
    Value::Object(paths)
}

/// The five routes of a resource: list, create, read, update, delete.
/// What `crud` cannot say about agents: archived agents are listed only when asked for, and
/// DELETE archives an agent that calls or test runs name.
fn agent_archiving(paths: &mut Map<String, Value>) {
    if let Some(Value::Array(parameters)) = paths
        .get_mut("/api/public/v1/agents")
        .and_then(|list| list.pointer_mut("/get/parameters"))
    {
        parameters.push(json!({
            "name": "include_archived", "in": "query", "required": false,
            "description": "Also list archived agents",
            "schema": { "type": "boolean", "default": false },
        }));
    }
    if let Some(item) = paths.get_mut("/api/public/v1/agents/{id}") {
        item["delete"] = json!({
            "operationId": "deleteAgent",
            "summary": "Delete an agent, or archive it when calls or test runs name it",
            "description": "An agent that calls, test runs or test batches name is archived: \
                status `archived`, still readable by id, hidden from lists unless \
                `include_archived=true`, read-only (PATCH is 422 `agent_archived`), placing and \
                answering no calls. An agent that nothing names is deleted and its phone \
                numbers become unassigned. The answer says which.",
            "tags": ["agents"],
            "responses": responses(200, &one("AgentDeleted"), &[401, 404, 429]),
        });
        item["patch"]["description"] =
            json!("422 `agent_archived` for an archived agent: archived agents are read-only.");
    }
}

fn crud(
    paths: &mut Map<String, Value>,
    plural: &str,
    noun: &str,
    schema: &str,
    create: &str,
    update: &str,
    extra_write_errors: &[u16],
) {
    let op = |verb: &str| {
        let mut name: String = verb.into();
        for part in plural.split('-') {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                name.push(first.to_ascii_uppercase());
                name.push_str(chars.as_str());
            }
        }
        name
    };
    let singular_op = |verb: &str| op(verb).trim_end_matches('s').to_owned();
    let mut write_errors = vec![401, 422, 429];
    write_errors.extend_from_slice(extra_write_errors);
    let mut item_write_errors = vec![401, 404, 422, 429];
    item_write_errors.extend_from_slice(extra_write_errors);
    let tag = plural.replace('-', "_");
    paths.insert(
        format!("/api/public/v1/{plural}"),
        json!({
            "get": {
                "operationId": op("list"),
                "summary": format!("List {noun}s"),
                "tags": [tag],
                "parameters": [ref_param("Limit"), ref_param("Offset")],
                "responses": responses(200, &list_of(schema), &[401, 422, 429]),
            },
            "post": {
                "operationId": singular_op("create"),
                "summary": format!("Create a {noun}"),
                "tags": [tag],
                "parameters": [ref_param("IdempotencyKey")],
                "requestBody": body(create),
                "responses": responses(201, &one(schema), &write_errors),
            },
        }),
    );
    paths.insert(
        format!("/api/public/v1/{plural}/{{id}}"),
        json!({
            "parameters": [id_param(noun)],
            "get": {
                "operationId": singular_op("get"),
                "summary": format!("Read a {noun}"),
                "tags": [tag],
                "responses": responses(200, &one(schema), &[401, 404, 429]),
            },
            "patch": {
                "operationId": singular_op("update"),
                "summary": format!("Change the given fields of a {noun}"),
                "tags": [tag],
                "requestBody": body(update),
                "responses": responses(200, &one(schema), &item_write_errors),
            },
            "delete": {
                "operationId": singular_op("delete"),
                "summary": format!("Delete a {noun}"),
                "tags": [tag],
                "responses": responses(200, &one("Deleted"), &[401, 404, 409, 429]),
            },
        }),
    );
}

/// Envelope schema with one object of `schema` as `data`.
fn one(schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["data", "meta"],
        "properties": {
            "data": { "$ref": format!("#/components/schemas/{schema}") },
            "meta": { "$ref": "#/components/schemas/Meta" },
        },
    })
}

/// Envelope schema with a page of `schema` as `data` and `pagination` beside `meta`.
fn list_of(schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["data", "meta", "pagination"],
        "properties": {
            "data": { "type": "array", "items": { "$ref": format!("#/components/schemas/{schema}") } },
            "meta": { "$ref": "#/components/schemas/Meta" },
            "pagination": { "$ref": "#/components/schemas/Pagination" },
        },
    })
}

fn responses(status: u16, schema: &Value, errors: &[u16]) -> Value {
    let mut map = Map::new();
    map.insert(
        status.to_string(),
        json!({ "description": "Success", "content": { "application/json": { "schema": schema } } }),
    );
    for code in errors {
        let response = match code {
            401 => ref_response("Unauthorized"),
            402 => json!({ "description": "insufficient_credits", "content": error_content() }),
            404 => ref_response("NotFound"),
            409 => json!({ "description": "Conflict (e.g. phone_number_exists, \
                idempotency_key_in_use, call_not_live)", "content": error_content() }),
            422 => ref_response("ValidationError"),
            429 => ref_response("RateLimited"),
            503 => json!({ "description": "call_not_placed: stored, but the engine refused it",
                "content": error_content() }),
            _ => json!({ "description": "Error", "content": error_content() }),
        };
        map.insert(code.to_string(), response);
    }
    Value::Object(map)
}

fn error_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
}

fn ref_response(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

fn ref_param(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn id_param(noun: &str) -> Value {
    json!({ "name": "id", "in": "path", "required": true,
            "description": format!("The {noun}'s id"), "schema": { "type": "string" } })
}

fn query_enum(name: &str, description: &str, values: &[&str]) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description,
            "schema": { "type": "string", "enum": values } })
}

fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": {
        "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document points at a component that exists.
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20);
        for reference in refs {
            let pointer = reference.strip_prefix('#').expect("local references only");
            assert!(doc.pointer(pointer).is_some(), "dangling {reference}");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for (method, op) in item.as_object().expect("path item") {
                if method != "parameters" {
                    ids.push(op["operationId"].as_str().expect("operationId").to_owned());
                }
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count);
        assert!(ids.contains(&"createPhoneNumber".to_owned()));
        assert!(ids.contains(&"listPhoneNumbers".to_owned()));
        for id in ["createTestCall", "getTestCallBatch", "createAgentTestCall"] {
            assert!(ids.contains(&id.to_owned()), "{id}");
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "$ref" {
                        out.push(v.as_str().expect("string ref").to_owned());
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
