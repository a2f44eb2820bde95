//! `state load` next to a running server (docs/state-format.md, "Loading next to a running server"): a small
//! file loaded into a big portal, through the control API and through `crmchat state load`, while clients keep
//! removing members and reading chats; the rows a load reads follow the file, not the portal; and the time it
//! stamps is the portal clock's when the server loads, real time when the command line does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "state-load-token-for-tests-0123456789";
const CHAT_GET: &str = "imopenlines.crm.chat.get";
/// The big portal's chats and their deals are numbered from here.
const FIRST_CHAT: i64 = 100_000;
const FIRST_DEAL: i64 = 50_000;
/// Its employees, every one a member of every chat.
const FIRST_USER: i64 = 1_000;

fn ctl(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.client.request(method, app.url(path)).bearer_auth(TOKEN)
}

async fn ctl_json(app: &TestApp, method: reqwest::Method, path: &str, body: &Value) -> Resp {
    app.send(ctl(app, method, path).header("content-type", "application/json").body(body.to_string())).await
}

fn assert_ok(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.text);
}

/// The demo portal plus `chats` chats of `members` members each (`chats * members` memberships), each chat
/// with one session bound to its own deal, on the `unlimited` plan.
fn big_portal(chats: i64, members: i64) -> Value {
    demo_with(|f| {
        // The clients call as fast as they can: no leaky bucket.
        f["portal"]["plan"] = json!("unlimited");
        let users = f["users"].as_array_mut().unwrap();
        users.extend((0..members).map(|i| json!({"id": FIRST_USER + i, "name": format!("Employee {i}")})));
        let crm = f["crm"].as_array_mut().unwrap();
        crm.extend(
            (0..chats).map(|i| json!({"type": "deal", "id": FIRST_DEAL + i, "title": "Deal", "responsible": 1})),
        );
        let all: Vec<i64> = (FIRST_USER..FIRST_USER + members).collect();
        let list = f["chats"].as_array_mut().unwrap();
        list.extend((0..chats).map(|i| {
            json!({"id": FIRST_CHAT + i, "line": 1, "connector": "livechat", "author": FIRST_USER, "members": all,
                   "sessions": [{"id": FIRST_CHAT + i, "status": "operator", "modified": "2026-11-20T10:00:00Z",
                                 "crm": [{"type": "deal", "id": FIRST_DEAL + i}]}]})
        }));
    })
}

/// Makes the portal `state` through the control API's bulk path (fast, unlike a load of the same size).
async fn replace(app: &TestApp, state: &Value) {
    assert_ok(&ctl_json(app, reqwest::Method::PUT, "/_crmchat/state", state).await, "PUT /_crmchat/state");
}

async fn scrape(app: &TestApp) -> String {
    let resp = app.send(ctl(app, reqwest::Method::GET, "/metrics")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.text
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// Rows read and written by the server's loads so far.
async fn load_rows(app: &TestApp) -> (f64, f64) {
    let text = scrape(app).await;
    (sample(&text, "crmchat_state_load_rows_read_total"), sample(&text, "crmchat_state_load_rows_written_total"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_loads_into_a_big_portal_leave_concurrent_calls_alone() {
    let app = Arc::new(spawn_app_with_args(demo_fixture(), &["--control-token", TOKEN]).await);
    // 100,000 memberships.
    let (chats, per_chat) = (100, 1_000);
    replace(&app, &big_portal(chats, per_chat)).await;
    let loading = Arc::new(AtomicBool::new(true));

    // Clients: each removes members of its own chats one after the other, and reads a chat between removals.
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..4i64 {
        let (app, loading) = (app.clone(), loading.clone());
        clients.spawn(async move {
            let mut removed = Vec::new();
            let mut calls = 0;
            'calls: for chat in (client..chats).step_by(4) {
                for user in FIRST_USER + 1..FIRST_USER + per_chat {
                    if !loading.load(Ordering::Relaxed) && calls >= 20 {
                        break 'calls;
                    }
                    let deal = FIRST_DEAL + chat;
                    let resp =
                        app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": deal, "USER_ID": user})).await;
                    assert!(resp.status < 500, "user.delete during loads: {} {}", resp.status, resp.text);
                    // A removal answers the chat's id.
                    if resp.status == 200 && resp.body["result"] == json!(FIRST_CHAT + chat) {
                        removed.push((FIRST_CHAT + chat, user));
                    }
                    let resp = app.call(CHAT_GET, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": deal})).await;
                    assert!(resp.status < 500, "chat.get during loads: {} {}", resp.status, resp.text);
                    calls += 2;
                }
            }
            removed
        });
    }

    // Loads of one-user files: through the control API, and by `crmchat state load` in another process.
    let dir = tempfile::tempdir().unwrap();
    let mut loaded = Vec::new();
    for i in 0..6i64 {
        let user = 5_000 + i;
        let file = json!({"users": [{"id": user, "name": format!("Loaded {user}")}]});
        if i % 2 == 0 {
            assert_ok(&ctl_json(&app, reqwest::Method::POST, "/_crmchat/state", &file).await, "POST /_crmchat/state");
        } else {
            let path = dir.path().join(format!("user-{user}.json"));
            std::fs::write(&path, file.to_string()).unwrap();
            let cli = app.clone();
            let run =
                tokio::task::spawn_blocking(move || cli.cli(&["state", "load", path.to_str().unwrap()])).await.unwrap();
            assert!(run.ok, "crmchat state load next to the server:\n{}", run.stderr);
        }
        loaded.push(user);
    }
    loading.store(false, Ordering::Relaxed);
    let removed: Vec<(i64, i64)> = clients.join_all().await.into_iter().flatten().collect();
    assert!(!removed.is_empty(), "the clients removed members while the loads ran");

    // Every acknowledged removal and every load is in the portal.
    let state = app.send(ctl(&app, reqwest::Method::GET, "/_crmchat/state")).await.body;
    for (chat, user) in &removed {
        assert!(!members(&state, *chat).contains(user), "removal of {user} from chat {chat} was acknowledged");
    }
    let users: Vec<i64> = state["users"].as_array().unwrap().iter().map(|u| u["id"].as_i64().unwrap()).collect();
    for user in loaded {
        assert!(users.contains(&user), "user {user} was loaded");
    }
    // The chats the clients did not touch keep every member: a load does not write back what it did not bring.
    let untouched = members(&state, FIRST_CHAT + chats - 1);
    if !removed.iter().any(|(chat, _)| *chat == FIRST_CHAT + chats - 1) {
        assert_eq!(untouched.len() as i64, per_chat);
    }
}

/// A file that adds a user, a chat of three members on the demo line with a session bound to the demo deal,
/// and a webhook: valid in the demo portal and in the big one alike.
fn small_file(n: i64) -> Value {
    json!({
        "users": [{"id": 3_000 + n}],
        "chats": [{"id": 9_000 + n, "line": 1, "connector": "livechat", "members": [1, 12, 3_000 + n],
                   "sessions": [{"id": 9_000 + n, "status": "new", "modified": "2026-11-20T10:00:00Z",
                                 "crm": [{"type": "deal", "id": 288}]}]}],
        "webhooks": [{"user": 3_000 + n, "code": format!("smallfilewebhook{n:04}"), "scopes": ["im"]}]
    })
}

#[tokio::test]
async fn a_load_reads_and_writes_rows_in_proportion_to_the_file_not_the_portal() {
    let app = spawn_app_with_args(demo_fixture(), &["--control-token", TOKEN]).await;
    let mut costs = Vec::new();
    for (n, portal) in [demo_fixture(), big_portal(20, 1_000)].iter().enumerate() {
        replace(&app, portal).await;
        let before = load_rows(&app).await;
        let file = small_file(n as i64);
        assert_ok(&ctl_json(&app, reqwest::Method::POST, "/_crmchat/state", &file).await, "POST /_crmchat/state");
        let after = load_rows(&app).await;
        costs.push((after.0 - before.0, after.1 - before.1));
        let state = app.send(ctl(&app, reqwest::Method::GET, "/_crmchat/state")).await.body;
        assert_eq!(members(&state, 9_000 + n as i64), [1, 12, 3_000 + n as i64]);
    }
    // 20,000 memberships more in the second portal, and not one row more read or written.
    assert_eq!(costs[0], costs[1], "rows (read, written) by the same file in a small and a big portal");
    // Read: the portal row, users 1 and 12, deal 288, line 1 and its two connectors; nothing of the file's
    // own chat (it is new). Written: the portal, the user, the chat, its three members, the session, its
    // CRM binding and the webhook.
    assert_eq!(costs[0], (7.0, 9.0));
}

/// `created` of the webhooks of `user` in `crmchat webhook list`.
fn webhook_created(app: &TestApp, user: i64) -> Vec<String> {
    let list = app.cli_ok(&["webhook", "list"]);
    list.lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(1) == Some(&user.to_string()))
        .map(|line| line.split_whitespace().last().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_server_load_stamps_the_portal_clock_and_a_command_line_load_real_time() {
    let app = spawn_app_with_args(demo_fixture(), &["--control-token", TOKEN]).await;
    let resp = ctl_json(&app, reqwest::Method::POST, "/_crmchat/clock", &json!({"set": "2031-06-01T00:00:00Z"})).await;
    assert_ok(&resp, "POST /_crmchat/clock");
    let file = json!({"webhooks": [{"user": 13, "code": "clockstampedcode0001", "scopes": ["im"]}]});
    assert_ok(&ctl_json(&app, reqwest::Method::POST, "/_crmchat/state", &file).await, "POST /_crmchat/state");
    let created = webhook_created(&app, 13);
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].starts_with("2031-06-01T00:0"), "stamped by the portal clock: {created:?}");

    // `crmchat state load` runs in a process of its own, which has no portal clock: real time.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hook.json");
    let file = json!({"webhooks": [{"user": 15, "code": "clockstampedcode0002", "scopes": ["im"]}]});
    std::fs::write(&path, file.to_string()).unwrap();
    app.cli_ok(&["state", "load", path.to_str().unwrap()]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let created = webhook_created(&app, 15);
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0][..4], crmchat::store::ms_to_rfc3339(now)[..4], "stamped by real time: {created:?}");
    assert!(!created[0].starts_with("2031"), "{created:?}");
}
