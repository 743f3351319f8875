//! `/metrics` is unauthenticated, so nothing a client sends may grow it: unknown HTTP methods
//! and paths that match no route share one label value each.

mod api_support;

use api_support::TestApi;
use axum::http::{Method, StatusCode};

#[tokio::test]
async fn random_methods_and_paths_do_not_grow_the_metrics() {
    let api = TestApi::start().await;
    let baseline = api.get("/metrics").await;
    assert_eq!(baseline.status, StatusCode::OK);
    for i in 0..2000 {
        let method = Method::from_bytes(format!("X{i:04}SCAN").as_bytes()).expect("token");
        let path = format!("/probe/{i}/../../etc/{i}");
        let reply = api.send(method, &path, None, None, &[]).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
        let reply = api
            .send(
                Method::GET,
                &format!("/api/public/v1/x{i}"),
                None,
                None,
                &[],
            )
            .await;
        assert!(reply.status.is_client_error());
    }
    let text = String::from_utf8(api.get("/metrics").await.bytes).expect("text");
    assert!(
        text.len() < baseline.bytes.len() + 4 * 1024,
        "metrics grew from {} to {} bytes",
        baseline.bytes.len(),
        text.len()
    );
    assert!(!text.contains("SCAN") && !text.contains("/probe/"));
    assert!(
        text.contains("method=\"other\",route=\"unmatched\""),
        "{text}"
    );
}
