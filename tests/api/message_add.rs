//! `imopenlines.crm.message.add`: the order of its checks in methods.md, and the stored message read back from
//! `state export` (`chats[].messages`).

use serde_json::{Value, json};

use crate::helpers::*;

const ADD_MESSAGE: &str = "imopenlines.crm.message.add";

const CALLER_NO_ACCESS: (&str, &str) = ("ACCESS_DENIED", "Access denied! You dont have access to this action");
const USER_NO_ACCESS: (&str, &str) = ("ACCESS_DENIED", "Access denied! User dont have access to this entity");
const NOT_IN_CRM: (&str, &str) = ("CHAT_NOT_IN_CRM", "Chat does not belong to the CRM entity being checked");
const NOT_ADDED: (&str, &str) = ("MESSAGE_ADD_ERROR", "Message isn't added");

/// A message from `user` into deal 288's chat 8773.
fn message(user: Value) -> Value {
    json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user, "CHAT_ID": 8773, "MESSAGE": "Hello"})
}

const EMPTIES: [&str; 7] = ["null", "\"\"", "\"0\"", "0", "false", "[]", "{}"];

fn empties() -> Vec<Value> {
    EMPTIES.iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

/// A success: the new message id as a JSON integer.
fn message_id(resp: &Resp) -> i64 {
    assert_eq!(resp.status, 200, "{}", resp.text);
    let id = resp.body["result"].as_i64().unwrap_or_else(|| panic!("the message id is a JSON integer: {}", resp.text));
    assert_success(resp, json!(id));
    id
}

fn messages(export: &Value, chat_id: i64) -> Vec<Value> {
    chat(export, chat_id)["messages"].as_array().unwrap().clone()
}

fn fixture() -> Value {
    demo_with(|f| {
        add_user(f, json!({"id": 46, "name": "Owen", "crm_read": {"deal": "own"}}));
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook(f, 46, "owenwebhookcode46");
    })
}

#[tokio::test]
async fn crm_entity_type_null_first() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    assert_null_argument(
        &app.call(ADD_MESSAGE, without(message(json!(12)), "CRM_ENTITY_TYPE")).await,
        "CRM_ENTITY_TYPE",
    );
    for empty in empties() {
        let resp = app.call(ADD_MESSAGE, with(message(json!(12)), "CRM_ENTITY_TYPE", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY_TYPE", "CRM_ENTITY_TYPE {empty}: {}", resp.text);
        assert_null_argument(&resp, "CRM_ENTITY_TYPE");
    }
    // Before everything else.
    assert_null_argument(&app.call(ADD_MESSAGE, json!({})).await, "CRM_ENTITY_TYPE");
    let all_bad = json!({"CRM_ENTITY": "abc", "USER_ID": "x", "CHAT_ID": -5});
    assert_null_argument(&app.call(ADD_MESSAGE, all_bad).await, "CRM_ENTITY_TYPE");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn crm_entity_null_then_type() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    assert_null_argument(&app.call(ADD_MESSAGE, without(message(json!(12)), "CRM_ENTITY")).await, "CRM_ENTITY");
    for empty in empties() {
        let resp = app.call(ADD_MESSAGE, with(message(json!(12)), "CRM_ENTITY", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {empty}: {}", resp.text);
        assert_null_argument(&resp, "CRM_ENTITY");
    }
    for entity in [json!("abc"), json!("12abc"), json!("0.5"), json!(-1), json!([288])] {
        let resp = app.call(ADD_MESSAGE, with(message(json!(12)), "CRM_ENTITY", entity.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {entity}: {}", resp.text);
        assert_invalid_argument(&resp, "CRM_ENTITY");
    }
    // Before USER_ID, CHAT_ID and MESSAGE.
    assert_null_argument(
        &app.call(ADD_MESSAGE, json!({"CRM_ENTITY_TYPE": "deal", "USER_ID": "x"})).await,
        "CRM_ENTITY",
    );
    let bad = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "abc", "CHAT_ID": "x"});
    assert_invalid_argument(&app.call(ADD_MESSAGE, bad).await, "CRM_ENTITY");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn user_id_null_then_type() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    assert_null_argument(&app.call(ADD_MESSAGE, without(message(json!(0)), "USER_ID")).await, "USER_ID");
    for empty in empties() {
        let resp = app.call(ADD_MESSAGE, message(empty.clone())).await;
        assert_eq!(resp.body["argument"], "USER_ID", "USER_ID {empty}: {}", resp.text);
        assert_null_argument(&resp, "USER_ID");
    }
    for user in [json!("abc"), json!("12abc"), json!("1.5"), json!(1.5), json!([12]), json!({"a": 12})] {
        let resp = app.call(ADD_MESSAGE, message(user.clone())).await;
        assert_eq!(resp.body["argument"], "USER_ID", "USER_ID {user}: {}", resp.text);
        assert_invalid_argument(&resp, "USER_ID");
    }
    // Before CHAT_ID and MESSAGE.
    let bad = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "CHAT_ID": "x"});
    assert_null_argument(&app.call(ADD_MESSAGE, bad.clone()).await, "USER_ID");
    assert_invalid_argument(&app.call(ADD_MESSAGE, with(bad, "USER_ID", json!("abc"))).await, "USER_ID");
    assert_eq!(app.export(), before);
}

/// methods.md, "Parameter reading shared by these methods": "`USER_ID`: an integer ≤ 0 (`0`, `"-3"`) counts as
/// missing, as on the reference."
#[tokio::test]
async fn user_id_not_positive_counts_as_missing() {
    let app = spawn_app_with(fixture()).await;
    for user in [json!("-3"), json!(-3)] {
        let resp = app.call(ADD_MESSAGE, message(user.clone())).await;
        assert_eq!(
            resp.body["error_description"], "Argument 'USER_ID' is null or empty",
            "USER_ID {user}: {}",
            resp.text
        );
        assert_null_argument(&resp, "USER_ID");
    }
}

#[tokio::test]
async fn chat_id_null_then_type() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    assert_null_argument(&app.call(ADD_MESSAGE, without(message(json!(12)), "CHAT_ID")).await, "CHAT_ID");
    for empty in empties() {
        let resp = app.call(ADD_MESSAGE, with(message(json!(12)), "CHAT_ID", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CHAT_ID", "CHAT_ID {empty}: {}", resp.text);
        assert_null_argument(&resp, "CHAT_ID");
    }
    for chat in [json!(-5), json!("-5"), json!("abc"), json!("8773abc"), json!("+8773"), json!(1.5), json!([8773])] {
        let resp = app.call(ADD_MESSAGE, with(message(json!(12)), "CHAT_ID", chat.clone())).await;
        assert_eq!(resp.body["argument"], "CHAT_ID", "CHAT_ID {chat}: {}", resp.text);
        assert_invalid_argument(&resp, "CHAT_ID");
    }
    // Before MESSAGE.
    let bad = without(without(message(json!(12)), "MESSAGE"), "CHAT_ID");
    assert_null_argument(&app.call(ADD_MESSAGE, bad.clone()).await, "CHAT_ID");
    assert_invalid_argument(&app.call(ADD_MESSAGE, with(bad, "CHAT_ID", json!("x"))).await, "CHAT_ID");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn message_null() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    assert_null_argument(&app.call(ADD_MESSAGE, without(message(json!(12)), "MESSAGE")).await, "MESSAGE");
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([])] {
        let resp = app.call(ADD_MESSAGE, with(message(json!(12)), "MESSAGE", empty.clone())).await;
        assert_eq!(resp.body["argument"], "MESSAGE", "MESSAGE {empty}: {}", resp.text);
        assert_null_argument(&resp, "MESSAGE");
    }
    // Before the access checks: a caller who reads nothing, an author who reads nothing, a foreign chat.
    let nina = hook(15, "ninawebhookcode15");
    assert_null_argument(&app.call_as(&nina, ADD_MESSAGE, without(message(json!(12)), "MESSAGE")).await, "MESSAGE");
    assert_null_argument(&app.call(ADD_MESSAGE, without(message(json!(15)), "MESSAGE")).await, "MESSAGE");
    let foreign = with(without(message(json!(12)), "MESSAGE"), "CHAT_ID", json!(8774));
    assert_null_argument(&app.call(ADD_MESSAGE, foreign).await, "MESSAGE");
    // Keys are case-sensitive.
    let lower = with(without(message(json!(12)), "MESSAGE"), "message", json!("Hello"));
    assert_null_argument(&app.call(ADD_MESSAGE, lower).await, "MESSAGE");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn caller_cannot_read_the_record() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    let nina = hook(15, "ninawebhookcode15");
    let owen = hook(46, "owenwebhookcode46");
    expect(&app.call_as(&nina, ADD_MESSAGE, message(json!(12))).await, 403, CALLER_NO_ACCESS);
    expect(&app.call_as(&owen, ADD_MESSAGE, message(json!(12))).await, 403, CALLER_NO_ACCESS);
    // Unknown type: nobody reads it.
    expect(
        &app.call(ADD_MESSAGE, with(message(json!(12)), "CRM_ENTITY_TYPE", json!("invoice"))).await,
        403,
        CALLER_NO_ACCESS,
    );
    // Before the author's access, the chat check and the membership check.
    expect(&app.call_as(&nina, ADD_MESSAGE, message(json!(15))).await, 403, CALLER_NO_ACCESS);
    expect(
        &app.call_as(&nina, ADD_MESSAGE, with(message(json!(12)), "CHAT_ID", json!(8774))).await,
        403,
        CALLER_NO_ACCESS,
    );
    expect(&app.call_as(&nina, ADD_MESSAGE, message(json!(1))).await, 403, CALLER_NO_ACCESS);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn author_cannot_read_the_record() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // Nina reads nothing; Owen reads his own deals only.
    expect(&app.call(ADD_MESSAGE, message(json!(15))).await, 403, USER_NO_ACCESS);
    expect(&app.call(ADD_MESSAGE, message(json!(46))).await, 403, USER_NO_ACCESS);
    // Before the chat check and the membership check.
    expect(&app.call(ADD_MESSAGE, with(message(json!(15)), "CHAT_ID", json!(8774))).await, 403, USER_NO_ACCESS);
    expect(&app.call(ADD_MESSAGE, with(message(json!(15)), "CHAT_ID", json!(999999))).await, 403, USER_NO_ACCESS);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn chat_not_in_the_active_list() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // 8774: deal 288's closed chat (14 is a member); 8775: lead 101's chat; 999999: no such chat.
    for (chat, author) in [(8774, 14), (8775, 14), (999999, 12)] {
        let resp = app.call(ADD_MESSAGE, with(message(json!(author)), "CHAT_ID", json!(chat))).await;
        assert_eq!(resp.body["error"], "CHAT_NOT_IN_CRM", "CHAT_ID {chat}: {}", resp.text);
        expect(&resp, 400, NOT_IN_CRM);
    }
    // Contact 7's chat came through the inactive Telegram connector; 12 is a member.
    let contact =
        json!({"CRM_ENTITY_TYPE": "contact", "CRM_ENTITY": 7, "USER_ID": 12, "CHAT_ID": 8776, "MESSAGE": "Hi"});
    expect(&app.call(ADD_MESSAGE, contact).await, 400, NOT_IN_CRM);
    // Before the membership check: the admin is in neither chat.
    expect(&app.call(ADD_MESSAGE, with(message(json!(1)), "CHAT_ID", json!(8774))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn author_not_a_member() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // The admin and 31 (lead 101's client) read deal 288 but are not in chat 8773.
    expect(&app.call(ADD_MESSAGE, message(json!(1))).await, 400, NOT_ADDED);
    expect(&app.call(ADD_MESSAGE, message(json!(31))).await, 400, NOT_ADDED);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn success_stores_the_message() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    let text = "Привет! <b>5 > 3</b> & \"quotes\" / 'apostrophes'\nsecond line";
    let id = message_id(&app.call(ADD_MESSAGE, with(message(json!(12)), "MESSAGE", json!(text))).await);
    let after = app.export();
    let stored = messages(&after, 8773);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(stored[..2], messages(&before, 8773)[..]);
    let new = &stored[2];
    let keys: Vec<&str> = new.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "author", "text", "date"], "{new}");
    assert_eq!((new["id"].as_i64(), &new["author"], &new["text"]), (Some(id), &json!(12), &json!(text)));
    let date = chrono::DateTime::parse_from_rfc3339(new["date"].as_str().unwrap()).expect("the date is RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(date).num_seconds().abs();
    assert!(age < 120, "the message is dated now: {new}");
    assert_ne!(id, 1001);
    assert_ne!(id, 1002);
    // Nothing else changed: same members, same other chats.
    let mut expected = before.clone();
    for chat in expected["chats"].as_array_mut().unwrap() {
        if chat["id"] == 8773 {
            chat["messages"] = json!(stored);
        }
    }
    assert_eq!(after, expected);
}

#[tokio::test]
async fn success_for_any_member_and_in_order() {
    let app = spawn_app_with(fixture()).await;
    // The bot and the client are members and read every record; strings work as well as numbers.
    let bot = message_id(&app.call(ADD_MESSAGE, with(message(json!(20)), "MESSAGE", json!("Bot here"))).await);
    let strings = json!({"CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY": "288", "USER_ID": "30", "CHAT_ID": "8773",
                         "MESSAGE": "Client here"});
    let client = message_id(&app.call(ADD_MESSAGE, strings).await);
    let form = "CRM_ENTITY_TYPE=lead&CRM_ENTITY=101&USER_ID=14&CHAT_ID=8775&MESSAGE=a+b%26c%3Dd";
    let olga = message_id(&app.post_form(&app.method_path(ADD_MESSAGE), form).await);
    assert!(bot != client && client != olga && bot != olga, "distinct ids: {bot} {client} {olga}");
    let export = app.export();
    let in_8773: Vec<Value> =
        messages(&export, 8773).iter().map(|m| json!([m["id"], m["author"], m["text"]])).collect();
    assert_eq!(in_8773[2..], [json!([bot, 20, "Bot here"]), json!([client, 30, "Client here"])]);
    let in_8775 = messages(&export, 8775);
    assert_eq!(in_8775.len(), 1);
    assert_eq!(
        (&in_8775[0]["id"], &in_8775[0]["author"], &in_8775[0]["text"]),
        (&json!(olga), &json!(14), &json!("a b&c=d"))
    );
}
