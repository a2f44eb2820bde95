//! `/_crmchat/requests`: the request journal (see `crate::journal`). `GET` with the filters `method`,
//! `status`, `error`, `user_id`, `since_id` and `limit`; `DELETE` clears it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::json;

use super::{ControlError, Json};
use crate::journal::Filter;
use crate::server_state::AppState;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/requests", get(list).delete(clear))
}

async fn list(
    State(app): State<Arc<AppState>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json, ControlError> {
    Ok(Json(app.journal.query(&filter(&query)?)))
}

async fn clear(State(app): State<Arc<AppState>>) -> Json {
    app.journal.clear();
    Json(json!({"ok": true}))
}

/// The filters of a query string; an unknown name or a value of the wrong type is a 400 (a typo must not
/// silently widen the answer). Empty values count as absent.
fn filter(query: &[(String, String)]) -> Result<Filter, ControlError> {
    fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ControlError> {
        value.trim().parse().map_err(|_| {
            ControlError::bad_request("invalid_filter", format!("{name}={value:?}: a non-negative integer is expected"))
        })
    }
    let mut filter = Filter::default();
    for (name, value) in query.iter().filter(|(_, v)| !v.is_empty()) {
        match name.as_str() {
            "method" => filter.method = Some(value.trim().to_ascii_lowercase()),
            "status" => filter.status = Some(number(name, value)?),
            "error" => filter.error = Some(value.clone()),
            "user_id" => filter.user_id = Some(number(name, value)?),
            "since_id" => filter.since_id = Some(number(name, value)?),
            "limit" => filter.limit = Some(number(name, value)?),
            _ => {
                return Err(ControlError::bad_request(
                    "invalid_filter",
                    format!("unknown filter {name:?} (filters: method, status, error, user_id, since_id, limit)"),
                ));
            }
        }
    }
    Ok(filter)
}
