//! The pages that show the portal: overview, records, a record, a chat, credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Flash;
use super::{BASE, Login, Nav, error_page, layout};
use crate::domain::rules::{chat_belongs_to_record, last_chat};
use crate::domain::{ChatId, CrmEntityType, User};
use crate::rest::limits::Plan;
use crate::server_state::AppState;
use crate::state::demo::{DEMO_WEBHOOK_CODE, DEMO_WEBHOOK_USER};
use crate::store::{StoreError, WebhookInfo, ms_to_rfc3339};

/// Members shown per page of a chat: a chat of 10,000 members opens as fast as one of 100.
pub const MEMBERS_PER_PAGE: usize = 100;
/// Records per page of the records list.
const RECORDS_PER_PAGE: usize = 50;
/// Messages shown on a chat page (the newest).
const LAST_MESSAGES: i64 = 50;

pub(crate) type PageResult = Result<Response, Response>;

fn store_failed(login: &Login, err: StoreError) -> Response {
    tracing::error!(error = %err, "inspector: the store failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, login, "The database failed", &err.to_string())
}

/// `?page=N`, 1-based, clamped to the pages there are.
fn page_of(requested: Option<&str>, items: usize, per_page: usize) -> (usize, usize) {
    let pages = items.div_ceil(per_page).max(1);
    let page = requested.and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).clamp(1, pages);
    (page, pages)
}

fn pager(label: &str, base: &str, page: usize, pages: usize) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        @if pages > 1 {
            nav class="pager" aria-label=(label) {
                @if page > 1 {
                    a href={(base) (sep) "page=" (page - 1)} rel="prev" { "Previous" }
                }
                span { "Page " (page) " of " (pages) }
                @if page < pages {
                    a href={(base) (sep) "page=" (page + 1)} rel="next" { "Next" }
                }
            }
        }
    }
}

pub(crate) fn flash_box(flash: Option<Flash>) -> Markup {
    html! {
        @if let Some(flash) = flash {
            section class={"flash " (if flash.ok { "ok" } else { "error" })} role="status" aria-label="Answer" {
                h2 { (flash.title) }
                pre { (flash.detail) }
            }
        }
    }
}

fn user_name(user: Option<&User>) -> String {
    match user {
        Some(u) => {
            let name = format!("{} {}", u.name, u.last_name);
            let name = name.trim();
            if name.is_empty() { format!("user {}", u.id) } else { name.to_string() }
        }
        None => "(unknown user)".into(),
    }
}

fn record_link(entity_type: &str, id: i64) -> Markup {
    html! { a href={(BASE) "/records/" (entity_type) "/" (id)} { (entity_type) " " (id) } }
}

fn chat_link(id: i64) -> Markup {
    html! { a href={(BASE) "/chats/" (id)} { "chat " (id) } }
}

// ---- Overview ----

pub async fn overview(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    headers: HeaderMap,
) -> PageResult {
    let fail = |e| store_failed(&login, e);
    let portal = app.store.portal().await.map_err(fail)?;
    let counts = app.store.counts().await.map_err(fail)?;
    let webhooks = app.store.list_webhooks().await.map_err(fail)?;
    let apps = app.store.list_apps().await.map_err(fail)?;
    let pending = app.store.pending_stats().await.map_err(fail)?;
    // The demo webhook's code is public (it is in the source and printed at start-up), so its URL may be shown;
    // every other code is stored only as a hash.
    let demo =
        app.store.webhook(DEMO_WEBHOOK_USER, &crate::secrets::sha256_hex(DEMO_WEBHOOK_CODE)).await.map_err(fail)?.map(
            |_| {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
                format!("http://{host}/rest/{DEMO_WEBHOOK_USER}/{DEMO_WEBHOOK_CODE}/")
            },
        );
    let plan = Plan::for_name(&portal.plan);
    let mut operating = Vec::new();
    let credentials = webhooks
        .iter()
        .map(|w| (format!("webhook {} (user {})", w.id, w.user_id), format!("webhook:{}", w.id)))
        .chain(apps.iter().map(|a| (format!("application {}", a.client_id), format!("app:{}", a.client_id))));
    for (name, key) in credentials {
        for method in crate::rest::registry::METHODS {
            let window = crate::rest::limits::operating_key(&portal.domain, &key, method.name);
            let status = app.operating.status(&window).await;
            if status.operating > 0.0 || status.blocked {
                operating.push((name.clone(), method.name, status));
            }
        }
    }
    let buckets = match plan {
        Some(_) => app.requests.levels(&portal.domain, SHOWN_BUCKETS).await,
        None => Vec::new(),
    };
    let flash = login.take_flash();
    let content = html! {
        h1 { "Overview" }
        (flash_box(flash))
        div class="cards" {
            section aria-labelledby="portal-h" {
                h2 id="portal-h" { "Portal" }
                dl {
                    dt { "Domain" } dd { (portal.domain) }
                    dt { "Language" } dd { (portal.language) }
                    dt { "Plan" } dd {
                        (portal.plan)
                        @match plan {
                            Some(p) => { " (burst " (p.burst) ", " (p.per_second) " requests/s per client IP)" }
                            None => { " (no request limit)" }
                        }
                    }
                    dt { "Modules" } dd { (portal.modules.join(", ")) }
                    dt { "Strict line permissions" } dd { (yes_no(portal.strict_line_permissions)) }
                    dt { "HTTPS required for webhooks" } dd { (yes_no(portal.require_https)) }
                }
            }
            section aria-labelledby="counts-h" {
                h2 id="counts-h" { "Counts" }
                dl class="counts" {
                    dt { "Users" } dd data-count="users" { (counts.users) }
                    dt { "Records" } dd data-count="records" { (counts.records) }
                    dt { "Chats" } dd data-count="chats" { (counts.chats) }
                    dt { "Memberships" } dd data-count="memberships" { (counts.memberships) }
                    dt { "Messages" } dd data-count="messages" { (counts.messages) }
                    dt { "Webhooks" } dd { (webhooks.len()) }
                    dt { "Applications" } dd { (apps.len()) }
                    dt { "Pending deliveries" } dd data-count="pending-deliveries" {
                        a href={(BASE) "/events?status=pending"} { (pending.count) }
                        @if let Some(oldest) = pending.oldest_created_ms {
                            " (oldest from " (crate::store::ms_to_rfc3339(oldest)) ")"
                        }
                    }
                }
            }
        }
        @if let Some(url) = &demo {
            section aria-labelledby="demo-h" {
                h2 id="demo-h" { "Demo webhook" }
                p { "The demo portal's admin webhook (user " (DEMO_WEBHOOK_USER) "):" }
                p { label for="demo-url" { "Webhook URL" } }
                div class="copy" {
                    input id="demo-url" type="text" readonly value=(url);
                    button type="button" data-copy="demo-url" { "Copy" }
                }
            }
        }
        section aria-labelledby="buckets-h" {
            h2 id="buckets-h" { "Request limit" }
            @match plan {
                None => p { "Plan " code { (portal.plan) } ": requests are not limited." },
                Some(plan) => {
                    p { "Each client address has a bucket of " (plan.burst) " requests that drains "
                        (plan.per_second) " a second; a request that finds it full is answered 503 "
                        code { (crate::error::Code::QueryLimitExceeded.as_str()) } "." }
                    @if buckets.is_empty() {
                        p { "Every bucket is empty." }
                    } @else {
                        div class="table-wrap" {
                            table {
                                thead { tr { th scope="col" { "Client" } th scope="col" { "In the bucket" }
                                    th scope="col" { "Full" } } }
                                tbody {
                                    @for bucket in &buckets {
                                        tr { td { code { (bucket.client) } }
                                            td data-bucket=(bucket.client) { (format!("{:.1}", bucket.requests)) " of " (plan.burst) }
                                            td { (yes_no(bucket.requests + 1.0 > f64::from(plan.burst))) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="limits-h" {
            h2 id="limits-h" { "Operating time" }
            @if operating.is_empty() {
                p { "No webhook or application has used operating time in the last 10 minutes." }
            } @else {
                div class="table-wrap" {
                    table {
                        thead { tr { th scope="col" { "Credential" } th scope="col" { "Method" }
                            th scope="col" { "Seconds used (10 min)" } th scope="col" { "Blocked" } } }
                        tbody {
                            @for (name, method, status) in &operating {
                                tr { td { (name) } td { code { (method) } }
                                    td { (format!("{:.3}", status.operating)) } td { (yes_no(status.blocked)) } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="reset-h" {
            h2 id="reset-h" { "Reset" }
            p { "Puts the portal back to its start-up state and clears the request journal, limits, faults, the clock offset and events." }
            form method="post" action={(BASE) "/reset"} data-confirm="Reset the portal to its start-up state? Every change since start-up is lost." {
                (login.csrf_field())
                button type="submit" class="danger" { "Reset" }
            }
        }
    };
    Ok(layout("Overview", Nav::Overview, &login, content).into_response())
}

/// The request buckets the Overview lists, fullest first.
const SHOWN_BUCKETS: usize = 50;

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

// ---- Records ----

#[derive(Deserialize)]
pub struct RecordsQuery {
    #[serde(rename = "type")]
    entity_type: Option<String>,
    q: Option<String>,
    page: Option<String>,
}

pub async fn records(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Query(query): Query<RecordsQuery>,
) -> PageResult {
    let state = app.store.export_structure().await.map_err(|e| store_failed(&login, e))?;
    let wanted_type = query.entity_type.as_deref().and_then(CrmEntityType::parse);
    let q = query.q.as_deref().unwrap_or("").trim();
    let wanted_id = q.parse::<i64>().ok();
    let needle = q.to_lowercase();
    let mut chats_of: HashMap<(&str, i64), usize> = HashMap::new();
    for chat in &state.chats {
        let mut seen = Vec::new();
        for session in &chat.sessions {
            for link in &session.crm {
                if !seen.contains(&(link.entity_type.as_str(), link.id)) {
                    seen.push((link.entity_type.as_str(), link.id));
                    *chats_of.entry((link.entity_type.as_str(), link.id)).or_default() += 1;
                }
            }
        }
    }
    let found: Vec<_> = state
        .crm
        .iter()
        .filter(|r| wanted_type.is_none_or(|t| t.as_str() == r.entity_type))
        .filter(|r| match wanted_id {
            Some(id) => r.id == id,
            None => needle.is_empty() || r.title.to_lowercase().contains(&needle),
        })
        .collect();
    let (page, pages) = page_of(query.page.as_deref(), found.len(), RECORDS_PER_PAGE);
    let shown = found.iter().skip((page - 1) * RECORDS_PER_PAGE).take(RECORDS_PER_PAGE);
    let mut responsible = HashMap::new();
    for r in shown.clone() {
        if let std::collections::hash_map::Entry::Vacant(slot) = responsible.entry(r.responsible) {
            slot.insert(user_name(
                app.store.user(r.responsible).await.map_err(|e| store_failed(&login, e))?.as_deref(),
            ));
        }
    }
    let type_value = wanted_type.map(|t| t.as_str()).unwrap_or("");
    let base = format!(
        "{BASE}/records?type={type_value}&q={}",
        percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
    );
    let content = html! {
        h1 { "Records" }
        form method="get" action={(BASE) "/records"} class="search" role="search" {
            label for="record-type" { "Type" }
            select id="record-type" name="type" {
                option value="" selected[wanted_type.is_none()] { "any" }
                @for t in CrmEntityType::ALL {
                    option value=(t.as_str()) selected[wanted_type == Some(t)] { (t.as_str()) }
                }
            }
            label for="record-q" { "ID or title" }
            input id="record-q" type="search" name="q" value=(q) placeholder="288 or Website";
            button type="submit" { "Search" }
        }
        p { (found.len()) " of " (state.crm.len()) " records" }
        div class="table-wrap" {
            table {
                caption class="visually-hidden" { "CRM records" }
                thead { tr { th scope="col" { "Record" } th scope="col" { "Title" }
                    th scope="col" { "Responsible" } th scope="col" { "Chats" } } }
                tbody {
                    @for r in shown {
                        tr {
                            td { (record_link(&r.entity_type, r.id)) }
                            td { (r.title) }
                            td { (r.responsible) " · " (responsible.get(&r.responsible).map(String::as_str).unwrap_or("")) }
                            td { (chats_of.get(&(r.entity_type.as_str(), r.id)).copied().unwrap_or(0)) }
                        }
                    }
                }
            }
        }
        (pager("Records pages", &base, page, pages))
    };
    Ok(layout("Records", Nav::Records, &login, content).into_response())
}

pub async fn record(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Path((entity_type, id)): Path<(String, String)>,
) -> PageResult {
    let not_found =
        || error_page(StatusCode::NOT_FOUND, &login, "No such record", "There is no CRM record by that type and id.");
    let (Some(entity_type), Ok(id)) = (CrmEntityType::parse(&entity_type), id.parse::<i64>()) else {
        return Err(not_found());
    };
    let fail = |e| store_failed(&login, e);
    let Some(record) = app.store.crm_record(entity_type, id).await.map_err(fail)? else {
        return Err(not_found());
    };
    let state = app.store.export_structure().await.map_err(fail)?;
    let title = state
        .crm
        .iter()
        .find(|r| r.entity_type == entity_type.as_str() && r.id == id)
        .map(|r| r.title.clone())
        .unwrap_or_default();
    let mut links = app.store.record_sessions(entity_type, id).await.map_err(fail)?;
    let last = last_chat(&links);
    links.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.session_id.cmp(&a.session_id)));
    let mut chats: Vec<i64> = Vec::new();
    for link in &links {
        if !chats.contains(&link.chat_id) {
            chats.push(link.chat_id);
        }
    }
    let responsible = app.store.user(record.responsible).await.map_err(fail)?;
    let heading = format!("{} {}", entity_type.as_str(), id);
    let content = html! {
        h1 { (heading) }
        dl {
            dt { "Title" } dd { (title) }
            dt { "Responsible" } dd { (record.responsible) " · " (user_name(responsible.as_deref())) }
            dt { "Observers" } dd {
                @if record.observers.is_empty() { "none" }
                @else { (record.observers.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")) }
            }
        }
        section aria-labelledby="chats-h" {
            h2 id="chats-h" { "Chats" }
            @if chats.is_empty() { p { "No chat is bound to this record." } }
            ul class="chats" {
                @for chat in &chats {
                    li {
                        (chat_link(*chat))
                        @if Some(ChatId(*chat)) == last { " " span class="badge" { "last chat" } }
                        @if !chat_belongs_to_record(&links, ChatId(*chat)) { " " span class="badge muted" { "not in the active list" } }
                    }
                }
            }
        }
        section aria-labelledby="sessions-h" {
            h2 id="sessions-h" { "Sessions" }
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Session" } th scope="col" { "Status" } th scope="col" { "Modified" }
                        th scope="col" { "Chat" } th scope="col" { "Connector" } } }
                    tbody {
                        @for link in &links {
                            tr {
                                td { (link.session_id) }
                                td { (link.status.name()) " (" (link.status.0) ")" }
                                td { time datetime=(ms_to_rfc3339(link.modified)) { (ms_to_rfc3339(link.modified)) } }
                                td { (chat_link(link.chat_id)) }
                                td { (link.connector_title) " (" (link.connector_id) ")"
                                    @if !link.connector_active { " · inactive" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&heading, Nav::Records, &login, content).into_response())
}

// ---- Chat ----

#[derive(Deserialize)]
pub struct ChatQuery {
    page: Option<String>,
    #[serde(rename = "as")]
    acting: Option<String>,
}

/// The webhook the chat page's actions run as: the one asked for, else the first admin's, else the first.
pub(crate) async fn acting_webhook(
    app: &AppState,
    webhooks: &[WebhookInfo],
    requested: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    if let Some(id) = requested.and_then(|r| r.parse::<i64>().ok())
        && webhooks.iter().any(|w| w.id == id)
    {
        return Ok(Some(id));
    }
    for hook in webhooks {
        if app.store.user(hook.user_id).await?.is_some_and(|u| u.admin && u.active) {
            return Ok(Some(hook.id));
        }
    }
    Ok(webhooks.first().map(|w| w.id))
}

pub async fn chat(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Path(id): Path<String>,
    Query(query): Query<ChatQuery>,
) -> PageResult {
    let not_found = || error_page(StatusCode::NOT_FOUND, &login, "No such chat", "There is no chat with that id.");
    let Ok(id) = id.parse::<i64>() else { return Err(not_found()) };
    let fail = |e| store_failed(&login, e);
    let Some(chat) = app.store.chat(id).await.map_err(fail)? else { return Err(not_found()) };
    let Some(detail) = app.store.chat_detail(id, LAST_MESSAGES).await.map_err(fail)? else {
        return Err(not_found());
    };
    let members = app.store.chat_members(id).await.map_err(fail)?;
    let (page, pages) = page_of(query.page.as_deref(), members.len(), MEMBERS_PER_PAGE);
    let first = (page - 1) * MEMBERS_PER_PAGE;
    let mut shown = Vec::with_capacity(MEMBERS_PER_PAGE);
    for (offset, user_id) in members.iter().skip(first).take(MEMBERS_PER_PAGE).enumerate() {
        shown.push((first + offset + 1, *user_id, app.store.user(*user_id).await.map_err(fail)?));
    }
    let mut names: HashMap<i64, String> = HashMap::new();
    for m in &detail.messages {
        if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(m.author) {
            slot.insert(user_name(app.store.user(m.author).await.map_err(fail)?.as_deref()));
        }
    }
    let records = app.store.chat_records(id).await.map_err(fail)?;
    let webhooks = app.store.list_webhooks().await.map_err(fail)?;
    let acting = acting_webhook(&app, &webhooks, query.acting.as_deref()).await.map_err(fail)?;
    let mut hook_users = HashMap::new();
    for hook in &webhooks {
        hook_users.insert(hook.id, user_name(app.store.user(hook.user_id).await.map_err(fail)?.as_deref()));
    }
    let author_name = match detail.author {
        Some(author) => format!("{author} · {}", user_name(app.store.user(author).await.map_err(fail)?.as_deref())),
        None => "none".into(),
    };
    let record = records.first().map(|r| format!("{}:{}", r.entity_type.as_str(), r.id));
    let acting_value = acting.map(|a| a.to_string()).unwrap_or_default();
    let base = format!("{BASE}/chats/{id}?as={acting_value}");
    let flash = login.take_flash();
    let heading = format!("Chat {id}");
    let content = html! {
        h1 { (heading) }
        (flash_box(flash))
        dl {
            dt { "Line" } dd { (chat.line_id) }
            dt { "Connector" } dd { (chat.connector_id) }
            dt { "Author" } dd { (author_name) }
            dt { "Records" } dd {
                @if records.is_empty() { "none" }
                @for (i, r) in records.iter().enumerate() {
                    @if i > 0 { ", " }
                    (record_link(r.entity_type.as_str(), r.id))
                }
            }
        }
        section aria-labelledby="acting-h" class="acting" {
            h2 id="acting-h" { "Actions" }
            @if webhooks.is_empty() {
                p { "There is no webhook to call the REST methods with: add one with " code { "crmchat webhook add" } "." }
            } @else {
                form method="get" action={(BASE) "/chats/" (id)} class="inline" {
                    label for="acting" { "Act as" }
                    select id="acting" name="as" data-autosubmit {
                        @for hook in &webhooks {
                            option value=(hook.id) selected[Some(hook.id) == acting] {
                                "webhook " (hook.id) " · user " (hook.user_id) " " (hook_users.get(&hook.id).map(String::as_str).unwrap_or(""))
                            }
                        }
                    }
                    button type="submit" { "Switch" }
                }
                p class="hint" { "Remove and Add member call the real REST methods with this webhook's user and scopes." }
            }
            @if let (Some(record), Some(acting)) = (&record, acting) {
                form method="post" action={(BASE) "/chats/" (id) "/add"} class="inline" aria-label="Add member" {
                    (login.csrf_field())
                    input type="hidden" name="as" value=(acting);
                    input type="hidden" name="record" value=(record);
                    input type="hidden" name="page" value=(page);
                    label for="add-user" { "User ID" }
                    input id="add-user" type="number" name="user_id" min="1" required inputmode="numeric";
                    button type="submit" { "Add member" }
                }
            } @else if record.is_none() {
                p { "This chat is bound to no CRM record, so the imopenlines.crm.chat methods cannot reach it." }
            }
        }
        section aria-labelledby="members-h" {
            h2 id="members-h" { "Members (" (members.len()) ")" }
            div class="table-wrap" {
                table class="members" {
                    thead { tr { th scope="col" class="wide" { "#" } th scope="col" { "User" } th scope="col" { "Name" }
                        th scope="col" { "Kind" } th scope="col" class="wide" { "Active" } th scope="col" { span class="visually-hidden" { "Action" } } } }
                    tbody {
                        @for (position, user_id, user) in &shown {
                            tr data-user=(user_id) {
                                td class="wide" { (position) }
                                td { (user_id) }
                                td {
                                    (user_name(user.as_deref()))
                                    @if detail.author == Some(*user_id) { " " span class="badge" { "author" } }
                                }
                                td { (user.as_ref().map(|u| u.kind.as_str()).unwrap_or("?")) }
                                td class="wide" { (yes_no(user.as_ref().is_some_and(|u| u.active))) }
                                td {
                                    @if let (Some(record), Some(acting)) = (&record, acting) {
                                        form method="post" action={(BASE) "/chats/" (id) "/remove"} {
                                            (login.csrf_field())
                                            input type="hidden" name="as" value=(acting);
                                            input type="hidden" name="record" value=(record);
                                            input type="hidden" name="user_id" value=(user_id);
                                            input type="hidden" name="page" value=(page);
                                            button type="submit" class="small" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (pager("Member pages", &base, page, pages))
        }
        section aria-labelledby="sessions-h" {
            h2 id="sessions-h" { "Sessions" }
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Session" } th scope="col" { "Status" } th scope="col" { "Modified" } th scope="col" { "Records" } } }
                    tbody {
                        @for s in &detail.sessions {
                            tr {
                                td { (s.id) }
                                td { (status_name(&s.status)) }
                                td { time datetime=(s.modified) { (s.modified) } }
                                td {
                                    @for (i, link) in s.crm.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        (record_link(&link.entity_type, link.id))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="messages-h" {
            h2 id="messages-h" { "Messages (" (detail.message_count) ")" }
            @if detail.message_count > detail.messages.len() as i64 {
                p class="hint" { "The last " (detail.messages.len()) ", newest last." }
            }
            @if detail.messages.is_empty() { p { "No message yet." } }
            ol class="messages" {
                @for m in &detail.messages {
                    li {
                        div class="meta" {
                            strong { (names.get(&m.author).map(String::as_str).unwrap_or("")) }
                            " (" (m.author) ") · " time datetime=(m.date) { (m.date) } " · #" (m.id)
                        }
                        p { (m.text) }
                    }
                }
            }
        }
    };
    Ok(layout(&heading, Nav::Records, &login, content).into_response())
}

fn status_name(status: &crate::state::StatusDef) -> String {
    match status {
        crate::state::StatusDef::Name(name) => name.clone(),
        crate::state::StatusDef::Code(code) => code.to_string(),
    }
}

// ---- Credentials ----

pub async fn credentials(State(app): State<Arc<AppState>>, Extension(login): Extension<Login>) -> PageResult {
    let fail = |e| store_failed(&login, e);
    let webhooks = app.store.list_webhooks().await.map_err(fail)?;
    let apps = app.store.list_apps().await.map_err(fail)?;
    let mut bindings = HashMap::new();
    for a in &apps {
        bindings.insert(a.client_id.clone(), app.store.bindings(&a.client_id).await.map_err(fail)?);
    }
    let mut users = HashMap::new();
    for hook in &webhooks {
        users.insert(hook.user_id, user_name(app.store.user(hook.user_id).await.map_err(fail)?.as_deref()));
    }
    let content = html! {
        h1 { "Credentials" }
        section aria-labelledby="webhooks-h" {
            h2 id="webhooks-h" { "Webhooks" }
            p class="hint" { "Codes are stored only as hashes and are never shown." }
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "ID" } th scope="col" { "User" } th scope="col" { "Scopes" } th scope="col" { "Created" } } }
                    tbody {
                        @for hook in &webhooks {
                            tr {
                                td { (hook.id) }
                                td { (hook.user_id) " · " (users.get(&hook.user_id).map(String::as_str).unwrap_or("")) }
                                td { (hook.scopes.join(", ")) }
                                td { (ms_to_rfc3339(hook.created_ms)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="apps-h" {
            h2 id="apps-h" { "Applications" }
            p class="hint" { "Client secrets are stored only as hashes and are never shown." }
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Client ID" } th scope="col" { "Scopes" } th scope="col" { "Event bindings" } } }
                    tbody {
                        @for a in &apps {
                            tr {
                                td { code { (a.client_id) } }
                                td { (a.scopes.join(", ")) }
                                td {
                                    @let bound = bindings.get(&a.client_id).map(Vec::as_slice).unwrap_or_default();
                                    @if bound.is_empty() { "none" }
                                    ul class="bindings" {
                                        @for b in bound {
                                            li {
                                                code { (b.event) } " → "
                                                @if b.handler.is_empty() { "offline" } @else { (b.handler) }
                                                @if b.user_id != 0 { " (as user " (b.user_id) ")" }
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
    };
    Ok(layout("Credentials", Nav::Credentials, &login, content).into_response())
}
