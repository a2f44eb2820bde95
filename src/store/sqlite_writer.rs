//! Group commit for SQLite: one writer thread owns the write connection, takes every change that is waiting,
//! applies each inside its own savepoint and commits them together — one fsync for the whole group. A change
//! is answered only after the commit is on disk, and a change that fails is rolled back to its savepoint
//! without failing its neighbours.
//!
//! The writer speaks to SQLite through `rusqlite` on its own thread: a change is a handful of statements, and
//! sqlx's per-statement hand-off to its connection thread costs more than the fsync a group saves (the
//! figures are in the README's performance section). The statements are those of `store::sql`.

use std::path::Path;
use std::sync::mpsc;
use std::thread;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::sql::statements as sql;
use super::{Change, ChangeOutcome, StoreError, StoreResult};
use crate::domain::{Member, UserKind, rules};

/// The most changes committed together; more wait for the next group.
const MAX_GROUP: usize = 1024;

struct Job {
    change: Change,
    reply: oneshot::Sender<StoreResult<ChangeOutcome>>,
}

pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Start the writer thread on the database file at `path` (already migrated).
    pub fn start(path: &Path) -> StoreResult<Self> {
        let connection = open(path).map_err(sqlite_error)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("crmchat-writer".into())
            .spawn(move || run(connection, queue))
            .map_err(|e| StoreError::Corrupt(format!("starting the writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    pub async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { change, reply }).map_err(|_| StoreError::Corrupt("the writer thread stopped".into()))?;
        answer.await.map_err(|_| StoreError::Corrupt("the writer thread stopped".into()))?
    }
}

fn sqlite_error(err: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(format!("sqlite: {err}"))
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every acknowledged change must survive a crash the moment after the response: FULL syncs the WAL on
    // each commit. A larger auto-checkpoint lets a checkpoint write each hot page once for many commits.
    connection.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 4000; PRAGMA cache_size = -32000;",
    )?;
    Ok(connection)
}

fn run(mut connection: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcomes = commit_group(&mut connection, &group);
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Apply every change of the group in one transaction, each in a savepoint; on a failed commit every change
/// of the group fails (nothing of it is on disk).
fn commit_group(connection: &mut Connection, group: &[Job]) -> Vec<StoreResult<ChangeOutcome>> {
    let tx = match connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => return group.iter().map(|_| Err(sqlite_error(clone_error(&err)))).collect(),
    };
    let mut outcomes = Vec::with_capacity(group.len());
    let mut tx = tx;
    for job in group {
        let outcome = (|| {
            let savepoint = tx.savepoint()?;
            let outcome = apply(&savepoint, &job.change)?;
            if changes_something(&outcome) {
                savepoint.commit()?;
            }
            // Dropping an uncommitted savepoint rolls it back.
            Ok::<_, rusqlite::Error>(outcome)
        })();
        outcomes.push(outcome.map_err(sqlite_error));
    }
    if let Err(err) = tx.commit() {
        tracing::error!(error = %err, "group commit failed");
        return group.iter().map(|_| Err(StoreError::Corrupt("group commit failed".into()))).collect();
    }
    outcomes
}

fn clone_error(err: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(err.to_string().into())
}

fn changes_something(outcome: &ChangeOutcome) -> bool {
    !matches!(outcome, ChangeOutcome::NotAMember | ChangeOutcome::AlreadyAMember)
}

fn apply(tx: &Connection, change: &Change) -> rusqlite::Result<ChangeOutcome> {
    match change {
        Change::RemoveMember { chat_id, user_id, record, at_ms } => {
            if tx.prepare_cached(sql::DELETE_MEMBER)?.execute(params![chat_id, user_id])? == 0 {
                return Ok(ChangeOutcome::NotAMember);
            }
            let author: Option<i64> = tx.prepare_cached(sql::CHAT_AUTHOR)?.query_row([chat_id], |r| r.get(0))?;
            // The join order and the members' kinds matter only when the author leaves.
            let (recipients, new_author) = if author == Some(*user_id) {
                let remaining = members(tx, *chat_id)?;
                let new_author = rules::next_author(&remaining, *user_id).or(author);
                (remaining.iter().map(|m| m.user_id).collect::<Vec<i64>>(), new_author)
            } else {
                let ids = tx
                    .prepare_cached(sql::MEMBER_IDS)?
                    .query_map([chat_id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                (ids, author)
            };
            let member_count = recipients.len() as i64;
            tx.prepare_cached(sql::SET_COUNT_AND_AUTHOR)?.execute(params![member_count, new_author, chat_id])?;
            let mut recipients = recipients;
            recipients.push(*user_id);
            let (notification, event) =
                sql::membership_payloads(*chat_id, *user_id, member_count, &recipients, *record);
            tx.prepare_cached(sql::INSERT_NOTIFICATION)?.execute(params![
                chat_id,
                "chatUserLeave",
                notification,
                at_ms
            ])?;
            tx.prepare_cached(sql::INSERT_OUTBOX)?.execute(params!["ONCRMCHATUSERDELETE", event, at_ms])?;
            Ok(ChangeOutcome::MemberRemoved { member_count, author: new_author })
        }
        Change::AddMember { chat_id, user_id, record, at_ms } => {
            if tx.prepare_cached(sql::INSERT_MEMBER)?.execute(params![chat_id, user_id, at_ms])? == 0 {
                return Ok(ChangeOutcome::AlreadyAMember);
            }
            let member_count: i64 = tx.prepare_cached(sql::COUNT_AFTER_JOIN)?.query_row([chat_id], |r| r.get(0))?;
            let recipients: Vec<i64> = members(tx, *chat_id)?.iter().map(|m| m.user_id).collect();
            let (notification, event) =
                sql::membership_payloads(*chat_id, *user_id, member_count, &recipients, *record);
            tx.prepare_cached(sql::INSERT_NOTIFICATION)?.execute(params![
                chat_id,
                "chatUserJoin",
                notification,
                at_ms
            ])?;
            tx.prepare_cached(sql::INSERT_OUTBOX)?.execute(params!["ONCRMCHATUSERADD", event, at_ms])?;
            Ok(ChangeOutcome::MemberAdded { member_count })
        }
        Change::AddMessage { chat_id, author, text, record, at_ms } => {
            let member =
                tx.prepare_cached(sql::IS_MEMBER)?.query_row(params![chat_id, author], |_| Ok(())).optional()?;
            if member.is_none() {
                return Ok(ChangeOutcome::NotAMember);
            }
            let id: i64 = tx
                .prepare_cached(sql::INSERT_MESSAGE)?
                .query_row(params![chat_id, author, text, at_ms], |r| r.get(0))?;
            let event = sql::message_payload(*chat_id, id, *author, text, *record);
            tx.prepare_cached(sql::INSERT_OUTBOX)?.execute(params!["ONOPENLINEMESSAGEADD", event, at_ms])?;
            Ok(ChangeOutcome::MessageAdded { id })
        }
    }
}

/// The chat's members in join order, with what the author hand-over rule needs.
fn members(tx: &Connection, chat_id: i64) -> rusqlite::Result<Vec<Member>> {
    let mut statement = tx.prepare_cached(sql::MEMBERS_WITH_KIND)?;
    let rows = statement.query_map([chat_id], |r| {
        let kind: String = r.get(1)?;
        Ok(Member { user_id: r.get(0)?, kind: UserKind::parse(&kind).unwrap_or(UserKind::Employee), active: r.get(2)? })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite numbers `$n` parameters by first appearance; the writer binds by position, so `$n` must be the
    /// n-th distinct parameter of every statement.
    #[test]
    fn placeholders_appear_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql")).expect("the schema applies");
        for statement in sql::ALL {
            let prepared = connection.prepare(statement).unwrap();
            for index in 1..=prepared.parameter_count() {
                assert_eq!(prepared.parameter_name(index), Some(format!("${index}").as_str()), "{statement}");
            }
        }
    }
}
