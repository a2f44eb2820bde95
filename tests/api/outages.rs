//! Outages of what crmchat depends on, made by a TCP gate between crmchat and the real service: the gate
//! forwards bytes until the test cuts it, which closes every connection through it and refuses new ones (the
//! listening socket is gone, as when the service's process is stopped), and opens it again on the same port.
//!
//! - PostgreSQL down: calls are answered in the vendor's envelope within seconds (not after the request
//!   timeout), `/readyz` says unavailable at once, and when the database is back the pool reconnects at once
//!   (sqlx's connect backoff, capped at a fifth of the pool wait, once kept callers away for ~6 s); every
//!   acknowledged message is stored.
//! - Redis down and back: calls go on under the local limiter and `/healthz` says so; once Redis is back the
//!   limits are shared again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::*;

/// A TCP forwarder to `target` on a port of its own that can be cut and opened again.
struct Gate {
    port: u16,
    target: SocketAddr,
    /// The accept loop and every forwarding task, aborted by a cut (aborting drops their sockets).
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Gate {
    async fn open_to(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the gate");
        let port = listener.local_addr().unwrap().port();
        let gate = Gate { port, target, tasks: Arc::default() };
        gate.serve(listener);
        gate
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept_loop = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let forward = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    tasks.lock().unwrap().push(forward.abort_handle());
                }
            }
        });
        tasks.lock().unwrap().push(accept_loop.abort_handle());
    }

    /// Closes every connection through the gate and stops listening: new connections are refused.
    async fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        // Let the aborted tasks drop their sockets before the caller goes on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Listens again on the same port.
    async fn reopen(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("gate: port {} not free yet ({err}); retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("the gate could not listen on {} again: {err}", self.port),
            }
        };
        self.serve(listener);
    }
}

/// The address of the service `url` names (`default_port` when it names none).
fn service_of(url: &str, default_port: u16) -> SocketAddr {
    let parsed = reqwest::Url::parse(url).expect("a service URL");
    let host = parsed.host_str().expect("a host");
    std::net::ToSocketAddrs::to_socket_addrs(&(host, parsed.port().unwrap_or(default_port)))
        .expect("resolving the service")
        .next()
        .expect("an address")
}

/// `url` reaching its service through `gate`: the same URL on the gate's port.
fn through(gate: &Gate, url: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("a service URL");
    parsed.set_port(Some(gate.port)).expect("setting the port");
    parsed.to_string()
}

/// A message from user 12 into deal 288's chat 8773: a write on every call, as often as wanted.
fn message() -> Value {
    json!({"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288, "USER_ID": 12, "CHAT_ID": 8773, "MESSAGE": "through"})
}

const ADD_MESSAGE: &str = "imopenlines.crm.message.add";

/// One call's outcome: when it started (since the test began), how long it took, the status, the message id.
#[derive(Clone, Debug)]
struct Outcome {
    started: Duration,
    took: Duration,
    status: u16,
    body: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_answered_within_seconds_and_the_pool_reconnects_at_once() {
    let database = PgDatabase::create("crmchat_outage");
    let gate = Gate::open_to(service_of(&database.url, 5432)).await;
    let gated_url = through(&gate, &database.url);
    let data_dir = tempfile::tempdir().unwrap();
    let fixture = demo_with(|f| f["portal"]["plan"] = json!("unlimited"));
    let app = Arc::new(spawn_instance(data_dir.path(), Some(&gated_url), Some(&fixture), &[]).await);
    let resp = app.call(ADD_MESSAGE, message()).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(app.get("/readyz").await.status, 200);

    // 32 clients add messages all along: before, during and after the outage (more clients than the pool has
    // connections, so that callers also wait for the pool).
    let begun = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (app, stop, outcomes) = (app.clone(), stop.clone(), outcomes.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = begun.elapsed();
                let resp = app.call(ADD_MESSAGE, message()).await;
                let outcome =
                    Outcome { started, took: begun.elapsed() - started, status: resp.status, body: resp.body };
                outcomes.lock().unwrap().push(outcome);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    gate.cut().await;
    let cut_at = begun.elapsed();
    // Readiness follows the database, and answers at once.
    let asked = Instant::now();
    let ready = app.get("/readyz").await;
    let readiness_took = asked.elapsed();
    assert_eq!(ready.status, 503, "readiness during the outage: {}", ready.text);
    assert_eq!(ready.body["status"], "unavailable", "{}", ready.text);
    assert!(readiness_took < Duration::from_secs(5), "/readyz took {readiness_took:?} during the outage");
    // Long enough for sqlx's connect backoff to have grown to its cap (the doubling passes 5 s after ~10 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    gate.reopen().await;
    let reopened_at = begun.elapsed();

    // The first call after the database is back that succeeds, from a caller of its own.
    let first_success = loop {
        let resp = app.call(ADD_MESSAGE, message()).await;
        if resp.status == 200 {
            break begun.elapsed() - reopened_at;
        }
        assert!(begun.elapsed() - reopened_at < Duration::from_secs(30), "no success 30 s after: {}", resp.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ready_after = app.get("/readyz").await;
    assert_eq!(ready_after.status, 200, "readiness after the outage: {}", ready_after.text);

    let outcomes = outcomes.lock().unwrap().clone();
    // During the outage every call got an answer in the vendor's envelope, and soon: not after the 20 s request
    // timeout.
    let during: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.started >= cut_at && o.started + o.took <= reopened_at).collect();
    assert!(!during.is_empty(), "calls were answered during the outage");
    for o in &during {
        assert_eq!(o.status, 500, "{o:?}");
        assert_eq!(o.body["error"], "INTERNAL_SERVER_ERROR", "{o:?}");
    }
    let slowest = during.iter().map(|o| o.took).max().unwrap();
    // Every call that started a second after the database was back succeeded.
    let late_failures: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.started >= reopened_at + Duration::from_secs(1) && o.status != 200).collect();
    println!(
        "outage of {:?}: /readyz answered 503 in {readiness_took:?}; {} calls answered 500 during it, the slowest in \
         {slowest:?}; the first success {first_success:?} after the database was back",
        reopened_at - cut_at,
        during.len()
    );
    assert!(slowest < Duration::from_secs(5), "a call during the outage waited {slowest:?}");
    assert!(
        first_success < Duration::from_secs(2),
        "the pool reconnected {first_success:?} after the database was back\n{}",
        app.log()
    );
    assert!(late_failures.is_empty(), "calls failed after the database was back: {late_failures:?}");

    // Nothing acknowledged was lost: every message id answered is stored.
    let acknowledged: Vec<i64> =
        outcomes.iter().filter(|o| o.status == 200).filter_map(|o| o.body["result"].as_i64()).collect();
    assert!(!acknowledged.is_empty());
    let stored: Vec<i64> = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
        sqlx::query_scalar("SELECT id FROM messages").fetch_all(&mut conn).await.unwrap()
    };
    let stored: std::collections::HashSet<i64> = stored.into_iter().collect();
    let lost: Vec<&i64> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged messages missing: {lost:?}");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_and_back_serves_locally_then_shares_the_limits_again() {
    const REDIS: &str = "redis://127.0.0.1:6379";
    let gate = Gate::open_to(service_of(REDIS, 6379)).await;
    let gated = through(&gate, REDIS);
    let domain = format!("t{:016x}.crmchat.localhost", rand::random::<u64>());
    let fixture = demo_with(|f| {
        f["portal"]["plan"] = json!("enterprise");
        f["portal"]["domain"] = json!(domain);
    });
    let bucket = format!("crmchat:limits:req:{domain}|127.0.0.1");
    let mut redis = redis::Client::open(REDIS).unwrap().get_connection().expect("the test's Redis at 6379");
    let app = spawn_app_with_args(fixture, &["--redis", &gated]).await;
    let health = |resp: Resp| resp.body["limits"].as_str().unwrap_or_default().to_string();

    let resp = app.get(&app.method_path("server.time")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(health(app.get("/healthz").await), "redis");
    let exists = |redis: &mut redis::Connection| -> bool {
        redis::cmd("EXISTS").arg(&bucket).query::<i64>(redis).expect("EXISTS") == 1
    };
    assert!(exists(&mut redis), "the request bucket is kept in Redis");

    gate.cut().await;
    let _: i64 = redis::cmd("DEL").arg(&bucket).query(&mut redis).unwrap();
    // Served on without Redis, each call promptly (a Redis round trip may wait 250 ms before the local limiter
    // answers instead).
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let resp = app.get(&app.method_path("server.time")).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(resp.status, 200, "served without Redis: {}", resp.text);
    }
    assert_eq!(health(app.get("/healthz").await), "local (redis unreachable)");
    assert!(!exists(&mut redis), "nothing reached Redis through the cut gate");

    gate.reopen().await;
    // Redis is tried again 2 s after a failure; a call after that finds it and shares the limits again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app.get(&app.method_path("server.time")).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        if health(app.get("/healthz").await) == "redis" && exists(&mut redis) {
            break;
        }
        assert!(Instant::now() < deadline, "limits not shared again 15 s after Redis came back:\n{}", app.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("without Redis the slowest of 10 calls took {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "a call without Redis took {slowest:?}");
    let _: i64 = redis::cmd("DEL").arg(&bucket).query(&mut redis).unwrap();
}
