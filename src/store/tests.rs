//! Two instances of a backend on one database (two servers, or a server and the CLI) changing the same chats
//! at once: no effect may be lost or applied twice, and the chat's counters must match its members. Each
//! scenario runs on SQLite and on PostgreSQL; the PostgreSQL ones need a server, `CRMCHAT_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), on which each test creates its own database.
//! Also: what a redelivery does to a delivery being sent, on both backends.

use tokio::task::JoinSet;

use super::{Change, ChangeOutcome, DynStore};
use crate::domain::{ChatId, CrmEntityType, RecordRef, UserId};
use crate::state::{self, ChatDef, PortalState, UserDef};

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Chats 9000.. of the test portal: members 12 (employee, the author), 20 (bot) and 30 (connector).
const FIRST_CHAT: i64 = 9000;
const RECORD: RecordRef = RecordRef { entity_type: CrmEntityType::Deal, id: 288 };

enum Kind {
    /// The directory of the database file, deleted with it.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres,
}

/// A fresh database, dropped with the value.
struct TestDb {
    url: String,
    kind: Kind,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/crmchat.db", dir.path().display());
        Self { url, kind: Kind::Sqlite { _dir: dir } }
    }

    async fn postgres() -> Self {
        use sqlx::migrate::MigrateDatabase;
        let server = std::env::var("CRMCHAT_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        let name = format!("crmchat_unit_{:016x}", rand::random::<u64>());
        let url = match server.split_once('?') {
            Some((base, query)) => format!("{}/{name}?{query}", base.rsplit_once('/').unwrap().0),
            None => format!("{}/{name}", server.rsplit_once('/').unwrap().0),
        };
        sqlx::Postgres::create_database(&url)
            .await
            .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {server} (CRMCHAT_TEST_POSTGRES): {e}"));
        Self { url, kind: Kind::Postgres }
    }

    /// One more server instance on the database.
    async fn instance(&self) -> DynStore {
        super::open(&self.url).await.unwrap()
    }

    /// `(member_count, next_join_seq, members, distinct join_seq, max join_seq)` of a chat, read directly.
    async fn counters(&self, chat_id: i64) -> (i64, i64, i64, i64, i64) {
        use sqlx::Connection;
        const COUNTERS: &str = "SELECT c.member_count, c.next_join_seq, \
            (SELECT COUNT(*) FROM chat_members m WHERE m.chat_id = c.id), \
            (SELECT COUNT(DISTINCT m.join_seq) FROM chat_members m WHERE m.chat_id = c.id), \
            (SELECT COALESCE(MAX(m.join_seq), -1) FROM chat_members m WHERE m.chat_id = c.id) \
            FROM chats c WHERE c.id = $1";
        match self.kind {
            Kind::Sqlite { .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(COUNTERS).bind(chat_id).fetch_one(&mut conn).await.unwrap()
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(COUNTERS).bind(chat_id).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    async fn count(&self, table: &str) -> i64 {
        use sqlx::Connection;
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self.kind {
            Kind::Sqlite { .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap()
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    async fn assert_counters_match_members(&self, chat_id: i64) {
        let (count, next_seq, members, seqs, max_seq) = self.counters(chat_id).await;
        assert_eq!(count, members, "chat {chat_id}: member_count");
        assert_eq!(seqs, members, "chat {chat_id}: one join_seq per member");
        assert!(next_seq > max_seq, "chat {chat_id}: next_join_seq {next_seq} after {max_seq}");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Kind::Postgres = self.kind {
            use sqlx::migrate::MigrateDatabase;
            let url = self.url.clone();
            // Drop may run inside the test's runtime, which cannot be blocked on: use a runtime of its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(sqlx::Postgres::force_drop_database(&url))
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop the test database {}", self.url);
            }
        }
    }
}

/// The demo portal and `chats` more chats.
fn portal(chats: i64) -> PortalState {
    let mut state = state::demo::demo_state();
    for id in FIRST_CHAT..FIRST_CHAT + chats {
        state.chats.push(ChatDef {
            id,
            line: 1,
            connector: "livechat".into(),
            author: Some(12),
            members: vec![12, 20, 30],
            sessions: Vec::new(),
            messages: Vec::new(),
        });
    }
    state
}

fn remove(chat_id: i64, user_id: i64) -> Change {
    Change::RemoveMember {
        chat_id: ChatId(chat_id),
        user_id: UserId(user_id),
        record: RECORD,
        at_ms: 1,
        cause: Default::default(),
    }
}

fn add(chat_id: i64, user_id: i64) -> Change {
    Change::AddMember {
        chat_id: ChatId(chat_id),
        user_id: UserId(user_id),
        record: RECORD,
        at_ms: 1,
        cause: Default::default(),
    }
}

/// Runs every `(instance, change)` at once; the outcomes in the order given.
async fn apply_all(changes: Vec<(DynStore, Change)>) -> Vec<ChangeOutcome> {
    let mut set = JoinSet::new();
    for (i, (store, change)) in changes.into_iter().enumerate() {
        set.spawn(async move { (i, store.apply(change).await.unwrap()) });
    }
    let mut outcomes: Vec<_> = set.join_all().await;
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}

/// Two instances on a fresh database holding [`portal`].
async fn two_instances(db: &TestDb, chats: i64) -> (DynStore, DynStore) {
    let a = db.instance().await;
    a.load_state(portal(chats), true, 0).await.unwrap();
    (a, db.instance().await)
}

async fn same_member_removed_once(db: TestDb) {
    let (a, b) = two_instances(&db, 10).await;
    let mut changes = Vec::new();
    for chat in FIRST_CHAT..FIRST_CHAT + 10 {
        for i in 0..6 {
            changes.push((if i % 2 == 0 { a.clone() } else { b.clone() }, remove(chat, 20)));
        }
    }
    let outcomes = apply_all(changes).await;
    for (chat, outcomes) in (FIRST_CHAT..).zip(outcomes.chunks(6)) {
        let removed = outcomes.iter().filter(|o| matches!(o, ChangeOutcome::MemberRemoved { .. })).count();
        let not_member = outcomes.iter().filter(|o| **o == ChangeOutcome::NotAMember).count();
        assert_eq!((removed, not_member), (1, 5), "chat {chat}: {outcomes:?}");
        assert!(outcomes.contains(&ChangeOutcome::MemberRemoved { member_count: 2, author: Some(12) }));
        assert_eq!(a.chat_members(chat).await.unwrap(), [12, 30]);
        db.assert_counters_match_members(chat).await;
    }
}

/// The author 12 leaves through one instance while employee 14 joins through the other: the outcome is one
/// of the two serial orders. Joined first, 14 inherits the authorship; joined after, there was no successor
/// when 12 left (20 is a bot, 30 a connector) and 12 stays the author.
async fn handover_racing_an_add(db: TestDb) {
    let (a, b) = two_instances(&db, 20).await;
    let mut changes = Vec::new();
    for chat in FIRST_CHAT..FIRST_CHAT + 20 {
        changes.push((a.clone(), remove(chat, 12)));
        changes.push((b.clone(), add(chat, 14)));
    }
    let outcomes = apply_all(changes).await;
    for (chat, pair) in (FIRST_CHAT..).zip(outcomes.chunks(2)) {
        let added_first = [
            ChangeOutcome::MemberRemoved { member_count: 3, author: Some(14) },
            ChangeOutcome::MemberAdded { member_count: 4 },
        ];
        let removed_first = [
            ChangeOutcome::MemberRemoved { member_count: 2, author: Some(12) },
            ChangeOutcome::MemberAdded { member_count: 3 },
        ];
        assert!(pair == added_first || pair == removed_first, "chat {chat}: not a serial order: {pair:?}");
        let expected_author = if pair == added_first { Some(14) } else { Some(12) };
        let state = a.export_state().await.unwrap();
        let author = state.chats.iter().find(|c| c.id == chat).unwrap().author;
        assert_eq!(author, expected_author, "chat {chat}");
        assert_eq!(a.chat_members(chat).await.unwrap(), [20, 30, 14], "chat {chat}");
        db.assert_counters_match_members(chat).await;
    }
}

/// Messages through both instances at once get distinct ids, one above the other from the loaded maximum.
async fn message_ids_never_collide(db: TestDb) {
    let (a, b) = two_instances(&db, 4).await;
    let mut changes = Vec::new();
    for i in 0..40 {
        let chat = [8773, FIRST_CHAT, FIRST_CHAT + 1, FIRST_CHAT + 2][i % 4];
        let change = Change::AddMessage {
            chat_id: ChatId(chat),
            author: UserId(12),
            text: format!("m{i}"),
            record: RECORD,
            line_id: 1,
            connector_id: "livechat".into(),
            at_ms: 1,
            cause: Default::default(),
        };
        changes.push((if i % 2 == 0 { a.clone() } else { b.clone() }, change));
    }
    let mut ids: Vec<i64> = apply_all(changes)
        .await
        .into_iter()
        .map(|o| match o {
            ChangeOutcome::MessageAdded { id } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    ids.sort();
    // The demo's chat 8773 has messages 1001 and 1002.
    assert_eq!(ids, (1003..1043).collect::<Vec<_>>());
    let exported: usize = b.export_state().await.unwrap().chats.iter().map(|c| c.messages.len()).sum();
    assert_eq!(exported, 42);
}

/// State loads through both instances, while both remove members: every load and every removal is kept
/// (a load merges into what it read, so reading before another's commit would write old rows back).
async fn loads_racing_changes_lose_nothing(db: TestDb) {
    let (a, b) = two_instances(&db, 20).await;
    let mut set = JoinSet::new();
    for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        set.spawn(async move {
            for i in 0..5 {
                let id = 100 + 10 * n as i64 + i;
                let user = serde_json::json!({"id": id, "name": format!("Loaded {id}")});
                let incoming =
                    PortalState { users: vec![serde_json::from_value::<UserDef>(user).unwrap()], ..Default::default() };
                store.load_state(incoming, false, 0).await.unwrap();
            }
        });
    }
    for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        set.spawn(async move {
            for chat in (FIRST_CHAT + n as i64..FIRST_CHAT + 20).step_by(2) {
                assert!(matches!(store.apply(remove(chat, 30)).await.unwrap(), ChangeOutcome::MemberRemoved { .. }));
            }
        });
    }
    set.join_all().await;
    let state = a.export_state().await.unwrap();
    for id in (100..105).chain(110..115) {
        assert!(state.users.iter().any(|u| u.id == id), "user {id} of a load is kept");
    }
    for chat in FIRST_CHAT..FIRST_CHAT + 20 {
        let members = &state.chats.iter().find(|c| c.id == chat).unwrap().members;
        assert_eq!(members, &[12, 20], "chat {chat}: the removal is kept");
        db.assert_counters_match_members(chat).await;
    }
}

/// A redelivery asked for while an attempt is in flight: the delivery stays leased (not sent twice at once),
/// and is due again once that attempt is recorded. A lease that expired (its instance died) leaves no mark: the
/// attempt under the next lease is the redelivery.
async fn a_redelivery_waits_for_the_attempt_in_flight(db: TestDb) {
    use super::{DeliveryOutcome, EventBinding, EventLogFilter, NextStep};
    let store = db.instance().await;
    store.load_state(portal(0), true, 0).await.unwrap();
    let binding = EventBinding {
        id: 0,
        client_id: "local.demo.app".into(),
        event: "ONAPPTEST".into(),
        handler: "http://127.0.0.1:9/handler".into(),
        user_id: 0,
        connector_id: String::new(),
        min_timeout: None,
    };
    store.add_binding(&binding, 0).await.unwrap().unwrap();
    let emit = Change::Emit {
        event: "ONAPPTEST",
        payload: "{}".into(),
        client_id: "local.demo.app".into(),
        at_ms: 1_000,
        cause: Default::default(),
    };
    assert_eq!(store.apply(emit).await.unwrap(), ChangeOutcome::Emitted(1));
    let [due] = <[_; 1]>::try_from(store.due_deliveries(1_000, 10).await.unwrap()).unwrap();
    let lease = |now_ms, until_ms| Change::LeaseDeliveries { ids: vec![due.id], now_ms, until_ms };
    let delivered = |attempt, at_ms, lease_until_ms| {
        Change::RecordDeliveries(vec![DeliveryOutcome {
            id: due.id,
            lease_until_ms,
            attempt,
            at_ms,
            status: Some(200),
            error: None,
            duration_ms: 5,
            next: NextStep::Delivered,
        }])
    };
    assert_eq!(store.apply(lease(1_000, 5_000)).await.unwrap(), ChangeOutcome::Leased(vec![due.id]));
    assert_eq!(store.redeliver(due.event_id, 2_000).await.unwrap(), Some(1));
    assert!(store.due_deliveries(2_000, 10).await.unwrap().is_empty(), "still leased");
    assert_eq!(store.apply(lease(2_000, 6_000)).await.unwrap(), ChangeOutcome::Leased(vec![]));
    store.apply(delivered(1, 1_500, 5_000)).await.unwrap();
    let again = store.due_deliveries(2_100, 10).await.unwrap();
    assert_eq!(again.iter().map(|d| (d.id, d.attempts)).collect::<Vec<_>>(), [(due.id, 1)], "due again");

    // Leased, redelivered, and the lease runs out: the next lease's attempt settles it.
    assert_eq!(store.apply(lease(2_100, 6_000)).await.unwrap(), ChangeOutcome::Leased(vec![due.id]));
    assert_eq!(store.redeliver(due.event_id, 3_000).await.unwrap(), Some(1));
    assert_eq!(store.apply(lease(7_000, 9_000)).await.unwrap(), ChangeOutcome::Leased(vec![due.id]));
    store.apply(delivered(2, 7_100, 9_000)).await.unwrap();
    assert!(store.due_deliveries(10_000, 10).await.unwrap().is_empty());
    let log = store.event_log(&EventLogFilter { state: None, event: None, limit: 10 }).await.unwrap();
    let delivery = &log[0].deliveries[0];
    assert_eq!(delivery.state, "delivered");
    assert_eq!(delivery.attempts.iter().map(|a| (a.attempt, a.at_ms)).collect::<Vec<_>>(), [(1, 1_500), (2, 7_100)]);
    assert_eq!(store.redeliver(due.event_id + 1, 10_000).await.unwrap(), None, "an unknown event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_redelivery_waits_for_the_attempt_in_flight() {
    a_redelivery_waits_for_the_attempt_in_flight(TestDb::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_redelivery_waits_for_the_attempt_in_flight() {
    a_redelivery_waits_for_the_attempt_in_flight(TestDb::postgres().await).await
}

/// Every change writes a messenger notice; pruning keeps the newest `keep` whatever their age, in batches.
async fn notices_are_bounded_by_count(db: TestDb) {
    let store = db.instance().await;
    store.load_state(portal(1), true, 0).await.unwrap();
    for _ in 0..15 {
        assert!(matches!(store.apply(remove(FIRST_CHAT, 20)).await.unwrap(), ChangeOutcome::MemberRemoved { .. }));
        assert!(matches!(store.apply(add(FIRST_CHAT, 20)).await.unwrap(), ChangeOutcome::MemberAdded { .. }));
    }
    let prune = |limit| Change::Prune { before_ms: 0, keep: 10, limit, now_ms: 0 };
    let outcome = store.apply(prune(12)).await.unwrap();
    assert_eq!(outcome, ChangeOutcome::Pruned { deliveries: 0, notifications: 12 }, "one batch of the oldest");
    let outcome = store.apply(prune(100)).await.unwrap();
    assert_eq!(outcome, ChangeOutcome::Pruned { deliveries: 0, notifications: 8 }, "down to the newest 10");
    assert_eq!(db.count("notifications").await, 10);
    let outcome = store.apply(prune(100)).await.unwrap();
    assert_eq!(outcome, ChangeOutcome::Pruned { deliveries: 0, notifications: 0 });
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_notices_are_bounded_by_count() {
    notices_are_bounded_by_count(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_notices_are_bounded_by_count() {
    notices_are_bounded_by_count(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_same_member_removed_once() {
    same_member_removed_once(TestDb::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_same_member_removed_once() {
    same_member_removed_once(TestDb::postgres().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_handover_racing_an_add() {
    handover_racing_an_add(TestDb::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_handover_racing_an_add() {
    handover_racing_an_add(TestDb::postgres().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_message_ids_never_collide() {
    message_ids_never_collide(TestDb::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_message_ids_never_collide() {
    message_ids_never_collide(TestDb::postgres().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_loads_racing_changes_lose_nothing() {
    loads_racing_changes_lose_nothing(TestDb::sqlite()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_loads_racing_changes_lose_nothing() {
    loads_racing_changes_lose_nothing(TestDb::postgres().await).await
}

/// PostgreSQL refuses a NUL in text, SQLite stores it: on PostgreSQL the message fails inside whatever group it
/// was committed with, and every other change sent with it at once must still be applied, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_failing_change_is_left_out_of_its_group() {
    let db = TestDb::postgres().await;
    let (a, _) = two_instances(&db, 40).await;
    let message = |text: &str| Change::AddMessage {
        chat_id: ChatId(FIRST_CHAT),
        author: UserId(12),
        text: text.into(),
        record: RECORD,
        line_id: 1,
        connector_id: "livechat".into(),
        at_ms: 1,
        cause: Default::default(),
    };
    let mut set = JoinSet::new();
    for round in 0..5 {
        // Chats of one lane (ids four apart), so the changes queue behind each other's commits.
        for chat in (FIRST_CHAT..FIRST_CHAT + 40).step_by(4) {
            let change = if round == 0 { remove(chat, 20) } else { add(chat, [1, 13, 14, 15][round - 1]) };
            let store = a.clone();
            set.spawn(async move { (chat, store.apply(change).await) });
        }
        let store = a.clone();
        set.spawn(async move { (0, store.apply(message(&format!("bad\0{round}"))).await) });
    }
    let mut failed = 0;
    for (chat, outcome) in set.join_all().await {
        match outcome {
            Err(_) if chat == 0 => failed += 1,
            Ok(ChangeOutcome::MemberRemoved { .. } | ChangeOutcome::MemberAdded { .. }) => {}
            other => panic!("chat {chat}: {other:?}"),
        }
    }
    assert_eq!(failed, 5, "every message with a NUL fails");
    for chat in (FIRST_CHAT..FIRST_CHAT + 40).step_by(4) {
        let mut members = a.chat_members(chat).await.unwrap();
        members.sort_unstable();
        assert_eq!(members, [1, 12, 13, 14, 15, 30], "chat {chat}");
        db.assert_counters_match_members(chat).await;
    }
    assert_eq!(a.apply(message("good")).await.unwrap(), ChangeOutcome::MessageAdded { id: 1003 });
}

/// Text with the characters a bulk path must escape (PostgreSQL's `COPY` text format: backslash, tab, line
/// feed, carriage return; and the two-character `\N` that means NULL there) is stored and exported as given.
async fn awkward_text_survives_a_load(db: TestDb) {
    let store = db.instance().await;
    let mut state = portal(1);
    let texts = ["tab\there", "line\nfeed\r\nand back", "back\\slash \\N \\t", "ünïcødé \"quoted\" 'single'", "\\"];
    state.chats.last_mut().unwrap().messages = texts
        .iter()
        .enumerate()
        .map(|(i, text)| state::MessageDef {
            id: 7000 + i as i64,
            author: 12,
            text: (*text).into(),
            date: "2026-11-20T10:00:00Z".into(),
        })
        .collect();
    state.lines[0].connectors[0].title = "Online\tchat\\\n".into();
    store.load_state(state, true, 0).await.unwrap();
    let exported = store.export_state().await.unwrap();
    let chat = exported.chats.iter().find(|c| c.id == FIRST_CHAT).unwrap();
    assert_eq!(chat.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), texts);
    assert_eq!(exported.lines[0].connectors[0].title, "Online\tchat\\\n");
}

#[tokio::test]
async fn sqlite_awkward_text_survives_a_load() {
    awkward_text_survives_a_load(TestDb::sqlite()).await
}

#[tokio::test]
async fn postgres_awkward_text_survives_a_load() {
    awkward_text_survives_a_load(TestDb::postgres().await).await
}
