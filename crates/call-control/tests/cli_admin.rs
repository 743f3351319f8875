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

#[tokio::test]
async fn keys_list_and_revoke_work_on_the_service_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("dialcore.db").display());
    let store = Store::open(&url).await.expect("service database");
    let mut keys = Vec::new();
    for org in ["acme", "acme", "globex"] {
        let out = dialcore(&url, &["keys", "create", "--org", org]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        keys.push(text(&out.stdout).trim().to_owned());
    }
    let (acme_id, _) = store
        .key_and_org(&keys[0])
        .await
        .expect("lookup")
        .expect("known");

    let out = dialcore(&url, &["keys", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert_eq!(
        listing.lines().count(),
        4,
        "a header and three keys: {listing}"
    );
    for key in &keys {
        assert!(
            !listing.contains(key.as_str()),
            "a key is printed: {listing}"
        );
        assert!(listing.contains(&key[..16]), "its prefix is not: {listing}");
    }
    assert!(listing.contains(&acme_id) && listing.contains("globex"));

    let out = dialcore(&url, &["keys", "list", "--org", "acme"]).await;
    let acme = text(&out.stdout);
    assert_eq!(acme.lines().count(), 3, "{acme}");
    assert!(!acme.contains("globex"));
    let out = dialcore(&url, &["keys", "list", "--org", "nobody"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("\"nobody\""));

    let out = dialcore(&url, &["keys", "revoke", &acme_id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&acme_id));
    // The service, on its own connection, refuses the key from now on; the others work.
    assert_eq!(
        store.check_api_key(&keys[0]).await.expect("lookup"),
        call_control::store::KeyCheck::Revoked {
            key_id: acme_id.clone()
        }
    );
    assert!(store.org_for_key(&keys[1]).await.expect("lookup").is_some());
    let out = dialcore(&url, &["keys", "list", "--org", "acme"]).await;
    let revoked_line = text(&out.stdout)
        .lines()
        .find(|line| line.starts_with(&acme_id))
        .map(str::to_owned)
        .expect("still listed");
    assert!(!revoked_line.trim_end().ends_with('-'), "{revoked_line}");

    let out = dialcore(&url, &["keys", "revoke", "key_missing"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no API key with id \"key_missing\""));
}

/// `dialcore serve` with these environment additions, on loopback ports the OS picks.
fn serve(database_url: &str, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialcore"));
    command
        .arg("serve")
        .env("DIALCORE_DATABASE_URL", database_url)
        .env("DIALCORE_HTTP_LISTEN", "127.0.0.1:0")
        .env("DIALCORE_SIP_LISTEN", "127.0.0.1:0")
        .env("DIALCORE_API_KEY", "sk_test_cli_admin_key")
        .env_remove("DIALCORE_SECRET_KEY")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[tokio::test]
async fn serve_refuses_a_bad_or_wrong_secret_key_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("dialcore.db").display());
    let recordings = dir.path().join("recordings").display().to_string();
    let bad = "c2hvcnQta2V5LXNlY3JldC12YWx1ZQ==";
    let out = serve(
        &url,
        &[
            ("DIALCORE_SECRET_KEY", bad),
            ("DIALCORE_RECORDINGS_DIR", &recordings),
        ],
    )
    .output()
    .await
    .expect("runs");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DIALCORE_SECRET_KEY") && stderr.contains("32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains(bad), "the bad key is echoed: {stderr}");

    // A database whose secrets were sealed with one key does not start with another.
    let store = Store::open(&url).await.expect("service database");
    let org = store.create_key("acme", 0).await.expect("key");
    let org = store.org_for_key(&org).await.unwrap().unwrap();
    let now = chrono::Utc::now();
    store
        .insert_webhook(&call_control::model::Webhook {
            id: call_control::ids::new_id(call_control::ids::WEBHOOK),
            org_id: org,
            url: "http://127.0.0.1:9/h".into(),
            events: vec!["call.ended".into()],
            secret: "whsec_sealed_with_the_key_file".into(),
            created_at: now,
        })
        .await
        .expect("webhook");
    store.close().await;
    let other = call_control::secrets::SecretKey::generate().to_base64();
    let out = serve(
        &url,
        &[
            ("DIALCORE_SECRET_KEY", &other),
            ("DIALCORE_RECORDINGS_DIR", &recordings),
        ],
    )
    .output()
    .await
    .expect("runs");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("webhooks.secret was encrypted with secret key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn first_start_writes_a_private_key_file_and_says_where() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("dialcore.db").display());
    let recordings = dir.path().join("recordings").display().to_string();
    let mut child = serve(&url, &[("DIALCORE_RECORDINGS_DIR", &recordings)])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let key_file = dir.path().join("dialcore.db.key");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warning = loop {
        let line = lines
            .next_line()
            .await
            .expect("stderr reads")
            .expect("serve logs the key file before it stops");
        if line.contains("WARN") && line.contains("secret key") {
            break line;
        }
    };
    child.kill().await.expect("serve stops");
    assert!(
        warning.contains(&key_file.display().to_string()) && warning.contains("back it up"),
        "{warning}"
    );
    let text = std::fs::read_to_string(&key_file).expect("key file");
    call_control::secrets::SecretKey::parse(&text).expect("holds a key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
