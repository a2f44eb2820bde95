//! `imopenlines.crm.chat.get`: its check table in methods.md, `ACTIVE_ONLY`, the order of the list, and which
//! chats are left out.

use serde_json::{Value, json};

use crate::helpers::*;

const GET: &str = "imopenlines.crm.chat.get";

const NO_ACCESS: (&str, &str) = ("ACCESS_DENIED", "Access denied! You dont have access to this action");

fn record(entity_type: Value, entity: Value) -> Value {
    json!({"CRM_ENTITY_TYPE": entity_type, "CRM_ENTITY": entity})
}

fn deal() -> Value {
    record(json!("deal"), json!(288))
}

fn item(chat_id: &str, connector_id: &str, connector_title: &str) -> Value {
    json!({"CHAT_ID": chat_id, "CONNECTOR_ID": connector_id, "CONNECTOR_TITLE": connector_title})
}

fn livechat(chat_id: &str) -> Value {
    item(chat_id, "livechat", "Online chat")
}

/// A success whose result is the list `expected`, with every `CHAT_ID` a string.
fn assert_list(resp: &Resp, expected: Value) {
    assert_success(resp, expected);
    for chat in resp.body["result"].as_array().unwrap() {
        assert!(chat["CHAT_ID"].is_string(), "CHAT_ID is a string: {}", resp.text);
    }
}

/// Deal 288 with chats in every situation. Sessions (newest first): 8779 active through an inactive connector
/// (11-23), 8778 closed (11-22), 8780 queued (11-21), 8773 active (11-20), 8777 active through line 2's
/// Telegram (11-19), 8774 closed (11-18), 8778 active (11-17).
fn ordering_fixture() -> Value {
    demo_with(|f| {
        f["lines"].as_array_mut().unwrap().push(json!({
            "id": 2, "name": "Support", "queue": [14],
            "connectors": [{"id": "telegrambot", "title": "Support/Telegram", "active": true}]
        }));
        let chats = f["chats"].as_array_mut().unwrap();
        let session = |id: i64, status: &str, modified: &str| json!({"id": id, "status": status, "modified": modified, "crm": [{"type": "deal", "id": 288}]});
        chats.push(json!({
            "id": 8777, "line": 2, "connector": "telegrambot", "author": 14, "members": [14, 30],
            "sessions": [session(540, "answer", "2026-11-19T12:00:00Z")]
        }));
        chats.push(json!({
            "id": 8778, "line": 1, "connector": "livechat", "author": 12, "members": [12, 30],
            "sessions": [session(541, "client", "2026-11-17T12:00:00Z"), session(542, "close", "2026-11-22T12:00:00Z")]
        }));
        chats.push(json!({
            "id": 8779, "line": 1, "connector": "telegrambot", "author": 12, "members": [12, 32],
            "sessions": [session(543, "operator", "2026-11-23T12:00:00Z")]
        }));
        chats.push(json!({
            "id": 8780, "line": 1, "connector": "livechat", "author": null, "members": [30],
            "sessions": [session(544, "new", "2026-11-21T12:00:00Z")]
        }));
    })
}

#[tokio::test]
async fn row1_type_empty() {
    let app = spawn_app().await;
    assert_null_argument(&app.call(GET, json!({"CRM_ENTITY": 288})).await, "CRM_ENTITY_TYPE");
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({})] {
        let resp = app.call(GET, with(deal(), "CRM_ENTITY_TYPE", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY_TYPE", "CRM_ENTITY_TYPE {empty}: {}", resp.text);
        assert_null_argument(&resp, "CRM_ENTITY_TYPE");
    }
    // Row 1 before 2 and 3.
    assert_null_argument(&app.call(GET, json!({})).await, "CRM_ENTITY_TYPE");
    assert_null_argument(&app.call(GET, record(json!(""), json!("abc"))).await, "CRM_ENTITY_TYPE");
    assert_null_argument(
        &app.call(GET, json!({"crm_entity_type": "deal", "CRM_ENTITY": 288})).await,
        "CRM_ENTITY_TYPE",
    );
}

#[tokio::test]
async fn row2_entity_empty() {
    let app = spawn_app().await;
    assert_null_argument(&app.call(GET, json!({"CRM_ENTITY_TYPE": "deal"})).await, "CRM_ENTITY");
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({})] {
        let resp = app.call(GET, with(deal(), "CRM_ENTITY", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {empty}: {}", resp.text);
        assert_null_argument(&resp, "CRM_ENTITY");
    }
    // Row 2 before 4 (unknown type).
    assert_null_argument(&app.call(GET, record(json!("invoice"), json!(""))).await, "CRM_ENTITY");
}

#[tokio::test]
async fn row3_entity_not_numeric_or_not_positive() {
    let fixture = demo_with(|f| {
        add_webhook(f, 15, "ninawebhookcode15");
    });
    let app = spawn_app_with(fixture).await;
    for entity in [json!("abc"), json!("12abc"), json!("0.5"), json!(0.5), json!(-1), json!("-288"), json!([288])] {
        let resp = app.call(GET, with(deal(), "CRM_ENTITY", entity.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {entity}: {}", resp.text);
        assert_invalid_argument(&resp, "CRM_ENTITY");
    }
    // Row 3 before 4: an unknown type, a caller who reads nothing.
    assert_invalid_argument(&app.call(GET, record(json!("invoice"), json!("abc"))).await, "CRM_ENTITY");
    let nina = hook(15, "ninawebhookcode15");
    assert_invalid_argument(&app.call_as(&nina, GET, with(deal(), "CRM_ENTITY", json!(-3))).await, "CRM_ENTITY");
}

#[tokio::test]
async fn row4_caller_cannot_read_the_record() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 46, "name": "Owen", "crm_read": {"deal": "own"}}));
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook(f, 46, "owenwebhookcode46");
    });
    let app = spawn_app_with(fixture).await;
    let nina = hook(15, "ninawebhookcode15");
    let owen = hook(46, "owenwebhookcode46");
    let oleg = hook(12, "operatorhookcode12");
    let resp = app.call_as(&nina, GET, deal()).await;
    expect(&resp, 403, NO_ACCESS);
    // Sic: no apostrophe.
    assert_eq!(
        resp.text,
        r#"{"error":"ACCESS_DENIED","error_description":"Access denied! You dont have access to this action"}"#
    );
    expect(&app.call_as(&nina, GET, with(deal(), "ACTIVE_ONLY", json!("N"))).await, 403, NO_ACCESS);
    expect(&app.call_as(&owen, GET, deal()).await, 403, NO_ACCESS);
    // Oleg reads no companies, even one without chats.
    expect(&app.call_as(&oleg, GET, record(json!("company"), json!(3))).await, 403, NO_ACCESS);
    // Nobody reads a record of an unknown type.
    for entity_type in ["invoice", "deals", " deal", "2"] {
        let resp = app.call(GET, record(json!(entity_type), json!(288))).await;
        assert_eq!(resp.status, 403, "CRM_ENTITY_TYPE {entity_type}: {}", resp.text);
        expect(&resp, 403, NO_ACCESS);
    }
    // "own" as the responsible user.
    assert_list(&app.call_as(&oleg, GET, deal()).await, json!([livechat("8773")]));
}

#[tokio::test]
async fn row5_success_active_only_by_default() {
    let app = spawn_app().await;
    let before = app.export();
    assert_list(&app.call(GET, deal()).await, json!([livechat("8773")]));
    assert_list(&app.call(GET, record(json!("lead"), json!(101))).await, json!([livechat("8775")]));
    // The type in any case, the entity numeric in PHP's sense.
    for entity in [json!("288"), json!(" 288"), json!("288.0"), json!("2.88e2")] {
        let resp = app.call(GET, record(json!("DEAL"), entity.clone())).await;
        assert_eq!(resp.status, 200, "CRM_ENTITY {entity}: {}", resp.text);
        assert_list(&resp, json!([livechat("8773")]));
    }
    let resp = app.post_form(&app.method_path(GET), "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288").await;
    assert_list(&resp, json!([livechat("8773")]));
    assert!(resp.text.starts_with(r#"{"result":[{"CHAT_ID":"8773","#), "{}", resp.text);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row5_active_only_unless_exactly_n() {
    let app = spawn_app().await;
    let all = json!([livechat("8773"), livechat("8774")]);
    let active = json!([livechat("8773")]);
    assert_list(&app.call(GET, with(deal(), "ACTIVE_ONLY", json!("N"))).await, all.clone());
    let resp = app.post_form(&app.method_path(GET), "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&ACTIVE_ONLY=N").await;
    assert_list(&resp, all.clone());
    let resp = app.get(&format!("{}?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&ACTIVE_ONLY=N", app.method_path(GET))).await;
    assert_list(&resp, all);
    for value in
        [json!("Y"), json!("n"), json!(""), json!("No"), json!(" N"), json!("N "), json!(false), json!(0), json!("0")]
    {
        let resp = app.call(GET, with(deal(), "ACTIVE_ONLY", value.clone())).await;
        assert_eq!(resp.body["result"], active, "ACTIVE_ONLY {value}: {}", resp.text);
        assert_list(&resp, active.clone());
    }
    // Keys are case-sensitive: `active_only` is not read.
    assert_list(&app.call(GET, with(deal(), "active_only", json!("N"))).await, active);
}

#[tokio::test]
async fn row5_empty_list() {
    let app = spawn_app().await;
    // Company 3 has no session; deal 999999 does not exist.
    for params in [record(json!("company"), json!(3)), record(json!("deal"), json!(999999))] {
        for active_only in ["Y", "N"] {
            let resp = app.call(GET, with(params.clone(), "ACTIVE_ONLY", json!(active_only))).await;
            assert_list(&resp, json!([]));
            assert!(resp.text.starts_with(r#"{"result":[],"time":{"#), "{}", resp.text);
        }
    }
}

#[tokio::test]
async fn row5_inactive_connector_is_left_out_of_both_lists() {
    let app = spawn_app().await;
    // Contact 7's only chat, 8776, came through the inactive Telegram connector, with an active session.
    let contact = record(json!("contact"), json!(7));
    assert_list(&app.call(GET, contact.clone()).await, json!([]));
    assert_list(&app.call(GET, with(contact, "ACTIVE_ONLY", json!("N"))).await, json!([]));
}

#[tokio::test]
async fn row5_newest_session_first_each_chat_once() {
    let app = spawn_app_with(ordering_fixture()).await;
    let telegram = item("8777", "telegrambot", "Support/Telegram");
    assert_list(&app.call(GET, deal()).await, json!([livechat("8773"), telegram.clone(), livechat("8778")]));
    assert_list(
        &app.call(GET, with(deal(), "ACTIVE_ONLY", json!("N"))).await,
        json!([livechat("8778"), livechat("8780"), livechat("8773"), telegram, livechat("8774")]),
    );
}

#[tokio::test]
async fn row5_no_im_module_check() {
    let fixture = demo_with(|f| {
        f["portal"]["modules"] = json!(["crm", "imopenlines"]);
    });
    let app = spawn_app_with(fixture).await;
    assert_list(&app.call(GET, deal()).await, json!([livechat("8773")]));
    assert_list(
        &app.call(GET, with(deal(), "ACTIVE_ONLY", json!("N"))).await,
        json!([livechat("8773"), livechat("8774")]),
    );
}

/// `/` may or may not be escaped in JSON (`\/`): clients parse the JSON, so only the parsed value matters.
#[tokio::test]
async fn slashes_in_titles_parse_to_the_same_text() {
    let app = spawn_app_with(ordering_fixture()).await;
    let resp = app.call(GET, deal()).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["result"][1]["CONNECTOR_TITLE"], "Support/Telegram");
    assert!(
        resp.text.contains(r#""Support/Telegram""#) || resp.text.contains(r#""Support\/Telegram""#),
        "{}",
        resp.text
    );
}
