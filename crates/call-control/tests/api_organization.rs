//! `GET /organization`: each key sees its own organisation and a balance that follows what
//! is charged and added.

mod api_support;

use api_support::{TestApi, BALANCE};
use axum::http::{Method, StatusCode};

const ORGANIZATION: &str = "/api/public/v1/organization";

#[tokio::test]
async fn organization_shows_its_own_balance_as_it_changes() {
    let api = TestApi::start().await;
    let reply = api.get(ORGANIZATION).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let org = api.org_of(&api.key).await;
    assert_eq!(reply.data()["id"], org.as_str());
    assert_eq!(reply.data()["name"], "acme");
    assert_eq!(reply.data()["balance_cents"], BALANCE);
    assert!(reply.data()["created_at"].is_string());

    api.state
        .store
        .add_credits(&org, 1234)
        .await
        .expect("add credit");
    let reply = api.get(ORGANIZATION).await;
    assert_eq!(reply.data()["balance_cents"], BALANCE + 1234);

    // The other organisation sees its own, unchanged.
    let other = api
        .send(Method::GET, ORGANIZATION, Some(&api.other_key), None, &[])
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.data()["name"], "other");
    assert_eq!(other.data()["balance_cents"], BALANCE);

    let anonymous = api.send(Method::GET, ORGANIZATION, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
