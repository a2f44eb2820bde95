//! `batch` (protocol.md, batch): every way clients send `cmd` and `halt`, the 50-command limit,
//! per-command errors and scopes, references to earlier answers, PHP-array JSON shapes, transactions.

use serde_json::{Value, json};

use crate::helpers::*;

const LAST: &str = "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288";
const LAST_LEAD: &str = "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=lead&CRM_ENTITY=101";
/// Company 3 has no chat: `CRM_CHAT_EMPTY_CRM_DATA` "Could not find CRM entity".
const FAIL: &str = "imopenlines.crm.chat.getLastId?CRM_ENTITY_TYPE=company&CRM_ENTITY=3";
const MEMBERS: &str = "im.chat.user.list?CHAT_ID=8773";
const ADD_TO_DEAL: &str = "imopenlines.crm.chat.user.add?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288";
const MESSAGE_TO_DEAL: &str = "imopenlines.crm.message.add?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&CHAT_ID=8773";

const MAPS: [&str; 5] = ["result", "result_error", "result_total", "result_next", "result_time"];

fn err(code: &str, description: &str) -> Value {
    json!({"error": code, "error_description": description})
}

fn fail_error() -> Value {
    err("CRM_CHAT_EMPTY_CRM_DATA", "Could not find CRM entity")
}

fn not_found() -> Value {
    err("ERROR_METHOD_NOT_FOUND", "Method not found!")
}

/// The batch envelope: HTTP 200, exactly `{"result", "time"}` with a full `time`, the five maps, a full `time`
/// block for every command in `result_time`. Returns the inner `result` object.
fn batch_body(resp: &Resp) -> Value {
    assert_eq!(resp.status, 200, "a batch answer is always HTTP 200: {}", resp.text);
    assert_json_headers(resp);
    let keys: Vec<&str> = resp.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["result", "time"], "no total/next next to a batch result: {}", resp.text);
    assert_time(&resp.body["time"]);
    let inner = resp.body["result"].clone();
    let mut keys: Vec<&str> =
        inner.as_object().unwrap_or_else(|| panic!("{}", resp.text)).keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = MAPS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{}", resp.text);
    for map in MAPS {
        assert!(inner[map].is_object() || inner[map] == json!([]) || inner[map].is_array(), "{map}: {}", resp.text);
    }
    for time in entries(&inner["result_time"]) {
        assert_time(&time);
    }
    inner
}

/// The values of a PHP-array map (a JSON object or array).
fn entries(map: &Value) -> Vec<Value> {
    match map {
        Value::Object(m) => m.values().cloned().collect(),
        Value::Array(a) => a.clone(),
        other => panic!("a map is an object or an array: {other}"),
    }
}

/// The keys of a PHP-array map: an array's are its indexes.
fn keys(map: &Value) -> Vec<String> {
    match map {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
        other => panic!("a map is an object or an array: {other}"),
    }
}

/// `result`, `result_error`, the keys of `result_time` (in order) and empty `result_total`/`result_next`.
fn assert_maps(inner: &Value, result: Value, errors: Value, time: Value) {
    assert_eq!(inner["result"], result, "result: {inner}");
    assert_eq!(inner["result_error"], errors, "result_error: {inner}");
    assert_eq!(inner["result_total"], json!([]), "result_total: {inner}");
    assert_eq!(inner["result_next"], json!([]), "result_next: {inner}");
    let expected_time_keys: Vec<String> = keys(&time);
    assert_eq!(keys(&inner["result_time"]), expected_time_keys, "result_time keys: {inner}");
    assert_eq!(inner["result_time"].is_array(), time.is_array(), "result_time shape: {inner}");
}

async fn batch(app: &TestApp, params: Value) -> Value {
    batch_body(&app.call("batch", params).await)
}

#[tokio::test]
async fn cmd_as_a_json_map() {
    let app = spawn_app().await;
    let resp = app.call("batch", json!({"cmd": {"last": LAST, "members": MEMBERS, "lead": LAST_LEAD}})).await;
    let inner = batch_body(&resp);
    assert_maps(
        &inner,
        json!({"last": 8773, "members": [12, 14, 20, 30], "lead": 8775}),
        json!([]),
        json!({"last": 0, "members": 0, "lead": 0}),
    );
    // Named keys: `result.result` is an object, in the order of `cmd`.
    assert!(
        resp.text.starts_with(r#"{"result":{"result":{"last":8773,"members":[12,14,20,30],"lead":8775}"#),
        "{}",
        resp.text
    );
    assert!(resp.text.contains(r#""result_error":[]"#), "{}", resp.text);
}

#[tokio::test]
async fn cmd_as_a_json_list() {
    let app = spawn_app().await;
    // Gap-free: every map is an array.
    let inner = batch(&app, json!({"cmd": [LAST, MEMBERS], "halt": 1})).await;
    assert_maps(&inner, json!([8773, [12, 14, 20, 30]]), json!([]), json!([0, 0]));
    // A failure in the middle leaves a gap: `result` becomes an object, `result_error` too (key 1).
    let inner = batch(&app, json!({"cmd": [LAST, FAIL, LAST_LEAD]})).await;
    assert_maps(&inner, json!({"0": 8773, "2": 8775}), json!({"1": fail_error()}), json!({"0": 0, "2": 0}));
    // A failure first: the errors are gap-free (key 0 only), the results are not.
    let inner = batch(&app, json!({"cmd": [FAIL, LAST]})).await;
    assert_maps(&inner, json!({"1": 8773}), json!([fail_error()]), json!({"1": 0}));
}

#[tokio::test]
async fn cmd_as_form_fields() {
    let app = spawn_app().await;
    let body = "cmd[last]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Ddeal%26CRM_ENTITY%3D288\
                &cmd[members]=im.chat.user.list%3FCHAT_ID%3D8773&halt=0";
    let inner = batch_body(&app.post_form(&app.method_path("batch"), body).await);
    assert_maps(
        &inner,
        json!({"last": 8773, "members": [12, 14, 20, 30]}),
        json!([]),
        json!({"last": 0, "members": 0}),
    );
    // `cmd[]=` appends: a list.
    let body = "cmd[]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Dlead%26CRM_ENTITY%3D101\
                &cmd[]=im.chat.user.list%3FCHAT_ID%3D8775";
    let inner = batch_body(&app.post_form(&app.method_path("batch"), body).await);
    assert_maps(&inner, json!([8775, [14, 31]]), json!([]), json!([0, 0]));
    // Multipart fields as well.
    let fields = [("cmd[a]", LAST), ("cmd[b]", FAIL), ("halt", "0")];
    let inner = batch_body(&app.post_multipart(&app.method_path("batch"), &fields).await);
    assert_maps(&inner, json!({"a": 8773}), json!({"b": fail_error()}), json!({"a": 0}));
}

#[tokio::test]
async fn cmd_in_the_query_string_double_encoded() {
    let app = spawn_app().await;
    // @2bad/bitrix: GET, `cmd[key]=` in the query, sub-queries encoded once more, no `halt`.
    let query = "cmd[a]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Ddeal%26CRM_ENTITY%3D288\
                 &cmd[b]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Dcompany%26CRM_ENTITY%3D3\
                 &cmd[c]=im.chat.user.list%3FCHAT_ID%3D8775";
    for path in [format!("{DEMO_HOOK}batch"), format!("{DEMO_HOOK}batch.json"), format!("{DEMO_HOOK}batch/")] {
        let inner = batch_body(&app.get(&format!("{path}?{query}")).await);
        assert_maps(&inner, json!({"a": 8773, "c": [14, 31]}), json!({"b": fail_error()}), json!({"a": 0, "c": 0}));
    }
    // Percent-encoded brackets.
    let query = "cmd%5Ba%5D=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Ddeal%26CRM_ENTITY%3D288";
    let inner = batch_body(&app.get(&format!("{DEMO_HOOK}batch?{query}")).await);
    assert_maps(&inner, json!({"a": 8773}), json!([]), json!({"a": 0}));
    // A double-encoded space and ampersand in a sub-query's value reach the method decoded once per level.
    let query = "cmd[m]=imopenlines.crm.message.add%3FCRM_ENTITY_TYPE%3Ddeal%26CRM_ENTITY%3D288%26USER_ID%3D12\
                 %26CHAT_ID%3D8773%26MESSAGE%3DHello%2520world%2520%2526%2520more";
    let inner = batch_body(&app.get(&format!("{DEMO_HOOK}batch?{query}")).await);
    assert!(inner["result"]["m"].is_i64(), "{inner}");
    let export = app.export();
    let messages = chat(&export, 8773)["messages"].as_array().unwrap().clone();
    assert_eq!(messages.last().unwrap()["text"], "Hello world & more");
}

#[tokio::test]
async fn sub_queries_use_php_brackets() {
    let app = spawn_app().await;
    let before = app.export();
    let invalid_user = err("ERROR_ARGUMENT", "The value of an argument 'USER_ID' has an invalid type");
    let inner = batch(
        &app,
        json!({"cmd": {
            // USER_ID[0]=14 and USER_ID%5B%5D=14 make USER_ID an array: an argument error, not "empty".
            "indexed": format!("{ADD_TO_DEAL}&USER_ID[0]=14"),
            "encoded": format!("{ADD_TO_DEAL}&USER_ID%5B%5D=14"),
            // Extra nested parameters are ignored; a `+` is a space; the last scalar wins.
            "nested": format!("{ADD_TO_DEAL}&USER_ID=99&USER_ID=14&EXTRA[a][b]=1&EXTRA[a][c][]=2"),
            "message": format!("{MESSAGE_TO_DEAL}&USER_ID=12&MESSAGE=Hello+there%21"),
        }}),
    )
    .await;
    assert_eq!(inner["result_error"], json!({"indexed": invalid_user, "encoded": invalid_user}), "{inner}");
    assert_eq!(inner["result"]["nested"], json!(8773), "{inner}");
    assert!(inner["result"]["message"].is_i64(), "{inner}");
    let export = app.export();
    assert_eq!(members(&export, 8773), members(&before, 8773));
    let messages = chat(&export, 8773)["messages"].as_array().unwrap().clone();
    assert_eq!(messages.last().unwrap()["text"], "Hello there!");
}

/// Commands a, b (fails) and c; `halted` says whether c must be absent.
async fn check_halt(app: &TestApp, halt: Option<Value>, halted: bool) {
    let mut params = json!({"cmd": {"a": LAST, "b": FAIL, "c": LAST_LEAD}});
    if let Some(halt) = &halt {
        params["halt"] = halt.clone();
    }
    let inner = batch(app, params).await;
    let label = format!("halt {halt:?}");
    if halted {
        assert_eq!(inner["result"], json!({"a": 8773}), "{label}: {inner}");
        assert_eq!(keys(&inner["result_time"]), ["a"], "{label}: {inner}");
    } else {
        assert_eq!(inner["result"], json!({"a": 8773, "c": 8775}), "{label}: {inner}");
        assert_eq!(keys(&inner["result_time"]), ["a", "c"], "{label}: {inner}");
    }
    assert_eq!(inner["result_error"], json!({"b": fail_error()}), "{label}: {inner}");
    assert_eq!((&inner["result_total"], &inner["result_next"]), (&json!([]), &json!([])), "{label}: {inner}");
}

#[tokio::test]
async fn halt_is_php_truthiness() {
    let app = spawn_app().await;
    for halt in [json!(true), json!(1), json!("1"), json!("false"), json!("true"), json!("Y")] {
        check_halt(&app, Some(halt), true).await;
    }
    for halt in [json!(false), json!(0), json!("0"), json!(""), json!(null)] {
        check_halt(&app, Some(halt), false).await;
    }
    check_halt(&app, None, false).await;
}

#[tokio::test]
async fn halt_as_a_form_field() {
    let app = spawn_app().await;
    let cmd = "cmd[a]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Ddeal%26CRM_ENTITY%3D288\
               &cmd[b]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Dcompany%26CRM_ENTITY%3D3\
               &cmd[c]=im.chat.user.list%3FCHAT_ID%3D8775";
    for (halt, halted) in
        [("halt=1", true), ("halt=false", true), ("halt=true", true), ("halt=0", false), ("halt=", false)]
    {
        let inner = batch_body(&app.post_form(&app.method_path("batch"), &format!("{cmd}&{halt}")).await);
        let expected = if halted { json!({"a": 8773}) } else { json!({"a": 8773, "c": [14, 31]}) };
        assert_eq!(inner["result"], expected, "{halt}: {inner}");
        assert_eq!(inner["result_error"], json!({"b": fail_error()}), "{halt}: {inner}");
    }
}

#[tokio::test]
async fn halt_stops_at_the_first_failure_whatever_it_is() {
    let app = spawn_app().await;
    let inner = batch(&app, json!({"cmd": {"a": "no.such.method", "b": LAST, "c": FAIL}, "halt": 1})).await;
    assert_maps(&inner, json!([]), json!({"a": not_found()}), json!([]));
    let inner = batch(&app, json!({"cmd": [LAST, "no.such.method", LAST_LEAD], "halt": true})).await;
    assert_maps(&inner, json!([8773]), json!({"1": not_found()}), json!([0]));
}

fn fifty_two() -> Vec<(String, String)> {
    (0..52).map(|i| (format!("c{i:02}"), LAST.to_string())).collect()
}

#[tokio::test]
async fn at_most_fifty_commands() {
    let app = spawn_app().await;
    let exceeded = err("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded");
    let cmd: serde_json::Map<String, Value> = fifty_two().into_iter().map(|(k, v)| (k, json!(v))).collect();
    let inner = batch(&app, json!({"cmd": cmd})).await;
    let expected: serde_json::Map<String, Value> = (0..50).map(|i| (format!("c{i:02}"), json!(8773))).collect();
    assert_eq!(inner["result"], Value::Object(expected), "{inner}");
    assert_eq!(inner["result_error"], json!({"c50": exceeded, "c51": exceeded}), "{inner}");
    assert_eq!(keys(&inner["result_time"]).len(), 50);
    // A list of 51: the results stay a list, the 51st is key 50 of an object.
    let list: Vec<Value> = (0..51).map(|_| json!(LAST_LEAD)).collect();
    let inner = batch(&app, json!({"cmd": list})).await;
    assert_eq!(inner["result"], json!(vec![8775; 50]), "{inner}");
    assert_eq!(inner["result_error"], json!({"50": exceeded}), "{inner}");
    assert!(inner["result_time"].as_array().is_some_and(|t| t.len() == 50), "{inner}");
    // Exactly fifty: no error.
    let list: Vec<Value> = (0..50).map(|_| json!(LAST)).collect();
    let inner = batch(&app, json!({"cmd": list})).await;
    assert_maps(&inner, json!(vec![8773; 50]), json!([]), json!(vec![0; 50]));
    // With `halt`, the 51st is the first failure: the 52nd is absent.
    let cmd: serde_json::Map<String, Value> = fifty_two().into_iter().map(|(k, v)| (k, json!(v))).collect();
    let inner = batch(&app, json!({"cmd": cmd, "halt": 1})).await;
    assert_eq!(inner["result_error"], json!({"c50": exceeded}), "{inner}");
    assert_eq!(inner["result"].as_object().unwrap().len(), 50);
}

#[tokio::test]
async fn nested_batch_is_not_allowed() {
    let app = spawn_app().await;
    let refused = err("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage");
    let inner = batch(
        &app,
        json!({"cmd": {"a": "batch?cmd[x]=server.time", "b": "BATCH", "c": "Batch?cmd[0]=scope&halt=1", "d": LAST}}),
    )
    .await;
    assert_maps(&inner, json!({"d": 8773}), json!({"a": refused, "b": refused, "c": refused}), json!({"d": 0}));
}

#[tokio::test]
async fn unknown_method_inside_fails_alone() {
    let app = spawn_app().await;
    let inner = batch(
        &app,
        json!({"cmd": {"a": "no.such.method?x=1", "b": LAST, "c": "imopenlines.crm.chat", "d": "", "e": MEMBERS}}),
    )
    .await;
    assert_maps(
        &inner,
        json!({"b": 8773, "e": [12, 14, 20, 30]}),
        json!({"a": not_found(), "c": not_found(), "d": not_found()}),
        json!({"b": 0, "e": 0}),
    );
}

#[tokio::test]
async fn method_names_inside_are_case_insensitive() {
    let app = spawn_app().await;
    let inner = batch(
        &app,
        json!({"cmd": {
            "a": "IMOPENLINES.CRM.CHAT.GETLASTID?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
            "b": "imopenlines.crm.chat.getlastid?CRM_ENTITY_TYPE=lead&CRM_ENTITY=101",
            "c": "Server.Time",
        }}),
    )
    .await;
    assert_eq!((&inner["result"]["a"], &inner["result"]["b"]), (&json!(8773), &json!(8775)), "{inner}");
    assert!(inner["result"]["c"].as_str().is_some_and(is_php_date), "{inner}");
    assert_eq!(inner["result_error"], json!([]));
}

#[tokio::test]
async fn scope_is_checked_per_command() {
    let fixture = demo_with(|f| {
        add_webhook_with_scopes(f, 1, "imonlywebhookcode1", &["im"]);
    });
    let app = spawn_app_with(fixture).await;
    let im_only = hook(1, "imonlywebhookcode1");
    let resp = app
        .call_as(&im_only, "batch", json!({"cmd": {"open": LAST, "im": MEMBERS, "time": "server.time", "del": "imopenlines.crm.chat.user.delete?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=20"}}))
        .await;
    let inner = batch_body(&resp);
    let scope = err("insufficient_scope", "The request requires higher privileges than provided by the webhook token");
    assert_eq!(inner["result_error"], json!({"open": scope, "del": scope}), "{inner}");
    assert_eq!(keys(&inner["result"]), ["im", "time"], "{inner}");
    assert_eq!(inner["result"]["im"], json!([12, 14, 20, 30]));
    assert_eq!(members(&app.export(), 8773), [12, 14, 20, 30]);
}

#[tokio::test]
async fn commands_run_with_the_outer_callers_permissions() {
    let fixture = demo_with(|f| {
        add_webhook(f, 15, "ninawebhookcode15");
    });
    let app = spawn_app_with(fixture).await;
    let nina = hook(15, "ninawebhookcode15");
    let cmd = json!({"get": "imopenlines.crm.chat.get?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288", "list": MEMBERS,
                     "profile": "profile"});
    let inner = batch_body(&app.call_as(&nina, "batch", json!({"cmd": cmd})).await);
    assert_eq!(
        inner["result_error"],
        json!({"get": err("ACCESS_DENIED", "Access denied! You dont have access to this action"),
               "list": err("ACCESS_DENIED", "Access denied!")}),
        "{inner}"
    );
    assert_eq!(inner["result"]["profile"]["ID"], "15", "{inner}");
}

#[tokio::test]
async fn references_to_earlier_results() {
    let app = spawn_app().await;
    let before = app.export();
    let empty_user = err("ERROR_ARGUMENT", "Argument 'Empty USER_ID' is null or empty");
    let cmd = json!({
        "last": LAST,
        "get": "imopenlines.crm.chat.get?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
        "empty": "imopenlines.crm.chat.get?CRM_ENTITY_TYPE=company&CRM_ENTITY=3",
        "failed": FAIL,
        // Exact references, typed: an integer, a string from a list of objects.
        "by_id": "im.chat.user.list?CHAT_ID=$result[last]",
        "by_string": "im.chat.user.list?CHAT_ID=$result[get][0][CHAT_ID]",
        "member": format!("{ADD_TO_DEAL}&USER_ID=$result[by_id][1]"),
        // A list stays a list (not "Array"); an empty list stays empty (not "Array").
        "list": format!("{ADD_TO_DEAL}&USER_ID=$result[by_id]"),
        "empty_list": format!("{ADD_TO_DEAL}&USER_ID=$result[empty]"),
        // Missing paths: an unknown key, a path into a number, a failed command, a later command.
        "missing": format!("{ADD_TO_DEAL}&USER_ID=$result[nope]"),
        "into_number": format!("{ADD_TO_DEAL}&USER_ID=$result[last][0]"),
        "from_failed": format!("{ADD_TO_DEAL}&USER_ID=$result[failed]"),
        "from_later": format!("{ADD_TO_DEAL}&USER_ID=$result[later]"),
        // Spliced into text.
        "text": format!("{MESSAGE_TO_DEAL}&USER_ID=$result[by_id][0]&MESSAGE=Chat+$result[last]+via+$result[get][0][CONNECTOR_TITLE],+member+$result[by_string][1]"),
        "text_missing": format!("{MESSAGE_TO_DEAL}&USER_ID=12&MESSAGE=x$result[nope]y$result[get][5][CHAT_ID]z"),
        "text_error": format!("{MESSAGE_TO_DEAL}&USER_ID=12&MESSAGE=Error:+$error[failed][error]+/+$error[failed][error_description]"),
        "later": LAST_LEAD,
    });
    let inner = batch(&app, json!({"cmd": cmd})).await;
    let result = &inner["result"];
    assert_eq!(result["by_id"], json!([12, 14, 20, 30]), "{inner}");
    assert_eq!(result["by_string"], json!([12, 14, 20, 30]), "{inner}");
    assert_eq!(result["member"], json!(8773), "{inner}");
    assert_eq!(result["later"], json!(8775), "{inner}");
    for key in ["text", "text_missing", "text_error"] {
        assert!(result[key].is_i64(), "{key}: {inner}");
    }
    assert_eq!(
        inner["result_error"],
        json!({
            "failed": fail_error(),
            "list": err("ERROR_ARGUMENT", "The value of an argument 'USER_ID' has an invalid type"),
            "empty_list": empty_user,
            "missing": empty_user,
            "into_number": empty_user,
            "from_failed": empty_user,
            "from_later": empty_user,
        }),
        "{inner}"
    );
    let export = app.export();
    assert_eq!(members(&export, 8773), members(&before, 8773));
    let texts: Vec<Value> = chat(&export, 8773)["messages"].as_array().unwrap()[2..]
        .iter()
        .map(|m| json!([m["author"], m["text"]]))
        .collect();
    assert_eq!(
        texts,
        [
            json!([12, "Chat 8773 via Online chat, member 14"]),
            json!([12, "xyz"]),
            json!([12, "Error: CRM_CHAT_EMPTY_CRM_DATA / Could not find CRM entity"]),
        ]
    );
}

#[tokio::test]
async fn references_to_time() {
    let app = spawn_app().await;
    let cmd = json!({
        "last": LAST,
        "exact": format!("{MESSAGE_TO_DEAL}&USER_ID=12&MESSAGE=$time[last][start]"),
        "spliced": format!("{MESSAGE_TO_DEAL}&USER_ID=12&MESSAGE=started+$time[last][date_start]"),
    });
    let inner = batch(&app, json!({"cmd": cmd})).await;
    assert_eq!(inner["result_error"], json!([]), "{inner}");
    let start = inner["result_time"]["last"]["start"].as_f64().unwrap();
    let date_start = inner["result_time"]["last"]["date_start"].as_str().unwrap().to_string();
    let export = app.export();
    let messages = chat(&export, 8773)["messages"].as_array().unwrap().clone();
    let exact: f64 = messages[2]["text"].as_str().unwrap().parse().expect("the start time as a number");
    assert!((exact - start).abs() < 1e-6, "{exact} vs {start}");
    assert_eq!(messages[3]["text"], format!("started {date_start}"));
}

#[tokio::test]
async fn empty_maps_are_empty_arrays() {
    let app = spawn_app().await;
    for cmd in [json!({}), json!([])] {
        let resp = app.call("batch", json!({"cmd": cmd})).await;
        let inner = batch_body(&resp);
        for map in MAPS {
            assert_eq!(inner[map], json!([]), "{map}: {}", resp.text);
        }
    }
    let resp = app.call("batch", json!({"cmd": {"a": LAST}})).await;
    for map in ["result_error", "result_total", "result_next"] {
        assert!(resp.text.contains(&format!(r#""{map}":[]"#)), "{map}: {}", resp.text);
    }
}

#[tokio::test]
async fn named_keys_give_objects_and_gap_free_integer_keys_give_arrays() {
    let app = spawn_app().await;
    let inner = batch(&app, json!({"cmd": {"a": LAST}})).await;
    assert_eq!(inner["result"], json!({"a": 8773}));
    assert_eq!(keys(&inner["result_time"]), ["a"]);
    assert!(inner["result_time"].is_object());
    // Integer keys not starting at 0 are not a list.
    let inner = batch(&app, json!({"cmd": {"1": LAST, "2": LAST_LEAD}})).await;
    assert_eq!(inner["result"], json!({"1": 8773, "2": 8775}));
    // "0", "1" in order are a list, as PHP's json_encode writes them.
    let inner = batch(&app, json!({"cmd": {"0": LAST, "1": LAST_LEAD}})).await;
    assert_maps(&inner, json!([8773, 8775]), json!([]), json!([0, 0]));
    let inner = batch(&app, json!({"cmd": {"0": LAST}})).await;
    assert_maps(&inner, json!([8773]), json!([]), json!([0]));
}

#[tokio::test]
async fn all_commands_failing_is_still_http_200() {
    let app = spawn_app().await;
    let inner = batch(&app, json!({"cmd": {"a": FAIL, "b": "no.such.method"}})).await;
    assert_maps(&inner, json!([]), json!({"a": fail_error(), "b": not_found()}), json!([]));
    let inner = batch(&app, json!({"cmd": [FAIL, "batch"]})).await;
    let refused = err("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage");
    assert_maps(&inner, json!([]), json!([fail_error(), refused]), json!([]));
}

#[tokio::test]
async fn cmd_and_halt_keys_are_case_insensitive() {
    let app = spawn_app().await;
    let inner = batch(&app, json!({"CMD": {"a": LAST, "b": FAIL, "c": LAST_LEAD}, "HALT": 1})).await;
    assert_maps(&inner, json!({"a": 8773}), json!({"b": fail_error()}), json!({"a": 0}));
    let inner = batch(&app, json!({"Cmd": [LAST, LAST_LEAD], "Halt": "0"})).await;
    assert_maps(&inner, json!([8773, 8775]), json!([]), json!([0, 0]));
    let body = "CMD[a]=imopenlines.crm.chat.getLastId%3FCRM_ENTITY_TYPE%3Dcompany%26CRM_ENTITY%3D3\
                &CMD[b]=im.chat.user.list%3FCHAT_ID%3D8775&HALT=1";
    let inner = batch_body(&app.post_form(&app.method_path("batch"), body).await);
    assert_maps(&inner, json!([]), json!({"a": fail_error()}), json!([]));
}

#[tokio::test]
async fn each_command_is_its_own_transaction() {
    let app = spawn_app().await;
    let before = app.export();
    let delete = "imopenlines.crm.chat.user.delete?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288";
    let cmd = json!({
        "removed": format!("{delete}&USER_ID=20"),
        // Seen by the next command.
        "after": MEMBERS,
        // 15 is not a member: USER_NOT_FOUND.
        "failing": format!("{delete}&USER_ID=15"),
        "never": format!("{delete}&USER_ID=30"),
    });
    let inner = batch(&app, json!({"cmd": cmd, "halt": 1})).await;
    assert_maps(
        &inner,
        json!({"removed": 8773, "after": [12, 14, 30]}),
        json!({"failing": err("USER_NOT_FOUND", "The specified user is not in chat.")}),
        json!({"removed": 0, "after": 0}),
    );
    // The failing command does not undo the removal; the halted one never ran.
    let after = app.export();
    assert_eq!(members(&after, 8773), [12, 14, 30]);
    let mut expected = before.clone();
    for chat in expected["chats"].as_array_mut().unwrap() {
        if chat["id"] == 8773 {
            chat["members"] = json!([12, 14, 30]);
        }
    }
    assert_eq!(after, expected);
}

#[tokio::test]
async fn fast_bitrix24_single_call() {
    let app = spawn_app().await;
    // fast-bitrix24 1.8.14: POST /rest/1/T/batch (no .json), JSON, one command keyed order0000000000 with an
    // extra `__order` in the sub-query, `halt: 0`.
    let body = json!({
        "cmd": {"order0000000000": "imopenlines.crm.chat.user.delete?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=30&__order=order0000000000"},
        "halt": 0
    });
    let resp =
        app.post_raw(&format!("{DEMO_HOOK}batch"), Some("application/json"), body.to_string().into_bytes()).await;
    let inner = batch_body(&resp);
    assert_maps(&inner, json!({"order0000000000": 8773}), json!([]), json!({"order0000000000": 0}));
    assert!(inner["result"].is_object(), "fast-bitrix24 needs an object: {}", resp.text);
    assert_eq!(members(&app.export(), 8773), [12, 14, 20]);
    // A failing call comes back in result_error, still HTTP 200.
    let body = json!({
        "cmd": {"order0000000000": "imopenlines.crm.chat.user.delete?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288&USER_ID=30&__order=order0000000000"},
        "halt": 0
    });
    let resp =
        app.post_raw(&format!("{DEMO_HOOK}batch"), Some("application/json"), body.to_string().into_bytes()).await;
    let inner = batch_body(&resp);
    assert_maps(
        &inner,
        json!([]),
        json!({"order0000000000": err("USER_NOT_FOUND", "The specified user is not in chat.")}),
        json!([]),
    );
}

#[tokio::test]
async fn b24jssdk_array_call_with_halt() {
    let app = spawn_app().await;
    // @bitrix24/b24jssdk: JSON array, `halt: 1`, telemetry in the query.
    let body = json!({"cmd": [LAST, MEMBERS], "halt": 1});
    let path = format!("{DEMO_HOOK}batch?bx24_request_id=abc&bx24_sdk_ver=2.2.0&bx24_sdk_type=b24-js-sdk");
    let inner = batch_body(&app.post_raw(&path, Some("application/json"), body.to_string().into_bytes()).await);
    assert_maps(&inner, json!([8773, [12, 14, 20, 30]]), json!([]), json!([0, 0]));
}
