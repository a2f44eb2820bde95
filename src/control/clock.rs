//! `/_crmchat/clock`: the portal clock (see `crate::clock`). `POST {"advance_s": N}` or `{"set": RFC 3339}`
//! moves it forward (never backwards: 400 `clock_backwards`); `GET` → `{"now", "offset_s"}`; `DELETE` returns
//! to real time.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{ControlError, Json};
use crate::clock::PortalClock;
use crate::server_state::AppState;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/clock", get(show).post(change).delete(reset))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    advance_s: Option<f64>,
    set: Option<String>,
}

fn now(clock: &PortalClock) -> Json {
    let now = chrono::DateTime::from_timestamp_micros(clock.unix_micros()).unwrap_or_default();
    Json(json!({
        "now": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "offset_s": clock.offset_us() as f64 / 1e6,
    }))
}

async fn show(State(app): State<Arc<AppState>>) -> Json {
    now(&app.clock)
}

fn backwards() -> ControlError {
    ControlError::bad_request(
        "clock_backwards",
        "the clock only moves forward (DELETE /_crmchat/clock returns to real time)",
    )
}

async fn change(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Json, ControlError> {
    let change: Change = serde_json::from_slice(&body).map_err(|e| {
        ControlError::bad_request(
            "invalid_clock",
            format!("expected {{\"advance_s\": N}} or {{\"set\": \"RFC 3339\"}}: {e}"),
        )
    })?;
    match (change.advance_s, change.set) {
        (Some(seconds), None) => {
            if seconds < 0.0 {
                return Err(backwards());
            }
            let by = Duration::try_from_secs_f64(seconds).map_err(|_| {
                ControlError::bad_request("invalid_clock", format!("advance_s {seconds} is out of range"))
            })?;
            app.clock.advance(by);
        }
        (None, Some(text)) => {
            let to = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
                ControlError::bad_request("invalid_clock", format!("set {text:?} is not an RFC 3339 time: {e}"))
            })?;
            app.clock.set(to.into()).map_err(|_| backwards())?;
        }
        _ => {
            return Err(ControlError::bad_request(
                "invalid_clock",
                "expected exactly one of {\"advance_s\": N} and {\"set\": \"RFC 3339\"}",
            ));
        }
    }
    Ok(now(&app.clock))
}

async fn reset(State(app): State<Arc<AppState>>) -> Json {
    app.clock.reset();
    now(&app.clock)
}
