//! The operator commands `dialcore keys create` and `dialcore credits add`, run as the real
//! binary on the database a service created: they never create a new empty database (whose
//! keys the running service would not know), and what they write is what the service reads.

use std::process::Output;

use call_control::store::Store;

async fn dialcore(database_url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dialcore"))
        .args(args)
        .env("DIALCORE_DATABASE_URL", database_url)
        .env_remove("DIALCORE_API_KEY")
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("dialcore runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn admin_commands_refuse_a_database_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("typo/dialcore.db");
    let url = format!("sqlite://{}", path.display());
    for args in [
        &["keys", "create", "--org", "acme"][..],
        &["credits", "add", "--org", "acme", "--cents", "100"][..],
    ] {
        let out = dialcore(&url, args).await;
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "no key printed: {}",
            text(&out.stdout)
        );
    }
    assert!(!path.exists() && !dir.path().join("typo").exists());
}

#[tokio::test]
async fn keys_and_credits_land_in_the_service_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("dialcore.db").display());
    // The service creates its database on first start.
    let store = Store::open(&url).await.expect("service database");

    let out = dialcore(&url, &["keys", "create", "--org", "acme"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    let org = store
        .org_for_key(&key)
        .await
        .expect("read key")
        .expect("the service knows the new key");
    let before = store.balance_cents(&org).await.expect("balance");

    let out = dialcore(
        &url,
        &["credits", "add", "--org", "acme", "--cents", "2500"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = store.balance_cents(&org).await.expect("balance");
    assert_eq!(after, before + 2500);
    assert!(text(&out.stdout).contains(&format!("balance {after} cents")));

    let out = dialcore(
        &url,
        &["credits", "add", "--org", "acme", "--cents", "-500"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        store.balance_cents(&org).await.expect("balance"),
        after - 500
    );

    let out = dialcore(
        &url,
        &["credits", "add", "--org", "nobody", "--cents", "10"],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no organisation named \"nobody\""));
    let out = dialcore(&url, &["credits", "add", "--org", "acme", "--cents", "0"]).await;
    assert!(!out.status.success());
    assert_eq!(
        store.balance_cents(&org).await.expect("balance"),
        after - 500
    );
}
