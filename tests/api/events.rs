//! Events: binding handlers (`event.bind`, `event.unbind`, `event.get`, `events`), with the vendor's checks
//! in the vendor's order.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, assert_error_body, assert_null_argument, assert_success, spawn_app};

/// A handler URL the vendor accepts (a dot in the host); nothing needs to listen there to bind it.
const HANDLER: &str = "http://127.0.0.1:9/handler";

/// An application with the demo's scopes and an access token of `user`.
async fn token(app: &TestApp, client_id: &str, scopes: &str, user: i64) -> String {
    let client = app.add_oauth_app(client_id, scopes);
    app.issue_tokens(&client, user).await["access_token"].as_str().unwrap().to_string()
}

async fn bind(app: &TestApp, token: &str, params: Value) -> crate::helpers::Resp {
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
