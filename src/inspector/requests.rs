//! The Requests page: the request journal (`crate::journal`), newest first, a page at a time, filtered by
//! method, status and error code; each entry opens to its parameters (already redacted) and its answer. The
//! newest page is live: new calls arrive by server-sent events (`…/requests/live`), rendered here as the same
//! rows, and the page's script puts them on top.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{BASE, Login, Nav, layout};
use crate::error::Code;
use crate::journal::{Cursor, Filter};
use crate::server_state::AppState;

/// Entries per page; also the most a live page keeps.
pub const PER_PAGE: usize = 50;
/// New entries are sent at most this often, so a burst of calls costs a watcher one look, not one per call.
const LIVE_COALESCE: Duration = Duration::from_millis(200);

/// The page's query: the filters (empty = any) and where the page starts.
#[derive(Deserialize, Default)]
pub struct RequestsQuery {
    #[serde(default)]
    method: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: String,
    before: Option<String>,
    after: Option<String>,
    since_id: Option<String>,
}

/// The journal filter the query asks for, and what could not be understood.
fn filter_of(query: &RequestsQuery) -> (Filter, Option<String>) {
    let mut filter = Filter::default();
    let mut problem = None;
    let method = query.method.trim();
    if !method.is_empty() {
        filter.method = Some(method.to_ascii_lowercase());
    }
    let status = query.status.trim();
    if !status.is_empty() {
        match status.parse::<u16>() {
            Ok(status) => filter.status = Some(status),
            Err(_) => problem = Some(format!("Status {status:?} is not an HTTP status: showing every status.")),
        }
    }
    let error = query.error.trim();
    if !error.is_empty() {
        filter.error = Some(error.to_string());
    }
    (filter, problem)
}

/// The filters as a query string (`method=…&status=…&error=…`), for links that keep them.
fn filter_query(query: &RequestsQuery) -> String {
    let encode =
        |v: &str| percent_encoding::utf8_percent_encode(v.trim(), percent_encoding::NON_ALPHANUMERIC).to_string();
    format!("method={}&status={}&error={}", encode(&query.method), encode(&query.status), encode(&query.error))
}

fn cursor_of(query: &RequestsQuery) -> Cursor {
    let id = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u64>().ok());
    match (id(&query.before), id(&query.after)) {
        (Some(before), _) => Cursor::Before(before),
        (None, Some(after)) => Cursor::After(after),
        (None, None) => Cursor::Newest,
    }
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Query(query): Query<RequestsQuery>,
) -> Response {
    let (filter, problem) = filter_of(&query);
    // The newest id before the page is read: the live stream continues from it, so no call falls between.
    let seen = app.journal.last_id();
    let window = app.journal.window(&filter, cursor_of(&query), PER_PAGE);
    let live = window.newer.is_none() && app.journal.is_enabled();
    let filters = filter_query(&query);
    let filtered = filter != Filter::default();
    let content = html! {
        h1 { "Requests" }
        @if !app.journal.is_enabled() {
            p class="flash error" role="alert" { "The journal is off (" code { "--journal-size 0" } "): no call is recorded." }
        }
        form method="get" action={(BASE) "/requests"} class="search" role="search" aria-label="Filter requests" {
            span class="field" {
                label for="req-method" { "Method" }
                input id="req-method" type="search" name="method" value=(query.method.trim()) list="known-methods"
                    placeholder="server.time" autocomplete="off";
            }
            datalist id="known-methods" {
                @for method in crate::rest::registry::METHODS { option value=(method.name) {} }
            }
            span class="field" {
                label for="req-status" { "Status" }
                input id="req-status" type="text" name="status" value=(query.status.trim()) inputmode="numeric"
                    placeholder="400" size="5" autocomplete="off";
            }
            span class="field" {
                label for="req-error" { "Error code" }
                input id="req-error" type="search" name="error" value=(query.error.trim()) list="known-errors"
                    placeholder=(Code::UserNotFound.as_str()) autocomplete="off";
            }
            datalist id="known-errors" {
                @for code in Code::ALL { option value=(code.as_str()) {} }
            }
            button type="submit" { "Filter" }
            @if filtered { a href={(BASE) "/requests"} { "Clear filters" } }
        }
        @if let Some(problem) = problem { p class="flash error" role="alert" { (problem) } }
        p class="hint" {
            span id="journal-total" { (window.total) } @if filtered { " matching" } " calls, newest first (the journal keeps the last "
            (app.journal.capacity()) "). "
            @if live {
                span id="live-state" role="status" { "New calls appear here as they arrive." }
            }
        }
        @if window.entries.is_empty() {
            p id="journal-empty" { "No call yet." }
        }
        @let stream = format!("{BASE}/requests/live?{filters}&since_id={seen}");
        ol id="journal" class="journal" aria-label="Calls, newest first"
            data-stream=[live.then_some(&stream)] data-keep=(PER_PAGE) {
            @for entry in &window.entries { (entry_row(entry)) }
        }
        nav class="pager" aria-label="Request pages" {
            @if window.newer.is_some() {
                a href={(BASE) "/requests?" (filters)} { "Newest" }
                a href={(BASE) "/requests?" (filters) "&after=" (window.newer.unwrap_or_default())} rel="prev" { "Newer" }
            }
            // Kept (hidden) on a live page without older entries: the script shows it once rows roll off.
            a href={(BASE) "/requests?" (filters) "&before=" (window.older.unwrap_or_default())} rel="next"
                id="older-link" data-base={(BASE) "/requests?" (filters) "&before="} hidden[window.older.is_none()] { "Older" }
        }
    };
    layout("Requests", Nav::Requests, &login, content).into_response()
}

/// One journal entry: a line that opens (a `details` element, so it needs no script and works by keyboard)
/// to its parameters and its answer.
pub fn entry_row(entry: &Value) -> Markup {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or("");
    let id = entry.get("id").and_then(Value::as_u64).unwrap_or(0);
    let at = text("at");
    let status = entry.get("status").and_then(Value::as_u64);
    let error = entry.get("error").and_then(Value::as_str);
    let auth = entry.get("auth").cloned().unwrap_or_default();
    let caller = match auth.get("type").and_then(Value::as_str) {
        Some("webhook") => format!(
            "webhook {} · user {}",
            auth.get("webhook_id").map(json_text).unwrap_or_default(),
            auth.get("user_id").map(json_text).unwrap_or_default()
        ),
        Some("oauth") => format!(
            "app {} · user {}",
            auth.get("client_id").and_then(Value::as_str).unwrap_or("?"),
            auth.get("user_id").map(json_text).unwrap_or_default()
        ),
        _ => match auth.get("user_id").and_then(Value::as_i64) {
            Some(user) => format!("refused · user {user}"),
            None => "no credentials".into(),
        },
    };
    let ok = status == Some(200);
    let duration = entry.get("duration_ms").and_then(Value::as_f64).unwrap_or(0.0);
    // `12:34:56.789` of `2026-12-03T12:34:56.789Z`; the whole time is in the attribute and the detail.
    let clock = at.get(11..23).unwrap_or(at);
    html! {
        li class={"req " (if ok { "ok" } else { "failed" })} data-id=(id) {
            details {
                summary {
                    span class="req-id" { "#" (id) }
                    " " time datetime=(at) { (clock) }
                    " " span class="req-method" {
                        code { (text("method")) }
                        @if let Some(batch) = entry.get("batch_id").and_then(Value::as_u64) {
                            " " span class="badge muted" { "in batch #" (batch) }
                        }
                    }
                    " " span class="req-status" {
                        @match status { Some(s) => { (s) }, None => { "closed" } }
                    }
                    " " span class="req-error" { (error.unwrap_or("")) }
                    " " span class="req-caller" { (caller) }
                    " " span class="req-duration" { (format!("{duration:.1}")) " ms" }
                }
                div class="req-detail" {
                    dl {
                        dt { "Time" } dd { (at) }
                        dt { "Transport" } dd { (text("http_method")) " · " (text("transport")) }
                        dt { "Caller" } dd { (caller) }
                        @if let Some(batch) = entry.get("batch_id").and_then(Value::as_u64) {
                            dt { "Batch" } dd { "a command of batch #" (batch) }
                        }
                        @if let Some(fault) = entry.get("fault").and_then(Value::as_u64) {
                            dt { "Fault rule" } dd { "answered by fault rule " (fault) ", the method did not run" }
                        }
                    }
                    h3 { "Parameters" }
                    pre class="json" { (pretty(entry.get("params"))) }
                    h3 { "Answer" }
                    p {
                        @match status {
                            Some(s) => { "HTTP " (s) }
                            None => { "No answer: the connection was closed." }
                        }
                        @if let Some(error) = error { ", error " code { (error) } }
                    }
                    @if let Some(result) = entry.get("result").filter(|r| !r.is_null()) {
                        pre class="json" { (pretty(Some(result))) }
                    }
                }
            }
        }
    }
}

fn json_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

fn pretty(value: Option<&Value>) -> String {
    value.map(|v| serde_json::to_string_pretty(v).unwrap_or_default()).unwrap_or_else(|| "null".into())
}

/// What a live stream carries on from.
struct Watch {
    app: Arc<AppState>,
    filter: Filter,
    since: u64,
    newest: tokio::sync::watch::Receiver<u64>,
    stopping: tokio::sync::watch::Receiver<bool>,
    until: tokio::time::Instant,
    greeted: bool,
}

/// `…/requests/live`: the entries after `since_id` (or the `Last-Event-ID` the browser sends when it
/// reconnects) that match the filters, as `request` events whose data is the row; each batch is followed by a
/// `total` event. A stream ends after half the read timeout (the connection's reads would time out) and at
/// shutdown; the browser reconnects by itself and continues after the last row it got.
pub async fn live(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<RequestsQuery>,
) -> Response {
    let (filter, _) = filter_of(&query);
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let since = resumed
        .or_else(|| query.since_id.as_deref().and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| app.journal.last_id());
    let watch = Watch {
        newest: app.journal.subscribe(),
        stopping: app.stopping.subscribe(),
        until: tokio::time::Instant::now() + (app.settings.read_timeout / 2).max(Duration::from_secs(1)),
        app,
        filter,
        since,
        greeted: false,
    };
    let stream = futures::stream::unfold(watch, next_events)
        .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok::<Event, Infallible>)));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn next_events(mut watch: Watch) -> Option<(Vec<Event>, Watch)> {
    if !watch.greeted {
        watch.greeted = true;
        // Reconnect soon after a stream ends (the browser's default wait is a few seconds).
        return Some((vec![Event::default().retry(Duration::from_millis(500)).comment("live")], watch));
    }
    loop {
        if *watch.stopping.borrow() {
            return None;
        }
        let (entries, newest) = watch.app.journal.after(&watch.filter, watch.since, PER_PAGE);
        watch.since = newest;
        if !entries.is_empty() {
            let mut events: Vec<Event> = entries
                .iter()
                .map(|entry| {
                    let id = entry.get("id").and_then(Value::as_u64).unwrap_or(0);
                    Event::default().event("request").id(id.to_string()).data(entry_row(entry).into_string())
                })
                .collect();
            let total = watch.app.journal.count(&watch.filter);
            events.push(Event::default().event("total").data(total.to_string()));
            return Some((events, watch));
        }
        tokio::select! {
            changed = watch.newest.changed() => if changed.is_err() { return None },
            _ = watch.stopping.wait_for(|stopping| *stopping) => return None,
            _ = tokio::time::sleep_until(watch.until) => return None,
        }
        tokio::time::sleep(LIVE_COALESCE).await;
    }
}
