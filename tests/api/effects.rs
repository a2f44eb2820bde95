//! What a removal changes, read back with `crmchat state export`.

use serde_json::{Value, json};

use crate::helpers::*;

fn deal(user: i64) -> Value {
    json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user})
}

/// `export` with chat 8773's members and author replaced: what a removal may change, and nothing else.
fn expected_after(before: &Value, members: &[i64], author: Option<i64>) -> Value {
    let mut expected = before.clone();
    for chat in expected["chats"].as_array_mut().unwrap() {
        if chat["id"] == 8773 {
            chat["members"] = json!(members);
            chat["author"] = json!(author);
        }
    }
    expected
}

#[tokio::test]
async fn removing_the_author_hands_authorship_to_the_longest_standing_active_employee() {
    let app = spawn_app().await;
    let before = app.export();
    assert_eq!((members(&before, 8773), author(&before, 8773)), (vec![12, 14, 20, 30], Some(12)));
    assert_removed(&app.delete(deal(12)).await, 8773);
    // Only chat 8773 changed; no message was posted.
    assert_eq!(app.export(), expected_after(&before, &[14, 20, 30], Some(14)));
}

#[tokio::test]
async fn new_author_is_chosen_in_join_order_among_active_employees_only() {
    // Join order: 12 (author), the bot, a deactivated employee, the client, an extranet user, then 15 and 14.
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 50, "name": "Partner", "kind": "extranet"}));
        fixture_chat(f, 8773)["members"] = json!([12, 20, 13, 30, 50, 15, 14]);
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    assert_removed(&app.delete(deal(12)).await, 8773);
    assert_eq!(app.export(), expected_after(&before, &[20, 13, 30, 50, 15, 14], Some(15)));
}

#[tokio::test]
async fn author_unchanged_when_no_active_employee_remains() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 50, "name": "Partner", "kind": "extranet"}));
        fixture_chat(f, 8773)["members"] = json!([12, 20, 13, 30, 50]);
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    assert_removed(&app.delete(deal(12)).await, 8773);
    assert_eq!(app.export(), expected_after(&before, &[20, 13, 30, 50], Some(12)));
}

/// The author stays unchanged after leaving (methods.md), and loading an export reproduces the state
/// (state-format.md): the export of such a chat must load again.
#[tokio::test]
async fn export_after_the_author_left_without_successor_loads_again() {
    let fixture = demo_with(|f| {
        fixture_chat(f, 8773)["members"] = json!([12, 20, 30]);
    });
    let app = spawn_app_with(fixture).await;
    assert_removed(&app.delete(deal(12)).await, 8773);
    let export = app.export();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, serde_json::to_vec(&export).unwrap()).unwrap();
    let out = load_file(dir.path(), &file);
    assert!(out.status.success(), "loading the export failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(export_dir(dir.path()), export);
}

#[tokio::test]
async fn removing_a_non_author_keeps_the_author_and_the_order() {
    let app = spawn_app().await;
    let before = app.export();
    assert_removed(&app.delete(deal(14)).await, 8773);
    assert_eq!(app.export(), expected_after(&before, &[12, 20, 30], Some(12)));
    assert_removed(&app.delete(deal(20)).await, 8773);
    assert_eq!(app.export(), expected_after(&before, &[12, 30], Some(12)));
}

#[tokio::test]
async fn second_removal_is_user_not_found_and_changes_nothing() {
    let app = spawn_app().await;
    assert_removed(&app.delete(deal(12)).await, 8773);
    let after_first = app.export();
    assert_error(&app.delete(deal(12)).await, 400, "USER_NOT_FOUND", "The specified user is not in chat.");
    assert_eq!(app.export(), after_first);
    assert_eq!(author(&after_first, 8773), Some(14));
}

#[tokio::test]
async fn failed_calls_change_nothing() {
    let fixture = demo_with(|f| {
        f["portal"]["strict_line_permissions"] = json!(true);
        add_user(f, json!({"id": 40, "name": "Otto"}));
        add_webhook(f, 40, "ottowebhookcode40");
        add_webhook(f, 15, "ninawebhookcode15");
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    let failing = [
        deal(0),
        json!({"USER_ID": 12, "CRM_ENTITY_TYPE": "deal"}),
        json!({"USER_ID": 12, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "abc"}),
        json!({"USER_ID": 12, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "CHAT_ID": -5}),
        json!({"USER_ID": 12, "CRM_ENTITY_TYPE": "invoice", "CRM_ENTITY": 288}),
        json!({"USER_ID": 14, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "CHAT_ID": 8774}),
        json!({"USER_ID": 13, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288}),
        json!({"USER_ID": 15, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288}),
    ];
    for params in failing {
        let resp = app.delete(params.clone()).await;
        assert!(resp.status >= 400, "{params} should fail: {}", resp.text);
    }
    let resp = app.call_as(&hook(15, "ninawebhookcode15"), METHOD, deal(12)).await;
    assert_eq!(resp.status, 403, "{}", resp.text);
    let resp = app.call_as(&hook(40, "ottowebhookcode40"), METHOD, deal(12)).await;
    assert_eq!(resp.body["error"], "CHAT_DELETE_USER_PERMISSION_DENIED", "{}", resp.text);
    let resp = app.call_as(&hook(1, "wrongwebhookcode1"), METHOD, deal(12)).await;
    assert_eq!(resp.status, 401, "{}", resp.text);
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn removal_from_one_chat_leaves_the_users_other_chats() {
    let app = spawn_app().await;
    let before = app.export();
    // 14 and 30 are members of chats 8773 and 8774.
    assert_removed(&app.delete(deal(30)).await, 8773);
    let after = app.export();
    assert_eq!(members(&after, 8774), members(&before, 8774));
    assert_eq!(after, expected_after(&before, &[12, 14, 20], Some(12)));
}
