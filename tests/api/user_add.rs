//! `imopenlines.crm.chat.user.add`: every row of its check table in methods.md, in order, which row wins when
//! several fail, and what a success changes (read back with `state export` and `im.chat.user.list`).

use serde_json::{Value, json};

use crate::helpers::*;

const ADD: &str = "imopenlines.crm.chat.user.add";

const NO_IM: (&str, &str) = ("IM_NOT_INSTALLED", "Messenger is not installed.");
const NO_ACCESS: (&str, &str) = ("ACCESS_DENIED", "Access denied! You don't have access to join user to chat");
const NOT_IN_CRM: (&str, &str) = ("CHAT_NOT_IN_CRM", "Chat does not belong to the CRM entity being checked");
const NOT_ACTIVE: (&str, &str) = ("CRM_CHAT_USER_NOT_ACTIVE", "User not active");
const TARGET_NO_CRM: (&str, &str) = (
    "ACCESS_DENIED",
    "Access denied! This user does not have access to the chat because he does not have access to this CRM entity",
);
const TARGET_NO_HISTORY: (&str, &str) = (
    "ACCESS_DENIED",
    "Access denied! This user does not have access to the chat because he does not have access to this view chat \
     history",
);

/// Row 10's argument, built by the reference from the text "Empty USER_ID".
const EMPTY_USER_ARG: &str = "Empty USER_ID";

/// A success: the chat id as a JSON integer.
fn assert_added(resp: &Resp, chat_id: i64) {
    assert_success(resp, json!(chat_id));
    assert!(resp.body["result"].is_i64(), "the chat id is a JSON integer: {}", resp.text);
}

/// Deal 288 (active chat 8773) with `user`.
fn deal(user: Value) -> Value {
    json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user})
}

const OTTO: i64 = 40; // reads every record, views the history of every line: a valid target.
const DORA: i64 = 41; // cannot read deals.
const HANA: i64 = 42; // reads everything, line history "none" (join "all").
const SAM: i64 = 43; // line history "self", not in the queue.
const QUINN: i64 = 44; // line history "self", in line 1's queue.
const GONE: i64 = 45; // deactivated, reads nothing, no history.
const OWEN: i64 = 46; // reads deals as "own", neither responsible nor observer of deal 288.
const JOANNA: i64 = 47; // reads everything, line join "none".

/// The demo portal plus users for every target check, and webhooks for some of them.
fn fixture() -> Value {
    demo_with(|f| {
        add_user(f, json!({"id": OTTO, "name": "Otto", "lines": {"join": "none", "history": "all"}}));
        add_user(f, json!({"id": DORA, "name": "Dora", "crm_read": {"deal": "none"}, "lines": {"history": "all"}}));
        add_user(f, json!({"id": HANA, "name": "Hana", "lines": {"join": "all", "history": "none"}}));
        add_user(f, json!({"id": SAM, "name": "Sam"}));
        add_user(f, json!({"id": QUINN, "name": "Quinn"}));
        add_user(
            f,
            json!({"id": GONE, "name": "Gone", "active": false,
                   "crm_read": {"lead": "none", "deal": "none", "contact": "none", "company": "none"},
                   "lines": {"join": "none", "history": "none"}}),
        );
        add_user(f, json!({"id": OWEN, "name": "Owen", "crm_read": {"deal": "own"}, "lines": {"history": "all"}}));
        add_user(f, json!({"id": JOANNA, "name": "Joanna", "lines": {"join": "none", "history": "all"}}));
        f["lines"][0]["queue"] = json!([12, 14, QUINN]);
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook(f, HANA, "hanawebhookcode42");
        add_webhook(f, OWEN, "owenwebhookcode46");
        add_webhook(f, JOANNA, "joannawebhookcode47");
    })
}

fn nina() -> String {
    hook(15, "ninawebhookcode15")
}

fn oleg() -> String {
    hook(12, "operatorhookcode12")
}

/// `before` with chat `chat_id`'s members replaced, and its messages taken from `after` (methods.md does not
/// say whether the messenger posts a join notice): everything else must be unchanged.
fn expected_after(before: &Value, after: &Value, chat_id: i64, members: &[i64]) -> Value {
    let mut expected = before.clone();
    for chat in expected["chats"].as_array_mut().unwrap() {
        if chat["id"] == chat_id {
            chat["members"] = json!(members);
            chat["messages"] = crate::helpers::chat(after, chat_id)["messages"].clone();
        }
    }
    expected
}

async fn user_list(app: &TestApp, chat_id: i64) -> Value {
    let resp = app.call("im.chat.user.list", json!({"CHAT_ID": chat_id})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body["result"].clone()
}

#[tokio::test]
async fn row1_crm_entity_type_empty() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    let base = deal(json!(OTTO));
    assert_null_argument(&app.call(ADD, without(base.clone(), "CRM_ENTITY_TYPE")).await, "CRM_ENTITY_TYPE");
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({})] {
        let resp = app.call(ADD, with(base.clone(), "CRM_ENTITY_TYPE", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY_TYPE", "CRM_ENTITY_TYPE {empty}: {}", resp.text);
        assert_null_argument(&resp, "CRM_ENTITY_TYPE");
    }
    // Row 1 before every other row: an empty/invalid CRM_ENTITY, a bad CHAT_ID, an empty USER_ID.
    assert_null_argument(&app.call(ADD, json!({})).await, "CRM_ENTITY_TYPE");
    assert_null_argument(&app.call(ADD, json!({"CRM_ENTITY": "abc", "USER_ID": 0})).await, "CRM_ENTITY_TYPE");
    let all_bad = json!({"CRM_ENTITY_TYPE": "", "CRM_ENTITY": -1, "CHAT_ID": "x", "USER_ID": "abc"});
    assert_null_argument(&app.call(ADD, all_bad).await, "CRM_ENTITY_TYPE");
    // Keys are case-sensitive: `crm_entity_type` is not read.
    let lower = json!({"crm_entity_type": "deal", "CRM_ENTITY": 288, "USER_ID": OTTO});
    assert_null_argument(&app.call(ADD, lower).await, "CRM_ENTITY_TYPE");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row2_crm_entity_empty() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    let base = deal(json!(OTTO));
    assert_null_argument(&app.call(ADD, without(base.clone(), "CRM_ENTITY")).await, "CRM_ENTITY");
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({})] {
        let resp = app.call(ADD, with(base.clone(), "CRM_ENTITY", empty.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {empty}: {}", resp.text);
        assert_null_argument(&resp, "CRM_ENTITY");
    }
    // Row 2 before 3b, 4, 5, 10: a bad CHAT_ID, an unknown type, no USER_ID.
    assert_null_argument(&app.call(ADD, json!({"CRM_ENTITY_TYPE": "invoice"})).await, "CRM_ENTITY");
    let bad_chat = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "", "CHAT_ID": -5, "USER_ID": "abc"});
    assert_null_argument(&app.call(ADD, bad_chat).await, "CRM_ENTITY");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row3_crm_entity_not_numeric_or_not_positive() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    for entity in [json!("abc"), json!("12abc"), json!("0.5"), json!(0.5), json!(-1), json!("-288"), json!([288])] {
        let resp = app.call(ADD, with(deal(json!(OTTO)), "CRM_ENTITY", entity.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {entity}: {}", resp.text);
        assert_invalid_argument(&resp, "CRM_ENTITY");
    }
    // Row 3 before 3b, 4, 5 and 10.
    let params = json!({"CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": "abc", "CHAT_ID": "x"});
    assert_invalid_argument(&app.call(ADD, params).await, "CRM_ENTITY");
    assert_invalid_argument(
        &app.call_as(&nina(), ADD, with(deal(json!(0)), "CRM_ENTITY", json!(-3))).await,
        "CRM_ENTITY",
    );
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row3_accepts_numbers_in_phps_sense() {
    let app = spawn_app_with(fixture()).await;
    for entity in [json!("288"), json!(" 288"), json!("288.0"), json!("2.88e2"), json!(288.0)] {
        let resp = app.call(ADD, with(deal(json!(14)), "CRM_ENTITY", entity.clone())).await;
        assert_eq!(resp.status, 200, "CRM_ENTITY {entity}: {}", resp.text);
        assert_added(&resp, 8773);
    }
}

#[tokio::test]
async fn row3b_chat_id_malformed() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    for chat in [json!(-5), json!("-5"), json!("abc"), json!("8773abc"), json!("+8773"), json!(1.5), json!([8773])] {
        let resp = app.call(ADD, with(deal(json!(OTTO)), "CHAT_ID", chat.clone())).await;
        assert_eq!(resp.body["argument"], "CHAT_ID", "CHAT_ID {chat}: {}", resp.text);
        assert_invalid_argument(&resp, "CHAT_ID");
    }
    // Row 3b before 5 (Nina cannot read), 7 (no chat), 10 (no USER_ID).
    assert_invalid_argument(
        &app.call_as(&nina(), ADD, with(deal(json!(OTTO)), "CHAT_ID", json!("x"))).await,
        "CHAT_ID",
    );
    let company = json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "CHAT_ID": -1});
    assert_invalid_argument(&app.call(ADD, company).await, "CHAT_ID");
    assert_eq!(app.export(), before);
    // Empty CHAT_ID means "the last chat".
    for empty in [json!(null), json!(""), json!(0), json!("0")] {
        assert_added(&app.call(ADD, with(deal(json!(14)), "CHAT_ID", empty)).await, 8773);
    }
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row4_no_im_module() {
    let fixture = demo_with(|f| {
        f["portal"]["modules"] = json!(["crm", "imopenlines"]);
        add_user(f, json!({"id": OTTO, "name": "Otto", "lines": {"history": "all"}}));
        add_webhook(f, 15, "ninawebhookcode15");
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.call(ADD, deal(json!(OTTO))).await, 400, NO_IM);
    // Rows 1-3b first.
    assert_null_argument(&app.call(ADD, without(deal(json!(OTTO)), "CRM_ENTITY_TYPE")).await, "CRM_ENTITY_TYPE");
    assert_null_argument(&app.call(ADD, without(deal(json!(OTTO)), "CRM_ENTITY")).await, "CRM_ENTITY");
    assert_invalid_argument(&app.call(ADD, with(deal(json!(OTTO)), "CRM_ENTITY", json!("x"))).await, "CRM_ENTITY");
    assert_invalid_argument(&app.call(ADD, with(deal(json!(OTTO)), "CHAT_ID", json!("x"))).await, "CHAT_ID");
    // Row 4 before 5 (unknown type; a caller who cannot read), 7 (no chat), 8, 10, 11, 14.
    expect(&app.call(ADD, with(deal(json!(OTTO)), "CRM_ENTITY_TYPE", json!("invoice"))).await, 400, NO_IM);
    expect(&app.call_as(&nina(), ADD, deal(json!(OTTO))).await, 400, NO_IM);
    expect(&app.call(ADD, json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "USER_ID": OTTO})).await, 400, NO_IM);
    expect(&app.call(ADD, with(deal(json!(OTTO)), "CHAT_ID", json!(8774))).await, 400, NO_IM);
    expect(&app.call(ADD, without(deal(json!(0)), "USER_ID")).await, 400, NO_IM);
    expect(&app.call(ADD, deal(json!(999))).await, 400, NO_IM);
    expect(&app.call(ADD, deal(json!(14))).await, 400, NO_IM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row5_caller_cannot_read_the_record() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    let owen = hook(OWEN, "owenwebhookcode46");
    // crm_read none; "own" but neither responsible nor observer; Oleg on companies ("none").
    expect(&app.call_as(&nina(), ADD, deal(json!(OTTO))).await, 403, NO_ACCESS);
    expect(&app.call_as(&owen, ADD, deal(json!(OTTO))).await, 403, NO_ACCESS);
    let company = json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "USER_ID": OTTO});
    expect(&app.call_as(&oleg(), ADD, company.clone()).await, 403, NO_ACCESS);
    // Row 5 before 7 (company 3 has no chat), 8 (closed chat), 10 (no USER_ID), 11, 14.
    expect(&app.call_as(&nina(), ADD, company).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina(), ADD, with(deal(json!(OTTO)), "CHAT_ID", json!(8774))).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina(), ADD, without(deal(json!(0)), "USER_ID")).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina(), ADD, deal(json!("abc"))).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina(), ADD, deal(json!(999))).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina(), ADD, deal(json!(14))).await, 403, NO_ACCESS);
    assert_eq!(app.export(), before);
    // "own" as the responsible user is enough.
    assert_added(&app.call_as(&oleg(), ADD, deal(json!(OTTO))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30, OTTO]);
}

#[tokio::test]
async fn row5_unknown_type_is_access_denied_and_the_type_is_case_insensitive() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    for entity_type in [json!("invoice"), json!("deals"), json!(" deal"), json!(2), json!("2")] {
        let resp = app.call(ADD, with(deal(json!(OTTO)), "CRM_ENTITY_TYPE", entity_type.clone())).await;
        assert_eq!(resp.body["error"], "ACCESS_DENIED", "CRM_ENTITY_TYPE {entity_type}: {}", resp.text);
        expect(&resp, 403, NO_ACCESS);
    }
    let no_user = json!({"CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": 288});
    expect(&app.call(ADD, no_user).await, 403, NO_ACCESS);
    assert_eq!(app.export(), before);
    assert_added(&app.call(ADD, with(deal(json!(OTTO)), "CRM_ENTITY_TYPE", json!("DeAl"))).await, 8773);
    let lead = json!({"CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY": 101, "USER_ID": OTTO});
    assert_added(&app.call(ADD, lead).await, 8775);
}

#[tokio::test]
async fn rows6_7_no_chat_is_a_success_with_zero_and_user_id_is_not_looked_at() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // Company 3 exists but has no sessions. Rows 10-13 come later, so USER_ID is never judged.
    let company = json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3});
    for user in [json!(OTTO), json!(999), json!(13), json!(15), json!("abc"), json!(0)] {
        let resp = app.call(ADD, with(company.clone(), "USER_ID", user.clone())).await;
        assert_eq!(resp.status, 200, "USER_ID {user}: {}", resp.text);
        assert_added(&resp, 0);
    }
    assert_added(&app.call(ADD, company).await, 0);
    // A record that does not exist has no chat either.
    assert_added(&app.call(ADD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 999999, "USER_ID": OTTO})).await, 0);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row6_chat_id_given_is_used() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": OTTO, "name": "Otto", "lines": {"history": "all"}}));
        // Deal 288 gets a second active chat, newer than 8773: it becomes the last chat.
        f["chats"].as_array_mut().unwrap().push(json!({
            "id": 8777, "line": 1, "connector": "livechat", "author": 12, "members": [12, 30],
            "sessions": [{"id": 520, "status": "answer", "modified": "2026-11-21T08:00:00Z",
                          "crm": [{"type": "deal", "id": 288}]}]
        }));
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    // Company 3 has no session: a given CHAT_ID is still checked against its (empty) active list.
    let company = json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "USER_ID": OTTO, "CHAT_ID": 8773});
    expect(&app.call(ADD, company).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
    assert_added(&app.call(ADD, deal(json!(OTTO))).await, 8777);
    assert_added(&app.call(ADD, with(deal(json!(OTTO)), "CHAT_ID", json!("8773"))).await, 8773);
    let export = app.export();
    assert_eq!(members(&export, 8777), [12, 30, OTTO]);
    assert_eq!(members(&export, 8773), [12, 14, 20, 30, OTTO]);
}

#[tokio::test]
async fn row8_chat_not_in_the_active_list() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // 8774: deal 288's closed chat; 8775: lead 101's chat; 999999: no such chat.
    for chat in [8774, 8775, 999999] {
        let resp = app.call(ADD, with(deal(json!(OTTO)), "CHAT_ID", json!(chat))).await;
        assert_eq!(resp.body["error"], "CHAT_NOT_IN_CRM", "CHAT_ID {chat}: {}", resp.text);
        expect(&resp, 400, NOT_IN_CRM);
    }
    // Contact 7's only chat came through the inactive Telegram connector, with an active session.
    let contact = json!({"CRM_ENTITY_TYPE": "contact", "CRM_ENTITY": 7, "USER_ID": OTTO});
    expect(&app.call(ADD, contact.clone()).await, 400, NOT_IN_CRM);
    expect(&app.call(ADD, with(contact, "CHAT_ID", json!(8776))).await, 400, NOT_IN_CRM);
    // Row 8 before 10, 10b, 11, 12, 13.
    let closed = |user: Value| with(deal(user), "CHAT_ID", json!(8774));
    expect(&app.call(ADD, without(closed(json!(0)), "USER_ID")).await, 400, NOT_IN_CRM);
    expect(&app.call(ADD, closed(json!("abc"))).await, 400, NOT_IN_CRM);
    expect(&app.call(ADD, closed(json!(999))).await, 400, NOT_IN_CRM);
    expect(&app.call(ADD, closed(json!(DORA))).await, 400, NOT_IN_CRM);
    expect(&app.call(ADD, closed(json!(HANA))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row8_last_chat_closed() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": OTTO, "name": "Otto", "lines": {"history": "all"}}));
        fixture_chat(f, 8774)["sessions"][0]["modified"] = json!("2026-11-21T09:00:00Z");
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.call(ADD, deal(json!(OTTO))).await, 400, NOT_IN_CRM);
    expect(&app.call(ADD, without(deal(json!(0)), "USER_ID")).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
    assert_added(&app.call(ADD, with(deal(json!(OTTO)), "CHAT_ID", json!(8773))).await, 8773);
}

fn strict_fixture(strict: bool) -> Value {
    let mut f = fixture();
    f["portal"]["strict_line_permissions"] = json!(strict);
    f
}

#[tokio::test]
async fn row9_strict_line_permissions() {
    let app = spawn_app_with(strict_fixture(true)).await;
    let before = app.export();
    // Joanna reads every record but has line join "none".
    let joanna = hook(JOANNA, "joannawebhookcode47");
    expect(&app.call_as(&joanna, ADD, deal(json!(OTTO))).await, 403, NO_ACCESS);
    // Row 9 before 10, 10b, 11, 12, 13, 14.
    expect(&app.call_as(&joanna, ADD, without(deal(json!(0)), "USER_ID")).await, 403, NO_ACCESS);
    expect(&app.call_as(&joanna, ADD, deal(json!("abc"))).await, 403, NO_ACCESS);
    expect(&app.call_as(&joanna, ADD, deal(json!(999))).await, 403, NO_ACCESS);
    expect(&app.call_as(&joanna, ADD, deal(json!(DORA))).await, 403, NO_ACCESS);
    expect(&app.call_as(&joanna, ADD, deal(json!(HANA))).await, 403, NO_ACCESS);
    expect(&app.call_as(&joanna, ADD, deal(json!(14))).await, 403, NO_ACCESS);
    // Rows 7 and 8 before 9.
    let company = json!({"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "USER_ID": OTTO});
    assert_added(&app.call_as(&joanna, ADD, company).await, 0);
    expect(&app.call_as(&joanna, ADD, with(deal(json!(OTTO)), "CHAT_ID", json!(8774))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
    // Allowed: join "all" (Hana), join "self" in the queue (Oleg), the admin.
    assert_added(&app.call_as(&hook(HANA, "hanawebhookcode42"), ADD, deal(json!(OTTO))).await, 8773);
    assert_added(&app.call_as(&oleg(), ADD, deal(json!(QUINN))).await, 8773);
    assert_added(&app.call(ADD, deal(json!(1))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30, OTTO, QUINN, 1]);
}

#[tokio::test]
async fn row9_unreachable_by_default() {
    let app = spawn_app_with(strict_fixture(false)).await;
    // Reading the record is enough, as on the reference.
    assert_added(&app.call_as(&hook(JOANNA, "joannawebhookcode47"), ADD, deal(json!(OTTO))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30, OTTO]);
}

#[tokio::test]
async fn row10_user_id_empty_or_not_positive() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    let exact = r#"{"error":"ERROR_ARGUMENT","error_description":"Argument 'Empty USER_ID' is null or empty","argument":"Empty USER_ID"}"#;
    let resp = app.call(ADD, without(deal(json!(0)), "USER_ID")).await;
    assert_null_argument(&resp, EMPTY_USER_ARG);
    assert_eq!(resp.text, exact);
    for user in
        [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({}), json!("-3"), json!(-3)]
    {
        let resp = app.call(ADD, deal(user.clone())).await;
        assert_eq!(resp.body["argument"], EMPTY_USER_ARG, "USER_ID {user}: {}", resp.text);
        assert_null_argument(&resp, EMPTY_USER_ARG);
    }
    // Keys are case-sensitive: `user_id` is not read.
    let lower = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "user_id": OTTO});
    assert_null_argument(&app.call(ADD, lower).await, EMPTY_USER_ARG);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row10b_user_id_not_an_integer() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    for user in [json!("12abc"), json!("1.5"), json!("abc"), json!([OTTO]), json!(1.5), json!({"a": 40}), json!("40 x")]
    {
        let resp = app.call(ADD, deal(user.clone())).await;
        assert_eq!(resp.body["argument"], "USER_ID", "USER_ID {user}: {}", resp.text);
        assert_invalid_argument(&resp, "USER_ID");
    }
    assert_eq!(app.export(), before);
    // A string of digits is the integer.
    assert_added(&app.call(ADD, deal(json!("40"))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30, OTTO]);
}

#[tokio::test]
async fn row11_target_missing_or_deactivated() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    expect(&app.call(ADD, deal(json!(13))).await, 400, NOT_ACTIVE);
    expect(&app.call(ADD, deal(json!("13"))).await, 400, NOT_ACTIVE);
    expect(&app.call(ADD, deal(json!(999))).await, 400, NOT_ACTIVE);
    // Row 11 before 12 and 13: Gone is deactivated, reads nothing and may view no history.
    expect(&app.call(ADD, deal(json!(GONE))).await, 400, NOT_ACTIVE);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row11_deactivated_member_is_not_active_before_already_a_member() {
    let fixture = demo_with(|f| {
        fixture_chat(f, 8773)["members"] = json!([12, 14, 20, 30, 13]);
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.call(ADD, deal(json!(13))).await, 400, NOT_ACTIVE);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row12_target_cannot_read_the_record() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // Dora reads no deals; Owen reads his own deals only; Nina reads nothing (and is not in the queue, so she
    // would fail row 13 too: row 12 comes first).
    for user in [DORA, OWEN, 15] {
        let resp = app.call(ADD, deal(json!(user))).await;
        assert_eq!(resp.status, 403, "USER_ID {user}: {}", resp.text);
        expect(&resp, 403, TARGET_NO_CRM);
    }
    assert_eq!(app.export(), before);
    // Dora reads leads: the chat of lead 101 takes her.
    let lead = json!({"CRM_ENTITY_TYPE": "lead", "CRM_ENTITY": 101, "USER_ID": DORA});
    assert_added(&app.call(ADD, lead).await, 8775);
    let after = app.export();
    assert_eq!(after, expected_after(&before, &after, 8775, &[14, 31, DORA]));
}

#[tokio::test]
async fn rows12_13_come_before_already_a_member() {
    // Dora (no deal access) and Hana (no history) are members of chat 8773 already.
    let fixture = {
        let mut f = fixture();
        fixture_chat(&mut f, 8773)["members"] = json!([12, 14, 20, 30, DORA, HANA]);
        f
    };
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.call(ADD, deal(json!(DORA))).await, 403, TARGET_NO_CRM);
    expect(&app.call(ADD, deal(json!(HANA))).await, 403, TARGET_NO_HISTORY);
    // The bot and the client are members, read every record, but are not in line 1's queue.
    expect(&app.call(ADD, deal(json!(20))).await, 403, TARGET_NO_HISTORY);
    expect(&app.call(ADD, deal(json!(30))).await, 403, TARGET_NO_HISTORY);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row13_target_lacks_line_history() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // History "none"; history "self" outside the queue; a connector user outside the queue.
    for user in [HANA, SAM, 31] {
        let resp = app.call(ADD, deal(json!(user))).await;
        assert_eq!(resp.status, 403, "USER_ID {user}: {}", resp.text);
        expect(&resp, 403, TARGET_NO_HISTORY);
    }
    assert_eq!(app.export(), before);
    // History "self" in the queue, and the admin (admins have "all").
    assert_added(&app.call(ADD, deal(json!(QUINN))).await, 8773);
    assert_added(&app.call(ADD, deal(json!(1))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30, QUINN, 1]);
}

/// compatibility.md #11: the target's own `history` permission decides, not the caller's.
#[tokio::test]
async fn row13_is_the_targets_own_permission() {
    let app = spawn_app_with(fixture()).await;
    // The admin (history "all") cannot add Hana (history "none").
    expect(&app.call(ADD, deal(json!(HANA))).await, 403, TARGET_NO_HISTORY);
    // Hana (history "none", reads every record) can add Otto (history "all").
    assert_added(&app.call_as(&hook(HANA, "hanawebhookcode42"), ADD, deal(json!(OTTO))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30, OTTO]);
}

#[tokio::test]
async fn row14_already_a_member_changes_nothing() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    // Olga (14) and Oleg (12) are in chat 8773 and in line 1's queue.
    assert_added(&app.call(ADD, deal(json!(14))).await, 8773);
    assert_added(&app.call(ADD, deal(json!(12))).await, 8773);
    assert_added(&app.call(ADD, with(deal(json!("14")), "CHAT_ID", json!(8773))).await, 8773);
    assert_eq!(app.export(), before);
    assert_eq!(user_list(&app, 8773).await, json!([12, 14, 20, 30]));
}

#[tokio::test]
async fn row15_member_is_appended_in_join_order() {
    let app = spawn_app_with(fixture()).await;
    let before = app.export();
    assert_added(&app.call(ADD, deal(json!(OTTO))).await, 8773);
    let after = app.export();
    assert_eq!(after, expected_after(&before, &after, 8773, &[12, 14, 20, 30, OTTO]));
    assert_eq!(user_list(&app, 8773).await, json!([12, 14, 20, 30, OTTO]));
    // A second addition changes nothing.
    assert_added(&app.call(ADD, deal(json!(OTTO))).await, 8773);
    assert_eq!(app.export(), after);
    // Every value as a string, the type in capitals: the next member joins last.
    let strings = json!({"CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY": "288", "USER_ID": "44", "CHAT_ID": "8773"});
    assert_added(&app.call(ADD, strings).await, 8773);
    assert_eq!(user_list(&app, 8773).await, json!([12, 14, 20, 30, OTTO, QUINN]));
    // Removed and added again: joins last again.
    let delete = app.call("imopenlines.crm.chat.user.delete", deal(json!(14))).await;
    assert_eq!(delete.status, 200, "{}", delete.text);
    assert_added(&app.call(ADD, deal(json!(14))).await, 8773);
    let last = app.export();
    assert_eq!(members(&last, 8773), [12, 20, 30, OTTO, QUINN, 14]);
    assert_eq!(user_list(&app, 8773).await, json!([12, 20, 30, OTTO, QUINN, 14]));
    // The other chats are untouched, and so is the author.
    assert_eq!(author(&last, 8773), Some(12));
    for id in [8774, 8775, 8776] {
        assert_eq!(crate::helpers::chat(&last, id), crate::helpers::chat(&before, id));
    }
}

#[tokio::test]
async fn row15_form_encoded_call() {
    let app = spawn_app_with(fixture()).await;
    let resp = app
        .post_form(&app.method_path(ADD), &format!("CRM_ENTITY_TYPE=lead&CRM_ENTITY=101&USER_ID={OTTO}&CHAT_ID=8775"))
        .await;
    assert_added(&resp, 8775);
    assert_eq!(resp.text.split("\"time\"").next().unwrap(), r#"{"result":8775,"#);
    assert_eq!(members(&app.export(), 8775), [14, 31, OTTO]);
}
