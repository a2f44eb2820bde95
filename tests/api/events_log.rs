//! Seeing and steering deliveries: `GET /_crmchat/events`, `POST /_crmchat/events/{id}/redeliver`,
//! `crmchat events list|redeliver` and the event metrics, against a real server and a local handler.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::events::{CONTROL_TOKEN, Sink, control, remove_operator, unused_addr};
use crate::helpers::{Resp, TestApp, assert_success, demo_with, spawn_app, spawn_app_with_args};
use crate::metrics::sample;

/// A handler URL where nothing listens: every attempt fails without an answer.
fn dead_handler() -> String {
    format!("http://{}/handler", unused_addr())
}

/// The demo portal with one retry per delivery, removals bound to `removals` and additions to `additions`,
/// served with the control API on.
async fn spawn_bound(removals: &str, additions: &str) -> TestApp {
    let fixture = demo_with(|f| {
        f["portal"]["events"] = json!({"retries": 1});
        f["apps"][0]["events"] = json!([
            {"event": "ONCRMCHATUSERDELETE", "handler": removals},
            {"event": "ONCRMCHATUSERADD", "handler": additions},
        ]);
    });
    spawn_app_with_args(fixture, &["--control-token", CONTROL_TOKEN]).await
}

async fn get(app: &TestApp, path: &str) -> Resp {
    app.send(app.client.get(app.url(path)).bearer_auth(CONTROL_TOKEN)).await
}

/// `GET /_crmchat/events{query}`, which must answer 200 with a list.
async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let resp = get(app, &format!("/_crmchat/events{query}")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.content_type(), Some("application/json"));
    resp.body.as_array().unwrap_or_else(|| panic!("a list of events: {}", resp.text)).clone()
}

/// Polls the whole log until `done` holds for it (at most `secs` seconds).
async fn events_until(app: &TestApp, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let listed = events(app, "").await;
        if done(&listed) {
            return listed;
        }
        assert!(Instant::now() < deadline, "the log never got there: {listed:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every delivery of every event is delivered or failed.
fn settled(listed: &[Value]) -> bool {
    listed.iter().all(|e| e["deliveries"].as_array().unwrap().iter().all(|d| d["state"] != "pending"))
}

fn statuses(delivery: &Value) -> Vec<Value> {
    delivery["attempts"].as_array().unwrap().iter().map(|a| a["status"].clone()).collect()
}

fn ids(listed: &[Value]) -> Vec<i64> {
    listed.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

async fn add_operator_back(app: &TestApp) -> Resp {
    app.call("imopenlines.crm.chat.user.add", json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12}))
        .await
}

#[tokio::test]
async fn events_log_shows_each_attempt_filters_and_redelivers() {
    let sink = Sink::start().await;
    sink.answer(&[500]);
    let dead = dead_handler();
    let app = spawn_bound(&sink.url, &dead).await;
    remove_operator(&app).await;
    assert_success(&add_operator_back(&app).await, json!(8773));
    // The removal: 500, then 200 a second later. The addition: no answer twice, and its one retry is spent.
    let listed = events_until(&app, 15, settled).await;
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let (added, removed) = (&listed[0], &listed[1]);
    assert!(removed["id"].as_i64() < added["id"].as_i64(), "newest first: {listed:#?}");

    assert_eq!(removed["event"], "ONCRMCHATUSERDELETE");
    assert_eq!(
        removed["data"],
        json!({"CHAT_ID": 8773, "USER_ID": 12, "CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY": 288, "USER_COUNT": 3})
    );
    let created = removed["created"].as_str().unwrap();
    assert!(created.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created).is_ok(), "{created}");
    let [delivery] = removed["deliveries"].as_array().unwrap().as_slice() else { panic!("{removed:#}") };
    assert_eq!(delivery["handler"], sink.url.as_str());
    assert_eq!(delivery["state"], "delivered");
    assert_eq!(statuses(delivery), [json!(500), json!(200)]);
    for attempt in delivery["attempts"].as_array().unwrap() {
        let mut keys: Vec<&str> = attempt.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["at", "duration_ms", "error", "status"], "{attempt}");
        assert!(attempt["at"].as_str().is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()));
        assert!(attempt["duration_ms"].as_i64().is_some_and(|ms| ms >= 0), "{attempt}");
        assert_eq!(attempt["error"], Value::Null);
    }
    assert!(!removed.to_string().contains("demo-app-token"), "no application token: {removed}");

    assert_eq!(added["event"], "ONCRMCHATUSERADD");
    let failed = &added["deliveries"][0];
    assert_eq!((&failed["state"], &failed["handler"]), (&json!("failed"), &json!(dead)));
    assert_eq!(statuses(failed), [Value::Null, Value::Null], "no answer: {failed:#}");
    assert!(failed["attempts"][0]["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed:#}");

    // Filters.
    let (removed_id, added_id) = (removed["id"].as_i64().unwrap(), added["id"].as_i64().unwrap());
    assert_eq!(ids(&events(&app, "?status=delivered").await), [removed_id]);
    assert_eq!(ids(&events(&app, "?status=failed").await), [added_id]);
    assert_eq!(ids(&events(&app, "?status=pending").await), Vec::<i64>::new());
    assert_eq!(ids(&events(&app, "?event=ONCRMCHATUSERDELETE").await), [removed_id]);
    assert_eq!(ids(&events(&app, "?event=ONAPPTEST").await), Vec::<i64>::new());
    assert_eq!(ids(&events(&app, "?limit=1").await), [added_id]);
    assert_eq!(ids(&events(&app, "?status=failed&event=ONCRMCHATUSERDELETE&limit=10").await), Vec::<i64>::new());

    // Bad filters are refused and change nothing.
    let before = events(&app, "").await;
    for query in ["status=done", "limit=0", "limit=1001", "limit=-3", "limit=ten", "state=failed"] {
        let resp = get(&app, &format!("/_crmchat/events?{query}")).await;
        assert_eq!(resp.status, 400, "{query}: {}", resp.text);
        assert_eq!(resp.body["error"], "invalid_filter", "{query}: {}", resp.text);
        assert!(resp.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.text);
    }
    assert_eq!(events(&app, "").await, before);

    // Redelivered: sent again, and shown as a third attempt.
    let resp = control(&app, &format!("/_crmchat/events/{removed_id}/redeliver"), json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body, json!({"ok": true, "deliveries": 1}));
    let received = sink.wait(3, 10).await;
    assert_eq!(received[2].field("event").as_deref(), Some("ONCRMCHATUSERDELETE"));
    assert_eq!(received[2].field("data[USER_ID]").as_deref(), Some("12"));
    let listed =
        events_until(&app, 10, |l| l.iter().any(|e| e["deliveries"][0]["attempts"].as_array().unwrap().len() == 3))
            .await;
    let again = &listed.iter().find(|e| e["id"] == removed_id).unwrap()["deliveries"][0];
    assert_eq!((&again["state"], statuses(again)), (&json!("delivered"), vec![json!(500), json!(200), json!(200)]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 3, "sent once more, not more: {:?}", sink.received());

    // Unknown events.
    for id in ["999999", "nope"] {
        let resp = control(&app, &format!("/_crmchat/events/{id}/redeliver"), json!({})).await;
        assert_eq!((resp.status, &resp.body["error"]), (404, &json!("event_not_found")), "{}", resp.text);
    }

    // The control token is required.
    let anonymous = app.send(app.client.get(app.url("/_crmchat/events"))).await;
    assert_eq!((anonymous.status, &anonymous.body), (401, &json!({"error": "unauthorized"})));
    let path = format!("/_crmchat/events/{removed_id}/redeliver");
    let anonymous = app.send(app.client.post(app.url(&path)).bearer_auth("wrong")).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 3, "a refused redeliver sends nothing");
}

#[tokio::test]
async fn events_log_is_off_with_the_control_api() {
    let app = spawn_app().await;
    let resp = app.get("/_crmchat/events").await;
    assert_eq!((resp.status, &resp.body["error"]), (404, &json!("not_found")), "{}", resp.text);
    let resp = app.send(app.client.post(app.url("/_crmchat/events/1/redeliver"))).await;
    assert_eq!(resp.status, 404, "{}", resp.text);
}

/// A delivery redelivered while it is being sent is not sent a second time alongside: once the attempt in
/// flight is answered, it is sent again.
#[tokio::test]
async fn events_log_a_delivery_in_flight_is_redelivered_after_its_attempt() {
    let sink = Sink::start().await;
    let app = spawn_bound(&sink.url, &sink.url).await;
    sink.hold();
    remove_operator(&app).await;
    sink.wait(1, 10).await;
    let listed = events(&app, "").await;
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(listed[0]["deliveries"][0]["state"], "pending", "{listed:#?}");
    let resp = control(&app, &format!("/_crmchat/events/{id}/redeliver"), json!({})).await;
    assert_eq!((resp.status, &resp.body["deliveries"]), (200, &json!(1)), "{}", resp.text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1, "not sent again while the first attempt is in flight");
    sink.release();
    sink.wait(2, 10).await;
    let listed = events_until(&app, 10, settled).await;
    let delivery = &listed[0]["deliveries"][0];
    assert_eq!((&delivery["state"], statuses(delivery)), (&json!("delivered"), vec![json!(200), json!(200)]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 2, "{:?}", sink.received());
}

#[tokio::test]
async fn events_log_cli_lists_and_redelivers_against_a_running_server() {
    let sink = Sink::start().await;
    let app = spawn_bound(&sink.url, &sink.url).await;
    remove_operator(&app).await;
    sink.wait(1, 10).await;
    let listed = events_until(&app, 10, settled).await;
    let id = listed[0]["id"].as_i64().unwrap();

    let table = app.cli_ok(&["events", "list"]);
    let line = table.lines().find(|l| l.contains("ONCRMCHATUSERDELETE")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.trim_start().starts_with(&id.to_string()), "{table}");
    assert!(line.contains("delivered") && line.contains("200") && line.contains(&sink.url), "{table}");
    let filtered = app.cli_ok(&["events", "list", "--status", "failed", "--event", "ONCRMCHATUSERDELETE"]);
    assert!(!filtered.contains("ONCRMCHATUSERDELETE"), "{filtered}");
    let json: Value = serde_json::from_str(&app.cli_ok(&["events", "list", "--json", "--limit", "5"])).unwrap();
    assert_eq!(json, json!(listed), "the JSON of the control API");
    for bad in [&["events", "list", "--status", "done"][..], &["events", "list", "--limit", "0"]] {
        let run = app.cli(bad);
        assert!(!run.ok, "{bad:?}: {}", run.stdout);
    }

    let out = app.cli_ok(&["events", "redeliver", &id.to_string()]);
    assert!(out.contains("1 deliveries"), "{out}");
    let received = sink.wait(2, 10).await;
    assert_eq!(received[1].field("event").as_deref(), Some("ONCRMCHATUSERDELETE"));
    let unknown = app.cli(&["events", "redeliver", "999999"]);
    assert!(!unknown.ok && unknown.stderr.contains("no event"), "{}", unknown.stderr);
    let listed = events_until(&app, 10, |l| l[0]["deliveries"][0]["attempts"].as_array().unwrap().len() == 2).await;
    assert_eq!(listed[0]["deliveries"][0]["state"], "delivered");
}

#[tokio::test]
async fn events_log_metrics_count_events_and_deliveries() {
    let sink = Sink::start().await;
    sink.answer(&[500]);
    let app = spawn_bound(&sink.url, &dead_handler()).await;
    remove_operator(&app).await;
    assert_success(&add_operator_back(&app).await, json!(8773));
    events_until(&app, 15, settled).await;

    // The pending gauges are refreshed about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let resp = get(&app, "/metrics").await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        if sample(&resp.text, "crmchat_event_deliveries_pending") == Some(0.0) {
            break resp.text;
        }
        assert!(Instant::now() < deadline, "{}", resp.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (series, value) in [
        (r#"crmchat_events_produced_total{event="ONCRMCHATUSERDELETE"}"#, 1.0),
        (r#"crmchat_events_produced_total{event="ONCRMCHATUSERADD"}"#, 1.0),
        (r#"crmchat_event_deliveries_total{outcome="delivered"}"#, 1.0),
        (r#"crmchat_event_deliveries_total{outcome="retry"}"#, 2.0),
        (r#"crmchat_event_deliveries_total{outcome="failed"}"#, 1.0),
        ("crmchat_event_oldest_pending_seconds", 0.0),
        ("crmchat_event_delivery_duration_seconds_count", 4.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}: {text}");
    }
    let sum = sample(&text, "crmchat_event_delivery_duration_seconds_sum").unwrap();
    assert!(sum > 0.0 && sum < 40.0, "{sum}");
    assert!(text.contains(r#"crmchat_event_delivery_duration_seconds_bucket{le="+Inf"} 4"#), "{text}");
    for name in ["crmchat_events_produced_total", "crmchat_event_deliveries_pending"] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name} is described: {text}");
    }

    // A backlog: the handler answers nothing while events wait, and the gauges say so.
    sink.hold();
    remove_operator(&app).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(&app, "/metrics").await.text;
        let pending = sample(&text, "crmchat_event_deliveries_pending");
        let oldest = sample(&text, "crmchat_event_oldest_pending_seconds").unwrap_or(0.0);
        if pending == Some(1.0) && oldest >= 1.0 {
            assert!(oldest < 60.0, "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sink.release();
}
