//! What the delivery log looks like to people: the events of the outbox with their deliveries and attempts,
//! as `GET /_crmchat/events` and `crmchat events list --json` show them (JSON), and as `crmchat events list`
//! prints them (a table). Reading them is the store's ([`crate::store::Store::event_log`]).

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::journal::rfc3339_ms;
use crate::store::{LoggedAttempt, LoggedDelivery, LoggedEvent};

/// Events listed when no limit is asked for.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most events one listing shows.
pub const MAX_LIMIT: i64 = 1000;

/// `{"id", "event", "created", "data", "deliveries": [{"id", "handler", "state", "attempts": [...]}]}`; `data`
/// is the event's `data` as delivered. The application token a delivery carries is never shown.
pub fn event_json(event: &LoggedEvent) -> Value {
    json!({
        "id": event.id,
        "event": event.event,
        "created": rfc3339_ms(event.created_ms),
        "data": data(event),
        "deliveries": event.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
    })
}

/// The event's `data`, parsed as the delivery worker parses it.
fn data(event: &LoggedEvent) -> Value {
    serde_json::from_str(&event.payload).unwrap_or(Value::Null)
}

fn delivery_json(delivery: &LoggedDelivery) -> Value {
    json!({
        "id": delivery.id,
        "handler": delivery.handler,
        "state": delivery.state,
        "attempts": delivery.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
    })
}

fn attempt_json(attempt: &LoggedAttempt) -> Value {
    json!({
        "at": rfc3339_ms(attempt.at_ms),
        "status": attempt.status,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
    })
}

/// One line per delivery (an event without deliveries gets one line too), newest event first: the event,
/// when it was produced, the delivery's state, its attempts' outcomes (HTTP status or error, oldest first) and
/// the handler.
pub fn table(events: &[LoggedEvent]) -> String {
    let mut out =
        format!("{:>8}  {:<22}  {:<24}  {:<9}  {:<24}  handler\n", "id", "event", "created", "state", "attempts");
    for event in events {
        let created = rfc3339_ms(event.created_ms);
        if event.deliveries.is_empty() {
            let _ = writeln!(out, "{:>8}  {:<22}  {created:<24}  {:<9}  {:<24}  -", event.id, event.event, "-", "-");
        }
        for delivery in &event.deliveries {
            let attempts = match delivery.attempts.as_slice() {
                [] => "-".to_string(),
                attempts => attempts.iter().map(outcome).collect::<Vec<_>>().join(","),
            };
            let _ = writeln!(
                out,
                "{:>8}  {:<22}  {created:<24}  {:<9}  {attempts:<24}  {}",
                event.id, event.event, delivery.state, delivery.handler
            );
        }
    }
    out
}

/// An attempt in a few characters: its HTTP status, or `error` when the handler did not answer.
fn outcome(attempt: &LoggedAttempt) -> String {
    match attempt.status {
        Some(status) => status.to_string(),
        None => "error".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged() -> LoggedEvent {
        LoggedEvent {
            id: 7,
            event: "ONAPPTEST".into(),
            payload: r#"{"QUERY":{"a":"1"}}"#.into(),
            created_ms: 1_700_000_000_123,
            deliveries: vec![LoggedDelivery {
                id: 3,
                handler: "http://127.0.0.1:9/h".into(),
                state: "delivered".into(),
                attempts: vec![
                    LoggedAttempt {
                        attempt: 1,
                        at_ms: 1_700_000_000_200,
                        status: None,
                        error: Some("timeout".into()),
                        duration_ms: 10,
                    },
                    LoggedAttempt {
                        attempt: 2,
                        at_ms: 1_700_000_001_300,
                        status: Some(200),
                        error: None,
                        duration_ms: 4,
                    },
                ],
            }],
        }
    }

    #[test]
    fn an_event_is_shown_in_the_documented_shape() {
        let shown = event_json(&logged());
        assert_eq!(
            shown,
            json!({
                "id": 7,
                "event": "ONAPPTEST",
                "created": "2023-11-14T22:13:20.123Z",
                "data": {"QUERY": {"a": "1"}},
                "deliveries": [{
                    "id": 3,
                    "handler": "http://127.0.0.1:9/h",
                    "state": "delivered",
                    "attempts": [
                        {"at": "2023-11-14T22:13:20.200Z", "status": null, "error": "timeout", "duration_ms": 10},
                        {"at": "2023-11-14T22:13:21.300Z", "status": 200, "error": null, "duration_ms": 4},
                    ],
                }],
            })
        );
    }

    #[test]
    fn the_table_has_a_line_per_delivery() {
        let mut bare = logged();
        bare.id = 8;
        bare.deliveries.clear();
        let text = table(&[bare, logged()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].trim_start().starts_with("id"), "{text}");
        assert!(lines[1].trim_start().starts_with("8  ONAPPTEST"), "{text}");
        assert!(lines[2].contains("delivered") && lines[2].contains("error,200"), "{text}");
        assert!(lines[2].ends_with("http://127.0.0.1:9/h"), "{text}");
    }
}
