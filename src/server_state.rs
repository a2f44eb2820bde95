//! The state one server process shares with every handler (REST, OAuth, the control API, the inspector): the
//! store, the settings, the portal clock, the request journal, fault rules, the limiters and the control API's
//! settings; and which listener a request came through.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, PortalClock};
use crate::config::{ControlToken, Settings};
use crate::journal::Journal;
use crate::rest::body_budget::BodyBudget;
use crate::rest::faults::Faults;
use crate::rest::limits::{OperatingTime, OperatingTimeLimits, RequestLimiter, RequestLimits};
use crate::rest::limits_redis::RedisLimits;
use crate::state::PortalState;
use crate::store::DynStore;

pub struct AppState {
    pub store: DynStore,
    pub settings: Settings,
    /// The portal's clock: every reading of wall time goes through it (`/_crmchat/clock` moves it).
    pub clock: Arc<PortalClock>,
    /// The last REST calls (`/_crmchat/requests`).
    pub journal: Journal,
    /// Fault rules (`/_crmchat/faults`).
    pub faults: Faults,
    pub requests: Arc<dyn RequestLimits>,
    pub operating: Arc<dyn OperatingTimeLimits>,
    /// Set when the limits are shared through Redis (for `/healthz`).
    pub redis: Option<Arc<RedisLimits>>,
    /// The control API (`/_crmchat/`): its token and the start-up state a reset returns to.
    pub control: Control,
    /// Every REST call holds this for reading while it runs; replacing the whole state (a reset, a restore)
    /// holds it for writing, so a call never sees part of the old state and part of the new one. Fair: a
    /// waiting replace holds back calls that arrive after it.
    pub state_gate: tokio::sync::RwLock<()>,
    /// Turns true when the server begins to shut down: answers that would stream on (the inspector's live
    /// pages) end then, so the graceful shutdown does not wait for them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The room for request bodies being read and the calls they carry (`--max-buffered-bytes`).
    pub body_budget: BodyBudget,
}

impl AppState {
    /// The state of one server process, with in-memory limiters; the portal clock runs over `base` (the
    /// system's clock, or a test's).
    pub fn new(store: DynStore, settings: Settings, base: Arc<dyn Clock>) -> Self {
        let clock = Arc::new(PortalClock::over(base));
        Self {
            store,
            requests: Arc::new(RequestLimiter::new(clock.clone(), LIMITER_MAX_KEYS)),
            operating: Arc::new(OperatingTime::new(clock.clone(), LIMITER_MAX_KEYS)),
            clock,
            journal: Journal::new(crate::journal::DEFAULT_SIZE),
            faults: Faults::new(),
            redis: None,
            control: Default::default(),
            state_gate: Default::default(),
            stopping: tokio::sync::watch::channel(false).0,
            body_budget: BodyBudget::new(settings.max_buffered_bytes),
            settings,
        }
    }

    /// The same state with the control API set up as `control` says.
    pub fn with_control(self, control: Control) -> Self {
        Self { control, ..self }
    }

    /// The state of an instance that shares its limits with others through Redis at `redis_url`.
    pub fn with_redis(store: DynStore, settings: Settings, redis_url: &str) -> anyhow::Result<Self> {
        let clock = Arc::new(PortalClock::default());
        let redis = Arc::new(RedisLimits::new(
            redis_url,
            clock.clone(),
            RequestLimiter::new(clock.clone(), LIMITER_MAX_KEYS),
            OperatingTime::new(clock.clone(), LIMITER_MAX_KEYS),
        )?);
        Ok(Self {
            store,
            body_budget: BodyBudget::new(settings.max_buffered_bytes),
            settings,
            clock,
            journal: Journal::new(crate::journal::DEFAULT_SIZE),
            faults: Faults::new(),
            requests: redis.clone(),
            operating: redis.clone(),
            redis: Some(redis),
            control: Default::default(),
            state_gate: Default::default(),
            stopping: tokio::sync::watch::channel(false).0,
        })
    }
}

/// Limiter entries kept at most (client IPs, credentials × methods): bounds their memory at a few MB.
pub const LIMITER_MAX_KEYS: usize = 100_000;

/// Which listener a request came through (the portal's `require_https` setting refuses webhooks over HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Https,
}

/// The control API's own settings, and what a reset goes back to.
pub struct Control {
    /// `None`: the control API is off and `/_crmchat/*` answers 404.
    pub token: Option<ControlToken>,
    /// The portal as it was once start-up loading finished (the `--fixture` file, the demo portal, or what the
    /// database held), kept parsed and validated so that a reset is only the database's work.
    pub startup: Arc<PortalState>,
    /// Where named snapshots are written (`<data-dir>/snapshots`).
    pub snapshots_dir: PathBuf,
}

impl Default for Control {
    fn default() -> Self {
        Self { token: None, startup: Arc::default(), snapshots_dir: PathBuf::from("snapshots") }
    }
}
