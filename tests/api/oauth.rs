//! OAuth applications (protocol.md, Authentication and scopes; compatibility.md #5): the local token endpoint, the
//! order in which a token is looked up, and each token error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::helpers::*;

const DOMAIN: &str = "crmchat.localhost";
const INVALID_TOKEN: &str = "Unable to get application by token";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An OAuth error of the token endpoint: `{error, error_description}` exactly, never a 2xx.
fn assert_oauth_error(resp: &Resp, code: &str) {
    assert!(resp.status >= 400 && resp.status < 500, "a 4xx: {} {}", resp.status, resp.text);
    assert_eq!(resp.body["error"], code, "{}", resp.text);
    let keys: Vec<&str> = resp.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["error", "error_description"], "{}", resp.text);
    assert!(resp.body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}", resp.text);
    assert_json_headers(resp);
    assert_no_internals(&resp.text);
}

/// The token answer: exactly the vendor's fields, with their types.
fn assert_token_body(body: &Value, user: i64, scope: &str, ttl: i64) {
    let mut keys: Vec<&str> = body.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = [
        "access_token",
        "refresh_token",
        "expires",
        "expires_in",
        "scope",
        "domain",
        "server_endpoint",
        "client_endpoint",
        "member_id",
        "user_id",
        "status",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "{body}");
    let access = body["access_token"].as_str().expect("access_token is a string");
    let refresh = body["refresh_token"].as_str().expect("refresh_token is a string");
    assert!(access.len() >= 16 && refresh.len() >= 16 && access != refresh, "{body}");
    assert!(body["expires"].is_i64(), "expires is an integer (unix time): {body}");
    assert!((body["expires"].as_i64().unwrap() - (now() + ttl)).abs() <= 60, "expires = now + ttl: {body}");
    assert_eq!(body["expires_in"], json!(ttl), "{body}");
    assert_eq!(body["scope"], scope, "{body}");
    assert_eq!(body["domain"], DOMAIN, "{body}");
    assert_eq!(body["client_endpoint"], format!("https://{DOMAIN}/rest/"), "{body}");
    assert!(body["server_endpoint"].as_str().is_some_and(|s| s.starts_with("https://")), "{body}");
    assert!(body["member_id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
    assert_eq!(body["user_id"], json!(user), "user_id is an integer: {body}");
    assert_eq!(body["status"], "L", "{body}");
}

fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_string()
}

fn refresh(tokens: &Value) -> String {
    tokens["refresh_token"].as_str().unwrap().to_string()
}

fn assert_profile(resp: &Resp, user: i64) {
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["result"]["ID"], user.to_string(), "{}", resp.text);
    assert_time(&resp.body["time"]);
}

#[tokio::test]
async fn authorization_code_flow_gives_the_vendors_token_fields() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.flow.app", "imopenlines,im");
    let code = app.auth_code(&client.client_id, 12);
    assert!(code.len() >= 16 && code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    // GET with the parameters in the query, as the vendor's docs show it.
    let query = form(&[
        ("grant_type", "authorization_code"),
        ("client_id", &client.client_id),
        ("client_secret", &client.secret),
        ("code", &code),
    ]);
    let resp = app.get(&format!("/oauth/token/?{query}")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_json_headers(&resp);
    assert_token_body(&resp.body, 12, "imopenlines,im", 3600);
    assert!(resp.body.get("time").is_none(), "the token answer is not a REST envelope: {}", resp.text);
    let tokens = resp.body;
    // The member id is the portal's: the same for every token.
    let other = app.issue_tokens(&client, 1).await;
    assert_token_body(&other, 1, "imopenlines,im", 3600);
    assert_eq!(other["member_id"], tokens["member_id"]);
    assert_ne!(access(&other), access(&tokens));

    // The token works, as its user, for methods of its scopes.
    assert_profile(&app.call_bearer(&access(&tokens), "profile", json!({})).await, 12);
    assert_profile(&app.call_bearer(&access(&other), "profile", json!({})).await, 1);
    let resp = app
        .call_bearer(&access(&other), METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20}))
        .await;
    assert_removed(&resp, 8773);
    assert_eq!(members(&app.export(), 8773), [12, 14, 30]);
}

#[tokio::test]
async fn token_endpoint_accepts_post_bodies_and_the_path_without_slash() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.post.app", "imopenlines,im");
    let code = app.auth_code(&client.client_id, 1);
    let params = json!({"grant_type": "authorization_code", "client_id": client.client_id,
                        "client_secret": client.secret, "code": code});
    let resp = app.post_raw("/oauth/token/", Some("application/json"), params.to_string().into_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_token_body(&resp.body, 1, "imopenlines,im", 3600);
    let code = app.auth_code(&client.client_id, 1);
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("client_id", &client.client_id),
        ("client_secret", &client.secret),
        ("code", &code),
    ]);
    let resp = app.post_form("/oauth/token", &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_token_body(&resp.body, 1, "imopenlines,im", 3600);
}

/// The authorization-code grant for `code` with `client`'s credentials.
async fn code_grant(app: &TestApp, client: &OAuthClient, code: &str) -> Resp {
    app.token_request(&[
        ("grant_type", "authorization_code"),
        ("client_id", &client.client_id),
        ("client_secret", &client.secret),
        ("code", code),
    ])
    .await
}

#[tokio::test]
async fn a_code_works_once_and_only_for_its_application() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.once.app", "imopenlines,im");
    let other = app.add_oauth_app("local.other.app", "imopenlines,im");
    let code = app.auth_code(&client.client_id, 1);
    assert_eq!(code_grant(&app, &client, &code).await.status, 200);
    assert_oauth_error(&code_grant(&app, &client, &code).await, "invalid_grant");
    // Another application's code, with that other application's own good credentials.
    let code = app.auth_code(&client.client_id, 1);
    assert_oauth_error(&code_grant(&app, &other, &code).await, "invalid_grant");
    // A code never issued.
    assert_oauth_error(&code_grant(&app, &client, "neverissuedcode0123456789abcdef").await, "invalid_grant");
    // Codes are distinct each time.
    assert_ne!(app.auth_code(&client.client_id, 1), app.auth_code(&client.client_id, 1));
}

#[tokio::test]
async fn wrong_client_credentials_are_invalid_client() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.creds.app", "imopenlines,im");
    let code = app.auth_code(&client.client_id, 1);
    for (client_id, secret) in
        [(client.client_id.as_str(), "wrong-secret"), ("no.such.app", client.secret.as_str()), ("local.demo.app", "x")]
    {
        let resp = app
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("code", &code),
            ])
            .await;
        assert_oauth_error(&resp, "invalid_client");
        assert!(!resp.text.contains(&code) && !resp.text.contains(&client.secret), "{}", resp.text);
    }
    // The same for the refresh grant.
    let resp = app
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client.client_id),
            ("client_secret", "wrong-secret"),
            ("refresh_token", "whatever"),
        ])
        .await;
    assert_oauth_error(&resp, "invalid_client");
}

#[tokio::test]
async fn missing_parameters_are_invalid_request() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.params.app", "imopenlines,im");
    let code = app.auth_code(&client.client_id, 1);
    let full = [
        ("grant_type", "authorization_code"),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.secret.as_str()),
        ("code", code.as_str()),
    ];
    for missing in 0..full.len() {
        let pairs: Vec<(&str, &str)> =
            full.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, p)| *p).collect();
        assert_oauth_error(&app.token_request(&pairs).await, "invalid_request");
    }
    assert_oauth_error(&app.token_request(&[]).await, "invalid_request");
    assert_oauth_error(&app.get("/oauth/token/").await, "invalid_request");
    let empty_code = [full[0], full[1], full[2], ("code", "")];
    assert_oauth_error(&app.token_request(&empty_code).await, "invalid_request");
    let no_refresh = [("grant_type", "refresh_token"), full[1], full[2]];
    assert_oauth_error(&app.token_request(&no_refresh).await, "invalid_request");
    // The code was never consumed by the refused requests: it still works.
    assert_eq!(app.token_request(&full).await.status, 200);
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.rotate.app", "imopenlines,im");
    let first = app.issue_tokens(&client, 12).await;
    let grant = |refresh: &str| {
        form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client.client_id),
            ("client_secret", &client.secret),
            ("refresh_token", refresh),
        ])
    };
    let resp = app.get(&format!("/oauth/token/?{}", grant(&refresh(&first)))).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_token_body(&resp.body, 12, "imopenlines,im", 3600);
    let second = resp.body;
    assert_ne!(refresh(&second), refresh(&first), "a new refresh token each time");
    assert_ne!(access(&second), access(&first));
    assert_profile(&app.call_bearer(&access(&second), "profile", json!({})).await, 12);
    // The old refresh token is spent.
    assert_oauth_error(&app.post_form("/oauth/token/", &grant(&refresh(&first))).await, "invalid_grant");
    // The new one works once, too.
    let resp = app.post_form("/oauth/token/", &grant(&refresh(&second))).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let third = resp.body;
    assert_profile(&app.call_bearer(&access(&third), "profile", json!({})).await, 12);
    assert_oauth_error(&app.post_form("/oauth/token/", &grant(&refresh(&second))).await, "invalid_grant");
    // An access token is not a refresh token; nor is another application's refresh token usable.
    assert_oauth_error(&app.post_form("/oauth/token/", &grant(&access(&third))).await, "invalid_grant");
    let other = app.add_oauth_app("local.rotate.other", "imopenlines,im");
    let resp = app
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", &other.client_id),
            ("client_secret", &other.secret),
            ("refresh_token", &refresh(&third)),
        ])
        .await;
    assert_oauth_error(&resp, "invalid_grant");
    // ...and that failed attempt did not spend it.
    assert_eq!(app.post_form("/oauth/token/", &grant(&refresh(&third))).await.status, 200);
}

#[tokio::test]
async fn token_lookup_order_is_bearer_then_auth_then_access_token() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.order.app", "imopenlines,im");
    let valid = access(&app.issue_tokens(&client, 12).await);
    let invalid = "0000invalidtoken0000";
    let unknown = |resp: &Resp| assert_error(resp, 401, "invalid_token", INVALID_TOKEN);
    let post = |bearer: Option<&str>, body: String| {
        let mut request = app.client.post(app.url("/rest/profile.json")).header("content-type", FORM_TYPE).body(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        app.send(request)
    };
    // The header beats `auth`, and `auth` beats `access_token`; proven with one valid and one invalid token.
    assert_profile(&post(Some(&valid), form(&[("auth", invalid)])).await, 12);
    unknown(&post(Some(invalid), form(&[("auth", &valid)])).await);
    assert_profile(&post(Some(&valid), form(&[("access_token", invalid)])).await, 12);
    unknown(&post(Some(invalid), form(&[("access_token", &valid)])).await);
    assert_profile(&post(None, form(&[("auth", &valid), ("access_token", invalid)])).await, 12);
    unknown(&post(None, form(&[("auth", invalid), ("access_token", &valid)])).await);
    // Each place on its own: query, form, JSON, header.
    for name in ["auth", "access_token"] {
        assert_profile(&app.get(&format!("/rest/profile?{name}={valid}")).await, 12);
        assert_profile(&post(None, form(&[(name, &valid)])).await, 12);
        let body = json!({ name: valid }).to_string().into_bytes();
        assert_profile(&app.post_raw("/rest/profile.json", Some("application/json"), body).await, 12);
        let fields = [(name, valid.as_str())];
        assert_profile(&app.post_multipart("/rest/profile", &fields).await, 12);
    }
    assert_profile(&post(Some(&valid), String::new()).await, 12);
    // The JSON body's `auth` beats its `access_token` too.
    let body = json!({"auth": invalid, "access_token": valid}).to_string().into_bytes();
    unknown(&app.post_raw("/rest/profile.json", Some("application/json"), body).await);
    // Reserved keys are consumed: the token is not a parameter a method sees (the call succeeds as usual).
    let resp = app
        .post_form(
            &format!("/rest/{METHOD}.json"),
            &form(&[("auth", &valid), ("CRM_ENTITY_TYPE", "deal"), ("CRM_ENTITY", "288"), ("USER_ID", "20")]),
        )
        .await;
    assert_removed(&resp, 8773);
}

const FORM_TYPE: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn unknown_token_is_invalid_token() {
    let app = spawn_app().await;
    let token = "f".repeat(64);
    assert_error(&app.call_bearer(&token, "profile", json!({})).await, 401, "invalid_token", INVALID_TOKEN);
    assert_error(&app.get(&format!("/rest/profile?auth={token}")).await, 401, "invalid_token", INVALID_TOKEN);
    let resp = app.post_form("/rest/app.info", &format!("access_token={token}")).await;
    assert_error(&resp, 401, "invalid_token", INVALID_TOKEN);
    // Also for a scoped method: the token is judged before the scope.
    let resp =
        app.call_bearer(&token, METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20})).await;
    assert_error(&resp, 401, "invalid_token", INVALID_TOKEN);
    // The application token (meant for event handlers) and a client secret are not access tokens.
    let client = app.add_oauth_app("local.unknown.app", "imopenlines,im");
    for not_a_token in [&client.application_token, &client.secret] {
        let resp = app.call_bearer(not_a_token, "profile", json!({})).await;
        assert_error(&resp, 401, "invalid_token", INVALID_TOKEN);
    }
    // No credentials at all is another error.
    assert_error(&app.get("/rest/profile").await, 401, "NO_AUTH_FOUND", "Wrong authorization data");
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn access_tokens_expire() {
    let app = spawn_app_with_args(demo_fixture(), &["--access-token-ttl", "1"]).await;
    let client = app.add_oauth_app("local.expiry.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 12).await;
    assert_token_body(&tokens, 12, "imopenlines,im", 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = |resp: &Resp| assert_error(resp, 401, "expired_token", "The access token provided has expired");
    expired(&app.call_bearer(&access(&tokens), "profile", json!({})).await);
    expired(&app.get(&format!("/rest/server.time?auth={}", access(&tokens))).await);
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20});
    expired(&app.call_bearer(&access(&tokens), METHOD, params).await);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30], "an expired token changed nothing");
    // Refresh tokens live 180 days: the refresh grant gives a working token again.
    let resp = app
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client.client_id),
            ("client_secret", &client.secret),
            ("refresh_token", &refresh(&tokens)),
        ])
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_profile(&app.call_bearer(&access(&resp.body), "profile", json!({})).await, 12);
}

async fn refresh_with(app: &TestApp, client: &OAuthClient, tokens: &Value) -> Resp {
    let refresh = refresh(tokens);
    let pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.secret.as_str()),
        ("refresh_token", refresh.as_str()),
    ];
    app.token_request(&pairs).await
}

/// As on the vendor, whose portals check an access token against its own expiry only: a refresh spends the
/// refresh token, and the access token issued with it keeps working until it expires. Spent pairs are deleted
/// once their access token expired (at the next refresh), and what expired stays refused.
#[tokio::test]
async fn after_a_refresh_the_previous_access_token_works_until_it_expires() {
    let app = spawn_app_with_args(demo_fixture(), &["--access-token-ttl", "2"]).await;
    let client = app.add_oauth_app("local.overlap.app", "imopenlines,im");
    let first = app.issue_tokens(&client, 12).await;
    let resp = refresh_with(&app, &client, &first).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let second = resp.body;
    assert_profile(&app.call_bearer(&access(&first), "profile", json!({})).await, 12);
    assert_profile(&app.call_bearer(&access(&second), "profile", json!({})).await, 12);
    assert_oauth_error(&refresh_with(&app, &client, &first).await, "invalid_grant");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = |resp: &Resp| assert_error(resp, 401, "expired_token", "The access token provided has expired");
    expired(&app.call_bearer(&access(&first), "profile", json!({})).await);
    expired(&app.call_bearer(&access(&second), "profile", json!({})).await);
    // The next refresh deletes the spent pairs whose access token expired, the first and now the second: their
    // tokens are unknown from then on, and still refused.
    let resp = refresh_with(&app, &client, &second).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let third = resp.body;
    for old in [&first, &second] {
        assert_error(&app.call_bearer(&access(old), "profile", json!({})).await, 401, "invalid_token", INVALID_TOKEN);
    }
    assert_profile(&app.call_bearer(&access(&third), "profile", json!({})).await, 12);
    assert_oauth_error(&refresh_with(&app, &client, &first).await, "invalid_grant");
}

#[tokio::test]
async fn access_tokens_live_one_hour_by_default() {
    let app = spawn_app().await;
    let tokens = app.issue_tokens(&app.add_oauth_app("local.hour.app", "im"), 1).await;
    assert_token_body(&tokens, 1, "im", 3600);
}

#[tokio::test]
async fn deactivated_user_is_an_authorization_error() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.deactivate.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 14).await;
    assert_profile(&app.call_bearer(&access(&tokens), "profile", json!({})).await, 14);
    // Deactivate user 14 while the server runs.
    let file = app.data_dir.join("deactivate.json");
    let state = json!({"users": [{"id": 14, "name": "Olga", "last_name": "Orlova", "active": false}]});
    std::fs::write(&file, state.to_string()).unwrap();
    let out = load_file(&app.data_dir, &file);
    assert!(out.status.success(), "state load: {}", String::from_utf8_lossy(&out.stderr));
    let refused = |resp: &Resp| assert_error(resp, 401, "authorization_error", "Unable to authorize user");
    refused(&app.call_bearer(&access(&tokens), "profile", json!({})).await);
    refused(&app.get(&format!("/rest/app.info?auth={}", access(&tokens))).await);
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20});
    refused(&app.call_bearer(&access(&tokens), METHOD, params).await);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn scopes_are_checked_with_the_access_token_wording() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.scope.app", "im");
    let tokens = app.issue_tokens(&client, 1).await;
    assert_eq!(tokens["scope"], "im");
    let token = access(&tokens);
    let wording = "The request requires higher privileges than provided by the access token";
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20});
    assert_error(&app.call_bearer(&token, METHOD, params).await, 401, "insufficient_scope", wording);
    let resp = app.call_bearer(&token, "imopenlines.crm.chat.getLastId", json!({})).await;
    assert_error(&resp, 401, "insufficient_scope", wording);
    // A granted scope and the global methods work.
    assert_eq!(app.call_bearer(&token, "im.chat.user.list", json!({"CHAT_ID": 8773})).await.status, 200);
    let resp = app.call_bearer(&token, "scope", json!({})).await;
    assert_eq!(resp.body["result"], json!(["im"]), "{}", resp.text);
    // In a batch, each command's scope is checked on its own, with the same wording.
    let cmd =
        json!({"cmd": {"a": "server.time", "b": format!("{METHOD}?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=20")}});
    let resp = app.call_bearer(&token, "batch", cmd).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.body["result"]["result_error"]["b"],
        json!({"error": "insufficient_scope", "error_description": wording}),
        "{}",
        resp.text
    );
    assert!(resp.body["result"]["result"]["a"].is_string(), "{}", resp.text);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn app_info_has_its_oauth_form() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.info.app", "imopenlines,im");
    let token = access(&app.issue_tokens(&client, 12).await);
    let resp = app.call_bearer(&token, "app.info", json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let info = &resp.body["result"];
    let mut keys: Vec<&str> = info.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["CODE", "DAYS", "ID", "INSTALLED", "LANGUAGE_ID", "LICENSE", "PAYMENT_EXPIRED", "STATUS", "VERSION"],
        "{info}"
    );
    assert_eq!(info["STATUS"], "L");
    assert_eq!(info["INSTALLED"], true);
    assert_eq!(info["PAYMENT_EXPIRED"], "N");
    assert_eq!(info["DAYS"], Value::Null);
    assert_eq!(info["LANGUAGE_ID"], "en");
    assert!(info["LICENSE"].is_string() && info["VERSION"].is_number(), "{info}");
    assert!(info["ID"].is_string() || info["ID"].is_number(), "{info}");
    assert!(info["CODE"].is_string(), "{info}");
    // Over a webhook: the other form.
    let resp = app.call("app.info", json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let mut keys: Vec<&str> = resp.body["result"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["LICENSE", "SCOPE"], "{}", resp.text);
    assert_eq!(resp.body["result"]["SCOPE"], json!(["imopenlines", "im"]));
}

#[tokio::test]
async fn removing_an_app_invalidates_its_tokens() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.removed.app", "imopenlines,im");
    let keep = app.add_oauth_app("local.kept.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 12).await;
    let kept = app.issue_tokens(&keep, 12).await;
    let code = app.auth_code(&client.client_id, 12);
    assert_profile(&app.call_bearer(&access(&tokens), "profile", json!({})).await, 12);
    let out = app.cli_ok(&["app", "remove", "--client-id", &client.client_id]);
    assert!(out.contains(&client.client_id), "{out}");
    assert_error(&app.call_bearer(&access(&tokens), "profile", json!({})).await, 401, "invalid_token", INVALID_TOKEN);
    let refresh_grant = [
        ("grant_type", "refresh_token"),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.secret.as_str()),
        ("refresh_token", &refresh(&tokens)),
    ];
    let resp = app.token_request(&refresh_grant).await;
    assert!(resp.status >= 400 && resp.status < 500 && resp.body["error"].is_string(), "{}", resp.text);
    let code_grant = [
        ("grant_type", "authorization_code"),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.secret.as_str()),
        ("code", code.as_str()),
    ];
    assert_oauth_error(&app.token_request(&code_grant).await, "invalid_client");
    // Other applications are untouched.
    assert_profile(&app.call_bearer(&access(&kept), "profile", json!({})).await, 12);
    assert!(!app.cli_ok(&["app", "list"]).contains(&client.client_id));
    // Registering the id again gives a new secret; the old tokens stay dead.
    let again = app.add_oauth_app(&client.client_id, "imopenlines,im");
    assert_ne!(again.secret, client.secret);
    assert_error(&app.call_bearer(&access(&tokens), "profile", json!({})).await, 401, "invalid_token", INVALID_TOKEN);
}

/// Codes live 30 seconds (the issue: "a one-time authorization code (30 s)").
#[tokio::test]
async fn authorization_codes_expire_after_30_seconds() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.slowcode.app", "imopenlines,im");
    let code = app.auth_code(&client.client_id, 1);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_oauth_error(&code_grant(&app, &client, &code).await, "invalid_grant");
}

/// Behind `--public-url`, the endpoints of a token answer (a grant and a refresh) name the address clients reach
/// this server at instead of the portal's domain: an SDK that follows `client_endpoint` after a refresh then keeps
/// calling this server.
#[tokio::test]
async fn token_answers_name_the_public_url_when_one_is_set() {
    let app = spawn_app_with_args(demo_fixture(), &["--public-url", "https://127.0.0.1:9443/"]).await;
    let client = app.add_oauth_app("local.public.app", "imopenlines,im");
    let tokens = app.issue_tokens(&client, 12).await;
    assert_eq!(tokens["client_endpoint"], "https://127.0.0.1:9443/rest/", "{tokens}");
    assert_eq!(tokens["server_endpoint"], "https://127.0.0.1:9443/oauth/rest/", "{tokens}");
    let refreshed = refresh_with(&app, &client, &tokens).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert_eq!(refreshed.body["client_endpoint"], "https://127.0.0.1:9443/rest/", "{}", refreshed.text);
    assert_eq!(refreshed.body["domain"], DOMAIN, "the portal's domain stays its own: {}", refreshed.text);

    // The OAuth server is `server_endpoint` without `/rest/`, as clients derive it from the vendor's
    // `https://oauth.bitrix.info/rest/`; its token endpoint is `/oauth/token/` under that.
    let server = tokens["server_endpoint"].as_str().unwrap().replace("/rest/", "");
    let path = format!("{}/oauth/token/", server.trim_start_matches("https://127.0.0.1:9443"));
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", &client.client_id),
        ("client_secret", &client.secret),
        ("refresh_token", refreshed.body["refresh_token"].as_str().unwrap()),
    ]);
    let again = app.post_form(&path, &body).await;
    assert_eq!(again.status, 200, "{path}: {}", again.text);
    assert_eq!(again.body["user_id"], 12, "{}", again.text);
    assert_profile(&app.call_bearer(&access(&again.body), "profile", json!({})).await, 12);
}
