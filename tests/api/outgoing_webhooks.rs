//! Outgoing webhooks (`crmchat webhook add --outgoing`): Bitrix24's local integration that posts the events it
//! was given to one URL, with an application token of its own and no OAuth tokens.

use serde_json::json;

use crate::events::{Received, Sink, remove_operator};
use crate::helpers::{TestApp, assert_success, printed_field, spawn_app};

/// The keys of an outgoing webhook's `auth`: the portal's addresses and the token, nothing to call back with.
const AUTH_KEYS: [&str; 5] =
    ["auth[application_token]", "auth[client_endpoint]", "auth[domain]", "auth[member_id]", "auth[server_endpoint]"];

/// `crmchat webhook add --outgoing`: the webhook's id and application token.
fn add_outgoing(app: &TestApp, events: &str, handler: &str) -> (i64, String) {
    let out = app.cli_ok(&["webhook", "add", "--outgoing", "--event", events, "--handler", handler]);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("outgoing webhook ")?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `outgoing webhook ID:` line in:\n{out}"));
    (id, printed_field(&out, "application_token"))
}

fn auth_keys(delivery: &Received) -> Vec<String> {
    let mut keys: Vec<String> =
        delivery.pairs().into_iter().map(|(k, _)| k).filter(|k| k.starts_with("auth[")).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn outgoing_webhook_gets_its_events_without_tokens_until_revoked() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    let (id, application_token) = add_outgoing(&app, "onCrmChatUserDelete", &sink.url);
    assert_eq!(application_token.len(), 64, "{application_token}");

    remove_operator(&app).await;
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(delivery.content_type, "application/x-www-form-urlencoded");
    assert_eq!(delivery.field("event").as_deref(), Some("ONCRMCHATUSERDELETE"));
    assert_eq!(delivery.field("event_handler_id"), Some(id.to_string()));
    assert_eq!(delivery.field("data[CHAT_ID]").as_deref(), Some("8773"));
    assert_eq!(delivery.field("data[USER_ID]").as_deref(), Some("12"));
    assert!(delivery.field("ts").is_some_and(|ts| ts.parse::<i64>().is_ok()));
    assert_eq!(auth_keys(&delivery), AUTH_KEYS);
    assert_eq!(delivery.field("auth[application_token]"), Some(application_token.clone()));
    assert_eq!(delivery.field("auth[domain]").as_deref(), Some("crmchat.localhost"));

    // An event it was not given is not sent; nor is anything once it is revoked.
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});
    assert_success(&app.call("imopenlines.crm.chat.user.add", params.clone()).await, json!(8773));
    let listed = app.cli_ok(&["webhook", "list"]);
    assert!(listed.contains("ONCRMCHATUSERDELETE") && listed.contains(&sink.url), "{listed}");
    assert!(!listed.contains(&application_token), "the token is shown once only:\n{listed}");
    app.cli_ok(&["webhook", "revoke", "--outgoing", &id.to_string()]);
    assert_success(&app.call("imopenlines.crm.chat.user.delete", params).await, json!(8773));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1, "{:?}", sink.received());
    let again = app.cli(&["webhook", "revoke", "--outgoing", &id.to_string()]);
    assert!(!again.ok && again.stderr.contains("no outgoing webhook"), "{}", again.stderr);
}

#[tokio::test]
async fn outgoing_webhook_and_an_application_binding_both_get_the_event() {
    let app = spawn_app().await;
    let hook_sink = Sink::start().await;
    let app_sink = Sink::start().await;
    add_outgoing(&app, "ONCRMCHATUSERDELETE,ONCRMCHATUSERADD", &hook_sink.url);
    let admin = crate::events::token(&app, "local.both.app", "imopenlines,im", 1).await;
    let bound = crate::events::bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": app_sink.url}));
    assert_success(&bound.await, json!(true));
    remove_operator(&app).await;
    let [from_app] = <[Received; 1]>::try_from(app_sink.wait(1, 10).await).unwrap();
    let [from_hook] = <[Received; 1]>::try_from(hook_sink.wait(1, 10).await).unwrap();
    assert!(from_app.field("auth[access_token]").is_some(), "the application's delivery has a token");
    assert!(from_hook.field("auth[access_token]").is_none(), "the webhook's has none");
    assert_eq!(from_app.field("data[USER_COUNT]"), from_hook.field("data[USER_COUNT]"));
}

#[tokio::test]
async fn outgoing_webhook_bad_arguments_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let cases: [(&[&str], &str); 5] = [
        (&["--event", "ONAPPTEST", "--handler", "http://127.0.0.1:9/"], "not an event an outgoing webhook"),
        (&["--event", "ONNOSUCHEVENT", "--handler", "http://127.0.0.1:9/"], "not an event an outgoing webhook"),
        (&["--event", "ONCRMCHATUSERDELETE", "--handler", "http://localhost/"], "needs a dot"),
        (&["--event", "ONCRMCHATUSERDELETE", "--handler", "ftp://127.0.0.1/"], "only http and https"),
        (&["--handler", "http://127.0.0.1:9/"], "--event"),
    ];
    for (args, expected) in cases {
        let all: Vec<&str> = ["webhook", "add", "--outgoing"].into_iter().chain(args.iter().copied()).collect();
        let run = app.cli(&all);
        assert!(!run.ok, "{all:?} was accepted: {}", run.stdout);
        assert!(run.stderr.contains(expected), "{all:?}: {}", run.stderr);
    }
    let scoped = app.cli(&["webhook", "add", "--outgoing", "--user", "1", "--event", "ONCRMCHATUSERDELETE"]);
    assert!(!scoped.ok, "--user is for inbound webhooks: {}", scoped.stdout);
    let listed = app.cli_ok(&["webhook", "list"]);
    assert!(!listed.contains("outgoing"), "nothing was stored:\n{listed}");
}

#[tokio::test]
async fn outgoing_webhooks_are_part_of_the_portal_state() {
    let sink = Sink::start().await;
    let fixture = crate::helpers::demo_with(|f| {
        f["outgoing_webhooks"] = json!([{"handler": sink.url, "events": ["ONCRMCHATUSERDELETE"],
                                         "application_token": "outgoing-token-from-the-file"}]);
    });
    let app = crate::helpers::spawn_app_with_args(fixture, &["--control-token", crate::events::CONTROL_TOKEN]).await;
    let exported = app.export()["outgoing_webhooks"].clone();
    let id = exported[0]["id"].as_i64().unwrap_or_else(|| panic!("an id: {exported}"));
    assert_eq!(
        exported,
        json!([{"id": id, "handler": sink.url, "events": ["ONCRMCHATUSERDELETE"],
                "application_token": "outgoing-token-from-the-file"}])
    );
    remove_operator(&app).await;
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(delivery.field("auth[application_token]").as_deref(), Some("outgoing-token-from-the-file"));
    assert_eq!(delivery.field("event_handler_id"), Some(id.to_string()));

    // One added since start-up is gone after a reset; the file's comes back as it was.
    add_outgoing(&app, "ONCRMCHATUSERADD", &sink.url);
    assert_eq!(app.export()["outgoing_webhooks"].as_array().map(Vec::len), Some(2));
    let reset = crate::events::control(&app, "/_crmchat/reset", json!({})).await;
    assert_eq!(reset.status, 200, "{}", reset.text);
    assert_eq!(app.export()["outgoing_webhooks"], exported);
}

#[tokio::test]
async fn a_bad_outgoing_webhook_in_a_state_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    let state = crate::helpers::demo_with(|f| {
        f["outgoing_webhooks"] = json!([
            {"handler": "http://127.0.0.1:9/", "events": ["ONAPPTEST"], "application_token": "t1"},
            {"handler": "http://localhost/", "events": [], "application_token": "t1"},
        ]);
    });
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    let out = crate::helpers::load_file(dir.path(), &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for path in [
        "outgoing_webhooks[0].events[0]",
        "outgoing_webhooks[1].handler",
        "outgoing_webhooks[1].events",
        "outgoing_webhooks[1]: duplicate application_token",
    ] {
        assert!(stderr.contains(path), "{path} in:\n{stderr}");
    }
}
