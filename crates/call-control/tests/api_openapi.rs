//! Guards the OpenAPI document against the service it describes: the real router on a real
//! SQLite store answers every documented operation, successes and the main errors, and each
//! answer is validated against the schema the document declares for its path, method and
//! status (`$ref`s resolved, JSON Schema 2020-12 with formats); each request body sent is
//! validated against the operation's request schema. The router serves exactly the routes
//! the document names, with exactly the documented methods.
//!
//! Response object schemas are closed (`additionalProperties: false`) and list their
//! required fields, so a field a handler adds, drops or retypes fails here until the types
//! the document is generated from say the same.

mod api_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api_support::{silent_udp_port, Reply, TestApi, BALANCE};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const BASE: &str = "/api/public/v1";
/// Twilio's hang-up, as the document names it.
const TWILIO_CALL: &str = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json";

/// Longest wait for launched test runs to end (bot mode takes seconds; the machine may be
/// loaded).
const RUNS_END_WITHIN: Duration = Duration::from_secs(180);

/// Methods probed on every path for the ones a path must refuse.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The document, and which operations were answered with a documented success.
struct Spec {
    doc: Value,
    succeeded: BTreeSet<(String, String)>,
    checked: usize,
}

impl Spec {
    fn new() -> Spec {
        Spec {
            doc: call_control::api::openapi::document(),
            succeeded: BTreeSet::new(),
            checked: 0,
        }
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        let operation = &self.doc["paths"][template][method];
        assert!(
            operation.is_object(),
            "{} {template} is not in the document",
            method.to_uppercase()
        );
        operation
    }

    /// Follows a `$ref` to a component of the document.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("local reference");
                self.doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {reference}"))
            }
            None => value,
        }
    }

    /// What is wrong with `instance` by the schema at `pointer` of the document (its
    /// `$ref`s resolve within the document).
    fn errors(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let mut root = self.doc.clone();
        let root_map = root.as_object_mut().expect("document is an object");
        root_map.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root_map.insert("$ref".into(), json!(format!("#{fragment}")));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|err| panic!("schema at {pointer} does not compile: {err}"));
        validator
            .iter_errors(instance)
            .map(|err| format!("{} at {}", err, err.instance_path()))
            .collect()
    }

    /// Asserts that `instance` conforms to the schema at `pointer`.
    fn validate(&self, pointer: &str, instance: &Value, what: &str) {
        let errors = self.errors(pointer, instance);
        assert!(
            errors.is_empty(),
            "{what} does not match the document ({pointer}):\n  {}\n{instance:#}",
            errors.join("\n  ")
        );
    }

    /// Checks `reply` against the response the document declares for `method template` and
    /// its status; counts the operation as answered when the status is a success.
    fn check(&mut self, method: &str, template: &str, reply: &Reply) {
        let status = reply.status.as_u16().to_string();
        let operation = self.operation(method, template);
        let Some(response) = operation["responses"].get(&status) else {
            panic!(
                "{} {template} answered {status}, which the document does not list: {}",
                method.to_uppercase(),
                reply.body
            );
        };
        let response = self.resolve(response);
        let what = format!("{} {template} {status}", method.to_uppercase());
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        match response.get("content").and_then(Value::as_object) {
            None => assert!(reply.bytes.is_empty(), "{what}: undocumented body"),
            Some(content) => {
                let media = content
                    .keys()
                    .find(|media| content_type.starts_with(media.as_str()))
                    .unwrap_or_else(|| {
                        panic!(
                            "{what}: content type {content_type:?} is not one of {:?}",
                            content.keys().collect::<Vec<_>>()
                        )
                    })
                    .clone();
                if media == "application/json" {
                    let body: Value = serde_json::from_slice(&reply.bytes)
                        .unwrap_or_else(|err| panic!("{what}: body is not JSON: {err}"));
                    let pointer = response_pointer(&self.doc, method, template, &status);
                    self.validate(
                        &format!("{pointer}/content/application~1json/schema"),
                        &body,
                        &what,
                    );
                }
            }
        }
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for name in headers.keys() {
                assert!(
                    reply.headers.contains_key(name.as_str()),
                    "{what}: documented header {name} is missing"
                );
            }
        }
        self.checked += 1;
        if reply.status.is_success() {
            self.succeeded
                .insert((method.to_owned(), template.to_owned()));
        }
    }

    /// Checks that `body` is what the document declares `method template` accepts.
    fn check_request(&self, method: &str, template: &str, body: &Value) {
        let operation = self.operation(method, template);
        assert!(
            operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
            "{} {template} documents no JSON request body",
            method.to_uppercase()
        );
        let pointer = format!(
            "/paths/{}/{method}/requestBody/content/application~1json/schema",
            escape(template)
        );
        self.validate(
            &pointer,
            body,
            &format!("request body of {} {template}", method.to_uppercase()),
        );
    }

    /// Checks that the form `fields` are what the document declares `method template`
    /// accepts as `application/x-www-form-urlencoded` (each field a string).
    fn check_form(&self, method: &str, template: &str, fields: &[(&str, &str)]) {
        let media = "application/x-www-form-urlencoded";
        let operation = self.operation(method, template);
        assert!(
            operation["requestBody"]["content"][media]["schema"].is_object(),
            "{} {template} documents no form body",
            method.to_uppercase()
        );
        let pointer = format!(
            "/paths/{}/{method}/requestBody/content/{}/schema",
            escape(template),
            escape(media)
        );
        let object: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        self.validate(
            &pointer,
            &Value::Object(object),
            &format!("form body of {} {template}", method.to_uppercase()),
        );
    }

    /// GET `path` (an instance of `template`, maybe with a query) with the API key; checks
    /// that each query parameter is one the operation documents, and the answer.
    async fn get(&mut self, api: &TestApi, template: &str, path: &str) -> Reply {
        if let Some((_, query)) = path.split_once('?') {
            let documented: Vec<&str> = self.operation("get", template)["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == json!("query"))
                .filter_map(|p| p["name"].as_str())
                .collect();
            for pair in query.split('&') {
                let name = pair.split('=').next().unwrap_or_default();
                assert!(
                    documented.contains(&name),
                    "GET {template}: query parameter {name} is not documented ({documented:?})"
                );
            }
        }
        let reply = api.get(path).await;
        self.check("get", template, &reply);
        reply
    }

    /// Sends `body` to `path` once without each field the request schema of `method
    /// template` lists as required: each time the handler must refuse it (400 or 422)
    /// naming that field in `details.fields`, as the document declares.
    async fn refuses_without_required(
        &mut self,
        api: &TestApi,
        method: &str,
        template: &str,
        path: &str,
        body: &Value,
    ) {
        let schema = &self.operation(method, template)["requestBody"]["content"]
            ["application/json"]["schema"];
        let required: Vec<String> = self.resolve(schema)["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect();
        assert!(
            !required.is_empty(),
            "{method} {template}: no required request fields"
        );
        for field in required {
            let mut partial = body.clone();
            partial
                .as_object_mut()
                .expect("request bodies are objects")
                .remove(&field);
            let reply = api
                .send(
                    self::method(method),
                    path,
                    Some(&api.key),
                    Some(&partial),
                    &[],
                )
                .await;
            assert!(
                matches!(reply.status.as_u16(), 400 | 422)
                    && reply.body["error"]["details"]["fields"]
                        .get(&field)
                        .is_some(),
                "{method} {template} without {field}, which the document requires, \
                 answered {}: {}",
                reply.status,
                reply.body
            );
            self.check(method, template, &reply);
        }
    }

    /// Every documented operation, as `(method, path template)`.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for (template, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if METHODS.contains(&method.as_str()) {
                    operations.insert((method.clone(), template.clone()));
                }
            }
        }
        operations
    }
}

/// JSON-pointer escape of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Pointer of the response object of `method template status`, following a `$ref` to
/// `components/responses`.
fn response_pointer(doc: &Value, method: &str, template: &str, status: &str) -> String {
    let inline = format!("/paths/{}/{method}/responses/{status}", escape(template));
    match doc
        .pointer(&inline)
        .and_then(|r| r.get("$ref"))
        .and_then(Value::as_str)
    {
        Some(reference) => reference.trim_start_matches('#').to_owned(),
        None => inline,
    }
}

/// A concrete path for a template: every `{param}` becomes `x`.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push('x');
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// A documented path as the router spells it: axum's parameters fill whole segments, so a
/// literal after a parameter in one segment (Twilio's `{CallSid}.json`) is part of the
/// parameter there.
fn routed(template: &str) -> String {
    template
        .split('/')
        .map(
            |segment| match (segment.starts_with('{'), segment.find('}')) {
                (true, Some(end)) => &segment[..=end],
                _ => segment,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The paths the router serves, read from its `Debug` form: axum prints its route table as
/// `RouteId(n): "/path"` entries (those of its fallback router, which follow, are not
/// routes).
fn served_paths(router: &axum::Router) -> BTreeSet<String> {
    let text = format!("{router:?}");
    let text = match text.find("fallback_router:") {
        Some(end) => &text[..end],
        None => text.as_str(),
    };
    let mut paths = BTreeSet::new();
    for piece in text.split("RouteId(").skip(1) {
        let digits = piece.bytes().take_while(u8::is_ascii_digit).count();
        let Some(rest) = piece[digits..].strip_prefix("): \"") else {
            continue;
        };
        let Some(end) = rest.find('"') else {
            continue;
        };
        let path = &rest[..end];
        if digits > 0 && path.starts_with('/') && !path.contains("__private__axum") {
            paths.insert(path.to_owned());
        }
    }
    paths
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_uppercase().as_bytes()).expect("method name")
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_routes_and_methods() {
    let api = TestApi::start().await;
    let mut spec = Spec::new();

    for path in ["/openapi.json", "/api/public/v1/openapi.json"] {
        let reply = api.send(Method::GET, path, None, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, spec.doc, "{path} serves the generated document");
        spec.check("get", path, &reply);
    }
    assert_eq!(spec.doc["openapi"], json!("3.1.0"));
    assert_eq!(
        spec.doc["components"]["securitySchemes"]["bearerAuth"],
        json!({"type": "http", "scheme": "bearer",
               "description": "An API key: `Authorization: Bearer sk_live_...`"})
    );
    assert_eq!(spec.doc["security"], json!([{"bearerAuth": []}]));
    assert_eq!(
        spec.doc["components"]["securitySchemes"]["twilioBasic"]["scheme"],
        json!("basic")
    );
    assert_eq!(
        spec.operation("post", TWILIO_CALL)["security"],
        json!([{"twilioBasic": []}])
    );
    assert_eq!(
        routed(TWILIO_CALL),
        "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}"
    );

    let documented: BTreeSet<String> = spec.doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(|path| routed(path))
        .collect();
    let served = served_paths(&api.router);
    assert!(
        served.len() >= 20,
        "the route table was not read from the router: {served:?}"
    );
    assert_eq!(
        served, documented,
        "the router serves routes the document lacks, or the reverse"
    );
    // A route added beside the documented list (a plain `.route`) is seen.
    let undocumented = api
        .router
        .clone()
        .route("/2010-04-01/extra", axum::routing::post(|| async {}));
    let seen = served_paths(&undocumented);
    assert_eq!(
        seen.difference(&documented).collect::<Vec<_>>(),
        ["/2010-04-01/extra"]
    );

    // Each path answers exactly its documented methods: the others are 405.
    for (template, item) in spec.doc["paths"].as_object().expect("paths").clone() {
        let path = concrete(&template);
        for name in METHODS {
            let reply = api.send(method(name), &path, None, None, &[]).await;
            if item.get(name).is_some() {
                assert_ne!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} {template} is documented but not served"
                );
                assert_ne!(reply.code(), "not_found", "{name} {template} is not routed");
                spec.check(name, &template, &reply);
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} {template} is served but not documented: {}",
                    reply.body
                );
            }
        }
    }

    // Only the service endpoints are open; every other operation needs credentials and
    // documents the 401 it answers without them.
    for (name, template) in spec.operations() {
        let operation = spec.operation(&name, &template);
        let open = operation["security"] == json!([{}]);
        let service = operation["tags"] == json!(["service"]);
        assert_eq!(
            open, service,
            "{name} {template}: security {}, tags {}",
            operation["security"], operation["tags"]
        );
        if !open {
            assert!(
                operation["responses"]["401"].is_object(),
                "{name} {template} does not document 401"
            );
        }
    }
}

#[tokio::test]
async fn every_endpoint_answers_as_the_document_declares() {
    let api = TestApi::start().await;
    let mut spec = Spec::new();

    // Service endpoints.
    let health = api.send(Method::GET, "/healthz", None, None, &[]).await;
    spec.check("get", "/healthz", &health);
    let metrics = api.send(Method::GET, "/metrics", None, None, &[]).await;
    spec.check("get", "/metrics", &metrics);

    // The organisation and its balance.
    let organization = format!("{BASE}/organization");
    let org_reply = spec.get(&api, &organization, &organization).await;
    assert_eq!(org_reply.status, StatusCode::OK, "{}", org_reply.body);
    assert_eq!(org_reply.data()["balance_cents"], json!(BALANCE));
    let anonymous = api.send(Method::GET, &organization, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.body["error"]["details"]["reason"].is_string());
    spec.check("get", &organization, &anonymous);

    // Trunks.
    let trunks = format!("{BASE}/trunks");
    let trunk_item = format!("{BASE}/trunks/{{id}}");
    let sip_port = silent_udp_port();
    let body = json!({"name": "carrier", "host": "127.0.0.1", "port": sip_port,
                      "transport": "udp", "username": "user", "password": "s3cret-pass",
                      "allowed_networks": ["127.0.0.0/8"],
                      "inbound_auth": {"username": "carrier", "password": "in-s3cret"}});
    spec.check_request("post", &trunks, &body);
    spec.refuses_without_required(&api, "post", &trunks, &trunks, &body)
        .await;
    let trunk = api.post(&trunks, body).await;
    assert_eq!(trunk.status, StatusCode::CREATED, "{}", trunk.body);
    spec.check("post", &trunks, &trunk);
    let trunk_id = api_support::id_of(&trunk);
    let bare = json!({"name": "bare", "host": "sip.example.com"});
    spec.check_request("post", &trunks, &bare);
    let bare = api.post(&trunks, bare).await;
    spec.check("post", &trunks, &bare);
    let bare_id = api_support::id_of(&bare);
    let invalid = api
        .post(
            &trunks,
            json!({"name": "", "host": "bad host", "port": 0, "extra": 1}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("post", &trunks, &invalid);
    let not_json = api.post_raw(&trunks, b"{").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    spec.check("post", &trunks, &not_json);
    let anonymous = api.send(Method::GET, &trunks, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    spec.check("get", &trunks, &anonymous);
    spec.get(&api, &trunks, &format!("{trunks}?limit=1")).await;
    let bad_page = api.get(&format!("{trunks}?limit=0")).await;
    assert_eq!(bad_page.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("get", &trunks, &bad_page);
    spec.get(&api, &trunk_item, &format!("{trunks}/{trunk_id}"))
        .await;
    let missing = api.get(&format!("{trunks}/trk_missing")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    spec.check("get", &trunk_item, &missing);
    let change = json!({"password": null, "username": null, "port": 5062,
                        "inbound_auth": {"username": "carrier", "password": "in-s3cret"}});
    spec.check_request("patch", &trunk_item, &change);
    let changed = api.patch(&format!("{trunks}/{bare_id}"), change).await;
    spec.check("patch", &trunk_item, &changed);
    let bad_change = api
        .patch(
            &format!("{trunks}/{bare_id}"),
            json!({"transport": "carrier-pigeon"}),
        )
        .await;
    assert_eq!(bad_change.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("patch", &trunk_item, &bad_change);
    let unauthenticated = json!({"inbound_auth": null});
    spec.check_request("patch", &trunk_item, &unauthenticated);
    let unauthenticated = api
        .patch(&format!("{trunks}/{bare_id}"), unauthenticated)
        .await;
    assert_eq!(unauthenticated.data()["inbound_auth"], json!(null));
    spec.check("patch", &trunk_item, &unauthenticated);
    let missing = api
        .patch(&format!("{trunks}/trk_missing"), json!({"name": "x"}))
        .await;
    spec.check("patch", &trunk_item, &missing);

    // Agents.
    let agents = format!("{BASE}/agents");
    let agent_item = format!("{BASE}/agents/{{id}}");
    let body = json!({"name": "reminder", "prompt": "Remind {{name}}.", "greeting": "Hello {{name}}",
                      "status": "active", "runtime": {"type": "echo"},
                      "default_call_settings": {"max_duration_secs": 600, "join_timeout_secs": 20,
                                                "recording_enabled": true,
                                                "transcription_enabled": false}});
    spec.check_request("post", &agents, &body);
    spec.refuses_without_required(&api, "post", &agents, &agents, &body)
        .await;
    let agent = api.post(&agents, body).await;
    assert_eq!(agent.status, StatusCode::CREATED, "{}", agent.body);
    spec.check("post", &agents, &agent);
    let agent_id = api_support::id_of(&agent);
    let scripted = json!({"name": "script", "runtime": {"type": "scripted", "steps": [
        {"action": "say", "text": "hello"},
        {"action": "tone", "frequency_hz": 440, "duration_ms": 200},
        {"action": "dtmf", "digits": "12#"}, {"action": "wait", "ms": 500},
        {"action": "wait_for_dtmf", "timeout_ms": 3000}, {"action": "hangup"}]}});
    spec.check_request("post", &agents, &scripted);
    let scripted = api.post(&agents, scripted).await;
    spec.check("post", &agents, &scripted);
    let scripted_id = api_support::id_of(&scripted);
    let websocket = json!({"name": "ws", "runtime": {"type": "websocket",
        "url": "wss://agent.example/stream", "headers": {"x-token": "t"},
        "format": "audio/l16;rate=16000"}});
    spec.check_request("post", &agents, &websocket);
    let websocket = api.post(&agents, websocket).await;
    spec.check("post", &agents, &websocket);
    let invalid = api
        .post(
            &agents,
            json!({"runtime": {"type": "nope"}, "status": "published"}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("post", &agents, &invalid);
    spec.get(&api, &agents, &agents).await;
    spec.get(&api, &agent_item, &format!("{agents}/{agent_id}"))
        .await;
    spec.get(&api, &agent_item, &format!("{agents}/agt_missing"))
        .await;
    let spelled = json!({"name": "durations", "default_call_settings": {"max_duration": "10m",
                         "join_timeout": "45s"}});
    spec.check_request("post", &agents, &spelled);
    let spelled = api.post(&agents, spelled).await;
    assert_eq!(spelled.status, StatusCode::CREATED, "{}", spelled.body);
    assert_eq!(
        spelled.data()["default_call_settings"]["max_duration"],
        json!("600s")
    );
    spec.check("post", &agents, &spelled);
    let unsettable = api
        .post(&agents, json!({"name": "x", "status": "archived"}))
        .await;
    assert_eq!(unsettable.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("post", &agents, &unsettable);
    let change = json!({"greeting": null, "default_call_settings": {"join_timeout": "25s"}});
    spec.check_request("patch", &agent_item, &change);
    let changed = api.patch(&format!("{agents}/{agent_id}"), change).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    spec.check("patch", &agent_item, &changed);
    let bad_change = api
        .patch(&format!("{agents}/{agent_id}"), json!({"name": 5}))
        .await;
    spec.check("patch", &agent_item, &bad_change);

    // Phone numbers.
    let numbers = format!("{BASE}/phone-numbers");
    let number_item = format!("{BASE}/phone-numbers/{{id}}");
    let body = json!({"number": "+14155550100", "trunk_id": trunk_id, "agent_id": agent_id});
    spec.check_request("post", &numbers, &body);
    spec.refuses_without_required(&api, "post", &numbers, &numbers, &body)
        .await;
    let number = api.post(&numbers, body.clone()).await;
    assert_eq!(number.status, StatusCode::CREATED, "{}", number.body);
    spec.check("post", &numbers, &number);
    let number_id = api_support::id_of(&number);
    let taken = api.post(&numbers, body).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    spec.check("post", &numbers, &taken);
    let unassigned = json!({"number": "+14155550101", "trunk_id": trunk_id});
    spec.check_request("post", &numbers, &unassigned);
    let unassigned = api.post(&numbers, unassigned).await;
    spec.check("post", &numbers, &unassigned);
    let unassigned_id = api_support::id_of(&unassigned);
    let invalid = api
        .post(
            &numbers,
            json!({"number": "555", "trunk_id": "trk_missing"}),
        )
        .await;
    spec.check("post", &numbers, &invalid);
    spec.get(&api, &numbers, &format!("{numbers}?offset=1"))
        .await;
    spec.get(&api, &number_item, &format!("{numbers}/{number_id}"))
        .await;
    spec.get(&api, &number_item, &format!("{numbers}/num_missing"))
        .await;
    let change = json!({"agent_id": null});
    spec.check_request("patch", &number_item, &change);
    let changed = api
        .patch(&format!("{numbers}/{unassigned_id}"), change)
        .await;
    spec.check("patch", &number_item, &changed);
    let bad_change = api
        .patch(
            &format!("{numbers}/{unassigned_id}"),
            json!({"agent_id": "agt_missing"}),
        )
        .await;
    spec.check("patch", &number_item, &bad_change);

    // Calls.
    let calls = format!("{BASE}/calls");
    let call_item = format!("{BASE}/calls/{{id}}");
    let hangup = format!("{BASE}/calls/{{id}}/hangup");
    let recording = format!("{BASE}/calls/{{id}}/recording");
    let body = json!({"agent_id": agent_id, "phone_number": "+14155550199",
                      "from_number": "+14155550100", "variables": {"name": "Ada"},
                      "call_settings": {"recording_enabled": false, "transcription_enabled": true,
                                        "greeting": "Hi {{name}}", "max_duration": "60s",
                                        "join_timeout": "300s"}});
    spec.check_request("post", &calls, &body);
    spec.refuses_without_required(&api, "post", &calls, &calls, &body)
        .await;
    let call = api.post(&calls, body).await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);
    spec.check("post", &calls, &call);
    let call_id = api_support::id_of(&call);
    let minimal = json!({"agent_id": agent_id, "phone_number": "+14155550198"});
    spec.check_request("post", &calls, &minimal);
    for (bad, code) in [
        (
            json!({"agent_id": agent_id, "phone_number": "555"}),
            "invalid_phone_number",
        ),
        (
            json!({"agent_id": "agt_missing", "phone_number": "+14155550198"}),
            "agent_not_found",
        ),
        (
            json!({"agent_id": scripted_id, "phone_number": "+14155550198"}),
            "agent_not_active",
        ),
        (
            json!({"phone_number": 7, "call_settings": {"max_duration": "forever"}}),
            "validation_error",
        ),
    ] {
        let refused = api.post(&calls, bad).await;
        assert_eq!(refused.code(), code, "{}", refused.body);
        spec.check("post", &calls, &refused);
    }
    spec.get(
        &api,
        &calls,
        &format!("{calls}?status=queued&direction=outbound&agent_id={agent_id}"),
    )
    .await;
    spec.get(&api, &calls, &calls).await;
    let bad_filter = api.get(&format!("{calls}?status=bogus")).await;
    assert_eq!(bad_filter.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("get", &calls, &bad_filter);
    spec.get(&api, &call_item, &format!("{calls}/{call_id}"))
        .await;
    spec.get(&api, &call_item, &format!("{calls}/call_missing"))
        .await;
    let no_recording = api.get(&format!("{calls}/{call_id}/recording")).await;
    assert_eq!(no_recording.status, StatusCode::NOT_FOUND);
    spec.check("get", &recording, &no_recording);
    let hung_up = api
        .send(
            Method::POST,
            &format!("{calls}/{call_id}/hangup"),
            Some(&api.key),
            None,
            &[],
        )
        .await;
    assert_eq!(hung_up.status, StatusCode::ACCEPTED, "{}", hung_up.body);
    spec.check("post", &hangup, &hung_up);
    let missing = api
        .send(
            Method::POST,
            &format!("{calls}/call_missing/hangup"),
            Some(&api.key),
            None,
            &[],
        )
        .await;
    spec.check("post", &hangup, &missing);
    tokio::time::timeout(Duration::from_secs(60), api.state.engine.wait_idle())
        .await
        .expect("the hung-up call ends");
    let again = api
        .send(
            Method::POST,
            &format!("{calls}/{call_id}/hangup"),
            Some(&api.key),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    spec.check("post", &hangup, &again);
    spec.get(&api, &call_item, &format!("{calls}/{call_id}"))
        .await;

    // A recording on disk (the engine writes it the same way), served as WAV.
    let mut record = api
        .state
        .store
        .get_call(&api.org_of(&api.key).await, &call_id)
        .await
        .expect("call stored");
    let dir = &api.state.config.recordings.dir;
    std::fs::create_dir_all(dir).expect("recordings directory");
    std::fs::write(dir.join(format!("{call_id}.wav")), b"RIFF....WAVEfmt ").expect("file");
    record.recording_url = Some(format!("{BASE}/calls/{call_id}/recording"));
    api.state.store.update_call(&record).await.expect("updated");
    let wav = api.get(&format!("{calls}/{call_id}/recording")).await;
    assert_eq!(wav.status, StatusCode::OK);
    spec.check("get", &recording, &wav);
    let part = api
        .send(
            Method::GET,
            &format!("{calls}/{call_id}/recording"),
            Some(&api.key),
            None,
            &[("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes, b"RIFF");
    spec.check("get", &recording, &part);
    let outside = api
        .send(
            Method::GET,
            &format!("{calls}/{call_id}/recording"),
            Some(&api.key),
            None,
            &[("range", "bytes=1000-2000")],
        )
        .await;
    assert_eq!(outside.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.headers["content-range"], "bytes */16");
    assert_eq!(outside.code(), "range_not_satisfiable");
    spec.check("get", &recording, &outside);

    // Twilio's hang-up: HTTP Basic with the organisation id and an API key, a form body,
    // answers and errors in Twilio's shapes.
    let org_id = api.org_of(&api.key).await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{org_id}:{}", api.key)
        )
    );
    let ringing = api.post(&calls, minimal.clone()).await;
    assert_eq!(ringing.status, StatusCode::CREATED, "{}", ringing.body);
    let ringing_id = api_support::id_of(&ringing);
    let twilio_path = |call: &str| format!("/2010-04-01/Accounts/{org_id}/Calls/{call}.json");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    spec.check_form("post", TWILIO_CALL, &[("Status", "completed")]);
    let ended = api
        .send_bytes(
            Method::POST,
            &twilio_path(&ringing_id),
            &[form[0], ("authorization", &basic)],
            b"Status=completed".to_vec(),
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.body["sid"], json!(ringing_id));
    spec.check("post", TWILIO_CALL, &ended);
    let unauthenticated = api
        .send_bytes(
            Method::POST,
            &twilio_path(&ringing_id),
            &form,
            b"Status=completed".to_vec(),
        )
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthenticated.body["code"], json!(20003));
    spec.check("post", TWILIO_CALL, &unauthenticated);
    let unknown = api
        .send_bytes(
            Method::POST,
            &twilio_path("call_missing"),
            &[form[0], ("authorization", &basic)],
            b"Status=completed".to_vec(),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["code"], json!(20404));
    spec.check("post", TWILIO_CALL, &unknown);
    let no_status = api
        .send_bytes(
            Method::POST,
            &twilio_path(&call_id),
            &[form[0], ("authorization", &basic)],
            b"Url=https://example.com".to_vec(),
        )
        .await;
    spec.check("post", TWILIO_CALL, &no_status);

    // Not enough credit for one minute.
    let poor_key = api.state.store.create_key("poor", 0).await.expect("key");
    let poor = api
        .send(Method::GET, &agents, Some(&poor_key), None, &[])
        .await;
    spec.check("get", &agents, &poor);
    let org = api.org_of(&api.key).await;
    api.state
        .store
        .add_credits(&org, -BALANCE)
        .await
        .expect("drained");
    let broke = api.post(&calls, minimal.clone()).await;
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED, "{}", broke.body);
    spec.check("post", &calls, &broke);
    api.state
        .store
        .add_credits(&org, BALANCE)
        .await
        .expect("refilled");

    // Webhooks.
    let webhooks = format!("{BASE}/webhooks");
    let webhook_item = format!("{BASE}/webhooks/{{id}}");
    let body =
        json!({"url": "https://example.com/hook", "events": ["call.ended", "test_call.completed"]});
    spec.check_request("post", &webhooks, &body);
    spec.refuses_without_required(&api, "post", &webhooks, &webhooks, &body)
        .await;
    let generated = api.post(&webhooks, body).await;
    assert_eq!(generated.status, StatusCode::CREATED, "{}", generated.body);
    assert!(generated.data()["secret"].is_string());
    spec.check("post", &webhooks, &generated);
    let webhook_id = api_support::id_of(&generated);
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["call.ringing"],
                      "secret": "a-secret-of-16-chars"});
    spec.check_request("post", &webhooks, &body);
    let given = api.post(&webhooks, body).await;
    assert!(given.data().get("secret").is_none());
    spec.check("post", &webhooks, &given);
    let invalid = api
        .post(
            &webhooks,
            json!({"url": "ftp://x", "events": ["call.exploded"]}),
        )
        .await;
    spec.check("post", &webhooks, &invalid);
    spec.get(&api, &webhooks, &webhooks).await;
    spec.get(&api, &webhook_item, &format!("{webhooks}/{webhook_id}"))
        .await;
    spec.get(&api, &webhook_item, &format!("{webhooks}/whk_missing"))
        .await;
    let deleted = api.delete(&format!("{webhooks}/{webhook_id}")).await;
    spec.check("delete", &webhook_item, &deleted);
    let missing = api.delete(&format!("{webhooks}/{webhook_id}")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    spec.check("delete", &webhook_item, &missing);

    // API keys: a second key of the organisation, listed and revoked.
    let api_keys = format!("{BASE}/api-keys");
    let api_key_item = format!("{BASE}/api-keys/{{id}}");
    let org_name = api.state.store.get_org(&org).await.expect("org").name;
    let second_key = api
        .state
        .store
        .create_key(&org_name, 0)
        .await
        .expect("second key");
    let (second_id, _) = api
        .state
        .store
        .key_and_org(&second_key)
        .await
        .expect("lookup")
        .expect("known");
    spec.get(&api, &api_keys, &api_keys).await;
    let revoked = api.delete(&format!("{api_keys}/{second_id}")).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    spec.check("delete", &api_key_item, &revoked);
    let missing = api.delete(&format!("{api_keys}/key_missing")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    spec.check("delete", &api_key_item, &missing);
    let refused = api
        .send(Method::GET, &api_keys, Some(&second_key), None, &[])
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    spec.check("get", &api_keys, &refused);

    // Test calls: an agent test call, a run and a batch carried to their end by the runner.
    let agent_test_call = format!("{BASE}/agents/{{id}}/test-call");
    let body = json!({"to": "+14155550197", "from_number": "+14155550100"});
    spec.check_request("post", &agent_test_call, &body);
    spec.refuses_without_required(
        &api,
        "post",
        &agent_test_call,
        &format!("{agents}/{agent_id}/test-call"),
        &body,
    )
    .await;
    let placed = api
        .post(&format!("{agents}/{agent_id}/test-call"), body)
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    spec.check("post", &agent_test_call, &placed);
    let refused = api
        .post(
            &format!("{agents}/{agent_id}/test-call"),
            json!({"to": "555"}),
        )
        .await;
    spec.check("post", &agent_test_call, &refused);
    let missing = api
        .post(
            &format!("{agents}/agt_missing/test-call"),
            json!({"to": "+14155550197"}),
        )
        .await;
    spec.check("post", &agent_test_call, &missing);

    let runs = format!("{BASE}/test-calls");
    let run_item = format!("{BASE}/test-calls/{{id}}");
    let body = json!({"target_type": "agent", "target_id": agent_id,
                      "scenario_prompt": "Hello, what are your opening hours?",
                      "mode": "bot", "direction": "outbound", "network_profile": "clean",
                      "thresholds": {"response_latency_p95_ms": 60000, "mos_min": 1.0},
                      "consent_to_charge": true});
    spec.check_request("post", &runs, &body);
    spec.refuses_without_required(&api, "post", &runs, &runs, &body)
        .await;
    let run = api.post(&runs, body.clone()).await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.body);
    spec.check("post", &runs, &run);
    let run_id = api_support::id_of(&run);
    let default_scenario = json!({"target_type": "agent", "target_id": agent_id,
                                  "charge_multiplier": 2, "consent_to_charge": true});
    spec.check_request("post", &runs, &default_scenario);
    let default_run = api.post(&runs, default_scenario).await;
    assert_eq!(
        default_run.status,
        StatusCode::CREATED,
        "{}",
        default_run.body
    );
    assert_eq!(default_run.data()["scenario_prompt"], Value::Null);
    assert_eq!(default_run.data()["mode"], json!("bot"));
    spec.check("post", &runs, &default_run);
    let repriced = api
        .post(
            &runs,
            json!({"target_type": "agent", "target_id": agent_id,
                   "charge_multiplier": 1, "consent_to_charge": true}),
        )
        .await;
    assert_eq!(repriced.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check("post", &runs, &repriced);
    let mut unconsented = body.clone();
    unconsented["consent_to_charge"] = json!(false);
    let unconsented = api.post(&runs, unconsented).await;
    assert_eq!(unconsented.status, StatusCode::BAD_REQUEST);
    spec.check("post", &runs, &unconsented);
    let mut unknown = body.clone();
    unknown["target_id"] = json!("agt_missing");
    let unknown = api.post(&runs, unknown).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    spec.check("post", &runs, &unknown);
    let invalid = api
        .post(
            &runs,
            json!({"target_type": "robot", "mode": "carrier-pigeon"}),
        )
        .await;
    spec.check("post", &runs, &invalid);
    api.state
        .store
        .add_credits(&org, -BALANCE)
        .await
        .expect("drained");
    let broke = api.post(&runs, body.clone()).await;
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED, "{}", broke.body);
    spec.check("post", &runs, &broke);
    api.state
        .store
        .add_credits(&org, BALANCE)
        .await
        .expect("refilled");

    let batches = format!("{BASE}/test-call-batches");
    let batch_item = format!("{BASE}/test-call-batches/{{id}}");
    let body = json!({"target_type": "agent", "target_id": agent_id, "mode": "bot",
                      "run_count": 2, "stagger_seconds": 0, "name": "opening hours",
                      "scenario_prompts": ["Hello?", "Are you open?"],
                      "consent_to_charge": true});
    spec.check_request("post", &batches, &body);
    spec.refuses_without_required(&api, "post", &batches, &batches, &body)
        .await;
    let batch = api.post(&batches, body.clone()).await;
    assert_eq!(batch.status, StatusCode::CREATED, "{}", batch.body);
    spec.check("post", &batches, &batch);
    let batch_id = api_support::id_of(&batch);
    let invalid = api
        .post(
            &batches,
            json!({"target_type": "agent", "target_id": agent_id, "run_count": 99,
                               "scenario_prompt": "a", "scenario_prompts": ["b"]}),
        )
        .await;
    spec.check("post", &batches, &invalid);
    let mut unconsented = body.clone();
    unconsented["consent_to_charge"] = json!(false);
    let unconsented = api.post(&batches, unconsented).await;
    spec.check("post", &batches, &unconsented);

    tokio::time::timeout(RUNS_END_WITHIN, api.state.test_runner.wait_idle())
        .await
        .expect("the launched runs end");
    let done = api.get(&format!("{runs}/{run_id}")).await;
    assert_eq!(done.data()["status"], json!("completed"), "{}", done.body);
    spec.check("get", &run_item, &done);
    spec.get(&api, &run_item, &format!("{runs}/tcr_missing"))
        .await;
    spec.get(
        &api,
        &runs,
        &format!(
            "{runs}?status=completed&target_type=agent&agent_id={agent_id}&batch_id={batch_id}"
        ),
    )
    .await;
    spec.get(&api, &runs, &runs).await;
    spec.get(&api, &runs, &format!("{runs}?status=bogus")).await;
    spec.get(&api, &batch_item, &format!("{batches}/{batch_id}"))
        .await;
    spec.get(&api, &batch_item, &format!("{batches}/tcb_missing"))
        .await;
    spec.get(&api, &batches, &batches).await;
    let completed = spec
        .get(&api, &batches, &format!("{batches}?status=completed"))
        .await;
    assert_eq!(completed.status, StatusCode::OK, "{}", completed.body);
    assert!(
        completed.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|batch| batch["status"] == json!("completed")),
        "{}",
        completed.body
    );
    let bad_status = spec
        .get(&api, &batches, &format!("{batches}?status=bogus"))
        .await;
    assert_eq!(bad_status.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.get(&api, &batches, &format!("{batches}?offset=-1"))
        .await;
    // The call records the runs produced (media stats, transcript) are calls too.
    if let Some(run_call) = api.get(&format!("{runs}/{run_id}")).await.data()["call_id"].as_str() {
        spec.get(&api, &call_item, &format!("{calls}/{run_call}"))
            .await;
    }
    spec.get(&api, &calls, &format!("{calls}?limit=200")).await;

    // Deletes last: the objects above refer to each other.
    let deleted = api.delete(&format!("{numbers}/{unassigned_id}")).await;
    spec.check("delete", &number_item, &deleted);
    let missing = api.delete(&format!("{numbers}/num_missing")).await;
    spec.check("delete", &number_item, &missing);
    let deleted = api.delete(&format!("{agents}/{scripted_id}")).await;
    spec.check("delete", &agent_item, &deleted);
    let missing = api.delete(&format!("{agents}/agt_missing")).await;
    spec.check("delete", &agent_item, &missing);
    // An agent that calls name is archived, listed only when asked for, read-only.
    let archived = api.delete(&format!("{agents}/{agent_id}")).await;
    assert_eq!(archived.status, StatusCode::OK, "{}", archived.body);
    assert_eq!(archived.data()["archived"], json!(true));
    assert_eq!(archived.data()["deleted"], json!(false));
    spec.check("delete", &agent_item, &archived);
    let listed = spec
        .get(&api, &agents, &format!("{agents}?include_archived=true"))
        .await;
    assert!(listed.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|agent| agent["status"] == json!("archived")));
    let frozen = api
        .patch(&format!("{agents}/{agent_id}"), json!({"name": "again"}))
        .await;
    assert_eq!(frozen.code(), "agent_archived", "{}", frozen.body);
    spec.check("patch", &agent_item, &frozen);
    let deleted = api.delete(&format!("{trunks}/{bare_id}")).await;
    spec.check("delete", &trunk_item, &deleted);
    let missing = api.delete(&format!("{trunks}/trk_missing")).await;
    spec.check("delete", &trunk_item, &missing);

    // Draining last: the node takes no new calls after it. Keys of the bootstrap
    // organisation only.
    let drain = format!("{BASE}/admin/drain");
    let forbidden = api.post(&drain, json!({})).await;
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "{}",
        forbidden.body
    );
    spec.check("post", &drain, &forbidden);
    let bootstrap = api
        .state
        .store
        .create_key(call_control::store::DEFAULT_ORG, 0)
        .await
        .expect("a key of the bootstrap organisation");
    let auth = format!("Bearer {bootstrap}");
    let drained = api
        .send_bytes(
            Method::POST,
            &drain,
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(drained.status, StatusCode::ACCEPTED, "{}", drained.body);
    spec.check("post", &drain, &drained);
    let refused = api
        .post(
            &calls,
            json!({"agent_id": "agt_x", "phone_number": "+14155550100"}),
        )
        .await;
    assert_eq!(refused.code(), "unavailable", "{}", refused.body);

    // Every documented operation was answered with one of its documented successes.
    let mut unanswered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, template) in spec.operations() {
        if !spec.succeeded.contains(&(name.clone(), template.clone())) {
            unanswered.entry(template).or_default().push(name);
        }
    }
    unanswered.remove("/openapi.json");
    unanswered.remove("/api/public/v1/openapi.json");
    assert!(
        unanswered.is_empty(),
        "operations this test never saw succeed: {unanswered:?}"
    );
    assert!(spec.checked > 80, "{} answers checked", spec.checked);
}

#[test]
fn a_drifted_answer_fails_validation() {
    let spec = Spec::new();
    let template = format!("{BASE}/trunks/{{id}}");
    let pointer = format!(
        "{}/content/application~1json/schema",
        response_pointer(&spec.doc, "get", &template, "200")
    );
    let good = json!({"data": {"id": "trk_1", "name": "n", "host": "h", "port": 5060,
        "transport": "udp", "username": null, "has_password": false, "allowed_networks": [],
        "inbound_auth": null,
        "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"},
        "meta": {"request_id": "req_1", "ts": "2025-01-02T03:04:05.000Z"}});
    spec.validate(&pointer, &good, "a trunk");
    let mut extra = good.clone();
    extra["data"]["password"] = json!("hunter2");
    let mut retyped = good.clone();
    retyped["data"]["port"] = json!("5060");
    let mut missing = good.clone();
    missing["data"]
        .as_object_mut()
        .expect("object")
        .remove("has_password");
    let mut bad_time = good.clone();
    bad_time["meta"]["ts"] = json!("yesterday");
    let mut inbound_password = good.clone();
    inbound_password["data"]["inbound_auth"] = json!({"username": "u", "password": "hunter2"});
    let mut inbound_shown = good.clone();
    inbound_shown["data"]["inbound_auth"] = json!({"username": "u"});
    spec.validate(&pointer, &inbound_shown, "a trunk with inbound_auth");
    for (what, drifted) in [
        ("extra", extra),
        ("inbound password", inbound_password),
        ("retyped", retyped),
        ("missing", missing),
        ("bad time", bad_time),
    ] {
        assert!(
            !spec.errors(&pointer, &drifted).is_empty(),
            "a {what} field passed validation"
        );
    }
}

#[tokio::test]
async fn rate_limited_and_oversized_requests_answer_as_documented() {
    let api = TestApi::with_rate_limit(2).await;
    let mut spec = Spec::new();
    let agents = format!("{BASE}/agents");
    let huge = vec![b' '; 3 << 20];
    let too_large = api.post_raw(&agents, &huge).await;
    assert_eq!(
        too_large.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        too_large.body
    );
    spec.check("post", &agents, &too_large);
    let listed = api.get(&agents).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    spec.check("get", &agents, &listed);
    let limited = api.get(&agents).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.body["error"]["details"]["reset_at"].is_string());
    spec.check("get", &agents, &limited);
}

#[tokio::test]
async fn the_concurrent_call_limit_answers_as_documented() {
    let api = TestApi::with_config(|config| config.api.max_concurrent_calls_per_org = 1).await;
    let mut spec = Spec::new();
    let calls = format!("{BASE}/calls");
    let trunk = api.trunk(silent_udp_port()).await;
    let agent = api.agent("active", "hello").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    let body = json!({"agent_id": agent, "phone_number": "+14155550123"});
    let first = api.post(&calls, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    spec.check("post", &calls, &first);
    let limited = api.post(&calls, body).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert_eq!(limited.code(), "concurrent_call_limit");
    spec.check("post", &calls, &limited);
    let id = api_support::id_of(&first);
    let hangup = api.post(&format!("{calls}/{id}/hangup"), json!({})).await;
    assert_eq!(hangup.status, StatusCode::ACCEPTED, "{}", hangup.body);
    api.state.engine.wait_idle().await;
}
