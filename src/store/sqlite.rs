//! The embedded SQLite backend: WAL, foreign keys on, every answered change synced to disk (`synchronous=FULL`
//! for loads and credentials; the methods' group-commit writer syncs the WAL itself before it answers, see
//! `sqlite_writer`); one writer connection so that write transactions never contend, and a pool of readers
//! that never wait for it. The SQL it shares with
//! PostgreSQL is generated into `shared` by `store::sql::shared_sql!`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use super::sql::{Backend, Col, Val, shared_sql};
use super::sqlite_writer::GroupWriter;
use super::{Change, ChangeOutcome, ExportDetail, LoadError, StoreError, StoreResult};
use crate::state::PortalState;

pub struct SqliteStore {
    readers: SqlitePool,
    /// For loads, credentials and migrations: writes that are rare and may take long.
    writer: SqlitePool,
    /// For the changes of the methods: committed in groups.
    group: GroupWriter,
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
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(format_args!("creating {dir:?}"), &e))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        super::migrations::migrator(super::migrations::SQLITE).await?.run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone().read_only(true))
            .await?;
        let group = GroupWriter::start(options.get_filename())?;
        Ok(Self { readers, writer, group })
    }
}

shared_sql!(SqliteStore, Sqlite);

impl Backend for SqliteStore {
    type Db = Sqlite;

    const AFTER_EXPLICIT_WEBHOOK_ID: Option<&'static str> = None;
    const AFTER_EXPLICIT_BINDING_ID: Option<&'static str> = None;
    const AFTER_EXPLICIT_OUTGOING_WEBHOOK_ID: Option<&'static str> = None;

    fn json_rows_sql(types: &[Col]) -> String {
        let values: Vec<String> = (0..types.len()).map(|i| format!("value ->> {i}")).collect();
        format!("SELECT {} FROM json_each($1)", values.join(", "))
    }

    /// SQLite has no bulk path beyond statements: a `json_each` insert is as fast as its prepared inserts.
    async fn copy_rows<'a>(
        _tx: &'a mut Transaction<'static, Sqlite>,
        _table: &'a str,
        _columns: &'a [&'a str],
        _values: &'a [Val<'a>],
    ) -> StoreResult<bool> {
        Ok(false)
    }

    /// Children before parents. A `DELETE` without a `WHERE` of a table no foreign key points at empties it
    /// without visiting its rows (memberships, the bulk of a portal).
    const CLEAR_STATE: &'static [&'static str] = &[
        "DELETE FROM session_crm",
        "DELETE FROM sessions",
        "DELETE FROM messages",
        "DELETE FROM chat_members",
        "DELETE FROM crm_observers",
        "DELETE FROM line_queue",
        "DELETE FROM connectors",
        "DELETE FROM oauth_tokens",
        "DELETE FROM oauth_codes",
        "DELETE FROM webhooks",
        "DELETE FROM outgoing_webhook_events",
        "DELETE FROM outgoing_webhooks",
        "DELETE FROM chats",
        "DELETE FROM crm_records",
        "DELETE FROM lines",
        "DELETE FROM apps",
        "DELETE FROM users",
        "DELETE FROM portal",
    ];

    fn reader(&self) -> &SqlitePool {
        &self.readers
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so a transaction never fails half-way because another
    /// process (a `state load` next to the server) wrote in between. It also serializes every write
    /// transaction, which is all the locking SQLite needs.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome> {
        self.group.apply(change).await
    }

    async fn export(&self, detail: ExportDetail) -> StoreResult<PortalState> {
        let mut conn = self.readers.acquire().await?;
        // One read transaction, so the export is a consistent snapshot even while the server writes.
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        let state = shared::export(&mut conn, detail).await;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        state
    }

    /// Holds the write lock (and keeps the group writer waiting) only for the file's own rows: a load of a small
    /// file next to a running server is over in milliseconds whatever the size of the portal.
    async fn load_state(&self, incoming: PortalState, has_portal: bool, now_ms: i64) -> Result<(), LoadError> {
        let mut tx = self.begin_write().await?;
        shared::load(&mut tx, incoming, has_portal, now_ms).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn replace_state(&self, state: &PortalState, clear_history: bool) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        shared::replace_all(&mut tx, state, clear_history).await?;
        tx.commit().await?;
        Ok(())
    }
}
