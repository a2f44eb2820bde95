//! The operating-time limit (protocol.md, Limits), in process: the real router over a temporary SQLite store
//! with the demo portal, a [`ManualClock`], and an [`OperatingTime`] charged with injected durations.
//!
//! Keys are `{domain}|{credential}|{method}`, the credential being `webhook:{id}` or `app:{client_id}` (src/rest/mod.rs).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use crmchat::app::router;
use crmchat::config::Settings;
use crmchat::rest::limits::{ManualClock, OperatingTime};
use crmchat::server_state::{AppState, LIMITER_MAX_KEYS};
use crmchat::store::DynStore;
use serde_json::{Value, json};

use crate::helpers::{DEMO_HOOK, demo_code_grant, demo_store, send_in_process};

const GET_LAST_ID: &str = "imopenlines.crm.chat.getlastid";
const OPERATOR_HOOK: &str = "/rest/12/operatorhookcode12/";
const DEMO_DOMAIN: &str = "crmchat.localhost";
const BLOCKED: &str = "Method is blocked due to operation time limit.";

struct InProcess {
    app: axum::Router,
    clock: Arc<ManualClock>,
    operating: Arc<OperatingTime>,
    store: DynStore,
    /// A whole minute (unix seconds); the clock starts 5 s after it.
    t0: u64,
    /// `webhook:{id}` of the demo webhook (user 1) and of the operator's (user 12).
    demo: String,
    operator: String,
    _dir: tempfile::TempDir,
}

async fn in_process() -> InProcess {
    let (dir, store) = demo_store("crmchat-optime-").await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let t0 = now - now % 60;
    let clock = Arc::new(ManualClock::at_unix(t0 + 5));
    let operating = Arc::new(OperatingTime::new(clock.clone(), LIMITER_MAX_KEYS));
    let mut state = AppState::new(store.clone(), Settings::default(), clock.clone());
    state.operating = operating.clone();
    let hooks = store.list_webhooks().await.unwrap();
    let id_of = |user: i64| format!("webhook:{}", hooks.iter().find(|h| h.user_id == user).unwrap().id);
    InProcess {
        app: router(Arc::new(state)),
        demo: id_of(1),
        operator: id_of(12),
        clock,
        operating,
        store,
        t0,
        _dir: dir,
    }
}

/// The demo portal's operating-time window of `credential` and `method`, keyed as the server keys it.
fn window(credential: &str, method: &str) -> String {
    crmchat::rest::limits::operating_key(DEMO_DOMAIN, credential, method)
}

/// An answer: status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl InProcess {
    async fn send(&self, request: Request<Body>) -> Answer {
        let (status, body) = send_in_process(&self.app, request).await;
        Answer { status, body }
    }

    /// POSTs `params` as JSON to `{prefix}{method}.json`.
    async fn call(&self, prefix: &str, method: &str, params: Value) -> Answer {
        let request = Request::post(format!("{prefix}{method}.json"))
            .header("content-type", "application/json")
            .body(Body::from(params.to_string()))
            .unwrap();
        self.send(request).await
    }

    async fn last_id(&self, prefix: &str) -> Answer {
        self.call(prefix, GET_LAST_ID, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288})).await
    }

    /// Charges `secs` of execution time to `{credential}|{method}` at the clock's current time.
    fn charge(&self, credential: &str, method: &str, secs: f64) {
        self.operating.record(&window(credential, method), Duration::from_secs_f64(secs));
    }

    fn set_clock(&self, unix_secs: u64) {
        self.clock.set(UNIX_EPOCH + Duration::from_secs(unix_secs));
    }
}

fn assert_ok(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.get("result").is_some() && answer.body["time"].is_object(), "{}", answer.body);
}

fn assert_blocked(answer: &Answer) {
    assert_eq!(
        (answer.status, &answer.body),
        (429, &json!({"error": "OPERATION_TIME_LIMIT", "error_description": BLOCKED})),
        "{}",
        answer.body
    );
}

/// `time.operating` (seconds) and `time.operating_reset_at` (an integer) of a success.
fn operating(time: &Value) -> (f64, i64) {
    let reset_at = &time["operating_reset_at"];
    assert!(reset_at.is_i64(), "operating_reset_at is an integer: {time}");
    (time["operating"].as_f64().unwrap_or_else(|| panic!("operating is a number: {time}")), reset_at.as_i64().unwrap())
}

/// `used` is `charged` plus what the real calls themselves took when one took 0.1 s or more (never here, unless
/// the machine is very busy).
fn about(used: f64, charged: f64) -> bool {
    used > charged - 1e-6 && used < charged + 0.5
}

#[tokio::test]
async fn blocked_past_480_seconds_until_the_window_slides() {
    let s = in_process().await;
    let t0 = s.t0;
    // 200 s in minute M, 200 s in M+1, 80 s in M+2: exactly 480 s, not past the limit.
    s.charge(&s.demo, GET_LAST_ID, 200.0);
    s.clock.advance(Duration::from_secs(60));
    s.charge(&s.demo, GET_LAST_ID, 200.0);
    s.clock.advance(Duration::from_secs(60));
    s.charge(&s.demo, GET_LAST_ID, 80.0);
    let answer = s.last_id(DEMO_HOOK).await;
    assert_ok(&answer);
    assert_eq!(answer.body["result"], 8773);
    let (used, reset_at) = operating(&answer.body["time"]);
    assert!(about(used, 480.0), "time.operating reflects the charge: {}", answer.body);
    assert_eq!(reset_at, t0 as i64 + 600, "when the oldest minute (M) leaves the window");
    // Past 480 s: refused with 429, whatever the parameters.
    s.charge(&s.demo, GET_LAST_ID, 0.5);
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    assert_blocked(&s.call(DEMO_HOOK, "imopenlines.crm.chat.getLastId", json!({})).await);
    // Another method through the same webhook, and the same method through another webhook, still work.
    let answer = s.call(DEMO_HOOK, "im.chat.user.list", json!({"CHAT_ID": 8773})).await;
    assert_ok(&answer);
    assert!(about(operating(&answer.body["time"]).0, 0.0), "{}", answer.body);
    let answer = s.last_id(OPERATOR_HOOK).await;
    assert_ok(&answer);
    assert!(about(operating(&answer.body["time"]).0, 0.0), "{}", answer.body);
    // Just before minute M expires: still blocked. Then its 200 s leave the window: 280.5 s, accepted.
    s.set_clock(t0 + 599);
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    s.set_clock(t0 + 600);
    let answer = s.last_id(DEMO_HOOK).await;
    assert_ok(&answer);
    let (used, reset_at) = operating(&answer.body["time"]);
    assert!(about(used, 280.5), "{}", answer.body);
    assert_eq!(reset_at, t0 as i64 + 660);
    // Ten minutes after the last charge nothing is left.
    s.set_clock(t0 + 120 + 600);
    let answer = s.last_id(DEMO_HOOK).await;
    let (used, reset_at) = operating(&answer.body["time"]);
    assert!(about(used, 0.0), "{}", answer.body);
    assert_eq!(reset_at, t0 as i64 + 720 + 600, "with nothing charged: now + 600");
}

#[tokio::test]
async fn accepted_again_ten_minutes_after_a_single_big_charge() {
    let s = in_process().await;
    s.charge(&s.demo, GET_LAST_ID, 481.0);
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    s.clock.advance(Duration::from_secs(5 * 60));
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    s.clock.advance(Duration::from_secs(5 * 60));
    let answer = s.last_id(DEMO_HOOK).await;
    assert_ok(&answer);
    assert!(about(operating(&answer.body["time"]).0, 0.0), "{}", answer.body);
}

#[tokio::test]
async fn calls_under_a_tenth_of_a_second_are_not_counted() {
    let s = in_process().await;
    for _ in 0..10_000 {
        s.charge(&s.demo, GET_LAST_ID, 0.099);
    }
    let answer = s.last_id(DEMO_HOOK).await;
    assert_ok(&answer);
    assert!(about(operating(&answer.body["time"]).0, 0.0), "990 s of short calls count nothing: {}", answer.body);
    s.charge(&s.demo, GET_LAST_ID, 0.1);
    let answer = s.last_id(DEMO_HOOK).await;
    assert!(about(operating(&answer.body["time"]).0, 0.1), "{}", answer.body);
    // A fractional total; `operating_reset_at` stays an integer.
    s.charge(&s.demo, GET_LAST_ID, 123.456);
    let answer = s.last_id(DEMO_HOOK).await;
    let (used, reset_at) = operating(&answer.body["time"]);
    assert!(about(used, 123.556), "{}", answer.body);
    assert_eq!(reset_at, s.t0 as i64 + 600);
    // Real calls here are far under 0.1 s: they add nothing.
    for _ in 0..5 {
        assert_ok(&s.last_id(DEMO_HOOK).await);
    }
    let answer = s.last_id(DEMO_HOOK).await;
    assert!(about(operating(&answer.body["time"]).0, 123.556), "{}", answer.body);
}

#[tokio::test]
async fn the_outer_batch_is_not_charged_its_commands_are() {
    let s = in_process().await;
    // Even a `batch` key far past the limit does not block batches: the outer call is not accounted.
    s.charge(&s.demo, "batch", 1000.0);
    s.charge(&s.demo, GET_LAST_ID, 481.0);
    s.charge(&s.demo, "server.time", 100.0);
    let cmd = json!({
        "last": "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
        "time": "server.time",
        "me": "profile",
    });
    let answer = s.call(DEMO_HOOK, "batch", json!({ "cmd": cmd })).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = &answer.body["result"];
    assert_eq!(
        result["result_error"],
        json!({"last": {"error": "OPERATION_TIME_LIMIT", "error_description": BLOCKED}}),
        "{result}"
    );
    assert!(result["result"]["time"].is_string() && result["result"]["me"].is_object(), "{result}");
    let (used, reset_at) = operating(&result["result_time"]["time"]);
    assert!(about(used, 100.0), "a command's time shows its own method's charge: {result}");
    assert_eq!(reset_at, s.t0 as i64 + 600);
    assert!(about(operating(&result["result_time"]["me"]).0, 0.0), "{result}");
    assert_eq!(operating(&answer.body["time"]).0, 0.0, "the outer batch shows no charge: {}", answer.body);
    assert_eq!(s.operating.status(&window(&s.demo, "batch")).operating, 1000.0, "nothing charged to `batch`");
    // With `halt`, the blocked first command stops the batch.
    let answer = s.call(DEMO_HOOK, "batch", json!({"halt": 1, "cmd": cmd})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = &answer.body["result"];
    assert_eq!(result["result_error"]["last"]["error"], "OPERATION_TIME_LIMIT", "{result}");
    assert_eq!((&result["result"], &result["result_time"]), (&json!([]), &json!([])), "{result}");
    // The operator's webhook is not blocked, in a batch either.
    let answer = s.call(OPERATOR_HOOK, "batch", json!({ "cmd": cmd })).await;
    assert_eq!(answer.body["result"]["result"]["last"], 8773, "{}", answer.body);
    assert_eq!(answer.body["result"]["result_error"], json!([]), "{}", answer.body);
}

#[tokio::test]
async fn keys_are_per_auth_type_credential_and_method() {
    let s = in_process().await;
    // An OAuth token for user 1 of the demo application, issued through the real token endpoint.
    let code = "inprocessauthcode0123456789";
    let expires_ms = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64) + 30_000;
    let answer = s.send(demo_code_grant(&s.store, code, expires_ms).await).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.body["access_token"].as_str().unwrap().to_string();
    let oauth_last_id = || {
        let request = Request::post(format!("/rest/{GET_LAST_ID}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(r#"{"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288}"#))
            .unwrap();
        s.send(request)
    };
    assert_ok(&oauth_last_id().await);
    // The application blocked: its calls are refused, the same user's webhook is not.
    s.charge("app:local.demo.app", GET_LAST_ID, 481.0);
    assert_blocked(&oauth_last_id().await);
    assert_ok(&s.last_id(DEMO_HOOK).await);
    // The demo webhook blocked too; the operator's webhook is another credential.
    s.charge(&s.demo, GET_LAST_ID, 481.0);
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    assert_ok(&s.last_id(OPERATOR_HOOK).await);
    s.charge(&s.operator, "profile", 481.0);
    assert_ok(&s.last_id(OPERATOR_HOOK).await);
    assert_blocked(&s.call(OPERATOR_HOOK, "profile", json!({})).await);
}

#[tokio::test]
async fn processing_order_is_404_401_503_429() {
    let s = in_process().await;
    s.charge(&s.demo, GET_LAST_ID, 481.0);
    // Method lookup and authentication come first; they do not count against the bucket.
    for _ in 0..10 {
        let answer = s.call(DEMO_HOOK, "no.such.method", json!({})).await;
        assert_eq!((answer.status, answer.body["error"].as_str()), (404, Some("ERROR_METHOD_NOT_FOUND")));
        let answer = s.last_id("/rest/1/wrongwebhookcode1234/").await;
        assert_eq!((answer.status, answer.body["error"].as_str()), (401, Some("INVALID_CREDENTIALS")));
    }
    // The clock stands still, so the bucket (50 on `standard`) never drains: 50 calls pass it and are refused
    // by the operating-time limit, the 51st is refused by the bucket.
    for i in 0..50 {
        let answer = s.last_id(DEMO_HOOK).await;
        assert_eq!(answer.status, 429, "call {i}: {}", answer.body);
    }
    let answer = s.last_id(DEMO_HOOK).await;
    assert_eq!(
        (answer.status, &answer.body),
        (503, &json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}))
    );
    // One second drains two requests.
    s.clock.advance(Duration::from_secs(1));
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    assert_blocked(&s.last_id(DEMO_HOOK).await);
    assert_eq!(s.last_id(DEMO_HOOK).await.status, 503);
    // Ten minutes later both limits have let go.
    s.clock.advance(Duration::from_secs(600));
    assert_ok(&s.last_id(DEMO_HOOK).await);
}
