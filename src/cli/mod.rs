//! The command line: `serve`, `state load`, `state export`, credentials, `events`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod config_file;
mod credentials;
mod events;

pub use config_file::Parsed;

/// The command line of this process, with `serve --config FILE` read in. Exits with clap's message (and status
/// 2) when it is wrong, as `Cli::parse` would.
pub fn parse() -> Parsed {
    config_file::parse_from(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
}

use crate::app::{self, Bound};
use crate::config::{ServeArgs, Settings, StorageArgs};
use crate::server_state::AppState;
use crate::state::{self, demo};
use crate::store::{self, LoadError};

#[derive(Debug, Parser)]
#[command(name = "crmchat", version, about = "Bitrix24 REST API for Open Channel CRM chats, self-hosted")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `serve`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API over HTTP and HTTPS.
    Serve(ServeArgs),
    /// Load or export the portal state.
    #[command(subcommand)]
    State(StateCommand),
    /// Apply the database migrations and exit (serve also applies them at start-up).
    Migrate {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Manage inbound webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Manage OAuth applications.
    #[command(subcommand)]
    App(AppCommand),
    /// See the events produced for handlers and their deliveries, and deliver them again.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first, with each delivery's state and attempts.
    List {
        /// Only events with a delivery in this state: pending, delivered or failed.
        #[arg(long, value_parser = events::parse_state)]
        status: Option<crate::store::DeliveryState>,
        /// Only this event (e.g. ONCRMCHATUSERDELETE).
        #[arg(long)]
        event: Option<String>,
        /// The most events shown (1 to 1000).
        #[arg(
            long,
            default_value_t = crate::events::log::DEFAULT_LIMIT,
            value_parser = clap::value_parser!(i64).range(1..=crate::events::log::MAX_LIMIT)
        )]
        limit: i64,
        /// JSON, as `GET /_crmchat/events` answers, instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Queue every delivery of an event again (a running server sends them at once); attempts are kept.
    Redeliver {
        id: i64,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create a webhook for a user; prints its URL once (only a hash of the code is stored). With `--outgoing`,
    /// an outgoing webhook instead: the events are posted to the handler, and its application token is printed.
    Add {
        #[arg(long, required_unless_present = "outgoing", conflicts_with = "outgoing")]
        user: Option<i64>,
        /// Comma-separated scopes, e.g. `imopenlines,im`.
        #[arg(long, value_delimiter = ',', required_unless_present = "outgoing", conflicts_with = "outgoing")]
        scope: Vec<String>,
        /// An outgoing webhook (Bitrix24's local integration with an event list and a handler URL).
        #[arg(long, requires_all = ["event", "handler"])]
        outgoing: bool,
        /// The events an outgoing webhook is sent, comma-separated: ONCRMCHATUSERADD, ONCRMCHATUSERDELETE,
        /// ONOPENLINEMESSAGEADD.
        #[arg(long, value_delimiter = ',', requires = "outgoing")]
        event: Vec<String>,
        /// Where an outgoing webhook's events are posted (an http or https URL whose host has a dot).
        #[arg(long, requires = "outgoing")]
        handler: Option<String>,
        /// The server's base URL, used to print the webhook URL.
        #[arg(long, env = "CRMCHAT_BASE_URL", default_value = "http://127.0.0.1:8080")]
        base_url: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List webhooks (never their codes).
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Revoke a webhook by id (an outgoing one with `--outgoing`).
    Revoke {
        id: i64,
        #[arg(long)]
        outgoing: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an application; prints its client secret and application token once. With `--handler`, the
    /// application is also installed: the handler is bound to ONAPPINSTALL, which a running server delivers.
    Add {
        #[arg(long)]
        client_id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
        /// The application's ONAPPINSTALL handler (an http or https URL whose host has a dot, like 127.0.0.1).
        #[arg(long)]
        handler: Option<String>,
        /// The user who installs it, whose tokens ONAPPINSTALL carries (default: the first active admin).
        #[arg(long, requires = "handler")]
        user: Option<i64>,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List applications (never their secrets).
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Remove an application and every token issued to it; its ONAPPUNINSTALL handlers are told first.
    Remove {
        #[arg(long)]
        client_id: String,
        /// ONAPPUNINSTALL says CLEAN=1: the application is to remove its data too.
        #[arg(long)]
        clean: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Issue a one-time authorization code (valid 30 s) for a user: the local stand-in for the consent screen.
    Code {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        user: i64,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Upsert a state file (JSON or YAML) into the database.
    Load {
        file: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Print the whole current state as JSON (or write it to --output).
    Export {
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRMCHAT_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Logs go to standard error: standard output carries command results (`state export`, the demo URL).
    // Colours only on a terminal: log files and captured logs stay greppable.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::State(StateCommand::Load { file, storage }) => {
                let store = store::open(&storage.database_url()).await?;
                load_file(&store, &file).await?;
                eprintln!("loaded {}", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate { storage } => {
                let url = storage.database_url();
                store::open(&url).await?;
                eprintln!("{} is migrated", store::redact_url(&url));
                Ok(ExitCode::SUCCESS)
            }
            Command::Webhook(command) => credentials::webhook(command).await,
            Command::App(command) => credentials::app(command).await,
            Command::Events(command) => events::events(command).await,
            Command::State(StateCommand::Export { output, storage }) => {
                let store = store::open(&storage.database_url()).await?;
                let state = store.export_state().await?;
                let text = serde_json::to_string_pretty(&state)? + "\n";
                match output {
                    Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?,
                    None => std::io::stdout().write_all(text.as_bytes())?,
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn load_file(store: &store::DynStore, file: &std::path::Path) -> anyhow::Result<()> {
    let document =
        state::read_document(file).map_err(|e| anyhow::anyhow!("{}: invalid portal state:\n{e}", file.display()))?;
    match store.load_state(document.state, document.has_portal, real_time_ms()).await {
        Ok(()) => Ok(()),
        Err(LoadError::Invalid(errors)) => {
            anyhow::bail!("{}: invalid portal state:\n{errors}", file.display())
        }
        Err(LoadError::Store(e)) => Err(e.into()),
    }
}

/// The time a load from the command line stamps: a `crmchat state load` process has no portal clock of its
/// own (an offset lives in the memory of the server that was told it), and a server loading at start-up has
/// not been told one yet, so both read real time. Loads through the control API read the portal clock.
fn real_time_ms() -> i64 {
    crate::clock::unix_micros(std::time::SystemTime::now()).div_euclid(1000)
}

/// `--max-connections`, kept below what the descriptor limit allows.
fn max_connections(asked: Option<u64>) -> usize {
    let allowed = crate::connections::default_max_connections();
    match asked {
        None => allowed,
        Some(asked) if asked as usize > allowed => {
            tracing::warn!(
                asked,
                allowed,
                "--max-connections is more than the file-descriptor limit allows (ulimit -n): using {allowed}"
            );
            allowed
        }
        Some(asked) => asked as usize,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Checked before anything is opened: a budget smaller than one body would refuse every largest body.
    anyhow::ensure!(
        args.max_buffered_bytes >= args.max_body_bytes,
        "--max-buffered-bytes ({}) must be at least --max-body-bytes ({})",
        args.max_buffered_bytes,
        args.max_body_bytes
    );
    // Before the store opens: the SQLite writer's thread takes its histogram as it starts.
    if let Some(metrics) = crate::telemetry::install() {
        crate::telemetry::spawn_upkeep(metrics);
    }
    let url = args.storage.database_url();
    let store = store::open(&url).await.with_context(|| format!("opening {}", store::redact_url(&url)))?;
    if args.demo && !store.is_initialized().await? {
        store
            .load_state(demo::demo_state(), true, real_time_ms())
            .await
            .map_err(|e| anyhow::anyhow!("loading the demo portal: {e}"))?;
    }
    if let Some(file) = &args.fixture {
        load_file(&store, file).await?;
    }
    if let Some(plan) = &args.plan {
        // Only the portal's settings are loaded: every other row stays as it is.
        let mut portal = store.export_structure().await?.portal;
        portal.plan = plan.clone();
        let state = state::PortalState { portal, ..Default::default() };
        store
            .load_state(state, true, real_time_ms())
            .await
            .map_err(|e| anyhow::anyhow!("setting --plan {plan}: {e}"))?;
    }
    // What a reset of the control API goes back to. Only kept when the control API is on.
    let control_token = match (&args.control_token, args.demo) {
        (Some(token), _) => Some((token.clone(), None)),
        (None, true) => {
            let token = crate::secrets::random_alphanumeric(32);
            Some((crate::config::ControlToken::new(&token), Some(token)))
        }
        (None, false) => None,
    };
    let startup = match control_token {
        Some(_) => Arc::new(store.export_state().await.context("reading the start-up state")?),
        None => Arc::default(),
    };
    // Requests read settings, credentials and the portal's structure from memory.
    let store: store::DynStore = Arc::new(store::cache::CachedStore::new(store).await?);
    let portal = store.portal().await?;
    let cert = crate::tls::ensure_certificate(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        &args.storage.data_dir,
        &portal.domain,
    )?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert.cert, &cert.key)
        .await
        .with_context(|| format!("loading the TLS certificate {}", cert.cert.display()))?;
    let bound = Bound::bind(args.http, args.https)?;
    let (http, https) = (bound.http.local_addr()?, bound.https.local_addr()?);
    let settings = Settings {
        max_body_bytes: args.max_body_bytes,
        max_buffered_bytes: args.max_buffered_bytes,
        access_token_ttl_secs: args.access_token_ttl,
        trust_forwarded_for: args.trust_forwarded_for,
        read_timeout: std::time::Duration::from_secs(args.read_timeout),
        request_timeout: std::time::Duration::from_secs(args.request_timeout),
        max_connections: max_connections(args.max_connections),
        public_url: args.public_url.as_deref().map(|url| url.trim_end_matches('/').to_string()),
        ..Settings::default()
    };
    let control = crate::server_state::Control {
        token: control_token.as_ref().map(|(token, _)| token.clone()),
        startup,
        snapshots_dir: args.storage.data_dir.join("snapshots"),
    };
    let mut state = match &args.redis {
        Some(url) => AppState::with_redis(store, settings, url).context("--redis")?,
        None => AppState::new(store, settings, Arc::new(crate::clock::SystemClock)),
    };
    state.journal = crate::journal::Journal::new(args.journal_size);
    let state = Arc::new(state.with_control(control));

    if let Some(redis) = &state.redis {
        redis.probe().await;
    }
    let public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{http}"));
    crate::events::delivery::spawn(
        state.store.clone(),
        state.clock.clone(),
        crate::events::delivery::DeliverySettings {
            timeout: std::time::Duration::from_secs(args.event_timeout.max(1)),
            public_url: public_url.trim_end_matches('/').to_string(),
            access_token_ttl_secs: args.access_token_ttl,
            per_handler: 4,
        },
    )
    .context("starting the event delivery thread")?;
    let shutdown = app::ShutdownSignal::install().context("listening for SIGINT/SIGTERM")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "crmchat {} serving portal {}", env!("CARGO_PKG_VERSION"), portal.domain)?;
    writeln!(out, "http: http://{http}")?;
    writeln!(out, "https: https://{https}")?;
    writeln!(out, "tls certificate: {}{}", cert.cert.display(), if cert.generated { " (new)" } else { "" })?;
    if args.demo {
        let hook = format!("http://{http}/rest/{}/{}/", demo::DEMO_WEBHOOK_USER, demo::DEMO_WEBHOOK_CODE);
        writeln!(out, "webhook: {hook}")?;
        writeln!(
            out,
            "try: curl -s {hook}imopenlines.crm.chat.user.delete.json -H 'Content-Type: application/json' \
             -d '{{\"CRM_ENTITY_TYPE\":\"deal\",\"CRM_ENTITY\":288,\"USER_ID\":12}}'"
        )?;
        writeln!(
            out,
            "     curl -s --cacert {} 'https://localhost:{}/rest/{}/{}/imopenlines.crm.chat.getLastId.json\
             ?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288'",
            cert.cert.display(),
            https.port(),
            demo::DEMO_WEBHOOK_USER,
            demo::DEMO_WEBHOOK_CODE
        )?;
    }
    match &control_token {
        // The demo prints the token it made up: there is no other way to learn it. A token given on the
        // command line or in the environment is never printed.
        Some((_, Some(demo_token))) => {
            writeln!(out, "control: http://{http}/_crmchat/ (token {demo_token})")?;
            // The fragment logs the browser in at once and never reaches a server log (see src/inspector/).
            writeln!(out, "inspector: http://{http}/_crmchat/ui/login#token={demo_token}")?;
        }
        Some((_, None)) => writeln!(out, "control: http://{http}/_crmchat/")?,
        None => {}
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    app::serve(state, bound, tls, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
