//! The OpenAPI 3.1 document of the API, generated: paths from the handlers'
//! `#[utoipa::path]` attributes (the same list builds the router, see `api::router`), schemas
//! from the request and response types. Served at `GET /openapi.json` and
//! `GET /api/public/v1/openapi.json`.
//!
//! Twilio's hang-up (`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`) has its
//! own tag and its own security scheme (`twilioBasic`), and answers in Twilio's shapes. Every
//! operation documents the 408 `request_timeout` the HTTP server answers on any route.
//!
//! Three rules are applied to the generated schemas so that they say exactly what the handlers
//! write: an object schema with `properties` is closed (`additionalProperties: false`) unless
//! it says otherwise, an `allOf` of objects (what `#[serde(flatten)]` produces) is merged
//! into one object, so that closing it keeps its meaning, and a `default: null` (from the
//! `Default` of a struct whose absent fields are left out) is dropped where null is not
//! allowed.

mod envelope;
mod requests;
mod twilio;

use std::sync::OnceLock;

use serde_json::{Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

pub use envelope::{
    AgentDeleted, AgentListParams, BatchListParams, Binary, CallListParams, CreateErrors,
    DeleteErrors, Deleted, Drain, Envelope, ErrorBody, ErrorObject, HangupErrors, Health, IdParam,
    IdempotencyKey, ListEnvelope, ListErrors, Meta, PageParams, Pagination, PlaceCallErrors,
    ReadErrors, RecordingErrors, RecordingRange, TestCallErrors, TestRunListParams, UpdateErrors,
    WebhookCreated, REQUEST_TIMEOUT,
};
pub use requests::{
    AgentCallSettingsInput, AgentCreate, AgentStatusInput, AgentTestCallCreate, AgentUpdate,
    CallCreate, CallSettingsInput, PhoneNumberCreate, PhoneNumberUpdate, TestCallBatchCreate,
    TestCallCreate, TrunkCreate, TrunkUpdate, WebhookCreate, WebhookEvent,
};
pub use twilio::{TwilioCallUpdate, TwilioErrorBody, TwilioErrors, TwilioStatusUpdate};

/// The document's frame: info, security, the schemas no path names directly.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dialcore API",
        description = "Telephony core for voice-AI agents: agents, phone numbers, SIP trunks, \
            calls, recordings, test calls and webhooks. Every answer is an envelope \
            {\"data\", \"meta\": {\"request_id\", \"ts\"}}; lists add \"pagination\": \
            {\"limit\", \"offset\", \"total\"} beside them; errors are \
            {\"error\": {\"code\", \"message\", \"details\"}}. Twilio's hang-up \
            (tag twilio) answers in Twilio's shapes instead."
    ),
    servers((url = "/")),
    security(("bearerAuth" = [])),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, ErrorObject, Meta, Pagination, TwilioErrorBody)),
    tags(
        (name = "organization", description = "The API key's organisation and its credit balance"),
        (name = "agents", description = "Voice-AI agents and how their brain is reached"),
        (name = "phone_numbers", description = "E.164 numbers, their trunk and agent"),
        (name = "trunks", description = "SIP trunks"),
        (name = "calls", description = "Outbound calls, call records, recordings"),
        (name = "test_calls", description = "Test-call runs and batches"),
        (name = "webhooks", description = "Event subscriptions"),
        (name = "api_keys", description = "The organisation's API keys: records with a display prefix, never the keys; revocation"),
        (name = "twilio", description = "Twilio's REST API for hanging up, at the root, with HTTP Basic \
            (user: the organisation id, password: an API key), so that frameworks which hang up \
            through Twilio end dialcore calls unchanged"),
        (name = "admin", description = "Operating the node (keys of the bootstrap organisation only)"),
        (name = "service", description = "Health, metrics and this document (no API key)"),
    )
)]
struct ApiDoc;

/// Adds the `bearerAuth` scheme the document's `security` names, and Twilio's `twilioBasic`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer sk_live_...`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "twilioBasic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Twilio's: user = the organisation id (`org_...`), password = one of \
                         its API keys",
                    ))
                    .build(),
            ),
        );
    }
}

/// The frame the documented routes are added to (see `api::documented_routes`).
pub(super) fn frame() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole document (`GET /openapi.json`), built once.
pub fn document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let (api, twilio, open) = super::documented_routes();
            let openapi = api.merge(twilio).merge(open).into_openapi();
            let mut document = serde_json::to_value(&openapi).unwrap_or_else(|err| {
                tracing::error!(error = %err, "serializing the OpenAPI document failed");
                Value::Null
            });
            let schemas = document
                .pointer("/components/schemas")
                .cloned()
                .unwrap_or(Value::Null);
            merge_all_of(&mut document, &schemas);
            close_objects(&mut document);
            drop_null_defaults(&mut document);
            add_request_timeout(&mut document);
            document
        })
        .clone()
}

/// Removes `"default": null` from every schema whose `type` does not include `null`.
fn drop_null_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let allows_null = match map.get("type") {
                Some(Value::String(kind)) => kind == "null",
                Some(Value::Array(kinds)) => kinds.contains(&Value::from("null")),
                _ => true,
            };
            if !allows_null && map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_defaults),
        _ => {}
    }
}

/// Documents on every operation the 408 the HTTP server answers on any route (a request not
/// answered in time), as the shared response `RequestTimeout`.
fn add_request_timeout(document: &mut Value) {
    let reference = serde_json::json!({"$ref": "#/components/responses/RequestTimeout"});
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut() {
                if let Some(responses) = operation
                    .get_mut("responses")
                    .and_then(Value::as_object_mut)
                {
                    responses.insert("408".into(), reference.clone());
                }
            }
        }
    }
    if let Some(components) = document
        .get_mut("components")
        .and_then(Value::as_object_mut)
    {
        let responses = components
            .entry("responses")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(responses) = responses.as_object_mut() {
            responses.insert(
                "RequestTimeout".into(),
                serde_json::json!({
                    "description": REQUEST_TIMEOUT,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }),
            );
        }
    }
}

/// Replaces every `allOf` whose members are all object schemas (inline or `$ref` to
/// `schemas`) by the one object they describe together.
fn merge_all_of(value: &mut Value, schemas: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(merged) = map.get("allOf").and_then(|all| merged_object(all, schemas)) {
                map.remove("allOf");
                for (key, value) in merged {
                    map.insert(key, value);
                }
            }
            map.values_mut().for_each(|v| merge_all_of(v, schemas));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| merge_all_of(v, schemas)),
        _ => {}
    }
}

fn merged_object(all_of: &Value, schemas: &Value) -> Option<Map<String, Value>> {
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for member in all_of.as_array()? {
        let member = match member.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/schemas/")?;
                schemas.get(name)?
            }
            None => member,
        };
        if member.get("type") != Some(&Value::from("object")) {
            return None;
        }
        for (name, schema) in member.get("properties")?.as_object()? {
            properties.insert(name.clone(), schema.clone());
        }
        for name in member
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !required.contains(name) {
                required.push(name.clone());
            }
        }
    }
    let mut merged = Map::new();
    merged.insert("type".into(), Value::from("object"));
    merged.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        merged.insert("required".into(), Value::Array(required));
    }
    Some(merged)
}

/// Sets `additionalProperties: false` on every object schema that lists its `properties`
/// and says nothing of others.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_object_schema = map.get("type") == Some(&Value::from("object"))
                && map.get("properties").is_some_and(Value::is_object);
            if is_object_schema && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_reference_resolves_and_operation_ids_are_unique() {
        let doc = document();
        assert_eq!(doc["openapi"], json!("3.1.0"));
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20, "{refs:?}");
        for reference in refs {
            let pointer = reference.strip_prefix('#').expect("local references only");
            assert!(doc.pointer(pointer).is_some(), "dangling {reference}");
        }
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("path item").values() {
                ids.push(op["operationId"].as_str().expect("operationId").to_owned());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "duplicate operation ids");
    }

    #[test]
    fn flattened_objects_are_merged_then_closed() {
        let schemas = json!({"A": {"type": "object", "required": ["a"],
                                   "properties": {"a": {"type": "string"}}}});
        let mut schema = json!({"allOf": [{"$ref": "#/components/schemas/A"},
            {"type": "object", "properties": {"b": {"type": "string"}}}],
            "description": "kept"});
        merge_all_of(&mut schema, &schemas);
        close_objects(&mut schema);
        assert_eq!(
            schema,
            json!({"type": "object", "description": "kept", "required": ["a"],
                   "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                   "additionalProperties": false})
        );
        let mut defaults = json!({"properties": {
            "a": {"type": "string", "default": null},
            "b": {"type": ["string", "null"], "default": null},
            "c": {"type": "string", "default": "x"}}});
        drop_null_defaults(&mut defaults);
        assert_eq!(
            defaults,
            json!({"properties": {"a": {"type": "string"},
                   "b": {"type": ["string", "null"], "default": null},
                   "c": {"type": "string", "default": "x"}}})
        );
        let mut open = json!({"type": "object", "additionalProperties": true,
                              "properties": {"x": {}}});
        close_objects(&mut open);
        assert_eq!(open["additionalProperties"], json!(true));
    }

    #[test]
    fn every_operation_documents_the_timeout_and_twilio_has_its_own_path_and_scheme() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                assert_eq!(
                    operation["responses"]["408"]["$ref"],
                    json!("#/components/responses/RequestTimeout"),
                    "{method} {path}"
                );
            }
        }
        let twilio = &doc["paths"][crate::api::twilio::PATH]["post"];
        assert_eq!(twilio["security"], json!([{"twilioBasic": []}]));
        assert_eq!(twilio["tags"], json!(["twilio"]));
        assert!(twilio["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["twilioBasic"]["scheme"],
            json!("basic")
        );
        let settings = &doc["components"]["schemas"]["AgentCallSettings"]["properties"];
        assert_eq!(settings["max_duration"]["default"], json!("1800s"));
        assert_eq!(settings["join_timeout"]["default"], json!("30s"));
    }

    #[test]
    fn string_enums_show_their_wire_names() {
        use crate::model::*;
        let doc = document();
        macro_rules! wire_names {
            ($($name:ident),+) => {
                $(
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    assert_eq!(
                        doc["components"]["schemas"][stringify!($name)]["enum"],
                        json!(names),
                        stringify!($name)
                    );
                )+
            };
        }
        wire_names!(
            AgentStatus,
            TrunkTransport,
            CallStatus,
            CallOutcome,
            CallDirection,
            TestTargetType,
            TestDirection,
            TestMode,
            TestRunStatus,
            TestBatchStatus
        );
        let events: Vec<Value> = crate::model::events::ALL.iter().map(|e| json!(e)).collect();
        assert_eq!(
            doc["components"]["schemas"]["WebhookEvent"]["enum"],
            Value::Array(events)
        );
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
