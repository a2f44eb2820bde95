//! The SQL both backends share. Almost every statement reads the same in SQLite and PostgreSQL (`$1`
//! placeholders, `ON CONFLICT`, `RETURNING`), and with every integer column an INT8/INTEGER both decode
//! to `i64`; only the driver types differ. [`shared_sql!`] therefore writes that code once and is expanded
//! in each backend module for its `sqlx` database type: it generates the backend's `impl Store` and a
//! module `shared` with the transaction-level pieces (one function per change kind, export, state writing).
//!
//! What differs stays with the backend, behind [`Backend`]: connections and pools, how a write transaction
//! begins, and the three transaction-shaped methods — `apply` (SQLite will group-commit there; PostgreSQL
//! takes its row and table locks there), `export_state` (the snapshot) and `load_state` (its locking).

use std::future::Future;

use sqlx::{Database, Pool, Transaction};

use super::{Change, ChangeOutcome, ExportDetail, LoadError, StoreError, StoreResult};
use crate::domain::{LineLevel, PortalSettings, ReadLevel};
use crate::state::{self, PortalState};

/// What a backend provides; [`shared_sql!`] builds the rest of [`super::Store`] on it.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: Database;

    /// Run (with the id as `$1`) after a webhook row was written with an explicit id. SQLite's AUTOINCREMENT
    /// counter follows explicit ids by itself; a PostgreSQL identity must be moved past them.
    const AFTER_EXPLICIT_WEBHOOK_ID: Option<&'static str>;
    /// The same for an event binding's id.
    const AFTER_EXPLICIT_BINDING_ID: Option<&'static str>;
    /// The same for an outgoing webhook's id.
    const AFTER_EXPLICIT_OUTGOING_WEBHOOK_ID: Option<&'static str>;

    /// For reads outside a transaction.
    fn reader(&self) -> &Pool<Self::Db>;
    /// For single-statement writes.
    fn writer(&self) -> &Pool<Self::Db>;
    fn begin_write(&self) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    fn apply(&self, change: Change) -> impl Future<Output = StoreResult<ChangeOutcome>> + Send;
    fn export(&self, detail: ExportDetail) -> impl Future<Output = StoreResult<PortalState>> + Send;
    fn load_state(
        &self,
        incoming: PortalState,
        has_portal: bool,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), LoadError>> + Send;
    /// Replace the whole stored state by a validated one, in one transaction (see `shared::replace_all`).
    fn replace_state(&self, state: &PortalState, clear_history: bool) -> impl Future<Output = StoreResult<()>> + Send;

    /// `SELECT … FROM` the rows of the JSON array bound as `$1` (see [`json_rows`]), a column of each type in
    /// `types`: one statement and one parameter for thousands of rows, parsed by the database. The bulk
    /// inserts, upserts and deletes of [`bulk_sql`] select from it.
    fn json_rows_sql(types: &[Col]) -> String;

    /// Inserts rows (`columns.len()` values each, one after the other) by the database's own bulk path where it
    /// has one, PostgreSQL's `COPY`, which skips parsing a statement's JSON parameter: whether it did. When it
    /// did not, the caller inserts with statements.
    fn copy_rows<'a>(
        tx: &'a mut Transaction<'static, Self::Db>,
        table: &'a str,
        columns: &'a [&'a str],
        values: &'a [Val<'a>],
    ) -> impl Future<Output = StoreResult<bool>> + Send + 'a;

    /// Statements that empty every table of a state, and the OAuth codes and tokens that refer to its users
    /// and applications, in an order the foreign keys accept.
    const CLEAR_STATE: &'static [&'static str];
}

/// Rows per bulk `INSERT`: each statement binds its rows as one JSON array, which bounds the text built for
/// a portal of millions of memberships to a few MB at a time.
pub(crate) const BULK_ROWS: usize = 50_000;

/// Rows per message of a `COPY` (PostgreSQL), so that the text sent is a few hundred KB at a time.
pub(crate) const COPY_ROWS: usize = 10_000;

/// The statement of a bulk write of `table`'s `columns`, its rows selected by `rows` (a backend's
/// [`Backend::json_rows_sql`]). SQLite needs the `WHERE true` to read `ON CONFLICT` as the upsert's and not as
/// part of the `SELECT`.
pub(crate) fn bulk_sql(write: BulkWrite<'_>, table: &str, columns: &[&str], rows: &str) -> String {
    let listed = columns.join(", ");
    match write {
        BulkWrite::Insert => format!("INSERT INTO {table} ({listed}) {rows}"),
        BulkWrite::Upsert { key } => {
            let set: Vec<String> =
                columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{c} = excluded.{c}")).collect();
            format!(
                "INSERT INTO {table} ({listed}) {rows} WHERE true ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                set.join(", ")
            )
        }
        BulkWrite::Delete => format!("DELETE FROM {table} WHERE ({listed}) IN ({rows})"),
    }
}

/// What a bulk statement does with its rows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BulkWrite<'a> {
    Insert,
    /// Insert, or replace the row of the same `key` (its other columns).
    Upsert {
        key: &'a [&'a str],
    },
    /// Delete the rows whose `columns` equal one of the rows.
    Delete,
}

/// The SQL type a bulk-inserted column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    Int,
    Text,
    Bool,
}

impl Val<'_> {
    fn col(&self) -> Col {
        match self {
            Val::Int(_) | Val::OptInt(_) => Col::Int,
            Val::Text(_) => Col::Text,
            Val::Bool(_) => Col::Bool,
        }
    }

    fn write_json(&self, out: &mut String) {
        match *self {
            Val::Int(v) | Val::OptInt(Some(v)) => out.push_str(itoa::Buffer::new().format(v)),
            Val::OptInt(None) => out.push_str("null"),
            Val::Bool(v) => out.push_str(if v { "true" } else { "false" }),
            // Writing a `str` to a `String` cannot fail.
            Val::Text(v) => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
        }
    }
}

/// `[[v, v, …], …]`: rows of `width` values from `values`, taken one after the other.
pub(crate) fn json_rows(values: &[Val<'_>], width: usize) -> String {
    let mut out = String::with_capacity(values.len() * 8 + 2);
    out.push('[');
    for (i, row) in values.chunks(width).enumerate() {
        out.push_str(if i == 0 { "[" } else { ",[" });
        for (j, value) in row.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            value.write_json(&mut out);
        }
        out.push(']');
    }
    out.push(']');
    out
}

/// Rows of `width` values in the text format of PostgreSQL's `COPY … FROM STDIN`: tab-separated, one per line,
/// `\N` for NULL, and backslash, tab, line feed and carriage return escaped in text.
pub(crate) fn copy_text(values: &[Val<'_>], width: usize) -> String {
    let mut out = String::with_capacity(values.len() * 8);
    for row in values.chunks(width) {
        for (j, value) in row.iter().enumerate() {
            if j > 0 {
                out.push('\t');
            }
            match *value {
                Val::Int(v) | Val::OptInt(Some(v)) => out.push_str(itoa::Buffer::new().format(v)),
                Val::OptInt(None) => out.push_str("\\N"),
                Val::Bool(v) => out.push(if v { 't' } else { 'f' }),
                Val::Text(v) => {
                    for c in v.chars() {
                        match c {
                            '\\' => out.push_str("\\\\"),
                            '\t' => out.push_str("\\t"),
                            '\n' => out.push_str("\\n"),
                            '\r' => out.push_str("\\r"),
                            c => out.push(c),
                        }
                    }
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The column types of bulk-inserted rows, from their first row.
pub(crate) fn column_types(first_row: &[Val<'_>]) -> Vec<Col> {
    first_row.iter().map(Val::col).collect()
}

/// One value of a bulk insert.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    Bool(bool),
}

pub(crate) fn read_level(s: &str) -> StoreResult<ReadLevel> {
    ReadLevel::parse(s).ok_or_else(|| StoreError::Corrupt(format!("read level {s:?}")))
}

pub(crate) fn line_level(s: &str) -> StoreResult<LineLevel> {
    LineLevel::parse(s).ok_or_else(|| StoreError::Corrupt(format!("line level {s:?}")))
}

/// Lists (scopes, modules) are stored comma-separated.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect()
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl From<&state::PortalSettings> for PortalSettings {
    fn from(p: &state::PortalSettings) -> Self {
        PortalSettings {
            domain: p.domain.clone(),
            language: p.language.clone(),
            modules: p.modules.clone(),
            plan: p.plan.clone(),
            strict_line_permissions: p.strict_line_permissions,
            require_https: p.require_https,
            event_retries: p.events.retries,
        }
    }
}

/// The statements of the write path, shared by the `sqlx` code below and SQLite's group-commit writer
/// (`rusqlite`). Placeholders `$n` first appear in increasing order, so that SQLite, which numbers named
/// parameters by first appearance, binds them by position too (checked by a test).
pub(crate) mod statements {

    pub const DELETE_MEMBER: &str = "DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2";
    /// The members with their place in the join order: a range of the primary key, sorted by the caller
    /// ([`in_join_order`]). Sorting some twenty rows in SQL costs more than the rest of a removal.
    pub const MEMBERS_WITH_SEQ: &str = "SELECT user_id, join_seq FROM chat_members WHERE chat_id = $1";
    /// What the author hand-over rule needs of one member; asked for in join order until one qualifies.
    pub const USER_KIND: &str = "SELECT kind, active FROM users WHERE id = $1";
    /// After one member left, the count and then the chat's author and new count, in two statements: SQLite
    /// stages a `RETURNING` row in a temporary b-tree, which cost more than a second lookup of the same row.
    pub const DECREMENT_MEMBER_COUNT: &str = "UPDATE chats SET member_count = member_count - 1 WHERE id = $1";
    pub const AUTHOR_AND_COUNT: &str = "SELECT author_id, member_count FROM chats WHERE id = $1";
    pub const SET_AUTHOR: &str = "UPDATE chats SET author_id = $1 WHERE id = $2";
    pub const INSERT_MEMBER: &str = "INSERT INTO chat_members (chat_id, user_id, join_seq, joined_at) \
         SELECT $1, $2, next_join_seq, $3 FROM chats WHERE id = $1 ON CONFLICT (chat_id, user_id) DO NOTHING";
    pub const COUNT_AFTER_JOIN: &str = "UPDATE chats SET next_join_seq = next_join_seq + 1, \
         member_count = (SELECT COUNT(*) FROM chat_members WHERE chat_id = $1) WHERE id = $1 RETURNING member_count";
    pub const IS_MEMBER: &str = "SELECT user_id FROM chat_members WHERE chat_id = $1 AND user_id = $2";
    pub const INSERT_MESSAGE: &str = "INSERT INTO messages (id, chat_id, author_id, text, date_ms) \
         SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4 FROM messages RETURNING id";
    pub const INSERT_NOTIFICATION: &str =
        "INSERT INTO notifications (chat_id, kind, payload, created_ms) VALUES ($1, $2, $3, $4)";
    /// The events some online handler listens to (SQLite's writer keeps them, see `sqlite_writer`).
    pub const LISTENED_EVENTS: &str = "SELECT DISTINCT event FROM event_bindings WHERE handler <> '' \
         UNION SELECT event FROM outgoing_webhook_events";
    /// An event, written only when an online handler is bound to it (of application `$6` when not NULL) or,
    /// for an event of the portal (`$6` NULL), an outgoing webhook is sent it.
    pub const INSERT_EVENT: &str = "INSERT INTO outbox (event, payload, created_ms, user_id, depth) \
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM event_bindings \
         WHERE event = $1 AND handler <> '' AND ($6 IS NULL OR client_id = $6)) \
         OR ($6 IS NULL AND EXISTS (SELECT 1 FROM outgoing_webhook_events WHERE event = $1)) RETURNING id";
    /// The event's deliveries, one per online binding (with the token of the binding's user, or else of the
    /// user who caused the event).
    pub const INSERT_DELIVERIES: &str = "INSERT INTO deliveries (event_id, binding_id, client_id, \
         application_token, handler, user_id, state, attempts, next_attempt_ms, lease_until_ms, updated_ms) \
         SELECT $1, b.id, b.client_id, a.application_token, b.handler, \
         CASE WHEN b.user_id > 0 THEN b.user_id ELSE $2 END, 'pending', 0, $3, 0, $3 \
         FROM event_bindings b JOIN apps a ON a.client_id = b.client_id \
         WHERE b.event = $4 AND b.handler <> '' AND ($5 IS NULL OR b.client_id = $5) ORDER BY b.id";
    /// The event's deliveries to outgoing webhooks: no user, so no tokens; none for an event of one
    /// application (`$4` not NULL).
    pub const INSERT_WEBHOOK_DELIVERIES: &str = "INSERT INTO deliveries (event_id, binding_id, client_id, \
         application_token, handler, user_id, state, attempts, next_attempt_ms, lease_until_ms, updated_ms) \
         SELECT $1, w.id, '', w.application_token, w.handler, 0, 'pending', 0, $2, 0, $2 \
         FROM outgoing_webhook_events e JOIN outgoing_webhooks w ON w.id = e.webhook_id \
         WHERE e.event = $3 AND $4 IS NULL ORDER BY w.id";
    /// Where the deliveries of event `$1` go: its online bindings (in id order, with their application's token)
    /// and then its outgoing webhooks (binding id the webhook's; no client, no user). The SQLite writer keeps
    /// these per event, as it keeps [`LISTENED_EVENTS`], and writes an event's deliveries from them.
    pub const EVENT_TARGETS: &str = "SELECT 0, b.id, b.client_id, a.application_token, b.handler, b.user_id \
         FROM event_bindings b JOIN apps a ON a.client_id = b.client_id WHERE b.event = $1 AND b.handler <> '' \
         UNION ALL SELECT 1, w.id, '', w.application_token, w.handler, 0 \
         FROM outgoing_webhook_events e JOIN outgoing_webhooks w ON w.id = e.webhook_id WHERE e.event = $1 \
         ORDER BY 1, 2";
    /// An event whose deliveries are written by the caller ([`EVENT_TARGETS`]).
    pub const INSERT_EVENT_ROW: &str =
        "INSERT INTO outbox (event, payload, created_ms, user_id, depth) VALUES ($1, $2, $3, $4, $5)";
    /// One delivery of event `$1`, pending and due at `$7`.
    pub const INSERT_DELIVERY_ROW: &str = "INSERT INTO deliveries (event_id, binding_id, client_id, \
         application_token, handler, user_id, state, attempts, next_attempt_ms, lease_until_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, $7)";
    /// The events some offline binding records (SQLite's writer keeps them, like [`LISTENED_EVENTS`]).
    pub const LISTENED_OFFLINE_EVENTS: &str = "SELECT DISTINCT event FROM event_bindings WHERE handler = ''";
    /// An offline event for every offline binding of event `$1` (of application `$6` when not NULL), except the
    /// binding of the application `$7` and connector `$8` that caused it; the same MESSAGE_ID (`$4`) of a free
    /// row refreshes it. Answers the applications that recorded it.
    pub const INSERT_OFFLINE: &str = "INSERT INTO offline_events (client_id, connector_id, event, payload, \
         user_id, message_id, process_id, error, created_ms) \
         SELECT b.client_id, b.connector_id, $1, $2, $3, $4, '', 0, $5 FROM event_bindings b \
         WHERE b.event = $1 AND b.handler = '' AND ($6 IS NULL OR b.client_id = $6) \
         AND NOT (b.client_id = COALESCE($7, '') AND b.connector_id = $8) \
         ON CONFLICT (client_id, connector_id, message_id, process_id) DO UPDATE SET payload = excluded.payload, \
         user_id = excluded.user_id, created_ms = excluded.created_ms RETURNING client_id";
    /// The `ONOFFLINEEVENT` handlers of application `$2` whose `minTimeout` (default 1 s) has passed at `$1`,
    /// marked as notified.
    pub const NOTIFY_OFFLINE: &str = "UPDATE event_bindings SET notified_ms = $1 \
         WHERE event = 'ONOFFLINEEVENT' AND handler <> '' AND client_id = $2 \
         AND (notified_ms IS NULL OR notified_ms + COALESCE(min_timeout, 1) * 1000 <= $1) RETURNING id";
    /// The delivery of event `$1` to the binding `$4` only.
    pub const INSERT_BINDING_DELIVERY: &str = "INSERT INTO deliveries (event_id, binding_id, client_id, \
         application_token, handler, user_id, state, attempts, next_attempt_ms, lease_until_ms, updated_ms) \
         SELECT $1, b.id, b.client_id, a.application_token, b.handler, \
         CASE WHEN b.user_id > 0 THEN b.user_id ELSE $2 END, 'pending', 0, $3, 0, $3 \
         FROM event_bindings b JOIN apps a ON a.client_id = b.client_id WHERE b.id = $4";
    /// Take a delivery if nobody holds it. The attempt made under the new lease comes after any redelivery
    /// asked for so far, so a mark of [`REDELIVER`] left by an abandoned lease is cleared.
    pub const LEASE_DELIVERY: &str = "UPDATE deliveries SET lease_until_ms = $1, requeued = 0 \
         WHERE id = $2 AND state = 'pending' AND lease_until_ms <= $3";
    /// Give a delivery back if it is still held with lease `$2`.
    pub const RELEASE_DELIVERY: &str =
        "UPDATE deliveries SET lease_until_ms = 0 WHERE id = $1 AND lease_until_ms = $2 AND state = 'pending'";
    pub const INSERT_ATTEMPT: &str = "INSERT INTO delivery_attempts (delivery_id, attempt, at_ms, status, error, \
         duration_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO NOTHING";
    /// The attempt's outcome, if the delivery still holds the attempt's lease `$6`; then its attempt row is
    /// written. A delivery queued again while the attempt was in flight ([`REDELIVER`]) stays pending, due at
    /// once.
    pub const FINISH_ATTEMPT: &str = "UPDATE deliveries SET state = CASE WHEN requeued = 0 THEN $1 ELSE 'pending' END, \
         attempts = $2, next_attempt_ms = CASE WHEN requeued = 0 THEN $3 ELSE $4 END, lease_until_ms = 0, \
         updated_ms = $4, requeued = 0 WHERE id = $5 AND lease_until_ms = $6";
    /// Every delivery of event `$2` pending again, due at `$1`, its attempts kept. One that is leased at `$1`
    /// (being sent) keeps its lease, so it is not sent twice at once: it is marked, and [`FINISH_ATTEMPT`]
    /// leaves it pending once its attempt is recorded.
    pub const REDELIVER: &str = "UPDATE deliveries SET state = 'pending', \
         next_attempt_ms = CASE WHEN lease_until_ms > $1 THEN next_attempt_ms ELSE $1 END, \
         requeued = CASE WHEN lease_until_ms > $1 THEN 1 ELSE 0 END, updated_ms = $1 WHERE event_id = $2";
    pub const EVENT_EXISTS: &str = "SELECT id FROM outbox WHERE id = $1";
    /// The newest `$3` events (of name `$1`, with a delivery in state `$2`, when not NULL), each with its
    /// deliveries and their attempts, in event order newest first, then delivery and attempt order.
    pub const EVENT_LOG: &str = "SELECT o.id, o.event, o.payload, o.created_ms, d.id AS delivery_id, d.handler, \
         d.state, a.attempt, a.at_ms, a.status, a.error, a.duration_ms \
         FROM (SELECT id, event, payload, created_ms FROM outbox WHERE ($1 IS NULL OR event = $1) \
         AND ($2 IS NULL OR EXISTS (SELECT 1 FROM deliveries WHERE event_id = outbox.id AND state = $2)) \
         ORDER BY id DESC LIMIT $3) o \
         LEFT JOIN deliveries d ON d.event_id = o.id LEFT JOIN delivery_attempts a ON a.delivery_id = d.id \
         ORDER BY o.id DESC, d.id, a.attempt";
    /// How many deliveries are pending.
    pub const PENDING_COUNT: &str = "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'";
    /// When the event of the oldest pending delivery was produced.
    pub const OLDEST_PENDING: &str = "SELECT o.created_ms FROM deliveries d JOIN outbox o ON o.id = d.event_id \
         WHERE d.state = 'pending' ORDER BY d.state, d.event_id LIMIT 1";
    /// Finished deliveries past the retention: finished before `$1`, or beyond the newest `$2`; `$3` at most.
    pub const PRUNE_DELIVERIES: &str = "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
         WHERE state <> 'pending' AND (updated_ms < $1 OR id <= COALESCE((SELECT id FROM deliveries \
         WHERE state <> 'pending' ORDER BY id DESC LIMIT 1 OFFSET $2), 0)) ORDER BY id LIMIT $3) RETURNING event_id";
    pub const PRUNE_EVENT: &str =
        "DELETE FROM outbox WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = $1)";
    /// The messenger's notices of membership changes (nothing reads them yet): of the oldest `$1`, those
    /// written before `$2` or more than `$3` behind the newest. Ids grow with time, so the oldest are a prefix.
    /// (SQLite numbers `$N` parameters in the order they appear, so they appear in order.)
    pub const PRUNE_NOTIFICATIONS: &str = "DELETE FROM notifications WHERE id IN (SELECT id FROM \
         (SELECT id, created_ms FROM notifications ORDER BY id LIMIT $1) oldest \
         WHERE created_ms < $2 OR id <= COALESCE((SELECT MAX(id) FROM notifications), 0) - $3)";
    /// Tokens that can no longer be used or refreshed, a day after their access token expired (until then an
    /// expired token is still answered `expired_token`). Delivery tokens without a refresh token are such
    /// tokens an hour after they were minted.
    pub const PRUNE_TOKENS: &str =
        "DELETE FROM oauth_tokens WHERE refresh_expires_ms < $1 AND access_expires_ms < $1 - 86400000";
    /// Due deliveries (see `Store::due_deliveries`), in the order of their events. The pending ones are read
    /// in the order of the `(state, event_id)` index so that the `LIMIT` ends the scan: the `+` keeps SQLite
    /// from choosing the `next_attempt_ms` index instead, which made it read and sort every pending delivery
    /// (with its event) on each look, however long the backlog.
    pub const DUE_DELIVERIES: &str = "SELECT d.id, d.event_id, d.binding_id, d.client_id, d.application_token, \
         d.handler, d.user_id, d.attempts, o.event, o.payload, o.created_ms, o.depth \
         FROM deliveries d JOIN outbox o ON o.id = d.event_id \
         WHERE d.state = 'pending' AND +d.next_attempt_ms <= $1 AND d.lease_until_ms <= $1 \
         AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.state = 'pending' AND e.next_attempt_ms > $1 \
         AND e.handler = d.handler AND e.id < d.id) ORDER BY d.event_id, d.id LIMIT $2";

    /// The event that tells an application offline events were recorded for it.
    pub const OFFLINE_NOTICE: &str = "ONOFFLINEEVENT";

    /// Events past this depth are not produced: the loop guard.
    pub const MAX_EVENT_DEPTH: i64 = 7;

    #[cfg(test)]
    pub const ALL: [&str; 36] = [
        DELETE_MEMBER,
        DECREMENT_MEMBER_COUNT,
        AUTHOR_AND_COUNT,
        SET_AUTHOR,
        MEMBERS_WITH_SEQ,
        USER_KIND,
        INSERT_MEMBER,
        COUNT_AFTER_JOIN,
        IS_MEMBER,
        INSERT_MESSAGE,
        INSERT_NOTIFICATION,
        LISTENED_EVENTS,
        INSERT_EVENT,
        INSERT_DELIVERIES,
        INSERT_WEBHOOK_DELIVERIES,
        EVENT_TARGETS,
        INSERT_EVENT_ROW,
        INSERT_DELIVERY_ROW,
        LISTENED_OFFLINE_EVENTS,
        INSERT_OFFLINE,
        NOTIFY_OFFLINE,
        INSERT_BINDING_DELIVERY,
        LEASE_DELIVERY,
        RELEASE_DELIVERY,
        INSERT_ATTEMPT,
        FINISH_ATTEMPT,
        PRUNE_DELIVERIES,
        PRUNE_EVENT,
        PRUNE_NOTIFICATIONS,
        PRUNE_TOKENS,
        DUE_DELIVERIES,
        REDELIVER,
        EVENT_EXISTS,
        EVENT_LOG,
        PENDING_COUNT,
        OLDEST_PENDING,
    ];

    /// The user ids of `(user_id, join_seq)` rows, longest-standing member first.
    pub fn in_join_order(mut rows: Vec<(i64, i64)>) -> Vec<i64> {
        rows.sort_unstable_by_key(|&(_, seq)| seq);
        rows.into_iter().map(|(id, _)| id).collect()
    }

    /// A member as the author hand-over rule sees it, from a [`USER_KIND`] row.
    pub fn member(user_id: i64, kind: &str, active: bool) -> crate::domain::Member {
        use crate::domain::UserKind;
        crate::domain::Member { user_id, kind: UserKind::parse(kind).unwrap_or(UserKind::Employee), active }
    }

    /// The messenger notification (for the members before the change) and the outbox event of a membership
    /// change, as stored JSON. Written directly: they hold only integers and fixed upper-case names, and the
    /// SQLite writer builds one pair per removal on its single thread.
    pub fn membership_payloads(
        chat_id: i64,
        user_id: i64,
        member_count: i64,
        recipients: &[i64],
        record: crate::domain::RecordRef,
    ) -> (String, String) {
        // `itoa` rather than `write!`: the formatting machinery was a sixteenth of the writer's instructions.
        let mut digits = itoa::Buffer::new();
        let mut int = |out: &mut String, n: i64| out.push_str(digits.format(n));
        let mut notification = String::with_capacity(64 + recipients.len() * 8);
        notification.push_str(r#"{"chat_id":"#);
        int(&mut notification, chat_id);
        notification.push_str(r#","user_id":"#);
        int(&mut notification, user_id);
        notification.push_str(r#","user_count":"#);
        int(&mut notification, member_count);
        notification.push_str(r#","recipients":["#);
        for (i, &id) in recipients.iter().enumerate() {
            if i > 0 {
                notification.push(',');
            }
            int(&mut notification, id);
        }
        notification.push_str("]}");
        let mut event = String::with_capacity(112);
        event.push_str(r#"{"CHAT_ID":"#);
        int(&mut event, chat_id);
        event.push_str(r#","USER_ID":"#);
        int(&mut event, user_id);
        event.push_str(r#","CRM_ENTITY_TYPE":""#);
        event.push_str(record.entity_type.as_upper());
        event.push_str(r#"","CRM_ENTITY":"#);
        int(&mut event, record.id);
        event.push_str(r#","USER_COUNT":"#);
        int(&mut event, member_count);
        event.push('}');
        (notification, event)
    }

    /// The `ONOPENLINEMESSAGEADD` event of a stored message, in the vendor's shape (`DATA[0]` with the
    /// chat, the message and the connector; what crmchat does not model is left out).
    pub fn message_payload(
        chat_id: i64,
        id: i64,
        author: i64,
        text: &str,
        at_ms: i64,
        line_id: i64,
        connector_id: &str,
    ) -> String {
        let date = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at_ms)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S+00:00")
            .to_string();
        serde_json::json!({"DATA": [{
            "chat": {"id": chat_id},
            "message": {"id": id, "date": date, "text": text, "user_id": author, "system": "N"},
            "connector": {"connector_id": connector_id, "line_id": line_id, "chat_id": chat_id, "user_id": author},
        }]})
        .to_string()
    }
}

/// `shared_sql!(SqliteStore, Sqlite)`, in the backend's module: `impl Store for SqliteStore` and the module
/// `shared` (see the module documentation), for the `sqlx` database `sqlx::Sqlite`.
macro_rules! shared_sql {
    ($store:ident, $db:ident) => {
        /// Generated by `store::sql::shared_sql!`: the code this backend shares with the other one.
        pub(crate) mod shared {
            use async_trait::async_trait;
            use sqlx::{$db, Row as _, Transaction};

            use super::$store;
            use $crate::domain::{
                Chat, CrmEntityType, CrmRecord, Line, PortalSettings, SessionLink, SessionStatus, User, UserKind,
            };
            use $crate::state::{self, PortalState};
            use $crate::store::sql::{Backend, BulkWrite, Val, bulk_sql, column_types, json_rows, line_level, now_ms, read_level, split_list};
            use $crate::store::{
                AppRecord, AuthCode, BindingFilter, Change, ChangeOutcome, ChatDetail, Counts, DeliveryState, EventBinding, EventLogFilter, ExportDetail, LoadError, LoggedAttempt, LoggedDelivery, LoggedEvent, PendingDelivery, PendingStats, Store, StoreError, StoreResult, TokenRecord,
                OutgoingWebhook, WebhookCredential, WebhookInfo, ms_to_rfc3339, offline, rfc3339_to_ms,
            };

            type Row = <$db as sqlx::Database>::Row;
            type Connection = <$db as sqlx::Database>::Connection;
            pub(crate) type Tx = Transaction<'static, $db>;

            #[async_trait]
            impl Store for $store {
                async fn portal(&self) -> StoreResult<std::sync::Arc<PortalSettings>> {
                    let row = sqlx::query(
                        "SELECT domain, language, modules, plan, strict_line_permissions, require_https, \
                         event_retries FROM portal WHERE id = 1",
                    )
                    .fetch_optional(self.reader())
                    .await?;
                    let Some(row) = row else {
                        return Ok(PortalSettings::from(&state::PortalSettings::default()).into());
                    };
                    Ok(std::sync::Arc::new(PortalSettings {
                        domain: row.get("domain"),
                        language: row.get("language"),
                        modules: split_list(row.get("modules")),
                        plan: row.get("plan"),
                        strict_line_permissions: row.get("strict_line_permissions"),
                        require_https: row.get("require_https"),
                        event_retries: row.get("event_retries"),
                    }))
                }

                async fn webhook(&self, user_id: i64, code_sha256: &str) -> StoreResult<Option<WebhookCredential>> {
                    let row =
                        sqlx::query("SELECT id, user_id, scopes FROM webhooks WHERE code_sha256 = $1 AND user_id = $2")
                            .bind(code_sha256)
                            .bind(user_id)
                            .fetch_optional(self.reader())
                            .await?;
                    Ok(row.map(|r| WebhookCredential {
                        id: r.get("id"),
                        user_id: r.get("user_id"),
                        scopes: split_list(r.get("scopes")),
                    }))
                }

                async fn user(&self, id: i64) -> StoreResult<Option<std::sync::Arc<User>>> {
                    let row =
                        sqlx::query("SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(self.reader()).await?;
                    Ok(row.as_ref().map(user_from_row).transpose()?.map(std::sync::Arc::new))
                }

                async fn crm_record(&self, entity_type: CrmEntityType, id: i64) -> StoreResult<Option<CrmRecord>> {
                    let Some(row) = sqlx::query("SELECT responsible FROM crm_records WHERE entity_type = $1 AND id = $2")
                        .bind(entity_type.as_str())
                        .bind(id)
                        .fetch_optional(self.reader())
                        .await?
                    else {
                        return Ok(None);
                    };
                    let observers = sqlx::query_scalar(
                        "SELECT user_id FROM crm_observers WHERE entity_type = $1 AND entity_id = $2 ORDER BY position",
                    )
                    .bind(entity_type.as_str())
                    .bind(id)
                    .fetch_all(self.reader())
                    .await?;
                    Ok(Some(CrmRecord { entity_type, id, responsible: row.get("responsible"), observers }))
                }

                async fn record_sessions(
                    &self,
                    entity_type: CrmEntityType,
                    id: i64,
                ) -> StoreResult<Vec<SessionLink>> {
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
                    .fetch_all(self.reader())
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
                    let row = sqlx::query("SELECT id, line_id, connector_id FROM chats WHERE id = $1")
                        .bind(id)
                        .fetch_optional(self.reader())
                        .await?;
                    Ok(row.map(|r| Chat {
                        id: r.get("id"),
                        line_id: r.get("line_id"),
                        connector_id: r.get("connector_id"),
                    }))
                }

                async fn line(&self, id: i64) -> StoreResult<Option<Line>> {
                    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM lines WHERE id = $1")
                        .bind(id)
                        .fetch_optional(self.reader())
                        .await?;
                    if exists.is_none() {
                        return Ok(None);
                    }
                    let queue =
                        sqlx::query_scalar("SELECT user_id FROM line_queue WHERE line_id = $1 ORDER BY position")
                            .bind(id)
                            .fetch_all(self.reader())
                            .await?;
                    Ok(Some(Line { id, queue }))
                }

                async fn chat_members(&self, chat_id: i64) -> StoreResult<Vec<i64>> {
                    Ok(sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = $1 ORDER BY join_seq")
                        .bind(chat_id)
                        .fetch_all(self.reader())
                        .await?)
                }

                async fn chat_records(&self, chat_id: i64) -> StoreResult<Vec<CrmRecord>> {
                    let keys: Vec<(String, i64)> = sqlx::query_as(
                        "SELECT DISTINCT sc.entity_type, sc.entity_id FROM sessions s \
                         JOIN session_crm sc ON sc.session_id = s.id WHERE s.chat_id = $1",
                    )
                    .bind(chat_id)
                    .fetch_all(self.reader())
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
                    <Self as Backend>::apply(self, change).await
                }

                async fn export_state(&self) -> StoreResult<PortalState> {
                    <Self as Backend>::export(self, ExportDetail::Everything).await
                }

                async fn export_structure(&self) -> StoreResult<PortalState> {
                    <Self as Backend>::export(self, ExportDetail::Structure).await
                }

                async fn load_state(&self, incoming: PortalState, has_portal: bool, now_ms: i64) -> Result<(), LoadError> {
                    <Self as Backend>::load_state(self, incoming, has_portal, now_ms).await
                }

                async fn replace_state(&self, state: &PortalState, clear_history: bool) -> StoreResult<()> {
                    <Self as Backend>::replace_state(self, state, clear_history).await
                }

                async fn revision(&self) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar("SELECT value FROM revision WHERE id = 1").fetch_one(self.reader()).await?)
                }

                fn pool_use(&self) -> Vec<$crate::telemetry::PoolUse> {
                    let usage = |pool_name, pool: &sqlx::Pool<$db>| $crate::telemetry::PoolUse {
                        pool: pool_name,
                        open: pool.size(),
                        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                        max: pool.options().get_max_connections(),
                    };
                    if std::ptr::eq(self.reader(), self.writer()) {
                        vec![usage("main", self.reader())]
                    } else {
                        vec![usage("readers", self.reader()), usage("writer", self.writer())]
                    }
                }

                async fn counts(&self) -> StoreResult<Counts> {
                    let row = sqlx::query(
                        "SELECT (SELECT COUNT(*) FROM users) AS users, (SELECT COUNT(*) FROM crm_records) AS records, \
                                (SELECT COUNT(*) FROM chats) AS chats, (SELECT COUNT(*) FROM chat_members) AS members, \
                                (SELECT COUNT(*) FROM messages) AS messages",
                    )
                    .fetch_one(self.reader())
                    .await?;
                    Ok(Counts {
                        users: row.get("users"),
                        records: row.get("records"),
                        chats: row.get("chats"),
                        memberships: row.get("members"),
                        messages: row.get("messages"),
                    })
                }

                async fn chat_detail(&self, chat_id: i64, last_messages: i64) -> StoreResult<Option<ChatDetail>> {
                    use $crate::state::{CrmRefDef, MessageDef, SessionDef, StatusDef};
                    let Some(row) = sqlx::query("SELECT author_id FROM chats WHERE id = $1")
                        .bind(chat_id)
                        .fetch_optional(self.reader())
                        .await?
                    else {
                        return Ok(None);
                    };
                    let author: Option<i64> = row.get("author_id");
                    let links = sqlx::query(
                        "SELECT sc.session_id, sc.entity_type, sc.entity_id FROM session_crm sc \
                         JOIN sessions s ON s.id = sc.session_id WHERE s.chat_id = $1 ORDER BY sc.session_id, sc.position",
                    )
                    .bind(chat_id)
                    .fetch_all(self.reader())
                    .await?;
                    let sessions = sqlx::query("SELECT id, status, modified_ms FROM sessions WHERE chat_id = $1 ORDER BY id")
                        .bind(chat_id)
                        .fetch_all(self.reader())
                        .await?
                        .iter()
                        .map(|r| {
                            let id: i64 = r.get("id");
                            SessionDef {
                                id,
                                status: StatusDef::Name(SessionStatus(r.get("status")).name().into()),
                                modified: ms_to_rfc3339(r.get("modified_ms")),
                                crm: links
                                    .iter()
                                    .filter(|l| l.get::<i64, _>("session_id") == id)
                                    .map(|l| CrmRefDef { entity_type: l.get("entity_type"), id: l.get("entity_id") })
                                    .collect(),
                            }
                        })
                        .collect();
                    let message_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE chat_id = $1")
                        .bind(chat_id)
                        .fetch_one(self.reader())
                        .await?;
                    let mut messages: Vec<MessageDef> = sqlx::query(
                        "SELECT id, author_id, text, date_ms FROM messages WHERE chat_id = $1 ORDER BY id DESC LIMIT $2",
                    )
                    .bind(chat_id)
                    .bind(last_messages)
                    .fetch_all(self.reader())
                    .await?
                    .iter()
                    .map(|r| MessageDef {
                        id: r.get("id"),
                        author: r.get("author_id"),
                        text: r.get("text"),
                        date: ms_to_rfc3339(r.get("date_ms")),
                    })
                    .collect();
                    messages.reverse();
                    Ok(Some(ChatDetail { author, sessions, messages, message_count }))
                }

                async fn is_initialized(&self) -> StoreResult<bool> {
                    let found: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM portal WHERE id = 1").fetch_optional(self.reader()).await?;
                    Ok(found.is_some())
                }

                async fn add_webhook(
                    &self,
                    user_id: i64,
                    code_sha256: &str,
                    scopes: &[String],
                    at_ms: i64,
                ) -> StoreResult<i64> {
                    let mut tx = self.begin_write().await?;
                    let id = sqlx::query_scalar(
                        "INSERT INTO webhooks (user_id, code_sha256, scopes, created_ms) VALUES ($1, $2, $3, $4) \
                         RETURNING id",
                    )
                    .bind(user_id)
                    .bind(code_sha256)
                    .bind(scopes.join(","))
                    .bind(at_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                    bump_revision(&mut tx).await?;
                    tx.commit().await?;
                    Ok(id)
                }

                async fn list_webhooks(&self) -> StoreResult<Vec<WebhookInfo>> {
                    let rows = sqlx::query("SELECT id, user_id, scopes, created_ms FROM webhooks ORDER BY id")
                        .fetch_all(self.reader())
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
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *tx).await?;
                    bump_revision(&mut tx).await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn add_outgoing_webhook(&self, webhook: &OutgoingWebhook) -> StoreResult<i64> {
                    let mut tx = self.begin_write().await?;
                    let def = state::OutgoingWebhookDef {
                        id: None,
                        handler: webhook.handler.clone(),
                        events: webhook.events.clone(),
                        application_token: webhook.application_token.clone(),
                    };
                    let id = upsert_outgoing_webhook(&mut tx, &def, webhook.created_ms).await?;
                    bump_revision(&mut tx).await?;
                    tx.commit().await?;
                    Ok(id)
                }

                async fn list_outgoing_webhooks(&self) -> StoreResult<Vec<OutgoingWebhook>> {
                    let mut conn = self.reader().acquire().await?;
                    read_outgoing_webhooks(&mut conn).await
                }

                async fn remove_outgoing_webhook(&self, id: i64) -> StoreResult<bool> {
                    let mut tx = self.begin_write().await?;
                    sqlx::query("DELETE FROM outgoing_webhook_events WHERE webhook_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    let done =
                        sqlx::query("DELETE FROM outgoing_webhooks WHERE id = $1").bind(id).execute(&mut *tx).await?;
                    bump_revision(&mut tx).await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn add_app(&self, app: &AppRecord) -> StoreResult<bool> {
                    let mut tx = self.begin_write().await?;
                    let done = sqlx::query(
                        "INSERT INTO apps (client_id, secret_sha256, scopes, application_token) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO NOTHING",
                    )
                    .bind(&app.client_id)
                    .bind(&app.secret_sha256)
                    .bind(app.scopes.join(","))
                    .bind(&app.application_token)
                    .execute(&mut *tx)
                    .await?;
                    bump_revision(&mut tx).await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
                    let rows = sqlx::query("SELECT * FROM apps ORDER BY client_id").fetch_all(self.reader()).await?;
                    Ok(rows.iter().map(app_from_row).collect())
                }

                async fn remove_app(&self, client_id: &str) -> StoreResult<bool> {
                    let mut tx = self.begin_write().await?;
                    let done =
                        sqlx::query("DELETE FROM apps WHERE client_id = $1").bind(client_id).execute(&mut *tx).await?;
                    bump_revision(&mut tx).await?;
                    tx.commit().await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
                    let row = sqlx::query("SELECT * FROM apps WHERE client_id = $1")
                        .bind(client_id)
                        .fetch_optional(self.reader())
                        .await?;
                    Ok(row.as_ref().map(app_from_row))
                }

                async fn add_auth_code(&self, code_sha256: &str, code: &AuthCode) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO oauth_codes (code_sha256, client_id, user_id, expires_ms) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(code_sha256)
                    .bind(&code.client_id)
                    .bind(code.user_id)
                    .bind(code.expires_ms)
                    .execute(self.writer())
                    .await?;
                    Ok(())
                }

                async fn take_auth_code(&self, code_sha256: &str) -> StoreResult<Option<AuthCode>> {
                    let row = sqlx::query(
                        "DELETE FROM oauth_codes WHERE code_sha256 = $1 RETURNING client_id, user_id, expires_ms",
                    )
                    .bind(code_sha256)
                    .fetch_optional(self.writer())
                    .await?;
                    Ok(row.map(|r| AuthCode {
                        client_id: r.get("client_id"),
                        user_id: r.get("user_id"),
                        expires_ms: r.get("expires_ms"),
                    }))
                }

                async fn add_tokens(&self, tokens: &TokenRecord) -> StoreResult<()> {
                    insert_tokens(self.writer(), tokens).await
                }

                async fn revoke_app_tokens(&self, client_id: &str) -> StoreResult<u64> {
                    let done = sqlx::query("DELETE FROM oauth_tokens WHERE client_id = $1")
                        .bind(client_id)
                        .execute(self.writer())
                        .await?;
                    Ok(done.rows_affected())
                }

                async fn token_by_access(&self, access_sha256: &str) -> StoreResult<Option<TokenRecord>> {
                    let row = sqlx::query("SELECT * FROM oauth_tokens WHERE access_sha256 = $1")
                        .bind(access_sha256)
                        .fetch_optional(self.reader())
                        .await?;
                    Ok(row.as_ref().map(token_from_row))
                }

                async fn token_by_refresh(&self, refresh_sha256: &str) -> StoreResult<Option<TokenRecord>> {
                    let row = sqlx::query("SELECT * FROM oauth_tokens WHERE refresh_sha256 = $1")
                        .bind(refresh_sha256)
                        .fetch_optional(self.reader())
                        .await?;
                    Ok(row.as_ref().map(token_from_row))
                }

                async fn rotate_tokens(
                    &self,
                    old_refresh_sha256: &str,
                    new: &TokenRecord,
                    now_ms: i64,
                ) -> StoreResult<Option<TokenRecord>> {
                    let mut tx = self.begin_write().await?;
                    // The old pair stays for its access token, with a refresh hash no token can have (hashes are
                    // hex). Two refreshes with the same token: the second UPDATE waits for the first and then finds
                    // nothing, so a refresh token works once on either backend.
                    let old = sqlx::query(
                        "UPDATE oauth_tokens SET refresh_sha256 = 'spent:' || access_sha256, refresh_expires_ms = 0 \
                         WHERE refresh_sha256 = $1 RETURNING *",
                    )
                    .bind(old_refresh_sha256)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(old) = old.as_ref().map(token_from_row) else {
                        return Ok(None);
                    };
                    // Spent pairs are kept no longer than their access token lives.
                    sqlx::query("DELETE FROM oauth_tokens WHERE refresh_expires_ms = 0 AND access_expires_ms <= $1")
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    insert_tokens(&mut *tx, new).await?;
                    tx.commit().await?;
                    Ok(Some(old))
                }

                async fn add_binding(&self, b: &EventBinding, at_ms: i64) -> StoreResult<Option<i64>> {
                    Ok(sqlx::query_scalar(
                        "INSERT INTO event_bindings (client_id, event, handler, user_id, connector_id, min_timeout, \
                         created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (client_id, event, handler, user_id, connector_id) DO NOTHING RETURNING id",
                    )
                    .bind(&b.client_id)
                    .bind(&b.event)
                    .bind(&b.handler)
                    .bind(b.user_id)
                    .bind(&b.connector_id)
                    .bind(b.min_timeout)
                    .bind(at_ms)
                    .fetch_optional(self.writer())
                    .await?)
                }

                async fn remove_bindings(&self, f: &BindingFilter) -> StoreResult<u64> {
                    // NULL leaves a condition out.
                    let done = sqlx::query(
                        "DELETE FROM event_bindings WHERE client_id = $1 AND event = $2 AND handler = $3 \
                         AND ($4 IS NULL OR user_id = $4) AND ($5 IS NULL OR connector_id = $5)",
                    )
                    .bind(&f.client_id)
                    .bind(&f.event)
                    .bind(&f.handler)
                    .bind(f.user_id)
                    .bind(f.connector_id.as_deref())
                    .execute(self.writer())
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn due_deliveries(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<PendingDelivery>> {
                    let rows = sqlx::query($crate::store::sql::statements::DUE_DELIVERIES)
                        .bind(now_ms)
                        .bind(limit)
                        .fetch_all(self.reader())
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| PendingDelivery {
                            id: r.get("id"),
                            event_id: r.get("event_id"),
                            binding_id: r.get("binding_id"),
                            client_id: r.get("client_id"),
                            application_token: r.get("application_token"),
                            handler: r.get("handler"),
                            user_id: r.get("user_id"),
                            attempts: r.get("attempts"),
                            event: r.get("event"),
                            payload: r.get("payload"),
                            created_ms: r.get("created_ms"),
                            depth: r.get("depth"),
                        })
                        .collect())
                }

                async fn event_log(&self, filter: &EventLogFilter) -> StoreResult<Vec<LoggedEvent>> {
                    let rows = sqlx::query($crate::store::sql::statements::EVENT_LOG)
                        .bind(filter.event.as_deref())
                        .bind(filter.state.map(DeliveryState::as_str))
                        .bind(filter.limit)
                        .fetch_all(self.reader())
                        .await?;
                    let mut events: Vec<LoggedEvent> = Vec::new();
                    for r in &rows {
                        let id: i64 = r.get("id");
                        if events.last().is_none_or(|e| e.id != id) {
                            events.push(LoggedEvent {
                                id,
                                event: r.get("event"),
                                payload: r.get("payload"),
                                created_ms: r.get("created_ms"),
                                deliveries: Vec::new(),
                            });
                        }
                        let event = events.last_mut().expect("pushed above");
                        let Some(delivery_id) = r.get::<Option<i64>, _>("delivery_id") else { continue };
                        if event.deliveries.last().is_none_or(|d| d.id != delivery_id) {
                            event.deliveries.push(LoggedDelivery {
                                id: delivery_id,
                                handler: r.get("handler"),
                                state: r.get("state"),
                                attempts: Vec::new(),
                            });
                        }
                        let delivery = event.deliveries.last_mut().expect("pushed above");
                        let Some(attempt) = r.get::<Option<i64>, _>("attempt") else { continue };
                        delivery.attempts.push(LoggedAttempt {
                            attempt,
                            at_ms: r.get("at_ms"),
                            status: r.get("status"),
                            error: r.get("error"),
                            duration_ms: r.get("duration_ms"),
                        });
                    }
                    Ok(events)
                }

                async fn redeliver(&self, event_id: i64, now_ms: i64) -> StoreResult<Option<u64>> {
                    use $crate::store::sql::statements as sql;
                    let mut tx = self.begin_write().await?;
                    let exists: Option<i64> =
                        sqlx::query_scalar(sql::EVENT_EXISTS).bind(event_id).fetch_optional(&mut *tx).await?;
                    if exists.is_none() {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    let done = sqlx::query(sql::REDELIVER).bind(now_ms).bind(event_id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(Some(done.rows_affected()))
                }

                async fn pending_stats(&self) -> StoreResult<PendingStats> {
                    use $crate::store::sql::statements as sql;
                    let mut conn = self.reader().acquire().await?;
                    let count: i64 = sqlx::query_scalar(sql::PENDING_COUNT).fetch_one(&mut *conn).await?;
                    let oldest_created_ms: Option<i64> =
                        sqlx::query_scalar(sql::OLDEST_PENDING).fetch_optional(&mut *conn).await?;
                    Ok(PendingStats { count, oldest_created_ms })
                }

                async fn bindings(&self, client_id: &str) -> StoreResult<Vec<EventBinding>> {
                    let rows = sqlx::query("SELECT * FROM event_bindings WHERE client_id = $1 ORDER BY id")
                        .bind(client_id)
                        .fetch_all(self.reader())
                        .await?;
                    Ok(rows.iter().map(binding_from_row).collect())
                }

                async fn offline_reserve(
                    &self,
                    owner: &offline::Owner,
                    query: &offline::Query,
                    process_id: &str,
                    limit: i64,
                ) -> StoreResult<()> {
                    let built = offline::build(query);
                    // On PostgreSQL, callers reserving at once skip each other's rows instead of waiting for them
                    // (and then finding them taken); SQLite has one writer, so the batches are disjoint anyway.
                    let skip_locked =
                        if <$db as sqlx::Database>::NAME == "PostgreSQL" { " FOR UPDATE SKIP LOCKED" } else { "" };
                    let n = built.params.len();
                    let sql = format!(
                        "UPDATE offline_events SET process_id = ${} WHERE id IN (SELECT id FROM offline_events \
                         WHERE {} ORDER BY {} LIMIT ${}{skip_locked}) AND process_id = ''",
                        n + 3,
                        built.where_sql,
                        built.order_sql,
                        n + 4,
                    );
                    bind_offline(sqlx::query(&sql), owner, &built.params)
                        .bind(process_id)
                        .bind(limit)
                        .execute(self.writer())
                        .await?;
                    Ok(())
                }

                async fn offline_rows(
                    &self,
                    owner: &offline::Owner,
                    query: &offline::Query,
                    offset: i64,
                    limit: i64,
                    count: bool,
                ) -> StoreResult<(Vec<offline::OfflineEvent>, i64)> {
                    let built = offline::build(query);
                    let n = built.params.len();
                    let sql = format!(
                        "SELECT {} FROM offline_events WHERE {} ORDER BY {} LIMIT ${} OFFSET ${}",
                        offline::COLUMNS,
                        built.where_sql,
                        built.order_sql,
                        n + 3,
                        n + 4,
                    );
                    // The writer's pool: a batch just reserved is read back at once.
                    let rows = bind_offline(sqlx::query(&sql), owner, &built.params)
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(self.writer())
                        .await?;
                    let events: Vec<offline::OfflineEvent> = rows
                        .iter()
                        .map(|r| offline::OfflineEvent {
                            id: r.get(0),
                            created_ms: r.get(1),
                            event: r.get(2),
                            payload: r.get(3),
                            user_id: r.get(4),
                            message_id: r.get(5),
                            process_id: r.get(6),
                            error: r.get(7),
                        })
                        .collect();
                    let total = if count {
                        let sql = format!("SELECT COUNT(*) FROM offline_events WHERE {}", built.where_sql);
                        let row = bind_offline(sqlx::query(&sql), owner, &built.params).fetch_one(self.writer()).await?;
                        row.get::<i64, _>(0)
                    } else {
                        events.len() as i64
                    };
                    Ok((events, total))
                }

                async fn offline_clear(
                    &self,
                    owner: &offline::Owner,
                    process_id: &str,
                    only: &offline::Selection,
                ) -> StoreResult<u64> {
                    let (column, values): (&str, Vec<offline::Value>) = match only {
                        offline::Selection::All => ("", Vec::new()),
                        offline::Selection::Ids(ids) => ("id", ids.iter().map(|&i| offline::Value::Int(i)).collect()),
                        offline::Selection::MessageIds(ids) => {
                            ("message_id", ids.iter().map(|i| offline::Value::Text(i.clone())).collect())
                        }
                    };
                    let mut params = vec![offline::Value::Text(process_id.to_string())];
                    let mut sql =
                        String::from("DELETE FROM offline_events WHERE client_id = $1 AND connector_id = $2 AND process_id = $3");
                    if !column.is_empty() {
                        if values.is_empty() {
                            return Ok(0);
                        }
                        let list: Vec<String> = (0..values.len()).map(|i| format!("${}", i + 4)).collect();
                        sql.push_str(&format!(" AND {column} IN ({})", list.join(", ")));
                        params.extend(values);
                    }
                    let done = bind_offline(sqlx::query(&sql), owner, &params).execute(self.writer()).await?;
                    Ok(done.rows_affected())
                }

                async fn offline_error(
                    &self,
                    owner: &offline::Owner,
                    process_id: &str,
                    message_ids: &[String],
                ) -> StoreResult<()> {
                    if message_ids.is_empty() {
                        return Ok(());
                    }
                    let mut params = vec![offline::Value::Text(process_id.to_string())];
                    params.extend(message_ids.iter().map(|m| offline::Value::Text(m.clone())));
                    let list: Vec<String> = (0..message_ids.len()).map(|i| format!("${}", i + 4)).collect();
                    let list = list.join(", ");
                    let mut tx = self.begin_write().await?;
                    // As the vendor: the other error-free copies of these events go (the batch's row stands for
                    // them), then the batch's rows are marked and freed. A free row already marked would collide
                    // with the freed one, so it goes too.
                    let drop_copies = format!(
                        "DELETE FROM offline_events WHERE client_id = $1 AND connector_id = $2 AND process_id <> $3 \
                         AND message_id IN ({list}) AND (error = 0 OR process_id = '')"
                    );
                    bind_offline(sqlx::query(&drop_copies), owner, &params).execute(&mut *tx).await?;
                    let mark = format!(
                        "UPDATE offline_events SET error = 1, process_id = '' WHERE client_id = $1 AND connector_id = $2 \
                         AND process_id = $3 AND message_id IN ({list}) AND error = 0"
                    );
                    bind_offline(sqlx::query(&mark), owner, &params).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(())
                }
            }

            /// Binds the owner (`$1`, `$2`) and then `params` of an offline events statement.
            fn bind_offline<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                owner: &'q offline::Owner,
                params: &'q [offline::Value],
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                let mut query = query.bind(owner.client_id.as_str()).bind(owner.connector_id.as_str());
                for p in params {
                    query = match p {
                        offline::Value::Int(n) => query.bind(*n),
                        offline::Value::Text(t) => query.bind(t.as_str()),
                    };
                }
                query
            }

            fn binding_from_row(r: &Row) -> EventBinding {
                EventBinding {
                    id: r.get("id"),
                    client_id: r.get("client_id"),
                    event: r.get("event"),
                    handler: r.get("handler"),
                    user_id: r.get("user_id"),
                    connector_id: r.get("connector_id"),
                    min_timeout: r.get("min_timeout"),
                }
            }

            fn user_from_row(row: &Row) -> StoreResult<User> {
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

            fn app_from_row(r: &Row) -> AppRecord {
                AppRecord {
                    client_id: r.get("client_id"),
                    secret_sha256: r.get("secret_sha256"),
                    scopes: split_list(r.get("scopes")),
                    application_token: r.get("application_token"),
                }
            }

            fn token_from_row(r: &Row) -> TokenRecord {
                TokenRecord {
                    access_sha256: r.get("access_sha256"),
                    refresh_sha256: r.get("refresh_sha256"),
                    client_id: r.get("client_id"),
                    user_id: r.get("user_id"),
                    scopes: split_list(r.get("scopes")),
                    access_expires_ms: r.get("access_expires_ms"),
                    refresh_expires_ms: r.get("refresh_expires_ms"),
                    event_depth: r.get("event_depth"),
                }
            }

            async fn insert_tokens<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                t: &TokenRecord,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO oauth_tokens (access_sha256, refresh_sha256, client_id, user_id, scopes, \
                     access_expires_ms, refresh_expires_ms, event_depth) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&t.access_sha256)
                .bind(&t.refresh_sha256)
                .bind(&t.client_id)
                .bind(t.user_id)
                .bind(t.scopes.join(","))
                .bind(t.access_expires_ms)
                .bind(t.refresh_expires_ms)
                .bind(t.event_depth)
                .execute(executor)
                .await?;
                Ok(())
            }

            /// The whole portal as a state file. Consistent only inside a snapshot or with writers shut out.
            pub(crate) async fn export(conn: &mut Connection, detail: ExportDetail) -> StoreResult<PortalState> {
                use futures::TryStreamExt as _;
                use $crate::state::*;
                let mut state = PortalState::default();
                if let Some(r) = sqlx::query("SELECT * FROM portal WHERE id = 1").fetch_optional(&mut *conn).await? {
                    state.portal = state::PortalSettings {
                        domain: r.get("domain"),
                        language: r.get("language"),
                        modules: split_list(r.get("modules")),
                        plan: r.get("plan"),
                        strict_line_permissions: r.get("strict_line_permissions"),
                        require_https: r.get("require_https"),
                        events: state::EventSettingsDef { retries: r.get("event_retries") },
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
                        lines: LinePermsDef {
                            join: u.line_join.as_str().into(),
                            history: u.line_history.as_str().into(),
                        },
                    });
                }
                let observers =
                    sqlx::query("SELECT entity_type, entity_id, user_id FROM crm_observers ORDER BY position")
                        .fetch_all(&mut *conn)
                        .await?;
                for r in sqlx::query("SELECT * FROM crm_records ORDER BY entity_type, id").fetch_all(&mut *conn).await?
                {
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
                let queue = sqlx::query("SELECT line_id, user_id FROM line_queue ORDER BY position")
                    .fetch_all(&mut *conn)
                    .await?;
                let connectors =
                    sqlx::query("SELECT * FROM connectors ORDER BY position").fetch_all(&mut *conn).await?;
                for r in sqlx::query("SELECT * FROM lines ORDER BY id").fetch_all(&mut *conn).await? {
                    let id: i64 = r.get("id");
                    state.lines.push(LineDef {
                        id,
                        name: r.get("name"),
                        queue: queue
                            .iter()
                            .filter(|q| q.get::<i64, _>("line_id") == id)
                            .map(|q| q.get("user_id"))
                            .collect(),
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
                let index: std::collections::HashMap<i64, usize> =
                    chats.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
                let chat_of =
                    |id: i64| index.get(&id).copied().ok_or_else(|| StoreError::Corrupt(format!("chat {id}")));
                if detail == ExportDetail::Everything {
                    // Streamed: a large portal has millions of memberships.
                    let mut rows =
                        sqlx::query("SELECT chat_id, user_id FROM chat_members ORDER BY chat_id, join_seq").fetch(&mut *conn);
                    while let Some(r) = rows.try_next().await? {
                        chats[chat_of(r.get("chat_id"))?].members.push(r.get("user_id"));
                    }
                }
                let links = sqlx::query(
                    "SELECT session_id, entity_type, entity_id FROM session_crm ORDER BY session_id, position",
                )
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
                if detail == ExportDetail::Everything {
                    let mut rows = sqlx::query("SELECT * FROM messages ORDER BY chat_id, id").fetch(&mut *conn);
                    while let Some(r) = rows.try_next().await? {
                        chats[chat_of(r.get("chat_id"))?].messages.push(MessageDef {
                            id: r.get("id"),
                            author: r.get("author_id"),
                            text: r.get("text"),
                            date: ms_to_rfc3339(r.get("date_ms")),
                        });
                    }
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
                        events: Vec::new(),
                    });
                }
                let bindings = sqlx::query(
                    "SELECT id, client_id, event, handler, user_id, connector_id, min_timeout FROM event_bindings \
                     ORDER BY client_id, id",
                )
                .fetch_all(&mut *conn)
                .await?;
                for r in bindings {
                    let client_id: String = r.get("client_id");
                    let Some(app) = state.apps.iter_mut().find(|a| a.client_id == client_id) else { continue };
                    let handler: String = r.get("handler");
                    app.events.push(BindingDef {
                        id: Some(r.get("id")),
                        event: r.get("event"),
                        offline: handler.is_empty(),
                        handler,
                        auth_type: r.get("user_id"),
                        connector_id: r.get("connector_id"),
                        min_timeout: r.get("min_timeout"),
                    });
                }
                state.outgoing_webhooks = read_outgoing_webhooks(&mut *conn)
                    .await?
                    .into_iter()
                    .map(|w| state::OutgoingWebhookDef {
                        id: Some(w.id),
                        handler: w.handler,
                        events: w.events,
                        application_token: w.application_token,
                    })
                    .collect();
                Ok(state)
            }

            /// A load in the caller's write transaction: the stored rows the file touches are read, merged with
            /// it and validated; the file's rows are written. Counted in the load metrics (rows read, written).
            pub(crate) async fn load(tx: &mut Tx, incoming: PortalState, has_portal: bool, now: i64) -> Result<(), LoadError> {
                let keys = state::LoadKeys::of(&incoming);
                let (scope, rows_read) = load_scope(tx, &keys).await?;
                let rows = state::merge_for_load(scope, incoming, has_portal).map_err(LoadError::Invalid)?;
                write_state(tx, &rows, now).await?;
                $crate::telemetry::state_loaded(rows_read, rows.row_count());
                Ok(())
            }

            /// The part of the stored state a load of a file must see ([`state::LoadKeys`]), read with one
            /// point query per key, and how many rows that read. Only what merging and validating use is
            /// filled in: a stored row in the scope is neither checked again nor written back (see
            /// [`state::merge_for_load`]), so the users, records and sessions stand in by their keys.
            pub(crate) async fn load_scope(conn: &mut Connection, keys: &state::LoadKeys) -> StoreResult<(PortalState, u64)> {
                use $crate::state::*;
                let mut rows_read = 0u64;
                let mut scope = PortalState::default();
                if let Some(r) = sqlx::query("SELECT * FROM portal WHERE id = 1").fetch_optional(&mut *conn).await? {
                    rows_read += 1;
                    scope.portal = state::PortalSettings {
                        domain: r.get("domain"),
                        language: r.get("language"),
                        modules: split_list(r.get("modules")),
                        plan: r.get("plan"),
                        strict_line_permissions: r.get("strict_line_permissions"),
                        require_https: r.get("require_https"),
                        events: state::EventSettingsDef { retries: r.get("event_retries") },
                    };
                }
                let stand_in = |id: i64| UserDef {
                    id,
                    name: String::new(),
                    last_name: String::new(),
                    active: true,
                    kind: "employee".into(),
                    admin: false,
                    crm_read: CrmReadDef::default(),
                    lines: LinePermsDef::default(),
                };
                // The keys in bulk, [`BULK_ROWS`] a statement: one query per key cost a round trip to SQLite's
                // worker thread each, which was most of a large load's time once its writes were bulk.
                let user_keys: Vec<Val<'_>> = keys.users.iter().map(|&id| Val::Int(id)).collect();
                let mut users: Vec<i64> = Vec::new();
                for r in bulk_select(conn, "SELECT id FROM users WHERE (id) IN", &user_keys, 1).await? {
                    users.push(r.get(0));
                }
                users.sort_unstable();
                rows_read += users.len() as u64;
                scope.users.extend(users.into_iter().map(stand_in));
                let record_keys: Vec<Val<'_>> =
                    keys.records.iter().flat_map(|(t, id)| [Val::Text(t), Val::Int(*id)]).collect();
                let sql = "SELECT entity_type, id, responsible FROM crm_records WHERE (entity_type, id) IN";
                let mut records: Vec<(String, i64, i64)> = Vec::new();
                for r in bulk_select(conn, sql, &record_keys, 2).await? {
                    records.push((r.get(0), r.get(1), r.get(2)));
                }
                records.sort_unstable();
                rows_read += records.len() as u64;
                scope.crm.extend(records.into_iter().map(|(entity_type, id, responsible)| CrmDef {
                    entity_type,
                    id,
                    title: String::new(),
                    responsible,
                    observers: Vec::new(),
                }));
                for &id in &keys.lines {
                    let found: Option<String> =
                        sqlx::query_scalar("SELECT name FROM lines WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?;
                    let Some(name) = found else { continue };
                    let connectors = sqlx::query("SELECT id, title, active FROM connectors WHERE line_id = $1 ORDER BY position")
                        .bind(id)
                        .fetch_all(&mut *conn)
                        .await?;
                    rows_read += 1 + connectors.len() as u64;
                    scope.lines.push(LineDef {
                        id,
                        name,
                        queue: Vec::new(),
                        connectors: connectors
                            .iter()
                            .map(|c| ConnectorDef { id: c.get("id"), title: c.get("title"), active: c.get("active") })
                            .collect(),
                    });
                }
                let stub = |id: i64, line: i64, connector: String| ChatDef {
                    id,
                    line,
                    connector,
                    author: None,
                    members: Vec::new(),
                    sessions: Vec::new(),
                    messages: Vec::new(),
                };
                let mut kept: std::collections::BTreeMap<i64, ChatDef> = Default::default();
                // The stored chats of a replaced line: the file may take their connector away.
                for &line in &keys.replaced_lines {
                    let rows = sqlx::query("SELECT id, connector_id FROM chats WHERE line_id = $1")
                        .bind(line)
                        .fetch_all(&mut *conn)
                        .await?;
                    rows_read += rows.len() as u64;
                    for r in rows.iter().filter(|r| !keys.chats.contains(&r.get::<i64, _>("id"))) {
                        kept.entry(r.get("id")).or_insert_with(|| stub(r.get("id"), line, r.get("connector_id")));
                    }
                }
                // A session or message id the file uses that a chat it does not bring holds already.
                for (table, ids) in [("sessions", &keys.sessions), ("messages", &keys.messages)] {
                    let sql = format!(
                        "SELECT t.id, t.chat_id, c.line_id, c.connector_id FROM {table} t JOIN chats c ON c.id = t.chat_id \
                         WHERE (t.id) IN"
                    );
                    let id_keys: Vec<Val<'_>> = ids.iter().map(|&id| Val::Int(id)).collect();
                    let mut found = bulk_select(conn, &sql, &id_keys, 1).await?;
                    found.sort_by_key(|r| r.get::<i64, _>("id"));
                    for r in found {
                        let id: i64 = r.get("id");
                        rows_read += 1;
                        let chat: i64 = r.get("chat_id");
                        if keys.chats.contains(&chat) {
                            continue;
                        }
                        let c = kept.entry(chat).or_insert_with(|| stub(chat, r.get("line_id"), r.get("connector_id")));
                        if table == "sessions" {
                            let status = StatusDef::Name("new".into());
                            c.sessions.push(SessionDef { id, status, modified: String::new(), crm: Vec::new() });
                        } else {
                            c.messages.push(MessageDef { id, author: 0, text: String::new(), date: String::new() });
                        }
                    }
                }
                scope.chats = kept.into_values().collect();
                let mut hooks: std::collections::BTreeMap<i64, WebhookDef> = Default::default();
                let mut found = Vec::new();
                for &id in &keys.webhook_ids {
                    found.extend(sqlx::query("SELECT * FROM webhooks WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?);
                }
                for hash in &keys.webhook_hashes {
                    found.extend(sqlx::query("SELECT * FROM webhooks WHERE code_sha256 = $1").bind(hash).fetch_all(&mut *conn).await?);
                }
                rows_read += found.len() as u64;
                for r in &found {
                    hooks.entry(r.get("id")).or_insert_with(|| WebhookDef {
                        id: Some(r.get("id")),
                        user: r.get("user_id"),
                        code: None,
                        code_sha256: Some(r.get("code_sha256")),
                        scopes: split_list(r.get("scopes")),
                    });
                }
                scope.webhooks = hooks.into_values().collect();
                Ok((scope, rows_read))
            }

            /// Mark a change of what [`crate::store::cache`] keeps in memory (settings, credentials, users,
            /// records, lines, chats, sessions), in the transaction that makes it.
            pub(crate) async fn bump_revision(tx: &mut Tx) -> StoreResult<()> {
                sqlx::query("UPDATE revision SET value = value + 1 WHERE id = 1").execute(&mut **tx).await?;
                Ok(())
            }

            /// Write the rows of a load ([`state::merge_for_load`]): each is upserted (never deleted, which
            /// would cascade to issued tokens) and the lists inside it (members, sessions, queue, …) replaced;
            /// stored rows the load does not bring stay untouched. Notifications and the outbox are history,
            /// not state, and stay. New memberships and webhooks are stamped `now`, the loader's clock.
            pub(crate) async fn write_state(tx: &mut Tx, state: &PortalState, now: i64) -> StoreResult<()> {
                bump_revision(tx).await?;
                let p = &state.portal;
                sqlx::query(
                    "INSERT INTO portal (id, domain, language, modules, plan, strict_line_permissions, require_https, \
                     event_retries) VALUES (1, $1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
                     domain = excluded.domain, language = excluded.language, modules = excluded.modules, \
                     plan = excluded.plan, strict_line_permissions = excluded.strict_line_permissions, \
                     require_https = excluded.require_https, event_retries = excluded.event_retries",
                )
                .bind(&p.domain)
                .bind(&p.language)
                .bind(p.modules.join(","))
                .bind(&p.plan)
                .bind(p.strict_line_permissions)
                .bind(p.require_https)
                .bind(p.events.retries)
                .execute(&mut **tx)
                .await?;
                // Each table in a few bulk statements: the file's rows upserted, the children of its parents
                // deleted and written again (a record in a file replaces the stored one whole). One statement per
                // row cost a round trip to SQLite's worker thread each, most of a large load's time.
                let upsert = |key| BulkWrite::Upsert { key };
                let mut v: Vec<Val<'_>> = Vec::new();
                for u in &state.users {
                    v.extend([
                        Val::Int(u.id),
                        Val::Text(&u.name),
                        Val::Text(&u.last_name),
                        Val::Bool(u.active),
                        Val::Text(&u.kind),
                        Val::Bool(u.admin),
                        Val::Text(&u.crm_read.lead),
                        Val::Text(&u.crm_read.deal),
                        Val::Text(&u.crm_read.contact),
                        Val::Text(&u.crm_read.company),
                        Val::Text(&u.lines.join),
                        Val::Text(&u.lines.history),
                    ]);
                }
                let user_columns = [
                    "id", "name", "last_name", "active", "kind", "admin", "crm_read_lead", "crm_read_deal",
                    "crm_read_contact", "crm_read_company", "line_join", "line_history",
                ];
                bulk(tx, upsert(&["id"]), "users", &user_columns, &v).await?;
                v.clear();
                for c in &state.crm {
                    v.extend([Val::Text(&c.entity_type), Val::Int(c.id), Val::Text(&c.title), Val::Int(c.responsible)]);
                }
                let record_columns = ["entity_type", "id", "title", "responsible"];
                bulk(tx, upsert(&["entity_type", "id"]), "crm_records", &record_columns, &v).await?;
                v.clear();
                for c in &state.crm {
                    v.extend([Val::Text(&c.entity_type), Val::Int(c.id)]);
                }
                bulk(tx, BulkWrite::Delete, "crm_observers", &["entity_type", "entity_id"], &v).await?;
                v.clear();
                for c in &state.crm {
                    for (pos, o) in c.observers.iter().enumerate() {
                        v.extend([Val::Text(&c.entity_type), Val::Int(c.id), Val::Int(*o), Val::Int(pos as i64)]);
                    }
                }
                bulk_insert(tx, "crm_observers", &["entity_type", "entity_id", "user_id", "position"], &v).await?;
                v.clear();
                for l in &state.lines {
                    v.extend([Val::Int(l.id), Val::Text(&l.name)]);
                }
                bulk(tx, upsert(&["id"]), "lines", &["id", "name"], &v).await?;
                v.clear();
                let line_ids: Vec<Val<'_>> = state.lines.iter().map(|l| Val::Int(l.id)).collect();
                bulk(tx, BulkWrite::Delete, "line_queue", &["line_id"], &line_ids).await?;
                bulk(tx, BulkWrite::Delete, "connectors", &["line_id"], &line_ids).await?;
                for l in &state.lines {
                    for (pos, u) in l.queue.iter().enumerate() {
                        v.extend([Val::Int(l.id), Val::Int(*u), Val::Int(pos as i64)]);
                    }
                }
                bulk_insert(tx, "line_queue", &["line_id", "user_id", "position"], &v).await?;
                v.clear();
                for l in &state.lines {
                    for (pos, k) in l.connectors.iter().enumerate() {
                        v.extend([Val::Int(l.id), Val::Text(&k.id), Val::Text(&k.title), Val::Bool(k.active), Val::Int(pos as i64)]);
                    }
                }
                bulk_insert(tx, "connectors", &["line_id", "id", "title", "active", "position"], &v).await?;
                v.clear();
                for c in &state.chats {
                    let count = c.members.len() as i64;
                    v.extend([Val::Int(c.id), Val::Int(c.line), Val::Text(&c.connector), Val::OptInt(c.author), Val::Int(count), Val::Int(count)]);
                }
                let chat_columns = ["id", "line_id", "connector_id", "author_id", "member_count", "next_join_seq"];
                bulk(tx, upsert(&["id"]), "chats", &chat_columns, &v).await?;
                v.clear();
                let chat_ids: Vec<Val<'_>> = state.chats.iter().map(|c| Val::Int(c.id)).collect();
                for table in ["chat_members", "sessions", "messages"] {
                    bulk(tx, BulkWrite::Delete, table, &["chat_id"], &chat_ids).await?;
                }
                let member_columns = ["chat_id", "user_id", "join_seq", "joined_at"];
                for c in &state.chats {
                    for (seq, m) in c.members.iter().enumerate() {
                        v.extend([Val::Int(c.id), Val::Int(*m), Val::Int(seq as i64), Val::Int(now)]);
                    }
                    // A statement's worth at a time: the memberships of a big state, its largest table by far, are
                    // never all held as values at once.
                    if v.len() >= $crate::store::sql::BULK_ROWS * member_columns.len() {
                        bulk_insert(tx, "chat_members", &member_columns, &v).await?;
                        v.clear();
                    }
                }
                bulk_insert(tx, "chat_members", &member_columns, &v).await?;
                v.clear();
                for c in &state.chats {
                    for s in &c.sessions {
                        let status = $crate::state::validate::session_status(&s.status)
                            .ok_or_else(|| StoreError::Corrupt(format!("session {} status", s.id)))?;
                        v.extend([Val::Int(s.id), Val::Int(c.id), Val::Int(status.0), Val::Int(rfc3339_to_ms(&s.modified)?)]);
                    }
                }
                bulk_insert(tx, "sessions", &["id", "chat_id", "status", "modified_ms"], &v).await?;
                v.clear();
                for c in &state.chats {
                    for s in &c.sessions {
                        for (pos, r) in s.crm.iter().enumerate() {
                            v.extend([Val::Int(s.id), Val::Text(&r.entity_type), Val::Int(r.id), Val::Int(pos as i64)]);
                        }
                    }
                }
                bulk_insert(tx, "session_crm", &["session_id", "entity_type", "entity_id", "position"], &v).await?;
                v.clear();
                for c in &state.chats {
                    for m in &c.messages {
                        v.extend([Val::Int(m.id), Val::Int(c.id), Val::Int(m.author), Val::Text(&m.text), Val::Int(rfc3339_to_ms(&m.date)?)]);
                    }
                }
                bulk_insert(tx, "messages", &["id", "chat_id", "author_id", "text", "date_ms"], &v).await?;
                for w in &state.webhooks {
                    let hash =
                        w.code_sha256.as_deref().ok_or_else(|| StoreError::Corrupt("webhook without hash".into()))?;
                    let Some(id) = w.id else {
                        // A new webhook: the database numbers it.
                        sqlx::query(
                            "INSERT INTO webhooks (user_id, code_sha256, scopes, created_ms) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(w.user)
                        .bind(hash)
                        .bind(w.scopes.join(","))
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO webhooks (id, user_id, code_sha256, scopes, created_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                         code_sha256 = excluded.code_sha256, scopes = excluded.scopes",
                    )
                    .bind(id)
                    .bind(w.user)
                    .bind(hash)
                    .bind(w.scopes.join(","))
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    if let Some(bump) = <$store as Backend>::AFTER_EXPLICIT_WEBHOOK_ID {
                        sqlx::query(bump).bind(id).execute(&mut **tx).await?;
                    }
                }
                for a in &state.apps {
                    let hash =
                        a.secret_sha256.as_deref().ok_or_else(|| StoreError::Corrupt("app without hash".into()))?;
                    sqlx::query(
                        "INSERT INTO apps (client_id, secret_sha256, scopes, application_token) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO UPDATE SET \
                         secret_sha256 = excluded.secret_sha256, scopes = excluded.scopes, \
                         application_token = excluded.application_token",
                    )
                    .bind(&a.client_id)
                    .bind(hash)
                    .bind(a.scopes.join(","))
                    .bind(&a.application_token)
                    .execute(&mut **tx)
                    .await?;
                    // The application's bindings are replaced whole, like the application.
                    sqlx::query("DELETE FROM event_bindings WHERE client_id = $1")
                        .bind(&a.client_id)
                        .execute(&mut **tx)
                        .await?;
                    for b in &a.events {
                        insert_binding(tx, &a.client_id, b, now).await?;
                    }
                }
                for w in &state.outgoing_webhooks {
                    upsert_outgoing_webhook(tx, w, now).await?;
                }
                Ok(())
            }

            /// One outgoing webhook of a loaded state, with its events replaced whole: by its id when the file
            /// gives one, else by its application token (a new one is numbered by the database).
            /// Every outgoing webhook with its events, in id order.
            async fn read_outgoing_webhooks(conn: &mut Connection) -> StoreResult<Vec<OutgoingWebhook>> {
                let rows = sqlx::query("SELECT id, handler, application_token, created_ms FROM outgoing_webhooks ORDER BY id")
                    .fetch_all(&mut *conn)
                    .await?;
                let events: Vec<(i64, String)> =
                    sqlx::query_as("SELECT webhook_id, event FROM outgoing_webhook_events ORDER BY webhook_id, event")
                        .fetch_all(&mut *conn)
                        .await?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        let id: i64 = r.get("id");
                        OutgoingWebhook {
                            id,
                            handler: r.get("handler"),
                            events: events.iter().filter(|(w, _)| *w == id).map(|(_, e)| e.clone()).collect(),
                            application_token: r.get("application_token"),
                            created_ms: r.get("created_ms"),
                        }
                    })
                    .collect())
            }

            /// Its id.
            async fn upsert_outgoing_webhook(tx: &mut Tx, w: &state::OutgoingWebhookDef, now: i64) -> StoreResult<i64> {
                let id: i64 = match w.id {
                    Some(id) => {
                        sqlx::query(
                            "INSERT INTO outgoing_webhooks (id, handler, application_token, created_ms) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET handler = excluded.handler, \
                             application_token = excluded.application_token",
                        )
                        .bind(id)
                        .bind(&w.handler)
                        .bind(&w.application_token)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                        if let Some(bump) = <$store as Backend>::AFTER_EXPLICIT_OUTGOING_WEBHOOK_ID {
                            sqlx::query(bump).bind(id).execute(&mut **tx).await?;
                        }
                        id
                    }
                    None => {
                        sqlx::query_scalar(
                            "INSERT INTO outgoing_webhooks (handler, application_token, created_ms) VALUES ($1, $2, $3) \
                             ON CONFLICT (application_token) DO UPDATE SET handler = excluded.handler RETURNING id",
                        )
                        .bind(&w.handler)
                        .bind(&w.application_token)
                        .bind(now)
                        .fetch_one(&mut **tx)
                        .await?
                    }
                };
                sqlx::query("DELETE FROM outgoing_webhook_events WHERE webhook_id = $1").bind(id).execute(&mut **tx).await?;
                for event in &w.events {
                    sqlx::query("INSERT INTO outgoing_webhook_events (webhook_id, event) VALUES ($1, $2)")
                        .bind(id)
                        .bind(event)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(id)
            }

            /// One binding of a loaded application. A binding id held by another application moves to this
            /// one: the file says whose it is.
            async fn insert_binding(tx: &mut Tx, client_id: &str, b: &state::BindingDef, now: i64) -> StoreResult<()> {
                let handler = if b.offline { "" } else { b.handler.as_str() };
                let query = match b.id {
                    Some(id) => sqlx::query(
                        "INSERT INTO event_bindings (id, client_id, event, handler, user_id, connector_id, min_timeout, \
                         created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
                         client_id = excluded.client_id, event = excluded.event, handler = excluded.handler, \
                         user_id = excluded.user_id, connector_id = excluded.connector_id, \
                         min_timeout = excluded.min_timeout, notified_ms = NULL, created_ms = excluded.created_ms",
                    )
                    .bind(id),
                    None => sqlx::query(
                        "INSERT INTO event_bindings (client_id, event, handler, user_id, connector_id, min_timeout, \
                         created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    ),
                };
                query
                    .bind(client_id)
                    .bind(&b.event)
                    .bind(handler)
                    .bind(b.auth_type)
                    .bind(&b.connector_id)
                    .bind(b.min_timeout)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                if let (Some(id), Some(bump)) = (b.id, <$store as Backend>::AFTER_EXPLICIT_BINDING_ID) {
                    sqlx::query(bump).bind(id).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Inserts `values` (rows of `columns.len()` values, one after the other), [`BULK_ROWS`] rows a
            /// statement.
            async fn bulk_insert(tx: &mut Tx, table: &str, columns: &[&str], values: &[Val<'_>]) -> StoreResult<()> {
                if values.is_empty() || <$store as Backend>::copy_rows(tx, table, columns, values).await? {
                    return Ok(());
                }
                bulk(tx, BulkWrite::Insert, table, columns, values).await
            }

            /// Writes `values` as `write` says, [`BULK_ROWS`] rows a statement.
            async fn bulk(tx: &mut Tx, write: BulkWrite<'_>, table: &str, columns: &[&str], values: &[Val<'_>]) -> StoreResult<()> {
                let width = columns.len();
                if values.is_empty() {
                    return Ok(());
                }
                let rows = <$store as Backend>::json_rows_sql(&column_types(&values[..width]));
                let sql = bulk_sql(write, table, columns, &rows);
                for chunk in values.chunks($crate::store::sql::BULK_ROWS * width) {
                    sqlx::query::<$db>(&sql).bind(json_rows(chunk, width)).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// The rows `select` (a query ending in `WHERE (key columns) IN`) finds for `keys` (rows of `width`
            /// values), [`BULK_ROWS`] keys a statement.
            async fn bulk_select(conn: &mut Connection, select: &str, keys: &[Val<'_>], width: usize) -> StoreResult<Vec<<$db as sqlx::Database>::Row>> {
                let mut found = Vec::new();
                if keys.is_empty() {
                    return Ok(found);
                }
                let sql = format!("{select} ({})", <$store as Backend>::json_rows_sql(&column_types(&keys[..width])));
                for chunk in keys.chunks($crate::store::sql::BULK_ROWS * width) {
                    found.extend(sqlx::query::<$db>(&sql).bind(json_rows(chunk, width)).fetch_all(&mut *conn).await?);
                }
                Ok(found)
            }

            /// Makes the stored state exactly `state` (validated): every table of a state is emptied and
            /// refilled with bulk statements, in the caller's transaction, so a reset of a large portal is a handful
            /// of statements rather than one per row. Issued OAuth codes and tokens go too: they belong to the
            /// users and applications being replaced. With `clear_history`, so do the messenger notifications
            /// and the outbox (a reset); without it they stay, as after a load.
            pub(crate) async fn replace_all(tx: &mut Tx, state: &PortalState, clear_history: bool) -> StoreResult<()> {
                for statement in <$store as Backend>::CLEAR_STATE {
                    sqlx::query(statement).execute(&mut **tx).await?;
                }
                if clear_history {
                    sqlx::query("DELETE FROM notifications").execute(&mut **tx).await?;
                    sqlx::query("DELETE FROM outbox").execute(&mut **tx).await?;
                }
                // Into empty tables the load's bulk upserts are inserts and its deletes find nothing: the
                // same statements as a load, so a reset and a load cannot drift apart.
                write_state(tx, state, now_ms()).await
            }
        }
    };
}

pub(crate) use shared_sql;
