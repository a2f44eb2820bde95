//! The request journal, fault rules, the clock and the error catalogue of the control API
//! (`/_crmchat/requests`, `/faults`, `/clock`, `/errors`), over HTTP against a real server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "journal-control-token-0123456789";

async fn spawn_controlled(fixture: Value, extra: &[&str]) -> TestApp {
    let mut args = vec!["--control-token", TOKEN];
    args.extend_from_slice(extra);
    spawn_app_with_args(fixture, &args).await
}

async fn ctl(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Resp {
    let mut request = app.client.request(method.parse().unwrap(), app.url(path)).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    app.send(request).await
}

async fn journal(app: &TestApp, query: &str) -> Value {
    let resp = ctl(app, "GET", &format!("/_crmchat/requests{query}"), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.content_type(), Some("application/json"));
    resp.body
}

fn entries(answer: &Value) -> &Vec<Value> {
    answer["requests"].as_array().unwrap_or_else(|| panic!("a list of requests: {answer}"))
}

async fn server_time(app: &TestApp) -> Resp {
    app.call("server.time", json!({})).await
}

#[tokio::test]
async fn journal_records_every_call_in_the_specs_shape() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    assert_eq!(server_time(&app).await.status, 200);
    let resp = app.get(&format!("{}profile.xml?x=1", app.hook)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(app.call("no.such.method", json!({"A": 1})).await.status, 404);
    assert_eq!(app.call_as("/rest/1/wrongwebhookcode99/", "server.time", json!({})).await.status, 401);
    assert_eq!(app.post_raw("/rest/profile", None, Vec::new()).await.status, 401);
    let removed = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await;
    assert_removed(&removed, 8773);

    let answer = journal(&app, "").await;
    assert_eq!(answer["total"], 6, "{answer}");
    let list = entries(&answer);
    let ids: Vec<u64> = list.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "newest last: {ids:?}");
    let mut keys: Vec<&str> = list[0].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected = [
        "at",
        "auth",
        "batch_id",
        "duration_ms",
        "error",
        "http_method",
        "id",
        "method",
        "params",
        "result",
        "status",
        "transport",
    ];
    assert_eq!(keys, expected, "{}", list[0]);

    let time = &list[0];
    assert_eq!(time["method"], "server.time");
    assert_eq!((&time["transport"], &time["http_method"]), (&json!("json"), &json!("POST")));
    assert_eq!((&time["status"], &time["error"], &time["batch_id"]), (&json!(200), &Value::Null, &Value::Null));
    assert_eq!(time["result"], server_time_result(&time["result"]), "{time}");
    let at = time["at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z') && at.len() == 24, "{at}");
    assert!(time["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{time}");
    let webhook_id = time["auth"]["webhook_id"].as_i64().expect("the demo webhook's id");
    assert_eq!(time["auth"], json!({"type": "webhook", "user_id": 1, "webhook_id": webhook_id}));

    let xml = &list[1];
    assert_eq!(
        (&xml["method"], &xml["transport"], &xml["http_method"]),
        (&json!("profile"), &json!("xml"), &json!("GET"))
    );
    assert_eq!(xml["params"], json!({"x": "1"}));
    assert_eq!(xml["result"]["ID"], "1", "{xml}");

    let missing = &list[2];
    assert_eq!((&missing["method"], &missing["status"]), (&json!("no.such.method"), &json!(404)));
    assert_eq!(missing["error"], "ERROR_METHOD_NOT_FOUND");
    assert_eq!(missing["result"], Value::Null);

    let refused = &list[3];
    assert_eq!((&refused["status"], &refused["error"]), (&json!(401), &json!("INVALID_CREDENTIALS")));
    assert_eq!(refused["auth"], json!({"type": "webhook", "user_id": 1, "webhook_id": null}));

    let anonymous = &list[4];
    assert_eq!(anonymous["auth"], json!({"type": "none", "user_id": null}));
    assert_eq!(anonymous["error"], "NO_AUTH_FOUND");

    let delete = &list[5];
    assert_eq!(delete["method"], METHOD);
    assert_eq!(delete["params"], json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12}));
    assert_eq!(delete["result"], 8773);

    // DELETE clears it; ids keep growing.
    let cleared = ctl(&app, "DELETE", "/_crmchat/requests", None).await;
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    assert_eq!(journal(&app, "").await, json!({"total": 0, "requests": []}));
    server_time(&app).await;
    let after = journal(&app, "").await;
    assert!(entries(&after)[0]["id"].as_u64().unwrap() > *ids.last().unwrap(), "{after}");
}

/// `server.time`'s result is a PHP `date('c')` string.
fn server_time_result(result: &Value) -> Value {
    assert!(result.as_str().is_some_and(is_php_date), "{result}");
    result.clone()
}

#[tokio::test]
async fn journal_batch_commands_point_at_their_batch() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let cmd = json!({
        "time": "server.time",
        "last": "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
        "get": "imopenlines.crm.chat.get?CRM_ENTITY_TYPE=deal&CRM_ENTITY=$result[last]",
        "nope": "no.such.method?a=1",
    });
    let resp = app.call("batch", json!({"cmd": cmd})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let list = entries(&journal(&app, "").await).clone();
    assert_eq!(list.len(), 5, "{list:?}");
    let batch = &list[0];
    assert_eq!((&batch["method"], &batch["batch_id"], &batch["status"]), (&json!("batch"), &Value::Null, &json!(200)));
    assert_eq!(batch["params"]["cmd"], cmd);
    let batch_id = batch["id"].clone();
    let methods: Vec<&str> = list[1..].iter().map(|e| e["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        ["server.time", "imopenlines.crm.chat.getlastid", "imopenlines.crm.chat.get", "no.such.method"]
    );
    for command in &list[1..] {
        assert_eq!(command["batch_id"], batch_id, "{command}");
        assert_eq!(command["auth"], batch["auth"], "{command}");
        assert_eq!(command["transport"], "json");
    }
    assert_eq!(list[2]["result"], 8773);
    // The journal shows what the method got: the reference resolved.
    assert_eq!(list[3]["params"], json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 8773}), "{}", list[3]);
    assert_eq!((&list[4]["status"], &list[4]["error"]), (&json!(404), &json!("ERROR_METHOD_NOT_FOUND")));
    assert_eq!(list[4]["params"], json!({"a": "1"}));
    // Filtering by batch command works like for any entry.
    let only = journal(&app, "?method=imopenlines.crm.chat.getLastId").await;
    assert_eq!(only["total"], 1);
}

#[tokio::test]
async fn journal_filters_and_since_id_polling() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    for _ in 0..3 {
        server_time(&app).await;
    }
    app.call("no.such.method", json!({})).await;
    app.call_as("/rest/12/operatorhookcode12/", "profile", json!({})).await;
    let all = journal(&app, "").await;
    assert_eq!(all["total"], 5, "{all}");
    let first = entries(&all)[0]["id"].as_u64().unwrap();
    assert_eq!(journal(&app, "?method=SERVER.TIME").await["total"], 3);
    assert_eq!(journal(&app, "?status=404").await["total"], 1);
    assert_eq!(journal(&app, "?error=ERROR_METHOD_NOT_FOUND").await["total"], 1);
    let user12 = journal(&app, "?user_id=12").await;
    assert_eq!((user12["total"].as_u64(), entries(&user12)[0]["method"].as_str()), (Some(1), Some("profile")));
    let limited = journal(&app, "?limit=2").await;
    assert_eq!(limited["total"], 5, "total counts every match");
    let ids: Vec<u64> = entries(&limited).iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [first + 3, first + 4], "without since_id, the newest");
    let polled = journal(&app, &format!("?since_id={}&limit=2", first + 1)).await;
    let ids: Vec<u64> = entries(&polled).iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!((polled["total"].as_u64(), ids), (Some(3), vec![first + 2, first + 3]), "with it, the next ones");
    assert_eq!(journal(&app, &format!("?since_id={}", first + 4)).await["total"], 0);
    for bad in ["?status=abc", "?limit=-1", "?nonsense=1", "?since_id=x"] {
        let resp = ctl(&app, "GET", &format!("/_crmchat/requests{bad}"), None).await;
        assert_eq!((resp.status, &resp.body["error"]), (400, &json!("invalid_filter")), "{bad}: {}", resp.text);
    }
}

#[tokio::test]
async fn journal_is_bounded_and_can_be_off() {
    let app = spawn_controlled(demo_fixture(), &["--journal-size", "5"]).await;
    for _ in 0..12 {
        server_time(&app).await;
    }
    let answer = journal(&app, "?limit=1000").await;
    assert_eq!(answer["total"], 5, "{answer}");
    let ids: Vec<u64> = entries(&answer).iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [8, 9, 10, 11, 12], "the newest five");

    let off = spawn_controlled(demo_fixture(), &["--journal-size", "0"]).await;
    server_time(&off).await;
    assert_eq!(journal(&off, "").await, json!({"total": 0, "requests": []}));
}

#[tokio::test]
async fn journal_params_and_results_are_cut_at_4_kib() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let long = "x".repeat(10_000);
    app.call("server.time", json!({"TEXT": long})).await;
    let entry = entries(&journal(&app, "").await)[0].clone();
    let params = entry["params"].as_str().expect("too long: kept as the start of its JSON text");
    assert!(params.len() <= 4096 && params.starts_with(r#"{"TEXT":"xxx"#), "{}", params.len());
}

#[tokio::test]
async fn journal_log_and_errors_never_hold_secrets() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let client = app.add_oauth_app("local.journal.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 1).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let fake = "fakeaccesstoken0123456789abcdef";
    let mut answers = Vec::new();
    // The token in the header, in `auth`, in `access_token`, as a JSON `auth` object; wrong ones too.
    let with_bearer = app.client.post(app.url("/rest/profile")).bearer_auth(&access);
    answers.push(app.send(with_bearer).await);
    answers.push(app.post_form("/rest/profile", &format!("auth={access}")).await);
    answers.push(app.post_form("/rest/profile", &format!("access_token={access}&NOTE=token+is+{access}")).await);
    answers.push(app.post_form("/rest/profile", &format!("auth={fake}")).await);
    let nested = json!({"auth": {"access_token": access}, "client_secret": client.secret, "refresh_token": refresh});
    answers.push(app.post_raw("/rest/profile", Some("application/json"), nested.to_string().into_bytes()).await);
    // The webhook code in the path and in a parameter; a batch whose commands carry a token.
    let hook_url = format!("https://example.test{}", app.hook);
    answers.push(app.call("server.time", json!({"HANDLER": hook_url, "secret_key": "s3cr3tv4lue"})).await);
    let cmd = json!({"p": format!("profile?auth={fake}"), "q": format!("server.time?auth%5Baccess_token%5D={access}")});
    answers.push(app.call("batch", json!({"cmd": cmd})).await);
    answers.push(app.call_as("/rest/1/wrongcodeAAAA1234/", "profile", json!({})).await);
    answers.push(app.call("no.such.method", json!({"auth": access})).await);
    answers.push(app.get(&format!("{}no.such.method?access_token={access}", app.hook)).await);

    let journal_text = ctl(&app, "GET", "/_crmchat/requests?limit=1000", None).await.text;
    assert!(journal_text.contains("***"), "{journal_text}");
    let log = app.log();
    let secrets = [
        access.as_str(),
        refresh.as_str(),
        fake,
        client.secret.as_str(),
        DEMO_CODE,
        "wrongcodeAAAA1234",
        "s3cr3tv4lue",
    ];
    for secret in secrets {
        assert!(!journal_text.contains(secret), "{secret} in the journal: {journal_text}");
        assert!(!log.contains(secret), "{secret} in the log: {log}");
        for answer in &answers {
            assert!(!answer.text.contains(secret), "{secret} in an answer: {}", answer.text);
        }
    }
    // The rest of the parameters stay as sent.
    let journal: Value = serde_json::from_str(&journal_text).unwrap();
    let with_handler = entries(&journal).iter().find(|e| e["params"]["HANDLER"].is_string()).unwrap();
    assert_eq!(with_handler["params"]["HANDLER"], "https://example.test/rest/1/***/");
    assert_eq!(with_handler["params"]["secret_key"], "***");
    let oauth = &entries(&journal)[0];
    assert_eq!(oauth["auth"], json!({"type": "oauth", "user_id": 1, "client_id": "local.journal.app"}));
}

#[tokio::test]
async fn journal_successes_stay_out_of_the_log_refusals_go_in() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    server_time(&app).await;
    app.get("/rest/a/b/c/d/e").await;
    app.call("no.such.method", json!({})).await;
    let log = app.log();
    assert!(!log.contains("server.time"), "a success was logged: {log}");
    assert!(log.contains("request to an unknown path refused"), "{log}");
    assert!(log.contains("no.such.method"), "{log}");
}

// ---- the clock ----

#[tokio::test]
async fn clock_moves_forward_only_and_everything_reads_it() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let clock = ctl(&app, "GET", "/_crmchat/clock", None).await;
    assert_eq!((clock.status, &clock.body["offset_s"]), (200, &json!(0.0)), "{}", clock.text);
    let real_now = chrono::Utc::now();
    let now = chrono::DateTime::parse_from_rfc3339(clock.body["now"].as_str().unwrap()).unwrap();
    assert!((now.timestamp() - real_now.timestamp()).abs() < 5, "{}", clock.text);

    let moved = ctl(&app, "POST", "/_crmchat/clock", Some(json!({"advance_s": 86_400}))).await;
    assert_eq!((moved.status, &moved.body["offset_s"]), (200, &json!(86_400.0)), "{}", moved.text);
    let resp = server_time(&app).await;
    let start = resp.body["time"]["start"].as_f64().unwrap();
    assert!((start - (real_now.timestamp() as f64 + 86_400.0)).abs() < 5.0, "{}", resp.text);
    let shown = chrono::DateTime::parse_from_rfc3339(resp.body["result"].as_str().unwrap()).unwrap();
    assert!((shown.timestamp() - (real_now.timestamp() + 86_400)).abs() < 5, "{}", resp.text);
    assert!(resp.body["time"]["duration"].as_f64().unwrap() < 1.0, "{}", resp.text);
    let at = entries(&journal(&app, "").await)[0]["at"].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
    assert!((at.timestamp() - (real_now.timestamp() + 86_400)).abs() < 5, "the journal's `at` too");

    let refused = ctl(&app, "POST", "/_crmchat/clock", Some(json!({"set": "2001-01-01T00:00:00Z"}))).await;
    assert_eq!((refused.status, &refused.body["error"]), (400, &json!("clock_backwards")), "{}", refused.text);
    let refused = ctl(&app, "POST", "/_crmchat/clock", Some(json!({"advance_s": -1}))).await;
    assert_eq!((refused.status, &refused.body["error"]), (400, &json!("clock_backwards")), "{}", refused.text);
    let set = ctl(&app, "POST", "/_crmchat/clock", Some(json!({"set": "2040-01-01T00:00:00Z"}))).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert!(set.body["now"].as_str().unwrap().starts_with("2040-01-01T00:00:0"), "{}", set.text);
    assert_eq!(server_time(&app).await.body["result"].as_str().unwrap()[..10], *"2040-01-01");
    for bad in [json!({}), json!({"advance_s": 1, "set": "2041-01-01T00:00:00Z"}), json!({"set": "tomorrow"})] {
        let resp = ctl(&app, "POST", "/_crmchat/clock", Some(bad.clone())).await;
        assert_eq!((resp.status, &resp.body["error"]), (400, &json!("invalid_clock")), "{bad}: {}", resp.text);
    }
    let back = ctl(&app, "DELETE", "/_crmchat/clock", None).await;
    assert_eq!((back.status, &back.body["offset_s"]), (200, &json!(0.0)), "{}", back.text);
}

#[tokio::test]
async fn clock_expires_access_tokens() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let client = app.add_oauth_app("local.clock.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 1).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let profile = || app.send(app.client.post(app.url("/rest/profile")).bearer_auth(&access));
    assert_eq!(profile().await.status, 200);
    ctl(&app, "POST", "/_crmchat/clock", Some(json!({"advance_s": 3601}))).await;
    assert_error(&profile().await, 401, "expired_token", "The access token provided has expired");
    ctl(&app, "DELETE", "/_crmchat/clock", None).await;
    assert_eq!(profile().await.status, 200, "back to real time, the token is valid again");
}

// ---- faults ----

async fn add_fault(app: &TestApp, rule: Value) -> u64 {
    let resp = ctl(app, "POST", "/_crmchat/faults", Some(rule)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body["id"].as_u64().unwrap_or_else(|| panic!("an id: {}", resp.text))
}

#[tokio::test]
async fn fault_envelopes_are_the_real_ones_byte_for_byte() {
    let app = spawn_controlled(demo_with(|f| f["portal"]["plan"] = json!("standard")), &[]).await;
    // A real QUERY_LIMIT_EXCEEDED: the standard plan's bucket holds 50.
    let mut real = None;
    for _ in 0..80 {
        let resp = server_time(&app).await;
        if resp.status == 503 {
            real = Some(resp);
            break;
        }
    }
    let real = real.expect("the bucket overflowed");
    // A reset empties the bucket (and the journal).
    assert_eq!(ctl(&app, "POST", "/_crmchat/reset", None).await.status, 200);
    assert_eq!(server_time(&app).await.status, 200);
    let id = add_fault(&app, json!({"method": "server.time", "error": "QUERY_LIMIT_EXCEEDED"})).await;
    let faulted = server_time(&app).await;
    assert_eq!((faulted.status, &faulted.text), (real.status, &real.text));
    for header in
        ["content-type", "access-control-allow-origin", "access-control-allow-headers", "x-content-type-options"]
    {
        assert_eq!(faulted.header(header), real.header(header), "{header}");
    }
    let entry = entries(&journal(&app, "").await).last().unwrap().clone();
    assert_eq!(
        (&entry["fault"], &entry["status"], &entry["error"]),
        (&json!(id), &json!(503), &json!("QUERY_LIMIT_EXCEEDED"))
    );

    // Other codes, as crmchat sends them for real; XML answers too.
    ctl(&app, "DELETE", "/_crmchat/faults", None).await;
    add_fault(&app, json!({"method": "profile", "error": "expired_token"})).await;
    assert_error(&app.call("profile", json!({})).await, 401, "expired_token", "The access token provided has expired");
    add_fault(&app, json!({"method": "app.info", "error": "ACCESS_DENIED"})).await;
    assert_error(&app.call("app.info", json!({})).await, 403, "ACCESS_DENIED", "Access denied!");
    let xml = app.get(&format!("{}app.info.xml", app.hook)).await;
    assert_eq!(xml.status, 403);
    assert!(xml.text.contains("<error>ACCESS_DENIED</error>"), "{}", xml.text);
}

#[tokio::test]
async fn fault_changes_nothing_and_counts_down() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let delete = || app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12}));
    add_fault(&app, json!({"method": METHOD, "error": "INTERNAL_SERVER_ERROR", "times": 2})).await;
    for _ in 0..2 {
        assert_error(&delete().await, 500, "INTERNAL_SERVER_ERROR", "Internal server error");
    }
    assert!(members(&app.export(), 8773).contains(&12), "a faulted call changed nothing");
    assert_eq!(ctl(&app, "GET", "/_crmchat/faults", None).await.body, json!([]), "removed at 0");
    assert_removed(&delete().await, 8773);
    // Inside a batch, a rule for a command faults that command only.
    add_fault(&app, json!({"method": "profile", "error": "OPERATION_TIME_LIMIT"})).await;
    let resp = app.call("batch", json!({"cmd": {"a": "profile", "b": "server.time"}})).await;
    let result = &resp.body["result"];
    assert_eq!(
        result["result_error"]["a"],
        json!({"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."})
    );
    assert!(result["result"]["b"].is_string(), "{result}");
    let list = entries(&journal(&app, "?method=profile").await).clone();
    assert!(list.last().unwrap()["fault"].is_u64(), "{list:?}");
}

#[tokio::test]
async fn fault_rules_match_in_id_order_by_credential() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    server_time(&app).await;
    let webhook_id = entries(&journal(&app, "").await)[0]["auth"]["webhook_id"].as_i64().unwrap();
    let other = add_fault(&app, json!({"method": "*", "http_status": 502, "webhook_id": webhook_id + 1000})).await;
    let mine = add_fault(&app, json!({"method": "*", "http_status": 502, "webhook_id": webhook_id})).await;
    let later = add_fault(&app, json!({"method": "server.time", "error": "ERROR_CORE"})).await;
    assert!(other < mine && mine < later);
    let resp = server_time(&app).await;
    assert_error(&resp, 502, "INTERNAL_SERVER_ERROR", "Internal server error");
    let resp = app.call_as("/rest/12/operatorhookcode12/", "server.time", json!({})).await;
    assert_eq!((resp.status, &resp.body["error"]), (400, &json!("ERROR_CORE")), "another webhook: the next rule");
    let listed = ctl(&app, "GET", "/_crmchat/faults", None).await.body;
    let ids: Vec<u64> = listed.as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [other, mine, later]);
    assert_eq!(listed[1]["http_status"], 502);
    assert_eq!(ctl(&app, "DELETE", &format!("/_crmchat/faults/{mine}"), None).await.status, 200);
    assert_eq!(ctl(&app, "DELETE", &format!("/_crmchat/faults/{mine}"), None).await.status, 404);
    assert_eq!(server_time(&app).await.body["error"], "ERROR_CORE");
    // A client_id rule does not match a webhook; probability 0 never fires.
    ctl(&app, "DELETE", "/_crmchat/faults", None).await;
    add_fault(&app, json!({"method": "*", "error": "ERROR_CORE", "client_id": "some.app"})).await;
    add_fault(&app, json!({"method": "*", "error": "ERROR_CORE", "probability": 0})).await;
    assert_eq!(server_time(&app).await.status, 200);
}

#[tokio::test]
async fn fault_rules_are_checked() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    for (rule, code) in [
        (json!({"method": "*", "error": "NO_SUCH_ERROR"}), "unknown_error_code"),
        (json!({"method": "*", "error": "query_limit_exceeded"}), "unknown_error_code"),
        (json!({"method": "*", "http_status": 200}), "invalid_fault"),
        (json!({"method": "*", "probability": 2}), "invalid_fault"),
        (json!({"method": "*", "times": 0}), "invalid_fault"),
        (json!({"error": "ERROR_CORE"}), "invalid_fault"),
        (json!({"method": "*", "colour": "red"}), "invalid_fault"),
    ] {
        let resp = ctl(&app, "POST", "/_crmchat/faults", Some(rule.clone())).await;
        assert_eq!((resp.status, &resp.body["error"]), (400, &json!(code)), "{rule}: {}", resp.text);
        assert!(resp.body["message"].is_string(), "{}", resp.text);
    }
    assert_eq!(ctl(&app, "GET", "/_crmchat/faults", None).await.body, json!([]));
}

#[tokio::test]
async fn fault_delays_and_resets() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    add_fault(&app, json!({"method": "server.time", "delay_ms": 400, "times": 1})).await;
    let started = Instant::now();
    assert_eq!(server_time(&app).await.status, 200, "delay_ms alone: the real answer");
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    let id = add_fault(&app, json!({"method": "server.time", "error": "connection_reset", "times": 1})).await;
    let sent = app.client.post(app.url(&app.method_path("server.time"))).body("{}").send().await;
    assert!(sent.is_err(), "the connection closed without an answer: {sent:?}");
    let entry = entries(&journal(&app, "").await).last().unwrap().clone();
    assert_eq!(
        (&entry["fault"], &entry["status"], &entry["error"]),
        (&json!(id), &Value::Null, &json!("connection_reset"))
    );
    assert_eq!(server_time(&app).await.status, 200, "the next connection is served");
}

#[tokio::test]
async fn errors_lists_the_catalogue() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    let resp = ctl(&app, "GET", "/_crmchat/errors", None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let list = resp.body.as_array().expect("a list");
    let find = |code: &str| list.iter().find(|e| e["error"] == code).unwrap_or_else(|| panic!("{code} listed"));
    assert_eq!(find("QUERY_LIMIT_EXCEEDED")["status"], 503);
    assert_eq!(find("QUERY_LIMIT_EXCEEDED")["error_description"], "Too many requests");
    assert_eq!(find("expired_token")["status"], 401);
    assert_eq!(find("ERROR_METHOD_NOT_FOUND")["error_description"], "Method not found!");
    let denied = find("ACCESS_DENIED")["variants"].as_array().unwrap().clone();
    assert!(denied.iter().any(|v| v["error_description"] == "Access denied! You dont have access to this action"));
    // Every code listed is one a fault rule accepts.
    for entry in list {
        let rule = json!({"method": "server.time", "error": entry["error"], "times": 1});
        add_fault(&app, rule).await;
    }
}

#[tokio::test]
async fn reset_clears_journal_faults_and_clock() {
    let app = spawn_controlled(demo_fixture(), &[]).await;
    server_time(&app).await;
    add_fault(&app, json!({"method": "profile", "error": "ERROR_CORE"})).await;
    ctl(&app, "POST", "/_crmchat/clock", Some(json!({"advance_s": 3600}))).await;
    assert_eq!(ctl(&app, "POST", "/_crmchat/reset", None).await.status, 200);
    assert_eq!(journal(&app, "").await["total"], 0);
    assert_eq!(ctl(&app, "GET", "/_crmchat/faults", None).await.body, json!([]));
    assert_eq!(ctl(&app, "GET", "/_crmchat/clock", None).await.body["offset_s"], 0.0);
    assert_eq!(app.call("profile", json!({})).await.status, 200);
}
