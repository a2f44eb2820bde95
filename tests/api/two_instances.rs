//! Several stateless instances on one database (README, "PostgreSQL and several instances"), with two real
//! `crmchat serve` processes:
//!
//! - the same chat changed through both at once: the same removal gives one success and one `USER_NOT_FOUND`,
//!   an author hand-over racing an add ends in one of the two serial outcomes — on PostgreSQL (row locks) and on
//!   one SQLite file (`BEGIN IMMEDIATE` + busy timeout); the effects (membership, member count, author, outbox
//!   events) are read back from the database and must be those of some serial order, none lost or doubled;
//! - `--redis`: the request-intensity bucket lives in Redis, so two instances together allow what one would;
//!   without it each instance has its own; with Redis unreachable an instance serves with its local limiter
//!   and says so in its log and `/healthz`;
//! - `--trust-forwarded-for`: the client address and scheme as a reverse proxy reports them;
//! - `deploy/nginx.conf` in front of two instances on one PostgreSQL database (when nginx is installed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;

const ADD: &str = "imopenlines.crm.chat.user.add";
const REDIS: &str = "redis://127.0.0.1:6379";
/// Nothing listens on port 1.
const NO_REDIS: &str = "redis://127.0.0.1:1";
const HEALTH_REDIS: &str = "redis";
const HEALTH_LOCAL: &str = "local";
const HEALTH_FALLBACK: &str = "local (redis unreachable)";

/// Rounds of each race; one chat (bound to a deal of its own) per round.
const ROUNDS: i64 = 20;
/// Removal race: chat `REMOVE_CHAT + i` of deal `REMOVE_DEAL + i`, members [12, 14, 20, 30], author 12.
const REMOVE_CHAT: i64 = 9001;
const REMOVE_DEAL: i64 = 5001;
/// Hand-over race: chat `HANDOVER_CHAT + i` of deal `HANDOVER_DEAL + i`, members [12, 20, 30], author 12.
const HANDOVER_CHAT: i64 = 9101;
const HANDOVER_DEAL: i64 = 5101;
/// The members removed in turn in the removal race (12 is the author: its removal hands authorship to 14).
const REMOVED: [i64; 4] = [12, 14, 20, 30];

// ---------------------------------------------------------------------------------------------------------------
// Two processes on one database

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Postgres,
    Sqlite,
}

/// The storage two instances share: one data directory (the SQLite file, the TLS certificate) and, on
/// PostgreSQL, a fresh database `crmchat_t_<random>` on the test server, dropped with the value.
struct SharedStore {
    dir: TempDir,
    pg: Option<PgDatabase>,
}

impl SharedStore {
    /// Always the backend asked for, whatever `CRMCHAT_TEST_DATABASE` says.
    fn new(backend: Backend) -> Self {
        let dir = tempfile::Builder::new().prefix("crmchat-shared-").tempdir().expect("creating a temp dir");
        let pg = (backend == Backend::Postgres).then(|| PgDatabase::create("crmchat_t"));
        Self { dir, pg }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--database`: the PostgreSQL URL, or none (SQLite in the data directory).
    fn database(&self) -> Option<&str> {
        self.pg.as_ref().map(|pg| pg.url.as_str())
    }

    fn export(&self) -> Value {
        export_database(self.data_dir(), self.database())
    }

    /// The outbox records `(event, payload)` in id order.
    async fn outbox(&self) -> Vec<(String, Value)> {
        let rows = self.query_pairs("SELECT event, payload FROM outbox ORDER BY id").await;
        rows.into_iter().map(|(event, payload)| (event, serde_json::from_str(&payload).unwrap())).collect()
    }

    /// `chats.member_count` of every chat.
    async fn member_counts(&self) -> std::collections::HashMap<i64, i64> {
        let rows = self.query_pairs("SELECT CAST(id AS TEXT), CAST(member_count AS TEXT) FROM chats").await;
        rows.into_iter().map(|(id, count)| (id.parse().unwrap(), count.parse().unwrap())).collect()
    }

    /// Binds a handler of the demo application to the membership events, so that changes write them: only
    /// then is an event produced. Written straight into the database, as another process would.
    async fn bind_membership_events(&self) {
        use sqlx::Connection;
        let sql = "INSERT INTO event_bindings (client_id, event, handler, user_id, connector_id, created_ms) \
                   VALUES ('local.demo.app', 'ONCRMCHATUSERDELETE', 'http://127.0.0.1:9/', 0, '', 0), \
                          ('local.demo.app', 'ONCRMCHATUSERADD', 'http://127.0.0.1:9/', 0, '', 0)";
        match self.database() {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connecting to the test database");
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
            }
            None => {
                let url = format!("sqlite://{}", self.data_dir().join("crmchat.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("opening the SQLite file");
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
            }
        }
    }

    /// Rows of two text columns, read straight from the shared database.
    async fn query_pairs(&self, sql: &str) -> Vec<(String, String)> {
        use sqlx::Connection;
        match self.database() {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connecting to the test database");
                sqlx::query_as(sql).fetch_all(&mut conn).await.expect(sql)
            }
            None => {
                let url = format!("sqlite://{}?mode=ro", self.data_dir().join("crmchat.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("opening the SQLite file");
                sqlx::query_as(sql).fetch_all(&mut conn).await.expect(sql)
            }
        }
    }
}

/// Two server processes on one [`SharedStore`]: `a` loaded the fixture, `b` started on the loaded database
/// without `--fixture`. Fields drop in order: both servers are killed before the database is dropped.
struct Pair {
    a: TestApp,
    b: TestApp,
    store: SharedStore,
}

async fn spawn_pair(backend: Backend, fixture: Value, args: &[&str]) -> Pair {
    let store = SharedStore::new(backend);
    let a = spawn_instance(store.data_dir(), store.database(), Some(&fixture), args).await;
    let b = spawn_instance(store.data_dir(), store.database(), None, args).await;
    Pair { a, b, store }
}

impl Pair {
    /// One call to each, so that both clients hold an open connection before the races start.
    async fn warm_up(&self) {
        for app in [&self.a, &self.b] {
            let resp = app.get(&app.method_path("server.time")).await;
            assert_eq!(resp.status, 200, "{}", resp.text);
        }
    }

    fn logs(&self) -> String {
        format!("---- instance a ----\n{}\n---- instance b ----\n{}", self.a.log(), self.b.log())
    }
}

/// The demo portal (plan `unlimited`: the races are not about the rate limit) plus, per round, a deal with an
/// active chat for each race.
fn race_fixture() -> Value {
    demo_with(|f| {
        f["portal"]["plan"] = json!("unlimited");
        for i in 0..ROUNDS {
            for (deal, chat, members) in [
                (REMOVE_DEAL + i, REMOVE_CHAT + i, json!([12, 14, 20, 30])),
                (HANDOVER_DEAL + i, HANDOVER_CHAT + i, json!([12, 20, 30])),
            ] {
                f["crm"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "deal", "id": deal, "title": format!("Deal {deal}"), "responsible": 12}));
                f["chats"].as_array_mut().unwrap().push(json!({
                    "id": chat, "line": 1, "connector": "livechat", "author": 12, "members": members,
                    "sessions": [{"id": chat, "status": "operator", "modified": "2026-11-21T10:00:00Z",
                                  "crm": [{"type": "deal", "id": deal}]}]
                }));
            }
        }
    })
}

fn deal(id: i64, user: i64) -> Value {
    json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": id, "USER_ID": user})
}

fn assert_not_member(resp: &Resp) {
    assert_error(resp, 400, "USER_NOT_FOUND", "The specified user is not in chat.");
}

/// The outbox events of `chat`, in commit order.
fn chat_events(outbox: &[(String, Value)], chat: i64) -> Vec<(String, i64, i64)> {
    outbox
        .iter()
        .filter(|(_, payload)| payload["CHAT_ID"] == chat)
        .map(|(event, p)| (event.clone(), p["USER_ID"].as_i64().unwrap(), p["USER_COUNT"].as_i64().unwrap()))
        .collect()
}

/// The same removal sent to both instances at the same moment, 20 times (one chat each): exactly one success
/// and one `USER_NOT_FOUND` each time, the member removed once (join order, member count and author as after
/// one removal, one `ONCRMCHATUSERDELETE`), nothing else changed.
async fn removal_race(backend: Backend) {
    let pair = spawn_pair(backend, race_fixture(), &[]).await;
    pair.store.bind_membership_events().await;
    pair.warm_up().await;
    let before = pair.store.export();
    let mut wins = (0, 0);
    for i in 0..ROUNDS {
        let (chat, user) = (REMOVE_CHAT + i, REMOVED[i as usize % REMOVED.len()]);
        let params = deal(REMOVE_DEAL + i, user);
        let (ra, rb) = tokio::join!(pair.a.delete(params.clone()), pair.b.delete(params.clone()));
        let (ok, refused) = if ra.status == 200 {
            wins.0 += 1;
            (&ra, &rb)
        } else {
            wins.1 += 1;
            (&rb, &ra)
        };
        assert_removed(ok, chat);
        assert_not_member(refused);
    }
    eprintln!("{backend:?} removal race: instance a won {} rounds, instance b {}", wins.0, wins.1);

    let mut expected = before.clone();
    for chat in expected["chats"].as_array_mut().unwrap() {
        let id = chat["id"].as_i64().unwrap();
        if (REMOVE_CHAT..REMOVE_CHAT + ROUNDS).contains(&id) {
            let user = REMOVED[(id - REMOVE_CHAT) as usize % REMOVED.len()];
            let members: Vec<i64> = REMOVED.iter().copied().filter(|m| *m != user).collect();
            chat["members"] = json!(members);
            chat["author"] = json!(if user == 12 { 14 } else { 12 });
        }
    }
    assert_eq!(pair.store.export(), expected, "each member removed exactly once, order intact\n{}", pair.logs());

    let outbox = pair.store.outbox().await;
    let counts = pair.store.member_counts().await;
    for i in 0..ROUNDS {
        let (chat, user) = (REMOVE_CHAT + i, REMOVED[i as usize % REMOVED.len()]);
        let events = chat_events(&outbox, chat);
        assert_eq!(events, [("ONCRMCHATUSERDELETE".to_string(), user, 3)], "chat {chat}: one removal event");
        assert_eq!(counts[&chat], 3, "chat {chat}: member count");
    }
    assert_eq!(outbox.len(), ROUNDS as usize, "no other event: {outbox:?}");
}

/// Instance A removes the author 12 while instance B adds employee 14 to the same chat ([12, bot 20, client
/// 30]). Serially there are two outcomes: add first — 14 is the only active employee left, authorship passes to
/// 14 (events: add with 4 members, then removal with 3); remove first — no employee remains, the author stays
/// 12 (removal with 2, then add with 3). Both calls succeed and the result is one of the two, whole.
async fn handover_race(backend: Backend) {
    let pair = spawn_pair(backend, race_fixture(), &[]).await;
    pair.store.bind_membership_events().await;
    pair.warm_up().await;
    let before = pair.store.export();
    for i in 0..ROUNDS {
        let (chat, deal_id) = (HANDOVER_CHAT + i, HANDOVER_DEAL + i);
        // Every other round the instances swap roles.
        let (remover, adder) = if i % 2 == 0 { (&pair.a, &pair.b) } else { (&pair.b, &pair.a) };
        let (removed, added) = tokio::join!(remover.delete(deal(deal_id, 12)), adder.call(ADD, deal(deal_id, 14)));
        assert_removed(&removed, chat);
        assert_success(&added, json!(chat));
    }

    let export = pair.store.export();
    let outbox = pair.store.outbox().await;
    let counts = pair.store.member_counts().await;
    let mut outcomes = (0, 0);
    for i in 0..ROUNDS {
        let chat = HANDOVER_CHAT + i;
        assert_eq!(members(&export, chat), [20, 30, 14], "chat {chat}: members\n{}", pair.logs());
        assert_eq!(counts[&chat], 3, "chat {chat}: member count");
        let add = |count| ("ONCRMCHATUSERADD".to_string(), 14, count);
        let remove = |count| ("ONCRMCHATUSERDELETE".to_string(), 12, count);
        let events = chat_events(&outbox, chat);
        match author(&export, chat) {
            Some(14) => {
                assert_eq!(events, [add(4), remove(3)], "chat {chat}: author 14 means the add committed first");
                outcomes.0 += 1;
            }
            Some(12) => {
                assert_eq!(events, [remove(2), add(3)], "chat {chat}: author 12 means the removal committed first");
                outcomes.1 += 1;
            }
            other => panic!("chat {chat}: author {other:?} is no serial outcome; events {events:?}"),
        }
    }
    eprintln!("{backend:?} hand-over race: add first {} times, removal first {} times", outcomes.0, outcomes.1);
    // Nothing outside the raced chats changed.
    let untouched = |export: &Value| -> Vec<Value> {
        let chats = export["chats"].as_array().unwrap();
        chats
            .iter()
            .filter(|c| !(HANDOVER_CHAT..HANDOVER_CHAT + ROUNDS).contains(&c["id"].as_i64().unwrap()))
            .cloned()
            .collect()
    };
    assert_eq!(untouched(&export), untouched(&before), "chats outside the race did not change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_same_removal_through_two_processes_succeeds_once() {
    removal_race(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_author_handover_racing_an_add_is_serial() {
    handover_race(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_same_removal_through_two_processes_succeeds_once() {
    removal_race(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_author_handover_racing_an_add_is_serial() {
    handover_race(Backend::Sqlite).await;
}

/// Deliveries shared by two instances: chats `SHARED_CHAT + i` (deal `SHARED_DEAL + i`) with the admin and
/// employees `SHARED_USER..SHARED_USER + 10`, each removal a distinct event.
const SHARED_CHAT: i64 = 20_001;
const SHARED_DEAL: i64 = 30_001;
const SHARED_USER: i64 = 100;
const SHARED_CHATS: i64 = 100;

/// The deliveries a local handler received, counted by (chat, user) of the removal.
#[derive(Clone, Default)]
struct Received(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(i64, i64), u32>>>);

impl Received {
    /// Answers 200 to every POST at `/events` and counts it.
    async fn listen(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let counts = self.0.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |body: String| async move {
                let field = |name: &str| {
                    form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.parse().unwrap())
                };
                let key = (field("data[CHAT_ID]").unwrap_or(0), field("data[USER_ID]").unwrap_or(0));
                *counts.lock().unwrap().entry(key).or_default() += 1;
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn counts(&self) -> std::collections::HashMap<(i64, i64), u32> {
        self.0.lock().unwrap().clone()
    }
}

/// 1,000 removals through two instances on one PostgreSQL database, one handler bound: each event is delivered
/// exactly once, whichever instance leased it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_deliver_every_event_once() {
    let received = Received::default();
    let handler = received.listen().await;
    let fixture = demo_with(|f| {
        f["portal"]["plan"] = json!("unlimited");
        for user in SHARED_USER..SHARED_USER + 10 {
            add_user(f, json!({"id": user, "name": format!("Employee {user}")}));
        }
        for i in 0..SHARED_CHATS {
            let (chat, deal) = (SHARED_CHAT + i, SHARED_DEAL + i);
            let members: Vec<i64> = std::iter::once(1).chain(SHARED_USER..SHARED_USER + 10).collect();
            f["crm"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "deal", "id": deal, "title": "Shared", "responsible": 1}));
            f["chats"].as_array_mut().unwrap().push(json!({
                "id": chat, "line": 1, "connector": "livechat", "author": 1, "members": members,
                "sessions": [{"id": chat, "status": "operator", "modified": "2026-11-21T10:00:00Z",
                              "crm": [{"type": "deal", "id": deal}]}]
            }));
        }
        f["apps"][0]["events"] = json!([{"event": "ONCRMCHATUSERDELETE", "handler": handler}]);
    });
    let pair = spawn_pair(Backend::Postgres, fixture, &[]).await;
    pair.warm_up().await;
    let removals: Vec<(i64, i64)> =
        (0..SHARED_CHATS).flat_map(|i| (SHARED_USER..SHARED_USER + 10).map(move |user| (i, user))).collect();
    // Every other removal through the other instance: both produce events, both workers lease them.
    for (k, &(i, user)) in removals.iter().enumerate() {
        let app = if k % 2 == 0 { &pair.a } else { &pair.b };
        assert_removed(&app.delete(deal(SHARED_DEAL + i, user)).await, SHARED_CHAT + i);
    }
    let expected = removals.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.counts().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a second delivery of anything, had two instances taken the same one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = received.counts();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(counts.len(), expected, "every event delivered\n{}", pair.logs());
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert!(counts.keys().all(|&(chat, user)| (SHARED_CHAT..SHARED_CHAT + SHARED_CHATS).contains(&chat)
        && (SHARED_USER..SHARED_USER + 10).contains(&user)));
}

// ---------------------------------------------------------------------------------------------------------------
// Limits shared through Redis

/// The demo portal on plan `standard` under a domain of its own, so that its Redis keys
/// (`crmchat:limits:req:<domain>|<ip>`) are this test's alone.
fn limits_fixture() -> (Value, String) {
    let domain = format!("t{:016x}.crmchat.localhost", rand::random::<u64>());
    let fixture = demo_with(|f| {
        f["portal"]["plan"] = json!("standard");
        f["portal"]["domain"] = json!(domain);
    });
    (fixture, domain)
}

/// A key in the test Redis, deleted now and again when dropped.
struct RedisKey {
    key: String,
}

impl RedisKey {
    fn new(key: String) -> Self {
        let key = Self { key };
        key.delete();
        key
    }

    /// The request bucket of `domain` and client address `ip`.
    fn request_bucket(domain: &str, ip: &str) -> Self {
        Self::new(format!("crmchat:limits:req:{domain}|{ip}"))
    }

    fn connection() -> redis::Connection {
        let client = redis::Client::open(REDIS).unwrap();
        client.get_connection().unwrap_or_else(|e| panic!("connecting to Redis at {REDIS}: {e} (is it running?)"))
    }

    fn delete(&self) {
        let _: i64 = redis::cmd("DEL").arg(&self.key).query(&mut Self::connection()).expect("DEL");
    }

    fn exists(&self) -> bool {
        let n: i64 = redis::cmd("EXISTS").arg(&self.key).query(&mut Self::connection()).expect("EXISTS");
        n == 1
    }
}

impl Drop for RedisKey {
    fn drop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(REDIS).and_then(|c| c.get_connection()) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&self.key).query(&mut conn);
        }
    }
}

fn assert_limited(resp: &Resp) {
    assert_error(resp, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests");
}

/// The most a bucket of `burst` draining at 2/s can admit in `elapsed` (plus one for rounding).
fn most_admitted(burst: usize, elapsed: Duration) -> usize {
    burst + (2.0 * elapsed.as_secs_f64()).ceil() as usize + 1
}

/// Were `calls` on one bucket of 50 fast enough that some must have been refused? (Normally they take a tenth
/// of a second; on a machine so loaded that they take seconds, the drain may make room for all of them.)
fn must_refuse(calls: usize, elapsed: Duration) -> bool {
    let must = most_admitted(50, elapsed) < calls;
    if !must {
        eprintln!("{calls} calls took {elapsed:?}: too slow to require a refusal");
    }
    must
}

/// `n` calls of `server.time`, alternating between `apps`: the statuses per app, in call order, and the time
/// they took.
async fn alternate(apps: &[&TestApp], n: usize) -> (Vec<Vec<u16>>, Vec<u16>, Duration) {
    let start = Instant::now();
    let mut per_app = vec![Vec::new(); apps.len()];
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let app = apps[i % apps.len()];
        let resp = app.get(&app.method_path("server.time")).await;
        if resp.status != 200 {
            assert_limited(&resp);
        }
        per_app[i % apps.len()].push(resp.status);
        all.push(resp.status);
    }
    (per_app, all, start.elapsed())
}

fn accepted(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| **s == 200).count()
}

/// `GET /healthz`: 200 with `{"status": "ok", "limits": limits}`.
async fn assert_health(app: &TestApp, limits: &str) {
    let resp = app.get("/healthz").await;
    assert_eq!((resp.status, &resp.body), (200, &json!({"status": "ok", "limits": limits})), "{}", resp.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_shares_the_request_bucket_between_two_instances() {
    let (fixture, domain) = limits_fixture();
    let bucket = RedisKey::request_bucket(&domain, "127.0.0.1");
    let pair = spawn_pair(Backend::Sqlite, fixture, &["--redis", REDIS]).await;
    let (per_app, all, elapsed) = alternate(&[&pair.a, &pair.b], 60).await;
    // Each instance saw 30 calls: had each its own bucket of 50, none would have been refused.
    assert!(all[..50].iter().all(|s| *s == 200), "the first 50 are accepted: {all:?}");
    let total = accepted(&all);
    assert!(total <= most_admitted(50, elapsed), "{total} accepted in {elapsed:?} by both together: {all:?}");
    assert!(
        !must_refuse(60, elapsed) || per_app.iter().all(|statuses| statuses.contains(&503)),
        "both instances refuse once the shared bucket is full: a {:?}, b {:?}\n{}",
        per_app[0],
        per_app[1],
        pair.logs()
    );
    assert!(bucket.exists(), "the bucket is the Redis key {}", bucket.key);
    assert_health(&pair.a, HEALTH_REDIS).await;
    assert_health(&pair.b, HEALTH_REDIS).await;
    eprintln!("shared bucket: {total} of 60 accepted in {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_instance_has_a_bucket_of_its_own() {
    let (fixture, _) = limits_fixture();
    let pair = spawn_pair(Backend::Sqlite, fixture, &[]).await;
    let (per_app, all, elapsed) = alternate(&[&pair.a, &pair.b], 120).await;
    for (name, statuses) in ["a", "b"].iter().zip(&per_app) {
        assert!(statuses[..50].iter().all(|s| *s == 200), "instance {name} accepts its own first 50: {statuses:?}");
        let refused = statuses.contains(&503);
        assert!(refused || !must_refuse(60, elapsed), "instance {name} refuses past its own 50: {statuses:?}");
        let n = accepted(statuses);
        assert!(n <= most_admitted(50, elapsed), "instance {name}: {n} accepted in {elapsed:?}");
    }
    eprintln!("local buckets: {} of 120 accepted in {elapsed:?}", accepted(&all));
    assert_health(&pair.a, HEALTH_LOCAL).await;
    assert_health(&pair.b, HEALTH_LOCAL).await;
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_the_local_limiter() {
    let app = spawn_app_with_args(limits_fixture().0, &["--redis", NO_REDIS]).await;
    let start = Instant::now();
    let resp = app.get(&app.method_path("server.time")).await;
    assert_eq!(resp.status, 200, "still serving without Redis: {}", resp.text);
    assert_health(&app, HEALTH_FALLBACK).await;
    // The warning is in the server's log (its standard error).
    let deadline = Instant::now() + Duration::from_secs(5);
    let warned =
        |log: &str| log.lines().any(|l| l.contains(" WARN ") && l.to_ascii_lowercase().contains("redis unreachable"));
    while !warned(&plain_log(&app)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(warned(&plain_log(&app)), "a warning about Redis in the log:\n{}", plain_log(&app));
    // The local limiter still refuses past 50 (the first call counted).
    let (per_app, _, _) = alternate(&[&app], 60).await;
    let (statuses, elapsed) = (&per_app[0], start.elapsed());
    assert!(statuses[..49].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses.contains(&503) || !must_refuse(61, elapsed), "refused past 50: {statuses:?}");
    // With the first call: at most what one bucket admits.
    let total = accepted(statuses) + 1;
    assert!(total <= most_admitted(50, elapsed), "{total} accepted in {elapsed:?}: {statuses:?}");
    assert_health(&app, HEALTH_FALLBACK).await;
}

#[tokio::test]
async fn healthz_tells_where_the_limits_live() {
    let (fixture, domain) = limits_fixture();
    let _bucket = RedisKey::request_bucket(&domain, "127.0.0.1");
    let with_redis = spawn_app_with_args(fixture.clone(), &["--redis", REDIS]).await;
    let resp = with_redis.get(&with_redis.method_path("server.time")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_health(&with_redis, HEALTH_REDIS).await;
    let local = spawn_app_with_args(fixture, &[]).await;
    assert_health(&local, HEALTH_LOCAL).await;
    let resp = local.get(&local.method_path("server.time")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_health(&local, HEALTH_LOCAL).await;
}

/// A reset through the control API of one instance empties the portal's shared bucket and operating-time
/// windows in Redis (the other instance's next call is accepted at once) and leaves other portals' keys alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reset_clears_the_portals_shared_limits_only() {
    const TOKEN: &str = "control-token-for-the-redis-reset-test";
    let (fixture, domain) = limits_fixture();
    let _bucket = RedisKey::request_bucket(&domain, "127.0.0.1");
    let window = RedisKey::new(format!("crmchat:limits:op:{domain}|webhook:1|imopenlines.crm.chat.user.delete"));
    let (_, other_domain) = limits_fixture();
    let other = RedisKey::request_bucket(&other_domain, "127.0.0.1");
    let mut redis = RedisKey::connection();
    let _: i64 = redis::cmd("HSET").arg(&window.key).arg("1").arg("5000000").query(&mut redis).expect("HSET");
    let _: i64 = redis::cmd("HSET").arg(&other.key).arg("level").arg("1").query(&mut redis).expect("HSET");

    let pair = spawn_pair(Backend::Sqlite, fixture, &["--redis", REDIS, "--control-token", TOKEN]).await;
    fill(&pair.a, &[], 500).await;
    let resp = pair.b.get(&pair.b.method_path("server.time")).await;
    assert_limited(&resp);
    let resp = pair.a.send(pair.a.client.post(pair.a.url("/_crmchat/reset")).bearer_auth(TOKEN)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);

    // Without the reset, the full bucket would admit about two calls a second.
    let (per_app, _, elapsed) = alternate(&[&pair.b], 40).await;
    assert!(
        per_app[0].iter().all(|s| *s == 200) || elapsed > Duration::from_secs(15),
        "the other instance finds the bucket empty after the reset: {:?} in {elapsed:?}",
        per_app[0]
    );
    assert!(!window.exists(), "the portal's operating-time window {} is gone", window.key);
    assert!(other.exists(), "another portal's bucket {} is left alone", other.key);
}

// ---------------------------------------------------------------------------------------------------------------
// --trust-forwarded-for

/// Calls `server.time` with `headers` until one is refused (at most `max`); how many were accepted.
async fn fill(app: &TestApp, headers: &[(&str, &str)], max: usize) -> usize {
    for accepted in 0..max {
        let resp = time_with(app, headers).await;
        if resp.status == 503 {
            assert_limited(&resp);
            return accepted;
        }
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    panic!("no call was refused in {max}");
}

async fn time_with(app: &TestApp, headers: &[(&str, &str)]) -> Resp {
    let mut request = app.client.get(app.url(&app.method_path("server.time")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request).await
}

const XFF: &str = "x-forwarded-for";

#[tokio::test]
async fn trusted_forwarded_for_gives_each_client_address_a_bucket() {
    let app = spawn_app_with_args(limits_fixture().0, &["--trust-forwarded-for"]).await;
    let first = [(XFF, "203.0.113.7")];
    let start = Instant::now();
    let n = fill(&app, &first, 200).await;
    assert!((50..=most_admitted(50, start.elapsed())).contains(&n), "{n} accepted for 203.0.113.7");
    // Only the last entry counts (the proxy appends what it saw): a forged first entry changes nothing.
    assert_limited(&time_with(&app, &[(XFF, "198.51.100.1, 203.0.113.7")]).await);
    // Another address has a bucket of its own, and so has the proxy's own (the TCP peer, no header).
    let start = Instant::now();
    let n = fill(&app, &[(XFF, "198.51.100.1, 203.0.113.8")], 200).await;
    assert!((50..=most_admitted(50, start.elapsed())).contains(&n), "{n} accepted for 203.0.113.8");
    let resp = time_with(&app, &[]).await;
    assert_eq!(resp.status, 200, "127.0.0.1 has its own bucket: {}", resp.text);
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    let app = spawn_app_with_args(limits_fixture().0, &[]).await;
    let start = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..60 {
        let ip = if i % 2 == 0 { "203.0.113.7" } else { "203.0.113.8" };
        let resp = time_with(&app, &[(XFF, ip)]).await;
        if resp.status != 200 {
            assert_limited(&resp);
        }
        statuses.push(resp.status);
    }
    let elapsed = start.elapsed();
    assert!(statuses[..50].iter().all(|s| *s == 200), "{statuses:?}");
    let refused = statuses.contains(&503);
    assert!(refused || !must_refuse(60, elapsed), "one bucket for 127.0.0.1, whatever the header says: {statuses:?}");
    assert!(accepted(&statuses) <= most_admitted(50, elapsed), "{statuses:?} in {elapsed:?}");
    assert_limited(&time_with(&app, &[]).await);
}

fn https_only() -> Value {
    demo_with(|f| f["portal"]["require_https"] = json!(true))
}

fn assert_https_required(resp: &Resp) {
    assert_error(resp, 401, "INVALID_REQUEST", "Https required.");
}

#[tokio::test]
async fn trusted_forwarded_proto_https_satisfies_require_https() {
    let app = spawn_app_with_args(https_only(), &["--trust-forwarded-for"]).await;
    let resp = time_with(&app, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = time_with(&app, &[("x-forwarded-proto", "HTTPS"), (XFF, "203.0.113.9")]).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_https_required(&time_with(&app, &[("x-forwarded-proto", "http")]).await);
    assert_https_required(&time_with(&app, &[]).await);
    // A removal through the "proxy" works too.
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20});
    let request = app.client.post(app.url(&app.method_path(METHOD))).header("x-forwarded-proto", "https").json(&params);
    assert_removed(&app.send(request).await, 8773);
}

#[tokio::test]
async fn untrusted_forwarded_proto_does_not_satisfy_require_https() {
    let app = spawn_app_with_args(https_only(), &[]).await;
    assert_https_required(&time_with(&app, &[("x-forwarded-proto", "https")]).await);
    // Over the real HTTPS listener it works.
    let client = app.https_client().build().unwrap();
    let resp = app.send(client.get(format!("{}{}", app.https_base, app.method_path("server.time")))).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

// ---------------------------------------------------------------------------------------------------------------
// deploy/nginx.conf

/// nginx started with `-g 'daemon off;'`, stopped (SIGTERM to its master, by pid) when dropped.
struct Nginx {
    child: Child,
    prefix: TempDir,
}

impl Nginx {
    fn log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("nginx.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `text` with `from` replaced by `to`, which must occur (the sample changed otherwise: adapt this test).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "deploy/nginx.conf has `{from}` once");
    text.replacen(from, to, 1)
}

/// deploy/nginx.conf with the listen ports, the upstream instances and the certificate of this run; temp
/// files under the prefix. Nothing else changes.
fn adapt_nginx_conf(http: u16, https: u16, upstreams: [&str; 2], tls_dir: &Path, prefix: &Path) -> String {
    let sample = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf")).unwrap();
    let mut conf = replace_once(&sample, "listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{http};"));
    conf = replace_once(&conf, "listen 127.0.0.1:8443 ssl;", &format!("listen 127.0.0.1:{https} ssl;"));
    conf = replace_once(&conf, "server 127.0.0.1:8081 ", &format!("server {} ", upstreams[0]));
    conf = replace_once(&conf, "server 127.0.0.1:8082 ", &format!("server {} ", upstreams[1]));
    let cert = tls_dir.join("cert.pem");
    let key = tls_dir.join("key.pem");
    conf = replace_once(&conf, "/etc/crmchat/tls/cert.pem", &cert.display().to_string());
    conf = replace_once(&conf, "/etc/crmchat/tls/key.pem", &key.display().to_string());
    let temp = format!(
        "http {{\n    client_body_temp_path {0}/client_body;\n    proxy_temp_path {0}/proxy;\n",
        prefix.display()
    );
    replace_once(&conf, "http {\n", &temp)
}

/// nginx's prefix directory (configuration, pid file, log, temp files).
fn nginx_prefix() -> TempDir {
    let prefix = tempfile::Builder::new().prefix("crmchat-nginx-").tempdir().unwrap();
    // nginx's workers run as an unprivileged user when started as root: let them reach their temp files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(prefix.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    prefix
}

/// Starts nginx on `conf` in `prefix` and waits until it accepts connections on `port`.
async fn start_nginx(binary: &Path, prefix: TempDir, conf: &str, port: u16) -> Nginx {
    let conf_path = prefix.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(prefix.path().join("nginx.log")).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(prefix.path())
        .arg("-c")
        .arg(&conf_path)
        .args(["-e", "stderr", "-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting nginx");
    let mut nginx = Nginx { child, prefix };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return nginx;
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!("nginx exited ({status}):\n{}\nconfiguration:\n{conf}", nginx.log());
        }
        assert!(Instant::now() < deadline, "nginx did not listen on {port}:\n{}", nginx.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server log without its terminal colours.
fn plain_log(app: &TestApp) -> String {
    let log = app.log();
    let mut plain = String::new();
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            // CSI: parameters up to the final byte, a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// How many REST calls an instance answered with `status`, by its log.
fn answered(app: &TestApp, status: u16) -> usize {
    let needle = format!("status={status}");
    plain_log(app).lines().filter(|l| l.contains("rest call") && l.contains(&needle)).count()
}

/// The sample of the README: two instances with `--redis` and `--trust-forwarded-for` on one PostgreSQL
/// database behind nginx terminating TLS. Ignored by a plain `cargo test`; scripts/test runs it where nginx is
/// installed and prints a `skipped:` line where it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx, PostgreSQL and Redis; scripts/test runs it where nginx is installed"]
async fn nginx_sample_in_front_of_two_instances() {
    let binary = nginx_binary().expect("nginx is installed (/usr/sbin/nginx or the like; see deploy/README.md)");
    // require_https: webhook calls must come through nginx's TLS listener (X-Forwarded-Proto: https).
    let (mut fixture, domain) = limits_fixture();
    fixture["portal"]["require_https"] = json!(true);
    let bucket = RedisKey::request_bucket(&domain, "127.0.0.1");
    let pair = spawn_pair(Backend::Postgres, fixture, &["--redis", REDIS, "--trust-forwarded-for"]).await;
    let (http, https) = (free_port(), free_port());
    let tls_dir = pair.store.data_dir().join("tls");
    let prefix = nginx_prefix();
    let conf = adapt_nginx_conf(http, https, [&pair.a.http_addr(), &pair.b.http_addr()], &tls_dir, prefix.path());
    let nginx = start_nginx(&binary, prefix, &conf, https).await;

    // A client of nginx: TLS with the certificate of the first instance's data directory.
    let pem = std::fs::read(tls_dir.join("cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let front = format!("https://127.0.0.1:{https}");
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("calling nginx");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, body }
    };
    let delete = |params: Value| client.post(format!("{front}{DEMO_HOOK}{METHOD}.json")).json(&params);

    // /healthz through nginx.
    let health = send(client.get(format!("{front}/healthz"))).await;
    assert_eq!(health.status, 200, "{}\n{}", health.text, nginx.log());
    assert_eq!(health.body["status"], "ok", "{}", health.text);

    // A removal through nginx, then the same again; then the same removal twice at once.
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12});
    assert_removed(&send(delete(params.clone())).await, 8773);
    assert_not_member(&send(delete(params)).await);
    let params = json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 20});
    let (r1, r2) = tokio::join!(send(delete(params.clone())), send(delete(params)));
    let mut statuses = [r1.status, r2.status];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "one success, one USER_NOT_FOUND: {} / {}", r1.text, r2.text);
    let export = pair.store.export();
    assert_eq!((members(&export, 8773), author(&export, 8773)), (vec![14, 30], Some(14)));
    // Plain HTTP through nginx: X-Forwarded-Proto is http, the portal wants HTTPS.
    let plain = send(client.post(format!("http://127.0.0.1:{http}{DEMO_HOOK}server.time"))).await;
    assert_https_required(&plain);

    // The rate limit through nginx: both instances answer, and refuse together once 50 went through.
    bucket.delete();
    let before = [answered(&pair.a, 200), answered(&pair.b, 200)];
    let start = Instant::now();
    let mut all = Vec::new();
    for _ in 0..60 {
        let resp = send(client.get(format!("{front}{DEMO_HOOK}server.time"))).await;
        if resp.status != 200 {
            assert_limited(&resp);
        }
        all.push(resp.status);
    }
    let elapsed = start.elapsed();
    assert!(all[..50].iter().all(|s| *s == 200), "{all:?}");
    assert!(accepted(&all) <= most_admitted(50, elapsed), "{all:?} in {elapsed:?}");
    assert!(bucket.exists(), "the bucket of the client address nginx passed on: {}", bucket.key);
    // The logs are written asynchronously.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = [answered(&pair.a, 200) - before[0], answered(&pair.b, 200) - before[1]];
    let refused = [answered(&pair.a, 503), answered(&pair.b, 503)];
    assert!(served.iter().all(|n| *n > 0), "nginx spread the calls over both instances: {served:?}");
    assert!(
        refused.iter().all(|n| *n > 0) || !must_refuse(60, elapsed),
        "both instances refused from the shared bucket: {refused:?}"
    );
    eprintln!("through nginx: accepted {served:?}, refused {refused:?} by the two instances in {elapsed:?}");

    let health = send(client.get(format!("{front}/healthz"))).await;
    assert_eq!(health.body, json!({"status": "ok", "limits": "redis"}), "{}", health.text);
    drop(nginx);
}
