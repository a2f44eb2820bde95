//! The Events page: the events the portal produced for its handlers, each with its deliveries and their
//! attempts, events with a pending delivery first, and **Redeliver** per event — what `/_crmchat/events` lists
//! and `…/redeliver` does. The list is live: `…/events/live` sends it again, rendered, whenever it changed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::flash_box;
use super::session::Flash;
use super::{BASE, Login, Nav, layout};
use crate::journal::rfc3339_ms;
use crate::server_state::AppState;
use crate::store::{DeliveryState, EventLogFilter, LoggedEvent};

/// Events shown: the newest of the filter.
const SHOWN: i64 = 50;
/// How often a live list looks for changes.
const LIVE_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    status: Option<String>,
}

impl EventsQuery {
    fn state(&self) -> Option<DeliveryState> {
        self.status.as_deref().and_then(DeliveryState::parse)
    }

    fn query_string(&self) -> String {
        self.state().map(|s| format!("?status={}", s.as_str())).unwrap_or_default()
    }
}

/// The events to show: with a pending delivery first, each part newest first.
async fn shown(app: &AppState, state: Option<DeliveryState>) -> Result<Vec<LoggedEvent>, String> {
    let filter = EventLogFilter { state, event: None, limit: SHOWN };
    let mut events = app.store.event_log(&filter).await.map_err(|e| e.to_string())?;
    // A stable sort keeps the store's newest-first order within each part.
    events.sort_by_key(|e| !e.deliveries.iter().any(|d| d.state == DeliveryState::Pending.as_str()));
    Ok(events)
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Query(query): Query<EventsQuery>,
) -> Response {
    let flash = login.take_flash();
    let events = shown(&app, query.state()).await;
    let selected = query.state().map(DeliveryState::as_str).unwrap_or("");
    let content = html! {
        h1 { "Events" }
        (flash_box(flash))
        p class="hint" { "What crmchat posted, or is about to post, to the handlers bound with event.bind and to outgoing webhooks: each delivery with every attempt. A failed delivery is tried again with a growing backoff; Redeliver queues every delivery of an event once more." }
        form method="get" action={(BASE) "/events"} class="filters" aria-label="Filter events" {
            label for="status" { "Deliveries" }
            select id="status" name="status" data-autosubmit {
                @for (value, name) in [("", "All"), ("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Failed")] {
                    option value=(value) selected[value == selected] { (name) }
                }
            }
            noscript { button type="submit" { "Filter" } }
        }
        p id="live-state" class="hint" aria-live="polite" {}
        @match &events {
            Ok(events) => div id="event-list" data-live={(BASE) "/events/live" (query.query_string())} {
                (list(&login, events))
            },
            Err(e) => p class="error" { "The events could not be read: " (e) },
        }
    };
    layout("Events", Nav::Events, &login, content).into_response()
}

fn list(login: &Login, events: &[LoggedEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p id="no-events" { "No event yet. Bind a handler (event.bind) or add an outgoing webhook, then change something." }
        }
        @for event in events {
            (event_card(login, event))
        }
    }
}

fn event_card(login: &Login, event: &LoggedEvent) -> Markup {
    let heading = format!("event-{}-h", event.id);
    let data = serde_json::from_str::<serde_json::Value>(&event.payload)
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
        .unwrap_or_else(|_| event.payload.clone());
    html! {
        article class="event" aria-labelledby=(heading) data-id=(event.id) {
            h2 id=(heading) { "Event " (event.id) ": " (event.event) }
            p { "Produced " time { (rfc3339_ms(event.created_ms)) } }
            details {
                summary { "Data" }
                pre { (data) }
            }
            @if event.deliveries.is_empty() {
                p { "No delivery: nothing was bound to it any more when it was sent, or its deliveries were pruned." }
            } @else {
                div class="table-wrap" {
                    table {
                        caption class="visually-hidden" { "Deliveries of event " (event.id) }
                        thead { tr {
                            th scope="col" { "Delivery" } th scope="col" { "Handler" } th scope="col" { "State" }
                            th scope="col" { "Attempts" }
                        } }
                        tbody {
                            @for d in &event.deliveries {
                                tr data-state=(d.state) {
                                    td { (d.id) }
                                    td { code { (d.handler) } }
                                    td { (d.state) }
                                    td {
                                        @if d.attempts.is_empty() { "none yet" }
                                        ol class="attempts" {
                                            @for a in &d.attempts {
                                                li {
                                                    (rfc3339_ms(a.at_ms)) ": "
                                                    @match (a.status, &a.error) {
                                                        (Some(status), _) => { "HTTP " (status) }
                                                        (None, Some(error)) => { (error) }
                                                        (None, None) => { "no answer" }
                                                    }
                                                    " in " (a.duration_ms) " ms"
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action={(BASE) "/events/" (event.id) "/redeliver"} class="inline"
                aria-label={"Redeliver event " (event.id)} {
                (login.csrf_field())
                button type="submit" { "Redeliver" }
            }
        }
    }
}

/// `…/events/live`: the list, rendered, as a `list` event at once and again whenever it changed. A stream ends
/// after half the read timeout and at shutdown; the browser reconnects by itself.
pub async fn live(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Query(query): Query<EventsQuery>,
) -> Response {
    struct Watch {
        app: Arc<AppState>,
        login: Login,
        state: Option<DeliveryState>,
        last: Option<String>,
        until: tokio::time::Instant,
        stopping: tokio::sync::watch::Receiver<bool>,
    }
    let watch = Watch {
        until: tokio::time::Instant::now() + (app.settings.read_timeout / 2).max(Duration::from_secs(1)),
        stopping: app.stopping.subscribe(),
        app,
        login,
        state: query.state(),
        last: None,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        loop {
            if *w.stopping.borrow() || tokio::time::Instant::now() >= w.until {
                return None;
            }
            if let Ok(events) = shown(&w.app, w.state).await {
                let html = list(&w.login, &events).into_string();
                // The first look is sent too: the list may have changed between the page and the stream.
                if w.last.as_deref() != Some(html.as_str()) {
                    w.last = Some(html.clone());
                    let event = Event::default().event("list").retry(Duration::from_millis(500)).data(html);
                    return Some((Ok::<Event, Infallible>(event), w));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LIVE_POLL) => {}
                _ = w.stopping.wait_for(|stopping| *stopping) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

pub async fn redeliver(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Path(id): Path<String>,
) -> Response {
    let queued = match id.parse::<i64>() {
        Ok(event_id) => app.store.redeliver(event_id, app.clock.unix_ms()).await,
        Err(_) => Ok(None),
    };
    login.set_flash(match queued {
        Ok(Some(n)) => Flash {
            title: format!("Event {id} queued again"),
            ok: true,
            detail: format!("{n} deliver{} will be sent once more.", if n == 1 { "y" } else { "ies" }),
        },
        Ok(None) => Flash { title: format!("No event {id}"), ok: false, detail: "It was pruned or reset.".into() },
        Err(e) => Flash { title: format!("Event {id} could not be queued"), ok: false, detail: e.to_string() },
    });
    Redirect::to(&format!("{BASE}/events")).into_response()
}
