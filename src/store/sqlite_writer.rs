//! Group commit for SQLite: one writer thread owns the write connection, takes every change that is waiting,
//! applies them and commits them together. A change that fails is taken out of its group without failing its
//! neighbours.
//!
//! A change is answered only once its commit is on disk. The writer commits with `synchronous = NORMAL` (the
//! WAL is written, not synced), the WAL file is synced with `fdatasync`, and only then is the group answered.
//! That is the guarantee of `synchronous = FULL` for every answered change, with one sync per group instead of
//! one per change, and `fdatasync` rather than the `fsync` SQLite would use, which also journals the file's
//! times. (Other connections may read a committed change a moment before it is synced and answered, as they
//! would read it a moment before the answer reaches its client.)
//!
//! Who syncs depends on what is waiting. When changes are already queued as a group is committed, a syncer
//! thread syncs and answers that group while the writer applies the queued ones: the sync and the next group
//! overlap. When nothing is queued, the writer syncs and answers the group itself: there is nothing to overlap,
//! and waking the syncer would only add its wake-up to the wait (on a 2-core VM, a quarter of a millisecond,
//! as long as the sync itself; the figures are in the README's performance section). Every group is answered
//! after a sync that began after its commit.
//!
//! Checkpoints (copying the WAL back into the database file) run on a thread of their own, with their own
//! connection, so the writer never stops for one: a checkpoint of tens of megabytes of WAL took the writer
//! half a second or more, during which no change was committed and every client waited. SQLite starts the WAL
//! over only when a write begins with every frame of it copied back, which a background checkpoint rarely
//! manages while the writer keeps appending; so when the WAL has grown past [`WAL_RESTART_FRAMES`], the writer
//! copies the last few frames itself between two groups, and its next group starts the WAL over.
//!
//! The writer speaks to SQLite through `rusqlite` on its own thread: a change is a handful of statements, and
//! sqlx's per-statement hand-off to its connection thread costs more than the fsync a group saves. The
//! statements are those of `store::sql`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Statement, params};
use tokio::sync::oneshot;

use super::sql::statements as sql;
use super::{Cause, Change, ChangeOutcome, NextStep, StoreError, StoreResult, offline};
use crate::domain::{ChatId, UserId, rules};
use crate::log_throttle::LogThrottle;

/// The most changes committed together; more wait for the next group.
const MAX_GROUP: usize = 1024;

/// The most chats whose members the writer keeps (see [`MemberCache`]); some 200 bytes each.
const MAX_CACHED_CHATS: usize = 4096;

/// The background checkpoint runs at most this often: each run copies every page changed since the last one
/// and syncs the database file, so a hot page is written once per interval rather than once per commit.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// A WAL of more frames than this (64 MiB of the default 4 KiB pages) is started over by the writer (see the module
/// documentation), whatever the database's size.
const WAL_RESTART_FRAMES: i64 = 16_000;

/// The WAL is also started over once it holds more frames than the database has pages, down to this many (4 MiB
/// of 4 KiB pages): on a small database a WAL of 64 MiB would hold the disk space of several databases, and a
/// disk that filled up would fill up again as soon as space was freed.
const MIN_WAL_FRAMES: i64 = 1_024;

/// The most frames the WAL of a database of `database_pages` pages may hold before it is started over, and
/// the size (in frames) it is cut back to when it starts over.
fn wal_bound(database_pages: i64) -> i64 {
    database_pages.clamp(MIN_WAL_FRAMES, WAL_RESTART_FRAMES)
}

type Reply = oneshot::Sender<StoreResult<ChangeOutcome>>;

struct Job {
    change: Change,
    reply: Reply,
}

/// A committed group: each change's answer, to send once the WAL is on disk.
type Committed = Vec<(Reply, StoreResult<ChangeOutcome>)>;

pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Start the writer thread on the database file at `path` (already migrated).
    pub fn start(path: &Path) -> StoreResult<Self> {
        let connection = open(path).map_err(sqlite_error)?;
        let checkpointer = open_checkpointer(path).map_err(sqlite_error)?;
        let wal = wal_file(path)?;
        let syncer_wal = wal_file(path)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (to_syncer, handed_over) = mpsc::channel::<Committed>();
        // One slot: commits made while a checkpoint runs or waits are covered by the next one.
        let (committed, wake_checkpointer) = mpsc::sync_channel::<()>(1);
        let restart_wal = Arc::new(AtomicI64::new(0));
        let checkpoints = Checkpoints { committed, restart_wal: restart_wal.clone() };
        let thread_error = |e: std::io::Error| StoreError::Unavailable(format!("starting the writer threads: {e}"));
        thread::Builder::new()
            .name("crmchat-syncer".into())
            .spawn(move || {
                raise_syncer_priority();
                sync_handed_over(syncer_wal, handed_over)
            })
            .map_err(thread_error)?;
        thread::Builder::new()
            .name("crmchat-ckpt".into())
            .spawn(move || checkpoint_in_background(checkpointer, wake_checkpointer, restart_wal, WAL_RESTART_FRAMES))
            .map_err(thread_error)?;
        thread::Builder::new()
            .name("crmchat-writer".into())
            .spawn(move || run(connection, wal, queue, to_syncer, checkpoints))
            .map_err(thread_error)?;
        Ok(Self { jobs })
    }

    pub async fn apply(&self, change: Change) -> StoreResult<ChangeOutcome> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the writer thread stopped".into());
        self.jobs.send(Job { change, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Every answer waits for the syncer, so it runs at nice -10: woken, it takes a core from a request worker at
/// once instead of waiting its turn (on 2 busy cores it waited 0.6 ms on average, longer than the sync itself).
/// Not the writer: woken at once by every change, it committed groups of one or two and lost a fifth of its
/// throughput. Raising a priority needs root or CAP_SYS_NICE; without it the syncer runs at the normal
/// priority, only slower under load.
fn raise_syncer_priority() {
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    // The crate maps its 0–99 scale onto nice 19 … -20 for the normal policy; 73 is nice -10.
    let Ok(value) = ThreadPriorityValue::try_from(73u8) else { return };
    if let Err(err) = thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(value)) {
        tracing::info!(error = ?err, "the WAL syncer runs at the normal priority: raising it was refused");
    }
}

fn sqlite_error(err: rusqlite::Error) -> StoreError {
    classify(&err)
}

/// What a failed SQLite call means for the operator: SQLITE_FULL (the WAL or the database could not grow) is
/// told as a full disk.
fn classify(err: &rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull(format!("sqlite: {err}")),
        _ => StoreError::Sqlite(err.to_string()),
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every acknowledged change must survive a crash the moment after the response. NORMAL writes the WAL on
    // commit without syncing it; it is synced before any change of the group is answered (see
    // the module documentation). Checkpoints still sync, as in FULL; they run on the checkpoint thread, not
    // on commit.
    connection.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32000;",
    )?;
    let pages: i64 = connection.pragma_query_value(None, "page_count", |r| r.get(0))?;
    limit_wal(&connection, wal_bound(pages))?;
    Ok(connection)
}

/// Sets the size a WAL of the writer's connection is cut back to when it starts over, in frames (a frame holds
/// one page).
fn limit_wal(connection: &Connection, frames: i64) -> rusqlite::Result<()> {
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |r| r.get(0))?;
    connection.pragma_update(None, "journal_size_limit", frames * page_size)
}

/// The checkpoint thread's connection. A checkpoint syncs the WAL before it copies it and the database file
/// after, whatever the connection's `synchronous` (short of OFF).
fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    // It copies pages from the WAL to the database file and reads nothing through its page cache.
    connection.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 16;")?;
    Ok(connection)
}

/// A passive checkpoint: copies what it can without waiting for anyone. Returns the frames in the WAL and
/// how many of them are now copied into the database file.
fn checkpoint(connection: &Connection) -> rusqlite::Result<(i64, i64)> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
}

/// The writer's side of the checkpoint thread.
struct Checkpoints {
    /// Tells the checkpoint thread that something was committed.
    committed: mpsc::SyncSender<()>,
    /// Set by the checkpoint thread to the WAL's bound (in frames) when the WAL has grown past it; 0 otherwise.
    restart_wal: Arc<AtomicI64>,
}

impl Checkpoints {
    fn after_commit(&self, connection: &Connection) {
        // A full slot means the checkpoint thread will run anyway.
        let _ = self.committed.try_send(());
        let bound = self.restart_wal.swap(0, Ordering::Relaxed);
        if bound > 0 {
            // The checkpoint thread copied all but the last few frames; copy those too, so the next group
            // starts the WAL over, and cut it back to the bound as it does.
            if let Err(err) = limit_wal(connection, bound) {
                tracing::warn!(error = %err, "setting the WAL's size limit failed");
            }
            if let Err(err) = checkpoint(connection) {
                tracing::warn!(error = %err, "checkpointing the WAL failed");
            }
        }
    }
}

/// The checkpoint thread: after each commit (at most every [`CHECKPOINT_INTERVAL`]), copies the WAL into the
/// database file, and asks the writer to start the WAL over when it holds more frames than the database's
/// [`wal_bound`], or than `most_frames`.
fn checkpoint_in_background(
    connection: Connection,
    committed: mpsc::Receiver<()>,
    restart_wal: Arc<AtomicI64>,
    most_frames: i64,
) {
    let database_pages = |c: &Connection| c.pragma_query_value(None, "page_count", |r| r.get::<_, i64>(0));
    while committed.recv().is_ok() {
        match checkpoint(&connection).and_then(|(frames, _)| Ok((frames, database_pages(&connection)?))) {
            Ok((frames, pages)) => {
                let bound = wal_bound(pages).min(most_frames);
                if frames > bound {
                    restart_wal.store(bound, Ordering::Relaxed);
                }
            }
            Err(err) => {
                if let Some(held_back) = CHECKPOINT_LOG.allow() {
                    tracing::warn!(error = %err, similar_lines_held_back = held_back, "checkpointing the WAL failed");
                }
            }
        }
        thread::sleep(CHECKPOINT_INTERVAL);
    }
}

/// The database's WAL file, opened for syncing. SQLite keeps it (the same file, reset after checkpoints) while
/// the writer's connection is open; it may not exist yet before the first write, so it is created if missing,
/// as SQLite itself would.
fn wal_file(db: &Path) -> StoreResult<File> {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    let path = PathBuf::from(name);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(format_args!("opening {} to sync it", path.display()), &e))
}

fn run(
    connection: Connection,
    wal: File,
    queue: mpsc::Receiver<Job>,
    to_syncer: mpsc::Sender<Committed>,
    checkpoints: Checkpoints,
) {
    let mut statements = match Prepared::new(&connection) {
        Ok(statements) => statements,
        Err(err) => {
            // Every change is then answered with the error: the job's sender sees its reply dropped.
            tracing::error!(error = %err, "preparing the writer's statements failed");
            return;
        }
    };
    let mut members = MemberCache::default();
    let group_sizes = crate::telemetry::group_commit_histogram();
    // The first change of the next group, when it was already waiting as the last group was committed.
    let mut waiting: Option<Job> = None;
    loop {
        let first = match waiting.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        group_sizes.record(group.len() as f64);
        let outcomes = commit_group(&mut statements, &mut members, &group);
        let committed: Committed = group.into_iter().map(|job| job.reply).zip(outcomes).collect();
        // With changes already waiting, the syncer syncs this group while the writer applies them. Otherwise
        // there is nothing to overlap, and waking the syncer would only add its wake-up to the answer's wait.
        match queue.try_recv() {
            Ok(next) => {
                waiting = Some(next);
                if let Err(mpsc::SendError(committed)) = to_syncer.send(committed) {
                    tracing::error!("the syncer thread stopped; the writer syncs every group itself");
                    answer_once_synced(&wal, committed);
                }
            }
            Err(_) => answer_once_synced(&wal, committed),
        }
        checkpoints.after_commit(&connection);
    }
}

/// The syncer thread: syncs the WAL for every group handed to it, then answers them. Groups handed over while
/// a sync runs wait for the next one, which covers them all.
fn sync_handed_over(wal: File, handed_over: mpsc::Receiver<Committed>) {
    while let Ok(first) = handed_over.recv() {
        let mut groups = vec![first];
        groups.extend(handed_over.try_iter());
        answer_once_synced(&wal, groups.into_iter().flatten().collect());
    }
}

/// Sync the WAL, then answer the group just committed. A failed sync fails every change of the group: it may
/// not be on disk.
fn answer_once_synced(wal: &File, committed: Committed) {
    let synced = wal.sync_data();
    if let Err(err) = &synced
        && let Some(held_back) = SYNC_LOG.allow()
    {
        tracing::error!(error = %err, similar_lines_held_back = held_back, "syncing the WAL failed");
    }
    for (reply, outcome) in committed {
        let answer = match &synced {
            Ok(()) => outcome,
            Err(err) => Err(StoreError::io("syncing the WAL", err)),
        };
        let _ = reply.send(answer);
    }
}

// A fault of the disk hits every group until it is mended: told once every 10 s, with a count, so that a full
// disk is not filled further by its own log.
static SYNC_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
static CHANGE_FAILED_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
static COMMIT_FAILED_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
static CHECKPOINT_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// The writer's statements, prepared once for the life of the connection: finding a statement in rusqlite's
/// cache hashes its text, which cost a tenth of the writer's time at five statements a removal.
struct Prepared<'c> {
    begin: Statement<'c>,
    commit: Statement<'c>,
    rollback: Statement<'c>,
    delete_member: Statement<'c>,
    decrement_member_count: Statement<'c>,
    author_and_count: Statement<'c>,
    members_with_seq: Statement<'c>,
    user_kind: Statement<'c>,
    set_author: Statement<'c>,
    insert_member: Statement<'c>,
    count_after_join: Statement<'c>,
    is_member: Statement<'c>,
    insert_message: Statement<'c>,
    insert_notification: Statement<'c>,
    listened_events: Statement<'c>,
    insert_event: Statement<'c>,
    event_targets: Statement<'c>,
    insert_event_row: Statement<'c>,
    insert_delivery_row: Statement<'c>,
    listened_offline_events: Statement<'c>,
    insert_offline: Statement<'c>,
    notify_offline: Statement<'c>,
    insert_binding_delivery: Statement<'c>,
    lease_delivery: Statement<'c>,
    release_delivery: Statement<'c>,
    insert_attempt: Statement<'c>,
    finish_attempt: Statement<'c>,
    prune_deliveries: Statement<'c>,
    prune_event: Statement<'c>,
    prune_notifications: Statement<'c>,
    prune_tokens: Statement<'c>,
    data_version: Statement<'c>,
}

impl<'c> Prepared<'c> {
    fn new(connection: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            begin: connection.prepare("BEGIN IMMEDIATE")?,
            commit: connection.prepare("COMMIT")?,
            rollback: connection.prepare("ROLLBACK")?,
            delete_member: connection.prepare(sql::DELETE_MEMBER)?,
            decrement_member_count: connection.prepare(sql::DECREMENT_MEMBER_COUNT)?,
            author_and_count: connection.prepare(sql::AUTHOR_AND_COUNT)?,
            members_with_seq: connection.prepare(sql::MEMBERS_WITH_SEQ)?,
            user_kind: connection.prepare(sql::USER_KIND)?,
            set_author: connection.prepare(sql::SET_AUTHOR)?,
            insert_member: connection.prepare(sql::INSERT_MEMBER)?,
            count_after_join: connection.prepare(sql::COUNT_AFTER_JOIN)?,
            is_member: connection.prepare(sql::IS_MEMBER)?,
            insert_message: connection.prepare(sql::INSERT_MESSAGE)?,
            insert_notification: connection.prepare(sql::INSERT_NOTIFICATION)?,
            listened_events: connection.prepare(sql::LISTENED_EVENTS)?,
            insert_event: connection.prepare(sql::INSERT_EVENT)?,
            event_targets: connection.prepare(sql::EVENT_TARGETS)?,
            insert_event_row: connection.prepare(sql::INSERT_EVENT_ROW)?,
            insert_delivery_row: connection.prepare(sql::INSERT_DELIVERY_ROW)?,
            listened_offline_events: connection.prepare(sql::LISTENED_OFFLINE_EVENTS)?,
            insert_offline: connection.prepare(sql::INSERT_OFFLINE)?,
            notify_offline: connection.prepare(sql::NOTIFY_OFFLINE)?,
            insert_binding_delivery: connection.prepare(sql::INSERT_BINDING_DELIVERY)?,
            lease_delivery: connection.prepare(sql::LEASE_DELIVERY)?,
            release_delivery: connection.prepare(sql::RELEASE_DELIVERY)?,
            insert_attempt: connection.prepare(sql::INSERT_ATTEMPT)?,
            finish_attempt: connection.prepare(sql::FINISH_ATTEMPT)?,
            prune_deliveries: connection.prepare(sql::PRUNE_DELIVERIES)?,
            prune_event: connection.prepare(sql::PRUNE_EVENT)?,
            prune_notifications: connection.prepare(sql::PRUNE_NOTIFICATIONS)?,
            prune_tokens: connection.prepare(sql::PRUNE_TOKENS)?,
            data_version: connection.prepare("PRAGMA data_version")?,
        })
    }

    /// The chat's member ids, longest-standing first.
    fn members_in_join_order(&mut self, chat_id: i64) -> rusqlite::Result<Vec<i64>> {
        let rows = self.members_with_seq.query_map([chat_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(sql::in_join_order(rows.collect::<rusqlite::Result<_>>()?))
    }

    fn data_version(&mut self) -> rusqlite::Result<i64> {
        self.data_version.query_row([], |r| r.get(0))
    }
}

/// The chats changed lately as the writer left them: their members, longest-standing first, their author and
/// their member count. A removal needs every remaining member (the notification goes to all of them, and the
/// author hand-over picks among them); reading them back from the database took a sixth of a removal's
/// instructions, and the chats of a busy contact center lose members one after another.
///
/// Only the writer changes memberships, except for other connections (a `state load`, a second process):
/// their commits move `PRAGMA data_version`, which is read under the write lock at the start of every group,
/// and a move empties the cache. So does a rolled-back transaction, whose changes the cache may already hold.
/// A removal that does not take exactly one member off the cached list reads the chat again.
#[derive(Default)]
struct MemberCache {
    chats: HashMap<i64, CachedChat>,
    /// The events some online handler is bound to, read when first needed. Bindings are written by other
    /// connections, which move `data_version`, so they are read again after every binding change; a change
    /// with no listener writes no event at all.
    listened: Option<std::collections::HashSet<String>>,
    /// The same for offline bindings.
    offline_listened: Option<std::collections::HashSet<String>>,
    /// Per event, where its deliveries go ([`sql::EVENT_TARGETS`]), read when first needed and forgotten with
    /// `listened`: a removal's event and delivery are then two plain inserts.
    targets: HashMap<&'static str, Vec<Target>>,
    /// `PRAGMA data_version` when the cache was last known to be current.
    data_version: Option<i64>,
    /// The events the group being applied wrote, counted once it committed (not a cache: emptied before
    /// every attempt at a group).
    produced: Vec<&'static str>,
}

/// One place an event's deliveries go: an online binding of an application, or an outgoing webhook.
struct Target {
    webhook: bool,
    binding_id: i64,
    client_id: String,
    application_token: String,
    handler: String,
    /// The binding's user; 0: the user who caused the event (an outgoing webhook gets no user at all).
    user_id: i64,
}

/// A chat as the database holds it: `member_count` is its stored count, not the list's length.
struct CachedChat {
    members: Vec<i64>,
    author: Option<i64>,
    member_count: i64,
}

impl MemberCache {
    /// Called under the write lock, before a group is applied.
    fn check_current(&mut self, s: &mut Prepared) -> rusqlite::Result<()> {
        let version = s.data_version()?;
        if self.data_version != Some(version) {
            self.chats.clear();
            self.listened = None;
            self.offline_listened = None;
            self.targets.clear();
            self.data_version = Some(version);
        }
        Ok(())
    }

    fn forget_all(&mut self) {
        self.chats.clear();
        self.listened = None;
        self.offline_listened = None;
        self.targets.clear();
    }

    fn is_recorded_offline(&mut self, s: &mut Prepared, event: &str) -> rusqlite::Result<bool> {
        if self.offline_listened.is_none() {
            let events = s.listened_offline_events.query_map([], |r| r.get::<_, String>(0))?;
            self.offline_listened = Some(events.collect::<rusqlite::Result<_>>()?);
        }
        Ok(self.offline_listened.as_ref().is_some_and(|events| events.contains(event)))
    }

    fn targets(&mut self, s: &mut Prepared, event: &'static str) -> rusqlite::Result<&[Target]> {
        if !self.targets.contains_key(event) {
            let rows = s.event_targets.query_map([event], |r| {
                Ok(Target {
                    webhook: r.get::<_, i64>(0)? == 1,
                    binding_id: r.get(1)?,
                    client_id: r.get(2)?,
                    application_token: r.get(3)?,
                    handler: r.get(4)?,
                    user_id: r.get(5)?,
                })
            })?;
            let targets = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            self.targets.insert(event, targets);
        }
        Ok(&self.targets[event])
    }

    fn is_listened(&mut self, s: &mut Prepared, event: &str) -> rusqlite::Result<bool> {
        if self.listened.is_none() {
            let events = s.listened_events.query_map([], |r| r.get::<_, String>(0))?;
            self.listened = Some(events.collect::<rusqlite::Result<_>>()?);
        }
        Ok(self.listened.as_ref().is_some_and(|events| events.contains(event)))
    }

    /// The chat after `user_id` left it: its row deleted and the stored count decremented.
    fn after_leave(&mut self, s: &mut Prepared, chat_id: i64, user_id: i64) -> rusqlite::Result<&mut CachedChat> {
        let cached = self.chats.get_mut(&chat_id).is_some_and(|chat| {
            let before = chat.members.len();
            chat.members.retain(|&member| member != user_id);
            chat.member_count -= 1;
            chat.members.len() + 1 == before
        });
        if !cached {
            let (author, member_count) = s.author_and_count.query_row([chat_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let members = s.members_in_join_order(chat_id)?;
            if self.chats.len() >= MAX_CACHED_CHATS {
                self.chats.clear();
            }
            self.chats.insert(chat_id, CachedChat { members, author, member_count });
        }
        Ok(self.chats.get_mut(&chat_id).expect("cached above"))
    }

    /// The members of the chat a member just joined, the new member last. The new member's place in the join
    /// order is the database's to say, so the chat is read again (and cached by its next removal).
    fn after_join(&mut self, s: &mut Prepared, chat_id: i64) -> rusqlite::Result<Vec<i64>> {
        self.chats.remove(&chat_id);
        s.members_in_join_order(chat_id)
    }
}

/// Apply every change of the group in one transaction and commit it. A change that fails half-way would leave
/// part of itself in the transaction, so the transaction is rolled back and the group applied again without
/// it; failures are rare, and the common path pays for no savepoints. On a failed commit every change of the
/// group fails (nothing of it is committed).
fn commit_group(s: &mut Prepared, members: &mut MemberCache, group: &[Job]) -> Vec<StoreResult<ChangeOutcome>> {
    let mut outcomes: Vec<Option<StoreResult<ChangeOutcome>>> = group.iter().map(|_| None).collect();
    let mut failed = vec![false; group.len()];
    'attempt: loop {
        members.produced.clear();
        if let Err(err) = s.begin.execute([]) {
            return group.iter().map(|_| Err(classify(&err))).collect();
        }
        if let Err(err) = members.check_current(s) {
            members.forget_all();
            let _ = s.rollback.execute([]);
            return group.iter().map(|_| Err(classify(&err))).collect();
        }
        for (index, job) in group.iter().enumerate() {
            if failed[index] {
                continue;
            }
            match apply(s, members, &job.change) {
                Ok(outcome) => outcomes[index] = Some(Ok(outcome)),
                Err(err) => {
                    if let Some(held_back) = CHANGE_FAILED_LOG.allow() {
                        tracing::warn!(error = %err, similar_lines_held_back = held_back,
                            "a change failed; applying the rest of its group again");
                    }
                    failed[index] = true;
                    outcomes[index] = Some(Err(sqlite_error(err)));
                    members.forget_all();
                    if let Err(err) = s.rollback.execute([]) {
                        tracing::error!(error = %err, "rolling back a group failed");
                        return group.iter().map(|_| Err(classify(&err))).collect();
                    }
                    continue 'attempt;
                }
            }
        }
        if let Err(err) = s.commit.execute([]) {
            members.forget_all();
            if let Some(held_back) = COMMIT_FAILED_LOG.allow() {
                tracing::error!(error = %err, similar_lines_held_back = held_back, "group commit failed");
            }
            let _ = s.rollback.execute([]);
            return group.iter().map(|_| Err(classify(&err))).collect();
        }
        crate::telemetry::events_produced(&members.produced);
        members.produced.clear();
        return outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Unavailable("a change was not applied".into()))))
            .collect();
    }
}

/// Writes `event` with a delivery for every online handler bound to it (of `client_id` only, when given);
/// nothing when nobody listens or the loop guard stops it. Returns the number of deliveries.
fn produce(
    s: &mut Prepared,
    cache: &mut MemberCache,
    event: &'static str,
    payload: &str,
    at_ms: i64,
    cause: &Cause,
    client_id: Option<&str>,
) -> rusqlite::Result<u64> {
    if cause.depth > sql::MAX_EVENT_DEPTH {
        return Ok(0);
    }
    record_offline(s, cache, event, payload, at_ms, cause, client_id)?;
    if !cache.is_listened(s, event)? {
        return Ok(0);
    }
    // The rules of INSERT_EVENT, INSERT_DELIVERIES and INSERT_WEBHOOK_DELIVERIES (which PostgreSQL runs), on the
    // cached targets: an event of one application goes to that application's bindings only, never to outgoing
    // webhooks; no target, no event.
    let targets: Vec<&Target> = cache
        .targets(s, event)?
        .iter()
        .filter(|t| match client_id {
            Some(client) => !t.webhook && t.client_id == client,
            None => true,
        })
        .collect();
    if targets.is_empty() {
        return Ok(0);
    }
    let id = s.insert_event_row.insert(params![event, payload, at_ms, cause.user_id, cause.depth])?;
    for t in &targets {
        let user_id = if t.webhook {
            0
        } else if t.user_id > 0 {
            t.user_id
        } else {
            cause.user_id
        };
        s.insert_delivery_row.execute(params![
            id,
            t.binding_id,
            t.client_id,
            t.application_token,
            t.handler,
            user_id,
            at_ms
        ])?;
    }
    let delivered = targets.len() as u64;
    cache.produced.push(event);
    Ok(delivered)
}

/// Records `event` for the offline bindings listening to it, and queues `ONOFFLINEEVENT` for the applications
/// that recorded it (each handler at most once per its `minTimeout`).
fn record_offline(
    s: &mut Prepared,
    cache: &mut MemberCache,
    event: &str,
    payload: &str,
    at_ms: i64,
    cause: &Cause,
    client_id: Option<&str>,
) -> rusqlite::Result<()> {
    if !cache.is_recorded_offline(s, event)? {
        return Ok(());
    }
    let message_id = offline::message_id(event, payload);
    let (origin_client, origin_connector) =
        cause.origin.as_deref().map_or((None, ""), |o| (Some(o.client_id.as_str()), o.connector_id.as_str()));
    let mut clients = s
        .insert_offline
        .query_map(
            params![event, payload, cause.user_id, message_id, at_ms, client_id, origin_client, origin_connector],
            |r| r.get::<_, String>(0),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    clients.sort_unstable();
    clients.dedup();
    for client in clients {
        let handlers = s
            .notify_offline
            .query_map(params![at_ms, client], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if handlers.is_empty() {
            continue;
        }
        let notice = s
            .insert_event
            .query_row(params![sql::OFFLINE_NOTICE, "{}", at_ms, cause.user_id, cause.depth, client], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?;
        let Some(id) = notice else { continue };
        cache.produced.push(sql::OFFLINE_NOTICE);
        for handler in handlers {
            s.insert_binding_delivery.execute(params![id, cause.user_id, at_ms, handler])?;
        }
    }
    Ok(())
}

fn apply(s: &mut Prepared, cache: &mut MemberCache, change: &Change) -> rusqlite::Result<ChangeOutcome> {
    match change {
        Change::RemoveMember { chat_id: ChatId(chat_id), user_id: UserId(user_id), record, at_ms, cause } => {
            if s.delete_member.execute(params![chat_id, user_id])? == 0 {
                return Ok(ChangeOutcome::NotAMember);
            }
            s.decrement_member_count.execute([chat_id])?;
            let chat = cache.after_leave(s, *chat_id, *user_id)?;
            let member_count = chat.member_count;
            // The members' kinds matter only when the author leaves.
            if chat.author == Some(*user_id) {
                let mut next = chat.author;
                for &candidate in &chat.members {
                    let member = s
                        .user_kind
                        .query_row([candidate], |r| Ok(sql::member(candidate, &r.get::<_, String>(0)?, r.get(1)?)))?;
                    if rules::may_take_over(&member, UserId(*user_id)) {
                        next = Some(candidate);
                        break;
                    }
                }
                s.set_author.execute(params![next, chat_id])?;
                chat.author = next;
            }
            let mut recipients = Vec::with_capacity(chat.members.len() + 1);
            recipients.extend_from_slice(&chat.members);
            recipients.push(*user_id);
            let (notification, event) =
                sql::membership_payloads(*chat_id, *user_id, member_count, &recipients, *record);
            s.insert_notification.execute(params![chat_id, "chatUserLeave", notification, at_ms])?;
            let author = chat.author;
            produce(s, cache, "ONCRMCHATUSERDELETE", &event, *at_ms, cause, None)?;
            Ok(ChangeOutcome::MemberRemoved { member_count, author })
        }
        Change::AddMember { chat_id: ChatId(chat_id), user_id: UserId(user_id), record, at_ms, cause } => {
            if s.insert_member.execute(params![chat_id, user_id, at_ms])? == 0 {
                return Ok(ChangeOutcome::AlreadyAMember);
            }
            let member_count: i64 = s.count_after_join.query_row([chat_id], |r| r.get(0))?;
            let recipients = cache.after_join(s, *chat_id)?;
            let (notification, event) =
                sql::membership_payloads(*chat_id, *user_id, member_count, &recipients, *record);
            s.insert_notification.execute(params![chat_id, "chatUserJoin", notification, at_ms])?;
            produce(s, cache, "ONCRMCHATUSERADD", &event, *at_ms, cause, None)?;
            Ok(ChangeOutcome::MemberAdded { member_count })
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
            if s.is_member.query_row(params![chat_id, author], |_| Ok(())).optional()?.is_none() {
                return Ok(ChangeOutcome::NotAMember);
            }
            let id: i64 = s.insert_message.query_row(params![chat_id, author, text, at_ms], |r| r.get(0))?;
            let event = sql::message_payload(*chat_id, id, *author, text, *at_ms, *line_id, connector_id);
            produce(s, cache, "ONOPENLINEMESSAGEADD", &event, *at_ms, cause, None)?;
            Ok(ChangeOutcome::MessageAdded { id })
        }
        Change::Emit { event, payload, client_id, at_ms, cause } => {
            Ok(ChangeOutcome::Emitted(produce(s, cache, event, payload, *at_ms, cause, Some(client_id))?))
        }
        Change::LeaseDeliveries { ids, now_ms, until_ms } => {
            let mut leased = Vec::with_capacity(ids.len());
            for id in ids {
                if s.lease_delivery.execute(params![until_ms, id, now_ms])? == 1 {
                    leased.push(*id);
                }
            }
            Ok(ChangeOutcome::Leased(leased))
        }
        Change::ReleaseDeliveries { ids, until_ms } => {
            for id in ids {
                s.release_delivery.execute(params![id, until_ms])?;
            }
            Ok(ChangeOutcome::Recorded)
        }
        Change::RecordDeliveries(outcomes) => {
            for o in outcomes {
                let next_ms = match o.next {
                    NextStep::RetryAt(at) => at,
                    _ => o.at_ms,
                };
                let state = o.next.state();
                // Gone (a reset) or taken over: nothing to record.
                if s.finish_attempt.execute(params![state, o.attempt, next_ms, o.at_ms, o.id, o.lease_until_ms])? == 1 {
                    s.insert_attempt.execute(params![o.id, o.attempt, o.at_ms, o.status, o.error, o.duration_ms])?;
                }
            }
            Ok(ChangeOutcome::Recorded)
        }
        Change::Prune { before_ms, keep, limit, now_ms } => {
            let events = s
                .prune_deliveries
                .query_map(params![before_ms, keep, limit], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            let mut previous = None;
            for &event in &events {
                // Rows come in delivery order, so an event's deliveries are next to each other.
                if previous != Some(event) {
                    s.prune_event.execute([event])?;
                    previous = Some(event);
                }
            }
            let notifications = s.prune_notifications.execute(params![limit, before_ms, keep])?;
            s.prune_tokens.execute([now_ms])?;
            Ok(ChangeOutcome::Pruned { deliveries: events.len() as u64, notifications: notifications as u64 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every migration, in order.
    fn schema() -> String {
        super::super::migrations::SQLITE.iter().map(|(_, sql)| *sql).collect()
    }

    /// SQLite numbers `$n` parameters by first appearance; the writer binds by position, so `$n` must be the
    /// n-th distinct parameter of every statement.
    #[test]
    fn placeholders_appear_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch(&schema()).expect("the schema applies");
        for statement in sql::ALL {
            let prepared = connection.prepare(statement).unwrap();
            for index in 1..=prepared.parameter_count() {
                assert_eq!(prepared.parameter_name(index), Some(format!("${index}").as_str()), "{statement}");
            }
        }
    }

    /// The due deliveries are read in index order, the `LIMIT` ending the scan: no sort of the whole backlog.
    #[test]
    fn due_deliveries_need_no_sort() {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("t.db")).unwrap();
        connection.execute_batch(&schema()).expect("the schema applies");
        let mut plan = connection.prepare(&format!("EXPLAIN QUERY PLAN {}", sql::DUE_DELIVERIES)).unwrap();
        let steps: Vec<String> =
            plan.query_map(params![0, 512], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
        assert!(!steps.iter().any(|s| s.contains("TEMP B-TREE")), "{steps:?}");
        assert!(steps.iter().any(|s| s.contains("deliveries_by_state_event")), "{steps:?}");
    }

    #[test]
    fn payloads_are_the_json_they_look_like() {
        let (notification, event) = sql::membership_payloads(
            5,
            2,
            1,
            &[1, 2],
            crate::domain::RecordRef { entity_type: crate::domain::CrmEntityType::Deal, id: 288 },
        );
        let notification: serde_json::Value = serde_json::from_str(&notification).unwrap();
        let event: serde_json::Value = serde_json::from_str(&event).unwrap();
        assert_eq!(
            notification,
            serde_json::json!({"chat_id": 5, "user_id": 2, "user_count": 1, "recipients": [1, 2]})
        );
        assert_eq!(
            event,
            serde_json::json!({"CHAT_ID": 5, "USER_ID": 2, "CRM_ENTITY_TYPE": "DEAL", "CRM_ENTITY": 288, "USER_COUNT": 1})
        );
        let (empty, _) = sql::membership_payloads(
            5,
            2,
            0,
            &[],
            crate::domain::RecordRef { entity_type: crate::domain::CrmEntityType::Lead, id: 1 },
        );
        assert!(serde_json::from_str::<serde_json::Value>(&empty).is_ok(), "{empty}");
    }

    /// A group is answered with its outcomes when the sync succeeds, and with an error for every change when
    /// it fails (`/dev/null` cannot be synced).
    #[test]
    fn a_group_is_answered_after_the_sync_and_failed_when_it_could_not_sync() {
        let answered = |wal: File| {
            let mut committed = Committed::new();
            let mut answers = Vec::new();
            for _ in 0..3 {
                let (reply, answer) = oneshot::channel();
                committed.push((reply, Ok(ChangeOutcome::NotAMember)));
                answers.push(answer);
            }
            answer_once_synced(&wal, committed);
            answers.into_iter().map(|mut a| a.try_recv().expect("answered")).collect::<Vec<_>>()
        };
        let dir = tempfile::tempdir().unwrap();
        let synced = answered(wal_file(&dir.path().join("t.db")).unwrap());
        assert!(synced.iter().all(|a| matches!(a, Ok(ChangeOutcome::NotAMember))), "{synced:?}");
        let failed = answered(File::open("/dev/null").unwrap());
        assert_eq!(failed.len(), 3);
        assert!(failed.iter().all(|a| a.is_err()), "{failed:?}");
    }

    /// The syncer answers every group handed to it, each after a sync.
    #[test]
    fn the_syncer_answers_every_group_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (to_syncer, handed_over) = mpsc::channel::<Committed>();
        let mut answers = Vec::new();
        for size in [2, 1] {
            let mut committed = Committed::new();
            for _ in 0..size {
                let (reply, answer) = oneshot::channel();
                committed.push((reply, Ok(ChangeOutcome::MemberAdded { member_count: 1 })));
                answers.push(answer);
            }
            to_syncer.send(committed).unwrap();
        }
        drop(to_syncer);
        sync_handed_over(wal_file(&dir.path().join("t.db")).unwrap(), handed_over);
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(ChangeOutcome::MemberAdded { member_count: 1 }))));
        }
    }

    fn write_rows(connection: &Connection, rows: i64) {
        connection.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..rows {
            connection.execute("INSERT INTO t (payload) VALUES (randomblob(3000))", []).unwrap();
        }
        connection.execute_batch("COMMIT").unwrap();
    }

    fn test_database(dir: &Path) -> (PathBuf, Connection) {
        let path = dir.join("t.db");
        let writer = open(&path).unwrap();
        writer.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)").unwrap();
        (path, writer)
    }

    /// A background checkpoint copies the WAL while the writer goes on appending, so the WAL would only grow;
    /// asked to, the writer copies the rest between two groups and its next commit starts the WAL over.
    #[test]
    fn the_writer_starts_the_wal_over_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = test_database(dir.path());
        // Cut back to nothing when it starts over, so that its length shows the frames written since.
        writer.execute_batch("PRAGMA journal_size_limit = 0").unwrap();
        let wal_len = || std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len();
        let checkpointer = open_checkpointer(&path).unwrap();
        let (committed, _woken) = mpsc::sync_channel(1);
        let checkpoints = Checkpoints { committed, restart_wal: Arc::new(AtomicI64::new(0)) };

        write_rows(&writer, 20);
        // A reader keeps the background checkpoint from catching up, as the writer's next group does under load.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN; SELECT COUNT(*) FROM t;").unwrap();
        write_rows(&writer, 20);
        let (frames, copied) = checkpoint(&checkpointer).unwrap();
        assert!(copied < frames, "{copied} of {frames}");
        reader.execute_batch("COMMIT").unwrap();

        let before = wal_len();
        write_rows(&writer, 1);
        checkpoints.after_commit(&writer);
        write_rows(&writer, 1);
        assert!(wal_len() > before, "not asked, the writer leaves the WAL alone");

        // A bound of one frame: the WAL is cut back to almost nothing, so its length shows what was written since.
        checkpoints.restart_wal.store(1, Ordering::Relaxed);
        checkpoints.after_commit(&writer);
        assert_eq!(checkpoints.restart_wal.load(Ordering::Relaxed), 0);
        write_rows(&writer, 1);
        assert!(wal_len() < before / 4, "the WAL started over: {} bytes, {before} before", wal_len());
        let rows: i64 = checkpointer.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 43);
    }

    /// The checkpoint thread copies the WAL when woken and asks for a restart only past its limit.
    #[test]
    fn the_checkpoint_thread_asks_for_a_restart_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = test_database(dir.path());
        write_rows(&writer, 20);
        let (frames, _) = checkpoint(&open_checkpointer(&path).unwrap()).unwrap();
        for (limit, asked) in [(frames, false), (frames - 1, true)] {
            let restart_wal = Arc::new(AtomicI64::new(0));
            let (committed, woken) = mpsc::sync_channel(1);
            committed.send(()).unwrap();
            drop(committed);
            checkpoint_in_background(open_checkpointer(&path).unwrap(), woken, restart_wal.clone(), limit);
            assert_eq!(restart_wal.load(Ordering::Relaxed) > 0, asked, "limit {limit}, {frames} frames");
        }
    }

    #[test]
    fn the_wal_bound_follows_the_database_between_4_and_64_mib() {
        assert_eq!(wal_bound(0), MIN_WAL_FRAMES);
        assert_eq!(wal_bound(10), MIN_WAL_FRAMES);
        assert_eq!(wal_bound(5_000), 5_000);
        assert_eq!(wal_bound(1_000_000), WAL_RESTART_FRAMES);
    }

    /// Rows changed over and over make a WAL many times the database's size: past the database's bound (here the
    /// minimum, 4 MiB) the writer is asked to start it over, long before the 64 MiB of a big database.
    #[test]
    fn a_small_database_keeps_a_small_wal() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = test_database(dir.path());
        write_rows(&writer, 100);
        for _ in 0..15 {
            writer.execute("UPDATE t SET payload = randomblob(3000)", []).unwrap();
        }
        let checkpointer = open_checkpointer(&path).unwrap();
        let (frames, _) = checkpoint(&checkpointer).unwrap();
        let pages: i64 = checkpointer.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
        assert!(frames > MIN_WAL_FRAMES && pages < MIN_WAL_FRAMES, "{frames} frames, {pages} pages");
        let restart_wal = Arc::new(AtomicI64::new(0));
        let (committed, woken) = mpsc::sync_channel(1);
        committed.send(()).unwrap();
        drop(committed);
        checkpoint_in_background(checkpointer, woken, restart_wal.clone(), WAL_RESTART_FRAMES);
        assert_eq!(restart_wal.load(Ordering::Relaxed), MIN_WAL_FRAMES);
        let checkpoints = Checkpoints { committed: mpsc::sync_channel(1).0, restart_wal };
        checkpoints.after_commit(&writer);
        write_rows(&writer, 1);
        let page_size: u64 = writer.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap();
        let wal_len = std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len();
        assert!(wal_len <= MIN_WAL_FRAMES as u64 * (page_size + 24) + 32, "the WAL was cut back: {wal_len} bytes");
    }

    fn job(change: Change) -> Job {
        Job { change, reply: oneshot::channel().0 }
    }

    /// The members the writer keeps are read again when another connection changed the database, even when
    /// the change kept the member count.
    #[test]
    fn the_member_cache_follows_changes_made_by_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let connection = open(&path).unwrap();
        connection.execute_batch(&schema()).unwrap();
        connection
            .execute_batch(
                "INSERT INTO users SELECT value, 'U', '', 1, 'employee', 0, 'all', 'all', 'all', 'all', 'self', \
                 'self' FROM json_each('[1, 2, 3, 4]'); \
                 INSERT INTO lines VALUES (1, 'L'); \
                 INSERT INTO chats VALUES (5, 1, 'livechat', 1, 3, 3); \
                 INSERT INTO chat_members VALUES (5, 1, 0, 0), (5, 2, 1, 0), (5, 4, 2, 0);",
            )
            .unwrap();
        let mut statements = Prepared::new(&connection).unwrap();
        let mut members = MemberCache::default();
        let record = crate::domain::RecordRef { entity_type: crate::domain::CrmEntityType::Deal, id: 1 };
        let remove = |user| {
            job(Change::RemoveMember {
                chat_id: ChatId(5),
                user_id: UserId(user),
                record,
                at_ms: 0,
                cause: Cause::default(),
            })
        };
        let last_recipients = || {
            let payload: String = connection
                .query_row("SELECT payload FROM notifications ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&payload).unwrap()["recipients"].clone()
        };

        commit_group(&mut statements, &mut members, &[remove(4)]);
        assert_eq!(last_recipients(), serde_json::json!([1, 2, 4]));
        assert_eq!(members.chats[&5].members, [1, 2]);
        // Another process swaps member 2 for member 3: the count stays 2.
        Connection::open(&path)
            .unwrap()
            .execute_batch("DELETE FROM chat_members WHERE user_id = 2; INSERT INTO chat_members VALUES (5, 3, 3, 0);")
            .unwrap();
        let outcomes = commit_group(&mut statements, &mut members, &[remove(1)]);
        // The author left: the chat passes to the longest-standing member, who is now 3.
        assert!(
            matches!(outcomes[0], Ok(ChangeOutcome::MemberRemoved { member_count: 1, author: Some(3) })),
            "{outcomes:?}"
        );
        assert_eq!(last_recipients(), serde_json::json!([3, 1]));
        // The writer's own changes keep the cache, the new author included.
        assert_eq!(members.chats[&5].author, Some(3));
        let outcomes = commit_group(&mut statements, &mut members, &[remove(3)]);
        assert!(matches!(outcomes[0], Ok(ChangeOutcome::MemberRemoved { member_count: 0, .. })), "{outcomes:?}");
        assert_eq!(last_recipients(), serde_json::json!([3]));
        assert_eq!(members.chats[&5].members, Vec::<i64>::new());
        let stored: (Option<i64>, i64) = connection
            .query_row("SELECT author_id, member_count FROM chats WHERE id = 5", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(stored, (members.chats[&5].author, 0));
    }

    /// A change that fails does not fail its neighbours, and leaves nothing behind.
    #[test]
    fn a_failing_change_leaves_its_group_intact() {
        let dir = tempfile::tempdir().unwrap();
        let connection = open(&dir.path().join("t.db")).unwrap();
        connection.execute_batch(&schema()).unwrap();
        connection
            .execute_batch(
                "INSERT INTO users VALUES (1, 'A', '', 1, 'employee', 0, 'all', 'all', 'all', 'all', 'self', 'self'), \
                                          (2, 'B', '', 1, 'employee', 0, 'all', 'all', 'all', 'all', 'self', 'self'); \
                 INSERT INTO lines VALUES (1, 'L'); \
                 INSERT INTO chats VALUES (5, 1, 'livechat', 1, 2, 2); \
                 INSERT INTO chat_members VALUES (5, 1, 0, 0), (5, 2, 1, 0); \
                 INSERT INTO apps VALUES ('app', '', 'imopenlines', 'token'); \
                 INSERT INTO event_bindings (client_id, event, handler, user_id, connector_id, created_ms) \
                 VALUES ('app', 'ONCRMCHATUSERDELETE', 'http://127.0.0.1/', 0, '', 0), \
                        ('app', 'ONCRMCHATUSERADD', 'http://127.0.0.1/', 0, '', 0);",
            )
            .unwrap();
        let record = crate::domain::RecordRef { entity_type: crate::domain::CrmEntityType::Deal, id: 1 };
        let group = [
            job(Change::RemoveMember {
                chat_id: ChatId(5),
                user_id: UserId(2),
                record,
                at_ms: 0,
                cause: Cause::default(),
            }),
            // User 99 does not exist: the foreign key refuses the membership.
            job(Change::AddMember {
                chat_id: ChatId(5),
                user_id: UserId(99),
                record,
                at_ms: 0,
                cause: Cause::default(),
            }),
            job(Change::RemoveMember {
                chat_id: ChatId(5),
                user_id: UserId(1),
                record,
                at_ms: 0,
                cause: Cause::default(),
            }),
        ];
        let outcomes = commit_group(&mut Prepared::new(&connection).unwrap(), &mut MemberCache::default(), &group);
        assert!(matches!(outcomes[0], Ok(ChangeOutcome::MemberRemoved { member_count: 1, .. })), "{outcomes:?}");
        assert!(outcomes[1].is_err(), "{outcomes:?}");
        assert!(matches!(outcomes[2], Ok(ChangeOutcome::MemberRemoved { member_count: 0, .. })), "{outcomes:?}");
        let (members, count, events): (i64, i64, i64) = connection
            .query_row(
                "SELECT (SELECT COUNT(*) FROM chat_members), (SELECT member_count FROM chats), \
                 (SELECT COUNT(*) FROM outbox WHERE event = 'ONCRMCHATUSERDELETE')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        // Two removals, two events (each with its delivery); nothing of the failed addition.
        assert_eq!((members, count, events), (0, 0, 2));
        let (all_events, deliveries): (i64, i64) = connection
            .query_row("SELECT (SELECT COUNT(*) FROM outbox), (SELECT COUNT(*) FROM deliveries)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((all_events, deliveries), (2, 2));
    }
}
