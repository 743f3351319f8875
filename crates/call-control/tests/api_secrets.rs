//! Guards what the API and the database file give away (issue 12, Low): API keys are records
//! with a short display prefix, revocable by their organisation (401 `revoked` from then on,
//! 404 for another organisation's key); trunk passwords, webhook secrets and agent header
//! values are write-only through the API and encrypted in the SQLite file.

mod api_support;

use std::str::FromStr;

use api_support::{id_of, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;

const BASE: &str = "/api/public/v1";

/// Every text value of `sql`'s first column, read from the database file by a pool of its
/// own (what someone with a copy of the file sees).
async fn raw_column(api: &TestApi, sql: &str) -> Vec<String> {
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&api.state.config.database.url).unwrap();
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.iter()
        .map(|row| row.try_get::<String, _>(0).unwrap())
        .collect()
}

/// The whole database file and its write-ahead log, as bytes.
fn file_bytes(api: &TestApi) -> Vec<u8> {
    let db = api.dir.path().join("api.db");
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn api_keys_are_listed_without_the_key_and_revoked_by_their_organisation_only() {
    let api = TestApi::start().await;
    let org = api.org_of(&api.key).await;
    let org_name = api.state.store.get_org(&org).await.unwrap().name;
    let second = api.state.store.create_key(&org_name, 0).await.unwrap();

    let listed = api.get(&format!("{BASE}/api-keys")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["pagination"]["total"], json!(2));
    let records = listed.data().as_array().unwrap().clone();
    for record in &records {
        let prefix = record["prefix"].as_str().unwrap();
        assert_eq!(prefix.len(), "sk_live_".len() + 8, "{record}");
        assert!(api.key.starts_with(prefix) || second.starts_with(prefix));
        assert_eq!(record["revoked_at"], Value::Null);
        let text = record.to_string();
        assert!(
            !text.contains(&api.key) && !text.contains(&second),
            "{text}"
        );
    }
    let second_id = records
        .iter()
        .find(|record| second.starts_with(record["prefix"].as_str().unwrap()))
        .map(|record| record["id"].as_str().unwrap().to_owned())
        .unwrap();

    // Another organisation neither sees nor revokes the key.
    let theirs = api
        .send(
            Method::GET,
            &format!("{BASE}/api-keys"),
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(theirs.body["pagination"]["total"], json!(1));
    let stolen = api
        .send(
            Method::DELETE,
            &format!("{BASE}/api-keys/{second_id}"),
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND, "{}", stolen.body);
    assert_eq!(stolen.code(), "api_key_not_found");
    let still = api
        .send(
            Method::GET,
            &format!("{BASE}/agents"),
            Some(&second),
            None,
            &[],
        )
        .await;
    assert_eq!(still.status, StatusCode::OK);

    // Its own organisation revokes it: the very next request with it is refused.
    let revoked = api.delete(&format!("{BASE}/api-keys/{second_id}")).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.data()["id"], json!(second_id));
    assert!(revoked.data()["revoked_at"].is_string());
    for path in ["/agents", "/api-keys"] {
        let refused = api
            .send(
                Method::GET,
                &format!("{BASE}{path}"),
                Some(&second),
                None,
                &[],
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
        assert_eq!(refused.code(), "unauthorized");
        assert_eq!(refused.body["error"]["details"]["reason"], json!("revoked"));
    }
    // The other key works on, and the revoked one stays listed with its revocation time.
    let listed = api.get(&format!("{BASE}/api-keys")).await;
    assert_eq!(listed.status, StatusCode::OK);
    let revoked_at: Vec<&Value> = listed
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["revoked_at"])
        .collect();
    assert_eq!(revoked_at.iter().filter(|at| at.is_string()).count(), 1);
}

#[tokio::test]
async fn agent_header_values_are_write_only_and_encrypted() {
    let api = TestApi::start().await;
    let token = "Bearer tok_agent_7Qx2LmN4";
    let created = api
        .post(
            &format!("{BASE}/agents"),
            json!({"name": "ws", "prompt": "p", "runtime": {"type": "websocket",
                   "url": "wss://agent.example/stream",
                   "headers": {"Authorization": token, "X-Tenant": "acme-tenant-header"}}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = id_of(&created);
    let redacted = json!({"Authorization": "<redacted>", "X-Tenant": "<redacted>"});
    assert_eq!(created.data()["runtime"]["headers"], redacted);
    let read = api.get(&format!("{BASE}/agents/{id}")).await;
    assert_eq!(read.data()["runtime"]["headers"], redacted);
    let listed = api.get(&format!("{BASE}/agents")).await;
    assert_eq!(listed.data()[0]["runtime"]["headers"], redacted);
    for reply in [&created, &read, &listed] {
        assert!(
            !reply.body.to_string().contains("tok_agent"),
            "{}",
            reply.body
        );
    }

    // A PATCH that leaves the headers out keeps them; one that sends back what it read
    // keeps that header's value and takes the new one.
    let moved = api
        .patch(
            &format!("{BASE}/agents/{id}"),
            json!({"runtime": {"type": "websocket", "url": "wss://agent.example/v2"}}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let org = api.org_of(&api.key).await;
    let stored = api.state.store.get_agent(&org, &id).await.unwrap();
    let call_control::model::Runtime::Websocket { url, headers, .. } = &stored.runtime else {
        panic!("a websocket runtime: {:?}", stored.runtime);
    };
    assert_eq!(url, "wss://agent.example/v2");
    assert_eq!(headers["Authorization"], token);
    let echoed = api
        .patch(
            &format!("{BASE}/agents/{id}"),
            json!({"runtime": {"type": "websocket", "url": "wss://agent.example/v2",
                   "headers": {"Authorization": "<redacted>", "X-Trace": "on",
                               "X-Unknown": "<redacted>"}}}),
        )
        .await;
    assert_eq!(echoed.status, StatusCode::OK, "{}", echoed.body);
    assert_eq!(
        echoed.data()["runtime"]["headers"],
        json!({"Authorization": "<redacted>", "X-Trace": "<redacted>"})
    );
    let stored = api.state.store.get_agent(&org, &id).await.unwrap();
    let call_control::model::Runtime::Websocket { headers, .. } = &stored.runtime else {
        panic!("a websocket runtime");
    };
    assert_eq!(
        headers.get("Authorization").map(String::as_str),
        Some(token)
    );
    assert_eq!(headers.get("X-Trace").map(String::as_str), Some("on"));
    assert_eq!(
        headers.len(),
        2,
        "X-Tenant was dropped, X-Unknown never existed"
    );

    let runtime = raw_column(&api, "SELECT runtime FROM agents").await;
    assert!(runtime[0].contains("Authorization"), "{}", runtime[0]);
    assert!(!runtime[0].contains("tok_agent"), "{}", runtime[0]);
    assert!(!contains(&file_bytes(&api), "tok_agent_7Qx2LmN4"));
}

#[tokio::test]
async fn trunk_passwords_and_webhook_secrets_never_come_back_and_are_encrypted() {
    let api = TestApi::start().await;
    let password = "trunk-pw-Zr8Kq1";
    let inbound = "inbound-pw-Hc4Ns7";
    let trunk = api
        .post(
            &format!("{BASE}/trunks"),
            json!({"name": "carrier", "host": "127.0.0.1", "username": "u",
                   "password": password,
                   "inbound_auth": {"username": "carrier", "password": inbound}}),
        )
        .await;
    assert_eq!(trunk.status, StatusCode::CREATED, "{}", trunk.body);
    assert_eq!(trunk.data()["has_password"], json!(true));
    let trunk_id = id_of(&trunk);
    let secret = "whsec_given_Yp3Vt9Lw5Qa";
    let hook = api
        .post(
            &format!("{BASE}/webhooks"),
            json!({"url": "http://127.0.0.1:9/hook?token=abc", "events": ["call.ended"],
                   "secret": secret}),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    let hook_id = id_of(&hook);
    for path in [
        format!("{BASE}/trunks/{trunk_id}"),
        format!("{BASE}/trunks"),
        format!("{BASE}/webhooks/{hook_id}"),
        format!("{BASE}/webhooks"),
    ] {
        let read = api.get(&path).await;
        assert_eq!(read.status, StatusCode::OK);
        let text = read.body.to_string();
        assert!(
            !text.contains(password) && !text.contains(secret) && !text.contains(inbound),
            "{path}: {text}"
        );
    }

    let passwords = raw_column(&api, "SELECT password FROM trunks").await;
    let inbound_passwords = raw_column(&api, "SELECT inbound_auth_password FROM trunks").await;
    let secrets = raw_column(&api, "SELECT secret FROM webhooks").await;
    for value in passwords.iter().chain(&inbound_passwords).chain(&secrets) {
        assert!(value.starts_with("dcs1:"), "{value}");
    }
    let bytes = file_bytes(&api);
    assert!(!contains(&bytes, password) && !contains(&bytes, secret) && !contains(&bytes, inbound));
    // The service reads them back as they were written.
    let org = api.org_of(&api.key).await;
    let stored = api.state.store.get_trunk(&org, &trunk_id).await.unwrap();
    assert_eq!(stored.password.as_deref(), Some(password));
    assert_eq!(
        stored.inbound_auth.map(|auth| auth.password).as_deref(),
        Some(inbound)
    );
    let stored = api.state.store.get_webhook(&org, &hook_id).await.unwrap();
    assert_eq!(stored.secret, secret);
}
