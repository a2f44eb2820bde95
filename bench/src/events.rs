//! The bound workload's pieces: a local HTTP sink that receives the server's event deliveries, the OAuth
//! authorization-code grant and `event.bind`/`event.unbind` through the real REST methods, the pending deliveries
//! in the database, and the delivery figures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::load::{Acks, LoadgenSched, apply_sched};
use crate::portal::{APP_CLIENT_ID, APP_SECRET, Membership, WEBHOOK_USER};

pub const EVENT: &str = "ONCRMCHATUSERDELETE";

/// An axum server on a thread of its own (one single-threaded runtime, under the load generator's scheduling
/// policy) that answers every `POST /events` with 200 at once and notes when each removal's event arrived.
pub struct Sink {
    pub url: String,
    state: Arc<SinkState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct SinkState {
    epoch: Instant,
    /// List position of each (chat, user) removal.
    positions: HashMap<(u32, u32), usize>,
    /// When the first delivery of each removal arrived: nanoseconds after `epoch`, plus 1 (0: not yet).
    received_ns: Vec<AtomicU64>,
    posts: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    /// Posts whose chat and user are not in the list (or that carry neither).
    unmatched: AtomicU64,
}

impl Sink {
    pub fn start(items: &[Membership], epoch: Instant, sched: LoadgenSched) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the event sink")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState {
            epoch,
            positions: items.iter().enumerate().map(|(i, m)| ((m.chat, m.user), i)).collect(),
            received_ns: (0..items.len()).map(|_| AtomicU64::new(0)).collect(),
            posts: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::Builder::new().name("event-sink".into()).spawn(move || {
            apply_sched(sched);
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return eprintln!("event sink: {e}"),
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return eprintln!("event sink: {e}"),
                };
                let app = axum::Router::new().route("/events", axum::routing::post(receive)).with_state(shared);
                tokio::select! {
                    served = axum::serve(listener, app) => if let Err(e) = served { eprintln!("event sink: {e}") },
                    _ = stopped => {}
                }
            });
        })?;
        Ok(Self { url: format!("http://{addr}/events"), state, stop: Some(stop), thread: Some(thread) })
    }

    /// Removals whose event arrived at least once.
    pub fn unique(&self) -> u64 {
        self.state.unique.load(Ordering::Relaxed)
    }

    /// The delivery figures: `window` is the removal workload's measured window.
    pub fn figures(&self, acks: &Acks, window: (Instant, Instant)) -> Deliveries {
        let s = &self.state;
        let since = |t: Instant| t.saturating_duration_since(s.epoch).as_nanos() as u64;
        let (from, to) = (since(window.0), since(window.1));
        let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        let (mut in_window, mut before_ack) = (0u64, 0u64);
        for (received, acked) in s.received_ns.iter().zip(&acks.ns) {
            let (r, a) = (received.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
            if r == 0 {
                continue;
            }
            if (from..=to).contains(&(r - 1)) {
                in_window += 1;
            }
            if a > 0 {
                if r < a {
                    before_ack += 1;
                }
                lag.saturating_record((r.saturating_sub(a) / 1000).max(1));
            }
        }
        let window_s = window.1.saturating_duration_since(window.0).as_secs_f64();
        Deliveries {
            posts: s.posts.load(Ordering::Relaxed),
            unique: s.unique.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            unmatched: s.unmatched.load(Ordering::Relaxed),
            in_window,
            rps: if window_s > 0.0 { in_window as f64 / window_s } else { 0.0 },
            before_ack,
            lag,
        }
    }

    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn receive(axum::extract::State(state): axum::extract::State<Arc<SinkState>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    state.posts.fetch_add(1, Ordering::Relaxed);
    let (mut chat, mut user) = (None, None);
    for pair in body.split(|&b| b == b'&') {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let (key, value) = (kv.next().unwrap_or_default(), kv.next().unwrap_or_default());
        let number = || std::str::from_utf8(value).ok()?.parse::<u32>().ok();
        match key {
            b"data%5BCHAT_ID%5D" | b"data[CHAT_ID]" => chat = number(),
            b"data%5BUSER_ID%5D" | b"data[USER_ID]" => user = number(),
            _ => {}
        }
    }
    let position = chat.zip(user).and_then(|key| state.positions.get(&key));
    match position {
        Some(&i) => {
            let ns = now.saturating_duration_since(state.epoch).as_nanos() as u64 + 1;
            if state.received_ns[i].compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                state.unique.fetch_add(1, Ordering::Relaxed);
            } else {
                state.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            state.unmatched.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

/// What the sink received.
pub struct Deliveries {
    /// Every POST, duplicates included.
    pub posts: u64,
    /// Removals whose event arrived.
    pub unique: u64,
    pub duplicates: u64,
    pub unmatched: u64,
    /// First deliveries that arrived during the removal workload's measured window, and per second of it.
    pub in_window: u64,
    pub rps: f64,
    /// Deliveries that arrived before the bench had read the removal's answer (their lag counts as 0).
    pub before_ack: u64,
    /// Receive time less the time the removal's 200 answer was read, in µs.
    pub lag: Histogram<u64>,
}

impl Deliveries {
    pub fn lag_ms(&self, q: f64) -> f64 {
        self.lag.value_at_quantile(q) as f64 / 1000.0
    }
}

/// An access token of the bench's application for user 1: a one-time code from `crmchat app code` (the local
/// stand-in for the consent page) exchanged at `/oauth/token/`.
pub async fn access_token(crmchat: &Path, data_dir: &Path, addr: SocketAddr) -> anyhow::Result<String> {
    let out = Command::new(crmchat)
        .args(["app", "code", "--client-id", APP_CLIENT_ID, "--user", &WEBHOOK_USER.to_string(), "--data-dir"])
        .arg(data_dir)
        .output()
        .context("running crmchat app code")?;
    anyhow::ensure!(out.status.success(), "crmchat app code failed: {}", String::from_utf8_lossy(&out.stderr));
    let code = String::from_utf8(out.stdout)?.trim().to_string();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", APP_CLIENT_ID),
        ("client_secret", APP_SECRET),
        ("code", code.as_str()),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", percent_encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    let (status, body) = call(addr, "/oauth/token/", "application/x-www-form-urlencoded", None, form).await?;
    let token = body.get("access_token").and_then(Value::as_str);
    match (status, token) {
        (StatusCode::OK, Some(token)) => Ok(token.to_string()),
        _ => anyhow::bail!("/oauth/token/ answered HTTP {status}: {body}"),
    }
}

/// `event.bind` (`unbind: false`) or `event.unbind` of [`EVENT`] to `handler`.
pub async fn bind(addr: SocketAddr, token: &str, handler: &str, unbind: bool) -> anyhow::Result<()> {
    let method = if unbind { "event.unbind" } else { "event.bind" };
    let params = json!({"event": EVENT, "handler": handler}).to_string();
    let (status, body) = call(addr, &format!("/rest/{method}"), "application/json", Some(token), params).await?;
    let result = body.get("result");
    let ok = match unbind {
        false => result == Some(&Value::Bool(true)),
        true => result.and_then(|r| r.get("count")).and_then(Value::as_i64) == Some(1),
    };
    anyhow::ensure!(status == StatusCode::OK && ok, "{method} answered HTTP {status}: {body}");
    Ok(())
}

/// One POST on a connection of its own; the answer's status and JSON body.
async fn call(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    bearer: Option<&str>,
    body: String,
) -> anyhow::Result<(StatusCode, Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, content_type);
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender.send_request(request.body(Full::new(Bytes::from(body)))?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Ok((status, body))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The deliveries still pending at `at`, read from the database (read-only) right then.
pub struct Pending {
    pub count: i64,
    /// How long the oldest of them had been waiting, by its event's `created_ms`, in seconds (0 if none).
    pub oldest_s: f64,
}

pub async fn pending_at(db_url: &str, at: tokio::time::Instant) -> anyhow::Result<Pending> {
    use sqlx::Connection;
    // Connected in advance, so that the query runs as the window ends.
    let url = format!("{db_url}?mode=ro");
    let mut conn = sqlx::SqliteConnection::connect(&url).await.with_context(|| format!("opening {url}"))?;
    tokio::time::sleep_until(at).await;
    let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(o.created_ms) FROM deliveries d JOIN outbox o ON o.id = d.event_id \
         WHERE d.state = 'pending'",
    )
    .fetch_one(&mut conn)
    .await?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    conn.close().await?;
    let oldest_s = oldest.map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0);
    Ok(Pending { count, oldest_s })
}

/// Wait until every acknowledged removal's event arrived, at most `limit`; how long it took.
pub async fn drain(sink: &Sink, acknowledged: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while sink.unique() < acknowledged && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}
