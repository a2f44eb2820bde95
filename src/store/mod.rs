//! Persistence behind one interface. The methods read through it and describe every write as a [`Change`],
//! which a backend applies atomically (one transaction per change); nothing here knows about HTTP.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{Chat, CrmEntityType, CrmRecord, Line, PortalSettings, SessionLink, User};
use crate::fixtures::{FixtureErrors, PortalState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
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

/// A write, applied by the store in one transaction together with its notification and outbox record.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RemoveMember {
        chat_id: i64,
        user_id: i64,
        record: (CrmEntityType, i64),
        at_ms: i64,
    },
    AddMember {
        chat_id: i64,
        user_id: i64,
        record: (CrmEntityType, i64),
        at_ms: i64,
    },
    /// A message from `author`, who must be a member of the chat when the change is applied.
    AddMessage {
        chat_id: i64,
        author: i64,
        text: String,
        record: (CrmEntityType, i64),
        at_ms: i64,
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
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn portal(&self) -> StoreResult<PortalSettings>;
    async fn webhook(&self, user_id: i64, code_sha256: &str) -> StoreResult<Option<WebhookCredential>>;
    async fn user(&self, id: i64) -> StoreResult<Option<User>>;
    async fn crm_record(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Option<CrmRecord>>;
    /// Every session bound to the record, with its chat's connector.
    async fn record_sessions(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Vec<SessionLink>>;
    async fn chat(&self, id: i64) -> StoreResult<Option<Chat>>;
    async fn line(&self, id: i64) -> StoreResult<Option<Line>>;
    async fn is_member(&self, chat_id: i64, user_id: i64) -> StoreResult<bool>;
    /// Member user ids in join order.
    async fn chat_members(&self, chat_id: i64) -> StoreResult<Vec<i64>>;
    /// The CRM records bound to any session of the chat.
    async fn chat_records(&self, chat_id: i64) -> StoreResult<Vec<CrmRecord>>;
    async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome>;
    async fn export_state(&self) -> StoreResult<PortalState>;
    /// Upsert a state file into the portal: merged with what is stored, validated as a whole, written in one
    /// transaction. An invalid file changes nothing.
    async fn load_state(&self, incoming: PortalState, has_portal: bool) -> Result<(), LoadError>;
    /// True once the portal row exists (a state was loaded).
    async fn is_initialized(&self) -> StoreResult<bool>;
}

pub type DynStore = Arc<dyn Store>;

/// Open the database named by `url` and apply its migrations.
pub async fn open(url: &str) -> anyhow::Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        anyhow::bail!("PostgreSQL is not supported by this build yet: {}", redact_url(url))
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
