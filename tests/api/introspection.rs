//! The global methods describing the server and the caller (protocol.md, Introspection): `scope`, `methods`,
//! `method.get`, `server.time`, `profile`, `app.info`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;

const GLOBAL: [&str; 7] = ["batch", "scope", "methods", "method.get", "server.time", "profile", "app.info"];
const IMOPENLINES: [&str; 5] = [
    "imopenlines.crm.chat.user.delete",
    "imopenlines.crm.chat.user.add",
    "imopenlines.crm.chat.getlastid",
    "imopenlines.crm.chat.get",
    "imopenlines.crm.message.add",
];
const IM: [&str; 1] = ["im.chat.user.list"];

const IM_ONLY: &str = "imonlywebhookcode1";
const NO_SCOPE: &str = "noscopewebhookcode1";

fn fixture() -> Value {
    demo_with(|f| {
        add_webhook_with_scopes(f, 1, IM_ONLY, &["im"]);
        add_webhook_with_scopes(f, 1, NO_SCOPE, &[]);
    })
}

/// A success whose result is returned; no `total`/`next` (assert_success checks the keys).
fn ok(resp: &Resp) -> Value {
    assert_eq!(resp.status, 200, "{}", resp.text);
    let result = resp.body["result"].clone();
    assert_success(resp, result.clone());
    result
}

fn names(result: &Value) -> BTreeSet<String> {
    let list = result.as_array().unwrap_or_else(|| panic!("a list: {result}"));
    list.iter().map(|n| n.as_str().unwrap_or_else(|| panic!("a name: {n}")).to_string()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn scope_lists_the_granted_scopes() {
    let app = spawn_app_with(fixture()).await;
    assert_eq!(names(&ok(&app.call("scope", json!({})).await)), set(&["im", "imopenlines"]));
    assert_eq!(ok(&app.call_as(&hook(1, IM_ONLY), "scope", json!({})).await), json!(["im"]));
    assert_eq!(ok(&app.call_as(&hook(1, NO_SCOPE), "scope", json!({})).await), json!([]));
    // full=true: every scope the portal has, granted or not.
    for params in [json!({"full": true}), json!({"full": "true"})] {
        for code in [IM_ONLY, NO_SCOPE] {
            let all = names(&ok(&app.call_as(&hook(1, code), "scope", params.clone()).await));
            assert!(all.is_superset(&set(&["im", "imopenlines"])), "{params}: {all:?}");
        }
    }
    let all = names(&ok(&app.get(&format!("/rest/1/{IM_ONLY}/scope?full=true")).await));
    assert!(all.contains("imopenlines"), "{all:?}");
}

#[tokio::test]
async fn methods_default_scope_and_full() {
    let app = spawn_app_with(fixture()).await;
    let globals = set(&GLOBAL);
    let openlines = set(&IMOPENLINES);
    let im = set(&IM);
    // Default: the methods of the granted scopes plus the global ones, lower-case.
    let demo = names(&ok(&app.call("methods", json!({})).await));
    for name in globals.iter().chain(&openlines).chain(&im) {
        assert!(demo.contains(name), "{name} in {demo:?}");
    }
    assert!(demo.iter().all(|n| *n == n.to_lowercase()), "{demo:?}");
    let im_only = names(&ok(&app.call_as(&hook(1, IM_ONLY), "methods", json!({})).await));
    assert!(im_only.is_superset(&globals) && im_only.is_superset(&im), "{im_only:?}");
    assert!(im_only.is_disjoint(&openlines), "{im_only:?}");
    assert!(!im_only.iter().any(|n| n.starts_with("imopenlines.")), "{im_only:?}");
    let none = names(&ok(&app.call_as(&hook(1, NO_SCOPE), "methods", json!({})).await));
    assert!(none.is_superset(&globals), "{none:?}");
    assert!(none.is_disjoint(&openlines) && none.is_disjoint(&im), "{none:?}");
    // scope=X: that scope's methods, whoever asks.
    assert_eq!(names(&ok(&app.call_as(&hook(1, IM_ONLY), "methods", json!({"scope": "im"})).await)), im);
    assert_eq!(
        names(&ok(&app.call_as(&hook(1, IM_ONLY), "methods", json!({"scope": "imopenlines"})).await)),
        openlines
    );
    assert_eq!(names(&ok(&app.get(&format!("{DEMO_HOOK}methods?scope=im")).await)), im);
    // full=true: all of them.
    for code in [IM_ONLY, NO_SCOPE] {
        let all = names(&ok(&app.call_as(&hook(1, code), "methods", json!({"full": true})).await));
        for name in globals.iter().chain(&openlines).chain(&im) {
            assert!(all.contains(name), "{name} in {all:?}");
        }
    }
}

async fn method_get(app: &TestApp, prefix: &str, name: &str) -> Value {
    ok(&app.call_as(prefix, "method.get", json!({"name": name})).await)
}

fn flags(existing: bool, available: bool) -> Value {
    json!({"isExisting": existing, "isAvailable": available})
}

#[tokio::test]
async fn method_get_existing_and_available() {
    let app = spawn_app_with(fixture()).await;
    let demo = DEMO_HOOK.to_string();
    let im_only = hook(1, IM_ONLY);
    let none = hook(1, NO_SCOPE);
    for name in ["imopenlines.crm.chat.getLastId", "IMOPENLINES.CRM.CHAT.USER.DELETE", "im.chat.user.list", "batch"] {
        assert_eq!(method_get(&app, &demo, name).await, flags(true, true), "{name}");
    }
    // A method of a scope not granted exists but is not available.
    assert_eq!(method_get(&app, &im_only, "imopenlines.crm.chat.getlastid").await, flags(true, false));
    assert_eq!(method_get(&app, &im_only, "imopenlines.crm.message.add").await, flags(true, false));
    assert_eq!(method_get(&app, &im_only, "Im.Chat.User.List").await, flags(true, true));
    assert_eq!(method_get(&app, &none, "im.chat.user.list").await, flags(true, false));
    // Global methods are available to everyone.
    for name in GLOBAL {
        assert_eq!(method_get(&app, &none, name).await, flags(true, true), "{name}");
        assert_eq!(method_get(&app, &none, &name.to_uppercase()).await, flags(true, true), "{name}");
    }
    // Unknown methods.
    for name in ["no.such.method", "imopenlines.crm.chat", "imopenlines.crm.chat.user.delete.extra"] {
        assert_eq!(method_get(&app, &demo, name).await, flags(false, false), "{name}");
    }
    // As a form call and a GET.
    let resp = app.post_form(&format!("/rest/1/{IM_ONLY}/method.get"), "name=imopenlines.crm.chat.get").await;
    assert_eq!(ok(&resp), flags(true, false));
    assert_eq!(ok(&app.get(&format!("{DEMO_HOOK}method.get.json?name=batch")).await), flags(true, true));
}

#[tokio::test]
async fn server_time_is_a_php_date() {
    let app = spawn_app_with(fixture()).await;
    for resp in [
        app.call("server.time", json!({})).await,
        app.get(&format!("{DEMO_HOOK}server.time")).await,
        app.call_as(&hook(1, NO_SCOPE), "SERVER.TIME", json!({})).await,
    ] {
        let result = ok(&resp);
        let text = result.as_str().unwrap_or_else(|| panic!("a string: {}", resp.text));
        assert!(is_php_date(text), "^\\d{{4}}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\+00:00$: {text}");
        let at = chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp();
        assert!((at - chrono::Utc::now().timestamp()).abs() < 120, "now: {text}");
        // The same clock as the envelope's `time`.
        let date_start = resp.body["time"]["date_start"].as_str().unwrap();
        let started = chrono::DateTime::parse_from_rfc3339(date_start).unwrap().timestamp();
        assert!((at - started).abs() <= 1, "{text} vs time.date_start {date_start}");
    }
}

#[tokio::test]
async fn profile_of_the_caller() {
    let app = spawn_app_with(fixture()).await;
    let keys = ["ID", "ADMIN", "NAME", "LAST_NAME", "PERSONAL_GENDER", "TIME_ZONE", "TIME_ZONE_OFFSET"];
    let check = |result: &Value, id: &str, admin: bool, name: &str, last_name: &str| {
        let mut got: Vec<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
        got.sort_unstable();
        let mut want = keys.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "{result}");
        assert_eq!(result["ID"], id, "ID is a string: {result}");
        assert_eq!(result["ADMIN"], admin, "{result}");
        assert_eq!((&result["NAME"], &result["LAST_NAME"]), (&json!(name), &json!(last_name)), "{result}");
        assert_eq!(result["TIME_ZONE"], "", "{result}");
    };
    check(&ok(&app.call("profile", json!({})).await), "1", true, "Anna", "Admin");
    check(&ok(&app.call_as(&hook(1, NO_SCOPE), "profile", json!({})).await), "1", true, "Anna", "Admin");
    check(
        &ok(&app.call_as(&hook(12, "operatorhookcode12"), "profile", json!({})).await),
        "12",
        false,
        "Oleg",
        "Operator",
    );
}

#[tokio::test]
async fn app_info_of_a_webhook() {
    let app = spawn_app_with(fixture()).await;
    for (prefix, scopes) in [
        (DEMO_HOOK.to_string(), set(&["imopenlines", "im"])),
        (hook(1, IM_ONLY), set(&["im"])),
        (hook(1, NO_SCOPE), set(&[])),
    ] {
        let result = ok(&app.call_as(&prefix, "app.info", json!({})).await);
        let keys: BTreeSet<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["SCOPE", "LICENSE"]), "{result}");
        assert_eq!(names(&result["SCOPE"]), scopes, "{result}");
        assert!(result["LICENSE"].is_string(), "{result}");
    }
}

#[tokio::test]
async fn app_info_of_an_oauth_application() {
    let app = spawn_app().await;
    let mut args = vec!["app", "code", "--client-id", "local.demo.app", "--user", "12"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(storage_args(&app.data_dir));
    let out = run_cli(&args);
    assert!(out.status.success(), "app code: {}", String::from_utf8_lossy(&out.stderr));
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let form = format!("grant_type=authorization_code&client_id=local.demo.app&client_secret=demo-secret&code={code}");
    let token = app.post_form("/oauth/token/", &form).await;
    assert_eq!(token.status, 200, "{}", token.text);
    let access_token = token.body["access_token"].as_str().unwrap().to_string();
    let resp = app.send(app.client.post(app.url("/rest/app.info")).bearer_auth(&access_token)).await;
    let result = ok(&resp);
    let keys: BTreeSet<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
    let expected = BTreeSet::from([
        "ID",
        "CODE",
        "VERSION",
        "STATUS",
        "INSTALLED",
        "PAYMENT_EXPIRED",
        "DAYS",
        "LANGUAGE_ID",
        "LICENSE",
    ]);
    assert_eq!(keys, expected, "{result}");
    assert_eq!(
        (&result["STATUS"], &result["INSTALLED"], &result["PAYMENT_EXPIRED"], &result["DAYS"]),
        (&json!("L"), &json!(true), &json!("N"), &Value::Null),
        "{result}"
    );
    // The token's user and scopes.
    let resp = app.send(app.client.post(app.url("/rest/profile")).bearer_auth(&access_token)).await;
    assert_eq!(ok(&resp)["ID"], "12");
    let resp = app.get(&format!("/rest/scope?auth={access_token}")).await;
    assert_eq!(names(&ok(&resp)), set(&["imopenlines", "im"]));
}

#[tokio::test]
async fn global_methods_need_no_scope() {
    let app = spawn_app_with(fixture()).await;
    let none = hook(1, NO_SCOPE);
    for method in GLOBAL {
        let params = if method == "batch" { json!({"cmd": {"t": "server.time"}}) } else { json!({}) };
        let resp = app.call_as(&none, method, params).await;
        assert_eq!(resp.status, 200, "{method}: {}", resp.text);
        assert_success(&resp, resp.body["result"].clone());
    }
    let resp = app.call_as(&none, "imopenlines.crm.chat.getLastId", json!({})).await;
    assert_error(
        &resp,
        401,
        "insufficient_scope",
        "The request requires higher privileges than provided by the webhook token",
    );
}
