//! Limits shared by several crmchat instances through Redis: the request-intensity bucket and the
//! operating-time windows live in Redis and are updated by atomic Lua scripts that mirror [`LeakyBucket`] and
//! [`OperatingWindow`] of the in-memory limiters, with Redis's own clock so instances need not agree on time
//! (plus this instance's portal-clock offset, so a test that moves the clock moves the limits too).
//!
//! When Redis cannot be reached, each instance keeps serving with its local limiters (an outage of the limit
//! store should not take the API down; the limit is then per instance until Redis is back) and says so in the
//! log and in `/healthz`. Redis is retried at most every [`RETRY_AFTER`].
//!
//! [`LeakyBucket`]: super::limits::LeakyBucket
//! [`OperatingWindow`]: super::limits::OperatingWindow

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::Script;
use redis::aio::MultiplexedConnection;
use std::sync::Arc;

use crate::clock::PortalClock;

use super::limits::{
    BucketLevel, LeakyBucket, OPERATING_LIMIT_SECS, OperatingStatus, OperatingTime, OperatingTimeLimits, Plan,
    RequestLimiter, RequestLimits, WINDOW_MINUTES,
};

/// How long one Redis round trip may take before the local limiter answers instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is not tried again for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
const KEY_PREFIX: &str = "crmchat:limits:";
/// The most request buckets of one portal read from Redis for the inspector.
const MAX_LEVELS_READ: usize = 200;

/// The leaky bucket of `LeakyBucket::try_admit`, in Lua. Numbers are written with %.0f: Lua's default
/// formatting would turn microsecond timestamps into lossy scientific notation.
const ADMIT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[4])
local burst, rate, unit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'level', 'updated', 'rate')
local level = tonumber(state[1]) or 0
local updated = tonumber(state[2]) or now
local old_rate = tonumber(state[3]) or rate
local elapsed = now - updated
if elapsed < 0 then elapsed = 0 end
level = level - elapsed * old_rate
if level < 0 then level = 0 end
if level + unit > burst * unit then return 0 end
level = level + unit
if now > updated then updated = now end
redis.call('HSET', KEYS[1], 'level', string.format('%.0f', level), 'updated', string.format('%.0f', updated),
  'rate', string.format('%.0f', rate))
redis.call('PEXPIRE', KEYS[1], math.floor(level / rate / 1000) + 1000)
return 1
"#;

/// `LeakyBucket::level_at`: the bucket's level now, read only.
const LEVEL_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'level', 'updated', 'rate')
local level = tonumber(state[1]) or 0
local elapsed = now - (tonumber(state[2]) or now)
if elapsed < 0 then elapsed = 0 end
level = level - elapsed * (tonumber(state[3]) or 0)
if level < 0 then level = 0 end
return string.format('%.0f', level)
"#;

/// `OperatingWindow::status`: the sum of the window's minutes (`ARGV[2]` = [`WINDOW_MINUTES`]) and when the oldest
/// of them expires.
const STATUS_LUA: &str = r#"
local now = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local oldest = math.floor(now / 60) - (window - 1)
local fields = redis.call('HGETALL', KEYS[1])
local total, first = 0, nil
for i = 1, #fields, 2 do
  local minute, micros = tonumber(fields[i]), tonumber(fields[i + 1])
  if minute >= oldest then
    total = total + micros
    if first == nil or minute < first then first = minute end
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
local reset = now + window * 60
if first ~= nil then reset = (first + window) * 60 end
return {string.format('%.0f', total), reset}
"#;

/// `OperatingWindow::record` (the caller drops calls under 0.1 s); the hash expires a minute later than the window
/// is long (`ARGV[3]` = [`WINDOW_MINUTES`]), so it outlives the minute just charged.
const RECORD_LUA: &str = r#"
local minute = math.floor((tonumber(redis.call('TIME')[1]) + tonumber(ARGV[2])) / 60)
redis.call('HINCRBY', KEYS[1], minute, ARGV[1])
redis.call('EXPIRE', KEYS[1], (tonumber(ARGV[3]) + 1) * 60)
return 1
"#;

pub struct RedisLimits {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    down_until: Mutex<Option<Instant>>,
    healthy: AtomicBool,
    clock: Arc<PortalClock>,
    local_requests: RequestLimiter,
    local_operating: OperatingTime,
    admit: Script,
    level: Script,
    status: Script,
    record: Script,
}

impl RedisLimits {
    /// `url` is checked here; the connection is made on first use, so an instance starts even while Redis is
    /// down.
    pub fn new(
        url: &str,
        clock: Arc<PortalClock>,
        local_requests: RequestLimiter,
        local_operating: OperatingTime,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: tokio::sync::Mutex::new(None),
            down_until: Mutex::new(None),
            healthy: AtomicBool::new(true),
            clock,
            local_requests,
            local_operating,
            admit: Script::new(ADMIT_LUA),
            level: Script::new(LEVEL_LUA),
            status: Script::new(STATUS_LUA),
            record: Script::new(RECORD_LUA),
        })
    }

    /// Connect now, so that `/healthz` tells the truth before the first limited call.
    pub async fn probe(&self) {
        let _ = self.connection().await;
    }

    /// Is Redis answering (as of the last attempt)?
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> Option<MultiplexedConnection> {
        if self.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            match tokio::time::timeout(REDIS_TIMEOUT, self.client.get_multiplexed_async_connection()).await {
                Ok(Ok(connection)) => *slot = Some(connection),
                Ok(Err(err)) => {
                    self.mark_down(&err.to_string());
                    return None;
                }
                Err(_) => {
                    self.mark_down("connection timed out");
                    return None;
                }
            }
        }
        slot.clone()
    }

    fn mark_down(&self, reason: &str) {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + RETRY_AFTER);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(reason, "redis unreachable: limits fall back to this instance's local limiters");
        }
    }

    fn mark_up(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("redis reachable again: limits are shared");
        }
    }

    /// The portal clock's offset in whole seconds, for the scripts that work in seconds.
    fn offset_secs(&self) -> String {
        self.clock.offset_us().div_euclid(1_000_000).to_string()
    }

    /// Deletes the keys under [`KEY_PREFIX`] that match the glob `pattern`, walking the key space with `SCAN`
    /// (not `KEYS`, which blocks Redis for every other client while it runs). A failure is logged and leaves
    /// the keys to expire by themselves (buckets within seconds, windows within ten minutes).
    async fn delete_matching(&self, pattern: &str) {
        let Some(mut connection) = self.connection().await else {
            tracing::warn!("redis unreachable: the portal's shared limits were not cleared by the reset");
            return;
        };
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = match self.scan_page(&mut connection, pattern, cursor).await {
                Ok(page) => page,
                Err(reason) => return self.lost(&reason).await,
            };
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                let unlink = unlink.query_async::<i64>(&mut connection);
                match tokio::time::timeout(REDIS_TIMEOUT, unlink).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return self.lost(&err.to_string()).await,
                    Err(_) => return self.lost("command timed out").await,
                }
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }

    /// One step of `SCAN` over the keys under [`KEY_PREFIX`] matching `pattern`: the next cursor (0 at the end)
    /// and the keys found, in full.
    async fn scan_page(
        &self,
        connection: &mut MultiplexedConnection,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<String>), String> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(format!("{KEY_PREFIX}{pattern}")).arg("COUNT").arg(1000);
        match tokio::time::timeout(REDIS_TIMEOUT, scan.query_async::<(u64, Vec<String>)>(connection)).await {
            Ok(Ok(page)) => Ok(page),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("command timed out".into()),
        }
    }

    /// The portal's request buckets in Redis, read with [`LEVEL_LUA`]; `None` when Redis failed.
    async fn shared_levels(&self, domain: &str) -> Option<Vec<BucketLevel>> {
        let mut connection = self.connection().await?;
        let pattern = format!("req:{}|*", glob_escape(domain));
        let (mut keys, mut cursor) = (Vec::new(), 0);
        // The inspector shows a page of buckets: a portal with more clients than this is shown in part.
        while keys.len() < MAX_LEVELS_READ {
            let (next, page) = match self.scan_page(&mut connection, &pattern, cursor).await {
                Ok(page) => page,
                Err(reason) => {
                    self.lost(&reason).await;
                    return None;
                }
            };
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let offset = [self.clock.offset_us().to_string()];
        let mut levels = Vec::new();
        for key in keys.iter().take(MAX_LEVELS_READ) {
            let short = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
            let level: String = self.run(&self.level, short, &offset).await?;
            let bucket = short.strip_prefix("req:").unwrap_or(short);
            levels.extend(BucketLevel::of(domain, bucket, level.parse().unwrap_or(0)));
        }
        Some(levels)
    }

    /// A command failed: drop the connection and mark Redis down, as [`Self::run`] does.
    async fn lost(&self, reason: &str) {
        *self.connection.lock().await = None;
        self.mark_down(reason);
    }

    /// Run a script; `None` (and Redis marked down for a while) on any failure.
    async fn run<T: redis::FromRedisValue>(&self, script: &Script, key: &str, args: &[String]) -> Option<T> {
        let mut connection = self.connection().await?;
        let mut invocation = script.key(format!("{KEY_PREFIX}{key}"));
        for arg in args {
            invocation.arg(arg);
        }
        match tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => {
                self.mark_up();
                Some(value)
            }
            Ok(Err(err)) => {
                self.lost(&err.to_string()).await;
                None
            }
            Err(_) => {
                self.lost("command timed out").await;
                None
            }
        }
    }
}

#[async_trait]
impl RequestLimits for RedisLimits {
    async fn admit(&self, key: &str, plan: Plan) -> bool {
        let args = [
            plan.burst.to_string(),
            plan.per_second.to_string(),
            LeakyBucket::UNIT.to_string(),
            self.clock.offset_us().to_string(),
        ];
        match self.run::<i64>(&self.admit, &format!("req:{key}"), &args).await {
            Some(admitted) => admitted == 1,
            None => self.local_requests.admit(key, plan),
        }
    }

    /// The portal's buckets in Redis (other portals' buckets, which other servers may use, are left alone) and
    /// the local fallback.
    async fn clear(&self, domain: &str) {
        self.delete_matching(&format!("req:{}|*", glob_escape(domain))).await;
        RequestLimits::clear(&self.local_requests, domain).await;
    }

    async fn levels(&self, domain: &str, most: usize) -> Vec<BucketLevel> {
        match self.shared_levels(domain).await {
            Some(levels) => BucketLevel::fullest(levels, most),
            None => self.local_requests.levels(domain, most).await,
        }
    }
}

#[async_trait]
impl OperatingTimeLimits for RedisLimits {
    async fn status(&self, key: &str) -> OperatingStatus {
        match self
            .run::<(String, i64)>(&self.status, &format!("op:{key}"), &[self.offset_secs(), WINDOW_MINUTES.to_string()])
            .await
        {
            Some((total_us, reset_at)) => {
                let operating = total_us.parse::<f64>().unwrap_or(0.0) / 1e6;
                OperatingStatus { operating, reset_at, blocked: operating > OPERATING_LIMIT_SECS }
            }
            None => self.local_operating.status(key),
        }
    }

    async fn record(&self, key: &str, duration: Duration) {
        if duration < super::limits::MIN_COUNTED {
            return;
        }
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).to_string();
        if self
            .run::<i64>(&self.record, &format!("op:{key}"), &[micros, self.offset_secs(), WINDOW_MINUTES.to_string()])
            .await
            .is_none()
        {
            self.local_operating.record(key, duration);
        }
    }

    /// The portal's windows in Redis and the local fallback, as for the request buckets.
    async fn clear(&self, domain: &str) {
        self.delete_matching(&format!("op:{}|*", glob_escape(domain))).await;
        OperatingTimeLimits::clear(&self.local_operating, domain).await;
    }
}

/// `text` with the glob characters of Redis's `MATCH` escaped, so that a domain matches only itself.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_escape_leaves_plain_domains_alone_and_escapes_glob_characters() {
        assert_eq!(glob_escape("portal.crmchat.localhost"), "portal.crmchat.localhost");
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
    }
}
