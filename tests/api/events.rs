//! Events: binding handlers (`event.bind`, `event.unbind`, `event.get`, `events`), with the vendor's checks
//! in the vendor's order.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, assert_error_body, assert_null_argument, assert_success, spawn_app};

/// A handler URL the vendor accepts (a dot in the host); nothing needs to listen there to bind it.
const HANDLER: &str = "http://127.0.0.1:9/handler";

/// An application with the demo's scopes and an access token of `user`.
pub(crate) async fn token(app: &TestApp, client_id: &str, scopes: &str, user: i64) -> String {
    let client = app.add_oauth_app(client_id, scopes);
    app.issue_tokens(&client, user).await["access_token"].as_str().unwrap().to_string()
}

pub(crate) async fn bind(app: &TestApp, token: &str, params: Value) -> crate::helpers::Resp {
    app.call_bearer(token, "event.bind", params).await
}

#[tokio::test]
async fn events_bind_get_and_unbind_a_handler() {
    let app = spawn_app().await;
    let admin = token(&app, "local.events.app", "imopenlines,im", 1).await;

    assert_success(&bind(&app, &admin, json!({"event": "onCrmChatUserDelete", "handler": HANDLER})).await, json!(true));
    assert_success(
        &bind(&app, &admin, json!({"event": "ONAPPTEST", "handler": HANDLER, "auth_type": 12})).await,
        json!(true),
    );
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "event_type": "offline"})).await,
        json!(true),
    );
    let listed = app.call_bearer(&admin, "event.get", json!({})).await;
    assert_success(
        &listed,
        json!([
            {"event": "ONCRMCHATUSERDELETE", "handler": HANDLER, "auth_type": "0", "offline": 0},
            {"event": "ONAPPTEST", "handler": HANDLER, "auth_type": "12", "offline": 0},
            {"event": "ONCRMCHATUSERADD", "connector_id": "", "offline": 1},
        ]),
    );

    // The same binding twice is the vendor's ORM error.
    let again = bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": HANDLER})).await;
    assert_error(&again, 400, "ERROR_CORE", "Unable to set event handler: Handler already binded");

    let unbind = |params: Value| app.call_bearer(&admin, "event.unbind", params);
    assert_success(&unbind(json!({"event": "ONCRMCHATUSERDELETE", "handler": HANDLER})).await, json!({"count": 1}));
    assert_success(&unbind(json!({"event": "ONCRMCHATUSERDELETE", "handler": HANDLER})).await, json!({"count": 0}));
    // With auth_type, only the bindings of that user go.
    let for_user = |user: i64| json!({"event": "ONAPPTEST", "handler": HANDLER, "auth_type": user});
    assert_success(&unbind(for_user(14)).await, json!({"count": 0}));
    assert_success(&unbind(for_user(12)).await, json!({"count": 1}));
    assert_success(&unbind(json!({"EVENT": "ONCRMCHATUSERADD", "Event_Type": "OFFLINE"})).await, json!({"count": 1}));
    assert_success(&app.call_bearer(&admin, "event.get", json!({})).await, json!([]));
}

#[tokio::test]
async fn events_binding_errors_in_the_vendors_order() {
    let app = spawn_app().await;
    let admin = token(&app, "local.errors.app", "imopenlines,im", 1).await;
    let refused = |params: Value| bind(&app, &admin, params);

    // Empty event first, even with every other parameter wrong too.
    assert_null_argument(&refused(json!({"event_type": "sometimes", "handler": "ftp://x"})).await, "EVENT");
    assert_null_argument(&refused(json!({"event": ""})).await, "EVENT");
    let bad_type = refused(json!({"event": "ONAPPTEST", "event_type": "sometimes", "handler": HANDLER})).await;
    assert_error_body(
        &bad_type,
        400,
        &json!({"error": "ERROR_ARGUMENT", "error_description": "Value must be one of {online|offline}", "argument": "EVENT_TYPE"}),
    );
    assert_null_argument(&refused(json!({"event": "ONAPPTEST"})).await, "HANDLER");
    // The handler is checked before the event is looked up.
    for handler in ["http://localhost:3000/", "localhost", "http://.example/", "example.com/handler"] {
        let resp = refused(json!({"event": "ONNOSUCHEVENT", "handler": handler})).await;
        assert_error(&resp, 400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL");
    }
    let ftp = refused(json!({"event": "ONAPPTEST", "handler": "ftp://files.example.com/"})).await;
    assert_error(&ftp, 400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol");
    let unknown = refused(json!({"event": "ONNOSUCHEVENT", "handler": HANDLER})).await;
    assert_error(&unknown, 400, "ERROR_EVENT_NOT_FOUND", "Event not found");
    let offline = refused(json!({"event": "ONOFFLINEEVENT", "event_type": "offline"})).await;
    assert_error(&offline, 400, "ERROR_ARGUMENT", "Offline event cannot be registered for this event.");
    // Nothing was bound by any of them.
    assert_success(&app.call_bearer(&admin, "event.get", json!({})).await, json!([]));

    // An application without the imopenlines scope cannot bind the chat events, only the global ones.
    let im_only = token(&app, "local.im.app", "im", 1).await;
    let chat_event = bind(&app, &im_only, json!({"event": "ONCRMCHATUSERDELETE", "handler": HANDLER})).await;
    assert_error(&chat_event, 400, "ERROR_EVENT_NOT_FOUND", "Event not found");
    assert_success(&bind(&app, &im_only, json!({"event": "ONAPPUNINSTALL", "handler": HANDLER})).await, json!(true));

    // Unbinding checks the same way.
    let unbind = |params: Value| app.call_bearer(&admin, "event.unbind", params);
    assert_null_argument(&unbind(json!({"handler": HANDLER})).await, "EVENT");
    assert_null_argument(&unbind(json!({"event": "ONAPPTEST"})).await, "HANDLER");
    let bad_type = unbind(json!({"event": "ONAPPTEST", "event_type": "x"})).await;
    assert_eq!(bad_type.body["argument"], "EVENT_TYPE", "{}", bad_type.text);
}

#[tokio::test]
async fn events_non_admins_bind_for_themselves_only() {
    let app = spawn_app().await;
    let client = app.add_oauth_app("local.mixed.app", "imopenlines,im");
    let admin = app.issue_tokens(&client, 1).await["access_token"].as_str().unwrap().to_string();
    let operator = app.issue_tokens(&client, 12).await["access_token"].as_str().unwrap().to_string();

    let other_user = bind(&app, &operator, json!({"event": "ONAPPTEST", "handler": HANDLER, "auth_type": 14})).await;
    assert_error(
        &other_user,
        403,
        "ACCESS_DENIED",
        "Access denied! Event binding with AUTH_TYPE requires administrator access rights",
    );
    // That check comes before everything else, even an empty event.
    let first = bind(&app, &operator, json!({"auth_type": "14"})).await;
    assert_eq!(first.body["error"], "ACCESS_DENIED", "{}", first.text);
    let offline = bind(&app, &operator, json!({"event": "ONAPPTEST", "event_type": "offline"})).await;
    assert_error(
        &offline,
        403,
        "ACCESS_DENIED",
        "Access denied! Offline events binding requires administrator access rights",
    );

    // Their own binding carries their id, with or without auth_type.
    assert_success(&bind(&app, &operator, json!({"event": "ONAPPTEST", "handler": HANDLER})).await, json!(true));
    let own = bind(&app, &operator, json!({"event": "ONAPPTEST", "handler": HANDLER, "auth_type": 12})).await;
    assert_error(&own, 400, "ERROR_CORE", "Unable to set event handler: Handler already binded");
    assert_success(&bind(&app, &admin, json!({"event": "ONAPPINSTALL", "handler": HANDLER})).await, json!(true));

    let mine = json!([{"event": "ONAPPTEST", "handler": HANDLER, "auth_type": "12", "offline": 0}]);
    assert_success(&app.call_bearer(&operator, "event.get", json!({})).await, mine);
    let all = app.call_bearer(&admin, "event.get", json!({})).await;
    assert_eq!(all.body["result"].as_array().map(Vec::len), Some(2), "{}", all.text);

    // A non-admin's unbind matches their own bindings; naming a user, even themselves in a form, is refused.
    let unbound =
        app.call_bearer(&operator, "event.unbind", json!({"event": "ONAPPINSTALL", "handler": HANDLER})).await;
    assert_success(&unbound, json!({"count": 0}));
    let form = app
        .send(app.client.post(app.url("/rest/event.unbind")).bearer_auth(&operator).form(&[
            ("event", "ONAPPTEST"),
            ("handler", HANDLER),
            ("auth_type", "12"),
        ]))
        .await;
    assert_error(
        &form,
        403,
        "ACCESS_DENIED",
        "Access denied! Event unbinding with AUTH_TYPE requires administrator access rights",
    );
    let offline =
        app.call_bearer(&operator, "event.unbind", json!({"event": "ONAPPTEST", "event_type": "offline"})).await;
    assert_error(
        &offline,
        403,
        "ACCESS_DENIED",
        "Access denied! Offline events unbinding requires administrator access rights",
    );
    let json_own = json!({"event": "ONAPPTEST", "handler": HANDLER, "auth_type": 12});
    assert_success(&app.call_bearer(&operator, "event.unbind", json_own).await, json!({"count": 1}));
}

#[tokio::test]
async fn events_methods_refuse_webhooks() {
    let app = spawn_app().await;
    for method in ["event.bind", "event.unbind", "event.get", "events"] {
        let resp = app.call(method, json!({"event": "ONAPPTEST", "handler": HANDLER})).await;
        assert_error(&resp, 403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method");
    }
}

#[tokio::test]
async fn events_lists_the_events_of_the_scopes() {
    let app = spawn_app().await;
    let token = token(&app, "local.list.app", "imopenlines,im", 1).await;
    let events = |params: Value| app.call_bearer(&token, "events", params);
    let global = ["ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPTEST", "ONOFFLINEEVENT"];
    let chat = ["ONCRMCHATUSERADD", "ONCRMCHATUSERDELETE", "ONOPENLINEMESSAGEADD"];
    let every: Vec<&str> = global.iter().chain(&chat).copied().collect();
    assert_success(&events(json!({})).await, json!(every));
    assert_success(&events(json!({"full": "true"})).await, json!(every));
    assert_success(&events(json!({"scope": "imopenlines"})).await, json!(chat));
    assert_success(&events(json!({"SCOPE": ""})).await, json!(global));
    assert_success(&events(json!({"scope": "im"})).await, json!([]));

    let im_only = super::events::token(&app, "local.im.list.app", "im", 1).await;
    assert_success(&app.call_bearer(&im_only, "events", json!({})).await, json!(global));
    assert_success(&app.call_bearer(&im_only, "events", json!({"full": 1})).await, json!(every));
}

// ---- deliveries ----

/// One request a [`Sink`] received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) content_type: String,
    pub(crate) body: String,
}

impl Received {
    /// The body's pairs, decoded.
    pub(crate) fn pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }

    pub(crate) fn field(&self, name: &str) -> Option<String> {
        self.pairs().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A local event handler: records every request, answers with the statuses it is told, one per request
/// (200 once they run out).
#[derive(Clone)]
pub(crate) struct Sink {
    pub(crate) url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    answers: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u16>>>,
    /// False: requests are recorded, then held without an answer until it turns true.
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Sink {
    pub(crate) async fn start() -> Sink {
        Sink::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub(crate) async fn on(listener: tokio::net::TcpListener) -> Sink {
        let addr = listener.local_addr().unwrap();
        let sink = Sink {
            url: format!("http://{addr}/handler"),
            received: Default::default(),
            answers: Default::default(),
            open: std::sync::Arc::new(tokio::sync::watch::Sender::new(true)),
        };
        let state = sink.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                state.received.lock().unwrap().push(Received { content_type, body });
                let mut open = state.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
                let status = state.answers.lock().unwrap().pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    /// Holds every request without an answer until [`Sink::release`].
    pub(crate) fn hold(&self) {
        self.open.send_replace(false);
    }

    pub(crate) fn release(&self) {
        self.open.send_replace(true);
    }

    pub(crate) fn answer(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived (at most `secs` seconds) and returns them.
    pub(crate) async fn wait(&self, count: usize, secs: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let received = self.received();
            if received.len() >= count || std::time::Instant::now() > deadline {
                assert!(received.len() >= count, "{} of {count} deliveries arrived: {received:?}", received.len());
                return received;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A local address nobody listens on (yet): a handler there is down.
pub(crate) fn unused_addr() -> std::net::SocketAddr {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    reserved.local_addr().unwrap()
}

/// The removal of user 12 from chat 8773 (deal 288) through the demo webhook.
pub(crate) async fn remove_operator(app: &TestApp) {
    let resp = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await;
    assert_success(&resp, json!(8773));
}

#[tokio::test]
async fn events_a_removal_is_delivered_in_the_vendors_wire_format() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    let client = app.add_oauth_app("local.wire.app", "imopenlines,im");
    let token = app.issue_tokens(&client, 1).await["access_token"].as_str().unwrap().to_string();
    assert_success(
        &bind(&app, &token, json!({"event": "ONCRMCHATUSERDELETE", "handler": sink.url})).await,
        json!(true),
    );

    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    remove_operator(&app).await;
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(delivery.content_type, "application/x-www-form-urlencoded");
    // PHP's http_build_query: brackets percent-encoded.
    assert!(
        delivery.body.starts_with("event=ONCRMCHATUSERDELETE&event_handler_id=1&data%5BCHAT_ID%5D=8773&"),
        "{}",
        delivery.body
    );
    let keys: Vec<String> = delivery.pairs().into_iter().map(|(k, _)| k).collect();
    let expected_keys = [
        "event",
        "event_handler_id",
        "data[CHAT_ID]",
        "data[USER_ID]",
        "data[CRM_ENTITY_TYPE]",
        "data[CRM_ENTITY]",
        "data[USER_COUNT]",
        "ts",
        "auth[access_token]",
        "auth[expires]",
        "auth[expires_in]",
        "auth[scope]",
        "auth[domain]",
        "auth[server_endpoint]",
        "auth[status]",
        "auth[client_endpoint]",
        "auth[member_id]",
        "auth[user_id]",
        "auth[application_token]",
    ];
    assert_eq!(keys, expected_keys);
    let field = |name: &str| delivery.field(name).unwrap();
    for (name, value) in [
        ("data[CHAT_ID]", "8773"),
        ("data[USER_ID]", "12"),
        ("data[CRM_ENTITY_TYPE]", "DEAL"),
        ("data[CRM_ENTITY]", "288"),
        ("data[USER_COUNT]", "3"),
        ("auth[scope]", "imopenlines,im"),
        ("auth[domain]", "crmchat.localhost"),
        ("auth[status]", "L"),
        // The demo webhook's user made the change, and the binding has no auth_type.
        ("auth[user_id]", "1"),
    ] {
        assert_eq!(field(name), value, "{name}");
    }
    assert_eq!(field("auth[application_token]"), client.application_token);
    assert_eq!(field("auth[client_endpoint]"), format!("{}/rest/", app.http_base));
    assert_eq!(field("auth[server_endpoint]"), format!("{}/oauth/rest/", app.http_base));
    assert_eq!(field("auth[member_id]").len(), 32);
    let ts: u64 = field("ts").parse().unwrap();
    assert!(ts >= before && ts <= before + 5, "ts {ts} is when the event was produced ({before})");
    let expires: u64 = field("auth[expires]").parse().unwrap();
    let expires_in: u64 = field("auth[expires_in]").parse().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
    assert!(expires.abs_diff(ts + expires_in) <= 2, "expires {expires}, ts {ts}, expires_in {expires_in}");

    // The token works for calling back, as the delivery's user.
    let back = app
        .call_bearer(
            &field("auth[access_token]"),
            "imopenlines.crm.chat.getLastId",
            json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288}),
        )
        .await;
    assert_success(&back, json!(8773));
    let profile = app.call_bearer(&field("auth[access_token]"), "profile", json!({})).await;
    assert_eq!(profile.body["result"]["ID"], "1", "{}", profile.text);
    // Delivered once.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn events_only_bound_events_of_acknowledged_changes_are_delivered() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    let admin = token(&app, "local.only.app", "imopenlines,im", 1).await;
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "handler": sink.url, "auth_type": 14})).await,
        json!(true),
    );

    // A removal nobody listens to, and a refused addition (user 13 is inactive), produce nothing.
    remove_operator(&app).await;
    let refused = app
        .call("imopenlines.crm.chat.user.add", json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 13}))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    // An addition that changes nothing (already a member) produces nothing either.
    let add = |user: i64| {
        app.call(
            "imopenlines.crm.chat.user.add",
            json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user}),
        )
    };
    assert_success(&add(14).await, json!(8773));
    assert_success(&add(12).await, json!(8773));
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(delivery.field("event").as_deref(), Some("ONCRMCHATUSERADD"));
    assert_eq!(delivery.field("data[USER_ID]").as_deref(), Some("12"));
    assert_eq!(delivery.field("data[USER_COUNT]").as_deref(), Some("4"));
    // The binding's auth_type decides whose token goes with it.
    assert_eq!(delivery.field("auth[user_id]").as_deref(), Some("14"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 1, "{:?}", sink.received());
}

#[tokio::test]
async fn events_a_failed_delivery_is_retried_until_the_handler_answers() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    sink.answer(&[500, 503]);
    let admin = token(&app, "local.retry.app", "imopenlines,im", 1).await;
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": sink.url})).await,
        json!(true),
    );
    let started = std::time::Instant::now();
    remove_operator(&app).await;
    let received = sink.wait(3, 20).await;
    // About 1 s, then 2 s (±20 %) between the attempts; the same delivery each time.
    assert!(started.elapsed() >= std::time::Duration::from_millis(2300), "{:?}", started.elapsed());
    assert!(received.iter().all(|r| r.field("data[USER_ID]").as_deref() == Some("12")));
    assert_eq!(received[0].field("ts"), received[2].field("ts"), "ts is when the event was produced");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 3, "delivered once it answered 200");
}

#[tokio::test]
async fn events_event_test_fires_onapptest_to_the_applications_handlers() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    let other_sink = Sink::start().await;
    let admin = token(&app, "local.test.app", "imopenlines,im", 1).await;
    let other = token(&app, "local.other.app", "im", 1).await;
    assert_success(&bind(&app, &admin, json!({"event": "ONAPPTEST", "handler": sink.url})).await, json!(true));
    assert_success(&bind(&app, &other, json!({"event": "ONAPPTEST", "handler": other_sink.url})).await, json!(true));
    let fired = app.call_bearer(&admin, "event.test", json!({"any": "thing", "list": [1, 2]})).await;
    assert_success(&fired, json!(1));
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(delivery.field("event").as_deref(), Some("ONAPPTEST"));
    assert_eq!(delivery.field("data[QUERY][any]").as_deref(), Some("thing"));
    assert_eq!(delivery.field("data[QUERY][list][1]").as_deref(), Some("2"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(other_sink.received().is_empty(), "another application's handler gets nothing");
    let hook = app.call("event.test", json!({})).await;
    assert_error(&hook, 403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method");
}

#[tokio::test]
async fn events_acknowledged_events_survive_a_crash_while_the_handler_is_down() {
    let mut app = spawn_app().await;
    // The handler is down: its port is bound, so nothing else can take it while the server restarts, but not
    // listening, so a delivery's connection is refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = reserved.local_addr().unwrap();
    let handler = format!("http://{addr}/handler");
    let admin = token(&app, "local.crash.app", "imopenlines,im", 1).await;
    assert_success(&bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": handler})).await, json!(true));
    assert_success(&bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "handler": handler})).await, json!(true));
    let call = |method: &'static str, user: i64| {
        app.call(method, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": user}))
    };
    for _ in 0..3 {
        assert_success(&call("imopenlines.crm.chat.user.delete", 12).await, json!(8773));
        assert_success(&call("imopenlines.crm.chat.user.add", 12).await, json!(8773));
    }
    app.restart();
    let sink = Sink::on(reserved.listen(1024).unwrap()).await;
    // Deliveries the killed process had leased wait for their lease to run out (the 10 s handler timeout plus
    // 30 s) before the new process sends them, so up to 40 s after the kill, plus a poll.
    let received = sink.wait(6, 60).await;
    // Up to four deliveries of a handler are in flight at once, so they may arrive in another order.
    let mut events: Vec<(String, String)> =
        received.iter().map(|r| (r.field("event").unwrap(), r.field("data[USER_COUNT]").unwrap())).collect();
    events.sort();
    let add = ("ONCRMCHATUSERADD".to_string(), "4".to_string());
    let delete = ("ONCRMCHATUSERDELETE".to_string(), "3".to_string());
    assert_eq!(events, [add.clone(), add.clone(), add, delete.clone(), delete.clone(), delete], "every event once");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 6, "none twice");
}

/// PHP's own `parse_str` reads a delivery as a PHP handler's `$_POST` would.
#[tokio::test]
#[ignore = "needs php-cli (apt-get install php-cli); scripts/test runs it"]
async fn events_php_parses_a_delivery_like_a_handler_would() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    let admin = token(&app, "local.php.app", "imopenlines,im", 1).await;
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": sink.url})).await,
        json!(true),
    );
    assert_success(&bind(&app, &admin, json!({"event": "ONAPPTEST", "handler": sink.url})).await, json!(true));
    remove_operator(&app).await;
    let text = "quotes \" & ampersands = [brackets] + plus, ünïcødé";
    let query = json!({"text": text, "nested": {"a": [1, true]}});
    assert_success(&app.call_bearer(&admin, "event.test", query).await, json!(1));
    let received = sink.wait(2, 10).await;
    let php = |body: &str| -> Value {
        use std::io::Write;
        let mut child = std::process::Command::new("php")
            .args(["-r", r#"parse_str(file_get_contents("php://stdin"), $a); echo json_encode($a);"#])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("php-cli");
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Two bindings, so two delivery queues to the one URL: they may arrive in either order.
    let by_event = |name: &str| {
        let prefix = format!("event={name}&");
        received.iter().find(|d| d.body.starts_with(&prefix)).unwrap_or_else(|| panic!("no {name} delivery"))
    };
    let removal = php(&by_event("ONCRMCHATUSERDELETE").body);
    assert_eq!(removal["event"], "ONCRMCHATUSERDELETE");
    assert_eq!(
        removal["data"],
        json!({"CHAT_ID": "8773", "USER_ID": "12", "CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY": "288", "USER_COUNT": "3"})
    );
    assert_eq!(removal["auth"]["user_id"], "1");
    assert_eq!(removal["auth"]["domain"], "crmchat.localhost");
    assert!(removal["auth"]["application_token"].as_str().is_some_and(|t| !t.is_empty()));
    let test = php(&by_event("ONAPPTEST").body);
    assert_eq!(test["event"], "ONAPPTEST");
    assert_eq!(test["data"]["QUERY"], json!({"text": text, "nested": {"a": ["1", "1"]}}));
}

// ---- installing and removing applications ----

pub(crate) const CONTROL_TOKEN: &str = "control-token-for-event-tests";

pub(crate) async fn spawn_controlled() -> TestApp {
    crate::helpers::spawn_app_with_args(crate::helpers::demo_fixture(), &["--control-token", CONTROL_TOKEN]).await
}

pub(crate) async fn control(app: &TestApp, path: &str, body: Value) -> crate::helpers::Resp {
    app.send(app.client.post(app.url(path)).bearer_auth(CONTROL_TOKEN).json(&body)).await
}

/// The keys of a delivery without tokens (`ONAPPUNINSTALL`, outgoing webhooks).
const TOKENLESS_AUTH: [&str; 5] =
    ["auth[domain]", "auth[client_endpoint]", "auth[server_endpoint]", "auth[member_id]", "auth[application_token]"];

#[tokio::test]
async fn events_install_delivers_onappinstall_and_uninstall_onappuninstall() {
    let app = spawn_controlled().await;
    let sink = Sink::start().await;
    let installed =
        control(&app, "/_crmchat/apps/local.demo.app/install", json!({"user_id": 1, "handler": sink.url})).await;
    assert_eq!(installed.status, 200, "{}", installed.text);
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    let field = |d: &Received, name: &str| d.field(name).unwrap_or_else(|| panic!("{name} in {}", d.body));
    assert_eq!(field(&delivery, "event"), "ONAPPINSTALL");
    for (name, value) in [
        ("data[VERSION]", "1"),
        ("data[ACTIVE]", "Y"),
        ("data[INSTALLED]", "Y"),
        ("data[LANGUAGE_ID]", "en"),
        ("auth[user_id]", "1"),
        ("auth[domain]", "crmchat.localhost"),
        ("auth[application_token]", "demo-app-token"),
    ] {
        assert_eq!(field(&delivery, name), value, "{name}");
    }
    assert_eq!(installed.body["application_token"], "demo-app-token");
    // ONAPPINSTALL carries a refresh token, and both tokens work.
    let refresh = field(&delivery, "auth[refresh_token]");
    let refreshed = app
        .post_form(
            "/oauth/token/",
            &format!(
                "grant_type=refresh_token&client_id=local.demo.app&client_secret=demo-secret&refresh_token={refresh}"
            ),
        )
        .await;
    assert_eq!((refreshed.status, &refreshed.body["user_id"]), (200, &json!(1)), "{}", refreshed.text);
    let access = field(&delivery, "auth[access_token]");
    assert_success(
        &app.call_bearer(&access, "event.bind", json!({"event": "ONAPPUNINSTALL", "handler": sink.url})).await,
        json!(true),
    );
    let bound = app.call_bearer(&access, "event.get", json!({})).await;
    assert_eq!(bound.body["result"].as_array().map(Vec::len), Some(2), "{}", bound.text);

    let uninstalled = control(&app, "/_crmchat/apps/local.demo.app/uninstall", json!({"clean": true})).await;
    assert_eq!(uninstalled.status, 200, "{}", uninstalled.text);
    assert_eq!(uninstalled.body["unbound"], 2, "{}", uninstalled.text);
    let received = sink.wait(2, 10).await;
    let removal = &received[1];
    let keys: Vec<String> = removal.pairs().into_iter().map(|(k, _)| k).collect();
    let mut expected = vec!["event", "event_handler_id", "data[LANGUAGE_ID]", "data[CLEAN]", "ts"];
    expected.extend(TOKENLESS_AUTH);
    assert_eq!(keys, expected, "no tokens: the application's access is gone");
    assert_eq!(field(removal, "event"), "ONAPPUNINSTALL");
    assert_eq!(field(removal, "data[CLEAN]"), "1");
    assert_eq!(field(removal, "auth[application_token]"), "demo-app-token");
    assert_eq!(app.call_bearer(&access, "event.get", json!({})).await.status, 401, "the tokens were revoked");

    // Installed again without a handler: the bindings are gone, nothing more is delivered.
    let again = control(&app, "/_crmchat/apps/local.demo.app/install", json!({"user_id": 1})).await;
    let token = again.body["access_token"].as_str().unwrap();
    assert_success(&app.call_bearer(token, "event.get", json!({})).await, json!([]));
    let bad = control(&app, "/_crmchat/apps/local.demo.app/uninstall", json!({"clean": "yes"})).await;
    assert_eq!((bad.status, &bad.body["error"]), (400, &json!("invalid_argument")), "{}", bad.text);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 2, "{:?}", sink.received());
}

#[tokio::test]
async fn events_cli_app_add_with_a_handler_and_app_remove_deliver_the_lifecycle_events() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    let refused = app.cli(&[
        "app",
        "add",
        "--client-id",
        "local.cli.app",
        "--scope",
        "im",
        "--handler",
        "http://localhost:3000/",
    ]);
    assert!(!refused.ok && refused.stderr.contains("dot"), "{}", refused.stderr);
    assert!(app.cli_ok(&["app", "list"]).lines().all(|l| !l.starts_with("local.cli.app")), "nothing was added");

    let out = app.cli_ok(&[
        "app",
        "add",
        "--client-id",
        "local.cli.app",
        "--scope",
        "imopenlines,im",
        "--handler",
        &sink.url,
    ]);
    let application_token = crate::helpers::printed_field(&out, "application_token");
    let [install] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(install.field("event").as_deref(), Some("ONAPPINSTALL"));
    // Without --user, the first active administrator installs it.
    assert_eq!(install.field("auth[user_id]").as_deref(), Some("1"));
    assert_eq!(install.field("auth[scope]").as_deref(), Some("imopenlines,im"));
    assert!(install.field("auth[refresh_token]").is_some_and(|t| !t.is_empty()), "{}", install.body);
    let access = install.field("auth[access_token]").unwrap();
    assert_success(
        &app.call_bearer(&access, "event.bind", json!({"event": "ONAPPUNINSTALL", "handler": sink.url})).await,
        json!(true),
    );

    let with_user = app.cli(&[
        "app",
        "add",
        "--client-id",
        "local.cli2.app",
        "--scope",
        "im",
        "--handler",
        &sink.url,
        "--user",
        "99",
    ]);
    assert!(!with_user.ok && with_user.stderr.contains("99"), "{}", with_user.stderr);

    app.cli_ok(&["app", "remove", "--client-id", "local.cli.app"]);
    let received = sink.wait(2, 10).await;
    let removal = &received[1];
    assert_eq!(removal.field("event").as_deref(), Some("ONAPPUNINSTALL"));
    assert_eq!(removal.field("data[CLEAN]").as_deref(), Some("0"));
    assert_eq!(removal.field("auth[application_token]"), Some(application_token));
    assert!(removal.field("auth[access_token]").is_none(), "{}", removal.body);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 2, "{:?}", sink.received());
}

/// A reset that removes a delivery while its handler still holds it: the late outcome is dropped, and the
/// deliveries after the reset go on, retries included.
#[tokio::test]
async fn events_a_reset_during_a_delivery_leaves_the_worker_working() {
    let app = spawn_controlled().await;
    let sink = Sink::start().await;
    sink.hold();
    let installed =
        control(&app, "/_crmchat/apps/local.demo.app/install", json!({"user_id": 1, "handler": sink.url})).await;
    assert_eq!(installed.status, 200, "{}", installed.text);
    sink.wait(1, 10).await;
    let reset = control(&app, "/_crmchat/reset", json!({})).await;
    assert_eq!(reset.status, 200, "{}", reset.text);
    sink.release();

    // After the reset: a delivery that fails once must be retried, which needs its first outcome recorded.
    let installed = control(&app, "/_crmchat/apps/local.demo.app/install", json!({"user_id": 1})).await;
    let token = installed.body["access_token"].as_str().unwrap();
    assert_success(&bind(&app, token, json!({"event": "ONCRMCHATUSERDELETE", "handler": sink.url})).await, json!(true));
    sink.answer(&[500]);
    remove_operator(&app).await;
    let received = sink.wait(3, 20).await;
    assert!(received[1..].iter().all(|r| r.field("event").as_deref() == Some("ONCRMCHATUSERDELETE")), "{received:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 3, "delivered once it answered 200: {:?}", sink.received());
    let log = app.log();
    assert!(!log.contains("recording delivery outcomes failed"), "{log}");
}

// ---- bindings and event settings in the portal state ----

/// The demo portal with `local.demo.app` bound to removals at `handler`, and the portal's retries.
fn demo_bound_to(handler: &str, retries: Option<i64>) -> Value {
    crate::helpers::demo_with(|f| {
        f["apps"][0]["events"] = json!([{"event": "ONCRMCHATUSERDELETE", "handler": handler}]);
        if let Some(retries) = retries {
            f["portal"]["events"] = json!({"retries": retries});
        }
    })
}

#[tokio::test]
async fn events_bindings_are_exported_loaded_and_kept_by_snapshots() {
    let sink = Sink::start().await;
    let app =
        crate::helpers::spawn_app_with_args(demo_bound_to(&sink.url, None), &["--control-token", CONTROL_TOKEN]).await;
    let exported = app.export();
    assert_eq!(exported["portal"]["events"], json!({"retries": 10}), "{}", exported["portal"]);
    let bindings = exported["apps"][0]["events"].as_array().unwrap_or_else(|| panic!("{}", exported["apps"])).clone();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0]["event"], "ONCRMCHATUSERDELETE");
    assert_eq!(bindings[0]["handler"], sink.url.as_str());
    let loaded_id = bindings[0]["id"].as_i64().expect("an exported binding has its id");

    // The loaded binding is a binding like any other: listed, and delivered to with its id.
    let client = crate::helpers::OAuthClient {
        client_id: "local.demo.app".into(),
        secret: "demo-secret".into(),
        application_token: "demo-app-token".into(),
    };
    let admin = app.issue_tokens(&client, 1).await["access_token"].as_str().unwrap().to_string();
    let listed = app.call_bearer(&admin, "event.get", json!({})).await;
    assert_success(
        &listed,
        json!([{"event": "ONCRMCHATUSERDELETE", "handler": sink.url, "auth_type": "0", "offline": 0}]),
    );

    assert_eq!(control(&app, "/_crmchat/snapshots/bound", json!({})).await.status, 200);
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "event_type": "offline"})).await,
        json!(true),
    );
    let restored = control(&app, "/_crmchat/snapshots/bound/restore", json!({})).await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    let after = app.export();
    assert_eq!(after["apps"][0]["events"], json!(bindings), "the snapshot's bindings, no more");

    remove_operator(&app).await;
    let [delivery] = <[Received; 1]>::try_from(sink.wait(1, 10).await).unwrap();
    assert_eq!(delivery.field("event").as_deref(), Some("ONCRMCHATUSERDELETE"));
    assert_eq!(delivery.field("event_handler_id"), Some(loaded_id.to_string()));

    // A reset returns to the start-up file's bindings. A restore revokes the tokens issued before it.
    let admin = app.issue_tokens(&client, 1).await["access_token"].as_str().unwrap().to_string();
    assert_success(&bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "handler": sink.url})).await, json!(true));
    assert_eq!(control(&app, "/_crmchat/reset", json!({})).await.status, 200);
    assert_eq!(app.export()["apps"][0]["events"], json!(bindings));
}

#[tokio::test]
async fn events_a_binding_in_a_state_file_is_checked_like_event_bind() {
    let bad = demo_bound_to("http://localhost/handler", Some(101));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = crate::helpers::load_file(dir.path(), &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("portal.events.retries"), "{stderr}");
    assert!(stderr.contains("apps[0].events[0].handler"), "{stderr}");
}

#[tokio::test]
async fn events_retries_zero_is_the_vendors_single_attempt() {
    let sink = Sink::start().await;
    sink.answer(&[500, 500, 500]);
    let app = crate::helpers::spawn_app_with(demo_bound_to(&sink.url, Some(0))).await;
    remove_operator(&app).await;
    sink.wait(1, 10).await;
    // A retry would come about 1 s later.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(sink.received().len(), 1, "one attempt, no retry: {:?}", sink.received());
}

// ---- bounded storage ----

/// Rows of the event and notice tables of `app`'s database.
async fn stored(app: &TestApp) -> [i64; 3] {
    let count = |table| crate::helpers::count_rows(&app.data_dir, table);
    [count("outbox").await, count("deliveries").await, count("notifications").await]
}

#[tokio::test]
async fn events_finished_deliveries_and_notices_are_pruned_after_the_retention_window() {
    let app = spawn_controlled().await;
    let sink = Sink::start().await;
    let stuck = Sink::start().await;
    let admin = token(&app, "local.prune.app", "imopenlines,im", 1).await;
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": sink.url})).await,
        json!(true),
    );
    assert_success(&bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "handler": sink.url})).await, json!(true));
    let call =
        |method: &'static str| app.call(method, json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12}));
    for _ in 0..3 {
        assert_success(&call("imopenlines.crm.chat.user.delete").await, json!(8773));
        assert_success(&call("imopenlines.crm.chat.user.add").await, json!(8773));
    }
    sink.wait(6, 10).await;
    // One more event for a handler that never answers: its delivery stays pending whatever its age.
    stuck.hold();
    assert_success(&bind(&app, &admin, json!({"event": "ONAPPTEST", "handler": stuck.url})).await, json!(true));
    assert_success(&app.call_bearer(&admin, "event.test", json!({})).await, json!(1));
    stuck.wait(1, 10).await;
    let [events, deliveries, notices] = stored(&app).await;
    assert_eq!((events, deliveries), (7, 7));
    assert!(notices >= 3, "the removals' notices: {notices}");

    let advanced = control(&app, "/_crmchat/clock", json!({"advance_s": 25 * 3600})).await;
    assert_eq!(advanced.status, 200, "{}", advanced.text);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored(&app).await != [1, 1, 0] && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored(&app).await, [1, 1, 0], "only the event no handler received yet is left: {}", app.log());
    stuck.release();
}

/// A handler that never answers holds only its own deliveries: removals and additions are answered as fast as
/// without it (the delivery timeout is 10 s, so a call waiting for the handler would take that long).
#[tokio::test]
async fn events_a_hanging_handler_does_not_slow_the_rest_api() {
    let app = spawn_app().await;
    let sink = Sink::start().await;
    sink.hold();
    let admin = token(&app, "local.hang.app", "imopenlines,im", 1).await;
    assert_success(
        &bind(&app, &admin, json!({"event": "ONCRMCHATUSERDELETE", "handler": sink.url})).await,
        json!(true),
    );
    assert_success(&bind(&app, &admin, json!({"event": "ONCRMCHATUSERADD", "handler": sink.url})).await, json!(true));
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});
    let mut latencies = Vec::new();
    for _ in 0..20 {
        for method in ["imopenlines.crm.chat.user.delete", "imopenlines.crm.chat.user.add"] {
            let started = std::time::Instant::now();
            assert_success(&app.call(method, params.clone()).await, json!(8773));
            latencies.push(started.elapsed());
        }
    }
    assert!(!sink.received().is_empty(), "the handler is being called and hangs");
    latencies.sort();
    let (median, slowest) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    eprintln!("with a hanging handler: median {median:?}, slowest {slowest:?} of {} calls", latencies.len());
    assert!(slowest < std::time::Duration::from_secs(2), "median {median:?}, slowest {slowest:?}");
    sink.release();
}
