//! `imopenlines.crm.chat.user.delete`: every row of the check table of methods.md, in order, and which row
//! wins when several fail.

use serde_json::{Value, json};

use crate::helpers::*;

const EMPTY_USER: (&str, &str) = ("CRM_CHAT_EMPTY_USER", "Empty User ID");
const EMPTY_CRM: (&str, &str) = ("CRM_CHAT_EMPTY_CRM_DATA", "Empty CRM data");
const NO_IM: (&str, &str) = ("IM_NOT_INSTALLED", "Messenger is not installed.");
const NO_ACCESS: (&str, &str) = ("ACCESS_DENIED", "Access denied! You don't have access to join user to chat");
const NOT_IN_CRM: (&str, &str) = ("CHAT_NOT_IN_CRM", "Chat does not belong to the CRM entity being checked");
const NO_LINE_PERM: (&str, &str) =
    ("CHAT_DELETE_USER_PERMISSION_DENIED", "You don't have access to delete a user from this chat");
const NOT_ACTIVE: (&str, &str) = ("CRM_CHAT_USER_NOT_ACTIVE", "User not active");
const NOT_MEMBER: (&str, &str) = ("USER_NOT_FOUND", "The specified user is not in chat.");

/// Deal 288 (chat 8773) with `user`.
fn deal(user: Value) -> Value {
    json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user})
}

#[tokio::test]
async fn row1_empty_user_id() {
    let app = spawn_app().await;
    let before = app.export();
    let absent = without(deal(json!(0)), "USER_ID");
    assert_eq!(absent.get("USER_ID"), None);
    expect(&app.delete(absent).await, 400, EMPTY_USER);
    // Empty in PHP's sense, or an integer <= 0.
    for user in
        [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([]), json!({}), json!("-3"), json!(-3)]
    {
        let resp = app.delete(deal(user.clone())).await;
        assert_eq!(resp.body["error"], "CRM_CHAT_EMPTY_USER", "USER_ID {user}: {}", resp.text);
        expect(&resp, 400, EMPTY_USER);
    }
    // Row 1 comes first: the CRM data is not even looked at.
    expect(&app.delete(json!({})).await, 400, EMPTY_USER);
    expect(&app.delete(json!({"USER_ID": 0, "CRM_ENTITY_TYPE": "", "CRM_ENTITY": ""})).await, 400, EMPTY_USER);
    expect(
        &app.delete(json!({"USER_ID": "-3", "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "abc"})).await,
        400,
        EMPTY_USER,
    );
    expect(&app.delete(json!({"USER_ID": 0, "CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": 288})).await, 400, EMPTY_USER);
    let bad_chat = json!({"USER_ID": "", "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "CHAT_ID": "abc"});
    expect(&app.delete(bad_chat).await, 400, EMPTY_USER);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row1b_user_id_not_an_integer() {
    let app = spawn_app().await;
    let before = app.export();
    for user in [json!("12abc"), json!("1.5"), json!("abc"), json!([12]), json!(1.5), json!({"a": 12}), json!("12 abc")]
    {
        let resp = app.delete(deal(user.clone())).await;
        assert_eq!(resp.body["argument"], "USER_ID", "USER_ID {user}: {}", resp.text);
        assert_invalid_argument(&resp, "USER_ID");
    }
    // Before the CRM data checks (rows 2, 3) and the CHAT_ID check (3b).
    assert_invalid_argument(&app.delete(json!({"USER_ID": "abc"})).await, "USER_ID");
    let both_bad = json!({"USER_ID": "12abc", "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "abc", "CHAT_ID": -5});
    assert_invalid_argument(&app.delete(both_bad).await, "USER_ID");
    // A string of digits and a JSON integer are the same integer.
    assert_removed(&app.delete(deal(json!("20"))).await, 8773);
    assert_ne!(app.export(), before);
}

#[tokio::test]
async fn row2_empty_crm_data() {
    let app = spawn_app().await;
    let before = app.export();
    let base = deal(json!(14));
    for empty in [json!(null), json!(""), json!("0"), json!(0), json!(false), json!([])] {
        let resp = app.delete(with(base.clone(), "CRM_ENTITY_TYPE", empty.clone())).await;
        assert_eq!(resp.body["error"], "CRM_CHAT_EMPTY_CRM_DATA", "CRM_ENTITY_TYPE {empty}: {}", resp.text);
        expect(&resp, 400, EMPTY_CRM);
        let resp = app.delete(with(base.clone(), "CRM_ENTITY", empty.clone())).await;
        assert_eq!(resp.body["error"], "CRM_CHAT_EMPTY_CRM_DATA", "CRM_ENTITY {empty}: {}", resp.text);
        expect(&resp, 400, EMPTY_CRM);
    }
    expect(&app.delete(without(base.clone(), "CRM_ENTITY_TYPE")).await, 400, EMPTY_CRM);
    expect(&app.delete(without(base.clone(), "CRM_ENTITY")).await, 400, EMPTY_CRM);
    expect(&app.delete(json!({"USER_ID": 14})).await, 400, EMPTY_CRM);
    // Empty wins over invalid: row 2 before rows 3 and 3b.
    expect(&app.delete(json!({"USER_ID": 14, "CRM_ENTITY": "abc"})).await, 400, EMPTY_CRM);
    expect(
        &app.delete(json!({"USER_ID": 14, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 0, "CHAT_ID": "x"})).await,
        400,
        EMPTY_CRM,
    );
    expect(&app.delete(json!({"USER_ID": 14, "CRM_ENTITY_TYPE": "", "CRM_ENTITY": -1})).await, 400, EMPTY_CRM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row3_crm_entity_not_numeric_or_not_positive() {
    let app = spawn_app().await;
    let before = app.export();
    for entity in [
        json!("abc"),
        json!("0.5"),
        json!(0.5),
        json!(-1),
        json!("-1"),
        json!("-288"),
        json!("12abc"),
        json!("0x1A"),
        json!("1e"),
        json!([288]),
        json!({"id": 288}),
        json!("0.0"),
    ] {
        let resp = app.delete(with(deal(json!(14)), "CRM_ENTITY", entity.clone())).await;
        assert_eq!(resp.body["argument"], "CRM_ENTITY", "CRM_ENTITY {entity}: {}", resp.text);
        assert_invalid_argument(&resp, "CRM_ENTITY");
    }
    // Row 3 before 3b and before the access check of row 5 (an unknown type).
    let resp =
        app.delete(json!({"USER_ID": 14, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "abc", "CHAT_ID": "abc"})).await;
    assert_invalid_argument(&resp, "CRM_ENTITY");
    let resp = app.delete(json!({"USER_ID": 14, "CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": "abc"})).await;
    assert_invalid_argument(&resp, "CRM_ENTITY");
    // The exact body of the spec's example.
    assert_eq!(
        app.delete(with(deal(json!(14)), "CRM_ENTITY", json!("abc"))).await.text,
        r#"{"error":"ERROR_ARGUMENT","error_description":"The value of an argument 'CRM_ENTITY' has an invalid type","argument":"CRM_ENTITY"}"#
    );
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row3_accepts_numbers_in_phps_sense() {
    let app = spawn_app().await;
    // User 15 is active and not in chat 8773: reaching row 11 proves the record resolved to deal 288.
    for entity in [
        json!("288"),
        json!(" 288"),
        json!("288 "),
        json!("288.0"),
        json!("2.88e2"),
        json!("288.9"),
        json!("+288"),
        json!(288.0),
        json!(2.88e2),
    ] {
        let resp = app.delete(with(deal(json!(15)), "CRM_ENTITY", entity.clone())).await;
        assert_eq!(resp.body["error"], "USER_NOT_FOUND", "CRM_ENTITY {entity}: {}", resp.text);
        expect(&resp, 400, NOT_MEMBER);
    }
    assert_removed(&app.delete(with(deal(json!(20)), "CRM_ENTITY", json!("2.88e2"))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 30]);
}

#[tokio::test]
async fn row3b_chat_id_malformed() {
    let app = spawn_app().await;
    let before = app.export();
    for chat_id in [json!(-5), json!("-5"), json!("abc"), json!("1.5"), json!(1.5), json!("8773abc"), json!([8773])] {
        let resp = app.delete(with(deal(json!(15)), "CHAT_ID", chat_id.clone())).await;
        assert_eq!(resp.body["argument"], "CHAT_ID", "CHAT_ID {chat_id}: {}", resp.text);
        assert_invalid_argument(&resp, "CHAT_ID");
    }
    // Row 3b before the access check (row 5) and the chat checks.
    let unknown_type = json!({"USER_ID": 15, "CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": 288, "CHAT_ID": -5});
    assert_invalid_argument(&app.delete(unknown_type).await, "CHAT_ID");
    let no_sessions = json!({"USER_ID": 999, "CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "CHAT_ID": "abc"});
    assert_invalid_argument(&app.delete(no_sessions).await, "CHAT_ID");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row3b_empty_chat_id_means_the_last_chat() {
    let app = spawn_app().await;
    for chat_id in [json!(null), json!(""), json!("0"), json!(0), json!(false)] {
        let resp = app.delete(with(deal(json!(15)), "CHAT_ID", chat_id.clone())).await;
        assert_eq!(resp.body["error"], "USER_NOT_FOUND", "CHAT_ID {chat_id}: {}", resp.text);
    }
    assert_removed(&app.delete(with(deal(json!(20)), "CHAT_ID", json!(""))).await, 8773);
    assert_removed(&app.delete(with(deal(json!(30)), "CHAT_ID", json!("8773"))).await, 8773);
}

/// methods.md: `CHAT_ID` must be "a JSON integer or a string of digits"; `"+8773"` is neither.
#[tokio::test]
async fn row3b_chat_id_with_a_sign_is_not_a_string_of_digits() {
    let app = spawn_app().await;
    assert_invalid_argument(&app.delete(with(deal(json!(20)), "CHAT_ID", json!("+8773"))).await, "CHAT_ID");
    assert_invalid_argument(&app.delete(with(deal(json!(20)), "CHAT_ID", json!(" 8773"))).await, "CHAT_ID");
}

#[tokio::test]
async fn row4_no_im_module() {
    let fixture = demo_with(|f| {
        f["portal"]["modules"] = json!(["crm", "imopenlines"]);
        add_webhook(f, 15, "ninawebhookcode15");
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.delete(deal(json!(20))).await, 400, NO_IM);
    // Rows 1-3b come first.
    expect(&app.delete(deal(json!(0))).await, 400, EMPTY_USER);
    assert_invalid_argument(&app.delete(deal(json!("abc"))).await, "USER_ID");
    expect(&app.delete(json!({"USER_ID": 20, "CRM_ENTITY_TYPE": "deal"})).await, 400, EMPTY_CRM);
    assert_invalid_argument(&app.delete(with(deal(json!(20)), "CRM_ENTITY", json!("abc"))).await, "CRM_ENTITY");
    assert_invalid_argument(&app.delete(with(deal(json!(20)), "CHAT_ID", json!(-5))).await, "CHAT_ID");
    // Row 4 before everything after it: unknown type, no access, no chat, bad chat, bad target.
    expect(&app.delete(with(deal(json!(20)), "CRM_ENTITY_TYPE", json!("invoice"))).await, 400, NO_IM);
    expect(&app.call_as(&hook(15, "ninawebhookcode15"), METHOD, deal(json!(20))).await, 400, NO_IM);
    expect(&app.delete(json!({"USER_ID": 20, "CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3})).await, 400, NO_IM);
    expect(&app.delete(with(deal(json!(20)), "CHAT_ID", json!(8774))).await, 400, NO_IM);
    expect(&app.delete(deal(json!(999))).await, 400, NO_IM);
    expect(&app.delete(deal(json!(15))).await, 400, NO_IM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row5_unknown_type_is_access_denied() {
    let app = spawn_app().await;
    let before = app.export();
    // Even for the admin: nobody can read a record of an unknown type.
    for entity_type in ["invoice", "quote", "deals", "2", " deal"] {
        let resp = app.delete(with(deal(json!(20)), "CRM_ENTITY_TYPE", json!(entity_type))).await;
        assert_eq!(resp.body["error"], "ACCESS_DENIED", "CRM_ENTITY_TYPE {entity_type}: {}", resp.text);
        expect(&resp, 403, NO_ACCESS);
    }
    expect(&app.delete(with(deal(json!(20)), "CRM_ENTITY_TYPE", json!(2))).await, 403, NO_ACCESS);
    // Row 5 before the chat checks and the target checks.
    expect(&app.delete(json!({"USER_ID": 999, "CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": 288})).await, 403, NO_ACCESS);
    let with_chat = json!({"USER_ID": 20, "CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": 288, "CHAT_ID": 8773});
    expect(&app.delete(with_chat).await, 403, NO_ACCESS);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row5_type_is_matched_case_insensitively() {
    let app = spawn_app().await;
    expect(&app.delete(with(deal(json!(15)), "CRM_ENTITY_TYPE", json!("Deal"))).await, 400, NOT_MEMBER);
    let lead = json!({"USER_ID": 15, "CRM_ENTITY_TYPE": "LeAd", "CRM_ENTITY": 101});
    expect(&app.delete(lead).await, 400, NOT_MEMBER);
    assert_removed(&app.delete(with(deal(json!(20)), "CRM_ENTITY_TYPE", json!("DEAL"))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 30]);
}

#[tokio::test]
async fn row5_caller_cannot_read_the_record() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 40, "name": "Otto", "crm_read": {"deal": "own"}}));
        add_user(f, json!({"id": 41, "name": "Olivia", "crm_read": {"deal": "own"}}));
        f["crm"][0]["observers"] = json!([1, 41]);
        add_webhook(f, 15, "ninawebhookcode15");
        add_webhook(f, 40, "ottowebhookcode40");
        add_webhook(f, 41, "oliviawebhookcode41");
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    let nina = hook(15, "ninawebhookcode15");
    let otto = hook(40, "ottowebhookcode40");
    let olivia = hook(41, "oliviawebhookcode41");
    let oleg = hook(12, "operatorhookcode12");
    // crm_read none.
    expect(&app.call_as(&nina, METHOD, deal(json!(20))).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina, METHOD, with(deal(json!(20)), "CHAT_ID", json!(8773))).await, 403, NO_ACCESS);
    // Row 5 before row 7 (no chat) and row 10 (no such user).
    let company = json!({"USER_ID": 999, "CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3});
    expect(&app.call_as(&nina, METHOD, company.clone()).await, 403, NO_ACCESS);
    expect(&app.call_as(&nina, METHOD, deal(json!(999))).await, 403, NO_ACCESS);
    // Oleg reads deals as "own" and companies not at all.
    expect(&app.call_as(&oleg, METHOD, company).await, 403, NO_ACCESS);
    // "own", neither responsible nor observer.
    expect(&app.call_as(&otto, METHOD, deal(json!(20))).await, 403, NO_ACCESS);
    assert_eq!(app.export(), before);
    // "own" as an observer, and as the responsible user.
    expect(&app.call_as(&olivia, METHOD, deal(json!(15))).await, 400, NOT_MEMBER);
    assert_removed(&app.call_as(&olivia, METHOD, deal(json!(20))).await, 8773);
    assert_removed(&app.call_as(&oleg, METHOD, deal(json!(30))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14]);
}

#[tokio::test]
async fn row7_no_chat_is_a_success_with_zero() {
    let app = spawn_app().await;
    let before = app.export();
    // Company 3 exists but has no sessions: USER_ID is not even looked up.
    for user in [json!(999), json!(13), json!(12), json!(15)] {
        let resp = app.delete(json!({"USER_ID": user, "CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3})).await;
        assert_success(&resp, json!(0));
        assert!(resp.body["result"].is_i64(), "{}", resp.text);
    }
    // A record that does not exist has no chat either (the admin may read any record).
    assert_success(
        &app.delete(json!({"USER_ID": 999, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 999999})).await,
        json!(0),
    );
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row6_chat_id_given_is_used_even_when_the_record_has_no_sessions() {
    let app = spawn_app().await;
    let before = app.export();
    let params = json!({"USER_ID": 14, "CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3, "CHAT_ID": 8773});
    expect(&app.delete(params).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row6_last_chat_is_the_one_of_the_most_recent_session() {
    // Deal 288 gets a second active chat whose session is newer than chat 8773's.
    let fixture = demo_with(|f| {
        f["chats"].as_array_mut().unwrap().push(json!({
            "id": 8777, "line": 1, "connector": "livechat", "author": 12, "members": [12, 30],
            "sessions": [{"id": 520, "status": "answer", "modified": "2026-11-21T08:00:00Z",
                          "crm": [{"type": "deal", "id": 288}]}]
        }));
    });
    let app = spawn_app_with(fixture).await;
    assert_removed(&app.delete(deal(json!(30))).await, 8777);
    let export = app.export();
    assert_eq!(members(&export, 8777), [12]);
    assert_eq!(members(&export, 8773), [12, 14, 20, 30]);
    // With CHAT_ID the older chat is used.
    assert_removed(&app.delete(with(deal(json!(30)), "CHAT_ID", json!(8773))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20]);
}

#[tokio::test]
async fn row8_chat_id_of_a_closed_session() {
    let app = spawn_app().await;
    let before = app.export();
    // Chat 8774 is bound to deal 288 by a closed session; 14 is a member of it.
    expect(&app.delete(with(deal(json!(14)), "CHAT_ID", json!(8774))).await, 400, NOT_IN_CRM);
    // Row 8 before rows 10 and 11.
    expect(&app.delete(with(deal(json!(999)), "CHAT_ID", json!(8774))).await, 400, NOT_IN_CRM);
    expect(&app.delete(with(deal(json!(15)), "CHAT_ID", json!(8774))).await, 400, NOT_IN_CRM);
    // A chat of another record, and a chat that does not exist.
    expect(&app.delete(with(deal(json!(14)), "CHAT_ID", json!(8775))).await, 400, NOT_IN_CRM);
    expect(&app.delete(with(deal(json!(14)), "CHAT_ID", json!(999999))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row8_last_chat_closed() {
    // The closed session of chat 8774 becomes the most recent one of deal 288.
    let fixture = demo_with(|f| {
        fixture_chat(f, 8774)["sessions"][0]["modified"] = json!("2026-11-21T09:00:00Z");
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.delete(deal(json!(14))).await, 400, NOT_IN_CRM);
    expect(&app.delete(deal(json!(12))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
    // The active chat is still reachable by its id.
    assert_removed(&app.delete(with(deal(json!(20)), "CHAT_ID", json!(8773))).await, 8773);
}

#[tokio::test]
async fn row8_session_status_decides_membership_in_the_record() {
    // One deal per status, each with its own chat holding 12 and 30.
    let statuses: &[(Value, bool)] = &[
        (json!("new"), false),
        (json!("skip"), false),
        (json!("answer"), true),
        (json!("client"), true),
        (json!("client_after_operator"), true),
        (json!("operator"), true),
        (json!(40), true),
        (json!("wait_client"), false),
        (json!("close"), false),
        (json!("spam"), false),
        (json!("duplicate"), false),
        (json!("silently_close"), false),
        (json!(0), false),
        (json!(60), false),
    ];
    let fixture = demo_with(|f| {
        for (i, (status, _)) in statuses.iter().enumerate() {
            let id = 1000 + i as i64;
            f["crm"].as_array_mut().unwrap().push(json!({"type": "deal", "id": id, "responsible": 12}));
            f["chats"].as_array_mut().unwrap().push(json!({
                "id": 9000 + i as i64, "line": 1, "connector": "livechat", "author": 12, "members": [12, 30],
                "sessions": [{"id": 600 + i as i64, "status": status, "modified": "2026-11-20T10:00:00Z",
                              "crm": [{"type": "deal", "id": id}]}]
            }));
        }
    });
    let app = spawn_app_with(fixture).await;
    for (i, (status, active)) in statuses.iter().enumerate() {
        let params = json!({"USER_ID": 30, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 1000 + i as i64});
        let resp = app.delete(params.clone()).await;
        if *active {
            assert_eq!(resp.status, 200, "status {status}: {}", resp.text);
            assert_removed(&resp, 9000 + i as i64);
        } else {
            assert_eq!(resp.body["error"], "CHAT_NOT_IN_CRM", "status {status}: {}", resp.text);
            expect(&resp, 400, NOT_IN_CRM);
            let resp = app.delete(with(params, "CHAT_ID", json!(9000 + i as i64))).await;
            expect(&resp, 400, NOT_IN_CRM);
        }
    }
}

#[tokio::test]
async fn row8_chat_through_an_inactive_connector() {
    let app = spawn_app().await;
    let before = app.export();
    // Contact 7's only chat, 8776, came through the inactive Telegram connector; its session is active.
    let contact = json!({"USER_ID": 32, "CRM_ENTITY_TYPE": "contact", "CRM_ENTITY": 7});
    expect(&app.delete(contact.clone()).await, 400, NOT_IN_CRM);
    expect(&app.delete(with(contact, "CHAT_ID", json!(8776))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row8_session_bound_to_several_records() {
    // One active session bound to a deal and a contact: the chat belongs to both.
    let fixture = demo_with(|f| {
        fixture_chat(f, 8773)["sessions"][0]["crm"] =
            json!([{"type": "deal", "id": 288}, {"type": "contact", "id": 7}]);
    });
    let app = spawn_app_with(fixture).await;
    let contact = json!({"USER_ID": 20, "CRM_ENTITY_TYPE": "contact", "CRM_ENTITY": 7, "CHAT_ID": 8773});
    assert_removed(&app.delete(contact).await, 8773);
}

fn strict_fixture(strict: bool) -> Value {
    demo_with(|f| {
        f["portal"]["strict_line_permissions"] = json!(strict);
        // 40: reads every record, line join "self" but not in line 1's queue.
        add_user(f, json!({"id": 40, "name": "Otto"}));
        // 42: in the queue, but line join "none". 43: line join "all", not in the queue.
        add_user(f, json!({"id": 42, "name": "Queued", "lines": {"join": "none", "history": "all"}}));
        add_user(f, json!({"id": 43, "name": "Everywhere", "lines": {"join": "all", "history": "none"}}));
        f["lines"][0]["queue"] = json!([12, 14, 42]);
        add_webhook(f, 40, "ottowebhookcode40");
        add_webhook(f, 42, "queuedwebhookcode42");
        add_webhook(f, 43, "everywherewebhookcode43");
    })
}

#[tokio::test]
async fn row9_strict_line_permissions() {
    let app = spawn_app_with(strict_fixture(true)).await;
    let before = app.export();
    let otto = hook(40, "ottowebhookcode40");
    let queued = hook(42, "queuedwebhookcode42");
    expect(&app.call_as(&otto, METHOD, deal(json!(20))).await, 403, NO_LINE_PERM);
    expect(&app.call_as(&queued, METHOD, deal(json!(20))).await, 403, NO_LINE_PERM);
    // Row 9 before rows 10 and 11.
    expect(&app.call_as(&otto, METHOD, deal(json!(13))).await, 403, NO_LINE_PERM);
    expect(&app.call_as(&otto, METHOD, deal(json!(999))).await, 403, NO_LINE_PERM);
    expect(&app.call_as(&otto, METHOD, deal(json!(15))).await, 403, NO_LINE_PERM);
    // Rows 7 and 8 before row 9.
    let company = json!({"USER_ID": 20, "CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 3});
    assert_success(&app.call_as(&otto, METHOD, company).await, json!(0));
    expect(&app.call_as(&otto, METHOD, with(deal(json!(14)), "CHAT_ID", json!(8774))).await, 400, NOT_IN_CRM);
    assert_eq!(app.export(), before);
    // Allowed: join "all"; join "self" in the queue (Oleg); the admin.
    assert_removed(&app.call_as(&hook(43, "everywherewebhookcode43"), METHOD, deal(json!(20))).await, 8773);
    assert_removed(&app.call_as(&hook(12, "operatorhookcode12"), METHOD, deal(json!(30))).await, 8773);
    assert_removed(&app.delete(deal(json!(14))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12]);
}

#[tokio::test]
async fn row9_unreachable_by_default() {
    let app = spawn_app_with(strict_fixture(false)).await;
    // Reading the record is enough, as on the reference.
    assert_removed(&app.call_as(&hook(40, "ottowebhookcode40"), METHOD, deal(json!(20))).await, 8773);
    assert_removed(&app.call_as(&hook(42, "queuedwebhookcode42"), METHOD, deal(json!(30))).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14]);
}

#[tokio::test]
async fn row10_target_missing_or_deactivated() {
    // 13 (deactivated) is a member of chat 8773 here.
    let fixture = demo_with(|f| {
        fixture_chat(f, 8773)["members"] = json!([12, 14, 20, 30, 13]);
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    expect(&app.delete(deal(json!(13))).await, 400, NOT_ACTIVE);
    expect(&app.delete(deal(json!("13"))).await, 400, NOT_ACTIVE);
    expect(&app.delete(deal(json!(999))).await, 400, NOT_ACTIVE);
    assert_eq!(app.export(), before);
    assert_eq!(members(&before, 8773), [12, 14, 20, 30, 13]);
}

#[tokio::test]
async fn row10_before_row11() {
    let app = spawn_app().await;
    // 13 is deactivated and in no chat.
    expect(&app.delete(deal(json!(13))).await, 400, NOT_ACTIVE);
}

#[tokio::test]
async fn row11_not_a_member() {
    let app = spawn_app().await;
    let before = app.export();
    expect(&app.delete(deal(json!(15))).await, 400, NOT_MEMBER);
    // 31 is a member of another chat only.
    expect(&app.delete(deal(json!(31))).await, 400, NOT_MEMBER);
    expect(&app.delete(with(deal(json!(31)), "CHAT_ID", json!(8773))).await, 400, NOT_MEMBER);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn row12_bots_connector_and_extranet_users_are_removable() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 50, "name": "Partner", "kind": "extranet"}));
        fixture_chat(f, 8773)["members"] = json!([12, 14, 20, 30, 50]);
    });
    let app = spawn_app_with(fixture).await;
    assert_removed(&app.delete(deal(json!(20))).await, 8773);
    assert_removed(&app.delete(deal(json!(30))).await, 8773);
    assert_removed(&app.delete(deal(json!(50))).await, 8773);
    let export = app.export();
    assert_eq!(members(&export, 8773), [12, 14]);
    assert_eq!(author(&export, 8773), Some(12));
}

#[tokio::test]
async fn row12_result_is_the_chat_id_as_an_integer() {
    let app = spawn_app().await;
    let resp = app.delete(json!({"USER_ID": "31", "CRM_ENTITY_TYPE": "lead", "CRM_ENTITY": "101"})).await;
    assert_removed(&resp, 8775);
    let resp =
        app.delete(json!({"USER_ID": "20", "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "288", "CHAT_ID": "8773"})).await;
    assert_removed(&resp, 8773);
    assert_eq!(resp.text.split("\"time\"").next().unwrap(), r#"{"result":8773,"#);
}
