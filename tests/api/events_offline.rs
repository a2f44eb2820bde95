//! Offline events: recorded for `event_type=offline` bindings, polled with `event.offline.get`, `.clear`,
//! `.error` and `.list` (process ids, MESSAGE_ID de-duplication, parallel callers), and `ONOFFLINEEVENT`.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_error, assert_error_body, assert_null_argument, assert_success, demo_with, is_php_date, spawn_app,
    spawn_app_with,
};

/// The demo portal without the request limiter: the tests fire hundreds of events quickly.
async fn spawn_unlimited() -> TestApp {
    spawn_app_with(demo_with(|f| f["portal"]["plan"] = json!("unlimited"))).await
}

/// The connector the tests' `event.test` calls come through: an event an application causes through the
/// connector of its own offline binding is not recorded for it.
const OTHER_CONNECTOR: &str = "tester";

/// An application with the demo's scopes and an access token of `user` (1 is an administrator, 12 is not).
async fn token(app: &TestApp, client_id: &str, user: i64) -> String {
    let client = app.add_oauth_app(client_id, "imopenlines,im");
    app.issue_tokens(&client, user).await["access_token"].as_str().unwrap().to_string()
}

async fn bind_offline(app: &TestApp, token: &str, event: &str) {
    let resp = app.call_bearer(token, "event.bind", json!({"event": event, "event_type": "offline"})).await;
    assert_success(&resp, json!(true));
}

/// Fires `ONAPPTEST` with `data[QUERY][n]` = `n`, through another connector than the binding's.
async fn fire(app: &TestApp, token: &str, n: i64) {
    let resp = app.call_bearer(token, "event.test", json!({"n": n, "auth_connector": OTHER_CONNECTOR})).await;
    assert_success(&resp, json!(1));
}

async fn get(app: &TestApp, token: &str, params: Value) -> Value {
    let resp = app.call_bearer(token, "event.offline.get", params).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body["result"].clone()
}

fn ns(events: &Value) -> Vec<i64> {
    events.as_array().unwrap().iter().map(|e| e["EVENT_DATA"]["QUERY"]["n"].as_i64().unwrap()).collect()
}

fn ids(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["ID"].as_str().unwrap().to_string()).collect()
}

async fn list(app: &TestApp, token: &str, params: Value) -> Value {
    let resp = app.call_bearer(token, "event.offline.list", params).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
}

#[tokio::test]
async fn events_offline_process_id_life_cycle() {
    let app = spawn_app().await;
    let admin = token(&app, "local.offline.cycle", 1).await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    for n in 1..=3 {
        fire(&app, &admin, n).await;
    }

    // clear=0 reserves the batch under a new process id and answers it.
    let first = get(&app, &admin, json!({"clear": 0, "limit": 2})).await;
    let process_id = first["process_id"].as_str().unwrap().to_string();
    assert_eq!(process_id.len(), 32);
    assert_eq!(ns(&first["events"]), [1, 2]);
    let event = &first["events"][0];
    assert_eq!(event["EVENT_NAME"], "ONAPPTEST");
    assert_eq!(event["EVENT_ADDITIONAL"], json!({"user_id": 1}));
    assert!(is_php_date(event["TIMESTAMP_X"].as_str().unwrap()), "{event}");
    let message_id = event["MESSAGE_ID"].as_str().unwrap();
    assert!(message_id.len() == 32 && message_id.bytes().all(|b| b.is_ascii_hexdigit()), "{message_id}");
    let keys: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID"]);

    // Another caller gets the rest, not the reserved rows.
    let second = get(&app, &admin, json!({"clear": 0})).await;
    assert_eq!(ns(&second["events"]), [3]);
    assert_ne!(second["process_id"], first["process_id"]);
    // Nothing is free any more.
    assert_eq!(get(&app, &admin, json!({"clear": 0})).await["events"], json!([]));

    // The process id re-reads its batch (and answers the id even with the default clear=1, which deletes it).
    let again = get(&app, &admin, json!({"process_id": process_id, "clear": 0})).await;
    assert_eq!(ns(&again["events"]), [1, 2]);
    let first_ids = ids(&first["events"]);
    let clear = json!({"process_id": process_id, "id": [first_ids[0]]});
    assert_success(&app.call_bearer(&admin, "event.offline.clear", clear).await, json!(true));
    let rest = get(&app, &admin, json!({"process_id": process_id, "clear": 0})).await;
    assert_eq!(ns(&rest["events"]), [2]);
    // Clearing with another process id deletes nothing.
    let foreign = json!({"process_id": second["process_id"], "message_id": [rest["events"][0]["MESSAGE_ID"]]});
    assert_success(&app.call_bearer(&admin, "event.offline.clear", foreign).await, json!(true));
    let read = get(&app, &admin, json!({"process_id": process_id})).await;
    assert_eq!((read["process_id"].as_str(), ns(&read["events"])), (Some(process_id.as_str()), vec![2]));
    // That read (clear=1) deleted it.
    assert_eq!(get(&app, &admin, json!({"process_id": process_id})).await["events"], json!([]));
    let listed = list(&app, &admin, json!({})).await;
    assert_eq!(listed["total"], 1, "only the second caller's batch is left: {listed}");
}

#[tokio::test]
async fn events_offline_clear_1_deletes_what_it_answers() {
    let app = spawn_app().await;
    let admin = token(&app, "local.offline.clear", 1).await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    for n in 1..=3 {
        fire(&app, &admin, n).await;
    }
    let got = get(&app, &admin, json!({"order": {"ID": "DESC"}})).await;
    assert_eq!(got["process_id"], Value::Null);
    assert_eq!(ns(&got["events"]), [3, 2, 1]);
    assert_eq!(list(&app, &admin, json!({})).await["total"], 0);
    assert_eq!(get(&app, &admin, json!({})).await, json!({"process_id": null, "events": []}));
}

#[tokio::test]
async fn events_offline_are_deduplicated_by_message_id_and_skip_their_own_cause() {
    let app = spawn_app().await;
    let admin = token(&app, "local.offline.dedup", 1).await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    bind_offline(&app, &admin, "ONCRMCHATUSERDELETE").await;
    fire(&app, &admin, 7).await;
    let first = list(&app, &admin, json!({})).await["result"][0].clone();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The same event again refreshes the row instead of adding one.
    fire(&app, &admin, 7).await;
    let listed = list(&app, &admin, json!({})).await;
    assert_eq!(listed["total"], 1, "{listed}");
    let row = &listed["result"][0];
    assert_eq!((&row["ID"], &row["MESSAGE_ID"]), (&first["ID"], &first["MESSAGE_ID"]));
    assert!(row["TIMESTAMP_X"].as_str() > first["TIMESTAMP_X"].as_str(), "refreshed: {first} then {row}");

    // Caused by the application through its binding's own connector (none): not recorded for it.
    let own = app.call_bearer(&admin, "event.test", json!({"n": 8})).await;
    assert_success(&own, json!(1));
    assert_eq!(list(&app, &admin, json!({})).await["total"], 1);

    // A change of the portal (a webhook's removal) is recorded in the vendor's data shape.
    let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await;
    assert_success(&resp, json!(8773));
    let removal = list(&app, &admin, json!({"filter": {"EVENT_NAME": "ONCRMCHATUSERDELETE"}})).await;
    assert_eq!(removal["total"], 1, "{removal}");
    let data = &removal["result"][0]["EVENT_DATA"];
    assert_eq!(
        (&data["CHAT_ID"], &data["USER_ID"], &data["CRM_ENTITY_TYPE"]),
        (&json!(8773), &json!(12), &json!("DEAL"))
    );
}

#[tokio::test]
async fn events_offline_error_sends_rows_back_to_be_read_with_error_1() {
    let app = spawn_app().await;
    let admin = token(&app, "local.offline.error", 1).await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    fire(&app, &admin, 1).await;
    fire(&app, &admin, 2).await;
    let batch = get(&app, &admin, json!({"clear": 0})).await;
    let process_id = batch["process_id"].clone();
    let failed = batch["events"][1]["MESSAGE_ID"].clone();
    let marked = json!({"process_id": process_id, "message_id": [failed]});
    assert_success(&app.call_bearer(&admin, "event.offline.error", marked).await, json!(true));
    // The marked row is free again, but only for error=1 readers.
    assert_eq!(get(&app, &admin, json!({"clear": 0})).await["events"], json!([]));
    let errors = get(&app, &admin, json!({"error": 1})).await;
    assert_eq!(ns(&errors["events"]), [2]);
    let state = list(&app, &admin, json!({})).await;
    assert_eq!(state["total"], 1, "the row read with error=1 was cleared: {state}");
    assert_eq!((&state["result"][0]["ERROR"], &state["result"][0]["PROCESS_ID"]), (&json!("0"), &process_id));
}

#[tokio::test]
async fn events_offline_list_pages_filters_and_orders() {
    let app = spawn_unlimited().await;
    let admin = token(&app, "local.offline.list", 1).await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    for n in 1..=60 {
        fire(&app, &admin, n).await;
    }
    let page = list(&app, &admin, json!({})).await;
    assert_eq!((page["total"].as_i64(), page["next"].as_i64()), (Some(60), Some(50)));
    assert_eq!(ns(&page["result"]), (1..=50).collect::<Vec<_>>());
    let keys: Vec<&str> = page["result"][0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL", "MESSAGE_ID", "PROCESS_ID", "ERROR"]
    );
    let last = list(&app, &admin, json!({"start": 50})).await;
    assert_eq!((last["total"].as_i64(), last.get("next")), (Some(60), None));
    assert_eq!(ns(&last["result"]), (51..=60).collect::<Vec<_>>());
    // Filters with operator prefixes, and the order.
    let tenth = page["result"][9]["ID"].as_str().unwrap().to_string();
    let after = list(&app, &admin, json!({"filter": {">ID": tenth}, "order": {"ID": "DESC"}})).await;
    assert_eq!(after["total"], 50);
    assert_eq!(ns(&after["result"])[..3], [60, 59, 58]);
    let exact = list(&app, &admin, json!({"filter": {"=MESSAGE_ID": page["result"][4]["MESSAGE_ID"]}})).await;
    assert_eq!(ns(&exact["result"]), [5]);
    // A list view changes nothing: a batch is still there to take.
    let got = get(&app, &admin, json!({"limit": 100, "filter": {"<=ID": tenth}})).await;
    assert_eq!(ns(&got["events"]), (1..=10).collect::<Vec<_>>());
    assert_eq!(list(&app, &admin, json!({})).await["total"], 50);
}

#[tokio::test]
async fn events_offline_parallel_callers_get_disjoint_batches() {
    let app = std::sync::Arc::new(spawn_unlimited().await);
    let admin = token(&app, "local.offline.parallel", 1).await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    for n in 1..=200 {
        fire(&app, &admin, n).await;
    }
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (app, admin) = (app.clone(), admin.clone());
        callers.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            loop {
                let batch = get(&app, &admin, json!({"limit": 7})).await;
                if batch["events"].as_array().unwrap().is_empty() {
                    return taken;
                }
                taken.extend(ns(&batch["events"]));
            }
        }));
    }
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await.unwrap());
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "no event went to two callers");
    assert_eq!(distinct, (1..=200).collect::<HashSet<_>>(), "none was lost");
}

/// The deliveries a [`sink`] received, each as its decoded form pairs.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<Vec<(String, String)>>>>;

/// A local handler that records every delivery.
async fn sink() -> (String, Deliveries) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/handler", listener.local_addr().unwrap());
    let received: Deliveries = Default::default();
    let state = received.clone();
    let router = axum::Router::new().fallback(move |body: String| {
        let state = state.clone();
        async move {
            state.lock().unwrap().push(form_urlencoded::parse(body.as_bytes()).into_owned().collect());
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, received)
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn events_offline_onofflineevent_at_most_once_per_min_timeout() {
    let app = spawn_app().await;
    let admin = token(&app, "local.offline.notice", 1).await;
    let (url, received) = sink().await;
    bind_offline(&app, &admin, "ONAPPTEST").await;
    let notice = json!({"event": "ONOFFLINEEVENT", "handler": url, "options": {"minTimeout": 3600}});
    assert_success(&app.call_bearer(&admin, "event.bind", notice).await, json!(true));
    // ONAPPTEST goes to the same handler online too. Deliveries to a handler start in production order but
    // up to four are in flight at once, so they may arrive in any order: wait for the three tests and a
    // notice, then a little longer for a second notice, which must not come.
    let online = json!({"event": "ONAPPTEST", "handler": url});
    assert_success(&app.call_bearer(&admin, "event.bind", online).await, json!(true));
    for n in 1..=3 {
        fire(&app, &admin, n).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let events: Vec<Vec<(String, String)>> = received.lock().unwrap().clone();
        let tests = events.iter().filter(|p| field(p, "event") == Some("ONAPPTEST")).count();
        let notices = events.iter().filter(|p| field(p, "event") == Some("ONOFFLINEEVENT")).count();
        if (tests == 3 && notices >= 1) || std::time::Instant::now() > deadline {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            break received.lock().unwrap().clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let notices: Vec<&Vec<(String, String)>> =
        events.iter().filter(|p| field(p, "event") == Some("ONOFFLINEEVENT")).collect();
    assert_eq!(notices.len(), 1, "one notice within minTimeout: {events:?}");
    assert!(field(notices[0], "auth[refresh_token]").is_some_and(|t| !t.is_empty()), "{:?}", notices[0]);
    assert!(field(notices[0], "auth[access_token]").is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn events_offline_every_error_row() {
    let app = spawn_app().await;
    let admin = token(&app, "local.offline.errors", 1).await;
    let client = app.add_oauth_app("local.offline.operator", "imopenlines,im");
    let operator = app.issue_tokens(&client, 12).await["access_token"].as_str().unwrap().to_string();
    let methods = ["event.offline.get", "event.offline.clear", "event.offline.error", "event.offline.list"];
    for method in methods {
        let resp = app.call(method, json!({"process_id": "x", "message_id": []})).await;
        assert_error(&resp, 403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method");
        let resp = app.call_bearer(&operator, method, json!({"process_id": "x", "message_id": []})).await;
        assert_error(&resp, 403, "ACCESS_DENIED", "Access denied!");
    }
    let call = |method: &'static str, params: Value| app.call_bearer(&admin, method, params);
    let argument =
        |text: &str, name: &str| json!({"error": "ERROR_ARGUMENT", "error_description": text, "argument": name});
    let rest = |text: &str| json!({"error": "ERROR_ARGUMENT", "error_description": text});
    for limit in [json!(0), json!(-5), json!("none")] {
        let resp = call("event.offline.get", json!({"limit": limit})).await;
        assert_error_body(&resp, 400, &argument("Value must be positive integer", "LIMIT"));
    }
    for method in ["event.offline.get", "event.offline.list"] {
        let cases = [
            (json!({"filter": "ID"}), "The filter is not an array."),
            (json!({"filter": {"!ID": 1}}), "Filter operation not allowed: !"),
            (json!({"filter": {"USER_ID": 1}}), "Filter field not allowed: USER_ID"),
            (json!({"order": "ID"}), "The order is not an array."),
            (json!({"order": {"USER_ID": "ASC"}}), "Order field not allowed: USER_ID"),
            (json!({"order": {"ID": "UP"}}), "Order direction should be one of {ASC|DESC}"),
        ];
        for (params, text) in cases {
            assert_error_body(&call(method, params.clone()).await, 400, &rest(text));
        }
    }
    // PROCESS_ID and ERROR are for the list view only.
    let resp = call("event.offline.get", json!({"filter": {"ERROR": 1}})).await;
    assert_error_body(&resp, 400, &rest("Filter field not allowed: ERROR"));
    assert_eq!(call("event.offline.list", json!({"filter": {"ERROR": 1}})).await.status, 200);
    let resp = call("event.offline.get", json!({"filter": {"ID": [1, 2]}})).await;
    assert_error_body(&resp, 400, &argument("The value of an argument 'ID' has an invalid type", "ID"));

    assert_null_argument(&call("event.offline.clear", json!({})).await, "PROCESS_ID");
    let resp = call("event.offline.clear", json!({"process_id": "p", "message_id": "abc"})).await;
    assert_error_body(&resp, 400, &argument("Value must be array of MESSAGE_ID values", "message_id"));
    let resp = call("event.offline.clear", json!({"process_id": "p", "message_id": ["short"]})).await;
    assert_error_body(&resp, 400, &argument("Value must be array of MESSAGE_ID values", "messsage_id"));
    for id in [json!(5), json!([0]), json!(["x"])] {
        let resp = call("event.offline.clear", json!({"process_id": "p", "id": id})).await;
        assert_error_body(&resp, 400, &argument("Value must be array of integers", "id"));
    }
    assert_null_argument(&call("event.offline.error", json!({"message_id": []})).await, "PROCESS_ID");
    let resp = call("event.offline.error", json!({"process_id": "p"})).await;
    assert_error_body(&resp, 400, &argument("Value must be array of MESSAGE_ID values", "message_id"));
}
