//! Credentials management on the command line (`crmchat webhook …`, `crmchat app …`): a running server picks
//! every change up without a restart; secrets are printed once and kept only as hashes.

use serde_json::{Value, json};

use crate::helpers::*;

/// The id and URL of `webhook {id}: {url}`.
fn parse_webhook_line(stdout: &str) -> (i64, String) {
    let line = stdout.lines().find(|l| l.starts_with("webhook ")).unwrap_or_else(|| panic!("{stdout}"));
    let (id, url) = line.strip_prefix("webhook ").unwrap().split_once(": ").unwrap_or_else(|| panic!("{line}"));
    (id.trim().parse().unwrap_or_else(|_| panic!("a numeric id: {line}")), url.trim().to_string())
}

/// `crmchat webhook add`: the id, the path prefix (`/rest/{user}/{code}/`) and the code.
fn add_webhook(app: &TestApp, user: i64, scopes: &str) -> (i64, String, String) {
    let out =
        app.cli_ok(&["webhook", "add", "--user", &user.to_string(), "--scope", scopes, "--base-url", &app.http_base]);
    let (id, url) = parse_webhook_line(&out);
    let prefix = url.strip_prefix(&app.http_base).unwrap_or_else(|| panic!("the URL is on the base URL: {url}"));
    let code = prefix
        .strip_prefix(&format!("/rest/{user}/"))
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("a webhook URL /rest/{user}/CODE/: {url}"))
        .to_string();
    assert!(code.len() >= 16 && code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
    (id, prefix.to_string(), code)
}

/// The rows of `crmchat webhook list` as (id, user, scopes).
fn webhook_rows(app: &TestApp) -> Vec<(i64, i64, String)> {
    app.cli_ok(&["webhook", "list"])
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some((cols.first()?.parse().ok()?, cols.get(1)?.parse().ok()?, cols.get(2)?.to_string()))
        })
        .collect()
}

fn export_hashes(export: &Value, list: &str, field: &str) -> Vec<String> {
    export[list].as_array().unwrap().iter().filter_map(|w| w[field].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn webhook_add_prints_a_url_that_works_at_once() {
    let app = spawn_app().await;
    let (id, prefix, code) = add_webhook(&app, 12, "imopenlines,im");
    // The running server accepts it immediately, as user 12.
    let resp = app.call_as(&prefix, "profile", json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["result"]["ID"], "12");
    let resp = app.call_as(&prefix, "scope", json!({})).await;
    assert_eq!(resp.body["result"], json!(["imopenlines", "im"]), "{}", resp.text);
    let resp = app.call_as(&prefix, METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20})).await;
    assert_removed(&resp, 8773);
    // The list shows it, never its code.
    let list = app.cli_ok(&["webhook", "list"]);
    assert!(!list.contains(&code), "webhook list printed the code:\n{list}");
    assert!(webhook_rows(&app).contains(&(id, 12, "imopenlines,im".to_string())), "{list}");
    // Only a hash is kept.
    let export = app.export();
    assert!(!export.to_string().contains(&code));
    let hash = crmchat::secrets::sha256_hex(&code);
    assert!(export_hashes(&export, "webhooks", "code_sha256").contains(&hash), "{}", export["webhooks"]);
    // Another call of `add` gives another code and id.
    let (id2, _, code2) = add_webhook(&app, 12, "im");
    assert!(id2 != id && code2 != code);
}

#[tokio::test]
async fn webhook_scopes_are_those_given() {
    let app = spawn_app().await;
    let (_, prefix, _) = add_webhook(&app, 1, "im");
    let resp = app.call_as(&prefix, METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20})).await;
    assert_error(
        &resp,
        401,
        "insufficient_scope",
        "The request requires higher privileges than provided by the webhook token",
    );
    assert_eq!(app.call_as(&prefix, "im.chat.user.list", json!({"CHAT_ID": 8773})).await.status, 200);
    // Duplicates and spaces are tolerated; the scopes are stored once each.
    let (id, _, _) = add_webhook(&app, 1, "im, imopenlines,im");
    let row = webhook_rows(&app).into_iter().find(|r| r.0 == id).unwrap();
    let mut scopes: Vec<&str> = row.2.split(',').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["im", "imopenlines"]);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn webhook_revoke_takes_effect_without_restart() {
    let app = spawn_app().await;
    let (id, prefix, _) = add_webhook(&app, 1, "imopenlines,im");
    assert_eq!(app.call_as(&prefix, "profile", json!({})).await.status, 200);
    let out = app.cli_ok(&["webhook", "revoke", &id.to_string()]);
    assert!(out.contains(&id.to_string()), "{out}");
    let invalid = |resp: &Resp| assert_error(resp, 401, "INVALID_CREDENTIALS", "Invalid request credentials");
    invalid(&app.call_as(&prefix, "profile", json!({})).await);
    invalid(&app.call_as(&prefix, METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20})).await);
    assert!(webhook_rows(&app).iter().all(|r| r.0 != id));
    // The demo webhook from the fixture can be revoked the same way.
    let demo_id = webhook_rows(&app).iter().find(|r| r.1 == 1).map(|r| r.0).expect("the demo webhook is listed");
    assert_eq!(app.call("profile", json!({})).await.status, 200);
    app.cli_ok(&["webhook", "revoke", &demo_id.to_string()]);
    invalid(&app.call("profile", json!({})).await);
    // The other fixture webhook still works.
    assert_eq!(app.call_as("/rest/12/operatorhookcode12/", "profile", json!({})).await.status, 200);
    // Revoking twice, or an unknown id, fails.
    let again = app.cli(&["webhook", "revoke", &id.to_string()]);
    assert!(!again.ok, "{again:?}");
    let unknown = app.cli(&["webhook", "revoke", "999999"]);
    assert!(!unknown.ok && !unknown.stderr.is_empty(), "{unknown:?}");
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn webhook_add_refuses_bad_input() {
    let app = spawn_app().await;
    let before = webhook_rows(&app);
    for args in [
        vec!["webhook", "add", "--user", "999", "--scope", "im"],
        vec!["webhook", "add", "--user", "13", "--scope", "im"], // deactivated
        vec!["webhook", "add", "--user", "1", "--scope", "crm"],
        vec!["webhook", "add", "--user", "1", "--scope", ""],
        vec!["webhook", "add", "--user", "1"],
        vec!["webhook", "add", "--user", "abc", "--scope", "im"],
    ] {
        let run = app.cli(&args);
        assert!(!run.ok, "{args:?} should fail: {run:?}");
        assert!(!run.stdout.contains("/rest/"), "{args:?} printed a URL: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?} says why");
    }
    assert_eq!(webhook_rows(&app), before);
}

#[tokio::test]
async fn app_add_prints_secret_and_application_token_once() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.cli.app", "imopenlines,im");
    assert!(client.secret.len() >= 16 && client.application_token.len() >= 16);
    assert_ne!(client.secret, client.application_token);
    // The list shows the application and its scopes, not its secrets.
    let list = app.cli_ok(&["app", "list"]);
    let line = list.lines().find(|l| l.contains("local.cli.app")).unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("imopenlines,im"), "{list}");
    assert!(list.contains("local.demo.app"), "{list}");
    for secret in [&client.secret, &client.application_token, &"demo-secret".to_string()] {
        assert!(!list.contains(secret.as_str()), "app list printed a secret:\n{list}");
    }
    // The export holds the secret's hash; the application token is kept as given (state-format.md).
    let export = app.export();
    assert!(!export.to_string().contains(&client.secret));
    let row = export["apps"].as_array().unwrap().iter().find(|a| a["client_id"] == "local.cli.app").unwrap();
    assert_eq!(row["secret_sha256"], crmchat::secrets::sha256_hex(&client.secret));
    assert!(row.get("client_secret").is_none(), "{row}");
    assert_eq!(row["application_token"], client.application_token.as_str());
    assert_eq!(row["scopes"], json!(["imopenlines", "im"]));
    // The secret works at the token endpoint at once.
    app.issue_tokens(&client, 1).await;
    // A second `add` of the same id is refused and changes nothing.
    let again = app.cli(&["app", "add", "--client-id", "local.cli.app", "--scope", "im"]);
    assert!(!again.ok && !again.stdout.contains("client_secret"), "{again:?}");
    app.issue_tokens(&client, 1).await;
    assert!(app.cli_ok(&["app", "list"]).contains("imopenlines,im"));
}

#[tokio::test]
async fn app_commands_refuse_bad_input() {
    let app = spawn_app().await;
    for args in [
        vec!["app", "add", "--client-id", "x.app", "--scope", "nosuchscope"],
        vec!["app", "add", "--client-id", "x.app", "--scope", ""],
        vec!["app", "add", "--client-id", "", "--scope", "im"],
        vec!["app", "add", "--client-id", "x.app"],
    ] {
        let run = app.cli(&args);
        assert!(!run.ok && !run.stdout.contains("client_secret"), "{args:?} should fail: {run:?}");
    }
    assert!(!app.cli_ok(&["app", "list"]).contains("x.app"));
    for args in [
        vec!["app", "code", "--client-id", "no.such.app", "--user", "1"],
        vec!["app", "code", "--client-id", "local.demo.app", "--user", "999"],
        vec!["app", "code", "--client-id", "local.demo.app", "--user", "13"], // deactivated
        vec!["app", "remove", "--client-id", "no.such.app"],
    ] {
        let run = app.cli(&args);
        assert!(!run.ok && run.stdout.trim().is_empty(), "{args:?} should fail: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?} says why");
    }
}

#[tokio::test]
async fn app_remove_and_list() {
    let app = spawn_app().await;
    app.add_oauth_app("local.a.app", "im");
    app.add_oauth_app("local.b.app", "imopenlines");
    let list = app.cli_ok(&["app", "list"]);
    assert!(list.contains("local.a.app") && list.contains("local.b.app") && list.contains("local.demo.app"));
    app.cli_ok(&["app", "remove", "--client-id", "local.a.app"]);
    let list = app.cli_ok(&["app", "list"]);
    assert!(!list.contains("local.a.app") && list.contains("local.b.app"), "{list}");
    let export = app.export();
    let ids: Vec<&str> = export["apps"].as_array().unwrap().iter().filter_map(|a| a["client_id"].as_str()).collect();
    assert!(!ids.contains(&"local.a.app") && ids.contains(&"local.b.app"), "{ids:?}");
    // A code cannot be issued for a removed application.
    assert!(!app.cli(&["app", "code", "--client-id", "local.a.app", "--user", "1"]).ok);
}
