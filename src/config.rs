//! Typed settings for `serve`, from flags and `CRMCHAT_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the embedded database and the generated TLS certificate.
    #[arg(long, env = "CRMCHAT_DATA_DIR", default_value = "./crmchat-data")]
    pub data_dir: PathBuf,
    /// Database URL; default `sqlite://<data-dir>/crmchat.db`.
    #[arg(long, env = "CRMCHAT_DATABASE")]
    pub database: Option<String>,
}

impl StorageArgs {
    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| format!("sqlite://{}/crmchat.db", self.data_dir.display()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file: every flag is also a key (`data_dir = "…"`, `demo = true`); flags
    /// and `CRMCHAT_*` variables win over it. See `crmchat.example.toml`.
    #[arg(long, env = "CRMCHAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the settings `serve` would run with, and where each came from, then exit (secrets redacted).
    #[arg(long)]
    pub print_config: bool,
    /// Plain HTTP listener.
    #[arg(long, env = "CRMCHAT_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// HTTPS listener.
    #[arg(long, env = "CRMCHAT_HTTPS", default_value = "127.0.0.1:8443")]
    pub https: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// A portal state file (JSON or YAML) to load at start-up, before accepting requests.
    #[arg(long, env = "CRMCHAT_FIXTURE")]
    pub fixture: Option<PathBuf>,
    /// Load the built-in demo portal (when the database is still empty) and print a webhook URL to try.
    #[arg(long, env = "CRMCHAT_DEMO")]
    pub demo: bool,
    /// Set the portal's rate-limit plan at start-up (after `--demo` and `--fixture`; kept in the database):
    /// `standard` (burst 50, 2/s), `enterprise` (250, 5/s) or `unlimited` (no request limit, e.g. for CI).
    #[arg(long, env = "CRMCHAT_PLAN", value_parser = ["standard", "enterprise", "unlimited"])]
    pub plan: Option<String>,
    /// TLS certificate (PEM); without it a self-signed one is created in `<data-dir>/tls/`.
    #[arg(long, env = "CRMCHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "CRMCHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CRMCHAT_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, all requests together (at least `--max-body-bytes`). A body
    /// that finds no room is read to its end and answered 503 `QUERY_LIMIT_EXCEEDED`, for the client to retry.
    #[arg(long, env = "CRMCHAT_MAX_BUFFERED_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_buffered_bytes: usize,
    /// Share the rate limits of several instances through this Redis (e.g. `redis://127.0.0.1:6379`).
    #[arg(long, env = "CRMCHAT_REDIS")]
    pub redis: Option<String>,
    /// Behind a reverse proxy: take the client IP from the last `X-Forwarded-For` entry and the scheme from
    /// `X-Forwarded-Proto`. Only set this when every request comes through the proxy.
    #[arg(long, env = "CRMCHAT_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Seconds a client has to send a request (its headers, then its body) and that an idle connection stays
    /// open. Only the client's sending counts: the time the server spends on a request never does.
    #[arg(long, env = "CRMCHAT_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout: u64,
    /// Seconds the server may spend on a call once its body is in (waiting for the database included). Past
    /// it the call is answered 500 `INTERNAL_SERVER_ERROR` in the vendor's envelope: below the 30 s or more
    /// that clients commonly wait, so a client gets an answer instead of a dropped connection.
    #[arg(long, env = "CRMCHAT_REQUEST_TIMEOUT", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// An event handler must answer a delivery within this many seconds.
    #[arg(long, env = "CRMCHAT_EVENT_TIMEOUT", default_value_t = 10)]
    pub event_timeout: u64,
    /// The address event handlers reach this server at (their `client_endpoint`); default: the HTTP
    /// listener's address.
    #[arg(long, env = "CRMCHAT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Client connections open at most (both listeners). Default: the file-descriptor limit (`ulimit -n`,
    /// raised to its hard limit at start-up) less a reserve for the database, files and Redis. At the limit an
    /// idle connection is closed to make room; a new one is refused only when none is idle.
    #[arg(long, env = "CRMCHAT_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Lifetime of issued OAuth access tokens.
    #[arg(long, env = "CRMCHAT_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    pub access_token_ttl: u64,
    /// Turn on the control API under `/_crmchat/` (reset, state, snapshots …) for callers that send
    /// `Authorization: Bearer TOKEN`. Off without it (`--demo` turns it on with a random token).
    #[arg(long, env = "CRMCHAT_CONTROL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub control_token: Option<ControlToken>,
    /// Entries kept in the request journal (`/_crmchat/requests`); 0 turns it off.
    #[arg(long, env = "CRMCHAT_JOURNAL_SIZE", default_value_t = crate::journal::DEFAULT_SIZE)]
    pub journal_size: usize,
}

/// The control API's token. Kept only as its SHA-256 digest, compared in constant time, and never shown:
/// its `Debug` is redacted, so printing the settings cannot leak it.
#[derive(Clone)]
pub struct ControlToken {
    digest: [u8; 32],
}

impl ControlToken {
    pub fn new(token: &str) -> Self {
        use sha2::Digest as _;
        Self { digest: sha2::Sha256::digest(token.as_bytes()).into() }
    }

    /// Is `candidate` the token? Digests of equal length, compared in constant time: the answer's timing
    /// tells nothing about the token, not even its length.
    pub fn matches(&self, candidate: &str) -> bool {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let digest: [u8; 32] = sha2::Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(***)")
    }
}

impl std::str::FromStr for ControlToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the control token must not be empty".into());
        }
        Ok(ControlToken::new(s))
    }
}

/// Settings the request path needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, all requests together.
    pub max_buffered_bytes: usize,
    pub param_limits: crate::rest::params::Limits,
    pub access_token_ttl_secs: u64,
    pub trust_forwarded_for: bool,
    /// How long a client may take to send a request; idle connections close after it too.
    pub read_timeout: Duration,
    /// How long the server may work on a call before answering it with an error.
    pub request_timeout: Duration,
    /// Client connections open at most.
    pub max_connections: usize,
    /// `--public-url`: the address clients and handlers reach this server at, when it differs from the one a
    /// request came to (a proxy in front). Without a trailing slash.
    pub public_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            param_limits: Default::default(),
            access_token_ttl_secs: 3600,
            trust_forwarded_for: false,
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(20),
            max_connections: 1024,
            public_url: None,
        }
    }
}
