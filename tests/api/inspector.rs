//! The inspector at `/_crmchat/ui/` over plain HTTP: the login, the session cookie, CSRF on every form,
//! escaping, and the chat page's Remove going through the real method. (The browser tests in `tests/ui/` drive
//! the same pages in Chromium.)

use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "inspector-token-for-tests-0123456789";
const UI: &str = "/_crmchat/ui";

async fn spawn_inspected(fixture: Value) -> TestApp {
    spawn_app_with_args(fixture, &["--control-token", TOKEN]).await
}

/// The value of `name="field" value="…"` in a page.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no field {name} in {html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// `name=value` of a Set-Cookie header named `name`, and the whole header.
fn set_cookie(resp: &Resp, name: &str) -> Option<(String, String)> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_string(), v.to_string()))
}

/// The login form's nonce and its cookie.
async fn login_form(app: &TestApp) -> (String, String) {
    let resp = app.get(&format!("{UI}/login")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (cookie, _) = set_cookie(&resp, "crmchat_ui_login").expect("the login form's cookie");
    (field(&resp.text, "nonce"), cookie)
}

async fn post_login(app: &TestApp, token: &str, nonce: &str, cookie: &str) -> Resp {
    let body = format!("token={token}&nonce={nonce}&next=%2F_crmchat%2Fui%2Fchats%2F8773");
    app.send(
        app.client
            .post(app.url(&format!("{UI}/login")))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

/// Logs in; the session cookie (`crmchat_ui=…`).
async fn login(app: &TestApp) -> String {
    let (nonce, cookie) = login_form(app).await;
    let resp = post_login(app, TOKEN, &nonce, &cookie).await;
    assert_eq!(resp.status, 303, "{}", resp.text);
    set_cookie(&resp, "crmchat_ui").expect("the session cookie").0
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> Resp {
    app.send(app.client.get(app.url(path)).header("cookie", cookie)).await
}

async fn post_page(app: &TestApp, cookie: &str, path: &str, body: &str) -> Resp {
    app.send(
        app.client
            .post(app.url(path))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn inspector_is_off_without_a_control_token() {
    let app = spawn_app().await;
    for path in ["/_crmchat/ui/", "/_crmchat/ui/login", "/_crmchat/ui/chats/8773"] {
        assert_eq!(app.get(path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn inspector_login_refuses_a_wrong_token_and_keeps_a_strict_cookie() {
    let app = spawn_inspected(demo_fixture()).await;
    // Pages send a visitor without a session to the login form, and back afterwards.
    let resp = app.get(&format!("{UI}/chats/8773")).await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.header("location"), Some("/_crmchat/ui/login?next=/_crmchat/ui/chats/8773"));

    let (nonce, cookie) = login_form(&app).await;
    let resp = post_login(&app, "not-the-token", &nonce, &cookie).await;
    assert_eq!(resp.status, 200, "the form again: {}", resp.text);
    assert!(resp.text.contains("Wrong token"), "{}", resp.text);
    assert!(set_cookie(&resp, "crmchat_ui").is_none());
    // The right token with a nonce that is not the form's cookie (a cross-site form) is refused too.
    let resp = post_login(&app, TOKEN, "forged", &cookie).await;
    assert!(resp.text.contains("The login form expired"), "{}", resp.text);
    assert!(set_cookie(&resp, "crmchat_ui").is_none());

    let resp = post_login(&app, TOKEN, &nonce, &cookie).await;
    assert_eq!(resp.status, 303, "{}", resp.text);
    assert_eq!(resp.header("location"), Some("/_crmchat/ui/chats/8773"));
    let (session, header) = set_cookie(&resp, "crmchat_ui").expect("the session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/_crmchat/"] {
        assert!(header.split("; ").any(|a| a == attribute), "{attribute} in {header}");
    }
    assert!(!header.contains(TOKEN), "the cookie is not the token: {header}");
    let resp = page(&app, &session, &format!("{UI}/chats/8773")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.header("content-security-policy").is_some_and(|csp| csp.contains("script-src 'self'")));
    // The cookie is no key to the control API, which answers only to its bearer token.
    let resp = app.send(app.client.get(app.url("/_crmchat/state")).header("cookie", &session)).await;
    assert_eq!(resp.status, 401, "{}", resp.text);
}

#[tokio::test]
async fn inspector_remove_calls_the_method_and_refuses_forged_forms() {
    let app = spawn_inspected(demo_fixture()).await;
    let session = login(&app).await;
    let chat_page = page(&app, &session, &format!("{UI}/chats/8773")).await;
    assert_eq!(chat_page.status, 200);
    let csrf = field(&chat_page.text, "csrf");
    let remove = format!("{UI}/chats/8773/remove");
    let form = |csrf: &str| format!("csrf={csrf}&as=1&record=deal%3A288&user_id=12&page=1");
    // Without this session's CSRF token nothing happens.
    for forged in [form("forged"), "as=1&record=deal%3A288&user_id=12".to_string()] {
        let resp = post_page(&app, &session, &remove, &forged).await;
        assert!(resp.status == 403 || resp.status == 422, "{}: {}", resp.status, resp.text);
    }
    // Nor without the session (another site cannot send the SameSite=Strict cookie).
    let resp = post_page(&app, "crmchat_ui=none", &remove, &form(&csrf)).await;
    assert_eq!(resp.status, 403, "{}", resp.text);
    assert_eq!(members(&app.export(), 8773), vec![12, 14, 20, 30]);

    let resp = post_page(&app, &session, &remove, &form(&csrf)).await;
    assert_eq!(resp.status, 303, "{}", resp.text);
    let shown = page(&app, &session, resp.header("location").unwrap()).await;
    assert!(shown.text.contains("imopenlines.crm.chat.user.delete as webhook 1: ok"), "{}", shown.text);
    assert!(shown.text.contains("&quot;result&quot;: 8773"), "{}", shown.text);
    // Confirmed over REST, and in the stored state: 12 left and 14 became the author.
    let resp = app.call("im.chat.user.list", json!({"CHAT_ID": 8773})).await;
    assert_eq!(resp.body["result"], json!([14, 20, 30]), "{}", resp.text);
    assert_eq!(author(&app.export(), 8773), Some(14));

    let resp = post_page(&app, &session, &remove, &form(&csrf)).await;
    assert_eq!(resp.status, 303);
    let shown = page(&app, &session, resp.header("location").unwrap()).await;
    assert!(shown.text.contains("USER_NOT_FOUND"), "{}", shown.text);

    // Add member goes through imopenlines.crm.chat.user.add the same way.
    let add = format!("csrf={csrf}&as=1&record=deal%3A288&user_id=12&page=1");
    let resp = post_page(&app, &session, &format!("{UI}/chats/8773/add"), &add).await;
    assert_eq!(resp.status, 303);
    assert_eq!(members(&app.export(), 8773), vec![14, 20, 30, 12]);
}

#[tokio::test]
async fn inspector_escapes_what_it_shows() {
    let fixture = demo_with(|f| {
        add_user(f, json!({"id": 40, "name": "<script>alert(1)</script>", "last_name": "\"><img src=x>"}));
        fixture_chat(f, 8773)["members"].as_array_mut().unwrap().push(json!(40));
        f["crm"][0]["title"] = json!("<b>bold</b> & co");
    });
    let app = spawn_inspected(fixture).await;
    let session = login(&app).await;
    for path in [format!("{UI}/chats/8773"), format!("{UI}/records?q=bold"), format!("{UI}/records/deal/288")] {
        let resp = page(&app, &session, &path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(!resp.text.contains("<script>alert"), "{path}: {}", resp.text);
        assert!(!resp.text.contains("<img src=x>") && !resp.text.contains("<b>bold"), "{path}: {}", resp.text);
    }
    let chat = page(&app, &session, &format!("{UI}/chats/8773")).await;
    assert!(chat.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", chat.text);
    let record = page(&app, &session, &format!("{UI}/records/deal/288")).await;
    assert!(record.text.contains("&lt;b&gt;bold&lt;/b&gt; &amp; co"), "{}", record.text);
}

#[tokio::test]
async fn inspector_pages_a_chat_of_many_members() {
    let mut fixture = demo_fixture();
    let ids: Vec<i64> = (1000..3500).collect();
    for id in &ids {
        add_user(&mut fixture, json!({"id": id, "name": format!("Member {id}")}));
    }
    let mut chat_members = vec![14, 30];
    chat_members.extend(&ids);
    fixture_chat(&mut fixture, 8774)["members"] = json!(chat_members);
    let app = spawn_inspected(fixture).await;
    let session = login(&app).await;
    let first = page(&app, &session, &format!("{UI}/chats/8774")).await;
    // 100 a page, in join order.
    assert!(first.text.contains("Members (2502)") && first.text.contains("Page 1 of 26"), "{}", first.text);
    assert!(first.text.contains("Member 1097<") && !first.text.contains("Member 1098<"), "{}", first.text);
    let last = page(&app, &session, &format!("{UI}/chats/8774?page=26")).await;
    assert!(last.text.contains("Member 3499<") && !last.text.contains("Member 3497<"), "{}", last.text);
    assert!(last.text.contains("Page 26 of 26"), "{}", last.text);
}

#[tokio::test]
async fn inspector_clock_forms_need_the_csrf_token() {
    let app = spawn_inspected(demo_fixture()).await;
    let session = login(&app).await;
    // The clock's old page leads to the page it joined.
    let old = page(&app, &session, &format!("{UI}/clock")).await;
    assert_eq!((old.status, old.header("location")), (308, Some("/_crmchat/ui/faults")));
    let csrf = field(&page(&app, &session, &format!("{UI}/faults")).await.text, "csrf");
    let time = |app: &TestApp| {
        let url = app.url(&format!("{DEMO_HOOK}server.time.json"));
        let client = app.client.clone();
        async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            chrono::DateTime::parse_from_rfc3339(body["result"].as_str().unwrap()).unwrap().timestamp()
        }
    };
    let before = time(&app).await;
    let advance = format!("{UI}/clock/advance");
    assert_eq!(post_page(&app, &session, &advance, "csrf=forged&seconds=86400").await.status, 403);
    assert!(time(&app).await - before < 100);
    assert_eq!(post_page(&app, &session, &advance, &format!("csrf={csrf}&seconds=86400")).await.status, 303);
    let moved = time(&app).await - before;
    assert!((86_400..86_500).contains(&moved), "moved {moved} s");
    // Forward only: nothing else is accepted.
    assert_eq!(post_page(&app, &session, &advance, &format!("csrf={csrf}&seconds=-5")).await.status, 303);
    assert!(time(&app).await - before >= 86_400);
    assert_eq!(post_page(&app, &session, &format!("{UI}/clock/real"), &format!("csrf={csrf}")).await.status, 303);
    assert!(time(&app).await - before < 100);
}

#[tokio::test]
async fn inspector_requests_filter_page_and_hide_secrets() {
    // No request limit: 62 calls in a row.
    let app = spawn_inspected(demo_with(|f| f["portal"]["plan"] = json!("unlimited"))).await;
    let session = login(&app).await;
    let removed = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    let again = app
        .delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12, "client_secret": "sekrit-123"}))
        .await;
    assert_eq!(again.status, 400, "{}", again.text);
    let code = again.body["error"].as_str().unwrap().to_string();
    for _ in 0..60 {
        assert_eq!(app.call("server.time", json!({})).await.status, 200);
    }
    let requests = format!("{UI}/requests");

    let newest = page(&app, &session, &requests).await;
    assert_eq!(newest.status, 200, "{}", newest.text);
    assert!(newest.text.contains("<span id=\"journal-total\">62</span>"), "{}", newest.text);
    // 50 a page, newest first: the 62nd call on top, the 13th last; the 12 older behind the Older link.
    assert_eq!(newest.text.matches("<li class=\"req ").count(), 50);
    assert!(newest.text.contains("data-id=\"62\"") && newest.text.contains("data-id=\"13\""));
    assert!(!newest.text.contains("data-id=\"12\""), "{}", newest.text);
    assert!(newest.text.find("data-id=\"62\"") < newest.text.find("data-id=\"61\""));
    assert!(newest.text.contains("data-stream=\"/_crmchat/ui/requests/live?"), "the newest page is live");
    let older = page(&app, &session, &format!("{requests}?method=&status=&error=&before=13")).await;
    assert_eq!(older.text.matches("<li class=\"req ").count(), 12);
    assert!(older.text.contains("data-id=\"1\"") && !older.text.contains("data-id=\"13\""));
    assert!(older.text.contains("&amp;after=12\" rel=\"prev\">Newer"), "{}", older.text);
    assert!(!older.text.contains("data-stream="), "an older page is not live");

    // Filters: by status, by error code, by method (any case); each keeps the matching calls only.
    let failed = page(&app, &session, &format!("{requests}?status=400")).await;
    assert!(failed.text.contains("<span id=\"journal-total\">1</span> matching"), "{}", failed.text);
    assert!(failed.text.contains(&format!("<span class=\"req-error\">{code}</span>")), "{}", failed.text);
    // The row opens to the parameters, the secret replaced, and the answer.
    assert!(failed.text.contains("&quot;client_secret&quot;: &quot;***&quot;"), "{}", failed.text);
    assert!(!failed.text.contains("sekrit-123"), "{}", failed.text);
    assert!(failed.text.contains(&format!("HTTP 400, error <code>{code}</code>")), "{}", failed.text);
    let by_error = page(&app, &session, &format!("{requests}?error={code}")).await;
    assert!(by_error.text.contains("<span id=\"journal-total\">1</span>"), "{}", by_error.text);
    let by_method = page(&app, &session, &format!("{requests}?method=IMOPENLINES.CRM.CHAT.USER.DELETE")).await;
    assert!(by_method.text.contains("<span id=\"journal-total\">2</span>"), "{}", by_method.text);
    let none = page(&app, &session, &format!("{requests}?method=no.such.method")).await;
    assert!(none.text.contains("<span id=\"journal-total\">0</span>") && none.text.contains("No call yet"));
    let bad = page(&app, &session, &format!("{requests}?status=abc")).await;
    assert_eq!(bad.status, 200);
    assert!(bad.text.contains("is not an HTTP status"), "{}", bad.text);
    // Without a session there is nothing to see.
    assert_eq!(app.get(&requests).await.status, 303);
    assert_eq!(app.get(&format!("{requests}/live")).await.status, 303);
}

#[tokio::test]
async fn inspector_requests_live_stream_sends_new_calls() {
    let app = spawn_inspected(demo_fixture()).await;
    let session = login(&app).await;
    let before = page(&app, &session, &format!("{UI}/requests")).await;
    assert!(before.text.contains("since_id=0"), "{}", before.text);
    let open = |query: &str| {
        let request = app.client.get(app.url(&format!("{UI}/requests/live?{query}"))).header("cookie", &session);
        async move { request.send().await.unwrap() }
    };
    let mut all = open("since_id=0").await;
    let mut failures = open("since_id=0&status=400").await;
    assert_eq!(all.status(), 200);
    assert!(all.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    app.call("server.time", json!({})).await;
    let refused = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 99999})).await;
    assert_eq!(refused.status, 400, "{}", refused.text);

    /// What a stream has sent until `wanted` is in it (a stream that never sends it fails the test).
    async fn read_until(stream: &mut reqwest::Response, wanted: &str) -> String {
        let mut text = String::new();
        while !text.contains(wanted) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), stream.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {wanted:?} in the stream: {text}"))
                .unwrap()
                .unwrap_or_else(|| panic!("the stream ended without {wanted:?}: {text}"));
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    }
    let text = read_until(&mut all, "event: total").await;
    let text = if text.contains("id: 2\n") { text } else { text + &read_until(&mut all, "id: 2\n").await };
    assert!(text.contains("retry: 500"), "{text}");
    assert!(text.contains("event: request\nid: 1\ndata: <li class=\"req ok\" data-id=\"1\">"), "{text}");
    assert!(text.contains("<span class=\"req-method\"><code>server.time</code>"), "{text}");
    assert!(text.contains("<li class=\"req failed\" data-id=\"2\">"), "{text}");
    let text = read_until(&mut failures, "event: total").await;
    assert!(text.contains("data-id=\"2\"") && !text.contains("data-id=\"1\""), "only the failed call: {text}");
    assert!(text.contains("event: total\ndata: 1\n"), "{text}");

    // A browser that reconnects says which row it got last, and the stream continues after it.
    let mut resumed = app
        .client
        .get(app.url(&format!("{UI}/requests/live?since_id=0")))
        .header("cookie", &session)
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let text = read_until(&mut resumed, "event: total").await;
    assert!(text.contains("data-id=\"2\"") && !text.contains("data-id=\"1\""), "{text}");
}

#[tokio::test]
async fn inspector_fault_rules_are_added_and_deleted_by_form() {
    let app = spawn_inspected(demo_fixture()).await;
    let session = login(&app).await;
    let faults = format!("{UI}/faults");
    let csrf = field(&page(&app, &session, &faults).await.text, "csrf");
    let rule = |csrf: &str, error: &str, times: &str| {
        format!(
            "csrf={csrf}&method=imopenlines.crm.chat.user.delete&error={error}&http_status=&delay_ms=0&times={times}\
             &probability=1&webhook_id=&client_id="
        )
    };
    let delete = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});

    // Refused forms add nothing: a forged one, an unknown code, a count that is not a number.
    assert_eq!(post_page(&app, &session, &faults, &rule("forged", "ACCESS_DENIED", "")).await.status, 403);
    for (form, refusal) in [
        (rule(&csrf, "NO_SUCH_CODE", ""), "Refused: unknown_error_code"),
        (rule(&csrf, "ACCESS_DENIED", "twice"), "Refused: invalid_fault"),
        (rule(&csrf, "ACCESS_DENIED", "0"), "times must be at least 1"),
    ] {
        let resp = post_page(&app, &session, &faults, &form).await;
        assert_eq!((resp.status, resp.header("location")), (303, Some("/_crmchat/ui/faults")));
        let shown = page(&app, &session, &faults).await;
        assert!(shown.text.contains(refusal), "{refusal}: {}", shown.text);
    }
    assert!(page(&app, &session, &faults).await.text.contains("No fault rule"));
    let control = |path: &str| {
        let request = app.client.get(app.url(path)).bearer_auth(TOKEN);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(control("/_crmchat/faults").await, json!([]));

    // Added: the control API lists it, the page shows it, and the call fails with it, changing nothing.
    assert_eq!(post_page(&app, &session, &faults, &rule(&csrf, "ACCESS_DENIED", "")).await.status, 303);
    let listed = control("/_crmchat/faults").await;
    assert_eq!(listed[0]["method"], "imopenlines.crm.chat.user.delete");
    assert_eq!(listed[0]["error"], "ACCESS_DENIED");
    let id = listed[0]["id"].as_u64().unwrap();
    let shown = page(&app, &session, &faults).await;
    assert!(shown.text.contains(&format!("Fault rule {id} added")), "{}", shown.text);
    assert!(shown.text.contains(&format!("<tr data-rule=\"{id}\">")), "{}", shown.text);
    let failed = app.delete(delete.clone()).await;
    assert_eq!((failed.status, failed.body["error"].as_str()), (403, Some("ACCESS_DENIED")), "{}", failed.text);
    assert_eq!(members(&app.export(), 8773), vec![12, 14, 20, 30]);

    // Deleted: gone from the list, and the call gets its real answer.
    let remove = format!("{faults}/{id}/delete");
    assert_eq!(post_page(&app, &session, &remove, "csrf=forged").await.status, 403);
    assert_eq!(control("/_crmchat/faults").await.as_array().unwrap().len(), 1);
    assert_eq!(post_page(&app, &session, &remove, &format!("csrf={csrf}")).await.status, 303);
    assert!(page(&app, &session, &faults).await.text.contains(&format!("Fault rule {id} deleted")));
    assert_eq!(control("/_crmchat/faults").await, json!([]));
    assert_eq!(app.delete(delete).await.status, 200);
    // Deleting it again says so.
    post_page(&app, &session, &remove, &format!("csrf={csrf}")).await;
    assert!(page(&app, &session, &faults).await.text.contains(&format!("No fault rule {id}")));
}

#[tokio::test]
async fn inspector_every_form_refuses_a_forged_csrf_token() {
    let app = spawn_inspected(demo_fixture()).await;
    let session = login(&app).await;
    let forms = [
        ("chats/8773/remove", "as=1&record=deal%3A288&user_id=12"),
        ("chats/8773/add", "as=1&record=deal%3A288&user_id=40"),
        ("reset", ""),
        ("faults", "method=*&error=ACCESS_DENIED"),
        ("faults/1/delete", ""),
        ("clock/advance", "seconds=86400"),
        ("clock/real", ""),
        ("logout", ""),
    ];
    for (path, fields) in forms {
        for csrf in ["", "csrf=forged&"] {
            let resp = post_page(&app, &session, &format!("{UI}/{path}"), &format!("{csrf}{fields}")).await;
            assert_eq!(resp.status, 403, "{path} with {csrf:?}: {}", resp.text);
            assert!(resp.text.contains("CSRF token"), "{path}: {}", resp.text);
        }
    }
    // Nothing happened: the members, no rule, the clock, and the session still open.
    assert_eq!(members(&app.export(), 8773), vec![12, 14, 20, 30]);
    let faults = app.client.get(app.url("/_crmchat/faults")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(faults.json::<Value>().await.unwrap(), json!([]));
    let clock = app.client.get(app.url("/_crmchat/clock")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(clock.json::<Value>().await.unwrap()["offset_s"], 0.0);
    assert_eq!(page(&app, &session, &format!("{UI}/")).await.status, 200);
}

/// The level the Overview shows for the bucket of 127.0.0.1 (`None`: no row for it).
fn shown_bucket(html: &str) -> Option<f64> {
    let marker = "data-bucket=\"127.0.0.1\">";
    let start = html.find(marker)? + marker.len();
    html[start..].split(' ').next()?.parse().ok()
}

/// The Overview shows each client address's request bucket as the limiter holds it: in memory, or in Redis when
/// the limits are shared.
#[tokio::test]
async fn inspector_overview_shows_the_request_buckets() {
    let domain = format!("t{:016x}.crmchat.localhost", rand::random::<u64>());
    let fixture = demo_with(|f| {
        f["portal"]["plan"] = json!("standard");
        f["portal"]["domain"] = json!(domain);
    });
    for redis in [false, true] {
        let mut args = vec!["--control-token", TOKEN];
        if redis {
            args.extend(["--redis", "redis://127.0.0.1:6379"]);
        }
        let app = spawn_app_with_args(fixture.clone(), &args).await;
        let cookie = login(&app).await;
        let overview = page(&app, &cookie, &format!("{UI}/")).await;
        assert_eq!(overview.status, 200, "{}", overview.text);
        assert!(overview.text.contains("Request limit"), "{}", overview.text);
        assert_eq!(shown_bucket(&overview.text), None, "no call made yet (redis: {redis}): {}", overview.text);
        for _ in 0..20 {
            let resp = app.get(&app.method_path("server.time")).await;
            assert_eq!(resp.status, 200, "{}", resp.text);
        }
        let overview = page(&app, &cookie, &format!("{UI}/")).await;
        let level = shown_bucket(&overview.text).unwrap_or_else(|| panic!("a bucket for 127.0.0.1: {}", overview.text));
        // 20 requests, drained at 2 a second for as long as they took.
        assert!(level > 10.0 && level <= 20.0, "level {level} (redis: {redis})");
        assert!(overview.text.contains(" of 50"), "{}", overview.text);
        if redis {
            let mut conn = redis::Client::open("redis://127.0.0.1:6379").unwrap().get_connection().unwrap();
            let _: i64 =
                redis::cmd("DEL").arg(format!("crmchat:limits:req:{domain}|127.0.0.1")).query(&mut conn).unwrap();
        }
    }
}
