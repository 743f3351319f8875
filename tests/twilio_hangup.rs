//! End to end: Twilio's REST "update a call" on dialcore, the way voice-AI
//! frameworks hang up a Twilio call (Pipecat's serializer, pointed at
//! dialcore with `base_url`). The real service on free loopback ports, SIPp
//! as the carrier, reqwest as the framework's HTTP client.
//!
//! Guards issue 11: `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`
//! with `Status=completed` and Basic auth (organisation id, API key) hangs up
//! an answered call like `POST /calls/{id}/hangup` (BYE, `agent_hangup`,
//! `api_hangup`) and answers with Twilio's Call resource; `Status=canceled`
//! cancels a ringing call and leaves an answered one alone; wrong
//! credentials, another account, an unknown or ended call, a bad `Status`
//! and a used-up rate limit get Twilio's error JSON (`{code, message,
//! more_info, status}`).

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::time::Duration;

use serde_json::{json, Value};
use service::TestService;

const CALL_DONE: Duration = Duration::from_secs(30);

/// The organisation of the test service's API key (the `accountSid` the
/// agent WebSocket's `start` carries).
async fn org_id(svc: &TestService) -> String {
    svc.handle
        .as_ref()
        .expect("running")
        .store
        .org_for_key(service::API_KEY)
        .await
        .expect("store")
        .expect("the key's organisation")
}

fn call_url(svc: &TestService, account: &str, resource: &str) -> String {
    format!(
        "http://{}/2010-04-01/Accounts/{account}/Calls/{resource}",
        svc.http
    )
}

/// A POST with `form` fields, Basic auth `user:password` when given.
async fn update(
    svc: &TestService,
    url: &str,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = svc.client.post(url).form(form);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// Twilio's error body.
fn twilio_error(status: u16, code: u32, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

async fn place(svc: &TestService, agent: &str) -> String {
    let call = svc.place_call(agent, "+15551234567").await;
    call["id"].as_str().expect("call id").to_owned()
}

/// An RFC 2822 date in GMT as Twilio writes it (`Tue, 31 Aug 2010 20:36:28
/// +0000`), as a tuple that sorts in time order.
fn rfc2822(value: &Value) -> (u32, u32, u32, String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let text = value.as_str().unwrap_or_else(|| panic!("a date: {value}"));
    let parts: Vec<&str> = text.split(' ').collect();
    let [weekday, day, month, year, time, zone] = parts[..] else {
        panic!("RFC 2822: {text}");
    };
    assert!(
        weekday.strip_suffix(',').is_some_and(|d| DAYS.contains(&d)),
        "{text}"
    );
    assert_eq!(zone, "+0000", "GMT: {text}");
    let month = MONTHS
        .iter()
        .position(|m| *m == month)
        .unwrap_or_else(|| panic!("month of {text}")) as u32;
    assert_eq!(day.len(), 2, "{text}");
    let clock: Vec<&str> = time.split(':').collect();
    assert!(
        clock.len() == 3
            && clock
                .iter()
                .all(|c| c.len() == 2 && c.parse::<u8>().is_ok()),
        "{text}"
    );
    (
        year.parse().expect("year"),
        month,
        day.parse().expect("day"),
        time.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_account_and_call_are_checked_with_twilios_errors() {
    let svc = TestService::start().await;
    let org = org_id(&svc).await;
    let url = call_url(&svc, &org, "call_doesnotexist.json");
    let authenticate = twilio_error(401, 20003, "Authenticate");

    let (status, headers, body) = update(&svc, &url, None, &[("Status", "completed")]).await;
    assert_eq!((status, &body), (401, &authenticate));
    assert_eq!(
        headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or("")),
        Some("Basic realm=\"Twilio API\"")
    );
    // The public API's Bearer scheme is not Twilio's.
    let response = svc
        .client
        .post(&url)
        .bearer_auth(service::API_KEY)
        .form(&[("Status", "completed")])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let wrong_key = Some((org.as_str(), "sk_not_a_key"));
    let (status, _, body) = update(&svc, &url, wrong_key, &[("Status", "completed")]).await;
    assert_eq!((status, &body), (401, &authenticate));
    let wrong_user = Some(("org_someoneelse", service::API_KEY));
    let (status, _, body) = update(&svc, &url, wrong_user, &[("Status", "completed")]).await;
    assert_eq!((status, &body), (401, &authenticate));
    // The key's own account in the credentials, another in the path.
    let other = call_url(&svc, "org_someoneelse", "call_doesnotexist.json");
    let auth = Some((org.as_str(), service::API_KEY));
    let (status, _, body) = update(&svc, &other, auth, &[("Status", "completed")]).await;
    assert_eq!((status, &body), (401, &authenticate));

    let (status, _, body) = update(&svc, &url, auth, &[("Status", "completed")]).await;
    let path = format!("/2010-04-01/Accounts/{org}/Calls/call_doesnotexist.json");
    assert_eq!(
        (status, body),
        (
            404,
            twilio_error(
                404,
                20404,
                &format!("The requested resource {path} was not found")
            )
        )
    );
    // Twilio's resource paths end in `.json`.
    let bare = call_url(&svc, &org, "call_doesnotexist");
    let (status, _, body) = update(&svc, &bare, auth, &[("Status", "completed")]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 20404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_completed_hangs_up_an_answered_call_like_the_api() {
    let sipp = sipp::one_call_server("uas_answer.xml", sipp::Transport::Udp, |s| s).await;
    let svc = TestService::start().await;
    let org = org_id(&svc).await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let call_id = place(&svc, &agent.id).await;
    svc.wait_status(
        &format!("/calls/{call_id}"),
        &["in_progress", "ended", "failed", "cancelled"],
        Duration::from_millis(20),
        CALL_DONE,
    )
    .await;
    let url = call_url(&svc, &org, &format!("{call_id}.json"));
    let auth = Some((org.as_str(), service::API_KEY));

    // Bad updates are refused and change nothing.
    let (status, _, body) = update(&svc, &url, auth, &[("Status", "busy")]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 20001, "{body}");
    assert_eq!(body["status"], 400, "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains("Status") && message.contains("\"busy\""),
        "names the field and the value: {message}"
    );
    let (status, _, body) = update(&svc, &url, auth, &[("Url", "https://x.test/twiml")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Status is required")),
        "{body}"
    );
    // `canceled` does not touch an answered call (as on Twilio).
    let (status, _, body) = update(&svc, &url, auth, &[("Status", "canceled")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "in-progress", "{body}");
    let (_, current) = svc.get(&format!("/calls/{call_id}")).await;
    assert_eq!(current["data"]["status"], "in_progress", "{current}");

    let (status, headers, body) = update(&svc, &url, auth, &[("Status", "completed")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{headers:?}"
    );
    assert_eq!(body["sid"], call_id.as_str(), "{body}");
    assert_eq!(body["account_sid"], org.as_str(), "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["direction"], "outbound-api", "{body}");
    assert_eq!(body["to"], "+15551234567", "{body}");
    assert_eq!(body["to_formatted"], "(555) 123-4567", "{body}");
    assert_eq!(body["from"], "+15550001111", "{body}");
    assert_eq!(body["api_version"], "2010-04-01", "{body}");
    assert_eq!(
        body["uri"],
        format!("/2010-04-01/Accounts/{org}/Calls/{call_id}.json"),
        "{body}"
    );
    assert_eq!(body["price_unit"], "USD", "{body}");
    let created = rfc2822(&body["date_created"]);
    let started = rfc2822(&body["start_time"]);
    let ended = rfc2822(&body["end_time"]);
    rfc2822(&body["date_updated"]);
    assert!(created <= started && started <= ended, "{body}");
    let duration: u64 = body["duration"]
        .as_str()
        .expect("duration as a string")
        .parse()
        .expect("whole seconds");
    assert!(duration < 30, "{body}");
    assert!(body["queue_time"].as_str().is_some(), "{body}");

    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "agent_hangup", "{call}");
    assert_eq!(call["end_reason"], "api_hangup", "{call}");
    // SIPp got the BYE and answered it.
    sipp::finish(sipp).await.assert_success();

    // Twilio answers an update of a call that is over as not found.
    let (status, _, body) = update(&svc, &url, auth, &[("Status", "completed")]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], 20404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_canceled_cancels_a_ringing_call() {
    let sipp = sipp::one_call_server("uas_ring_forever.xml", sipp::Transport::Udp, |s| s).await;
    let svc = TestService::start().await;
    let org = org_id(&svc).await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let call_id = place(&svc, &agent.id).await;
    svc.wait_status(
        &format!("/calls/{call_id}"),
        &["ringing"],
        Duration::from_millis(20),
        CALL_DONE,
    )
    .await;
    let url = call_url(&svc, &org, &format!("{call_id}.json"));
    let auth = Some((org.as_str(), service::API_KEY));
    let (status, _, body) = update(&svc, &url, auth, &[("Status", "canceled")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sid"], call_id.as_str(), "{body}");
    assert_eq!(body["status"], "canceled", "{body}");
    assert_eq!(body["duration"], Value::Null, "not answered: {body}");
    assert_eq!(body["end_time"], Value::Null, "not completed: {body}");

    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "cancelled", "{call}");
    assert_eq!(call["end_reason"], "api_hangup", "{call}");
    // SIPp got the CANCEL, answered 487 and got its ACK.
    sipp::finish(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_count_against_the_keys_rate_limit() {
    let svc = TestService::start_with(|config| config.api.rate_limit_per_minute = 2).await;
    let org = org_id(&svc).await;
    let url = call_url(&svc, &org, "call_doesnotexist.json");
    let auth = Some((org.as_str(), service::API_KEY));
    for _ in 0..2 {
        let (status, _, body) = update(&svc, &url, auth, &[("Status", "completed")]).await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, _, body) = update(&svc, &url, auth, &[("Status", "completed")]).await;
    assert_eq!(
        (status, body),
        (429, twilio_error(429, 20429, "Too Many Requests"))
    );
}
