//! The embedded SQLite backend: WAL, `synchronous=FULL`, foreign keys on; one writer connection so that
//! write transactions never contend, and a pool of readers that never wait for it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};

use super::{
    AppRecord, AuthCode, Change, ChangeOutcome, LoadError, Store, StoreError, StoreResult, TokenRecord,
    WebhookCredential, WebhookInfo, ms_to_rfc3339, rfc3339_to_ms,
};
use crate::domain::{
    Chat, CrmEntityType, CrmRecord, Line, LineLevel, Member, PortalSettings, ReadLevel, SessionLink, SessionStatus,
    User, UserKind, rules,
};
use crate::fixtures::{self, PortalState, StatusDef};

pub struct SqliteStore {
    readers: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every acknowledged change must survive a crash the moment after the response.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Corrupt(format!("create {dir:?}: {e}")))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { readers, writer })
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so a transaction never fails half-way because another
    /// process (a `state load` next to the server) wrote in between.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn read_level(s: &str) -> StoreResult<ReadLevel> {
    ReadLevel::parse(s).ok_or_else(|| StoreError::Corrupt(format!("read level {s:?}")))
}

fn line_level(s: &str) -> StoreResult<LineLevel> {
    LineLevel::parse(s).ok_or_else(|| StoreError::Corrupt(format!("line level {s:?}")))
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<User> {
    let kind: String = row.get("kind");
    Ok(User {
        id: row.get("id"),
        name: row.get("name"),
        last_name: row.get("last_name"),
        active: row.get("active"),
        kind: UserKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("user kind {kind:?}")))?,
        admin: row.get("admin"),
        crm_read: [
            read_level(row.get("crm_read_lead"))?,
            read_level(row.get("crm_read_deal"))?,
            read_level(row.get("crm_read_contact"))?,
            read_level(row.get("crm_read_company"))?,
        ],
        line_join: line_level(row.get("line_join"))?,
        line_history: line_level(row.get("line_history"))?,
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[async_trait]
impl Store for SqliteStore {
    async fn portal(&self) -> StoreResult<PortalSettings> {
        let row = sqlx::query(
            "SELECT domain, language, modules, plan, strict_line_permissions, require_https FROM portal WHERE id = 1",
        )
        .fetch_optional(&self.readers)
        .await?;
        let Some(row) = row else {
            return Ok(PortalSettings::from(&fixtures::PortalSettings::default()));
        };
        Ok(PortalSettings {
            domain: row.get("domain"),
            language: row.get("language"),
            modules: split_list(row.get("modules")),
            plan: row.get("plan"),
            strict_line_permissions: row.get("strict_line_permissions"),
            require_https: row.get("require_https"),
        })
    }

    async fn webhook(&self, user_id: i64, code_sha256: &str) -> StoreResult<Option<WebhookCredential>> {
        let row = sqlx::query("SELECT id, user_id, scopes FROM webhooks WHERE code_sha256 = $1 AND user_id = $2")
            .bind(code_sha256)
            .bind(user_id)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(|r| WebhookCredential {
            id: r.get("id"),
            user_id: r.get("user_id"),
            scopes: split_list(r.get("scopes")),
        }))
    }

    async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(&self.readers).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn crm_record(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Option<CrmRecord>> {
        let Some(row) = sqlx::query("SELECT responsible FROM crm_records WHERE entity_type = $1 AND id = $2")
            .bind(entity_type.as_str())
            .bind(id)
            .fetch_optional(&self.readers)
            .await?
        else {
            return Ok(None);
        };
        let observers = sqlx::query_scalar(
            "SELECT user_id FROM crm_observers WHERE entity_type = $1 AND entity_id = $2 ORDER BY position",
        )
        .bind(entity_type.as_str())
        .bind(id)
        .fetch_all(&self.readers)
        .await?;
        Ok(Some(CrmRecord { entity_type, id, responsible: row.get("responsible"), observers }))
    }

    async fn record_sessions(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Vec<SessionLink>> {
        let rows = sqlx::query(
            "SELECT s.id, s.chat_id, s.status, s.modified_ms, c.connector_id, \
                    COALESCE(k.title, '') AS title, COALESCE(k.active, FALSE) AS connector_active \
             FROM session_crm sc \
             JOIN sessions s ON s.id = sc.session_id \
             JOIN chats c ON c.id = s.chat_id \
             LEFT JOIN connectors k ON k.line_id = c.line_id AND k.id = c.connector_id \
             WHERE sc.entity_type = $1 AND sc.entity_id = $2",
        )
        .bind(entity_type.as_str())
        .bind(id)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SessionLink {
                session_id: r.get("id"),
                chat_id: r.get("chat_id"),
                status: SessionStatus(r.get("status")),
                modified: r.get("modified_ms"),
                connector_id: r.get("connector_id"),
                connector_title: r.get("title"),
                connector_active: r.get("connector_active"),
            })
            .collect())
    }

    async fn chat(&self, id: i64) -> StoreResult<Option<Chat>> {
        let row = sqlx::query("SELECT id, line_id, connector_id, author_id FROM chats WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.map(|r| Chat {
            id: r.get("id"),
            line_id: r.get("line_id"),
            connector_id: r.get("connector_id"),
            author: r.get("author_id"),
        }))
    }

    async fn line(&self, id: i64) -> StoreResult<Option<Line>> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM lines WHERE id = $1").bind(id).fetch_optional(&self.readers).await?;
        if exists.is_none() {
            return Ok(None);
        }
        let queue = sqlx::query_scalar("SELECT user_id FROM line_queue WHERE line_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&self.readers)
            .await?;
        Ok(Some(Line { id, queue }))
    }

    async fn is_member(&self, chat_id: i64, user_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2")
            .bind(chat_id)
            .bind(user_id)
            .fetch_optional(&self.readers)
            .await?;
        Ok(found.is_some())
    }

    async fn chat_members(&self, chat_id: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = $1 ORDER BY join_seq")
            .bind(chat_id)
            .fetch_all(&self.readers)
            .await?)
    }

    async fn chat_records(&self, chat_id: i64) -> StoreResult<Vec<CrmRecord>> {
        let keys: Vec<(String, i64)> = sqlx::query_as(
            "SELECT DISTINCT sc.entity_type, sc.entity_id FROM sessions s \
             JOIN session_crm sc ON sc.session_id = s.id WHERE s.chat_id = $1",
        )
        .bind(chat_id)
        .fetch_all(&self.readers)
        .await?;
        let mut records = Vec::new();
        for (entity_type, id) in keys {
            let entity_type = CrmEntityType::parse(&entity_type)
                .ok_or_else(|| StoreError::Corrupt(format!("crm type {entity_type:?}")))?;
            if let Some(record) = self.crm_record(entity_type, id).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome> {
        let mut tx = self.begin_write().await?;
        let outcome = match change {
            Change::RemoveMember { chat_id, user_id, record, at_ms } => {
                remove_member(&mut tx, chat_id, user_id, record, at_ms).await?
            }
            Change::AddMember { chat_id, user_id, record, at_ms } => {
                add_member(&mut tx, chat_id, user_id, record, at_ms).await?
            }
            Change::AddMessage { chat_id, author, text, record, at_ms } => {
                add_message(&mut tx, chat_id, author, &text, record, at_ms).await?
            }
        };
        match outcome {
            ChangeOutcome::NotAMember | ChangeOutcome::AlreadyAMember => tx.rollback().await?,
            _ => tx.commit().await?,
        }
        Ok(outcome)
    }

    async fn export_state(&self) -> StoreResult<PortalState> {
        let mut conn = self.readers.acquire().await?;
        // One read transaction, so the export is a consistent snapshot even while the server writes.
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        let state = export(&mut conn).await;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        state
    }

    async fn load_state(&self, incoming: PortalState, has_portal: bool) -> Result<(), LoadError> {
        let mut tx = self.begin_write().await?;
        let existing = export(&mut tx).await?;
        let merged = fixtures::merge(existing, incoming, has_portal).map_err(LoadError::Invalid)?;
        write_state(&mut tx, &merged).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn is_initialized(&self) -> StoreResult<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM portal WHERE id = 1").fetch_optional(&self.readers).await?;
        Ok(found.is_some())
    }

    async fn add_webhook(&self, user_id: i64, code_sha256: &str, scopes: &[String], at_ms: i64) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO webhooks (user_id, code_sha256, scopes, created_ms) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(code_sha256)
        .bind(scopes.join(","))
        .bind(at_ms)
        .fetch_one(&self.writer)
        .await?)
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookInfo>> {
        let rows = sqlx::query("SELECT id, user_id, scopes, created_ms FROM webhooks ORDER BY id")
            .fetch_all(&self.readers)
            .await?;
        Ok(rows
            .iter()
            .map(|r| WebhookInfo {
                id: r.get("id"),
                user_id: r.get("user_id"),
                scopes: split_list(r.get("scopes")),
                created_ms: r.get("created_ms"),
            })
            .collect())
    }

    async fn revoke_webhook(&self, id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&self.writer).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_app(&self, app: &AppRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO apps (client_id, secret_sha256, scopes, application_token) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (client_id) DO NOTHING",
        )
        .bind(&app.client_id)
        .bind(&app.secret_sha256)
        .bind(app.scopes.join(","))
        .bind(&app.application_token)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        let rows = sqlx::query("SELECT * FROM apps ORDER BY client_id").fetch_all(&self.readers).await?;
        Ok(rows.iter().map(app_from_row).collect())
    }

    async fn remove_app(&self, client_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM apps WHERE client_id = $1").bind(client_id).execute(&self.writer).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
        let row = sqlx::query("SELECT * FROM apps WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.as_ref().map(app_from_row))
    }

    async fn add_auth_code(&self, code_sha256: &str, code: &AuthCode) -> StoreResult<()> {
        sqlx::query("INSERT INTO oauth_codes (code_sha256, client_id, user_id, expires_ms) VALUES ($1, $2, $3, $4)")
            .bind(code_sha256)
            .bind(&code.client_id)
            .bind(code.user_id)
            .bind(code.expires_ms)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn take_auth_code(&self, code_sha256: &str) -> StoreResult<Option<AuthCode>> {
        let row =
            sqlx::query("DELETE FROM oauth_codes WHERE code_sha256 = $1 RETURNING client_id, user_id, expires_ms")
                .bind(code_sha256)
                .fetch_optional(&self.writer)
                .await?;
        Ok(row.map(|r| AuthCode {
            client_id: r.get("client_id"),
            user_id: r.get("user_id"),
            expires_ms: r.get("expires_ms"),
        }))
    }

    async fn add_tokens(&self, tokens: &TokenRecord) -> StoreResult<()> {
        insert_tokens(&self.writer, tokens).await
    }

    async fn token_by_access(&self, access_sha256: &str) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM oauth_tokens WHERE access_sha256 = $1")
            .bind(access_sha256)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.as_ref().map(token_from_row))
    }

    async fn token_by_refresh(&self, refresh_sha256: &str) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM oauth_tokens WHERE refresh_sha256 = $1")
            .bind(refresh_sha256)
            .fetch_optional(&self.readers)
            .await?;
        Ok(row.as_ref().map(token_from_row))
    }

    async fn rotate_tokens(&self, old_refresh_sha256: &str, new: &TokenRecord) -> StoreResult<Option<TokenRecord>> {
        let mut tx = self.begin_write().await?;
        let old = sqlx::query("DELETE FROM oauth_tokens WHERE refresh_sha256 = $1 RETURNING *")
            .bind(old_refresh_sha256)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(old) = old.as_ref().map(token_from_row) else {
            return Ok(None);
        };
        insert_tokens(&mut *tx, new).await?;
        tx.commit().await?;
        Ok(Some(old))
    }
}

fn app_from_row(r: &sqlx::sqlite::SqliteRow) -> AppRecord {
    AppRecord {
        client_id: r.get("client_id"),
        secret_sha256: r.get("secret_sha256"),
        scopes: split_list(r.get("scopes")),
        application_token: r.get("application_token"),
    }
}

fn token_from_row(r: &sqlx::sqlite::SqliteRow) -> TokenRecord {
    TokenRecord {
        access_sha256: r.get("access_sha256"),
        refresh_sha256: r.get("refresh_sha256"),
        client_id: r.get("client_id"),
        user_id: r.get("user_id"),
        scopes: split_list(r.get("scopes")),
        access_expires_ms: r.get("access_expires_ms"),
        refresh_expires_ms: r.get("refresh_expires_ms"),
    }
}

async fn insert_tokens<'e>(executor: impl sqlx::SqliteExecutor<'e>, t: &TokenRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO oauth_tokens (access_sha256, refresh_sha256, client_id, user_id, scopes, access_expires_ms, \
         refresh_expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&t.access_sha256)
    .bind(&t.refresh_sha256)
    .bind(&t.client_id)
    .bind(t.user_id)
    .bind(t.scopes.join(","))
    .bind(t.access_expires_ms)
    .bind(t.refresh_expires_ms)
    .execute(executor)
    .await?;
    Ok(())
}

async fn remove_member(
    tx: &mut Transaction<'static, Sqlite>,
    chat_id: i64,
    user_id: i64,
    record: (CrmEntityType, i64),
    at_ms: i64,
) -> StoreResult<ChangeOutcome> {
    let deleted = sqlx::query("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .bind(chat_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Ok(ChangeOutcome::NotAMember);
    }
    let rows = sqlx::query(
        "SELECT m.user_id, u.kind, u.active FROM chat_members m JOIN users u ON u.id = m.user_id \
         WHERE m.chat_id = $1 ORDER BY m.join_seq",
    )
    .bind(chat_id)
    .fetch_all(&mut **tx)
    .await?;
    let remaining: Vec<Member> = rows
        .iter()
        .map(|r| Member {
            user_id: r.get("user_id"),
            kind: UserKind::parse(r.get("kind")).unwrap_or(UserKind::Employee),
            active: r.get("active"),
        })
        .collect();
    let author: Option<i64> =
        sqlx::query_scalar("SELECT author_id FROM chats WHERE id = $1").bind(chat_id).fetch_one(&mut **tx).await?;
    let new_author = if author == Some(user_id) { rules::next_author(&remaining, user_id).or(author) } else { author };
    let member_count = remaining.len() as i64;
    sqlx::query("UPDATE chats SET member_count = $1, author_id = $2 WHERE id = $3")
        .bind(member_count)
        .bind(new_author)
        .bind(chat_id)
        .execute(&mut **tx)
        .await?;
    let mut recipients: Vec<i64> = remaining.iter().map(|m| m.user_id).collect();
    recipients.push(user_id);
    record_membership_change(
        tx,
        "chatUserLeave",
        "ONCRMCHATUSERDELETE",
        chat_id,
        user_id,
        member_count,
        recipients,
        record,
        at_ms,
    )
    .await?;
    Ok(ChangeOutcome::MemberRemoved { member_count, author: new_author })
}

async fn add_member(
    tx: &mut Transaction<'static, Sqlite>,
    chat_id: i64,
    user_id: i64,
    record: (CrmEntityType, i64),
    at_ms: i64,
) -> StoreResult<ChangeOutcome> {
    let inserted = sqlx::query(
        "INSERT INTO chat_members (chat_id, user_id, join_seq, joined_at) \
         SELECT id, $2, next_join_seq, $3 FROM chats WHERE id = $1 \
         ON CONFLICT (chat_id, user_id) DO NOTHING",
    )
    .bind(chat_id)
    .bind(user_id)
    .bind(at_ms)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(ChangeOutcome::AlreadyAMember);
    }
    let member_count: i64 = sqlx::query_scalar(
        "UPDATE chats SET next_join_seq = next_join_seq + 1, \
         member_count = (SELECT COUNT(*) FROM chat_members WHERE chat_id = $1) WHERE id = $1 RETURNING member_count",
    )
    .bind(chat_id)
    .fetch_one(&mut **tx)
    .await?;
    let recipients = sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = $1 ORDER BY join_seq")
        .bind(chat_id)
        .fetch_all(&mut **tx)
        .await?;
    record_membership_change(
        tx,
        "chatUserJoin",
        "ONCRMCHATUSERADD",
        chat_id,
        user_id,
        member_count,
        recipients,
        record,
        at_ms,
    )
    .await?;
    Ok(ChangeOutcome::MemberAdded { member_count })
}

async fn add_message(
    tx: &mut Transaction<'static, Sqlite>,
    chat_id: i64,
    author: i64,
    text: &str,
    record: (CrmEntityType, i64),
    at_ms: i64,
) -> StoreResult<ChangeOutcome> {
    let member: Option<i64> = sqlx::query_scalar("SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .bind(chat_id)
        .bind(author)
        .fetch_optional(&mut **tx)
        .await?;
    if member.is_none() {
        return Ok(ChangeOutcome::NotAMember);
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (id, chat_id, author_id, text, date_ms) \
         SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4 FROM messages RETURNING id",
    )
    .bind(chat_id)
    .bind(author)
    .bind(text)
    .bind(at_ms)
    .fetch_one(&mut **tx)
    .await?;
    let event = serde_json::json!({
        "CHAT_ID": chat_id, "MESSAGE_ID": id, "USER_ID": author, "MESSAGE": text,
        "CRM_ENTITY_TYPE": record.0.as_upper(), "CRM_ENTITY": record.1,
    });
    insert_outbox(tx, "ONOPENLINEMESSAGEADD", &event, at_ms).await?;
    Ok(ChangeOutcome::MessageAdded { id })
}

/// The messenger notification for the chat's members and the outbox record of a membership change.
#[allow(clippy::too_many_arguments)]
async fn record_membership_change(
    tx: &mut Transaction<'static, Sqlite>,
    notification_kind: &str,
    event_name: &str,
    chat_id: i64,
    user_id: i64,
    member_count: i64,
    recipients: Vec<i64>,
    record: (CrmEntityType, i64),
    at_ms: i64,
) -> StoreResult<()> {
    let notification = serde_json::json!({
        "chat_id": chat_id, "user_id": user_id, "user_count": member_count, "recipients": recipients,
    });
    sqlx::query("INSERT INTO notifications (chat_id, kind, payload, created_ms) VALUES ($1, $2, $3, $4)")
        .bind(chat_id)
        .bind(notification_kind)
        .bind(notification.to_string())
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    let event = serde_json::json!({
        "CHAT_ID": chat_id, "USER_ID": user_id, "CRM_ENTITY_TYPE": record.0.as_upper(),
        "CRM_ENTITY": record.1, "USER_COUNT": member_count,
    });
    insert_outbox(tx, event_name, &event, at_ms).await
}

async fn insert_outbox(
    tx: &mut Transaction<'static, Sqlite>,
    event: &str,
    payload: &serde_json::Value,
    at_ms: i64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO outbox (event, payload, created_ms) VALUES ($1, $2, $3)")
        .bind(event)
        .bind(payload.to_string())
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn export(conn: &mut sqlx::SqliteConnection) -> StoreResult<PortalState> {
    use crate::fixtures::*;
    let mut state = PortalState::default();
    if let Some(r) = sqlx::query("SELECT * FROM portal WHERE id = 1").fetch_optional(&mut *conn).await? {
        state.portal = fixtures::PortalSettings {
            domain: r.get("domain"),
            language: r.get("language"),
            modules: split_list(r.get("modules")),
            plan: r.get("plan"),
            strict_line_permissions: r.get("strict_line_permissions"),
            require_https: r.get("require_https"),
        };
    }
    for r in sqlx::query("SELECT * FROM users ORDER BY id").fetch_all(&mut *conn).await? {
        let u = user_from_row(&r)?;
        state.users.push(UserDef {
            id: u.id,
            name: u.name,
            last_name: u.last_name,
            active: u.active,
            kind: u.kind.as_str().into(),
            admin: u.admin,
            crm_read: CrmReadDef {
                lead: u.crm_read[0].as_str().into(),
                deal: u.crm_read[1].as_str().into(),
                contact: u.crm_read[2].as_str().into(),
                company: u.crm_read[3].as_str().into(),
            },
            lines: LinePermsDef { join: u.line_join.as_str().into(), history: u.line_history.as_str().into() },
        });
    }
    let observers = sqlx::query("SELECT entity_type, entity_id, user_id FROM crm_observers ORDER BY position")
        .fetch_all(&mut *conn)
        .await?;
    for r in sqlx::query("SELECT * FROM crm_records ORDER BY entity_type, id").fetch_all(&mut *conn).await? {
        let (t, id): (String, i64) = (r.get("entity_type"), r.get("id"));
        state.crm.push(CrmDef {
            observers: observers
                .iter()
                .filter(|o| o.get::<String, _>("entity_type") == t && o.get::<i64, _>("entity_id") == id)
                .map(|o| o.get("user_id"))
                .collect(),
            entity_type: t,
            id,
            title: r.get("title"),
            responsible: r.get("responsible"),
        });
    }
    let queue = sqlx::query("SELECT line_id, user_id FROM line_queue ORDER BY position").fetch_all(&mut *conn).await?;
    let connectors = sqlx::query("SELECT * FROM connectors ORDER BY position").fetch_all(&mut *conn).await?;
    for r in sqlx::query("SELECT * FROM lines ORDER BY id").fetch_all(&mut *conn).await? {
        let id: i64 = r.get("id");
        state.lines.push(LineDef {
            id,
            name: r.get("name"),
            queue: queue.iter().filter(|q| q.get::<i64, _>("line_id") == id).map(|q| q.get("user_id")).collect(),
            connectors: connectors
                .iter()
                .filter(|c| c.get::<i64, _>("line_id") == id)
                .map(|c| ConnectorDef { id: c.get("id"), title: c.get("title"), active: c.get("active") })
                .collect(),
        });
    }
    let mut chats: Vec<ChatDef> = sqlx::query("SELECT * FROM chats ORDER BY id")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| ChatDef {
            id: r.get("id"),
            line: r.get("line_id"),
            connector: r.get("connector_id"),
            author: r.get("author_id"),
            members: Vec::new(),
            sessions: Vec::new(),
            messages: Vec::new(),
        })
        .collect();
    let index: std::collections::HashMap<i64, usize> = chats.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let chat_of = |id: i64| index.get(&id).copied().ok_or_else(|| StoreError::Corrupt(format!("chat {id}")));
    for r in sqlx::query("SELECT chat_id, user_id FROM chat_members ORDER BY chat_id, join_seq")
        .fetch_all(&mut *conn)
        .await?
    {
        chats[chat_of(r.get("chat_id"))?].members.push(r.get("user_id"));
    }
    let links = sqlx::query("SELECT session_id, entity_type, entity_id FROM session_crm ORDER BY session_id, position")
        .fetch_all(&mut *conn)
        .await?;
    let mut links_by_session: std::collections::HashMap<i64, Vec<CrmRefDef>> = Default::default();
    for l in &links {
        links_by_session
            .entry(l.get("session_id"))
            .or_default()
            .push(CrmRefDef { entity_type: l.get("entity_type"), id: l.get("entity_id") });
    }
    for r in sqlx::query("SELECT * FROM sessions ORDER BY chat_id, id").fetch_all(&mut *conn).await? {
        let id: i64 = r.get("id");
        chats[chat_of(r.get("chat_id"))?].sessions.push(SessionDef {
            id,
            status: StatusDef::Name(SessionStatus(r.get("status")).name().into()),
            modified: ms_to_rfc3339(r.get("modified_ms")),
            crm: links_by_session.remove(&id).unwrap_or_default(),
        });
    }
    for r in sqlx::query("SELECT * FROM messages ORDER BY chat_id, id").fetch_all(&mut *conn).await? {
        chats[chat_of(r.get("chat_id"))?].messages.push(MessageDef {
            id: r.get("id"),
            author: r.get("author_id"),
            text: r.get("text"),
            date: ms_to_rfc3339(r.get("date_ms")),
        });
    }
    state.chats = chats;
    for r in sqlx::query("SELECT * FROM webhooks ORDER BY id").fetch_all(&mut *conn).await? {
        state.webhooks.push(WebhookDef {
            id: Some(r.get("id")),
            user: r.get("user_id"),
            code: None,
            code_sha256: Some(r.get("code_sha256")),
            scopes: split_list(r.get("scopes")),
        });
    }
    for r in sqlx::query("SELECT * FROM apps ORDER BY client_id").fetch_all(&mut *conn).await? {
        state.apps.push(AppDef {
            client_id: r.get("client_id"),
            client_secret: None,
            secret_sha256: Some(r.get("secret_sha256")),
            scopes: split_list(r.get("scopes")),
            application_token: r.get("application_token"),
        });
    }
    Ok(state)
}

/// Write a complete, validated state over the stored one. The merged state holds every stored row, so rows
/// are upserted (never deleted, which would cascade to issued tokens); the lists inside a row (members,
/// sessions, queue, …) are replaced. Notifications and the outbox are history, not state, and stay.
async fn write_state(tx: &mut Transaction<'static, Sqlite>, state: &PortalState) -> StoreResult<()> {
    let p = &state.portal;
    sqlx::query(
        "INSERT INTO portal (id, domain, language, modules, plan, strict_line_permissions, require_https) \
         VALUES (1, $1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET domain = excluded.domain, \
         language = excluded.language, modules = excluded.modules, plan = excluded.plan, \
         strict_line_permissions = excluded.strict_line_permissions, require_https = excluded.require_https",
    )
    .bind(&p.domain)
    .bind(&p.language)
    .bind(p.modules.join(","))
    .bind(&p.plan)
    .bind(p.strict_line_permissions)
    .bind(p.require_https)
    .execute(&mut **tx)
    .await?;
    for u in &state.users {
        sqlx::query(
            "INSERT INTO users (id, name, last_name, active, kind, admin, crm_read_lead, crm_read_deal, \
             crm_read_contact, crm_read_company, line_join, line_history) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO UPDATE SET \
             name = excluded.name, last_name = excluded.last_name, active = excluded.active, kind = excluded.kind, \
             admin = excluded.admin, crm_read_lead = excluded.crm_read_lead, crm_read_deal = excluded.crm_read_deal, \
             crm_read_contact = excluded.crm_read_contact, crm_read_company = excluded.crm_read_company, \
             line_join = excluded.line_join, line_history = excluded.line_history",
        )
        .bind(u.id)
        .bind(&u.name)
        .bind(&u.last_name)
        .bind(u.active)
        .bind(&u.kind)
        .bind(u.admin)
        .bind(&u.crm_read.lead)
        .bind(&u.crm_read.deal)
        .bind(&u.crm_read.contact)
        .bind(&u.crm_read.company)
        .bind(&u.lines.join)
        .bind(&u.lines.history)
        .execute(&mut **tx)
        .await?;
    }
    for c in &state.crm {
        sqlx::query(
            "INSERT INTO crm_records (entity_type, id, title, responsible) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (entity_type, id) DO UPDATE SET title = excluded.title, responsible = excluded.responsible",
        )
        .bind(&c.entity_type)
        .bind(c.id)
        .bind(&c.title)
        .bind(c.responsible)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM crm_observers WHERE entity_type = $1 AND entity_id = $2")
            .bind(&c.entity_type)
            .bind(c.id)
            .execute(&mut **tx)
            .await?;
        for (pos, o) in c.observers.iter().enumerate() {
            sqlx::query(
                "INSERT INTO crm_observers (entity_type, entity_id, user_id, position) VALUES ($1, $2, $3, $4)",
            )
            .bind(&c.entity_type)
            .bind(c.id)
            .bind(o)
            .bind(pos as i64)
            .execute(&mut **tx)
            .await?;
        }
    }
    for l in &state.lines {
        sqlx::query("INSERT INTO lines (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name")
            .bind(l.id)
            .bind(&l.name)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM line_queue WHERE line_id = $1").bind(l.id).execute(&mut **tx).await?;
        sqlx::query("DELETE FROM connectors WHERE line_id = $1").bind(l.id).execute(&mut **tx).await?;
        for (pos, u) in l.queue.iter().enumerate() {
            sqlx::query("INSERT INTO line_queue (line_id, user_id, position) VALUES ($1, $2, $3)")
                .bind(l.id)
                .bind(u)
                .bind(pos as i64)
                .execute(&mut **tx)
                .await?;
        }
        for (pos, k) in l.connectors.iter().enumerate() {
            sqlx::query("INSERT INTO connectors (line_id, id, title, active, position) VALUES ($1, $2, $3, $4, $5)")
                .bind(l.id)
                .bind(&k.id)
                .bind(&k.title)
                .bind(k.active)
                .bind(pos as i64)
                .execute(&mut **tx)
                .await?;
        }
    }
    let now = now_ms();
    for c in &state.chats {
        sqlx::query(
            "INSERT INTO chats (id, line_id, connector_id, author_id, member_count, next_join_seq) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO UPDATE SET line_id = excluded.line_id, \
             connector_id = excluded.connector_id, author_id = excluded.author_id, \
             member_count = excluded.member_count, next_join_seq = excluded.next_join_seq",
        )
        .bind(c.id)
        .bind(c.line)
        .bind(&c.connector)
        .bind(c.author)
        .bind(c.members.len() as i64)
        .execute(&mut **tx)
        .await?;
        for table in ["chat_members", "sessions", "messages"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE chat_id = $1")).bind(c.id).execute(&mut **tx).await?;
        }
        for (seq, m) in c.members.iter().enumerate() {
            sqlx::query("INSERT INTO chat_members (chat_id, user_id, join_seq, joined_at) VALUES ($1, $2, $3, $4)")
                .bind(c.id)
                .bind(m)
                .bind(seq as i64)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        for s in &c.sessions {
            let status = match &s.status {
                StatusDef::Code(code) => SessionStatus::from_code(*code),
                StatusDef::Name(name) => SessionStatus::from_name(name),
            }
            .ok_or_else(|| StoreError::Corrupt(format!("session {} status", s.id)))?;
            sqlx::query("INSERT INTO sessions (id, chat_id, status, modified_ms) VALUES ($1, $2, $3, $4)")
                .bind(s.id)
                .bind(c.id)
                .bind(status.0)
                .bind(rfc3339_to_ms(&s.modified)?)
                .execute(&mut **tx)
                .await?;
            for (pos, r) in s.crm.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO session_crm (session_id, entity_type, entity_id, position) VALUES ($1, $2, $3, $4)",
                )
                .bind(s.id)
                .bind(&r.entity_type)
                .bind(r.id)
                .bind(pos as i64)
                .execute(&mut **tx)
                .await?;
            }
        }
        for m in &c.messages {
            sqlx::query("INSERT INTO messages (id, chat_id, author_id, text, date_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(m.id)
                .bind(c.id)
                .bind(m.author)
                .bind(&m.text)
                .bind(rfc3339_to_ms(&m.date)?)
                .execute(&mut **tx)
                .await?;
        }
    }
    for w in &state.webhooks {
        let hash = w.code_sha256.as_deref().ok_or_else(|| StoreError::Corrupt("webhook without hash".into()))?;
        sqlx::query(
            "INSERT INTO webhooks (id, user_id, code_sha256, scopes, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, code_sha256 = excluded.code_sha256, \
             scopes = excluded.scopes",
        )
        .bind(w.id)
        .bind(w.user)
        .bind(hash)
        .bind(w.scopes.join(","))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    for a in &state.apps {
        let hash = a.secret_sha256.as_deref().ok_or_else(|| StoreError::Corrupt("app without hash".into()))?;
        sqlx::query(
            "INSERT INTO apps (client_id, secret_sha256, scopes, application_token) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (client_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, \
             scopes = excluded.scopes, application_token = excluded.application_token",
        )
        .bind(&a.client_id)
        .bind(hash)
        .bind(a.scopes.join(","))
        .bind(&a.application_token)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl From<&fixtures::PortalSettings> for PortalSettings {
    fn from(p: &fixtures::PortalSettings) -> Self {
        PortalSettings {
            domain: p.domain.clone(),
            language: p.language.clone(),
            modules: p.modules.clone(),
            plan: p.plan.clone(),
            strict_line_permissions: p.strict_line_permissions,
            require_https: p.require_https,
        }
    }
}
