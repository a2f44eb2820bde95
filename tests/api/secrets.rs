//! Secrets never reach the logs nor the state export (the project rule: never log a secret; state-format.md).

use serde_json::json;

use crate::helpers::*;

const TOKEN: &str = "secretoauthtoken7f3a9c";
const WRONG_CODE: &str = "wrongwebhookcode77";

async fn make_calls(app: &TestApp) {
    let m = "imopenlines.crm.chat.user.delete";
    let form = "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=20";
    assert_removed(&app.post_form(&format!("{DEMO_HOOK}{m}.json"), form).await, 8773);
    assert_eq!(app.get(&format!("{DEMO_HOOK}{m}.json?{form}")).await.status, 400);
    assert_eq!(app.post_form(&format!("{DEMO_HOOK}{m}.json"), "USER_ID=abc").await.status, 400);
    assert_eq!(app.post_raw(&format!("{DEMO_HOOK}{m}"), Some("application/json"), b"{".to_vec()).await.status, 400);
    assert_eq!(app.post_form(&format!("{DEMO_HOOK}no.such.method"), form).await.status, 404);
    assert_eq!(app.post_form(&format!("/rest/1/{WRONG_CODE}/{m}"), form).await.status, 401);
    assert_eq!(app.get(&format!("/rest/{m}?auth={TOKEN}&{form}")).await.status, 401);
    assert_eq!(app.post_form(&format!("/rest/{m}"), &format!("{form}&auth={TOKEN}")).await.status, 401);
    assert_eq!(app.post_form(&format!("/rest/{m}"), &format!("{form}&access_token={TOKEN}")).await.status, 401);
    let bearer = app.client.post(app.url(&format!("/rest/{m}"))).bearer_auth(TOKEN).body(form);
    assert_eq!(app.send(bearer).await.status, 401);
    let request_id = app.client.post(app.url(&format!("{DEMO_HOOK}{m}"))).header("X-Request-ID", "trace-me-42");
    assert_eq!(app.send(request_id.body(form)).await.status, 400);
}

fn assert_clean(log: &str) {
    assert!(!log.is_empty(), "the server logs something");
    for secret in [DEMO_CODE, WRONG_CODE, TOKEN] {
        assert!(!log.contains(secret), "the log contains {secret}:\n{log}");
    }
}

#[tokio::test]
async fn logs_hold_no_webhook_code_nor_token() {
    let app = spawn_app().await;
    make_calls(&app).await;
    let log = app.log();
    assert_clean(&log);
    // Calls are logged, by method name; the request id is echoed.
    assert!(log.contains("imopenlines.crm.chat.user.delete"), "{log}");
    assert!(log.contains("trace-me-42"), "X-Request-ID is echoed in the log:\n{log}");
}

#[tokio::test]
async fn verbose_logs_hold_no_webhook_code_nor_token() {
    let app = spawn_app_with_env(demo_fixture(), &[("CRMCHAT_LOG", "debug")]).await;
    make_calls(&app).await;
    assert_clean(&app.log());
}

#[tokio::test]
async fn export_shows_hashes_only() {
    let app = spawn_app().await;
    let export = app.export();
    let text = export.to_string();
    assert!(!text.contains(DEMO_CODE) && !text.contains("operatorhookcode12") && !text.contains("demo-secret"));
    let hooks = export["webhooks"].as_array().unwrap();
    let demo = hooks.iter().find(|w| w["user"] == 1).unwrap();
    assert_eq!(demo["code_sha256"], json!(crmchat::state::validate::sha256_hex(DEMO_CODE)));
    assert!(hooks.iter().all(|w| w.get("code").is_none() && w["code_sha256"].as_str().is_some_and(|h| h.len() == 64)));
    let app_row = &export["apps"][0];
    assert!(app_row.get("client_secret").is_none() && app_row["secret_sha256"].is_string());
    // Nor does the database file hold the clear code.
    let db = std::fs::read(app.data_dir.join("crmchat.db")).unwrap_or_default();
    let needle = DEMO_CODE.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle), "the database holds the clear webhook code");
}
