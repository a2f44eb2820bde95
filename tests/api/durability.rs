//! An acknowledged removal survives a crash the moment after the response.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn removal_survives_kill_9_right_after_the_response() {
    let mut app = spawn_app().await;
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});
    assert_removed(&app.delete(params.clone()).await, 8773);
    app.restart();
    let export = app.export();
    assert_eq!(members(&export, 8773), [14, 20, 30]);
    assert_eq!(author(&export, 8773), Some(14));
    assert_error(&app.delete(params).await, 400, "USER_NOT_FOUND", "The specified user is not in chat.");
    // The restarted server serves the rest as before.
    assert_removed(&app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20})).await, 8773);
    assert_eq!(members(&app.export(), 8773), [14, 30]);
}

#[tokio::test]
async fn several_removals_survive_a_crash() {
    let mut app = spawn_app().await;
    for user in [20, 30, 14] {
        let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user});
        assert_removed(&app.delete(params).await, 8773);
    }
    let before = app.export();
    app.restart();
    assert_eq!(app.export(), before);
    assert_eq!(members(&before, 8773), [12]);
}
