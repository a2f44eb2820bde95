//! The portal clock: everything that reads wall time reads it, durations do not (in process: the real router
//! over a temporary SQLite store with the demo portal; the clock moved through `AppState::clock`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use crmchat::app::router;
use crmchat::clock::SystemClock;
use crmchat::config::Settings;
use crmchat::server_state::AppState;
use crmchat::store::DynStore;
use serde_json::{Value, json};

use crate::helpers::{DEMO_HOOK, demo_code_grant, demo_store, send_in_process};

struct InProcess {
    app: axum::Router,
    state: Arc<AppState>,
    store: DynStore,
    _dir: tempfile::TempDir,
}

async fn in_process() -> InProcess {
    let (dir, store) = demo_store("crmchat-clock-").await;
    let state = Arc::new(AppState::new(store.clone(), Settings::default(), Arc::new(SystemClock)));
    InProcess { app: router(state.clone()), state, store, _dir: dir }
}

impl InProcess {
    async fn send(&self, request: Request<Body>) -> (u16, Value) {
        send_in_process(&self.app, request).await
    }

    async fn call(&self, path: &str, params: Value) -> (u16, Value) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(params.to_string()))
            .unwrap();
        self.send(request).await
    }
}

fn real_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test]
async fn clock_moves_the_time_block_and_server_time_but_not_durations() {
    let s = in_process().await;
    let day = 86_400.0;
    s.state.clock.advance(Duration::from_secs(2 * 86_400));
    let (status, body) = s.call(&format!("{DEMO_HOOK}server.time"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let time = &body["time"];
    let start = time["start"].as_f64().unwrap();
    assert!((start - (real_now() + 2.0 * day)).abs() < 5.0, "time.start follows the clock: {time}");
    assert!(time["duration"].as_f64().unwrap() < 1.0, "durations do not see the offset: {time}");
    assert!(time["processing"].as_f64().unwrap() < 1.0, "{time}");
    let date = |unix: f64| {
        chrono::DateTime::from_timestamp(unix as i64, 0).unwrap().format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    };
    assert_eq!(time["date_start"], date(start), "{time}");
    let server_time = body["result"].as_str().unwrap();
    assert_eq!(server_time, date(start), "server.time reads the portal clock: {body}");
    assert!(time["operating_reset_at"].as_i64().unwrap() >= start as i64 + 599, "{time}");
}

#[tokio::test]
async fn clock_expires_tokens_and_drains_the_bucket() {
    let s = in_process().await;
    // A token issued through the real token endpoint lives one hour on the portal clock.
    let code = "clocktestauthcode0123456789";
    let expires_ms = s.state.clock.unix_ms() + 30_000;
    let (status, token) = s.send(demo_code_grant(&s.store, code, expires_ms).await).await;
    assert_eq!(status, 200, "{token}");
    let expires = token["expires"].as_i64().unwrap();
    assert!((expires as f64 - (real_now() + 3600.0)).abs() < 5.0, "{token}");
    let access = token["access_token"].as_str().unwrap().to_string();
    let profile = || {
        let request = Request::post("/rest/profile")
            .header("authorization", format!("Bearer {access}"))
            .body(Body::empty())
            .unwrap();
        s.send(request)
    };
    assert_eq!(profile().await.0, 200);
    s.state.clock.advance(Duration::from_secs(3_599));
    assert_eq!(profile().await.0, 200, "still valid a second before its expiry");
    s.state.clock.advance(Duration::from_secs(2));
    let (status, body) = profile().await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "expired_token", "error_description": "The access token provided has expired"}))
    );

    // The leaky bucket (50, draining 2/s on `standard`) drains on the portal clock: a burst of calls is
    // refused until the clock moves, whatever the real time does. The bucket may have drained a little in
    // real time, so at most a couple more than 50 get through.
    let mut admitted = 0;
    for _ in 0..60 {
        if s.call(&format!("{DEMO_HOOK}server.time"), json!({})).await.0 == 200 {
            admitted += 1;
        }
    }
    assert!((50..53).contains(&admitted), "{admitted} admitted");
    assert_eq!(s.call(&format!("{DEMO_HOOK}server.time"), json!({})).await.0, 503);
    s.state.clock.advance(Duration::from_secs(25));
    for i in 0..45 {
        let (status, body) = s.call(&format!("{DEMO_HOOK}server.time"), json!({})).await;
        assert_eq!(status, 200, "call {i} after the clock moved 25 s: {body}");
    }
}
