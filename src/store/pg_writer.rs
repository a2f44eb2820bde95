//! PostgreSQL's group commit: the changes of chats (removals, additions, messages) that wait at one moment are
//! applied in one transaction and committed together, as SQLite's writer does, so a hot chat costs one commit
//! (one WAL flush on the server) per group instead of one per change, and its row lock is taken once per group.
//!
//! - **Lanes.** A chat's changes always go to the same lane (its id modulo [`LANES`]); each lane is a task with
//!   one transaction at a time, so the lanes of an instance never wait for each other's chat locks, and
//!   several run at once on the server's cores.
//! - **Lock order.** A group is applied in chat id order (the changes of one chat in the order they came), so
//!   groups of two instances take their chat rows in the same order and cannot wait for each other in a
//!   circle; a deadlock the server reports anyway (another lock) has the group applied again.
//! - **A failing change** is dropped and the rest of its group applied again without it (a change that failed
//!   half-way left part of itself in the transaction); a fault of the connection or of the server fails the
//!   whole group, as does a failed commit: each change is answered only once its group's commit is durable.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::postgres::{Listened, apply_chat_change};
use super::{Change, ChangeOutcome, StoreError, StoreResult};

/// Lanes per instance: enough to keep PostgreSQL's cores busy while a lane waits for its commit, few enough
/// that they leave most of the pool (16 connections) to readers.
const LANES: usize = 4;
/// The most changes one transaction holds: a group's answers wait for all of them.
const MAX_GROUP: usize = 128;
/// How often a group the server aborted as a deadlock is applied again before its changes fail.
const DEADLOCK_RETRIES: usize = 3;

type Reply = oneshot::Sender<StoreResult<ChangeOutcome>>;

struct Job {
    change: Change,
    /// The chat whose row the change locks: the lane and the lock order.
    chat_id: i64,
    reply: Reply,
}

pub(super) struct GroupCommit {
    lanes: Vec<mpsc::UnboundedSender<Job>>,
}

impl GroupCommit {
    /// Starts the lanes on the current runtime.
    pub(super) fn start(pool: &PgPool) -> Self {
        let lanes = (0..LANES)
            .map(|_| {
                let (jobs, queue) = mpsc::unbounded_channel();
                tokio::spawn(run(pool.clone(), queue));
                jobs
            })
            .collect();
        Self { lanes }
    }

    /// Applies a change of chat `chat_id` with the next group of its lane.
    pub(super) async fn apply(&self, chat_id: i64, change: Change) -> StoreResult<ChangeOutcome> {
        let lane = &self.lanes[chat_id.rem_euclid(LANES as i64) as usize];
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the PostgreSQL group commit stopped".into());
        lane.send(Job { change, chat_id, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    let group_sizes = crate::telemetry::group_commit_histogram();
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        group_sizes.record(group.len() as f64);
        // Stable: the changes of one chat keep their order.
        group.sort_by_key(|job| job.chat_id);
        let outcomes = commit_group(&pool, &group).await;
        for (job, outcome) in group.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// What a failed statement means for its group.
#[derive(Debug, PartialEq)]
enum Failure {
    /// The change itself is at fault: drop it and apply the rest again.
    Change,
    /// The server aborted the transaction to break a deadlock: apply the whole group again.
    Deadlock,
    /// The connection, the server or its disk: every change of the group fails.
    Group,
}

fn failure(err: &StoreError) -> Failure {
    match err {
        StoreError::Database(sqlx::Error::Database(db)) => match db.code().as_deref() {
            // deadlock_detected, serialization_failure
            Some("40P01") | Some("40001") => Failure::Deadlock,
            // connection_exception, operator_intervention (shutdown, cancel), insufficient_resources
            Some(code) if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") => Failure::Group,
            _ => Failure::Change,
        },
        _ => Failure::Group,
    }
}

/// The answer of a change whose group failed because of `err`, met by another change or by the commit.
fn group_failed(err: &StoreError) -> StoreError {
    match err {
        StoreError::DiskFull(message) => StoreError::DiskFull(message.clone()),
        other => StoreError::GroupNotCommitted(other.to_string()),
    }
}

async fn commit_group(pool: &PgPool, group: &[Job]) -> Vec<StoreResult<ChangeOutcome>> {
    let fail_all = |err: &StoreError| -> Vec<StoreResult<ChangeOutcome>> {
        group.iter().map(|_| Err(group_failed(err))).collect()
    };
    let mut outcomes: Vec<Option<StoreResult<ChangeOutcome>>> = group.iter().map(|_| None).collect();
    let mut deadlocks = 0;
    'attempt: loop {
        let mut tx = match pool.begin().await {
            Ok(tx) => tx,
            Err(err) => return fail_all(&err.into()),
        };
        let listened = match Listened::read(&mut tx).await {
            Ok(listened) => listened,
            Err(err) => return fail_all(&err),
        };
        let mut produced = Vec::new();
        for (index, job) in group.iter().enumerate() {
            if matches!(outcomes[index], Some(Err(_))) {
                continue;
            }
            match apply_chat_change(&mut tx, &listened, &job.change).await {
                Ok((outcome, events)) => {
                    outcomes[index] = Some(Ok(outcome));
                    produced.extend(events.events);
                }
                Err(err) => {
                    let _ = tx.rollback().await;
                    match failure(&err) {
                        Failure::Deadlock if deadlocks < DEADLOCK_RETRIES => deadlocks += 1,
                        Failure::Change => {
                            if let Some(held_back) = CHANGE_FAILED_LOG.allow() {
                                tracing::warn!(error = %err, similar_lines_held_back = held_back,
                                    "a change failed; applying the rest of its group again");
                            }
                            outcomes[index] = Some(Err(err));
                        }
                        Failure::Deadlock | Failure::Group => {
                            let mut answers = fail_all(&err);
                            answers[index] = Err(err);
                            return answers;
                        }
                    }
                    continue 'attempt;
                }
            }
        }
        if let Err(err) = tx.commit().await {
            return fail_all(&err.into());
        }
        crate::telemetry::events_produced(&produced);
        return outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Unavailable("a change was not applied".into()))))
            .collect();
    }
}

static CHANGE_FAILED_LOG: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_changes_own_faults_drop_it_from_its_group() {
        let io = StoreError::Database(sqlx::Error::Io(std::io::Error::other("reset")));
        assert_eq!(failure(&io), Failure::Group);
        assert_eq!(failure(&StoreError::DiskFull("no room".into())), Failure::Group);
        assert!(matches!(group_failed(&StoreError::DiskFull("no room".into())), StoreError::DiskFull(_)));
        assert!(matches!(group_failed(&io), StoreError::GroupNotCommitted(_)));
    }
}
