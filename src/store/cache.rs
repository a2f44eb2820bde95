//! A read model of the portal kept in memory, so that the request path (authentication, permissions, chat
//! resolution) reads no database. It holds what requests only read — settings, credentials, users, CRM
//! records, lines, chats and their sessions — not memberships or messages, which the write path owns.
//!
//! Everything cached changes only through `state load` and credentials management, which bump the database's
//! revision in the same transaction. The revision is checked at most every [`RECHECK`]: a change made by
//! another process (the CLI next to a running server) is visible within that time, and at once when made
//! through this store.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::{
    AppRecord, AuthCode, BindingFilter, Change, ChangeOutcome, ChatDetail, Counts, DynStore, EventBinding,
    EventLogFilter, LoadError, LoggedEvent, OutgoingWebhook, PendingDelivery, PendingStats, Store, StoreError,
    StoreResult, TokenRecord, WebhookCredential, WebhookInfo,
};
use crate::domain::{
    Chat, CrmEntityType, CrmRecord, Line, LineLevel, PortalSettings, ReadLevel, SessionLink, User, UserKind,
};
use crate::state::PortalState;

/// The read model's maps: keyed by ids and hashes from the database, not by what clients send, so they need no
/// SipHash against flooding; a lookup is a fraction of its cost.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// How stale the cache may be with respect to changes made by other processes (plus the time of one
/// revision query).
pub const RECHECK: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Snapshot {
    revision: i64,
    portal: Arc<PortalSettings>,
    /// By the code's hash, which is unique (so a lookup needs no key built for it); the user id is checked after.
    webhooks: HashMap<String, WebhookCredential>,
    users: HashMap<i64, Arc<User>>,
    records: HashMap<(CrmEntityType, i64), CrmRecord>,
    record_sessions: HashMap<(CrmEntityType, i64), Vec<SessionLink>>,
    chats: HashMap<i64, Chat>,
    lines: HashMap<i64, Line>,
}

pub struct CachedStore {
    inner: DynStore,
    /// Read without a lock or a reference count shared between threads: a lock's or a counter's cache line
    /// bounced between the cores at every store call of every request.
    snapshot: ArcSwap<Snapshot>,
    /// Microseconds on the coarse monotonic clock at the last revision check.
    checked_at: AtomicI64,
    reload: tokio::sync::Mutex<()>,
}

/// The coarse monotonic clock (a few ms of resolution) is enough to space revision checks 5 ms apart, and
/// reading it costs a fraction of a precise clock read; every store call of every request reads it.
fn now_us() -> i64 {
    let now = coarsetime::Instant::now_without_cache_update();
    coarsetime::Duration::from_ticks(now.as_ticks()).as_micros() as i64
}

impl CachedStore {
    pub async fn new(inner: DynStore) -> StoreResult<Self> {
        let store = Self {
            inner,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            checked_at: AtomicI64::new(0),
            reload: tokio::sync::Mutex::new(()),
        };
        store.reload_now().await?;
        Ok(store)
    }

    fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The snapshot, reloaded first when the database's revision moved since it was taken. One request at a
    /// time checks the revision; the others go on with the snapshot they have rather than queue behind it.
    async fn fresh(&self) -> StoreResult<arc_swap::Guard<Arc<Snapshot>>> {
        let checked = self.checked_at.load(Ordering::Relaxed);
        if now_us() - checked < RECHECK.as_micros() as i64 {
            return Ok(self.current());
        }
        let Ok(_guard) = self.reload.try_lock() else {
            return Ok(self.current());
        };
        let revision = self.inner.revision().await?;
        if revision != self.current().revision {
            self.install(self.inner.export_structure().await?, revision)?;
        }
        self.checked_at.store(now_us(), Ordering::Relaxed);
        Ok(self.current())
    }

    async fn reload_now(&self) -> StoreResult<()> {
        let _guard = self.reload.lock().await;
        let revision = self.inner.revision().await?;
        self.install(self.inner.export_structure().await?, revision)?;
        self.checked_at.store(now_us(), Ordering::Relaxed);
        Ok(())
    }

    fn install(&self, state: PortalState, revision: i64) -> StoreResult<()> {
        let snapshot = build(state, revision)?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

/// `state` without chat members and messages, as `export_structure` reads it.
fn structure_of(state: &PortalState) -> PortalState {
    let chats = state
        .chats
        .iter()
        .map(|c| crate::state::ChatDef {
            id: c.id,
            line: c.line,
            connector: c.connector.clone(),
            author: c.author,
            members: Vec::new(),
            sessions: c.sessions.clone(),
            messages: Vec::new(),
        })
        .collect();
    PortalState {
        portal: state.portal.clone(),
        users: state.users.clone(),
        crm: state.crm.clone(),
        lines: state.lines.clone(),
        chats,
        webhooks: state.webhooks.clone(),
        apps: state.apps.clone(),
        outgoing_webhooks: state.outgoing_webhooks.clone(),
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// The read model of an exported (so already validated) state.
fn build(state: PortalState, revision: i64) -> StoreResult<Snapshot> {
    let mut s = Snapshot { revision, portal: Arc::new(PortalSettings::from(&state.portal)), ..Default::default() };
    for w in state.webhooks {
        let hash = w.code_sha256.ok_or_else(|| corrupt("webhook without hash"))?;
        let credential = WebhookCredential { id: w.id.unwrap_or(0), user_id: w.user, scopes: w.scopes };
        s.webhooks.insert(hash, credential);
    }
    for u in state.users {
        let read = |level: &str| ReadLevel::parse(level).ok_or_else(|| corrupt(format!("read level {level}")));
        let line = |level: &str| LineLevel::parse(level).ok_or_else(|| corrupt(format!("line level {level}")));
        let user = User {
            id: u.id,
            name: u.name,
            last_name: u.last_name,
            active: u.active,
            kind: UserKind::parse(&u.kind).ok_or_else(|| corrupt(format!("user kind {}", u.kind)))?,
            admin: u.admin,
            crm_read: [
                read(&u.crm_read.lead)?,
                read(&u.crm_read.deal)?,
                read(&u.crm_read.contact)?,
                read(&u.crm_read.company)?,
            ],
            line_join: line(&u.lines.join)?,
            line_history: line(&u.lines.history)?,
        };
        s.users.insert(user.id, Arc::new(user));
    }
    for c in state.crm {
        let entity_type = CrmEntityType::parse(&c.entity_type).ok_or_else(|| corrupt(&c.entity_type))?;
        let record = CrmRecord { entity_type, id: c.id, responsible: c.responsible, observers: c.observers };
        s.records.insert((entity_type, c.id), record);
    }
    let mut connectors: HashMap<(i64, String), (String, bool)> = HashMap::default();
    for l in state.lines {
        for k in l.connectors {
            connectors.insert((l.id, k.id), (k.title, k.active));
        }
        s.lines.insert(l.id, Line { id: l.id, queue: l.queue });
    }
    for chat in state.chats {
        let (title, active) = connectors.get(&(chat.line, chat.connector.clone())).cloned().unwrap_or_default();
        for session in &chat.sessions {
            let status = crate::state::validate::session_status(&session.status)
                .ok_or_else(|| corrupt(format!("session {} status", session.id)))?;
            let modified = super::rfc3339_to_ms(&session.modified)?;
            for r in &session.crm {
                let entity_type = CrmEntityType::parse(&r.entity_type).ok_or_else(|| corrupt(&r.entity_type))?;
                s.record_sessions.entry((entity_type, r.id)).or_default().push(SessionLink {
                    session_id: session.id,
                    chat_id: chat.id,
                    status,
                    modified,
                    connector_id: chat.connector.clone(),
                    connector_title: title.clone(),
                    connector_active: active,
                });
            }
        }
        s.chats.insert(chat.id, Chat { id: chat.id, line_id: chat.line, connector_id: chat.connector });
    }
    Ok(s)
}

#[async_trait]
impl Store for CachedStore {
    async fn portal(&self) -> StoreResult<Arc<PortalSettings>> {
        Ok(self.fresh().await?.portal.clone())
    }

    async fn webhook(&self, user_id: i64, code_sha256: &str) -> StoreResult<Option<WebhookCredential>> {
        Ok(self.fresh().await?.webhooks.get(code_sha256).filter(|hook| hook.user_id == user_id).cloned())
    }

    async fn user(&self, id: i64) -> StoreResult<Option<Arc<User>>> {
        Ok(self.fresh().await?.users.get(&id).cloned())
    }

    async fn crm_record(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Option<CrmRecord>> {
        Ok(self.fresh().await?.records.get(&(entity_type, id)).cloned())
    }

    async fn record_sessions(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Vec<SessionLink>> {
        Ok(self.fresh().await?.record_sessions.get(&(entity_type, id)).cloned().unwrap_or_default())
    }

    async fn chat(&self, id: i64) -> StoreResult<Option<Chat>> {
        Ok(self.fresh().await?.chats.get(&id).cloned())
    }

    async fn line(&self, id: i64) -> StoreResult<Option<Line>> {
        Ok(self.fresh().await?.lines.get(&id).cloned())
    }

    async fn chat_members(&self, chat_id: i64) -> StoreResult<Vec<i64>> {
        self.inner.chat_members(chat_id).await
    }

    async fn chat_records(&self, chat_id: i64) -> StoreResult<Vec<CrmRecord>> {
        self.inner.chat_records(chat_id).await
    }

    async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome> {
        self.inner.apply(change).await
    }

    async fn export_state(&self) -> StoreResult<PortalState> {
        self.inner.export_state().await
    }

    async fn export_structure(&self) -> StoreResult<PortalState> {
        self.inner.export_structure().await
    }

    async fn load_state(&self, incoming: PortalState, has_portal: bool, now_ms: i64) -> Result<(), LoadError> {
        let result = self.inner.load_state(incoming, has_portal, now_ms).await;
        self.reload_now().await?;
        result
    }

    async fn replace_state(&self, state: &PortalState, clear_history: bool) -> StoreResult<()> {
        let result = self.inner.replace_state(state, clear_history).await;
        // The read model of what was just written, without reading it back (a reset's time is mostly that),
        // unless the database numbered new webhooks.
        if result.is_ok() && state.webhooks.iter().all(|w| w.id.is_some()) {
            let _guard = self.reload.lock().await;
            let revision = self.inner.revision().await?;
            self.install(structure_of(state), revision)?;
            self.checked_at.store(now_us(), Ordering::Relaxed);
            return Ok(());
        }
        self.reload_now().await?;
        result
    }

    async fn counts(&self) -> StoreResult<Counts> {
        self.inner.counts().await
    }

    async fn chat_detail(&self, chat_id: i64, last_messages: i64) -> StoreResult<Option<ChatDetail>> {
        self.inner.chat_detail(chat_id, last_messages).await
    }

    async fn is_initialized(&self) -> StoreResult<bool> {
        self.inner.is_initialized().await
    }

    async fn revision(&self) -> StoreResult<i64> {
        self.inner.revision().await
    }

    fn pool_use(&self) -> Vec<crate::telemetry::PoolUse> {
        self.inner.pool_use()
    }

    async fn add_webhook(&self, user_id: i64, code_sha256: &str, scopes: &[String], at_ms: i64) -> StoreResult<i64> {
        let id = self.inner.add_webhook(user_id, code_sha256, scopes, at_ms).await?;
        self.reload_now().await?;
        Ok(id)
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookInfo>> {
        self.inner.list_webhooks().await
    }

    async fn revoke_webhook(&self, id: i64) -> StoreResult<bool> {
        let done = self.inner.revoke_webhook(id).await?;
        self.reload_now().await?;
        Ok(done)
    }

    async fn add_app(&self, app: &AppRecord) -> StoreResult<bool> {
        let done = self.inner.add_app(app).await?;
        self.reload_now().await?;
        Ok(done)
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.inner.list_apps().await
    }

    async fn remove_app(&self, client_id: &str) -> StoreResult<bool> {
        let done = self.inner.remove_app(client_id).await?;
        self.reload_now().await?;
        Ok(done)
    }

    async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
        self.inner.app(client_id).await
    }

    async fn add_auth_code(&self, code_sha256: &str, code: &AuthCode) -> StoreResult<()> {
        self.inner.add_auth_code(code_sha256, code).await
    }

    async fn take_auth_code(&self, code_sha256: &str) -> StoreResult<Option<AuthCode>> {
        self.inner.take_auth_code(code_sha256).await
    }

    async fn add_tokens(&self, tokens: &TokenRecord) -> StoreResult<()> {
        self.inner.add_tokens(tokens).await
    }

    async fn revoke_app_tokens(&self, client_id: &str) -> StoreResult<u64> {
        self.inner.revoke_app_tokens(client_id).await
    }

    async fn token_by_access(&self, access_sha256: &str) -> StoreResult<Option<TokenRecord>> {
        self.inner.token_by_access(access_sha256).await
    }

    async fn token_by_refresh(&self, refresh_sha256: &str) -> StoreResult<Option<TokenRecord>> {
        self.inner.token_by_refresh(refresh_sha256).await
    }

    async fn rotate_tokens(
        &self,
        old_refresh_sha256: &str,
        new: &TokenRecord,
        now_ms: i64,
    ) -> StoreResult<Option<TokenRecord>> {
        self.inner.rotate_tokens(old_refresh_sha256, new, now_ms).await
    }

    async fn add_outgoing_webhook(&self, webhook: &OutgoingWebhook) -> StoreResult<i64> {
        self.inner.add_outgoing_webhook(webhook).await
    }

    async fn list_outgoing_webhooks(&self) -> StoreResult<Vec<OutgoingWebhook>> {
        self.inner.list_outgoing_webhooks().await
    }

    async fn remove_outgoing_webhook(&self, id: i64) -> StoreResult<bool> {
        self.inner.remove_outgoing_webhook(id).await
    }

    async fn add_binding(&self, binding: &EventBinding, at_ms: i64) -> StoreResult<Option<i64>> {
        self.inner.add_binding(binding, at_ms).await
    }

    async fn remove_bindings(&self, filter: &BindingFilter) -> StoreResult<u64> {
        self.inner.remove_bindings(filter).await
    }

    async fn bindings(&self, client_id: &str) -> StoreResult<Vec<EventBinding>> {
        self.inner.bindings(client_id).await
    }

    async fn due_deliveries(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<PendingDelivery>> {
        self.inner.due_deliveries(now_ms, limit).await
    }

    async fn event_log(&self, filter: &EventLogFilter) -> StoreResult<Vec<LoggedEvent>> {
        self.inner.event_log(filter).await
    }

    async fn redeliver(&self, event_id: i64, now_ms: i64) -> StoreResult<Option<u64>> {
        self.inner.redeliver(event_id, now_ms).await
    }

    async fn pending_stats(&self) -> StoreResult<PendingStats> {
        self.inner.pending_stats().await
    }

    async fn offline_reserve(
        &self,
        owner: &super::offline::Owner,
        query: &super::offline::Query,
        process_id: &str,
        limit: i64,
    ) -> StoreResult<()> {
        self.inner.offline_reserve(owner, query, process_id, limit).await
    }

    async fn offline_rows(
        &self,
        owner: &super::offline::Owner,
        query: &super::offline::Query,
        offset: i64,
        limit: i64,
        count: bool,
    ) -> StoreResult<(Vec<super::offline::OfflineEvent>, i64)> {
        self.inner.offline_rows(owner, query, offset, limit, count).await
    }

    async fn offline_clear(
        &self,
        owner: &super::offline::Owner,
        process_id: &str,
        only: &super::offline::Selection,
    ) -> StoreResult<u64> {
        self.inner.offline_clear(owner, process_id, only).await
    }

    async fn offline_error(
        &self,
        owner: &super::offline::Owner,
        process_id: &str,
        message_ids: &[String],
    ) -> StoreResult<()> {
        self.inner.offline_error(owner, process_id, message_ids).await
    }
}
