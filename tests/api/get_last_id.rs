//! `imopenlines.crm.chat.getLastId`: its check table in methods.md, in order, including every failure the
//! reference folds into "Could not find CRM entity".

use serde_json::{Value, json};

use crate::helpers::*;

const LAST_ID: &str = "imopenlines.crm.chat.getLastId";

const EMPTY_CRM: (&str, &str) = ("CRM_CHAT_EMPTY_CRM_DATA", "Empty CRM data");
const NOT_FOUND: (&str, &str) = ("CRM_CHAT_EMPTY_CRM_DATA", "Could not find CRM entity");

fn assert_last(resp: &Resp, chat_id: i64) {
    assert_success(resp, json!(chat_id));
    assert!(resp.body["result"].is_i64(), "the chat id is a JSON integer: {}", resp.text);
}

fn record(entity_type: Value, entity: Value) -> Value {
    json!({"CRM_ENTITY_TYPE": entity_type, "CRM_ENTITY": entity})
}

#[tokio::test]
async fn row1_type_or_entity_empty() {
    let app = spawn_app().await;
    expect(&app.call(LAST_ID, json!({})).await, 400, EMPTY_CRM);
    expect(&app.call(LAST_ID, json!({"CRM_ENTITY_TYPE": "deal"})).await, 400, EMPTY_CRM);
    expect(&app.call(LAST_ID, json!({"CRM_ENTITY": 288})).await, 400, EMPTY_CRM);
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({})] {
        let resp = app.call(LAST_ID, record(empty.clone(), json!(288))).await;
        assert_eq!(resp.body["error"], "CRM_CHAT_EMPTY_CRM_DATA", "CRM_ENTITY_TYPE {empty}: {}", resp.text);
        expect(&resp, 400, EMPTY_CRM);
        let resp = app.call(LAST_ID, record(json!("deal"), empty.clone())).await;
        assert_eq!(resp.body["error"], "CRM_CHAT_EMPTY_CRM_DATA", "CRM_ENTITY {empty}: {}", resp.text);
        expect(&resp, 400, EMPTY_CRM);
    }
    // Row 1 before row 2; keys are case-sensitive.
    expect(&app.call(LAST_ID, record(json!(""), json!("abc"))).await, 400, EMPTY_CRM);
    expect(&app.call(LAST_ID, json!({"crm_entity_type": "deal", "crm_entity": 288})).await, 400, EMPTY_CRM);
}

#[tokio::test]
async fn row2_entity_not_numeric_or_not_positive() {
    let app = spawn_app().await;
    for entity in [json!("abc"), json!("12abc"), json!("0.5"), json!(0.5), json!(-1), json!("-288"), json!([288])] {
        let resp = app.call(LAST_ID, record(json!("deal"), entity.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {entity}: {}", resp.text);
        assert_invalid_argument(&resp, "CRM_ENTITY");
    }
    // Row 2 before row 3's folded failures (unknown type).
    assert_invalid_argument(&app.call(LAST_ID, record(json!("invoice"), json!("abc"))).await, "CRM_ENTITY");
}

#[tokio::test]
async fn row3_no_last_chat() {
    let app = spawn_app().await;
    // Company 3 exists but has no sessions; deal 999999 does not exist.
    expect(&app.call(LAST_ID, record(json!("company"), json!(3))).await, 400, NOT_FOUND);
    expect(&app.call(LAST_ID, record(json!("deal"), json!(999999))).await, 400, NOT_FOUND);
}

#[tokio::test]
async fn row3_unknown_type() {
    let app = spawn_app().await;
    for entity_type in ["invoice", "deals", " deal", "2"] {
        let resp = app.call(LAST_ID, record(json!(entity_type), json!(288))).await;
        assert_eq!(resp.status, 400, "CRM_ENTITY_TYPE {entity_type}: {}", resp.text);
        expect(&resp, 400, NOT_FOUND);
    }
}

#[tokio::test]
async fn row3_caller_cannot_read_the_record() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 46, "name": "Owen", "crm_read": {"deal": "own"}}));
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook(f, 46, "owenwebhookcode46");
    });
    let app = spawn_app_with(fixture).await;
    let deal = record(json!("deal"), json!(288));
    // Nina reads nothing; Owen reads his own deals only.
    expect(&app.call_as(&hook(15, "ninawebhookcode15"), LAST_ID, deal.clone()).await, 400, NOT_FOUND);
    expect(&app.call_as(&hook(46, "owenwebhookcode46"), LAST_ID, deal.clone()).await, 400, NOT_FOUND);
    // Oleg reads deal 288 as its responsible user.
    assert_last(&app.call_as(&hook(12, "operatorhookcode12"), LAST_ID, deal).await, 8773);
}

#[tokio::test]
async fn row3_no_im_module() {
    let fixture = demo_with(|f| {
        f["portal"]["modules"] = json!(["crm", "imopenlines"]);
    });
    let app = spawn_app_with(fixture).await;
    expect(&app.call(LAST_ID, record(json!("deal"), json!(288))).await, 400, NOT_FOUND);
    // Rows 1 and 2 first.
    expect(&app.call(LAST_ID, record(json!("deal"), json!(0))).await, 400, EMPTY_CRM);
    assert_invalid_argument(&app.call(LAST_ID, record(json!("deal"), json!("abc"))).await, "CRM_ENTITY");
}

#[tokio::test]
async fn row4_success() {
    let app = spawn_app().await;
    let before = app.export();
    assert_last(&app.call(LAST_ID, record(json!("deal"), json!(288))).await, 8773);
    assert_last(&app.call(LAST_ID, record(json!("lead"), json!(101))).await, 8775);
    // Whatever the connector: contact 7's chat came through the inactive Telegram connector.
    assert_last(&app.call(LAST_ID, record(json!("contact"), json!(7))).await, 8776);
    // The type in any case, the entity numeric in PHP's sense.
    for entity in [json!("288"), json!(" 288"), json!("288.0"), json!("2.88e2"), json!(288.5)] {
        let resp = app.call(LAST_ID, record(json!("DeAl"), entity.clone())).await;
        assert_eq!(resp.status, 200, "CRM_ENTITY {entity}: {}", resp.text);
        assert_last(&resp, 8773);
    }
    // A form call and a GET: the result is an integer, and the answer has no `total`/`next`.
    let resp = app.post_form(&app.method_path(LAST_ID), "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288").await;
    assert_last(&resp, 8773);
    assert_eq!(resp.text.split("\"time\"").next().unwrap(), r#"{"result":8773,"#);
    let resp = app.get(&format!("{}?CRM_ENTITY_TYPE=lead&CRM_ENTITY=101", app.method_path(LAST_ID))).await;
    assert_last(&resp, 8775);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row4_the_most_recently_modified_session_wins_whatever_its_status() {
    let fixture = demo_with(|f| {
        // The closed chat 8774 now has deal 288's most recent session.
        fixture_chat(f, 8774)["sessions"][0]["modified"] = json!("2026-11-21T09:00:00Z");
        // A queued session of a new chat, older than everything.
        f["chats"].as_array_mut().unwrap().push(json!({
            "id": 8777, "line": 1, "connector": "livechat", "author": null, "members": [30],
            "sessions": [{"id": 520, "status": "new", "modified": "2026-11-01T08:00:00Z",
                          "crm": [{"type": "deal", "id": 288}, {"type": "company", "id": 3}]}]
        }));
    });
    let app = spawn_app_with(fixture).await;
    assert_last(&app.call(LAST_ID, record(json!("deal"), json!(288))).await, 8774);
    // Company 3's only session is queued: still its last chat.
    assert_last(&app.call(LAST_ID, record(json!("company"), json!(3))).await, 8777);
}

#[tokio::test]
async fn row4_several_sessions_of_one_chat() {
    let fixture = demo_with(|f| {
        // Chat 8774 gets a newer session bound to deal 288, and chat 8773 an even newer one bound to lead 101.
        fixture_chat(f, 8774)["sessions"].as_array_mut().unwrap().push(json!(
            {"id": 530, "status": "close", "modified": "2026-11-22T09:00:00Z", "crm": [{"type": "deal", "id": 288}]}
        ));
        fixture_chat(f, 8773)["sessions"].as_array_mut().unwrap().push(json!(
            {"id": 531, "status": "answer", "modified": "2026-11-23T09:00:00Z", "crm": [{"type": "lead", "id": 101}]}
        ));
    });
    let app = spawn_app_with(fixture).await;
    assert_last(&app.call(LAST_ID, record(json!("deal"), json!(288))).await, 8774);
    assert_last(&app.call(LAST_ID, record(json!("lead"), json!(101))).await, 8773);
}
