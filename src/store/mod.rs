//! Persistence behind one interface. The methods read through it and describe every write as a [`Change`],
//! which a backend applies atomically (one transaction per change); nothing here knows about HTTP.
//! Two backends, SQLite and PostgreSQL, share their SQL through [`sql`].

pub mod cache;
mod migrations;
pub mod offline;
mod pg_writer;
pub mod postgres;
mod sql;
pub mod sqlite;
mod sqlite_writer;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{
    Chat, ChatId, CrmEntityType, CrmRecord, Line, PortalSettings, RecordRef, SessionLink, User, UserId,
};
use crate::state::{FixtureErrors, PortalState};

/// Why the store failed, in words an operator can act on: a full disk is not a corrupt database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// SQLite's own connection (the writer thread) failed.
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// The disk (or the PostgreSQL server's disk) has no room for the change; nothing of it was kept.
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// A file operation of the store itself failed (creating the data directory, syncing the WAL).
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A part of the store is not running (its thread could not start or has stopped).
    #[error("the store is not running: {0}")]
    Unavailable(String),
    /// The change was committed in a group with others, and the group's transaction met this fault (another
    /// change's connection, the server, the commit): nothing of the group was kept.
    #[error("the change's group was not committed: {0}")]
    GroupNotCommitted(String),
    /// What was read back breaks a rule the store keeps (an unknown enum value, a missing hash).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// An I/O error, told apart when it is the disk being full (ENOSPC, EDQUOT).
    pub fn io(what: impl std::fmt::Display, err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreError::DiskFull(format!("{what}: {err}"))
            }
            _ => StoreError::Io(format!("{what}: {err}")),
        }
    }

    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        // SQLITE_FULL is result code 13; PostgreSQL's disk_full is SQLSTATE 53100.
        let full = match &err {
            sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("13") | Some("53100")),
            sqlx::Error::Io(io) => {
                matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
            }
            _ => false,
        };
        if full { StoreError::DiskFull(err.to_string()) } else { StoreError::Database(err) }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(FixtureErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An inbound webhook as authentication sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookCredential {
    pub id: i64,
    pub user_id: i64,
    pub scopes: Vec<String>,
}

/// A webhook as `crmchat webhook list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookInfo {
    pub id: i64,
    pub user_id: i64,
    pub scopes: Vec<String>,
    pub created_ms: i64,
}

/// An outgoing webhook: `events` are posted to `handler` with its own `application_token` and no OAuth tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingWebhook {
    /// The `event_handler_id` of its deliveries.
    pub id: i64,
    pub handler: String,
    /// Upper-case event names, sorted.
    pub events: Vec<String>,
    /// Kept in clear: every delivery carries it.
    pub application_token: String,
    pub created_ms: i64,
}

/// An OAuth application; the client secret is kept only as its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub client_id: String,
    pub secret_sha256: String,
    pub scopes: Vec<String>,
    pub application_token: String,
}

/// An issued token pair, stored by the hashes of both tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub access_sha256: String,
    pub refresh_sha256: String,
    pub client_id: String,
    pub user_id: i64,
    pub scopes: Vec<String>,
    pub access_expires_ms: i64,
    pub refresh_expires_ms: i64,
    /// The loop guard: a token minted for a delivery carries the depth of the events its calls produce.
    pub event_depth: i64,
}

/// A one-time authorization code, as `take_auth_code` hands it back.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthCode {
    pub client_id: String,
    pub user_id: i64,
    pub expires_ms: i64,
}

/// A handler bound with `event.bind`. `handler` is empty for an offline binding; `user_id` is its `auth_type`
/// (0: the user who caused the event).
#[derive(Debug, Clone, PartialEq)]
pub struct EventBinding {
    pub id: i64,
    pub client_id: String,
    pub event: String,
    pub handler: String,
    pub user_id: i64,
    pub connector_id: String,
    /// `options[minTimeout]` of an `ONOFFLINEEVENT` binding, in seconds.
    pub min_timeout: Option<i64>,
}

/// Which bindings `event.unbind` removes: those of the application, event and handler, and of the user and
/// connector when given.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingFilter {
    pub client_id: String,
    pub event: String,
    pub handler: String,
    pub user_id: Option<i64>,
    pub connector_id: Option<String>,
}

/// How many rows the portal holds, for the inspector's overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub users: i64,
    pub records: i64,
    pub chats: i64,
    pub memberships: i64,
    pub messages: i64,
}

/// One chat as the inspector shows it, without its members (read page by page with [`Store::chat_members`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatDetail {
    pub author: Option<i64>,
    pub sessions: Vec<crate::state::SessionDef>,
    /// The last messages asked for, oldest first.
    pub messages: Vec<crate::state::MessageDef>,
    pub message_count: i64,
}

/// How much of the state an export reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportDetail {
    Everything,
    /// Without chat members and messages (the bulk of a large portal).
    Structure,
}

/// Who made a change, for the events it produces: whose token a handler bound without `auth_type` receives,
/// and the loop guard's depth (0 for an ordinary call; a call made with a token minted for a delivery of an
/// event of depth `d` has depth `d + 1`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cause {
    pub user_id: i64,
    pub depth: i64,
    /// The application and `auth_connector` the change was made through: its own offline bindings do not
    /// record the events it causes (the vendor's rule). `None` for a webhook or the CLI.
    pub origin: Option<std::sync::Arc<offline::Origin>>,
}

/// A write, applied by the store in one transaction together with its notification and the events it
/// produces for the handlers bound to them (none when nobody listens).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RemoveMember {
        chat_id: ChatId,
        user_id: UserId,
        record: RecordRef,
        at_ms: i64,
        cause: Cause,
    },
    AddMember {
        chat_id: ChatId,
        user_id: UserId,
        record: RecordRef,
        at_ms: i64,
        cause: Cause,
    },
    /// A message from `author`, who must be a member of the chat when the change is applied.
    AddMessage {
        chat_id: ChatId,
        author: UserId,
        text: String,
        record: RecordRef,
        /// The chat's line and connector, for the event's `connector` block.
        line_id: i64,
        connector_id: String,
        at_ms: i64,
        cause: Cause,
    },
    /// An event that no change of the portal causes (`ONAPPTEST`): for the bindings of `client_id` only.
    Emit {
        event: &'static str,
        payload: String,
        client_id: String,
        at_ms: i64,
        cause: Cause,
    },
    /// Take the deliveries `ids` for sending until `until_ms`: those still pending and not taken by anyone
    /// else at `now_ms`.
    LeaseDeliveries {
        ids: Vec<i64>,
        now_ms: i64,
        until_ms: i64,
    },
    /// Give back leased deliveries that were not sent: each of `ids` still held with lease `until_ms` is free to
    /// be leased again at once.
    ReleaseDeliveries {
        ids: Vec<i64>,
        until_ms: i64,
    },
    /// The outcomes of delivery attempts (each only while its lease holds, see [`DeliveryOutcome`]).
    RecordDeliveries(Vec<DeliveryOutcome>),
    /// Delete up to `limit` finished deliveries that were finished before `before_ms` or are more than
    /// `keep` finished ones, with the events left without a delivery; up to `limit` messenger notices by the
    /// same rule; and expired tokens.
    Prune {
        before_ms: i64,
        keep: i64,
        limit: i64,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOutcome {
    /// The membership was removed; the chat now has `member_count` members and `author` as its author.
    MemberRemoved {
        member_count: i64,
        author: Option<i64>,
    },
    /// The user was not a member (also when a concurrent call removed them first).
    NotAMember,
    MemberAdded {
        member_count: i64,
    },
    AlreadyAMember,
    MessageAdded {
        id: i64,
    },
    /// How many deliveries an event got.
    Emitted(u64),
    /// The deliveries this caller now holds.
    Leased(Vec<i64>),
    Recorded,
    /// How many finished deliveries and messenger notices were deleted.
    Pruned {
        deliveries: u64,
        notifications: u64,
    },
}

/// A delivery waiting to be sent, with its event.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    pub id: i64,
    pub event_id: i64,
    /// `event_handler_id` on the wire.
    pub binding_id: i64,
    pub client_id: String,
    pub application_token: String,
    pub handler: String,
    /// Whose token goes with it; 0 for none.
    pub user_id: i64,
    /// Attempts made so far.
    pub attempts: i64,
    pub event: String,
    pub payload: String,
    pub created_ms: i64,
    pub depth: i64,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOutcome {
    pub id: i64,
    /// The lease the attempt was made under. The outcome is recorded only if the delivery still holds it: a
    /// delivery removed meanwhile (a reset), or taken over by another instance after the lease expired, is
    /// left alone.
    pub lease_until_ms: i64,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at_ms: i64,
    /// The handler's HTTP status; `None` when it did not answer.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(i64),
    Failed,
}

impl NextStep {
    pub fn state(self) -> &'static str {
        match self {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "pending",
            NextStep::Failed => "failed",
        }
    }
}

/// A delivery's state, as stored and as the control API and the CLI name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 3] = [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// Which events [`Store::event_log`] reads: the newest `limit`, of the event `event` (upper-case) and with a
/// delivery in `state`, when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogFilter {
    pub state: Option<DeliveryState>,
    pub event: Option<String>,
    pub limit: i64,
}

/// An event of the outbox with what became of its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub id: i64,
    pub event: String,
    /// The event's `data`, as stored JSON.
    pub payload: String,
    pub created_ms: i64,
    /// In delivery order.
    pub deliveries: Vec<LoggedDelivery>,
}

/// One delivery of a [`LoggedEvent`]; never its application token.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedDelivery {
    pub id: i64,
    pub handler: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Oldest first.
    pub attempts: Vec<LoggedAttempt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAttempt {
    /// 1 for the first attempt.
    pub attempt: i64,
    pub at_ms: i64,
    /// The handler's HTTP status; `None` when it did not answer.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The pending deliveries of the whole database (every instance's), for the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingStats {
    pub count: i64,
    /// When the event of the oldest pending delivery was produced.
    pub oldest_created_ms: Option<i64>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn portal(&self) -> StoreResult<Arc<PortalSettings>>;
    async fn webhook(&self, user_id: i64, code_sha256: &str) -> StoreResult<Option<WebhookCredential>>;
    async fn user(&self, id: i64) -> StoreResult<Option<Arc<User>>>;
    async fn crm_record(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Option<CrmRecord>>;
    /// Every session bound to the record, with its chat's connector.
    async fn record_sessions(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Vec<SessionLink>>;
    async fn chat(&self, id: i64) -> StoreResult<Option<Chat>>;
    async fn line(&self, id: i64) -> StoreResult<Option<Line>>;
    /// Member user ids in join order.
    async fn chat_members(&self, chat_id: i64) -> StoreResult<Vec<i64>>;
    /// The CRM records bound to any session of the chat.
    async fn chat_records(&self, chat_id: i64) -> StoreResult<Vec<CrmRecord>>;
    async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome>;
    async fn export_state(&self) -> StoreResult<PortalState>;
    /// The state without chat members and messages: what the in-memory read model is built from.
    async fn export_structure(&self) -> StoreResult<PortalState>;
    /// Upsert a state file into the portal: merged with the stored rows it touches, validated, written in one
    /// transaction; reads and writes in proportion to the file, not to the portal. An invalid file changes
    /// nothing. New memberships and webhooks are stamped `now_ms` (the portal clock of the loading server).
    async fn load_state(&self, incoming: PortalState, has_portal: bool, now_ms: i64) -> Result<(), LoadError>;
    /// Make the stored portal exactly `state`, which must be validated (an export, or the output of
    /// `state::validate`): everything not in it is gone, issued OAuth codes and tokens included. One
    /// transaction; `clear_history` also empties the notifications and the outbox (a reset).
    async fn replace_state(&self, state: &PortalState, clear_history: bool) -> StoreResult<()>;
    /// Row counts of the portal (the inspector's overview).
    async fn counts(&self) -> StoreResult<Counts>;
    /// The chat's author, sessions and its `last_messages` newest messages; `None` for an unknown chat.
    async fn chat_detail(&self, chat_id: i64, last_messages: i64) -> StoreResult<Option<ChatDetail>>;
    /// A counter moved by every change of settings, credentials, users, records, lines, chats or sessions —
    /// what the in-memory read model holds — by this process or another.
    async fn revision(&self) -> StoreResult<i64>;
    /// The database pools' connections now (for `/metrics`).
    fn pool_use(&self) -> Vec<crate::telemetry::PoolUse>;
    /// True once the portal row exists (a state was loaded).
    async fn is_initialized(&self) -> StoreResult<bool>;

    // Credentials management. Secrets arrive hashed; the store never sees a clear value.
    async fn add_webhook(&self, user_id: i64, code_sha256: &str, scopes: &[String], at_ms: i64) -> StoreResult<i64>;
    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookInfo>>;
    async fn revoke_webhook(&self, id: i64) -> StoreResult<bool>;
    /// The new outgoing webhook's id; `webhook.id` is ignored.
    async fn add_outgoing_webhook(&self, webhook: &OutgoingWebhook) -> StoreResult<i64>;
    /// In id order.
    async fn list_outgoing_webhooks(&self) -> StoreResult<Vec<OutgoingWebhook>>;
    async fn remove_outgoing_webhook(&self, id: i64) -> StoreResult<bool>;
    /// False when an application with that client id exists already.
    async fn add_app(&self, app: &AppRecord) -> StoreResult<bool>;
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>>;
    async fn remove_app(&self, client_id: &str) -> StoreResult<bool>;
    async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>>;
    async fn add_auth_code(&self, code_sha256: &str, code: &AuthCode) -> StoreResult<()>;
    /// Consume a code: it is deleted whether or not it has expired, so it works at most once.
    async fn take_auth_code(&self, code_sha256: &str) -> StoreResult<Option<AuthCode>>;
    async fn add_tokens(&self, tokens: &TokenRecord) -> StoreResult<()>;
    /// Revoke every token issued to the application (its uninstall); how many pairs went.
    async fn revoke_app_tokens(&self, client_id: &str) -> StoreResult<u64>;
    async fn token_by_access(&self, access_sha256: &str) -> StoreResult<Option<TokenRecord>>;
    async fn token_by_refresh(&self, refresh_sha256: &str) -> StoreResult<Option<TokenRecord>>;
    /// Spends the refresh token `old_refresh_sha256` and stores `new`, atomically: `None` if it was already spent
    /// (or never existed). The old pair's access token keeps working until it expires, as on the vendor (a portal
    /// checks an access token only against its own expiry); spent pairs whose access token expired by `now_ms`
    /// are deleted then.
    async fn rotate_tokens(
        &self,
        old_refresh_sha256: &str,
        new: &TokenRecord,
        now_ms: i64,
    ) -> StoreResult<Option<TokenRecord>>;

    // Event bindings.
    /// The new binding's id; `None` when the same binding (application, event, handler, user, connector)
    /// exists already. The `id` given is ignored.
    async fn add_binding(&self, binding: &EventBinding, at_ms: i64) -> StoreResult<Option<i64>>;
    /// How many bindings were removed.
    async fn remove_bindings(&self, filter: &BindingFilter) -> StoreResult<u64>;
    /// The application's bindings in id order.
    async fn bindings(&self, client_id: &str) -> StoreResult<Vec<EventBinding>>;

    // Deliveries (written through `apply`).
    /// Up to `limit` deliveries due at `now_ms` and not taken by anyone, in the order their events were
    /// produced. A handler whose oldest pending delivery waits for a retry gets none: its deliveries go out in
    /// order.
    async fn due_deliveries(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<PendingDelivery>>;
    /// The newest events matching `filter`, newest first, each with its deliveries and their attempts.
    async fn event_log(&self, filter: &EventLogFilter) -> StoreResult<Vec<LoggedEvent>>;
    /// Queues every delivery of event `event_id` again, due at `now_ms`, attempts kept; how many it has, or
    /// `None` for an unknown event. A delivery being sent (leased) is not sent a second time alongside: it
    /// stays leased and is due again once that attempt is recorded.
    async fn redeliver(&self, event_id: i64, now_ms: i64) -> StoreResult<Option<u64>>;
    /// How many deliveries are pending, and since when the oldest of them waits.
    async fn pending_stats(&self) -> StoreResult<PendingStats>;

    // Offline events (see `offline`).
    /// Reserves up to `limit` free rows of `owner` matching `query` under `process_id`; parallel callers get
    /// disjoint rows.
    async fn offline_reserve(
        &self,
        owner: &offline::Owner,
        query: &offline::Query,
        process_id: &str,
        limit: i64,
    ) -> StoreResult<()>;
    /// Rows of `owner` matching `query` (whose `process_id`/`error` conditions say which), `offset` and `limit`
    /// applied, with the total count of matching rows when `count` is set.
    async fn offline_rows(
        &self,
        owner: &offline::Owner,
        query: &offline::Query,
        offset: i64,
        limit: i64,
        count: bool,
    ) -> StoreResult<(Vec<offline::OfflineEvent>, i64)>;
    /// Deletes the rows of the batch `process_id`, all or those named.
    async fn offline_clear(
        &self,
        owner: &offline::Owner,
        process_id: &str,
        only: &offline::Selection,
    ) -> StoreResult<u64>;
    /// `event.offline.error`: the batch's rows with these MESSAGE_IDs get `ERROR=1` and go back to the queue;
    /// other error-free copies of them are dropped.
    async fn offline_error(&self, owner: &offline::Owner, process_id: &str, message_ids: &[String]) -> StoreResult<()>;
}

pub type DynStore = Arc<dyn Store>;

pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn rfc3339_to_ms(s: &str) -> StoreResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|e| StoreError::Corrupt(format!("date {s:?}: {e}")))
}

/// Open the database named by `url` and apply its migrations.
pub async fn open(url: &str) -> anyhow::Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        anyhow::bail!("unsupported database URL (expected sqlite:// or postgres://): {}", redact_url(url))
    }
}

/// A database URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
