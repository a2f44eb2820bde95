//! `GET /metrics`: Prometheus text, behind the control token when one is set, with the counters a test or an
//! operator reads (requests by method and outcome, latencies, rate-limit refusals, group-commit sizes, the
//! journal, the database pools).

use serde_json::json;

use crate::helpers::*;

const TOKEN: &str = "metrics-token-for-tests-0123456789";

async fn scrape(app: &TestApp) -> String {
    let resp = app.send(app.client.get(app.url("/metrics")).bearer_auth(TOKEN)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    resp.text
}

/// The value of the sample `name{labels}` (labels as Prometheus prints them, in its order), if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_outcome() {
    let fixture = demo_with(|f| f["portal"]["plan"] = json!("standard"));
    let app = spawn_app_with_args(fixture, &["--control-token", TOKEN]).await;
    for _ in 0..3 {
        assert_eq!(app.call("server.time", json!({})).await.status, 200);
    }
    assert_eq!(app.call("no.such.method", json!({})).await.status, 404);
    assert_removed(&app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await, 8773);
    let again = app.delete(json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12})).await;
    assert_eq!(again.status, 400, "{}", again.text);
    // The standard plan's bucket holds 50 calls: the rest of a burst is refused.
    let mut refused = 0;
    for _ in 0..60 {
        if app.call("server.time", json!({})).await.status == 503 {
            refused += 1;
        }
    }
    assert!(refused > 0, "the burst was never refused");

    let text = scrape(&app).await;
    let ok = sample(&text, r#"crmchat_rest_requests_total{method="server.time",outcome="ok"}"#).unwrap();
    assert_eq!(ok as u32, 3 + 60 - refused, "{text}");
    let limited = sample(&text, r#"crmchat_rest_requests_total{method="server.time",outcome="QUERY_LIMIT_EXCEEDED"}"#);
    assert_eq!(limited, Some(f64::from(refused)), "{text}");
    assert_eq!(sample(&text, r#"crmchat_rate_limit_refusals_total{limit="requests"}"#), Some(f64::from(refused)));
    assert_eq!(
        sample(&text, r#"crmchat_rest_requests_total{method="unknown",outcome="ERROR_METHOD_NOT_FOUND"}"#),
        Some(1.0),
        "the name a client made up is not a label: {text}"
    );
    assert!(!text.contains("no.such.method"), "{text}");
    let removal = r#"crmchat_rest_requests_total{method="imopenlines.crm.chat.user.delete","#;
    assert_eq!(sample(&text, &format!(r#"{removal}outcome="ok"}}"#)), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!(r#"{removal}outcome="USER_NOT_FOUND"}}"#)), Some(1.0), "{text}");
    // Latency histograms per method, with buckets up to +Inf.
    let count = sample(&text, r#"crmchat_rest_request_duration_seconds_count{method="server.time"}"#).unwrap();
    assert_eq!(count as u32, 3 + 60, "{text}");
    let inf = r#"crmchat_rest_request_duration_seconds_bucket{method="server.time",le="+Inf"}"#;
    assert_eq!(sample(&text, inf), Some(count), "{text}");
    // The journal: every call so far, of 10,000.
    assert_eq!(sample(&text, "crmchat_journal_capacity"), Some(10_000.0), "{text}");
    assert!(sample(&text, "crmchat_journal_entries").unwrap() >= 66.0, "{text}");
    // The pools, by backend.
    let pools: Vec<&str> = text.lines().filter(|l| l.starts_with("crmchat_db_pool_max_connections{")).collect();
    assert!(!pools.is_empty(), "{text}");
    if testing_postgres() {
        assert!(text.contains(r#"crmchat_db_pool_connections{pool="main",state="in_use"}"#), "{text}");
    } else {
        assert_eq!(sample(&text, r#"crmchat_db_pool_max_connections{pool="writer"}"#), Some(1.0), "{text}");
        // The removal went through the group-commit writer.
        assert!(sample(&text, "crmchat_group_commit_changes_count").unwrap() >= 1.0, "{text}");
    }
}

#[tokio::test]
async fn metrics_need_the_control_token_when_one_is_set() {
    let app = spawn_app_with_args(demo_fixture(), &["--control-token", TOKEN]).await;
    let anonymous = app.get("/metrics").await;
    assert_eq!((anonymous.status, &anonymous.body), (401, &json!({"error": "unauthorized"})), "{}", anonymous.text);
    let wrong = app.send(app.client.get(app.url("/metrics")).bearer_auth("not-the-token")).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(!app.log().contains(TOKEN), "the token reached the log");
}

#[tokio::test]
async fn metrics_are_open_without_a_control_token() {
    let app = spawn_app().await;
    app.call("server.time", json!({})).await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.text.contains(r#"crmchat_rest_requests_total{method="server.time",outcome="ok"} 1"#), "{}", resp.text);
}
