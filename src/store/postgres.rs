//! The PostgreSQL backend, for several server instances sharing one database. The SQL it shares with SQLite
//! is generated into `shared` by `store::sql::shared_sql!`; what is its own is the locking that SQLite gets
//! from its single writer:
//!
//! - the changes of chats are committed in groups (`pg_writer`), each in its chat's lane;
//! - a membership change locks its chat row (`FOR UPDATE`) before anything else, so two instances changing
//!   the same chat run one after the other and the member count, join order and author are computed from
//!   what the other committed;
//! - a message locks its chat row `FOR SHARE` (the author stays a member until the commit) and takes its id
//!   from a sequence;
//! - a state load locks every table it reads and writes against writers (readers go on) before reading the
//!   stored state it merges into.
//!
//! The lock order is always the chat row / `chats` first, then the rest, so the three cannot deadlock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::pg_writer::GroupCommit;
use super::sql::statements as sql;
use super::sql::{Backend, Col, Val, shared_sql};
use super::{Cause, Change, ChangeOutcome, ExportDetail, LoadError, NextStep, StoreError, StoreResult, offline};
use crate::domain::{ChatId, RecordRef, UserId, rules};
use crate::state::PortalState;

pub struct PgStore {
    pool: PgPool,
    group: GroupCommit,
}

/// A message's id: the next of the `message_ids` sequence, which no other writer waits for (ids a rolled-back
/// transaction took are skipped, as the vendor's ids skip). Loads and resets move it past the stored ids.
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, chat_id, author_id, text, date_ms) \
     VALUES (nextval('message_ids'), $1, $2, $3, $4) RETURNING id";

/// A removal after its chat row is locked, in one round trip: the membership deleted, the count lowered, and the
/// members left in the statement's snapshot (taken after the lock, so it holds every committed change of the
/// chat; the deleted row is still in it and filtered out), with each one's kind when the author left — what
/// the hand-over rule needs. No row: not a member; one row with a NULL member: nobody is left.
const REMOVE_MEMBER: &str = "WITH gone AS (DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2 RETURNING user_id), \
     counted AS (UPDATE chats SET member_count = member_count - 1 \
       WHERE id = $1 AND EXISTS (SELECT 1 FROM gone) RETURNING author_id, member_count) \
     SELECT c.author_id, c.member_count, m.user_id, m.join_seq, u.kind, u.active FROM counted c \
     LEFT JOIN chat_members m ON m.chat_id = $1 AND m.user_id <> $2 \
     LEFT JOIN users u ON u.id = m.user_id AND c.author_id = $2";

/// An addition after its chat row is locked, in one round trip: the membership at the end of the join order,
/// the count (the snapshot's members plus the new one) and every member with its place. No row: already a
/// member.
const ADD_MEMBER: &str = "WITH added AS (INSERT INTO chat_members (chat_id, user_id, join_seq, joined_at) \
       SELECT $1, $2, next_join_seq, $3 FROM chats WHERE id = $1 \
       ON CONFLICT (chat_id, user_id) DO NOTHING RETURNING user_id, join_seq), \
     counted AS (UPDATE chats SET next_join_seq = next_join_seq + 1, \
       member_count = (SELECT COUNT(*) FROM chat_members WHERE chat_id = $1) + 1 \
       WHERE id = $1 AND EXISTS (SELECT 1 FROM added) RETURNING member_count) \
     SELECT c.member_count, m.user_id, m.join_seq FROM counted c CROSS JOIN \
     (SELECT user_id, join_seq FROM chat_members WHERE chat_id = $1 UNION ALL SELECT user_id, join_seq FROM added) m";

/// Which events anyone listens to: online (a handler or an outgoing webhook) and offline (recorded for
/// `event.offline.get`). Read once per group of changes instead of two statements per change that find
/// nobody; a binding committed before the group began is seen, as it would be by each statement.
const LISTENED: &str = "SELECT event, bool_or(handler <> ''), bool_or(handler = '') FROM event_bindings GROUP BY event \
     UNION ALL SELECT DISTINCT event, true, false FROM outgoing_webhook_events";

/// After a load: past every stored id, never back (ids taken by messages of other instances meanwhile stay
/// taken).
const MESSAGE_IDS_PAST_STORED: &str = "SELECT setval('message_ids', m) FROM (SELECT MAX(id) AS m FROM messages) s \
     WHERE m >= (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM message_ids)";

/// After a reset: the next id follows the state's last message, as on SQLite.
const MESSAGE_IDS_AFTER_STATE: &str = "SELECT setval('message_ids', COALESCE(MAX(id), 0) + 1, false) FROM messages";

/// `chats` first: every change transaction starts by locking a chat row, so a load that holds `chats` can
/// wait for the others without any of them waiting for it. Notifications, the outbox and OAuth codes and
/// tokens are not part of a state and are not locked.
const LOCK_FOR_LOAD: &str = "LOCK TABLE chats, portal, users, crm_records, crm_observers, lines, line_queue, \
                             connectors, chat_members, sessions, session_crm, messages, webhooks, apps \
                             IN EXCLUSIVE MODE";

/// How long a call waits for a connection of the pool. sqlx retries a refused connection with a backoff that
/// doubles up to a fifth of this wait: with 30 s, a server back after an outage was found up to 6 s late by
/// every caller already waiting, and each waited as long before failing. 2 s bounds the backoff at 0.4 s and
/// answers a call during an outage within about 2 s; under load a call waits milliseconds for a connection.
const POOL_WAIT: Duration = Duration::from_secs(2);

impl PgStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("crmchat");
        let pool = PgPoolOptions::new().max_connections(16).acquire_timeout(POOL_WAIT).connect_with(options).await?;
        // sqlx holds an advisory lock while migrating, so instances starting together migrate once.
        super::migrations::migrator(super::migrations::POSTGRES).await?.run(&pool).await?;
        let group = GroupCommit::start(&pool);
        Ok(Self { pool, group })
    }
}

shared_sql!(PgStore, Postgres);

/// Locks the chat row, `FOR UPDATE` or `FOR SHARE`; a missing chat locks nothing and the change then finds
/// nothing to do, as on SQLite.
async fn lock_chat(tx: &mut shared::Tx, chat_id: i64, mode: &str) -> StoreResult<()> {
    sqlx::query(&format!("SELECT id FROM chats WHERE id = $1 {mode}")).bind(chat_id).fetch_optional(&mut **tx).await?;
    Ok(())
}

/// The events someone listens to, as [`LISTENED`] reads them inside a transaction.
#[derive(Debug, Default)]
pub(super) struct Listened {
    online: std::collections::HashSet<String>,
    offline: std::collections::HashSet<String>,
}

impl Listened {
    pub(super) async fn read(tx: &mut shared::Tx) -> StoreResult<Self> {
        let rows: Vec<(String, bool, bool)> = sqlx::query_as(LISTENED).fetch_all(&mut **tx).await?;
        let mut listened = Listened::default();
        for (event, online, offline) in rows {
            if online {
                listened.online.insert(event.clone());
            }
            if offline {
                listened.offline.insert(event);
            }
        }
        Ok(listened)
    }
}

impl Backend for PgStore {
    type Db = Postgres;

    /// Moves the identity past an explicit id, never back (like SQLite's AUTOINCREMENT counter).
    const AFTER_EXPLICIT_WEBHOOK_ID: Option<&'static str> = Some(
        "SELECT setval(pg_get_serial_sequence('webhooks', 'id'), $1) \
         WHERE $1 > COALESCE(pg_sequence_last_value(pg_get_serial_sequence('webhooks', 'id')::regclass), 0)",
    );
    const AFTER_EXPLICIT_BINDING_ID: Option<&'static str> = Some(
        "SELECT setval(pg_get_serial_sequence('event_bindings', 'id'), $1) \
         WHERE $1 > COALESCE(pg_sequence_last_value(pg_get_serial_sequence('event_bindings', 'id')::regclass), 0)",
    );

    const AFTER_EXPLICIT_OUTGOING_WEBHOOK_ID: Option<&'static str> = Some(
        "SELECT setval(pg_get_serial_sequence('outgoing_webhooks', 'id'), $1) WHERE $1 > \
         COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outgoing_webhooks', 'id')::regclass), 0)",
    );

    fn json_rows_sql(types: &[Col]) -> String {
        let values: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Col::Int => format!("(e ->> {i})::bigint"),
                Col::Text => format!("e ->> {i}"),
                Col::Bool => format!("(e ->> {i})::boolean"),
            })
            .collect();
        format!("SELECT {} FROM json_array_elements($1::json) AS e", values.join(", "))
    }

    /// `COPY … FROM STDIN` in text format: the rows reach the table without a statement's JSON parameter being
    /// parsed and cast first. The foreign-key checks of each row remain (bench/README.md, "State loads").
    async fn copy_rows<'a>(
        tx: &'a mut Transaction<'static, Postgres>,
        table: &'a str,
        columns: &'a [&'a str],
        values: &'a [Val<'a>],
    ) -> StoreResult<bool> {
        let statement = format!("COPY {table} ({}) FROM STDIN", columns.join(", "));
        let mut copy = tx.copy_in_raw(&statement).await?;
        for chunk in values.chunks(super::sql::COPY_ROWS * columns.len()) {
            if let Err(err) = copy.send(super::sql::copy_text(chunk, columns.len()).into_bytes()).await {
                // Ends the COPY on the server too, so the error is the one of the data, not of a dangling COPY.
                let _ = copy.abort("crmchat: sending the rows failed").await;
                return Err(err.into());
            }
        }
        copy.finish().await?;
        Ok(true)
    }

    /// One statement; `chats` first, the lock order of every change. `CASCADE` also empties tables that
    /// refer to these and are written back with the state.
    const CLEAR_STATE: &'static [&'static str] =
        &["TRUNCATE chats, portal, users, crm_records, crm_observers, lines, line_queue, connectors, chat_members, \
         sessions, session_crm, messages, webhooks, apps, oauth_codes, oauth_tokens, outgoing_webhooks, \
         outgoing_webhook_events CASCADE"];

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome> {
        if let Some(chat_id) = chat_of(&change) {
            return self.group.apply(chat_id, change).await;
        }
        let mut tx = self.begin_write().await?;
        // The events the change wrote, counted once it committed.
        let mut produced = Produced::default();
        let outcome = match change {
            // Sent to their lane above; applied alone here they would be just as right, only slower.
            chat_change @ (Change::RemoveMember { .. } | Change::AddMember { .. } | Change::AddMessage { .. }) => {
                let listened = Listened::read(&mut tx).await?;
                let (outcome, events) = apply_chat_change(&mut tx, &listened, &chat_change).await?;
                produced = events;
                outcome
            }
            Change::Emit { event, payload, client_id, at_ms, cause } => {
                produced = produce(&mut tx, event, &payload, at_ms, cause, Some(&client_id)).await?;
                ChangeOutcome::Emitted(produced.deliveries)
            }
            Change::LeaseDeliveries { ids, now_ms, until_ms } => {
                let mut leased = Vec::with_capacity(ids.len());
                for id in ids {
                    let done =
                        sqlx::query(sql::LEASE_DELIVERY).bind(until_ms).bind(id).bind(now_ms).execute(&mut *tx).await?;
                    if done.rows_affected() == 1 {
                        leased.push(id);
                    }
                }
                ChangeOutcome::Leased(leased)
            }
            Change::ReleaseDeliveries { ids, until_ms } => {
                for id in ids {
                    sqlx::query(sql::RELEASE_DELIVERY).bind(id).bind(until_ms).execute(&mut *tx).await?;
                }
                ChangeOutcome::Recorded
            }
            Change::RecordDeliveries(outcomes) => {
                for o in outcomes {
                    let next_ms = match o.next {
                        NextStep::RetryAt(at) => at,
                        _ => o.at_ms,
                    };
                    let finished = sqlx::query(sql::FINISH_ATTEMPT)
                        .bind(o.next.state())
                        .bind(o.attempt)
                        .bind(next_ms)
                        .bind(o.at_ms)
                        .bind(o.id)
                        .bind(o.lease_until_ms)
                        .execute(&mut *tx)
                        .await?;
                    if finished.rows_affected() == 0 {
                        continue;
                    }
                    sqlx::query(sql::INSERT_ATTEMPT)
                        .bind(o.id)
                        .bind(o.attempt)
                        .bind(o.at_ms)
                        .bind(o.status)
                        .bind(&o.error)
                        .bind(o.duration_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                ChangeOutcome::Recorded
            }
            Change::Prune { before_ms, keep, limit, now_ms } => {
                let events: Vec<i64> = sqlx::query_scalar(sql::PRUNE_DELIVERIES)
                    .bind(before_ms)
                    .bind(keep)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut distinct = events.clone();
                distinct.sort_unstable();
                distinct.dedup();
                for event in distinct {
                    sqlx::query(sql::PRUNE_EVENT).bind(event).execute(&mut *tx).await?;
                }
                let notifications = sqlx::query(sql::PRUNE_NOTIFICATIONS)
                    .bind(limit)
                    .bind(before_ms)
                    .bind(keep)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(sql::PRUNE_TOKENS).bind(now_ms).execute(&mut *tx).await?;
                ChangeOutcome::Pruned { deliveries: events.len() as u64, notifications }
            }
        };
        match outcome {
            ChangeOutcome::NotAMember | ChangeOutcome::AlreadyAMember => tx.rollback().await?,
            _ => {
                tx.commit().await?;
                crate::telemetry::events_produced(&produced.events);
            }
        }
        Ok(outcome)
    }

    async fn export(&self, detail: ExportDetail) -> StoreResult<PortalState> {
        // One snapshot for all the statements of the export.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
        let state = shared::export(&mut tx, detail).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn load_state(&self, incoming: PortalState, has_portal: bool, now_ms: i64) -> Result<(), LoadError> {
        let mut tx = self.begin_write().await?;
        // Another instance's change or load either committed before this point (and the load's reads see it)
        // or waits for the commit: what the load checks against cannot change under it. Held only for the
        // file's own rows (see `shared::load`).
        sqlx::query(LOCK_FOR_LOAD).execute(&mut *tx).await.map_err(StoreError::from)?;
        shared::load(&mut tx, incoming, has_portal, now_ms).await?;
        // Last: a sequence is not rolled back with the transaction.
        sqlx::query(MESSAGE_IDS_PAST_STORED).execute(&mut *tx).await.map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn replace_state(&self, state: &PortalState, clear_history: bool) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        shared::replace_all(&mut tx, state, clear_history).await?;
        sqlx::query(MESSAGE_IDS_AFTER_STATE).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

// The changes of the methods. SQLite applies the same statements in its group-commit writer.

/// The chat a change of the methods locks; `None` for the changes of the delivery engine.
fn chat_of(change: &Change) -> Option<i64> {
    match change {
        Change::RemoveMember { chat_id, .. }
        | Change::AddMember { chat_id, .. }
        | Change::AddMessage { chat_id, .. } => Some(chat_id.0),
        _ => None,
    }
}

/// Applies a change of a chat inside `tx`, its chat row locked first (see the module's lock order). A change
/// that finds nothing to do writes nothing.
pub(super) async fn apply_chat_change(
    tx: &mut shared::Tx,
    listened: &Listened,
    change: &Change,
) -> StoreResult<(ChangeOutcome, Produced)> {
    match change {
        Change::RemoveMember { chat_id: ChatId(chat_id), user_id: UserId(user_id), record, at_ms, cause } => {
            lock_chat(tx, *chat_id, "FOR UPDATE").await?;
            remove_member(tx, listened, *chat_id, *user_id, *record, *at_ms, cause.clone()).await
        }
        Change::AddMember { chat_id: ChatId(chat_id), user_id: UserId(user_id), record, at_ms, cause } => {
            lock_chat(tx, *chat_id, "FOR UPDATE").await?;
            add_member(tx, listened, *chat_id, *user_id, *record, *at_ms, cause.clone()).await
        }
        Change::AddMessage {
            chat_id: ChatId(chat_id),
            author: UserId(author),
            text,
            record: _,
            line_id,
            connector_id,
            at_ms,
            cause,
        } => {
            // The author stays a member until the commit; message ids come from a sequence, so other
            // messages are not waited for.
            lock_chat(tx, *chat_id, "FOR SHARE").await?;
            add_message(tx, listened, *chat_id, (*author, text), (*line_id, connector_id), *at_ms, cause.clone()).await
        }
        // `chat_of` names the changes that come here; the engine's own changes have a chat of none.
        other => Err(StoreError::Unavailable(format!("not a change of a chat: {other:?}"))),
    }
}

/// Removes a membership, hands the authorship over when the author left, and records the
/// notification and the event. Run it with the chat row locked (see [`apply_chat_change`]).
pub(super) async fn remove_member(
    tx: &mut shared::Tx,
    listened: &Listened,
    chat_id: i64,
    user_id: i64,
    record: RecordRef,
    at_ms: i64,
    cause: Cause,
) -> StoreResult<(ChangeOutcome, Produced)> {
    type Row = (Option<i64>, i64, Option<i64>, Option<i64>, Option<String>, Option<bool>);
    let rows: Vec<Row> = sqlx::query_as(REMOVE_MEMBER).bind(chat_id).bind(user_id).fetch_all(&mut **tx).await?;
    // No row: the second of two identical calls finds nothing to delete.
    let Some(&(author, member_count, ..)) = rows.first() else {
        return Ok((ChangeOutcome::NotAMember, Produced::default()));
    };
    let mut left: Vec<(i64, i64, Option<String>, Option<bool>)> =
        rows.into_iter().filter_map(|(_, _, member, seq, kind, active)| Some((member?, seq?, kind, active))).collect();
    left.sort_unstable_by_key(|&(_, seq, ..)| seq);
    // The same rule as SQLite's writer: the first member in join order who may take over.
    let new_author = if author == Some(user_id) {
        let next = left
            .iter()
            .find(|(member, _, kind, active)| {
                let kind = kind.as_deref().unwrap_or_default();
                rules::may_take_over(&sql::member(*member, kind, active.unwrap_or(false)), UserId(user_id))
            })
            .map(|&(member, ..)| member)
            .or(author);
        sqlx::query(sql::SET_AUTHOR).bind(next).bind(chat_id).execute(&mut **tx).await?;
        next
    } else {
        author
    };
    let mut recipients: Vec<i64> = left.iter().map(|&(member, ..)| member).collect();
    recipients.push(user_id);
    let (notification, event) = sql::membership_payloads(chat_id, user_id, member_count, &recipients, record);
    let produced = record_change(
        tx,
        listened,
        chat_id,
        ("chatUserLeave", &notification),
        ("ONCRMCHATUSERDELETE", &event),
        at_ms,
        cause,
    )
    .await?;
    Ok((ChangeOutcome::MemberRemoved { member_count, author: new_author }, produced))
}

/// Adds a membership at the end of the join order. Run it with the chat row locked.
pub(super) async fn add_member(
    tx: &mut shared::Tx,
    listened: &Listened,
    chat_id: i64,
    user_id: i64,
    record: RecordRef,
    at_ms: i64,
    cause: Cause,
) -> StoreResult<(ChangeOutcome, Produced)> {
    let rows: Vec<(i64, i64, i64)> =
        sqlx::query_as(ADD_MEMBER).bind(chat_id).bind(user_id).bind(at_ms).fetch_all(&mut **tx).await?;
    let Some(&(member_count, ..)) = rows.first() else {
        return Ok((ChangeOutcome::AlreadyAMember, Produced::default()));
    };
    let recipients = sql::in_join_order(rows.into_iter().map(|(_, member, seq)| (member, seq)).collect());
    let (notification, event) = sql::membership_payloads(chat_id, user_id, member_count, &recipients, record);
    let produced = record_change(
        tx,
        listened,
        chat_id,
        ("chatUserJoin", &notification),
        ("ONCRMCHATUSERADD", &event),
        at_ms,
        cause,
    )
    .await?;
    Ok((ChangeOutcome::MemberAdded { member_count }, produced))
}

/// Stores a message of a member under the sequence's next id. Run it with the chat's membership held still.
pub(super) async fn add_message(
    tx: &mut shared::Tx,
    listened: &Listened,
    chat_id: i64,
    (author, text): (i64, &str),
    (line_id, connector_id): (i64, &str),
    at_ms: i64,
    cause: Cause,
) -> StoreResult<(ChangeOutcome, Produced)> {
    let member: Option<i64> =
        sqlx::query_scalar(sql::IS_MEMBER).bind(chat_id).bind(author).fetch_optional(&mut **tx).await?;
    if member.is_none() {
        return Ok((ChangeOutcome::NotAMember, Produced::default()));
    }
    let id: i64 = sqlx::query_scalar(INSERT_MESSAGE)
        .bind(chat_id)
        .bind(author)
        .bind(text)
        .bind(at_ms)
        .fetch_one(&mut **tx)
        .await?;
    let event = sql::message_payload(chat_id, id, author, text, at_ms, line_id, connector_id);
    let produced = produce_listened(tx, listened, "ONOPENLINEMESSAGEADD", &event, at_ms, cause).await?;
    Ok((ChangeOutcome::MessageAdded { id }, produced))
}

/// The messenger notification (kind, payload) and the event (name, payload) of a change.
async fn record_change(
    tx: &mut shared::Tx,
    listened: &Listened,
    chat_id: i64,
    notification: (&str, &str),
    event: (&'static str, &str),
    at_ms: i64,
    cause: Cause,
) -> StoreResult<Produced> {
    sqlx::query(sql::INSERT_NOTIFICATION)
        .bind(chat_id)
        .bind(notification.0)
        .bind(notification.1)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    produce_listened(tx, listened, event.0, event.1, at_ms, cause).await
}

/// An event of the portal (of no one application), written as [`produce`] writes it, but only where
/// `listened` says someone may take it: nothing to do, no statement.
async fn produce_listened(
    tx: &mut shared::Tx,
    listened: &Listened,
    event: &'static str,
    payload: &str,
    at_ms: i64,
    cause: Cause,
) -> StoreResult<Produced> {
    if !listened.online.contains(event) && !listened.offline.contains(event) {
        return Ok(Produced::default());
    }
    produce(tx, event, payload, at_ms, cause, None).await
}

/// What a change wrote to the outbox: the names of its events (for [`crate::telemetry::EVENTS_PRODUCED`], once
/// committed), and how many deliveries its own event got (offline notices aside).
#[derive(Debug, Default)]
pub(super) struct Produced {
    pub events: Vec<&'static str>,
    pub deliveries: u64,
}

/// Writes `event` with a delivery for every online handler bound to it (of `client_id` only, when given);
/// nothing when nobody listens (the event's insert checks that itself) or the loop guard stops it.
async fn produce(
    tx: &mut shared::Tx,
    event: &'static str,
    payload: &str,
    at_ms: i64,
    cause: Cause,
    client_id: Option<&str>,
) -> StoreResult<Produced> {
    if cause.depth > sql::MAX_EVENT_DEPTH {
        return Ok(Produced::default());
    }
    let mut produced =
        Produced { events: record_offline(tx, event, payload, at_ms, &cause, client_id).await?, deliveries: 0 };
    let id: Option<i64> = sqlx::query_scalar(sql::INSERT_EVENT)
        .bind(event)
        .bind(payload)
        .bind(at_ms)
        .bind(cause.user_id)
        .bind(cause.depth)
        .bind(client_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(id) = id else { return Ok(produced) };
    produced.events.push(event);
    let bound = sqlx::query(sql::INSERT_DELIVERIES)
        .bind(id)
        .bind(cause.user_id)
        .bind(at_ms)
        .bind(event)
        .bind(client_id)
        .execute(&mut **tx)
        .await?;
    let webhooks = sqlx::query(sql::INSERT_WEBHOOK_DELIVERIES)
        .bind(id)
        .bind(at_ms)
        .bind(event)
        .bind(client_id)
        .execute(&mut **tx)
        .await?;
    produced.deliveries = bound.rows_affected() + webhooks.rows_affected();
    Ok(produced)
}

/// Records `event` for the offline bindings listening to it, and queues `ONOFFLINEEVENT` for the applications
/// that recorded it (each handler at most once per its `minTimeout`). The names of the notices written.
async fn record_offline(
    tx: &mut shared::Tx,
    event: &str,
    payload: &str,
    at_ms: i64,
    cause: &Cause,
    client_id: Option<&str>,
) -> StoreResult<Vec<&'static str>> {
    let message_id = offline::message_id(event, payload);
    let (origin_client, origin_connector) =
        cause.origin.as_deref().map_or((None, ""), |o| (Some(o.client_id.as_str()), o.connector_id.as_str()));
    let mut clients: Vec<String> = sqlx::query_scalar(sql::INSERT_OFFLINE)
        .bind(event)
        .bind(payload)
        .bind(cause.user_id)
        .bind(&message_id)
        .bind(at_ms)
        .bind(client_id)
        .bind(origin_client)
        .bind(origin_connector)
        .fetch_all(&mut **tx)
        .await?;
    clients.sort_unstable();
    clients.dedup();
    let mut notices = Vec::new();
    for client in clients {
        let handlers: Vec<i64> =
            sqlx::query_scalar(sql::NOTIFY_OFFLINE).bind(at_ms).bind(&client).fetch_all(&mut **tx).await?;
        if handlers.is_empty() {
            continue;
        }
        let notice: Option<i64> = sqlx::query_scalar(sql::INSERT_EVENT)
            .bind(sql::OFFLINE_NOTICE)
            .bind("{}")
            .bind(at_ms)
            .bind(cause.user_id)
            .bind(cause.depth)
            .bind(Some(client.as_str()))
            .fetch_optional(&mut **tx)
            .await?;
        let Some(id) = notice else { continue };
        notices.push(sql::OFFLINE_NOTICE);
        for handler in handlers {
            sqlx::query(sql::INSERT_BINDING_DELIVERY)
                .bind(id)
                .bind(cause.user_id)
                .bind(at_ms)
                .bind(handler)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(notices)
}
