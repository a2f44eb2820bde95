//! The load generator: `conns` persistent HTTP/1.1 keep-alive connections, one task each sending requests one
//! after another for a warm-up and then a measured window; every response is checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::portal::{DEAL_OFFSET, Membership, WEBHOOK_USER};

/// Removals handed out through an atomic index, so that no membership is removed twice.
pub struct WorkList {
    items: Vec<Membership>,
    next: AtomicUsize,
}

impl WorkList {
    pub fn new(items: Vec<Membership>) -> Self {
        Self { items, next: AtomicUsize::new(0) }
    }

    /// The next membership and its position in the list.
    fn take(&self) -> Option<(usize, Membership)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.items.get(i).map(|m| (i, *m))
    }

    pub fn items(&self) -> &[Membership] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// How many were handed out.
    pub fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.items.len())
    }
}

pub enum Job {
    /// `server.time` through the webhook (also what the bare baseline is sent; it answers anything).
    ServerTime,
    /// `imopenlines.crm.chat.getLastId` of a random deal among `1..=chats`.
    GetLastId { chats: u32 },
    /// `imopenlines.crm.chat.user.delete` of the next membership of the list.
    Delete(Arc<WorkList>),
    /// `imopenlines.crm.chat.user.add` of the next membership of the list: puts back what a `Delete` removed.
    Add(Arc<WorkList>),
}

pub struct Spec {
    pub addr: SocketAddr,
    pub conns: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub job: Job,
    /// The webhook code the requests go through.
    pub webhook_code: String,
    /// Processes whose CPU time is measured over the window: the server, then this one.
    pub server_pid: u32,
    pub sched: LoadgenSched,
    /// For a `Delete` whose removals produce events: when each removal's 200 answer arrived, by list position.
    pub acks: Option<Arc<Acks>>,
    /// At most this many requests over the whole run (warm-up included): the run ends, as if its work ran out,
    /// once all are answered. `None`: as many as fit in the warm-up and the window.
    pub requests: Option<u64>,
}

/// When the answer to each removal of a list arrived: nanoseconds after `epoch`, plus 1 (0: not answered).
pub struct Acks {
    pub epoch: Instant,
    pub ns: Vec<AtomicU64>,
}

impl Acks {
    pub fn new(epoch: Instant, len: usize) -> Self {
        Self { epoch, ns: (0..len).map(|_| AtomicU64::new(0)).collect() }
    }
}

/// Scheduling policy of the load generator's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadgenSched {
    /// SCHED_BATCH: a thread woken by an answer does not preempt the server's thread on its core; it runs at the
    /// next scheduler tick or when that thread sleeps, and still gets its fair share of the CPU. Clients on other
    /// machines, as in any deployment, never preempt the server at all.
    Batch,
    /// The default policy of any process: every answer that wakes a load-generator thread may preempt the
    /// server in the middle of its next request.
    Normal,
}

/// Put the calling thread under `sched`, at nice 0 as before.
pub fn apply_sched(sched: LoadgenSched) {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue, ThreadSchedulePolicy};
    let policy = match sched {
        LoadgenSched::Batch => NormalThreadSchedulePolicy::Batch,
        LoadgenSched::Normal => return,
    };
    // For the normal policies the crate sets the OS value as the thread's nice value.
    let nice_zero = ThreadPriority::Os(ThreadPriorityOsValue::default());
    let thread = thread_priority::unix::thread_native_id();
    if let Err(e) =
        thread_priority::unix::set_thread_priority_and_policy(thread, nice_zero, ThreadSchedulePolicy::Normal(policy))
    {
        eprintln!("warning: the load generator runs under the normal policy: setting {sched:?} failed: {e:?}");
    }
}

pub struct Outcome {
    /// When the run started: the measured window begins `warmup` later and lasts `window_s`.
    pub base: Instant,
    /// Successful responses completed inside the measured window.
    pub measured: u64,
    /// Length of the measured window in seconds (shorter than the duration when the work ran out).
    pub window_s: f64,
    pub rps: f64,
    /// Latencies of the measured successful requests, in microseconds.
    pub hist: Histogram<u64>,
    /// Failed requests over the whole run (warm-up included).
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// Successful responses over the whole run (for deletes: members removed).
    pub ok_total: u64,
    /// Seconds after the start of the measured window when the work ran out (negative: during the warm-up).
    pub ran_dry_at: Option<f64>,
    pub server_cpu_pct: f64,
    pub loadgen_cpu_pct: f64,
    /// CPU used by everything else on the machine meanwhile: it competes with both for the same cores.
    pub other_cpu_pct: f64,
}

/// What a response must contain.
enum Expect {
    TimeString,
    Id(i64),
}

#[derive(Deserialize)]
struct Answer {
    result: Option<serde_json::Value>,
}

struct Shared {
    spec: Spec,
    host: String,
    base: Instant,
    measure_start: Instant,
    end: Instant,
    stop: AtomicBool,
    /// Nanoseconds after `base` at which the work ran out (0: it did not).
    dry_at_ns: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    ok_total: AtomicU64,
    /// Requests handed out so far (counted against `spec.requests`).
    sent: AtomicU64,
}

struct TaskResult {
    hist: Histogram<u64>,
    measured: u64,
    /// Nanoseconds after `base` of the last measured completion.
    last_ns: u64,
}

impl TaskResult {
    fn empty() -> Self {
        TaskResult { hist: new_histogram(), measured: 0, last_ns: 0 }
    }

    fn add(&mut self, other: TaskResult) -> anyhow::Result<()> {
        self.hist.add(&other.hist)?;
        self.measured += other.measured;
        self.last_ns = self.last_ns.max(other.last_ns);
        Ok(())
    }
}

const MAX_REPORTED_ERRORS: usize = 5;
/// A request still unanswered after this long counts as an error, and its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(spec: Spec) -> anyhow::Result<Outcome> {
    let base = Instant::now();
    let measure_start = base + spec.warmup;
    let end = measure_start + spec.duration;
    let shared = Arc::new(Shared {
        host: spec.addr.to_string(),
        spec,
        base,
        measure_start,
        end,
        stop: AtomicBool::new(false),
        dry_at_ns: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
        ok_total: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    let cpu = tokio::spawn(measure_cpu(shared.clone()));
    // One thread per core, each with its own single-threaded runtime and its share of the connections, as wrk
    // does it: an answer wakes only the thread that owns its connection, and no task moves between threads.
    // With the multi-thread runtime, SCHED_BATCH made no measurable difference: its workers wake each other.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(shared.spec.conns.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            std::thread::Builder::new().name(format!("loadgen-{t}")).spawn(move || -> anyhow::Result<TaskResult> {
                apply_sched(shared.spec.sched);
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let tasks: Vec<_> = (t..shared.spec.conns)
                        .step_by(threads)
                        .map(|i| tokio::spawn(connection(shared.clone(), i as u64)))
                        .collect();
                    let mut total = TaskResult::empty();
                    for task in tasks {
                        total.add(task.await?)?;
                    }
                    Ok(total)
                })
            })
        })
        .collect::<Result<_, _>>()?;
    let results = tokio::task::spawn_blocking(move || {
        handles.into_iter().map(|h| h.join().expect("load generator thread panicked")).collect::<Vec<_>>()
    })
    .await?;
    let mut total = TaskResult::empty();
    for r in results {
        total.add(r?)?;
    }
    let TaskResult { hist, measured, last_ns } = total;
    shared.stop.store(true, Ordering::Relaxed);
    let (server_cpu_pct, loadgen_cpu_pct, other_cpu_pct) = cpu.await?;
    let dry_ns = shared.dry_at_ns.load(Ordering::Relaxed);
    let ran_dry_at = (dry_ns > 0).then(|| dry_ns as f64 / 1e9 - shared.spec.warmup.as_secs_f64());
    // After running dry the window ends with the last measured completion.
    let window_s = match ran_dry_at {
        Some(_) => (last_ns as f64 / 1e9 - shared.spec.warmup.as_secs_f64()).max(0.0),
        None => shared.spec.duration.as_secs_f64(),
    };
    let first_errors = shared.first_errors.lock().unwrap().clone();
    Ok(Outcome {
        base: shared.base,
        measured,
        window_s,
        rps: if window_s > 0.0 { measured as f64 / window_s } else { 0.0 },
        hist,
        errors: shared.errors.load(Ordering::Relaxed),
        first_errors,
        ok_total: shared.ok_total.load(Ordering::Relaxed),
        ran_dry_at,
        server_cpu_pct,
        loadgen_cpu_pct,
        other_cpu_pct,
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// CPU time of the server, of this process and of everything else over the measured window, as % of one core.
async fn measure_cpu(shared: Arc<Shared>) -> (f64, f64, f64) {
    let pids = [shared.spec.server_pid, std::process::id()];
    let sample = || {
        let [server, me] = pids.map(|p| crate::procs::cpu_seconds(p).unwrap_or(0.0));
        [server, me, crate::procs::machine_busy_seconds().unwrap_or(0.0)]
    };
    let stopped = || shared.stop.load(Ordering::Relaxed);
    while Instant::now() < shared.measure_start && !stopped() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, c0) = (Instant::now(), sample());
    while Instant::now() < shared.end && !stopped() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (elapsed, c1) = (t0.elapsed().as_secs_f64(), sample());
    let pct = |i: usize| if elapsed > 0.0 { (c1[i] - c0[i]) / elapsed * 100.0 } else { 0.0 };
    (pct(0), pct(1), (pct(2) - pct(0) - pct(1)).max(0.0))
}

async fn connection(shared: Arc<Shared>, index: u64) -> TaskResult {
    let mut result = TaskResult::empty();
    let mut rng = StdRng::seed_from_u64(index);
    'connect: while Instant::now() < shared.end {
        let stream = match tokio::net::TcpStream::connect(shared.spec.addr).await {
            Ok(s) => s,
            Err(e) => {
                shared.error(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = match http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => {
                shared.error(format!("handshake: {e}"));
                continue;
            }
        };
        tokio::spawn(conn);
        while Instant::now() < shared.end {
            let Some((request, expect, position)) = shared.next_request(&mut rng) else {
                let _ = shared.dry_at_ns.compare_exchange(
                    0,
                    shared.base.elapsed().as_nanos() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                break 'connect;
            };
            let started = Instant::now();
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            })
            .await;
            let done = Instant::now();
            let (status, body) = match answer {
                Ok(Ok(answer)) => answer,
                // The connection is unusable: count the error and open a new one.
                Ok(Err(e)) => {
                    shared.error(format!("request: {e}"));
                    continue 'connect;
                }
                Err(_) => {
                    shared.error(format!("request: no answer within {REQUEST_TIMEOUT:?}"));
                    continue 'connect;
                }
            };
            if let Err(problem) = check(status, &body, &expect) {
                shared.error(problem);
                continue;
            }
            shared.ok_total.fetch_add(1, Ordering::Relaxed);
            if let (Some(acks), Some(i)) = (&shared.spec.acks, position) {
                acks.ns[i].store(done.saturating_duration_since(acks.epoch).as_nanos() as u64 + 1, Ordering::Relaxed);
            }
            if done >= shared.measure_start && done <= shared.end {
                result.hist.saturating_record((done - started).as_micros().max(1) as u64);
                result.measured += 1;
                result.last_ns = (done - shared.base).as_nanos() as u64;
            }
        }
        break;
    }
    result
}

impl Shared {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < MAX_REPORTED_ERRORS {
            first.push(message);
        }
    }

    /// The next request, what its answer must say, and for a list job the membership's position in the list.
    fn next_request(&self, rng: &mut StdRng) -> Option<(Request<Full<Bytes>>, Expect, Option<usize>)> {
        if self.spec.requests.is_some_and(|n| self.sent.fetch_add(1, Ordering::Relaxed) >= n) {
            return None;
        }
        let mut position = None;
        let (method, body, expect) = match &self.spec.job {
            Job::ServerTime => ("server.time", None, Expect::TimeString),
            Job::GetLastId { chats } => {
                let chat = rng.gen_range(1..=*chats as i64);
                let body = format!(r#"{{"CRM_ENTITY_TYPE":"deal","CRM_ENTITY":{}}}"#, DEAL_OFFSET + chat);
                ("imopenlines.crm.chat.getLastId", Some(body), Expect::Id(chat))
            }
            Job::Delete(list) | Job::Add(list) => {
                let (i, m) = list.take()?;
                position = Some(i);
                let body = format!(
                    r#"{{"CRM_ENTITY_TYPE":"deal","CRM_ENTITY":{},"USER_ID":{},"CHAT_ID":{}}}"#,
                    m.deal(),
                    m.user,
                    m.chat
                );
                let method = match &self.spec.job {
                    Job::Add(_) => "imopenlines.crm.chat.user.add",
                    _ => "imopenlines.crm.chat.user.delete",
                };
                // Both answer with the chat's id.
                (method, Some(body), Expect::Id(m.chat as i64))
            }
        };
        let builder = Request::builder()
            .uri(format!("/rest/{WEBHOOK_USER}/{}/{method}.json", self.spec.webhook_code))
            .header(header::HOST, &self.host);
        let request = match body {
            None => builder.method(Method::GET).body(Full::new(Bytes::new())),
            Some(body) => builder
                .method(Method::POST)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body))),
        };
        Some((request.expect("valid request"), expect, position))
    }
}

fn check(status: StatusCode, body: &[u8], expect: &Expect) -> Result<(), String> {
    let describe = || format!("HTTP {}: {}", status.as_u16(), String::from_utf8_lossy(&body[..body.len().min(300)]));
    if status != StatusCode::OK {
        return Err(describe());
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| format!("{e}: {}", describe()))?;
    let ok = match (expect, &answer.result) {
        (Expect::TimeString, Some(serde_json::Value::String(_))) => true,
        (Expect::Id(id), Some(result)) => result.as_i64() == Some(*id),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let wanted = match expect {
            Expect::TimeString => "a time string".to_string(),
            Expect::Id(id) => id.to_string(),
        };
        Err(format!("expected result {wanted}: {}", describe()))
    }
}
