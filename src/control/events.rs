//! `/_crmchat/events`: the events the portal produced for its handlers, with every delivery and attempt
//! (`GET`, filters `status`, `event` and `limit`, newest first), and `POST /_crmchat/events/{id}/redeliver`,
//! which queues every delivery of an event again. The shape is `crate::events::log`'s; reading and queueing
//! are the store's.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ControlError, Json};
use crate::events::log::{DEFAULT_LIMIT, MAX_LIMIT, event_json};
use crate::server_state::AppState;
use crate::store::{DeliveryState, EventLogFilter};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/events", get(list)).route("/events/{id}/redeliver", post(redeliver))
}

async fn list(
    State(app): State<Arc<AppState>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json, ControlError> {
    let filter = filter(&query)?;
    let events = app.store.event_log(&filter).await?;
    Ok(Json(Value::Array(events.iter().map(event_json).collect())))
}

/// Every delivery of the event pending again, due at once; `{"ok": true, "deliveries": N}`. The running
/// delivery worker (of any instance on the database) sends them on its next look.
async fn redeliver(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json, ControlError> {
    let not_found = || ControlError::new(StatusCode::NOT_FOUND, "event_not_found", format!("no event with id {id:?}"));
    let event_id: i64 = id.trim().parse().map_err(|_| not_found())?;
    let Some(queued) = app.store.redeliver(event_id, app.clock.unix_ms()).await? else {
        return Err(not_found());
    };
    Ok(Json(json!({"ok": true, "deliveries": queued})))
}

/// The filters of a query string. An unknown name or a bad value is a 400 `invalid_filter` (as for the request
/// journal: a typo must not silently widen the answer); empty values count as absent.
fn filter(query: &[(String, String)]) -> Result<EventLogFilter, ControlError> {
    let mut filter = EventLogFilter { state: None, event: None, limit: DEFAULT_LIMIT };
    for (name, value) in query.iter().filter(|(_, v)| !v.trim().is_empty()) {
        let value = value.trim();
        match name.as_str() {
            "status" => {
                filter.state = Some(DeliveryState::parse(value).ok_or_else(|| {
                    ControlError::bad_request(
                        "invalid_filter",
                        format!("status={value:?}: one of pending, delivered, failed is expected"),
                    )
                })?);
            }
            "event" => filter.event = Some(value.to_ascii_uppercase()),
            "limit" => {
                filter.limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    ControlError::bad_request(
                        "invalid_filter",
                        format!("limit={value:?}: an integer from 1 to {MAX_LIMIT} is expected"),
                    )
                })?;
            }
            _ => {
                return Err(ControlError::bad_request(
                    "invalid_filter",
                    format!("unknown filter {name:?} (filters: status, event, limit)"),
                ));
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_are_read_and_bad_ones_refused() {
        let read = filter(&query(&[("status", "failed"), ("event", "onAppTest"), ("limit", "5")])).unwrap();
        assert_eq!(
            read,
            EventLogFilter { state: Some(DeliveryState::Failed), event: Some("ONAPPTEST".into()), limit: 5 }
        );
        assert_eq!(filter(&query(&[("status", "")])).unwrap().limit, DEFAULT_LIMIT);
        for bad in [("status", "done"), ("limit", "0"), ("limit", "1001"), ("limit", "-1"), ("limit", "x"), ("x", "1")]
        {
            let err = filter(&query(&[bad])).unwrap_err();
            assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "invalid_filter"), "{bad:?}");
        }
    }
}
