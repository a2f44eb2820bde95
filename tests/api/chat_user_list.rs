//! `im.chat.user.list` [crmchat]: the members of a chat in join order, for members, admins and readers of a
//! bound CRM record.

use serde_json::{Value, json};

use crate::helpers::*;

const LIST: &str = "im.chat.user.list";

const EMPTY: (&str, &str) = ("CHAT_ID_EMPTY", "Chat ID can't be empty");
const NOT_FOUND: (&str, &str) = ("CHAT_NOT_FOUND", "Chat not found");

fn assert_members(resp: &Resp, members: &[i64]) {
    assert_success(resp, json!(members));
    assert!(resp.body["result"].as_array().unwrap().iter().all(Value::is_i64), "integer ids: {}", resp.text);
}

fn access_denied(resp: &Resp) {
    assert_error(resp, 403, "ACCESS_DENIED", "Access denied!");
}

/// Nina (15) reads nothing; Owen (46) reads his own deals only; chat 8781 is bound to company 3 only.
fn fixture() -> Value {
    demo_with(|f| {
        add_user(f, json!({"id": 46, "name": "Owen", "crm_read": {"deal": "own"}}));
        f["chats"].as_array_mut().unwrap().push(json!({
            "id": 8781, "line": 1, "connector": "livechat", "author": 14, "members": [14, 30, 15],
            "sessions": [{"id": 550, "status": "close", "modified": "2026-11-10T10:00:00Z",
                          "crm": [{"type": "company", "id": 3}]}]
        }));
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook(f, 46, "owenwebhookcode46");
    })
}

#[tokio::test]
async fn members_in_join_order() {
    let app = spawn_app_with(fixture()).await;
    assert_members(&app.call(LIST, json!({"CHAT_ID": 8773})).await, &[12, 14, 20, 30]);
    assert_members(&app.call(LIST, json!({"CHAT_ID": "8774"})).await, &[14, 30]);
    // Lower-case `chat_id` is accepted too.
    assert_members(&app.call(LIST, json!({"chat_id": 8775})).await, &[14, 31]);
    assert_members(&app.post_form(&app.method_path(LIST), "chat_id=8776").await, &[12, 32]);
    assert_members(&app.get(&format!("{}?CHAT_ID=8781", app.method_path(LIST))).await, &[14, 30, 15]);
    let resp = app.call(LIST, json!({"CHAT_ID": 8773})).await;
    assert!(resp.text.starts_with(r#"{"result":[12,14,20,30],"time":{"#), "{}", resp.text);
}

#[tokio::test]
async fn join_order_is_the_fixtures_order() {
    let fixture = demo_with(|f| {
        fixture_chat(f, 8773)["members"] = json!([30, 20, 14, 12]);
    });
    let app = spawn_app_with(fixture).await;
    assert_members(&app.call(LIST, json!({"CHAT_ID": 8773})).await, &[30, 20, 14, 12]);
}

#[tokio::test]
async fn chat_id_empty() {
    let app = spawn_app().await;
    expect(&app.call(LIST, json!({})).await, 400, EMPTY);
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([])] {
        let resp = app.call(LIST, json!({"CHAT_ID": empty.clone()})).await;
        assert_eq!(resp.body["error"], "CHAT_ID_EMPTY", "CHAT_ID {empty}: {}", resp.text);
        expect(&resp, 400, EMPTY);
    }
    // Other spellings are not read.
    expect(&app.call(LIST, json!({"Chat_Id": 8773})).await, 400, EMPTY);
    expect(&app.post_form(&app.method_path(LIST), "").await, 400, EMPTY);
}

#[tokio::test]
async fn chat_not_found() {
    let app = spawn_app().await;
    expect(&app.call(LIST, json!({"CHAT_ID": 999999})).await, 400, NOT_FOUND);
    expect(&app.call(LIST, json!({"chat_id": "999999"})).await, 400, NOT_FOUND);
}

#[tokio::test]
async fn access_for_members_admins_and_crm_readers() {
    let app = spawn_app_with(fixture()).await;
    let nina = hook(15, "ninawebhookcode15");
    let owen = hook(46, "owenwebhookcode46");
    let oleg = hook(12, "operatorhookcode12");
    // Nina: not a member of 8773, not an admin, reads no CRM record.
    access_denied(&app.call_as(&nina, LIST, json!({"CHAT_ID": 8773})).await);
    assert_eq!(
        app.call_as(&nina, LIST, json!({"CHAT_ID": 8773})).await.text,
        r#"{"error":"ACCESS_DENIED","error_description":"Access denied!"}"#
    );
    // Owen reads deals as "own" and is neither responsible for nor observer of deal 288.
    access_denied(&app.call_as(&owen, LIST, json!({"CHAT_ID": 8773})).await);
    access_denied(&app.call_as(&owen, LIST, json!({"CHAT_ID": 8774})).await);
    // A member: Nina is in chat 8781, although she reads no company.
    assert_members(&app.call_as(&nina, LIST, json!({"CHAT_ID": 8781})).await, &[14, 30, 15]);
    // Oleg is in neither 8781 nor 8774, reads no company, reads deal 288 as its responsible user: the closed
    // session of 8774 binds it to deal 288.
    access_denied(&app.call_as(&oleg, LIST, json!({"CHAT_ID": 8781})).await);
    assert_members(&app.call_as(&oleg, LIST, json!({"CHAT_ID": 8774})).await, &[14, 30]);
    // Leads: Oleg reads them all; chat 8775 is lead 101's.
    assert_members(&app.call_as(&oleg, LIST, json!({"CHAT_ID": 8775})).await, &[14, 31]);
    // The admin is a member of none of them.
    for (chat, members) in [(8773, vec![12, 14, 20, 30]), (8781, vec![14, 30, 15]), (8776, vec![12, 32])] {
        assert_members(&app.call(LIST, json!({"CHAT_ID": chat})).await, &members);
    }
    // CHAT_ID_EMPTY and CHAT_NOT_FOUND are answered whoever asks.
    expect(&app.call_as(&nina, LIST, json!({})).await, 400, EMPTY);
    expect(&app.call_as(&nina, LIST, json!({"CHAT_ID": 999999})).await, 400, NOT_FOUND);
}

#[tokio::test]
async fn needs_the_im_scope() {
    let fixture = demo_with(|f| {
        add_webhook_with_scopes(f, 1, "openlinesonlycode1", &["imopenlines"]);
        add_webhook_with_scopes(f, 1, "imonlywebhookcode1", &["im"]);
    });
    let app = spawn_app_with(fixture).await;
    let resp = app.call_as(&hook(1, "openlinesonlycode1"), LIST, json!({"CHAT_ID": 8773})).await;
    assert_error(
        &resp,
        401,
        "insufficient_scope",
        "The request requires higher privileges than provided by the webhook token",
    );
    assert_members(
        &app.call_as(&hook(1, "imonlywebhookcode1"), LIST, json!({"CHAT_ID": 8773})).await,
        &[12, 14, 20, 30],
    );
}
