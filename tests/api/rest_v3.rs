//! The REST 3.0 path (compatibility.md #15): `/rest/api/{user}/{code}/{method}` and `/rest/api/{method}` answer
//! in REST 3.0's own envelope. None of crmchat's methods exists in REST 3.0, so each gets the vendor's
//! "method not found": HTTP 404, code `BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION`, the method named in
//! the message. Decided before authentication, as REST 2's unknown method is; nothing changes.

use serde_json::{Value, json};

use crate::helpers::*;

fn assert_v3_not_found(resp: &Resp, method: &str) {
    assert_eq!(resp.status, 404, "{}", resp.text);
    assert_json_headers(resp);
    let expected = json!({"error": {
        "code": "BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION",
        "message": format!("Method \"{method}\" was not found."),
    }});
    assert_eq!(resp.body, expected, "{}", resp.text);
}

#[tokio::test]
async fn every_method_on_the_rest_3_path_is_not_found_in_its_envelope() {
    let app = spawn_app().await;
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});
    for method in [METHOD, "imopenlines.crm.chat.getLastId", "server.time", "batch", "scope"] {
        let url = app.url(&format!("/rest/api/1/{DEMO_CODE}/{method}"));
        let resp = app.send(app.client.post(&url).json(&params)).await;
        assert_v3_not_found(&resp, method);
        // GET, a trailing slash and the OAuth shape answer alike.
        let resp = app.get(&format!("/rest/api/1/{DEMO_CODE}/{method}/")).await;
        assert_v3_not_found(&resp, method);
        let resp = app.send(app.client.post(app.url(&format!("/rest/api/{method}"))).json(&json!({"auth": "x"}))).await;
        assert_v3_not_found(&resp, method);
    }
    // Nothing was removed: REST 2 still finds user 12 in the chat.
    assert_eq!(members(&app.export(), 8773), vec![12, 14, 20, 30]);
    assert_removed(&app.delete(params).await, 8773);
}

#[tokio::test]
async fn rest_3_answers_before_authentication() {
    let app = spawn_app().await;
    for path in [format!("/rest/api/1/wrongwebhookcode0/{METHOD}"), format!("/rest/api/{METHOD}")] {
        assert_v3_not_found(&app.get(&path).await, METHOD);
    }
}

#[tokio::test]
async fn a_rest_3_path_without_a_method_never_echoes_the_webhook_code() {
    let app = spawn_app().await;
    let resp = app.get(&format!("/rest/api/1/{DEMO_CODE}/")).await;
    assert_v3_not_found(&resp, "");
    assert!(!resp.text.contains(DEMO_CODE), "{}", resp.text);
    assert!(!app.log().contains(DEMO_CODE), "the log holds the webhook code");
}

#[tokio::test]
async fn rest_2_paths_are_unchanged() {
    let app = spawn_app().await;
    // `api` as a REST 2 method name is just unknown there.
    let resp = app.get("/rest/api").await;
    assert_eq!(resp.body, json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}));
    let resp = app.get(&format!("/rest/1/{DEMO_CODE}/server.time")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(matches!(resp.body["result"], Value::String(_)), "{}", resp.text);
}
