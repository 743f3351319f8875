//! Guards the resource endpoints: agents, trunks, phone numbers and webhooks round-trip through
//! create/read/update/delete in the envelope; 422 `validation_error` names every bad field;
//! lists page with limit (default 50, max 200), offset and total in a `pagination` object beside
//! `data` and `meta`; the trunk password and the webhook secret are never returned.

mod api_support;

use api_support::{id_of, TestApi};
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn agents_round_trip() {
    let api = TestApi::start().await;
    let created = api
        .post(
            "/api/public/v1/agents",
            json!({
                "name": "Reminders", "prompt": "Remind {{name}} of {{ time }}.",
                "status": "active",
                "runtime": {"type": "scripted", "steps": [
                    {"action": "say", "text": "hello"}, {"action": "hangup"}]},
                "default_call_settings": {"max_duration_secs": 600}
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = id_of(&created);
    assert!(id.starts_with("agt_"));
    assert!(created.body["meta"]["request_id"]
        .as_str()
        .expect("id")
        .starts_with("req_"));
    assert_eq!(
        created.data()["default_call_settings"]["max_duration"],
        json!("600s")
    );
    assert_eq!(
        created.data()["default_call_settings"]["join_timeout"],
        json!("30s")
    );
    assert!(created.data().get("org_id").is_none());

    let path = format!("/api/public/v1/agents/{id}");
    let read = api.get(&path).await;
    assert_eq!(read.data(), created.data());

    let patched = api
        .patch(
            &path,
            json!({"status": "paused", "greeting": null, "runtime": {"type": "echo"}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.data()["status"], json!("paused"));
    assert_eq!(patched.data()["name"], json!("Reminders"));
    assert_eq!(patched.data()["runtime"], json!({"type": "echo"}));
    assert_eq!(api.get(&path).await.data()["status"], json!("paused"));

    let deleted = api.delete(&path).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        deleted.data(),
        &json!({"id": id, "deleted": true, "archived": false})
    );
    let gone = api.get(&path).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "agent_not_found");
}

#[tokio::test]
async fn validation_names_every_bad_field() {
    let api = TestApi::start().await;
    let reply = api
        .post(
            "/api/public/v1/agents",
            json!({
                "prompt": 7, "status": "sleeping", "runtime": {"type": "telepathy"},
                "default_call_settings": {"max_duration_secs": 0, "colour": "red"},
                "surprise": true
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "validation_error");
    let fields = reply.body["error"]["details"]["fields"]
        .as_object()
        .expect("fields");
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "default_call_settings.colour",
            "default_call_settings.max_duration_secs",
            "name",
            "prompt",
            "runtime.type",
            "status",
            "surprise"
        ]
    );
    assert_eq!(fields["name"], json!("is required"));

    let trunk = api
        .post(
            "/api/public/v1/trunks",
            json!({"name": "", "host": "bad host", "port": 70000, "transport": "sctp",
                   "allowed_networks": ["10.0.0.0/8", "nonsense"]}),
        )
        .await;
    assert_eq!(trunk.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = &trunk.body["error"]["details"]["fields"];
    for field in ["name", "host", "port", "transport", "allowed_networks[1]"] {
        assert!(fields.get(field).is_some(), "{field} not named: {fields}");
    }
    assert!(fields.get("allowed_networks[0]").is_none());

    let number = api
        .post(
            "/api/public/v1/phone-numbers",
            json!({"number": "4155550100"}),
        )
        .await;
    let fields = &number.body["error"]["details"]["fields"];
    assert!(
        fields.get("number").is_some() && fields.get("trunk_id").is_some(),
        "{fields}"
    );

    let webhook = api
        .post(
            "/api/public/v1/webhooks",
            json!({"url": "ftp://example.com", "events": ["call.ended", "call.exploded"],
                   "secret": "short"}),
        )
        .await;
    let fields = &webhook.body["error"]["details"]["fields"];
    for field in ["url", "events[1]", "secret"] {
        assert!(fields.get(field).is_some(), "{field} not named: {fields}");
    }

    let bad_json = api
        .send(
            axum::http::Method::POST,
            "/api/public/v1/agents",
            Some(&api.key),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    // An empty body is an empty object: name is missing.
    assert_eq!(bad_json.code(), "validation_error");
    for raw in [&b"{"[..], b"[1, 2]", b"\xff\xfe"] {
        let reply = api.post_raw("/api/public/v1/agents", raw).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "invalid_json");
    }
    let huge = vec![b' '; 3 << 20];
    let reply = api.post_raw("/api/public/v1/agents", &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "payload_too_large");
}

#[tokio::test]
async fn lists_page_with_limit_offset_and_total() {
    let api = TestApi::start().await;
    for i in 0..7 {
        let reply = api
            .post(
                "/api/public/v1/agents",
                json!({"name": format!("agent {i}")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let all = api.get("/api/public/v1/agents").await;
    assert_eq!(
        all.body["pagination"],
        json!({"limit": 50, "offset": 0, "total": 7})
    );
    assert_eq!(all.data().as_array().expect("list").len(), 7);
    // `pagination` sits beside `data` and `meta` (DESIGN.md), not inside `meta`.
    let mut top: Vec<&str> = all
        .body
        .as_object()
        .expect("envelope")
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(top, ["data", "meta", "pagination"]);
    assert!(all.body["meta"].get("pagination").is_none(), "{}", all.body);

    let page = api.get("/api/public/v1/agents?limit=3&offset=5").await;
    assert_eq!(
        page.body["pagination"],
        json!({"limit": 3, "offset": 5, "total": 7})
    );
    assert_eq!(page.data().as_array().expect("list").len(), 2);

    let mut seen = Vec::new();
    for offset in [0, 3, 6] {
        let page = api
            .get(&format!("/api/public/v1/agents?limit=3&offset={offset}"))
            .await;
        for agent in page.data().as_array().expect("list") {
            seen.push(agent["id"].as_str().expect("id").to_owned());
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7, "pages overlap or miss items");

    assert_eq!(
        api.get("/api/public/v1/agents?limit=200").await.body["pagination"]["limit"],
        json!(200)
    );
    for query in ["limit=0", "limit=201", "limit=x", "offset=-1"] {
        let bad = api.get(&format!("/api/public/v1/agents?{query}")).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(bad.code(), "validation_error");
    }
}

#[tokio::test]
async fn trunk_inbound_auth_is_validated_and_its_password_never_returned() {
    let api = TestApi::start().await;
    let created = api
        .post(
            "/api/public/v1/trunks",
            json!({"name": "carrier", "host": "sip.example.com",
                   "inbound_auth": {"username": "sbc-user", "password": "inbound-hunter2"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.data()["inbound_auth"],
        json!({"username": "sbc-user"})
    );
    let id = id_of(&created);
    let path = format!("/api/public/v1/trunks/{id}");
    let renamed = api.patch(&path, json!({"name": "renamed"})).await;
    assert_eq!(
        renamed.data()["inbound_auth"],
        json!({"username": "sbc-user"})
    );
    let list = api.get("/api/public/v1/trunks").await;
    for reply in [&created, &renamed, &api.get(&path).await, &list] {
        let text = String::from_utf8_lossy(&reply.bytes);
        assert!(!text.contains("inbound-hunter2"), "password leaked: {text}");
    }

    // Bad shapes are named field by field, and change nothing.
    for (body, fields) in [
        (json!({"inbound_auth": "sbc-user:pw"}), vec!["inbound_auth"]),
        (
            json!({"inbound_auth": {}}),
            vec!["inbound_auth.username", "inbound_auth.password"],
        ),
        (
            json!({"inbound_auth": {"username": "sbc-user"}}),
            vec!["inbound_auth.password"],
        ),
        (
            json!({"inbound_auth": {"username": "", "password": "pw"}}),
            vec!["inbound_auth.username"],
        ),
        (
            json!({"inbound_auth": {"username": "u", "password": 5}}),
            vec!["inbound_auth.password"],
        ),
        (
            json!({"inbound_auth": {"username": "u", "password": "p", "realm": "x"}}),
            vec!["inbound_auth.realm"],
        ),
    ] {
        let refused = api.patch(&path, body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            refused.body
        );
        let named = &refused.body["error"]["details"]["fields"];
        for field in &fields {
            assert!(
                named.get(field).is_some(),
                "{body}: {field} not named in {named}"
            );
        }
        assert_eq!(
            named.as_object().map(|m| m.len()),
            Some(fields.len()),
            "{named}"
        );
    }
    let kept = api.get(&path).await;
    assert_eq!(kept.data()["inbound_auth"], json!({"username": "sbc-user"}));
    assert_eq!(kept.data()["name"], json!("renamed"));
    let refused = api
        .post(
            "/api/public/v1/trunks",
            json!({"name": "x", "host": "sip.example.com", "inbound_auth": {"username": "u"}}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);

    let replaced = api
        .patch(
            &path,
            json!({"inbound_auth": {"username": "other", "password": "pw2"}}),
        )
        .await;
    assert_eq!(
        replaced.data()["inbound_auth"],
        json!({"username": "other"})
    );
    let removed = api.patch(&path, json!({"inbound_auth": null})).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(removed.data()["inbound_auth"], json!(null));
    assert_eq!(api.get(&path).await.data()["inbound_auth"], json!(null));
}

#[tokio::test]
async fn trunk_password_and_webhook_secret_are_never_returned() {
    let api = TestApi::start().await;
    let created = api
        .post(
            "/api/public/v1/trunks",
            json!({"name": "carrier", "host": "sip.example.com", "username": "u",
                   "password": "hunter2-password"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.data()["has_password"], json!(true));
    assert_eq!(created.data()["port"], json!(5060));
    assert_eq!(created.data()["transport"], json!("udp"));
    let id = id_of(&created);
    let path = format!("/api/public/v1/trunks/{id}");
    let renamed = api.patch(&path, json!({"name": "renamed"})).await;
    assert_eq!(renamed.data()["has_password"], json!(true));
    let list = api.get("/api/public/v1/trunks").await;
    for reply in [&created, &renamed, &api.get(&path).await, &list] {
        let text = String::from_utf8_lossy(&reply.bytes);
        assert!(!text.contains("hunter2"), "password leaked: {text}");
        assert!(
            !text.contains("\"password\""),
            "password field shown: {text}"
        );
    }
    let cleared = api.patch(&path, json!({"password": null})).await;
    assert_eq!(cleared.data()["has_password"], json!(false));

    let given = api
        .post(
            "/api/public/v1/webhooks",
            json!({"url": "https://example.com/hook", "events": ["call.ended"],
                   "secret": "whsec_given_by_the_user_123"}),
        )
        .await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.body);
    assert_eq!(given.data()["has_secret"], json!(true));
    assert!(given.data().get("secret").is_none());
    // A generated secret is shown once, at creation.
    let generated = api
        .post(
            "/api/public/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["call.answered", "call.ended"]}),
        )
        .await;
    let secret = generated.data()["secret"]
        .as_str()
        .expect("generated secret shown once");
    assert!(secret.starts_with("whsec_"));
    let list = api.get("/api/public/v1/webhooks").await;
    assert_eq!(list.body["pagination"]["total"], json!(2));
    let text = String::from_utf8_lossy(&list.bytes);
    assert!(!text.contains("whsec_"), "secret listed: {text}");
    assert!(list
        .data()
        .as_array()
        .expect("list")
        .iter()
        .all(|w| w["has_secret"] == json!(true)));

    let read = api
        .get(&format!("/api/public/v1/webhooks/{}", id_of(&given)))
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.data()["has_secret"], json!(true));
    assert!(!String::from_utf8_lossy(&read.bytes).contains("whsec_"));

    let deleted = api
        .delete(&format!("/api/public/v1/webhooks/{}", id_of(&given)))
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        api.get("/api/public/v1/webhooks").await.body["pagination"]["total"],
        json!(1)
    );
}

#[tokio::test]
async fn phone_numbers_are_unique_and_reference_own_objects() {
    let api = TestApi::start().await;
    let trunk = api.trunk(5060).await;
    let agent = api.agent("active", "hi").await;
    let id = api.number("+14155550100", &trunk, None).await;
    let duplicate = api
        .post(
            "/api/public/v1/phone-numbers",
            json!({"number": "+14155550100", "trunk_id": trunk}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.code(), "phone_number_exists");

    let path = format!("/api/public/v1/phone-numbers/{id}");
    let assigned = api.patch(&path, json!({"agent_id": agent})).await;
    assert_eq!(assigned.data()["agent_id"], json!(agent));
    let unknown = api.patch(&path, json!({"agent_id": "agt_nope"})).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        unknown.body["error"]["details"]["fields"]["agent_id"],
        json!("no agent with this id")
    );
    let unassigned = api.patch(&path, json!({"agent_id": null})).await;
    assert_eq!(unassigned.data()["agent_id"], json!(null));
    assert_eq!(api.delete(&path).await.status, StatusCode::OK);
    assert_eq!(api.get(&path).await.code(), "phone_number_not_found");
}
