//! How parameters may arrive (protocol.md, Parameters): every transport reaches the same method.

use serde_json::json;

use crate::helpers::*;

const FORM: &str = "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=20";

#[tokio::test]
async fn json_body() {
    let app = spawn_app().await;
    let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20})).await;
    assert_removed(&resp, 8773);
}

#[tokio::test]
async fn json_body_with_charset_and_numbers_as_strings() {
    let app = spawn_app().await;
    let body = r#"{"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "288", "USER_ID": "20", "CHAT_ID": "8773"}"#;
    let resp = app.post_raw(&app.method_path(METHOD), Some("application/json; charset=utf-8"), body.into()).await;
    assert_removed(&resp, 8773);
    let body = r#"{"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": "288", "USER_ID": "30"}"#;
    let resp = app.post_raw(&app.method_path(METHOD), Some("Application/JSON;charset=UTF-8"), body.into()).await;
    assert_removed(&resp, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14]);
}

#[tokio::test]
async fn form_urlencoded_body() {
    let app = spawn_app().await;
    assert_removed(&app.post_form(&app.method_path(METHOD), FORM).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 30]);
}

#[tokio::test]
async fn multipart_body() {
    let app = spawn_app().await;
    let fields = [("CRM_ENTITY_TYPE", "deal"), ("CRM_ENTITY", "288"), ("USER_ID", "20")];
    assert_removed(&app.post_multipart(&app.method_path(METHOD), &fields).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 30]);
}

#[tokio::test]
async fn query_string_get() {
    let app = spawn_app().await;
    assert_removed(&app.get(&format!("{}?{FORM}", app.method_path(METHOD))).await, 8773);
    // A POST without a body reads the query string too.
    let path = format!("{}?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=30", app.method_path(METHOD));
    assert_removed(&app.post_raw(&path, None, Vec::new()).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14]);
}

#[tokio::test]
async fn query_and_body_are_merged_and_the_body_wins() {
    let app = spawn_app().await;
    // USER_ID=15 (not a member) in the query, 20 in the body: removing 20 shows the body won.
    let path = format!("{}?USER_ID=15&CRM_ENTITY_TYPE=deal", app.method_path(METHOD));
    let resp = app.post_raw(&path, Some("application/json"), br#"{"USER_ID": 20, "CRM_ENTITY": 288}"#.to_vec()).await;
    assert_removed(&resp, 8773);
    let resp = app.post_form(&path, "USER_ID=30&CRM_ENTITY=288").await;
    assert_removed(&resp, 8773);
    let resp = app.post_multipart(&path, &[("USER_ID", "14"), ("CRM_ENTITY", "288")]).await;
    assert_removed(&resp, 8773);
    assert_eq!(members(&app.export(), 8773), [12]);
}

#[tokio::test]
async fn other_content_types_are_read_as_urlencoded() {
    let app = spawn_app().await;
    assert_removed(&app.post_raw(&app.method_path(METHOD), Some("text/plain"), FORM.into()).await, 8773);
    let body = "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=30";
    assert_removed(&app.post_raw(&app.method_path(METHOD), None, body.into()).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14]);
}

#[tokio::test]
async fn php_form_syntax() {
    let app = spawn_app().await;
    // Bracketed keys the method does not read are harmless, raw or percent-encoded; a trailing `&` too.
    let body = format!("FIELDS[TITLE]=x&select[]=ID&select[]=NAME&a%5Bb%5D%5B%5D=1&{FORM}&");
    assert_removed(&app.post_form(&app.method_path(METHOD), &body).await, 8773);
    // The last scalar wins.
    let body = "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=15&USER_ID=30";
    assert_removed(&app.post_form(&app.method_path(METHOD), body).await, 8773);
    // `.` and space in a top-level name become `_`, as in PHP.
    let body = "CRM_ENTITY.TYPE=deal&CRM+ENTITY=288&USER.ID=14";
    assert_removed(&app.post_form(&app.method_path(METHOD), body).await, 8773);
    assert_eq!(members(&app.export(), 8773), [12]);
}

#[tokio::test]
async fn bracketed_user_id_is_an_array() {
    let app = spawn_app().await;
    let resp = app.post_form(&app.method_path(METHOD), "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID[]=20").await;
    assert_invalid_argument(&resp, "USER_ID");
}

#[tokio::test]
async fn telemetry_and_reserved_parameters_are_ignored() {
    let app = spawn_app().await;
    let query = "bx24_request_id=abc123&bx24_sdk_ver=1.0&bx24_sdk_type=b24-js-sdk&start=0";
    let path = format!("{}?{query}", app.method_path(METHOD));
    let resp = app.send(app.client.post(app.url(&path)).header("X-Request-ID", "req-42").json(&json!({
        "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20, "start": 0, "bx24_request_id": "x"
    })));
    assert_removed(&resp.await, 8773);
    let body = format!("{FORM}&start=0&bx24_sdk_ver=2&state=x&").replace("USER_ID=20", "USER_ID=30");
    assert_removed(&app.post_form(&app.method_path(METHOD), &body).await, 8773);
}

#[tokio::test]
async fn keys_are_case_sensitive() {
    let app = spawn_app().await;
    let before = app.export();
    let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "user_id": 20})).await;
    assert_error(&resp, 400, "CRM_CHAT_EMPTY_USER", "Empty User ID");
    let resp = app.post_form(&app.method_path(METHOD), "crm_entity_type=deal&CRM_ENTITY=288&USER_ID=20").await;
    assert_error(&resp, 400, "CRM_CHAT_EMPTY_CRM_DATA", "Empty CRM data");
    let resp = app.get(&format!("{}?CRM_ENTITY_TYPE=deal&Crm_Entity=288&USER_ID=20", app.method_path(METHOD))).await;
    assert_error(&resp, 400, "CRM_CHAT_EMPTY_CRM_DATA", "Empty CRM data");
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn invalid_json_is_an_argument_error() {
    let app = spawn_app().await;
    let before = app.export();
    for body in [&br#"{"CRM_ENTITY_TYPE": "deal", "USER_ID": 20"#[..], b"{\"USER_ID\": tru}", FORM.as_bytes()] {
        let resp = app.post_raw(&app.method_path(METHOD), Some("application/json"), body.to_vec()).await;
        assert_eq!((resp.status, &resp.body["error"]), (400, &json!("ERROR_ARGUMENT")), "{}", resp.text);
        let description = resp.body["error_description"].as_str().unwrap();
        assert!(description.starts_with("Invalid JSON body:"), "{description}");
        assert!(description.len() > "Invalid JSON body:".len() + 1, "with a position: {description}");
        assert!(resp.body.get("time").is_none());
        assert_json_headers(&resp);
    }
    assert_eq!(app.export(), before);
}

/// An error in the envelope whose code and text the spec leaves open.
fn assert_enveloped(resp: &Resp, status: u16) {
    assert_eq!(resp.status, status, "{}", resp.text);
    let body = resp.body.as_object().unwrap_or_else(|| panic!("a JSON envelope: {}", resp.text));
    assert!(body["error"].is_string() && body["error_description"].is_string(), "{}", resp.text);
    assert!(body.get("time").is_none() && body.get("result").is_none(), "{}", resp.text);
    assert_json_headers(resp);
}

#[tokio::test]
async fn oversized_and_overdeep_requests_are_refused_in_the_envelope() {
    let app = spawn_app().await;
    let before = app.export();
    let path = app.method_path(METHOD);
    // Over the 1 MiB body limit.
    let big = format!("{FORM}&pad={}", "x".repeat(1024 * 1024 + 1));
    assert_enveloped(&app.post_form(&path, &big).await, 413);
    let big_json =
        format!(r#"{{"USER_ID": 20, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "pad": "{}"}}"#, "x".repeat(1 << 20));
    assert_enveloped(&app.post_raw(&path, Some("application/json"), big_json.into_bytes()).await, 413);
    // Deeper than 64 levels, and more than 1000 parameters.
    let deep = format!("{FORM}&a{}=1", "[x]".repeat(65));
    assert_enveloped(&app.post_form(&path, &deep).await, 400);
    let deep_json = format!(
        r#"{{"USER_ID": 20, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "a": {}1{}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    assert_enveloped(&app.post_raw(&path, Some("application/json"), deep_json.into_bytes()).await, 400);
    let many = (0..1001).map(|i| format!("k{i}=1")).collect::<Vec<_>>().join("&");
    assert_enveloped(&app.post_form(&path, &format!("{FORM}&{many}")).await, 400);
    assert_eq!(app.export(), before);
    // Right under the limits the call goes through.
    let nested = format!("{FORM}&a{}=1", "[x]".repeat(64));
    assert_removed(&app.post_form(&path, &nested).await, 8773);
}
