//! Prometheus metrics, served at `GET /metrics` (the `metrics` facade with its Prometheus exporter).
//!
//! The recorder is process-wide, installed once by [`install`] before the store opens (so that the SQLite
//! writer's thread gets a live histogram). What is counted on every successful REST call uses handles
//! registered once per method ([`MethodHandles`]): a `metrics::counter!` with labels hashes its key on every call, which the request
//! path cannot afford. Gauges that describe a current state (journal, pools) are read when `/metrics` is
//! scraped instead of being kept up to date on every change.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REST_REQUESTS: &str = "crmchat_rest_requests_total";
pub const REST_DURATION: &str = "crmchat_rest_request_duration_seconds";
pub const RATE_LIMIT_REFUSALS: &str = "crmchat_rate_limit_refusals_total";
pub const GROUP_COMMIT_CHANGES: &str = "crmchat_group_commit_changes";
pub const JOURNAL_ENTRIES: &str = "crmchat_journal_entries";
pub const JOURNAL_CAPACITY: &str = "crmchat_journal_capacity";
pub const POOL_CONNECTIONS: &str = "crmchat_db_pool_connections";
pub const POOL_MAX_CONNECTIONS: &str = "crmchat_db_pool_max_connections";
pub const STATE_LOADS: &str = "crmchat_state_loads_total";
pub const STATE_LOAD_ROWS_READ: &str = "crmchat_state_load_rows_read_total";
pub const STATE_LOAD_ROWS_WRITTEN: &str = "crmchat_state_load_rows_written_total";
/// Events written to the outbox, by event name. Counted by the process whose change wrote them, once its
/// transaction committed (in the SQLite writer and in the PostgreSQL backend), not by the delivery worker: with
/// several instances on one database every worker reads every event, but each event is written by exactly one
/// instance, so the instances' counters add up to the events produced. Events written by CLI commands
/// (`crmchat app add --handler`) are counted by that short-lived process, which nobody scrapes.
pub const EVENTS_PRODUCED: &str = "crmchat_events_produced_total";
/// Recorded delivery attempts of this process's worker by outcome: `delivered`, `failed` (retries spent) or
/// `retry`.
pub const EVENT_DELIVERIES: &str = "crmchat_event_deliveries_total";
/// Pending deliveries in the database (of every instance), refreshed by the worker about once a second.
pub const EVENT_DELIVERIES_PENDING: &str = "crmchat_event_deliveries_pending";
/// How long the oldest pending delivery's event has waited (0 with none pending), refreshed like
/// [`EVENT_DELIVERIES_PENDING`].
pub const EVENT_OLDEST_PENDING: &str = "crmchat_event_oldest_pending_seconds";
pub const EVENT_DELIVERY_DURATION: &str = "crmchat_event_delivery_duration_seconds";

/// The label of calls to a method crmchat does not have: the name in the URL is the client's, and a label per
/// name would let any client grow the registry without bound.
pub const UNKNOWN_METHOD: &str = "unknown";
/// The outcome label of a call answered with a result.
pub const OK: &str = "ok";

/// Latency buckets, in seconds: from a cached read (well under a millisecond) to the request timeout.
const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0];
/// Group sizes of the SQLite writer, up to its largest group.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Histogram samples are kept until they are folded into the buckets; fold them this often even when nobody
/// scrapes, so that memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder (once; later calls return the same handle). `None` when another recorder
/// was installed first (a program embedding crmchat's library with its own).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REST_DURATION.into()), DURATION_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_CHANGES.into()), GROUP_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(EVENT_DELIVERY_DURATION.into()), DURATION_BUCKETS))
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Fold histogram samples into their buckets every few seconds (spawned once per server).
pub fn spawn_upkeep(handle: &'static PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

fn describe() {
    describe_counter!(REST_REQUESTS, "REST calls by method and outcome (ok, or the vendor error code answered)");
    describe_histogram!(
        REST_DURATION,
        metrics::Unit::Seconds,
        "REST call duration by method, from first byte to answer"
    );
    describe_counter!(
        RATE_LIMIT_REFUSALS,
        "REST calls refused by a rate limit (requests: the leaky bucket; operating_time)"
    );
    describe_histogram!(GROUP_COMMIT_CHANGES, "Changes committed together by the SQLite group-commit writer");
    describe_gauge!(JOURNAL_ENTRIES, "Entries in the request journal");
    describe_gauge!(JOURNAL_CAPACITY, "Capacity of the request journal (--journal-size)");
    describe_gauge!(POOL_CONNECTIONS, "Database pool connections by pool and state (idle, in_use)");
    describe_gauge!(POOL_MAX_CONNECTIONS, "Most connections a database pool opens");
    describe_counter!(STATE_LOADS, "State loads committed by this process (control API, --fixture, --plan)");
    describe_counter!(STATE_LOAD_ROWS_READ, "Stored rows the state loads of this process read to merge their files");
    describe_counter!(STATE_LOAD_ROWS_WRITTEN, "Rows the state loads of this process wrote (the files' rows)");
    describe_counter!(EVENTS_PRODUCED, "Events written to the outbox by the changes of this process, by event");
    describe_counter!(
        EVENT_DELIVERIES,
        "Delivery attempts recorded by this process's worker, by outcome (delivered, failed: retries spent, retry)"
    );
    describe_gauge!(EVENT_DELIVERIES_PENDING, "Pending event deliveries in the database");
    describe_gauge!(
        EVENT_OLDEST_PENDING,
        metrics::Unit::Seconds,
        "Age of the event of the oldest pending delivery (0 when none is pending)"
    );
    describe_histogram!(
        EVENT_DELIVERY_DURATION,
        metrics::Unit::Seconds,
        "Event delivery attempt duration, from the request to the handler's answer (or the error)"
    );
}

/// Events a committed transaction wrote to the outbox (see [`EVENTS_PRODUCED`]).
pub fn events_produced(events: &[&'static str]) {
    for &event in events {
        counter!(EVENTS_PRODUCED, "event" => event).increment(1);
    }
}

/// What became of a delivery attempt, for [`EVENT_DELIVERIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    Failed,
    Retry,
}

/// A delivery attempt whose outcome was recorded.
pub fn delivery_recorded(outcome: DeliveryOutcome) {
    let label = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Failed => "failed",
        DeliveryOutcome::Retry => "retry",
    };
    counter!(EVENT_DELIVERIES, "outcome" => label).increment(1);
}

/// A delivery attempt took `duration`, answered or not.
pub fn delivery_attempted(duration: Duration) {
    histogram!(EVENT_DELIVERY_DURATION).record(duration.as_secs_f64());
}

/// The pending deliveries now: how many, and how long the oldest has waited.
pub fn set_pending_gauges(pending: i64, oldest_wait: Duration) {
    gauge!(EVENT_DELIVERIES_PENDING).set(pending as f64);
    gauge!(EVENT_OLDEST_PENDING).set(oldest_wait.as_secs_f64());
}

/// A state load's cost in rows: it should follow the file, never the size of the portal.
pub fn state_loaded(rows_read: u64, rows_written: u64) {
    counter!(STATE_LOADS).increment(1);
    counter!(STATE_LOAD_ROWS_READ).increment(rows_read);
    counter!(STATE_LOAD_ROWS_WRITTEN).increment(rows_written);
}

/// The handles a REST call uses when a known method answers with a result: registered once per method (see
/// the module's note on cost).
pub struct MethodHandles {
    ok: Counter,
    duration: Histogram,
}

impl MethodHandles {
    pub fn new(method: &'static str) -> Self {
        Self {
            ok: counter!(REST_REQUESTS, "method" => method, "outcome" => OK),
            duration: histogram!(REST_DURATION, "method" => method),
        }
    }

    pub fn succeeded(&self, duration: Duration) {
        self.ok.increment(1);
        self.duration.record(duration.as_secs_f64());
    }
}

/// Count a REST call that was refused with `error` (or closed without an answer: `connection_reset`).
/// `method` is the registry's name, or [`UNKNOWN_METHOD`].
pub fn rest_call_refused(method: &'static str, error: &'static str, duration: Duration) {
    counter!(REST_REQUESTS, "method" => method, "outcome" => error).increment(1);
    histogram!(REST_DURATION, "method" => method).record(duration.as_secs_f64());
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Requests,
    OperatingTime,
}

pub fn rate_limit_refusal(limit: Limit) {
    let label = match limit {
        Limit::Requests => "requests",
        Limit::OperatingTime => "operating_time",
    };
    counter!(RATE_LIMIT_REFUSALS, "limit" => label).increment(1);
}

/// The histogram of the SQLite writer's group sizes (taken once by its thread).
pub fn group_commit_histogram() -> Histogram {
    histogram!(GROUP_COMMIT_CHANGES)
}

/// A database pool's connections at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// `readers`, `writer` (SQLite) or `main` (PostgreSQL).
    pub pool: &'static str,
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// Set the gauges that describe the current state, just before a scrape renders them.
pub fn set_state_gauges(journal_entries: usize, journal_capacity: usize, pools: &[PoolUse]) {
    gauge!(JOURNAL_ENTRIES).set(journal_entries as f64);
    gauge!(JOURNAL_CAPACITY).set(journal_capacity as f64);
    for pool in pools {
        let in_use = pool.open.saturating_sub(pool.idle);
        gauge!(POOL_CONNECTIONS, "pool" => pool.pool, "state" => "idle").set(f64::from(pool.idle));
        gauge!(POOL_CONNECTIONS, "pool" => pool.pool, "state" => "in_use").set(f64::from(in_use));
        gauge!(POOL_MAX_CONNECTIONS, "pool" => pool.pool).set(f64::from(pool.max));
    }
}
