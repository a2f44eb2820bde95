//! The control API (`/_crmchat/…`): off without a token, the token check, state read/load/replace, reset,
//! `/readyz`. Every test talks to a real server over HTTP.

use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "control-token-for-tests-0123456789";

async fn spawn_controlled(fixture: Value) -> TestApp {
    spawn_app_with_args(fixture, &["--control-token", TOKEN]).await
}

/// A control request with the test token.
fn ctl(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(TOKEN)
}

async fn ctl_get(app: &TestApp, path: &str) -> Resp {
    app.send(ctl(app, reqwest::Method::GET, path)).await
}

async fn ctl_send(app: &TestApp, method: reqwest::Method, path: &str, content_type: &str, body: &str) -> Resp {
    app.send(ctl(app, method, path).header("content-type", content_type).body(body.to_string())).await
}

async fn reset(app: &TestApp) -> Resp {
    app.send(ctl(app, reqwest::Method::POST, "/_crmchat/reset")).await
}

fn assert_ok(resp: &Resp) {
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.content_type(), Some("application/json"), "{}", resp.text);
    assert_eq!(resp.body["ok"], json!(true), "{}", resp.text);
    assert!(resp.body["took_ms"].is_u64(), "took_ms is a whole number: {}", resp.text);
}

/// Removes user 12 from deal 288's chat 8773 through the demo webhook.
async fn remove_oleg(app: &TestApp) -> Resp {
    app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await
}

#[tokio::test]
async fn control_is_off_without_a_token() {
    let app = spawn_app().await;
    for path in ["/_crmchat/state", "/_crmchat/reset", "/_crmchat/", "/_crmchat"] {
        let resp = app.send(app.client.get(app.url(path)).bearer_auth(TOKEN)).await;
        assert_eq!(resp.status, 404, "{path}: {}", resp.text);
        assert_eq!(resp.body["error"], "not_found", "{path}: {}", resp.text);
    }
    let resp = app.send(app.client.post(app.url("/_crmchat/reset"))).await;
    assert_eq!(resp.status, 404, "{}", resp.text);
    // Nothing was reset: the portal still answers as loaded.
    assert_removed(&remove_oleg(&app).await, 8773);
}

#[tokio::test]
async fn control_refuses_a_missing_or_wrong_token() {
    let app = spawn_controlled(demo_fixture()).await;
    let wrong = [
        None,
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ];
    for header in wrong {
        for (method, path) in [("GET", "/_crmchat/state"), ("POST", "/_crmchat/reset"), ("GET", "/_crmchat/nothing")] {
            let mut request = app.client.request(method.parse().unwrap(), app.url(path));
            if let Some(header) = &header {
                request = request.header("authorization", header);
            }
            let resp = app.send(request).await;
            assert_eq!((resp.status, resp.text.as_str()), (401, r#"{"error":"unauthorized"}"#), "{method} {path}");
            assert_eq!(resp.content_type(), Some("application/json"));
        }
    }
    // The refused reset changed nothing; the right token works, also on HTTPS.
    assert_removed(&remove_oleg(&app).await, 8773);
    let https = app.https_client().build().unwrap();
    let resp = app.send(https.get(format!("{}/_crmchat/state", app.https_base)).bearer_auth(TOKEN)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = ctl_get(&app, "/_crmchat/nothing").await;
    assert_eq!((resp.status, &resp.body["error"]), (404, &json!("not_found")), "{}", resp.text);
    assert!(resp.body["message"].as_str().unwrap().contains("/_crmchat/nothing"), "{}", resp.text);
    assert!(!app.log().contains(TOKEN), "the token is never logged");
}

#[tokio::test]
async fn control_token_from_the_environment() {
    let app = spawn_app_with_env(demo_fixture(), &[("CRMCHAT_CONTROL_TOKEN", TOKEN)]).await;
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.status, 200);
    let resp = app.send(app.client.get(app.url("/_crmchat/state")).bearer_auth("other")).await;
    assert_eq!(resp.status, 401);
    // Without --demo, the address is printed and the token is not.
    assert!(app.printed.iter().any(|l| l == &format!("control: {}/_crmchat/", app.http_base)), "{:?}", app.printed);
    assert!(!app.printed.iter().any(|l| l.contains(TOKEN)), "{:?}", app.printed);
}

#[tokio::test]
async fn control_demo_prints_a_random_token() {
    let app = spawn_app_with_args(demo_fixture(), &["--demo"]).await;
    let line = app.printed.iter().find(|l| l.starts_with("control: ")).expect("a control line");
    let prefix = format!("control: {}/_crmchat/ (token ", app.http_base);
    let token = line.strip_prefix(&prefix).and_then(|t| t.strip_suffix(')')).unwrap_or_else(|| panic!("{line}"));
    assert!(token.len() >= 24 && token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
    let resp = app.send(app.client.get(app.url("/_crmchat/state")).bearer_auth(token)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = app.send(app.client.get(app.url("/_crmchat/state")).bearer_auth(TOKEN)).await;
    assert_eq!(resp.status, 401);
    assert!(!app.log().contains(token), "the demo token is printed, never logged");
}

#[tokio::test]
async fn control_readyz_answers_without_a_token() {
    for app in [spawn_app().await, spawn_controlled(demo_fixture()).await] {
        let resp = app.get("/readyz").await;
        assert_eq!((resp.status, &resp.body), (200, &json!({"status": "ready"})), "{}", resp.text);
        assert_eq!(resp.content_type(), Some("application/json"));
    }
}

#[tokio::test]
async fn control_state_is_what_state_export_writes() {
    let app = spawn_controlled(demo_fixture()).await;
    assert_removed(&remove_oleg(&app).await, 8773);
    let resp = ctl_get(&app, "/_crmchat/state").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.content_type(), Some("application/json"));
    let mut args = vec!["state".to_string(), "export".to_string()];
    args.extend(storage_args(&app.data_dir));
    let cli = run_cli(&args);
    assert!(cli.status.success());
    assert_eq!(resp.text, String::from_utf8(cli.stdout).unwrap(), "byte for byte what the CLI writes");
    assert_eq!(members(&resp.body, 8773), [14, 20, 30]);
    assert!(!resp.text.contains(DEMO_CODE) && !resp.text.contains("demo-secret"), "credentials only as hashes");

    let structure = ctl_get(&app, "/_crmchat/state?detail=structure").await;
    assert_eq!(structure.status, 200, "{}", structure.text);
    for c in structure.body["chats"].as_array().unwrap() {
        assert_eq!((&c["members"], &c["messages"]), (&json!([]), &json!([])), "{c}");
        assert!(!c["sessions"].as_array().unwrap().is_empty(), "sessions stay: {c}");
    }
    assert_eq!(structure.body["users"], resp.body["users"]);
    let bad = ctl_get(&app, "/_crmchat/state?detail=everything").await;
    assert_eq!((bad.status, &bad.body["error"]), (400, &json!("invalid_argument")), "{}", bad.text);
}

#[tokio::test]
async fn control_state_post_upserts_json_and_yaml() {
    let app = spawn_controlled(demo_fixture()).await;
    let json_doc = json!({"users": [{"id": 40, "name": "Petr"}, {"id": 14, "name": "Olga", "last_name": "Renamed"}]});
    let resp =
        ctl_send(&app, reqwest::Method::POST, "/_crmchat/state", "application/json", &json_doc.to_string()).await;
    assert_ok(&resp);
    let yaml = "users:\n  - id: 41\n    name: Yana\n    kind: bot\n";
    let resp = ctl_send(&app, reqwest::Method::POST, "/_crmchat/state", "application/yaml", yaml).await;
    assert_ok(&resp);
    let state = ctl_get(&app, "/_crmchat/state").await.body;
    let user = |id: i64| state["users"].as_array().unwrap().iter().find(|u| u["id"] == id).cloned();
    assert_eq!(user(40).unwrap()["name"], "Petr");
    assert_eq!(user(41).unwrap()["kind"], "bot");
    assert_eq!(user(14).unwrap()["last_name"], "Renamed");
    // Rows the documents did not mention stay, and the portal still serves them.
    assert_eq!(user(12).unwrap()["name"], "Oleg");
    assert_eq!(members(&state, 8773), [12, 14, 20, 30]);
    assert_removed(&remove_oleg(&app).await, 8773);
}

#[tokio::test]
async fn control_invalid_state_changes_nothing() {
    let app = spawn_controlled(demo_fixture()).await;
    let before = ctl_get(&app, "/_crmchat/state").await.text;
    let doc = json!({
        "users": [{"id": 40}],
        "chats": [{"id": 8773, "line": 1, "connector": "livechat", "members": [12]},
                  {"id": 9000, "line": 1, "connector": "livechat", "members": [12, 99]}]
    });
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let resp = ctl_send(&app, method.clone(), "/_crmchat/state", "application/json", &doc.to_string()).await;
        assert_eq!(resp.status, 400, "{method}: {}", resp.text);
        assert_eq!(resp.body["error"], "invalid_state", "{}", resp.text);
        assert!(resp.body["message"].is_string(), "{}", resp.text);
        let problems = resp.body["problems"].as_array().unwrap();
        let problem = json!("chats[1].members[1]: user 99 does not exist");
        if method == reqwest::Method::POST {
            // Merged into the portal, only the unknown user is wrong.
            assert_eq!(problems, &[problem], "{}", resp.text);
        } else {
            // Alone, the document also lacks the line and user 12.
            assert!(problems.contains(&problem) && problems.len() > 1, "{}", resp.text);
        }
    }
    for (content_type, body, problem) in [
        ("application/json", "{\"users\": [{\"id\": 1,}]}", "line 1 column"),
        ("application/json", r#"{"user": []}"#, "unknown field `user`"),
        ("application/yaml", "users:\n  - id: 1\n    nmae: x\n", "users[0]: unknown field `nmae`"),
    ] {
        let resp = ctl_send(&app, reqwest::Method::PUT, "/_crmchat/state", content_type, body).await;
        assert_eq!((resp.status, &resp.body["error"]), (400, &json!("invalid_state")), "{}", resp.text);
        let problems = resp.body["problems"].as_array().unwrap();
        assert!(problems.len() == 1 && problems[0].as_str().unwrap().contains(problem), "{}", resp.text);
    }
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, before, "nothing changed");
}

#[tokio::test]
async fn control_put_state_replaces_everything() {
    let app = spawn_controlled(demo_fixture()).await;
    let doc = json!({
        "portal": {"domain": "replaced.localhost", "plan": "unlimited"},
        "users": [{"id": 5, "name": "Only", "admin": true}, {"id": 6, "name": "Second"}],
        "crm": [{"type": "deal", "id": 1, "title": "New", "responsible": 5}],
        "lines": [{"id": 2, "queue": [5], "connectors": [{"id": "livechat", "title": "Chat"}]}],
        "chats": [{"id": 70, "line": 2, "connector": "livechat", "author": 5, "members": [5, 6],
                   "sessions": [{"id": 700, "status": "operator", "modified": "2026-11-20T10:00:00Z",
                                 "crm": [{"type": "deal", "id": 1}]}]}],
        "webhooks": [{"user": 5, "code": "replacedwebhookcode5", "scopes": ["imopenlines", "im"]}]
    });
    let resp = ctl_send(&app, reqwest::Method::PUT, "/_crmchat/state", "application/json", &doc.to_string()).await;
    assert_ok(&resp);
    let state = ctl_get(&app, "/_crmchat/state").await.body;
    assert_eq!(state["portal"]["domain"], "replaced.localhost");
    let ids: Vec<&Value> = state["users"].as_array().unwrap().iter().map(|u| &u["id"]).collect();
    assert_eq!(ids, [5, 6]);
    assert_eq!(state["chats"].as_array().unwrap().len(), 1);
    assert_eq!(members(&state, 70), [5, 6]);
    assert_eq!(state["apps"], json!([]));
    assert_eq!(state["webhooks"].as_array().unwrap().len(), 1);
    // The old webhook is gone, the new one works at once.
    let resp = remove_oleg(&app).await;
    assert_eq!(resp.status, 401, "{}", resp.text);
    let new_hook = hook(5, "replacedwebhookcode5");
    let resp = app.call_as(&new_hook, METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 1, "USER_ID": 6})).await;
    assert_removed(&resp, 70);
    assert_eq!(members(&app.export(), 70), [5]);
}

#[tokio::test]
async fn control_reset_returns_to_the_startup_state() {
    let mut fixture = demo_fixture();
    fixture["portal"]["plan"] = json!("standard");
    let app = spawn_controlled(fixture).await;
    let startup = ctl_get(&app, "/_crmchat/state").await.text;
    assert_removed(&remove_oleg(&app).await, 8773);
    let doc = json!({"users": [{"id": 40}]});
    assert_ok(&ctl_send(&app, reqwest::Method::POST, "/_crmchat/state", "application/json", &doc.to_string()).await);
    assert_ne!(ctl_get(&app, "/_crmchat/state").await.text, startup);

    assert_ok(&reset(&app).await);
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, startup, "exactly the start-up state");
    assert_removed(&remove_oleg(&app).await, 8773);

    // After a replace too, and the rate-limit bucket starts empty again.
    let doc = json!({"users": [{"id": 5}]});
    assert_ok(&ctl_send(&app, reqwest::Method::PUT, "/_crmchat/state", "application/json", &doc.to_string()).await);
    assert_ok(&reset(&app).await);
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, startup);
    let time = app.method_path("server.time");
    let mut refused = None;
    for i in 0..80 {
        if app.get(&time).await.status == 503 {
            refused = Some(i);
            break;
        }
    }
    assert!(refused.is_some_and(|i| i >= 50), "the burst of 50 is admitted first: {refused:?}");
    assert_ok(&reset(&app).await);
    let resp = app.get(&time).await;
    assert_eq!(resp.status, 200, "a reset empties the buckets: {}", resp.text);
}

#[tokio::test]
async fn control_reset_of_an_empty_start() {
    // An empty fixture on a new database: the start-up state is the empty portal.
    let dir = tempfile::Builder::new().prefix("crmchat-test-").tempdir().unwrap();
    let app = spawn_app_in(dir, json!({}), &[("CRMCHAT_CONTROL_TOKEN", TOKEN)]).await;
    let empty = ctl_get(&app, "/_crmchat/state").await.body;
    assert_eq!(empty["users"], json!([]));
    let doc = demo_fixture().to_string();
    assert_ok(&ctl_send(&app, reqwest::Method::PUT, "/_crmchat/state", "application/json", &doc).await);
    assert_removed(&remove_oleg(&app).await, 8773);
    assert_ok(&reset(&app).await);
    let state = ctl_get(&app, "/_crmchat/state").await.body;
    assert_eq!((&state["users"], &state["chats"]), (&json!([]), &json!([])));
    assert_eq!(remove_oleg(&app).await.status, 401, "the demo webhook went with the reset");
}

async fn snapshot(app: &TestApp, name: &str) -> Resp {
    app.send(ctl(app, reqwest::Method::POST, &format!("/_crmchat/snapshots/{name}"))).await
}

async fn restore(app: &TestApp, name: &str) -> Resp {
    app.send(ctl(app, reqwest::Method::POST, &format!("/_crmchat/snapshots/{name}/restore"))).await
}

#[tokio::test]
async fn control_snapshots_save_restore_list_delete() {
    let app = spawn_controlled(demo_fixture()).await;
    let before = ctl_get(&app, "/_crmchat/state").await.text;
    let resp = snapshot(&app, "before-removal_1").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["name"], "before-removal_1");
    let bytes = resp.body["bytes"].as_u64().unwrap();
    assert_eq!(bytes, before.len() as u64, "the snapshot is the export");
    let created = resp.body["created"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok(), "{created}");

    assert_removed(&remove_oleg(&app).await, 8773);
    let after_removal = ctl_get(&app, "/_crmchat/state").await.text;
    assert_eq!(snapshot(&app, "after").await.status, 200);
    let resp = restore(&app, "before-removal_1").await;
    assert_ok(&resp);
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, before, "exactly the snapshot");
    assert_removed(&remove_oleg(&app).await, 8773);
    assert_ok(&restore(&app, "after").await);
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, after_removal);

    // Saving again under a name replaces the snapshot; nothing else lies about in the directory.
    assert_eq!(snapshot(&app, "after").await.status, 200);
    let list = ctl_get(&app, "/_crmchat/snapshots").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<&str> = list.body.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["after", "before-removal_1"]);
    for s in list.body.as_array().unwrap() {
        assert_eq!(s.as_object().unwrap().keys().collect::<Vec<_>>(), ["name", "created", "bytes"], "{s}");
    }
    let files: Vec<String> = std::fs::read_dir(app.data_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "no temporary files left: {files:?}");

    let resp = app.send(ctl(&app, reqwest::Method::DELETE, "/_crmchat/snapshots/after")).await;
    assert_eq!((resp.status, &resp.body), (200, &json!({"ok": true})), "{}", resp.text);
    let resp = app.send(ctl(&app, reqwest::Method::DELETE, "/_crmchat/snapshots/after")).await;
    assert_eq!((resp.status, &resp.body["error"]), (404, &json!("snapshot_not_found")), "{}", resp.text);
    let resp = restore(&app, "after").await;
    assert_eq!((resp.status, &resp.body["error"]), (404, &json!("snapshot_not_found")), "{}", resp.text);
    let names = ctl_get(&app, "/_crmchat/snapshots").await.body;
    assert_eq!(names.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn control_snapshot_names_are_checked() {
    let app = spawn_controlled(demo_fixture()).await;
    let long = "a".repeat(65);
    for name in ["has.dot", "sp%20ace", "a%2Fb", "..x", long.as_str(), "caf%C3%A9"] {
        let resp = snapshot(&app, name).await;
        assert_eq!((resp.status, &resp.body["error"]), (400, &json!("invalid_snapshot_name")), "{name}: {}", resp.text);
        let resp = restore(&app, name).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text);
    }
    assert_eq!(snapshot(&app, &"a".repeat(64)).await.status, 200);
    assert!(!app.data_dir.join("has.dot.json").exists());
    let resp = app.send(ctl(&app, reqwest::Method::PATCH, "/_crmchat/snapshots/x")).await;
    assert_eq!((resp.status, &resp.body["error"]), (405, &json!("method_not_allowed")), "{}", resp.text);
}

#[tokio::test]
async fn control_a_snapshot_edited_into_an_invalid_state_changes_nothing() {
    let app = spawn_controlled(demo_fixture()).await;
    assert_eq!(snapshot(&app, "s").await.status, 200);
    let path = app.data_dir.join("snapshots/s.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"responsible\": 12", "\"responsible\": 99");
    std::fs::write(&path, text).unwrap();
    let before = ctl_get(&app, "/_crmchat/state").await.text;
    let resp = restore(&app, "s").await;
    assert_eq!((resp.status, &resp.body["error"]), (400, &json!("invalid_state")), "{}", resp.text);
    assert!(resp.body["problems"][0].as_str().unwrap().contains("user 99 does not exist"), "{}", resp.text);
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, before);
}

/// A portal of `chats` chats with `per_chat` members each, one session and one deal per chat.
pub fn big_portal(chats: i64, per_chat: i64) -> Value {
    let users = (per_chat * 2).max(100);
    let chat = |c: i64| {
        let members: Vec<i64> = (0..per_chat).map(|k| 1 + (c + k) % users).collect();
        json!({"id": c, "line": 1, "connector": "livechat", "author": members[0], "members": members,
               "sessions": [{"id": c, "status": "operator", "modified": "2026-11-20T10:00:00Z",
                             "crm": [{"type": "deal", "id": c}]}]})
    };
    json!({
        "portal": {"plan": "unlimited"},
        "users": (1..=users).map(|i| json!({"id": i, "name": format!("U{i}"), "admin": i == 1})).collect::<Vec<_>>(),
        "crm": (1..=chats).map(|c| json!({"type": "deal", "id": c, "title": "D", "responsible": 1})).collect::<Vec<_>>(),
        "lines": [{"id": 1, "queue": [1], "connectors": [{"id": "livechat", "title": "Chat"}]}],
        "chats": (1..=chats).map(chat).collect::<Vec<_>>(),
        "webhooks": [{"user": 1, "code": DEMO_CODE, "scopes": ["imopenlines", "im"]}]
    })
}

/// A reset and a restore of a 10,000-membership portal give back exactly the start-up state and the snapshot.
/// How long they take is a benchmark's figure (bench/README.md), not a test's: a timed test on a shared machine
/// fails for reasons that are not the server's.
#[tokio::test]
async fn control_reset_and_restore_of_10000_memberships() {
    let app = spawn_controlled(big_portal(1000, 10)).await;
    let startup = ctl_get(&app, "/_crmchat/state").await.text;
    assert_eq!(snapshot(&app, "big").await.status, 200);
    let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 5, "USER_ID": 6})).await;
    assert_removed(&resp, 5);
    let mut took = Vec::new();
    for _ in 0..3 {
        let resp = reset(&app).await;
        assert_ok(&resp);
        took.push(resp.body["took_ms"].as_u64().unwrap());
        let resp = restore(&app, "big").await;
        assert_ok(&resp);
        took.push(resp.body["took_ms"].as_u64().unwrap());
    }
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, startup);
    took.sort();
    eprintln!("reset and restore of 10,000 memberships: {took:?} ms");
}

/// Not a test: the figures of bench/README.md's "Reset and restore" (median of 5 resets and of 5 restores of a
/// portal of `CRMCHAT_BENCH_CHATS` chats × 10 members, default 1,000 = 10,000 memberships). Run it on a
/// release build: `CRMCHAT_TEST_BIN=target/release/crmchat cargo test --test api control_bench -- --ignored
/// --nocapture` (with `CRMCHAT_TEST_DATABASE=postgres://…` for PostgreSQL; for 1,000,000 memberships
/// `CRMCHAT_BENCH_CHATS=100000 CRMCHAT_TEST_READY_SECS=900`, since the start-up load alone takes minutes).
#[tokio::test]
#[ignore = "a benchmark, run by hand (bench/README.md)"]
async fn control_bench_reset_and_restore() {
    let chats: i64 = std::env::var("CRMCHAT_BENCH_CHATS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let app = spawn_controlled(big_portal(chats, 10)).await;
    assert_eq!(snapshot(&app, "big").await.status, 200);
    let (mut resets, mut restores) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 5, "USER_ID": 6})).await;
        assert_removed(&resp, 5);
        let resp = reset(&app).await;
        assert_ok(&resp);
        resets.push(resp.body["took_ms"].as_u64().unwrap());
        let resp = restore(&app, "big").await;
        assert_ok(&resp);
        restores.push(resp.body["took_ms"].as_u64().unwrap());
    }
    resets.sort();
    restores.sort();
    eprintln!(
        "{} memberships: reset median {} ms {resets:?}, restore median {} ms {restores:?}",
        chats * 10,
        resets[2],
        restores[2]
    );
}

/// Resets while clients call the REST API: every call is answered (no connection error), never with a 5xx,
/// and after the last reset the portal is exactly the start-up state.
#[tokio::test]
async fn control_reset_under_concurrent_rest_load() {
    let app = std::sync::Arc::new(spawn_controlled(demo_with(|f| f["portal"]["plan"] = json!("unlimited"))).await);
    let startup = ctl_get(&app, "/_crmchat/state").await.text;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..6 {
        let (app, stop) = (app.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let user = [12, 14, 20][worker % 3];
                let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user});
                let method = if calls % 2 == 0 { METHOD } else { "imopenlines.crm.chat.user.add" };
                let path = app.method_path(method);
                let sent = app.client.post(app.url(&path)).json(&params).send().await;
                let resp = sent.unwrap_or_else(|e| panic!("a call failed during resets: {e}"));
                let status = resp.status().as_u16();
                let text = resp.text().await.expect("the whole answer");
                assert!(status < 500, "{status} {text}");
                let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
                assert!(body.get("result").is_some() || body.get("error").is_some(), "{text}");
                calls += 1;
            }
            calls
        }));
    }
    for _ in 0..15 {
        assert_ok(&reset(&app).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = 0;
    for client in clients {
        calls += client.await.expect("a client task panicked");
    }
    assert!(calls > 30, "the clients kept calling: {calls}");
    assert_ok(&reset(&app).await);
    assert_eq!(ctl_get(&app, "/_crmchat/state").await.text, startup);
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

async fn install(app: &TestApp, client_id: &str, body: Value) -> Resp {
    let path = format!("/_crmchat/apps/{client_id}/install");
    app.send(ctl(app, reqwest::Method::POST, &path).json(&body)).await
}

async fn last_id_with_token(app: &TestApp, token: &str) -> Resp {
    app.get(&format!("/rest/imopenlines.crm.chat.getLastId.json?auth={token}&CRM_ENTITY_TYPE=deal&CRM_ENTITY=288"))
        .await
}

#[tokio::test]
async fn control_apps_install_and_uninstall() {
    let app = spawn_controlled(demo_fixture()).await;
    let resp = install(&app, "local.demo.app", json!({"user_id": 12, "handler": null})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let keys: Vec<&str> = resp.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "refresh_token",
            "expires_in",
            "member_id",
            "application_token",
            "client_endpoint",
            "server_endpoint"
        ]
    );
    assert_eq!(resp.body["application_token"], "demo-app-token");
    assert_eq!(resp.body["expires_in"], 3600);
    assert_eq!(resp.body["client_endpoint"], "https://crmchat.localhost/rest/");
    assert_eq!(resp.body["server_endpoint"], "https://crmchat.localhost/oauth/rest/");
    assert_eq!(resp.body["member_id"].as_str().unwrap().len(), 32);
    let access = resp.body["access_token"].as_str().unwrap().to_string();
    let refresh = resp.body["refresh_token"].as_str().unwrap().to_string();

    // The token works as the installing user (12 may read deal 288's chat) and refreshes as any other.
    let answer = last_id_with_token(&app, &access).await;
    assert_success(&answer, json!(8773));
    let body =
        format!("grant_type=refresh_token&client_id=local.demo.app&client_secret=demo-secret&refresh_token={refresh}");
    let refreshed = app.post_form("/oauth/token/", &body).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert_eq!(refreshed.body["user_id"], 12);

    let bind = format!("/rest/event.bind.json?auth={access}&event=ONCRMCHATUSERDELETE&handler=http://127.0.0.1:9/hook");
    assert_success(&app.get(&bind).await, json!(true));

    let resp = app.send(ctl(&app, reqwest::Method::POST, "/_crmchat/apps/local.demo.app/uninstall")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!((&resp.body["ok"], &resp.body["unbound"]), (&json!(true), &json!(1)), "{}", resp.text);
    let answer = last_id_with_token(&app, &access).await;
    assert_eq!(answer.status, 401, "uninstalled, the token no longer works: {}", answer.text);
    let again = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(last_id_with_token(&app, again).await.status, 401);
    // Installed again, it works again.
    let resp = install(&app, "local.demo.app", json!({"user_id": 1})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let access = resp.body["access_token"].as_str().unwrap();
    assert_success(&last_id_with_token(&app, access).await, json!(8773));
    assert_success(&app.get(&format!("/rest/event.get.json?auth={access}")).await, json!([]));
}

#[tokio::test]
async fn control_apps_install_refuses_what_it_cannot_do() {
    let app = spawn_controlled(demo_fixture()).await;
    let cases = [
        ("local.none.app", json!({"user_id": 1}), 404, "app_not_found"),
        ("local.demo.app", json!({"user_id": 99}), 404, "user_not_found"),
        ("local.demo.app", json!({"user_id": 13}), 400, "invalid_argument"),
        ("local.demo.app", json!({"handler": null}), 400, "invalid_argument"),
        ("local.demo.app", json!({"user_id": "1"}), 400, "invalid_argument"),
        // A handler event.bind would refuse.
        ("local.demo.app", json!({"user_id": 1, "handler": "http://localhost:9/"}), 400, "invalid_argument"),
        ("local.demo.app", json!({"user_id": 1, "handler": "ftp://files.example.com/"}), 400, "invalid_argument"),
    ];
    for (client_id, body, status, code) in cases {
        let resp = install(&app, client_id, body.clone()).await;
        assert_eq!((resp.status, &resp.body["error"]), (status, &json!(code)), "{body}: {}", resp.text);
        assert!(resp.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.text);
    }
    let resp = app.send(ctl(&app, reqwest::Method::POST, "/_crmchat/apps/local.none.app/uninstall")).await;
    assert_eq!((resp.status, &resp.body["error"]), (404, &json!("app_not_found")), "{}", resp.text);
}
