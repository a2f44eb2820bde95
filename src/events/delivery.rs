//! The delivery worker: posts every pending delivery to its handler and records what happened.
//!
//! Deliveries are written with their event, in the change's transaction (see `store`). The worker asks the
//! store for due deliveries, leases the ones it will send now (so another instance on the same database
//! leaves them alone until the lease expires), posts them, and records each outcome: a 2xx answer within the
//! timeout is a delivery; anything else is retried with exponential backoff and jitter until the portal's
//! retries are spent, then the delivery is marked failed. A delivery is marked only after its outcome is
//! written, so one that was sent when the process died is sent again once its lease expired: at least once.
//!
//! Per handler, deliveries start in the order their events were produced and at most
//! [`DeliverySettings::per_handler`] are in flight; while a handler's oldest delivery waits for its retry, the
//! later ones wait too. Other handlers are not held back. Finished deliveries are pruned after the retention
//! window, with the events left without deliveries.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use super::wire::form_body;
use crate::clock::PortalClock;
use crate::domain::PortalSettings;
use crate::secrets::{new_secret, sha256_hex};
use crate::store::{
    Change, ChangeOutcome, DeliveryOutcome, DynStore, NextStep, PendingDelivery, StoreResult, TokenRecord,
};
use crate::telemetry;

/// Failed deliveries are retried this many times unless the portal says otherwise.
pub const DEFAULT_RETRIES: i64 = crate::domain::DEFAULT_EVENT_RETRIES;
/// The first retry waits a second, each next one twice as long, up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Finished deliveries are kept this long, and at most [`RETAINED`] of them.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
const RETAINED: i64 = 100_000;
/// Rows one prune deletes of each kind; a full batch is followed by another, up to [`MAX_PRUNE_BATCHES`] a second.
const PRUNE_BATCH: i64 = 5_000;
const MAX_PRUNE_BATCHES: usize = 20;
/// How often the worker looks for due deliveries when it has nothing to do.
const POLL: Duration = Duration::from_millis(20);
/// Deliveries taken per look, and kept in flight by one process at most.
const BATCH: i64 = 512;
const MAX_IN_FLIGHT: usize = 2048;
/// Deliveries of one handler leased at once (sent `per_handler` at a time).
const LEASE_AHEAD: usize = 256;
/// A delivery token is used for the deliveries of this long before a new one is minted: a token per
/// delivery would add a token row per delivery, for an hour.
const TOKEN_REUSE_MS: i64 = 10_000;
/// Events whose deliveries carry a refresh token too (the vendor's list).
const WITH_REFRESH_TOKEN: &[&str] = &["ONAPPINSTALL", "ONAPPUPDATE", "ONOFFLINEEVENT"];
/// Events delivered without any token: the application's access is gone when they are sent.
const WITHOUT_TOKENS: &[&str] = &["ONAPPUNINSTALL"];

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// A handler must answer within this time.
    pub timeout: Duration,
    /// How handlers reach this server (`client_endpoint`, `server_endpoint`), without a trailing slash.
    pub public_url: String,
    pub access_token_ttl_secs: u64,
    /// Deliveries in flight per handler.
    pub per_handler: usize,
}

/// Starts the worker on a thread and runtime of its own. On the server's runtime, each sender's next step
/// queued behind every request in flight, and with both cores busy serving removals a delivery took several
/// times its own work; a thread of its own is scheduled by the kernel beside the request workers.
pub fn spawn(store: DynStore, clock: Arc<PortalClock>, settings: DeliverySettings) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let worker = worker(store, clock, settings);
    std::thread::Builder::new().name("crmchat-events".into()).spawn(move || runtime.block_on(worker.run()))?;
    Ok(())
}

fn worker(store: DynStore, clock: Arc<PortalClock>, settings: DeliverySettings) -> Arc<Worker> {
    let http = reqwest::Client::builder()
        .connect_timeout(settings.timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("crmchat/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client for deliveries");
    Arc::new(Worker {
        store,
        clock,
        settings,
        http,
        tokens: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(InFlight::default()),
        lanes: Mutex::new(HashMap::new()),
        freed: Notify::new(),
    })
}

struct Worker {
    store: DynStore,
    clock: Arc<PortalClock>,
    settings: DeliverySettings,
    http: reqwest::Client,
    /// Delivery tokens by (application, user, depth): the clear token, its expiry and when it was minted.
    tokens: Mutex<HashMap<(String, i64, i64), MintedToken>>,
    in_flight: Mutex<InFlight>,
    /// Per handler URL: the leased deliveries waiting for a sender, and how many senders it has.
    lanes: Mutex<HashMap<String, Lane>>,
    /// Woken when deliveries finished, so that their handlers get the next ones at once.
    freed: Notify,
}

/// One handler's queue of leased deliveries, oldest first, worked off by up to `per_handler` senders: leasing
/// many at once and sending them one after the other costs two small transactions per batch, not per delivery.
#[derive(Default)]
struct Lane {
    queue: std::collections::VecDeque<(PendingDelivery, i64)>,
    senders: usize,
}

#[derive(Clone)]
struct MintedToken {
    access: String,
    expires_ms: i64,
    minted_ms: i64,
    /// The application's scopes when the token was minted, comma-separated: a reused token carries the scopes
    /// it was issued with, so reusing it needs no read of the application.
    scope: String,
}

/// The token part of a delivery's `auth`.
struct DeliveryToken {
    access: String,
    expires_ms: i64,
    scope: String,
    refresh: Option<String>,
}

#[derive(Default)]
struct InFlight {
    /// Leased by this worker: queued in a lane or being sent.
    ids: HashSet<i64>,
    per_handler: HashMap<String, usize>,
    /// Handlers with a retry in flight: they get nothing else until it is answered, so that a handler coming
    /// back receives its backlog in order.
    retrying: HashSet<String>,
    /// Handlers whose failed attempt is not recorded yet: until it is, the database would not hold their later
    /// deliveries back, so nothing more is leased for them.
    held: HashSet<String>,
}

impl InFlight {
    /// Delivery `id` of `handler` is no longer held: sent and recorded, or given back unsent.
    fn release(&mut self, handler: &str, id: i64) {
        self.ids.remove(&id);
        if let Some(count) = self.per_handler.get_mut(handler) {
            *count -= 1;
            if *count == 0 {
                self.per_handler.remove(handler);
            }
        }
    }
}

impl Worker {
    async fn run(self: Arc<Self>) {
        let (done, outcomes) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().record(outcomes));
        let mut pruned_at = Instant::now();
        loop {
            if pruned_at.elapsed() >= Duration::from_secs(1) {
                pruned_at = Instant::now();
                self.prune().await;
                self.refresh_gauges().await;
            }
            let started = match self.start_due(&done).await {
                Ok(started) => started,
                Err(err) => {
                    tracing::warn!(error = %err, "reading due deliveries failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if started == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = self.freed.notified() => {}
                }
            }
        }
    }

    /// Leases and starts what is due and fits into the per-handler limits; how many it started.
    async fn start_due(
        self: &Arc<Self>,
        done: &mpsc::UnboundedSender<(String, DeliveryOutcome)>,
    ) -> StoreResult<usize> {
        let now = self.clock.unix_ms();
        let due = self.store.due_deliveries(now, BATCH).await?;
        let chosen: Vec<PendingDelivery> = {
            let in_flight = self.in_flight.lock().expect("in-flight set");
            let mut room = MAX_IN_FLIGHT.saturating_sub(in_flight.ids.len());
            // Per handler: how many were taken now, and how many it may have in flight.
            let mut taken: HashMap<&str, (usize, usize)> = HashMap::new();
            let mut chosen = Vec::new();
            for d in &due {
                if room == 0 {
                    break;
                }
                if in_flight.ids.contains(&d.id) || in_flight.held.contains(&d.handler) {
                    continue;
                }
                let (count, limit) = taken.entry(&d.handler).or_insert_with(|| {
                    // Due deliveries come oldest first: the first one of a handler is its oldest pending one.
                    let retrying = d.attempts > 0 || in_flight.retrying.contains(&d.handler);
                    (0, if retrying { 1 } else { LEASE_AHEAD })
                });
                let busy = in_flight.per_handler.get(&d.handler).copied().unwrap_or(0);
                if busy + *count >= *limit {
                    continue;
                }
                *count += 1;
                room -= 1;
                chosen.push(d.clone());
            }
            chosen
        };
        if chosen.is_empty() {
            return Ok(0);
        }
        let lease = self.settings.timeout + Duration::from_secs(30);
        let change = Change::LeaseDeliveries {
            ids: chosen.iter().map(|d| d.id).collect(),
            now_ms: now,
            until_ms: now + lease.as_millis() as i64,
        };
        let ChangeOutcome::Leased(leased) = self.store.apply(change).await? else {
            return Ok(0);
        };
        let until_ms = now + lease.as_millis() as i64;
        let leased: HashSet<i64> = leased.into_iter().collect();
        let mut started = 0;
        let mut lanes = self.lanes.lock().expect("lanes");
        let mut in_flight = self.in_flight.lock().expect("in-flight set");
        for delivery in chosen.into_iter().filter(|d| leased.contains(&d.id)) {
            in_flight.ids.insert(delivery.id);
            *in_flight.per_handler.entry(delivery.handler.clone()).or_insert(0) += 1;
            if delivery.attempts > 0 {
                in_flight.retrying.insert(delivery.handler.clone());
            }
            started += 1;
            let handler = delivery.handler.clone();
            let lane = lanes.entry(handler.clone()).or_default();
            lane.queue.push_back((delivery, until_ms));
            if lane.senders < self.settings.per_handler.max(1) {
                lane.senders += 1;
                tokio::spawn(self.clone().drive(handler, done.clone()));
            }
        }
        Ok(started)
    }

    /// One sender of a handler's lane: sends its deliveries one after the other until the lane is empty. A
    /// delivery whose lease would run out during the attempt is left for a later lease rather than risk a
    /// second sender; after a failed attempt the rest of the lane is given back, so that the handler gets its
    /// backlog in order once the retry went through.
    async fn drive(self: Arc<Self>, handler: String, done: mpsc::UnboundedSender<(String, DeliveryOutcome)>) {
        let margin = self.settings.timeout.as_millis() as i64 + 1_000;
        // Parsed once per sender rather than by the client for every delivery.
        let url = reqwest::Url::parse(&handler).map_err(|e| format!("the handler URL: {e}"));
        loop {
            let next = {
                let mut lanes = self.lanes.lock().expect("lanes");
                let lane = lanes.entry(handler.clone()).or_default();
                match lane.queue.pop_front() {
                    Some(next) => next,
                    None => {
                        lane.senders -= 1;
                        if lane.senders == 0 {
                            lanes.remove(&handler);
                        }
                        return;
                    }
                }
            };
            let (delivery, until_ms) = next;
            if until_ms - self.clock.unix_ms() < margin {
                self.forget(&handler, &[delivery.id]);
                continue;
            }
            let outcome = self.send(delivery, &url, until_ms).await;
            let failed = !matches!(outcome.next, NextStep::Delivered);
            if failed {
                self.in_flight.lock().expect("in-flight set").held.insert(handler.clone());
            }
            let _ = done.send((handler.clone(), outcome));
            if failed {
                self.give_back(&handler).await;
            }
        }
    }

    /// Takes the deliveries still queued for `handler` out of its lane and releases their leases.
    async fn give_back(&self, handler: &str) {
        let queued: Vec<(PendingDelivery, i64)> = {
            let mut lanes = self.lanes.lock().expect("lanes");
            lanes.get_mut(handler).map(|lane| lane.queue.drain(..).collect()).unwrap_or_default()
        };
        let mut by_lease: HashMap<i64, Vec<i64>> = HashMap::new();
        for (delivery, until_ms) in &queued {
            by_lease.entry(*until_ms).or_default().push(delivery.id);
        }
        for (until_ms, ids) in by_lease {
            // Should this fail, the leases run out by themselves.
            if let Err(err) = self.store.apply(Change::ReleaseDeliveries { ids: ids.clone(), until_ms }).await {
                tracing::warn!(error = %err, "giving back leased deliveries failed");
            }
            self.forget(handler, &ids);
        }
    }

    /// Deliveries this worker no longer holds, unsent.
    fn forget(&self, handler: &str, ids: &[i64]) {
        let mut in_flight = self.in_flight.lock().expect("in-flight set");
        for &id in ids {
            in_flight.release(handler, id);
        }
        drop(in_flight);
        self.freed.notify_one();
    }

    /// Writes outcomes in batches. A batch that cannot be written is tried again: its deliveries stay
    /// leased meanwhile, and are sent again if this process dies first.
    async fn record(self: Arc<Self>, mut outcomes: mpsc::UnboundedReceiver<(String, DeliveryOutcome)>) {
        while let Some(first) = outcomes.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH as usize {
                match outcomes.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let change = Change::RecordDeliveries(batch.iter().map(|(_, o)| o.clone()).collect());
            while let Err(err) = self.store.apply(change.clone()).await {
                tracing::warn!(error = %err, "recording delivery outcomes failed; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            for (_, outcome) in &batch {
                telemetry::delivery_recorded(match outcome.next {
                    NextStep::Delivered => telemetry::DeliveryOutcome::Delivered,
                    NextStep::Failed => telemetry::DeliveryOutcome::Failed,
                    NextStep::RetryAt(_) => telemetry::DeliveryOutcome::Retry,
                });
            }
            let mut in_flight = self.in_flight.lock().expect("in-flight set");
            for (handler, outcome) in &batch {
                in_flight.release(handler, outcome.id);
                if outcome.attempt > 1 {
                    in_flight.retrying.remove(handler);
                }
                if !matches!(outcome.next, NextStep::Delivered) {
                    in_flight.held.remove(handler);
                }
            }
            drop(in_flight);
            self.freed.notify_one();
        }
    }

    /// The pending-deliveries gauges, from the database: every instance's deliveries, so each instance
    /// reports the same figures.
    async fn refresh_gauges(&self) {
        match self.store.pending_stats().await {
            Ok(stats) => {
                let waited_ms = stats.oldest_created_ms.map_or(0, |created| self.clock.unix_ms() - created);
                telemetry::set_pending_gauges(stats.count, Duration::from_millis(waited_ms.max(0) as u64));
            }
            Err(err) => tracing::warn!(error = %err, "reading the pending deliveries failed"),
        }
    }

    /// Prunes in batches of [`PRUNE_BATCH`], going on at once while a batch was full, so that pruning keeps
    /// up with any sustained rate of removals (each writes a notice) and deliveries.
    async fn prune(&self) {
        let now = self.clock.unix_ms();
        for _ in 0..MAX_PRUNE_BATCHES {
            let change = Change::Prune {
                before_ms: now - RETENTION.as_millis() as i64,
                keep: RETAINED,
                limit: PRUNE_BATCH,
                now_ms: now,
            };
            match self.store.apply(change).await {
                Ok(ChangeOutcome::Pruned { deliveries, notifications })
                    if deliveries.max(notifications) >= PRUNE_BATCH as u64 => {}
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "pruning finished deliveries failed");
                    break;
                }
            }
        }
        let mut tokens = self.tokens.lock().expect("token cache");
        tokens.retain(|_, t| t.expires_ms > now);
    }

    /// One attempt: the POST and its outcome, to be recorded only while the lease `lease_until_ms` holds.
    async fn send(
        &self,
        delivery: PendingDelivery,
        url: &Result<reqwest::Url, String>,
        lease_until_ms: i64,
    ) -> DeliveryOutcome {
        let attempt = delivery.attempts + 1;
        let at_ms = self.clock.unix_ms();
        let started = Instant::now();
        let result = match url {
            Ok(url) => self.post(&delivery, url.clone()).await,
            Err(err) => Err(err.clone()),
        };
        let took = started.elapsed();
        telemetry::delivery_attempted(took);
        let duration_ms = took.as_millis() as i64;
        let (status, error) = match &result {
            Ok(status) => (Some(*status as i64), None),
            Err(err) => (None, Some(err.clone())),
        };
        let delivered = matches!(status, Some(200..=299));
        let retries = self.store.portal().await.map(|p| retries(&p)).unwrap_or(DEFAULT_RETRIES);
        let next = if delivered {
            NextStep::Delivered
        } else if attempt > retries {
            NextStep::Failed
        } else {
            NextStep::RetryAt(self.clock.unix_ms() + backoff(attempt).as_millis() as i64)
        };
        if !delivered {
            // The handler URL may hold a secret of the application's: only the event and the outcome.
            tracing::info!(event = %delivery.event, delivery = delivery.id, attempt, ?status, error = error.as_deref(), "delivery failed");
        }
        DeliveryOutcome { id: delivery.id, lease_until_ms, attempt, at_ms, status, error, duration_ms, next }
    }

    /// POSTs the delivery; the HTTP status, or why there was none.
    async fn post(&self, delivery: &PendingDelivery, url: reqwest::Url) -> Result<u16, String> {
        let body = self.body(delivery).await.map_err(|e| format!("preparing the delivery: {e}"))?;
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .timeout(self.settings.timeout);
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        // Read the answer, so that the connection can be used again.
        let _ = response.bytes().await;
        Ok(status)
    }

    async fn body(&self, d: &PendingDelivery) -> StoreResult<String> {
        let portal = self.store.portal().await?;
        let auth = self.auth(d, &portal).await?;
        let data: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
        Ok(form_body(&[
            ("event", json!(d.event)),
            ("event_handler_id", json!(d.binding_id)),
            ("data", data),
            ("ts", json!(d.created_ms.div_euclid(1000))),
            ("auth", auth),
        ]))
    }

    /// The delivery's `auth`: with a working token of the delivery's user when it has one, and always the
    /// portal's addresses and the application's token.
    async fn auth(&self, d: &PendingDelivery, portal: &PortalSettings) -> StoreResult<Value> {
        let base = &self.settings.public_url;
        let client_endpoint = format!("{base}/rest/");
        let server_endpoint = format!("{base}/oauth/rest/");
        let member_id = sha256_hex(&portal.domain)[..32].to_string();
        let mut auth = Map::new();
        let now = self.clock.unix_ms();
        let token = match d.user_id {
            0 => None,
            _ if WITHOUT_TOKENS.contains(&d.event.as_str()) => None,
            _ => {
                let with_refresh = WITH_REFRESH_TOKEN.contains(&d.event.as_str());
                self.token(&d.client_id, d.user_id, d.depth + 1, with_refresh, now).await?
            }
        };
        if let Some(DeliveryToken { access, expires_ms, scope, refresh }) = token {
            auth.insert("access_token".into(), json!(access));
            auth.insert("expires".into(), json!(expires_ms.div_euclid(1000)));
            auth.insert("expires_in".into(), json!((expires_ms - now).div_euclid(1000)));
            auth.insert("scope".into(), json!(scope));
            auth.insert("domain".into(), json!(portal.domain));
            auth.insert("server_endpoint".into(), json!(server_endpoint));
            auth.insert("status".into(), json!("L"));
            auth.insert("client_endpoint".into(), json!(client_endpoint));
            auth.insert("member_id".into(), json!(member_id));
            auth.insert("user_id".into(), json!(d.user_id));
            if let Some(refresh) = refresh {
                auth.insert("refresh_token".into(), json!(refresh));
            }
        } else {
            auth.insert("domain".into(), json!(portal.domain));
            auth.insert("client_endpoint".into(), json!(client_endpoint));
            auth.insert("server_endpoint".into(), json!(server_endpoint));
            auth.insert("member_id".into(), json!(member_id));
        }
        auth.insert("application_token".into(), json!(d.application_token));
        Ok(Value::Object(auth))
    }

    /// A working access token of `user_id` for the application `client_id` (with a refresh token when asked for,
    /// which is then always a new pair); tokens without one are reused for [`TOKEN_REUSE_MS`]. `None` when the
    /// application is gone.
    async fn token(
        &self,
        client_id: &str,
        user_id: i64,
        depth: i64,
        with_refresh: bool,
        now: i64,
    ) -> StoreResult<Option<DeliveryToken>> {
        let key = (client_id.to_string(), user_id, depth);
        if !with_refresh {
            let cached = self.tokens.lock().expect("token cache").get(&key).cloned();
            if let Some(t) = cached.filter(|t| now - t.minted_ms < TOKEN_REUSE_MS && t.expires_ms > now) {
                return Ok(Some(DeliveryToken {
                    access: t.access,
                    expires_ms: t.expires_ms,
                    scope: t.scope,
                    refresh: None,
                }));
            }
        }
        let Some(app) = self.store.app(client_id).await? else { return Ok(None) };
        let scope = app.scopes.join(",");
        let (access, refresh) = (new_secret(), new_secret());
        let expires_ms = now + self.settings.access_token_ttl_secs as i64 * 1000;
        let record = TokenRecord {
            access_sha256: sha256_hex(&access),
            refresh_sha256: sha256_hex(&refresh),
            client_id: app.client_id.clone(),
            user_id,
            scopes: app.scopes.clone(),
            access_expires_ms: expires_ms,
            // Without a refresh token handed out, the row is useless (and pruned) once the access expired.
            refresh_expires_ms: if with_refresh { now + REFRESH_TOKEN_TTL_MS } else { expires_ms },
            event_depth: depth,
        };
        self.store.add_tokens(&record).await?;
        if with_refresh {
            return Ok(Some(DeliveryToken { access, expires_ms, scope, refresh: Some(refresh) }));
        }
        let minted = MintedToken { access: access.clone(), expires_ms, minted_ms: now, scope: scope.clone() };
        self.tokens.lock().expect("token cache").insert(key, minted);
        Ok(Some(DeliveryToken { access, expires_ms, scope, refresh: None }))
    }
}

/// Refresh tokens handed out with deliveries live as long as those of the token endpoint: 180 days.
const REFRESH_TOKEN_TTL_MS: i64 = 180 * 24 * 3600 * 1000;

/// Retries after the first attempt (`portal.events.retries`; 0 is the vendor's single attempt).
fn retries(portal: &PortalSettings) -> i64 {
    portal.event_retries
}

/// The wait before attempt `attempt + 1`: 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`], ±20 % so that the
/// deliveries of a handler that came back do not all arrive in the same instant.
fn backoff(attempt: i64) -> Duration {
    let base = Duration::from_secs(1u64 << (attempt - 1).clamp(0, 20)).min(MAX_BACKOFF);
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// Why a request got no answer, in a few words (never the URL, which may hold a secret).
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connection refused or unreachable".into()
    } else if err.is_request() {
        "the request could not be sent".into()
    } else {
        "no valid HTTP answer".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        for (attempt, secs) in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (11, 600.0), (40, 600.0)] {
            let wait = backoff(attempt).as_secs_f64();
            assert!(wait >= secs * 0.8 && wait <= secs * 1.2, "attempt {attempt}: {wait}");
        }
    }
}
