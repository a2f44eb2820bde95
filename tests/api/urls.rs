//! URL shapes, method lookup, authentication, scopes, response headers and HTTPS (protocol.md).

use serde_json::json;

use crate::helpers::*;

const FORM: &str = "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=20";

fn no_auth(resp: &Resp) {
    assert_error(resp, 401, "NO_AUTH_FOUND", "Wrong authorization data");
}

fn invalid_token(resp: &Resp) {
    assert_error(resp, 401, "invalid_token", "Unable to get application by token");
}

fn invalid_credentials(resp: &Resp) {
    assert_error(resp, 401, "INVALID_CREDENTIALS", "Invalid request credentials");
}

fn method_not_found(resp: &Resp) {
    assert_error(resp, 404, "ERROR_METHOD_NOT_FOUND", "Method not found!");
}

#[tokio::test]
async fn method_urls_without_a_webhook_need_a_token() {
    let app = spawn_app().await;
    for path in ["/rest/imopenlines.crm.chat.user.delete", "/rest/imopenlines.crm.chat.user.delete/"] {
        no_auth(&app.post_form(path, FORM).await);
        no_auth(&app.get(&format!("{path}?{FORM}")).await);
        invalid_token(&app.post_form(path, &format!("{FORM}&auth=nosuchtoken123")).await);
        invalid_token(&app.get(&format!("{path}?{FORM}&auth=nosuchtoken123")).await);
        invalid_token(&app.post_form(path, &format!("{FORM}&access_token=nosuchtoken123")).await);
        let bearer = app.client.post(app.url(path)).header("Authorization", "Bearer nosuchtoken123").body(FORM);
        invalid_token(&app.send(bearer).await);
    }
    no_auth(&app.post_form("/rest/imopenlines.crm.chat.user.delete.json", FORM).await);
    invalid_token(&app.get(&format!("/rest/imopenlines.crm.chat.user.delete.json?auth=x1&{FORM}")).await);
    let resp = app.get(&format!("/rest/imopenlines.crm.chat.user.delete.xml?{FORM}")).await;
    assert_eq!(resp.status, 401);
    assert_xml_headers(&resp);
    assert!(resp.text.contains("<error>NO_AUTH_FOUND</error>"), "{}", resp.text);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn webhook_url_shapes() {
    let app = spawn_app().await;
    let method = "imopenlines.crm.chat.user.delete";
    let cases = [
        (format!("{DEMO_HOOK}{method}"), 20),
        (format!("{DEMO_HOOK}{method}/"), 30),
        (format!("{DEMO_HOOK}{method}.json"), 14),
    ];
    for (path, user) in cases {
        let resp = app.post_form(&path, &format!("CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID={user}")).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        assert_removed(&resp, 8773);
    }
    assert_eq!(members(&app.export(), 8773), [12]);
}

#[tokio::test]
async fn xml_format() {
    let app = spawn_app().await;
    let path = format!("{DEMO_HOOK}imopenlines.crm.chat.user.delete.xml");
    let resp = app.post_form(&path, FORM).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_xml_headers(&resp);
    let doc = resp.text.strip_prefix(r#"<?xml version="1.0" encoding="utf-8"?>"#).unwrap_or(&resp.text);
    assert!(doc.starts_with("<response><result>8773</result><time>"), "{}", resp.text);
    assert!(doc.ends_with("</time></response>"), "{}", resp.text);
    for field in ["start", "finish", "duration", "processing", "date_start", "date_finish", "operating"] {
        assert!(doc.contains(&format!("<{field}>")), "time.{field} in {}", resp.text);
    }
    assert!(doc.contains("<operating_reset_at>"), "{}", resp.text);
    // Errors too, and `.XML` in any case.
    let resp = app.post_form(&format!("{DEMO_HOOK}IMOPENLINES.CRM.CHAT.USER.DELETE.XML"), FORM).await;
    assert_eq!(resp.status, 400);
    assert_xml_headers(&resp);
    let doc = resp.text.strip_prefix(r#"<?xml version="1.0" encoding="utf-8"?>"#).unwrap_or(&resp.text);
    assert_eq!(
        doc,
        "<response><error>USER_NOT_FOUND</error><error_description>The specified user is not in chat.\
         </error_description></response>"
    );
    let resp = app.post_form(&format!("{DEMO_HOOK}no.such.method.xml"), FORM).await;
    assert_eq!(resp.status, 404);
    assert_xml_headers(&resp);
    assert!(resp.text.contains("<response><error>ERROR_METHOD_NOT_FOUND</error>"), "{}", resp.text);
}

#[tokio::test]
async fn method_names_are_case_insensitive() {
    let app = spawn_app().await;
    assert_removed(&app.post_form(&format!("{DEMO_HOOK}IMOPENLINES.CRM.CHAT.USER.DELETE"), FORM).await, 8773);
    let body = "CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=30";
    assert_removed(&app.post_form(&format!("{DEMO_HOOK}ImOpenLines.Crm.Chat.User.Delete.JSON"), body).await, 8773);
}

#[tokio::test]
async fn unknown_method_is_decided_before_authentication() {
    let app = spawn_app().await;
    method_not_found(&app.post_form(&format!("{DEMO_HOOK}no.such.method"), FORM).await);
    method_not_found(&app.post_form(&format!("{DEMO_HOOK}no.such.method.json"), FORM).await);
    method_not_found(&app.post_form("/rest/1/wrongwebhookcode1/no.such.method.json", FORM).await);
    method_not_found(&app.post_form("/rest/abc/x/no.such.method", FORM).await);
    method_not_found(&app.get("/rest/no.such.method").await);
    method_not_found(&app.get("/rest/no.such.method?auth=nosuchtoken123").await);
    // A method name is matched as a whole.
    method_not_found(&app.post_form(&format!("{DEMO_HOOK}imopenlines.crm.chat.user"), FORM).await);
    method_not_found(&app.post_form(&format!("{DEMO_HOOK}imopenlines.crm.chat.user.delete.extra"), FORM).await);
}

#[tokio::test]
async fn bad_webhook_credentials() {
    let app = spawn_app().await;
    let before = app.export();
    let m = "imopenlines.crm.chat.user.delete.json";
    invalid_credentials(&app.post_form(&format!("/rest/1/wrongwebhookcode1/{m}"), FORM).await);
    invalid_credentials(&app.post_form(&format!("/rest/1/demowebhookcode/{m}"), FORM).await);
    invalid_credentials(&app.post_form(&format!("/rest/1/DEMOWEBHOOKCODE1/{m}"), FORM).await);
    invalid_credentials(&app.post_form(&format!("/rest/abc/demowebhookcode1/{m}"), FORM).await);
    invalid_credentials(&app.post_form(&format!("/rest/01x/demowebhookcode1/{m}"), FORM).await);
    // Another existing user with user 1's code, and a user that does not exist.
    invalid_credentials(&app.post_form(&format!("/rest/12/demowebhookcode1/{m}"), FORM).await);
    invalid_credentials(&app.post_form(&format!("/rest/999/demowebhookcode1/{m}"), FORM).await);
    invalid_credentials(&app.post_form(&format!("/rest/1/operatorhookcode12/{m}"), FORM).await);
    // Credentials are checked before the parameters are judged.
    invalid_credentials(&app.post_form(&format!("/rest/1/wrongwebhookcode1/{m}"), "USER_ID=abc").await);
    assert_eq!(app.export(), before);
    // User 12's own code works.
    assert_removed(&app.post_form(&format!("/rest/12/operatorhookcode12/{m}"), FORM).await, 8773);
}

#[tokio::test]
async fn webhook_without_the_scope() {
    let fixture = demo_with(|f| {
        f["webhooks"].as_array_mut().unwrap().push(json!({"user": 1, "code": "imonlywebhookcode1", "scopes": ["im"]}));
        f["webhooks"].as_array_mut().unwrap().push(json!({"user": 1, "code": "noscopewebhookcode", "scopes": []}));
    });
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    let text = "The request requires higher privileges than provided by the webhook token";
    for code in ["imonlywebhookcode1", "noscopewebhookcode"] {
        let resp = app.post_form(&format!("/rest/1/{code}/imopenlines.crm.chat.user.delete.json"), FORM).await;
        assert_error(&resp, 401, "insufficient_scope", text);
        // The scope is checked before the parameters.
        let resp = app.post_form(&format!("/rest/1/{code}/imopenlines.crm.chat.user.delete"), "").await;
        assert_error(&resp, 401, "insufficient_scope", text);
    }
    assert_eq!(app.export(), before);
}

#[tokio::test]
async fn rest_headers_on_every_answer() {
    let app = spawn_app().await;
    let m = "imopenlines.crm.chat.user.delete";
    let answers = [
        app.post_form(&format!("{DEMO_HOOK}{m}.json"), FORM).await,
        app.post_form(&format!("{DEMO_HOOK}{m}.json"), FORM).await,
        app.post_form(&format!("{DEMO_HOOK}{m}.json"), "USER_ID=abc").await,
        app.post_form(&format!("/rest/1/wrongwebhookcode1/{m}"), FORM).await,
        app.post_form(&format!("/rest/{m}"), FORM).await,
        app.post_form(&format!("{DEMO_HOOK}no.such.method"), FORM).await,
        app.get("/rest/").await,
        app.get("/rest/a/b/c/d").await,
        app.post_raw(&format!("{DEMO_HOOK}{m}"), Some("application/json"), b"{".to_vec()).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 400, 400, 401, 401, 404, 404, 404, 400]);
    for resp in &answers {
        assert_json_headers(resp);
    }
    assert_success(&answers[0], json!(8773));
}

#[tokio::test]
async fn never_a_redirect() {
    let app = spawn_app().await;
    let m = "imopenlines.crm.chat.user.delete";
    let paths = [
        "/rest".to_string(),
        "/rest/".to_string(),
        format!("/rest/{m}"),
        format!("/rest/{m}/"),
        format!("/rest/1/demowebhookcode1/{m}"),
        format!("/rest/1/demowebhookcode1/{m}/"),
        "/rest/1/demowebhookcode1/".to_string(),
        "/rest/1/demowebhookcode1".to_string(),
        format!("/rest//1/demowebhookcode1/{m}"),
        format!("/rest/1/demowebhookcode1//{m}"),
        "/".to_string(),
    ];
    for path in &paths {
        for resp in [app.get(path).await, app.post_form(path, "USER_ID=15&CRM_ENTITY_TYPE=deal&CRM_ENTITY=288").await] {
            assert!(!(300..400).contains(&resp.status), "{path} answered a redirect: {}", resp.status);
            assert!(resp.header("location").is_none(), "{path} answered with a Location");
        }
    }
}

#[tokio::test]
async fn require_https() {
    let fixture = demo_with(|f| f["portal"]["require_https"] = json!(true));
    let app = spawn_app_with(fixture).await;
    let before = app.export();
    let path = format!("{DEMO_HOOK}imopenlines.crm.chat.user.delete.json");
    assert_error(&app.post_form(&path, FORM).await, 401, "INVALID_REQUEST", "Https required.");
    assert_eq!(app.export(), before);
    let client = app.https_client().build().unwrap();
    let resp = app.send(client.post(format!("{}{path}", app.https_base)).form(&[
        ("CRM_ENTITY_TYPE", "deal"),
        ("CRM_ENTITY", "288"),
        ("USER_ID", "20"),
    ]));
    assert_removed(&resp.await, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 30]);
}

#[tokio::test]
async fn https_with_the_generated_certificate() {
    let app = spawn_app().await;
    assert!(app.cert_path.starts_with(&app.data_dir), "the certificate is kept in the data directory");
    let port = app.https_base.rsplit(':').next().unwrap().to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path = format!("{DEMO_HOOK}imopenlines.crm.chat.user.delete.json");
    // By IP address.
    let client = app.https_client().build().unwrap();
    let resp = client.post(format!("https://127.0.0.1:{port}{path}")).form(&[
        ("CRM_ENTITY_TYPE", "deal"),
        ("CRM_ENTITY", "288"),
        ("USER_ID", "20"),
    ]);
    assert_removed(&app.send(resp).await, 8773);
    // By the name `localhost`.
    let client = app.https_client().resolve("localhost", addr).build().unwrap();
    let resp = client.post(format!("https://localhost:{port}{path}")).json(&json!({
        "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 30
    }));
    assert_removed(&app.send(resp).await, 8773);
    // And by the portal domain.
    let client = app.https_client().resolve("crmchat.localhost", addr).build().unwrap();
    let resp =
        client.get(format!("https://crmchat.localhost:{port}{path}?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=15"));
    assert_error(&app.send(resp).await, 400, "USER_NOT_FOUND", "The specified user is not in chat.");
    // A client that does not trust the certificate refuses the connection.
    let strict = reqwest::Client::builder().build().unwrap();
    assert!(strict.get(format!("https://127.0.0.1:{port}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn the_certificate_is_kept_across_restarts() {
    let mut app = spawn_app().await;
    let pem = std::fs::read(&app.cert_path).unwrap();
    app.restart();
    assert_eq!(std::fs::read(&app.cert_path).unwrap(), pem);
}

#[tokio::test]
async fn healthz() {
    let app = spawn_app().await;
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let client = app.https_client().build().unwrap();
    let resp = app.send(client.get(format!("{}/healthz", app.https_base))).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

/// Runs of slashes count as one, as on the vendor's web server: the JS SDK's OAuth client joins
/// `client_endpoint` (`…/rest/`) and `/{method}` into `/rest//{method}`, and webhook URLs pasted with a slash too
/// many still work.
#[tokio::test]
async fn doubled_slashes_in_method_urls_count_as_one() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.slashes.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 12).await;
    let token = tokens["access_token"].as_str().unwrap();
    let resp = app.get(&format!("/rest//profile.json?auth={token}")).await;
    assert_eq!((resp.status, &resp.body["result"]["ID"]), (200, &json!("12")), "{}", resp.text);
    let hook = hook(1, "demowebhookcode1");
    let doubled = hook.replacen("/rest/", "/rest//", 1).replace("demowebhookcode1/", "demowebhookcode1//");
    let resp = app.post_form(&format!("{doubled}imopenlines.crm.chat.user.delete.json"), FORM).await;
    assert_removed(&resp, 8773);
}
