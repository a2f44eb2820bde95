//! Secrets of the credentials commands and of OAuth (webhook codes, client secrets, application tokens,
//! authorization codes, access and refresh tokens) never appear in logs, error answers, other commands' output
//! or `state export` (state-format.md; the item 6). Only the one-time prints show them.

use serde_json::{Value, json};

use crate::helpers::*;

/// Everything secret a run produced, by name.
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, name: &'static str, value: &str) {
        assert!(value.len() >= 16, "{name} is long enough to search for: {value:?}");
        self.0.push((name, value.to_string()));
    }

    /// Asserts that `text` (named `what`) contains none of the secrets except those in `allowed`.
    fn assert_absent(&self, what: &str, text: &str, allowed: &[&str]) {
        for (name, value) in &self.0 {
            if !allowed.contains(name) {
                assert!(!text.contains(value.as_str()), "{what} contains the {name} {value}:\n{text}");
            }
        }
    }
}

/// `secret` with its last character replaced by another one: a near miss that is never the secret itself (a
/// fixed replacement would equal it whenever the secret already ends with that character).
fn last_char_changed(secret: &str) -> String {
    let (head, last) = secret.split_at(secret.len() - 1);
    let changed = format!("{head}{}", if last == "0" { '1' } else { '0' });
    assert_ne!(changed, secret);
    changed
}

fn tokens_of(body: &Value) -> (String, String) {
    (body["access_token"].as_str().unwrap().to_string(), body["refresh_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn no_secret_in_logs_errors_outputs_or_export() {
    let app = spawn_app_with_env(demo_fixture(), &[("CRMCHAT_LOG", "debug")]).await;
    let mut secrets = Secrets(Vec::new());
    let mut outputs: Vec<(String, String)> = Vec::new(); // every output that must hold no secret
    let mut errors: Vec<Resp> = Vec::new();
    secrets.add("demo webhook code", DEMO_CODE);

    // A webhook: created (its URL printed once), used, failed with a wrong code, listed, revoked.
    let add = app.cli(&["webhook", "add", "--user", "1", "--scope", "imopenlines,im", "--base-url", &app.http_base]);
    assert!(add.ok, "{add:?}");
    outputs.push(("webhook add (stderr)".into(), add.stderr.clone()));
    let url = add.stdout.split_once(": ").unwrap().1.trim().to_string();
    let prefix = url.strip_prefix(&app.http_base).unwrap().to_string();
    let code = prefix.trim_end_matches('/').rsplit('/').next().unwrap().to_string();
    secrets.add("new webhook code", &code);
    assert_eq!(app.call_as(&prefix, "profile", json!({})).await.status, 200);
    let resp = app.call_as(&prefix, METHOD, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 99})).await;
    errors.push(resp);
    let wrong = last_char_changed(&code);
    let resp = app.call_as(&format!("/rest/1/{wrong}/"), "profile", json!({})).await;
    assert_eq!(resp.status, 401, "a wrong webhook code is refused: {}", resp.text);
    errors.push(resp);
    errors.push(app.call_as(&prefix, "no.such.method", json!({})).await);
    errors.push(app.post_raw(&format!("{prefix}profile"), Some("application/json"), b"{".to_vec()).await);
    assert_eq!(app.call("server.time", json!({})).await.status, 200);

    // An application: added (secret and application token printed once), a code issued, tokens issued and
    // refreshed, every token error provoked.
    let out = app.cli(&["app", "add", "--client-id", "local.secret.app", "--scope", "imopenlines,im"]);
    assert!(out.ok, "{out:?}");
    outputs.push(("app add (stderr)".into(), out.stderr.clone()));
    let client = OAuthClient {
        client_id: "local.secret.app".into(),
        secret: printed_field(&out.stdout, "client_secret"),
        application_token: printed_field(&out.stdout, "application_token"),
    };
    secrets.add("client secret", &client.secret);
    secrets.add("application token", &client.application_token);
    let code_run = app.cli(&["app", "code", "--client-id", &client.client_id, "--user", "12"]);
    assert!(code_run.ok, "{code_run:?}");
    outputs.push(("app code (stderr)".into(), code_run.stderr.clone()));
    let auth_code = code_run.stdout.trim().to_string();
    secrets.add("authorization code", &auth_code);
    let grant = |code: &str, secret: &str| {
        form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "local.secret.app"),
            ("client_secret", secret),
            ("code", code),
        ])
    };
    let wrong_secret = last_char_changed(&client.secret);
    secrets.add("wrong client secret", &wrong_secret);
    let resp = app.get(&format!("/oauth/token/?{}", grant(&auth_code, &wrong_secret))).await;
    assert_eq!(resp.status, 401, "a wrong client secret is refused: {}", resp.text);
    errors.push(resp);
    let resp = app.get(&format!("/oauth/token/?{}", grant(&auth_code, &client.secret))).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (access, refresh) = tokens_of(&resp.body);
    secrets.add("access token", &access);
    secrets.add("refresh token", &refresh);
    errors.push(app.post_form("/oauth/token/", &grant(&auth_code, &client.secret)).await); // reused code
    let refresh_grant = |token: &str| {
        form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "local.secret.app"),
            ("client_secret", &client.secret),
            ("refresh_token", token),
        ])
    };
    let resp = app.post_form("/oauth/token/", &refresh_grant(&refresh)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (access2, refresh2) = tokens_of(&resp.body);
    secrets.add("second access token", &access2);
    secrets.add("second refresh token", &refresh2);
    errors.push(app.get(&format!("/oauth/token/?{}", refresh_grant(&refresh))).await); // spent refresh token
    // The tokens in every place a client may put them, in successes and failures.
    assert_eq!(app.call_bearer(&access2, "profile", json!({})).await.status, 200);
    assert_eq!(app.get(&format!("/rest/profile?auth={access2}")).await.status, 200);
    assert_eq!(app.post_form("/rest/profile", &format!("access_token={access2}")).await.status, 200);
    let body = json!({"auth": access2, "CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 99});
    errors.push(app.post_raw(&format!("/rest/{METHOD}"), Some("application/json"), body.to_string().into()).await);
    // The first access token outlives the refresh until it expires (as on the vendor).
    assert_eq!(app.call_bearer(&access, "profile", json!({})).await.status, 200);
    errors.push(app.get(&format!("/rest/profile?auth={refresh2}")).await); // a refresh token is no access token
    errors.push(app.get(&format!("/rest/profile?access_token={}", client.application_token)).await);
    let batch = json!({"auth": access2, "cmd": {"a": format!("profile?auth={access2}"), "b": "no.such.method"}});
    assert_eq!(app.post_raw("/rest/batch", Some("application/json"), batch.to_string().into()).await.status, 200);
    // A request id is echoed in the log; a secret in a header other than Authorization is not logged either.
    let request =
        app.client.get(app.url("/rest/profile")).bearer_auth(&access2).header("X-Request-ID", "trace-secrets");
    assert_eq!(app.send(request).await.status, 200);

    // Listing and removing.
    for args in [
        vec!["webhook", "list"],
        vec!["app", "list"],
        vec!["webhook", "revoke", "1"],
        vec!["app", "remove", "--client-id", "local.secret.app"],
        vec!["app", "code", "--client-id", "local.secret.app", "--user", "12"],
    ] {
        let run = app.cli(&args);
        outputs.push((format!("{args:?} (stdout)"), run.stdout));
        outputs.push((format!("{args:?} (stderr)"), run.stderr));
    }
    errors.push(app.call_bearer(&access2, "profile", json!({})).await); // the app is gone
    errors.push(app.get(&format!("/oauth/token/?{}", refresh_grant(&refresh2))).await);

    // Error answers never echo a secret.
    for resp in &errors {
        assert!(resp.status >= 400, "{} {}", resp.status, resp.text);
        secrets.assert_absent("an error answer", &resp.text, &[]);
        assert_no_internals(&resp.text);
    }
    // Nor any other output.
    for (what, text) in &outputs {
        secrets.assert_absent(what, text, &[]);
    }
    // The export keeps hashes; the application token is kept as given (state-format.md), but the app was removed.
    let export = app.export();
    secrets.assert_absent("state export", &export.to_string(), &["application token"]);
    // Nor does the database keep any of them in clear (tokens are stored hashed).
    for file in ["crmchat.db", "crmchat.db-wal"] {
        let bytes = std::fs::read(app.data_dir.join(file)).unwrap_or_default();
        for (name, value) in &secrets.0 {
            if *name == "application token" {
                continue;
            }
            let needle = value.as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{file} holds the {name} in clear");
        }
    }
    // And the server's log, at debug level, holds none at all.
    let log = app.log();
    assert!(log.contains("trace-secrets"), "the run was logged:\n{log}");
    secrets.assert_absent("the server log", &log, &[]);
}
