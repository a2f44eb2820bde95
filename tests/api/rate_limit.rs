//! The request-intensity limit (protocol.md, Limits): a leaky bucket per portal and client IP, burst 50 and 2/s
//! on `standard`, 250 and 5/s on `enterprise`, none on `unlimited`; refused with 503 `QUERY_LIMIT_EXCEEDED`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

fn assert_limited(resp: &Resp) {
    assert_error(resp, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests");
}

fn time_path(app: &TestApp) -> String {
    app.method_path("server.time")
}

/// `n` sequential calls of `server.time` through the demo webhook: their statuses and how long they took.
async fn burst(app: &TestApp, n: usize) -> (Vec<u16>, Duration) {
    let path = time_path(app);
    let start = Instant::now();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let resp = app.get(&path).await;
        if resp.status != 200 {
            assert_limited(&resp);
        }
        statuses.push(resp.status);
    }
    (statuses, start.elapsed())
}

/// Calls `server.time` until one is refused (at most `max` calls); returns how many were accepted.
async fn fill(app: &TestApp, max: usize) -> usize {
    let path = time_path(app);
    for accepted in 0..max {
        let resp = app.get(&path).await;
        if resp.status == 503 {
            assert_limited(&resp);
            return accepted;
        }
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    panic!("no call was refused in {max}");
}

fn plan(plan: &str) -> serde_json::Value {
    demo_with(|f| f["portal"]["plan"] = json!(plan))
}

/// The most a bucket of `burst` draining at `rate`/s can admit in `elapsed` (plus one for rounding).
fn most_admitted(burst: usize, rate: f64, elapsed: Duration) -> usize {
    burst + (rate * elapsed.as_secs_f64()).ceil() as usize + 1
}

#[tokio::test]
async fn standard_burst_of_50_then_503_then_accepted_once_drained() {
    let app = spawn_app().await;
    let (statuses, elapsed) = burst(&app, 60).await;
    assert!(statuses[..50].iter().all(|s| *s == 200), "the first 50 are accepted: {statuses:?}");
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.contains(&503), "60 calls in {elapsed:?} exceed the bucket: {statuses:?}");
    assert!(
        accepted <= most_admitted(50, 2.0, elapsed),
        "{accepted} accepted in {elapsed:?}: only 50 plus what drained at 2/s: {statuses:?}"
    );
    // The bucket drains at 2 per second: after a second, two more are accepted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (after, elapsed) = burst(&app, 10).await;
    assert_eq!(after[..2], [200, 200], "{after:?}");
    let accepted = after.iter().filter(|s| **s == 200).count();
    assert!(accepted <= 3 + (2.0 * elapsed.as_secs_f64()).ceil() as usize, "{after:?} in {elapsed:?}");
    assert!(after.contains(&503), "{after:?}");
}

#[tokio::test]
async fn a_refused_call_changes_nothing() {
    let app = spawn_app().await;
    let before = app.export();
    // Whoever is refused must still be a member afterwards. The bucket drains continuously, so a call right
    // after a refusal may (rarely) fit into what drained; then try the next member.
    let mut refused = false;
    for user in [20, 30, 14] {
        fill(&app, 200).await;
        let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user})).await;
        if resp.status == 503 {
            assert_limited(&resp);
            assert!(members(&app.export(), 8773).contains(&user), "a refused call removed {user}");
            refused = true;
            break;
        }
        assert_removed(&resp, 8773);
    }
    assert!(refused, "no removal was refused");
    let after = app.export();
    if members(&after, 8773) == members(&before, 8773) {
        assert_eq!(after, before, "nothing changed at all");
    }
    // A refused batch runs none of its commands.
    let user = *members(&after, 8773).iter().find(|u| [20, 30, 14].contains(*u)).unwrap();
    fill(&app, 200).await;
    let cmd = json!({"cmd": {"del": format!("{METHOD}?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID={user}")}});
    let resp = app.call("batch", cmd).await;
    if resp.status == 503 {
        assert_limited(&resp);
        assert_eq!(app.export(), after, "a refused batch changed something");
    }
}

#[tokio::test]
async fn a_batch_of_ten_commands_counts_once() {
    let app = spawn_app().await;
    let start = Instant::now();
    let cmd: Vec<String> = (0..10).map(|_| "server.time".to_string()).collect();
    let resp = app.call("batch", json!({ "cmd": cmd })).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["result"]["result"].as_array().map(Vec::len), Some(10), "{}", resp.text);
    assert_eq!(resp.body["result"]["result_error"], json!([]), "{}", resp.text);
    // Had the batch counted ten, only 40 more would fit (plus what drains: under 9 within 4.5 s).
    let (statuses, _) = burst(&app, 49).await;
    let elapsed = start.elapsed();
    if elapsed < Duration::from_millis(4400) {
        assert!(statuses.iter().all(|s| *s == 200), "batch + 49 calls fit in the bucket of 50: {statuses:?}");
    } else {
        eprintln!("a_batch_of_ten_commands_counts_once: too slow ({elapsed:?}) to tell one from ten");
    }
    // When the bucket is full the whole batch is refused, not its commands one by one.
    fill(&app, 200).await;
    let resp = app.call("batch", json!({ "cmd": cmd })).await;
    if resp.status != 200 {
        assert_limited(&resp);
    }
}

#[tokio::test]
async fn unlimited_plan_never_refuses() {
    let app = spawn_app_with(plan("unlimited")).await;
    let (statuses, _) = burst(&app, 300).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

/// The README's CI set-up: `serve --demo --plan unlimited`, no state file. The demo is on `standard`; the flag
/// changes only the plan.
#[tokio::test]
async fn demo_with_plan_flag_is_unlimited_without_a_state_file() {
    let mut app = spawn_app_flags(&["--demo", "--plan", "unlimited"]).await;
    let (statuses, _) = burst(&app, 120).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let export = app.export();
    assert_eq!(export["portal"]["plan"], "unlimited");
    for (key, value) in demo_fixture()["portal"].as_object().unwrap() {
        if key != "plan" {
            assert_eq!(&export["portal"][key], value, "portal.{key} is the demo's");
        }
    }
    assert_eq!(members(&export, 8773), vec![12, 14, 20, 30], "the demo's chats are there");
    app.kill();

    let dir = app.data_dir.to_str().unwrap().to_string();
    let refused = run_cli(&["serve", "--data-dir", dir.as_str(), "--plan", "free"]);
    assert!(!refused.status.success(), "an unknown plan is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unlimited"), "the error names the plans");
}

#[tokio::test]
async fn standard_demo_refuses_the_51st_call() {
    let app = spawn_app_flags(&["--demo"]).await;
    let start = Instant::now();
    let accepted = fill(&app, 200).await;
    let most = most_admitted(50, 2.0, start.elapsed());
    assert!((50..=most).contains(&accepted), "the demo portal is on plan standard: a burst of 50, {accepted} accepted");
}

#[tokio::test]
async fn enterprise_plan_has_a_burst_of_250() {
    let app = spawn_app_with(plan("enterprise")).await;
    let (statuses, elapsed) = burst(&app, 300).await;
    assert!(statuses[..250].iter().all(|s| *s == 200), "the first 250 are accepted: {statuses:?}");
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.contains(&503), "300 calls in {elapsed:?}: {statuses:?}");
    assert!(accepted <= most_admitted(250, 5.0, elapsed), "{accepted} accepted in {elapsed:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (after, _) = burst(&app, 5).await;
    assert_eq!(after[..5], [200; 5], "5/s drained in a second: {after:?}");
}

#[tokio::test]
async fn the_bucket_is_per_client_ip_and_shared_by_credentials() {
    let app = spawn_app().await;
    fill(&app, 200).await;
    // Another webhook and an OAuth application from the same IP share the bucket.
    let resp = app.call_as("/rest/12/operatorhookcode12/", "server.time", json!({})).await;
    assert_limited(&resp);
    let client = OAuthClient {
        client_id: "local.demo.app".into(),
        secret: "demo-secret".into(),
        application_token: "demo-app-token".into(),
    };
    let tokens = app.issue_tokens(&client, 1).await;
    fill(&app, 200).await;
    let token = tokens["access_token"].as_str().unwrap();
    assert_limited(&app.call_bearer(token, "server.time", json!({})).await);
    // The token endpoint is not a REST call and is not limited.
    let resp = app
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", "local.demo.app"),
            ("client_secret", "demo-secret"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    // Another client IP (127.0.0.2 is loopback too) has its own bucket.
    let other_ip = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("a client bound to 127.0.0.2");
    let resp = app.send(other_ip.get(app.url(&time_path(&app)))).await;
    assert_eq!(resp.status, 200, "another IP is not limited: {}", resp.text);
}

#[tokio::test]
async fn limit_comes_after_method_lookup_and_authentication() {
    let app = spawn_app().await;
    fill(&app, 200).await;
    // Processing order: 404, then 401, then 503.
    let not_found = |resp: &Resp| assert_error(resp, 404, "ERROR_METHOD_NOT_FOUND", "Method not found!");
    let bad_code = |resp: &Resp| assert_error(resp, 401, "INVALID_CREDENTIALS", "Invalid request credentials");
    not_found(&app.get(&format!("{DEMO_HOOK}no.such.method")).await);
    bad_code(&app.get("/rest/1/wrongwebhookcode1234/server.time").await);
    assert_error(&app.get("/rest/server.time").await, 401, "NO_AUTH_FOUND", "Wrong authorization data");
    // Such calls do not count either: once two requests have drained, ten of them leave room for two calls.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..5 {
        not_found(&app.get(&format!("{DEMO_HOOK}no.such.method")).await);
        bad_code(&app.get("/rest/1/wrongwebhookcode1234/server.time").await);
    }
    let (after, _) = burst(&app, 2).await;
    assert_eq!(after, [200, 200]);
    // Refused calls do not count: hammering a full bucket does not keep it full.
    fill(&app, 200).await;
    let (hammer, elapsed) = burst(&app, 30).await;
    let accepted = hammer.iter().filter(|s| **s == 200).count();
    assert!(accepted < most_admitted(0, 2.0, elapsed), "{hammer:?} in {elapsed:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(burst(&app, 2).await.0, [200, 200]);
    // /healthz is not a REST call.
    fill(&app, 200).await;
    assert_eq!(app.get("/healthz").await.status, 200);
}
