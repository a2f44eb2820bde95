//! The test harness: spawn the real `crmchat` binary on a fresh data directory, call it over HTTP like a
//! client, read the portal state back with `crmchat state export` (zero-to-production's `spawn_app`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;
use tempfile::TempDir;

pub const METHOD: &str = "imopenlines.crm.chat.user.delete";
pub const DEMO_CODE: &str = "demowebhookcode1";
pub const DEMO_HOOK: &str = "/rest/1/demowebhookcode1/";
pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// How long a server under test may take to print `ready`: 30 s, or `CRMCHAT_TEST_READY_SECS` (a benchmark that
/// loads a million memberships at start-up needs minutes).
fn ready_timeout() -> Duration {
    let secs = std::env::var("CRMCHAT_TEST_READY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    Duration::from_secs(secs)
}

/// `CRMCHAT_*` settings of the environment must not leak into the servers under test.
const SCRUBBED_ENV: &[&str] = &[
    "CRMCHAT_DATA_DIR",
    "CRMCHAT_DATABASE",
    "CRMCHAT_HTTP",
    "CRMCHAT_HTTPS",
    "CRMCHAT_FIXTURE",
    "CRMCHAT_DEMO",
    "CRMCHAT_TLS_CERT",
    "CRMCHAT_TLS_KEY",
    "CRMCHAT_MAX_BODY_BYTES",
    "CRMCHAT_PLAN",
    "CRMCHAT_CONFIG",
    "CRMCHAT_CONTROL_TOKEN",
    "CRMCHAT_READ_TIMEOUT",
    "CRMCHAT_REQUEST_TIMEOUT",
    "CRMCHAT_MAX_CONNECTIONS",
];

/// The demo portal of `crmchat serve --demo`, as a state file to change per test.
pub fn demo_fixture() -> Value {
    serde_json::from_str(crmchat::state::demo::DEMO_JSON).expect("the demo fixture is JSON")
}

/// The demo fixture changed by `f`.
pub fn demo_with(f: impl FnOnce(&mut Value)) -> Value {
    let mut fixture = demo_fixture();
    f(&mut fixture);
    fixture
}

/// Adds a user to a fixture.
pub fn add_user(fixture: &mut Value, user: Value) {
    fixture["users"].as_array_mut().unwrap().push(user);
}

/// Adds a webhook with scopes `imopenlines` and `im` for `user` and returns its prefix.
pub fn add_webhook(fixture: &mut Value, user: i64, code: &str) -> String {
    let webhook = serde_json::json!({"user": user, "code": code, "scopes": ["imopenlines", "im"]});
    fixture["webhooks"].as_array_mut().unwrap().push(webhook);
    hook(user, code)
}

/// The fixture's chat `id`, to change.
pub fn fixture_chat(fixture: &mut Value, id: i64) -> &mut Value {
    fixture["chats"].as_array_mut().unwrap().iter_mut().find(|c| c["id"] == id).expect("chat in the fixture")
}

/// `/rest/{user}/{code}/`.
pub fn hook(user: i64, code: &str) -> String {
    format!("/rest/{user}/{code}/")
}

/// A command for the binary under test with a clean environment.
pub fn crmchat_command() -> Command {
    // CRMCHAT_TEST_BIN: another build of the server (a release build, for the timings of `*_bench` tests).
    let bin = std::env::var_os("CRMCHAT_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_crmchat").into());
    let mut cmd = Command::new(bin);
    for key in SCRUBBED_ENV {
        cmd.env_remove(key);
    }
    cmd
}

/// `--data-dir DIR`, plus `--database URL` when `CRMCHAT_TEST_DATABASE` is set. When it names a PostgreSQL
/// server, each data directory gets a database of its own on it (see [`data_dir_database`]).
pub fn storage_args(data_dir: &Path) -> Vec<String> {
    let mut args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
    if let Ok(url) = std::env::var("CRMCHAT_TEST_DATABASE")
        && !url.is_empty()
    {
        args.push("--database".into());
        args.push(if is_postgres(&url) { data_dir_database(data_dir) } else { url });
    }
    args
}

// ---- the database under test ----

/// True when the suite runs on PostgreSQL (`CRMCHAT_TEST_DATABASE` names one).
pub fn testing_postgres() -> bool {
    std::env::var("CRMCHAT_TEST_DATABASE").is_ok_and(|url| is_postgres(&url))
}

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// In a data directory: the URL of its PostgreSQL database.
const DATABASE_MARKER: &str = "test-database-url";
/// The prefix of the per-data-directory databases, which [`sweep_databases`] may drop.
const DATA_DIR_DATABASES: &str = "crmchat_t";

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// The PostgreSQL server for tests: `CRMCHAT_TEST_DATABASE` when it names one, else the local one (trust auth).
pub fn postgres_server() -> String {
    std::env::var("CRMCHAT_TEST_DATABASE").ok().filter(|url| is_postgres(url)).unwrap_or_else(|| LOCAL_POSTGRES.into())
}

/// `url` naming the database `name` instead (the query string stays).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let host = base.find("://").map_or(0, |i| i + 3);
    let server = base[host..].find('/').map_or(base, |i| &base[..host + i]);
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// Runs `future` to completion on a runtime of its own: the callers are synchronous code, often inside a
/// test's runtime, which must not be blocked on.
fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
    })
    .join()
    .expect("the database helper thread")
}

/// Runs `statements` on the server's maintenance database.
fn on_postgres_server(statements: Vec<String>) -> Result<(), sqlx::Error> {
    use sqlx::{Connection, Executor};
    let server = postgres_server();
    block_on(async move {
        let mut conn = sqlx::PgConnection::connect(&server).await?;
        for statement in statements {
            conn.execute(statement.as_str()).await?;
        }
        Ok(())
    })
}

/// Creates `{prefix}_{random}` on [`postgres_server`], with `comment`; its URL.
fn create_database(prefix: &str, comment: Option<&str>) -> String {
    let name = format!("{prefix}_{:016x}", rand::random::<u64>());
    let mut statements = vec![format!("CREATE DATABASE \"{name}\"")];
    if let Some(comment) = comment {
        statements.push(format!("COMMENT ON DATABASE \"{name}\" IS '{}'", comment.replace('\'', "''")));
    }
    on_postgres_server(statements).unwrap_or_else(|e| {
        panic!(
            "creating a test database on {}: {e} (is PostgreSQL running?)",
            crmchat::store::redact_url(&postgres_server())
        )
    });
    with_database(&postgres_server(), &name)
}

/// Drops the database of `url`, best-effort (connections left by a killed server are closed).
fn drop_database(url: &str) {
    let name = url.split('?').next().unwrap_or(url).rsplit('/').next().unwrap_or_default().to_string();
    if let Err(e) = on_postgres_server(vec![format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")]) {
        eprintln!("could not drop the test database {name}: {e}");
    }
}

/// A fresh PostgreSQL database `{prefix}_{random}` on [`postgres_server`], dropped with the value.
pub struct PgDatabase {
    pub url: String,
}

impl PgDatabase {
    pub fn create(prefix: &str) -> Self {
        Self { url: create_database(prefix, None) }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        drop_database(&self.url);
    }
}

/// The data directory's own PostgreSQL database, created on first use and remembered in the directory. A
/// [`TestApp`] drops it; the database of a bare directory (CLI tests) carries the directory's path as its
/// comment and is dropped by [`sweep_databases`] once the directory is gone.
fn data_dir_database(data_dir: &Path) -> String {
    let marker = data_dir.join(DATABASE_MARKER);
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url;
    }
    sweep_databases();
    let url = create_database(DATA_DIR_DATABASES, Some(&data_dir.display().to_string()));
    std::fs::write(&marker, &url).expect("writing the database marker");
    url
}

fn drop_data_dir_database(data_dir: &Path) {
    if let Ok(url) = std::fs::read_to_string(data_dir.join(DATABASE_MARKER)) {
        drop_database(&url);
        let _ = std::fs::remove_file(data_dir.join(DATABASE_MARKER));
    }
}

/// Drops the per-data-directory databases whose directory no longer exists (left by this run or an earlier
/// one).
fn sweep_databases() {
    use sqlx::Connection;
    let server = postgres_server();
    let stale: Vec<String> = block_on(async move {
        let Ok(mut conn) = sqlx::PgConnection::connect(&server).await else { return Vec::new() };
        let databases: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE $1",
        )
        .bind(format!("{DATA_DIR_DATABASES}\\_%"))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        databases
            .into_iter()
            .filter(|(_, dir)| dir.as_ref().is_some_and(|dir| !Path::new(dir).exists()))
            .map(|(name, _)| name)
            .collect()
    });
    for name in stale {
        drop_database(&with_database(&postgres_server(), &name));
    }
}

// ----

/// Runs the binary with exactly `args` and waits for it.
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    crmchat_command().args(args).stdin(Stdio::null()).output().expect("running crmchat")
}

/// `crmchat state export` of a data directory, parsed.
pub fn export_dir(data_dir: &Path) -> Value {
    let mut args = vec!["state".to_string(), "export".to_string()];
    args.extend(storage_args(data_dir));
    let out = run_cli(&args);
    assert!(out.status.success(), "state export failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("state export printed something else than JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// `crmchat state load FILE` into a data directory.
pub fn load_file(data_dir: &Path, file: &Path) -> Output {
    let mut args = vec!["state".to_string(), "load".to_string(), file.display().to_string()];
    args.extend(storage_args(data_dir));
    run_cli(&args)
}

/// An answer of the server.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, `Null` when it is not JSON.
    pub body: Value,
}

impl Resp {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, text, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE.as_str())
    }
}

struct Server {
    child: Child,
    printed: Vec<String>,
    http_base: String,
    https_base: String,
    cert_path: PathBuf,
}

pub struct TestApp {
    pub http_base: String,
    pub https_base: String,
    pub cert_path: PathBuf,
    pub data_dir: PathBuf,
    /// The demo webhook prefix, `/rest/1/demowebhookcode1/`.
    pub hook: String,
    pub log_path: PathBuf,
    /// What the server printed on standard output before `ready`.
    pub printed: Vec<String>,
    /// Never follows redirects: a REST answer must never be one.
    pub client: reqwest::Client,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    _dir: TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(demo_fixture()).await
}

pub async fn spawn_app_with(fixture: Value) -> TestApp {
    spawn_app_with_env(fixture, &[]).await
}

/// Spawns a server on a new data directory loaded with `fixture`; `env` is added to the server's environment.
pub async fn spawn_app_with_env(fixture: Value, env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::Builder::new().prefix("crmchat-test-").tempdir().expect("creating a temp dir");
    spawn_app_in(dir, fixture, env).await
}

/// Like [`spawn_app_with_env`], with `dir` (removed with the app) as the data directory.
pub async fn spawn_app_in(dir: TempDir, fixture: Value, env: &[(&str, &str)]) -> TestApp {
    let data_dir = dir.path().to_path_buf();
    let fixture_path = data_dir.join("fixture.json");
    std::fs::write(&fixture_path, serde_json::to_vec_pretty(&fixture).unwrap()).expect("writing the fixture");
    let log_path = data_dir.join("server.log");
    let extra_env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let server = start_server(&data_dir, Some(&fixture_path), &log_path, &extra_env);
    TestApp::from_server(server, data_dir, log_path, extra_env, dir)
}

/// Starts `crmchat serve` and waits for its `ready` line; standard error goes (appended) to `log_path`.
/// With this key in a test app's environment the server runs under `ulimit -n VALUE` (it is not passed on).
pub const ULIMIT_NOFILE: &str = "TEST_ULIMIT_NOFILE";

fn start_server(data_dir: &Path, fixture: Option<&Path>, log_path: &Path, env: &[(String, String)]) -> Server {
    let mut cmd = match env.iter().find(|(k, _)| k == ULIMIT_NOFILE) {
        Some((_, limit)) => {
            // `ulimit` sets the soft and the hard limit: the server cannot raise it again.
            let mut cmd = crmchat_command();
            let program = cmd.get_program().to_owned();
            cmd = Command::new("sh");
            for key in SCRUBBED_ENV {
                cmd.env_remove(key);
            }
            cmd.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(program);
            cmd
        }
        None => crmchat_command(),
    };
    cmd.args(["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"]).args(storage_args(data_dir));
    if let Some(fixture) = fixture {
        cmd.arg("--fixture").arg(fixture);
    }
    cmd.envs(env.iter().filter(|(k, _)| k != ULIMIT_NOFILE).map(|(k, v)| (k, v)));
    run_until_ready(cmd, log_path)
}

/// Spawns a prepared `crmchat serve` command and waits for its `ready` line; standard error goes (appended) to
/// `log_path`.
fn run_until_ready(mut cmd: Command, log_path: &Path) -> Server {
    let log = File::options().create(true).append(true).open(log_path).expect("opening the server log");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
    let mut child = cmd.spawn().expect("spawning crmchat serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    // Keeps draining standard output for the life of the process.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Once nobody listens, keep reading anyway so the server never blocks on a full pipe.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + ready_timeout();
    let (mut http_base, mut https_base, mut cert_path) = (None, None, None);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("http: ") {
                    http_base = Some(url.trim().to_string());
                } else if let Some(url) = line.strip_prefix("https: ") {
                    https_base = Some(url.trim().to_string());
                } else if let Some(path) = line.strip_prefix("tls certificate: ") {
                    let path = path.trim();
                    let path = path.strip_suffix(" (new)").unwrap_or(path);
                    cert_path = Some(PathBuf::from(path));
                } else if line.trim() == "ready" {
                    break;
                }
                seen.push(line);
            }
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "crmchat serve did not print `ready` ({err:?}); stdout:\n{}\nlog:\n{}",
                    seen.join("\n"),
                    std::fs::read_to_string(log_path).unwrap_or_default()
                );
            }
        }
    }
    Server {
        child,
        printed: seen,
        http_base: http_base.expect("no `http:` line before `ready`"),
        https_base: https_base.expect("no `https:` line before `ready`"),
        cert_path: cert_path.expect("no `tls certificate:` line before `ready`"),
    }
}

impl TestApp {
    /// The app around a started server; `dir` is kept (and removed) with it.
    fn from_server(
        server: Server,
        data_dir: PathBuf,
        log_path: PathBuf,
        extra_env: Vec<(String, String)>,
        dir: TempDir,
    ) -> Self {
        TestApp {
            http_base: server.http_base,
            https_base: server.https_base,
            cert_path: server.cert_path,
            data_dir,
            hook: DEMO_HOOK.to_string(),
            log_path,
            printed: server.printed,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("building the HTTP client"),
            extra_env,
            child: Some(server.child),
            _dir: dir,
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http_base, path)
    }

    /// `{hook}{method}.json`.
    pub fn method_path(&self, method: &str) -> String {
        format!("{}{method}.json", self.hook)
    }

    /// POSTs `params` as JSON to the demo webhook.
    pub async fn call(&self, method: &str, params: Value) -> Resp {
        self.call_as(&self.hook.clone(), method, params).await
    }

    /// POSTs `params` as JSON through another webhook prefix (`/rest/15/code/`).
    pub async fn call_as(&self, hook: &str, method: &str, params: Value) -> Resp {
        self.post_raw(&format!("{hook}{method}.json"), Some("application/json"), params.to_string().into_bytes()).await
    }

    /// `imopenlines.crm.chat.user.delete` through the demo webhook.
    pub async fn delete(&self, params: Value) -> Resp {
        self.call(METHOD, params).await
    }

    pub async fn get(&self, path_and_query: &str) -> Resp {
        self.send(self.client.get(self.url(path_and_query))).await
    }

    pub async fn post_form(&self, path: &str, body: &str) -> Resp {
        self.post_raw(path, Some("application/x-www-form-urlencoded"), body.as_bytes().to_vec()).await
    }

    /// A `multipart/form-data` body of plain fields.
    pub async fn post_multipart(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let boundary = "crmchatTestBoundary7MA4YWxk";
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let content_type = format!("multipart/form-data; boundary={boundary}");
        self.post_raw(path, Some(&content_type), body.into_bytes()).await
    }

    /// POSTs `body` as is, with `content_type` (none: no Content-Type header).
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        Resp::read(request.send().await.expect("sending the request")).await
    }

    /// A client that trusts the server's generated certificate.
    pub fn https_client(&self) -> reqwest::ClientBuilder {
        let pem = std::fs::read(&self.cert_path).expect("reading the generated certificate");
        let cert = reqwest::Certificate::from_pem(&pem).expect("the generated certificate is PEM");
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).add_root_certificate(cert)
    }

    /// The whole portal state, as `crmchat state export` prints it.
    pub fn export(&self) -> Value {
        export_dir(&self.data_dir)
    }

    /// The server's log (its standard error) so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Kills the server with SIGKILL and starts it again on the same data directory, without the fixture
    /// (`--fixture` upserts on every start and would undo the changes made since).
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("killing the server");
            child.wait().expect("reaping the server");
        }
        self.start_again();
    }

    /// Starts the server again after [`TestApp::kill`], on the same data directory, without the fixture.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let server = start_server(&self.data_dir, None, &self.log_path, &self.extra_env);
        self.http_base = server.http_base;
        self.https_base = server.https_base;
        self.cert_path = server.cert_path;
        self.printed = server.printed;
        self.child = Some(server.child);
    }

    /// Sends `signal` (`TERM`, `INT`) to the server and waits for it to exit, at most `limit`.
    pub fn signal_and_wait(&mut self, signal: &str, limit: std::time::Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIG{signal}");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit within {limit:?} of SIG{signal}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Stops the server with SIGKILL now (Drop does it too).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
        drop_data_dir_database(&self.data_dir);
        if std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0") {
            eprintln!("---- crmchat log ({}) ----\n{}", self.data_dir.display(), self.log());
        }
    }
}

// ---- assertions ----

fn assert_rest_headers(resp: &Resp, content_type: &str) {
    assert_eq!(resp.content_type(), Some(content_type), "Content-Type of {}", resp.text);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("access-control-allow-headers"), Some("origin, content-type, accept"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
}

/// The headers every JSON REST answer carries.
pub fn assert_json_headers(resp: &Resp) {
    assert_rest_headers(resp, JSON_UTF8);
}

pub fn assert_xml_headers(resp: &Resp) {
    assert_rest_headers(resp, "text/xml; charset=utf-8");
}

/// The error envelope, exactly: `{"error", "error_description"}` and nothing else (no `time`).
pub fn assert_error(resp: &Resp, status: u16, code: &str, description: &str) {
    let expected = serde_json::json!({"error": code, "error_description": description});
    assert_error_body(resp, status, &expected);
}

/// `ERROR_ARGUMENT` for `argument`, with the invalid-type text, exactly (key order included).
pub fn assert_invalid_argument(resp: &Resp, argument: &str) {
    let text = format!(
        r#"{{"error":"ERROR_ARGUMENT","error_description":"The value of an argument '{argument}' has an invalid type","argument":"{argument}"}}"#
    );
    assert_error_body(resp, 400, &serde_json::from_str(&text).unwrap());
    assert_eq!(resp.text, text, "exact body");
}

pub fn assert_error_body(resp: &Resp, status: u16, expected: &Value) {
    assert_eq!((resp.status, &resp.body), (status, expected), "answer: {} {}", resp.status, resp.text);
    assert!(resp.body.get("time").is_none(), "an error carries no `time`: {}", resp.text);
    assert_json_headers(resp);
}

/// A success: 200, exactly `{"result": result, "time": {...}}`, a full `time` block.
pub fn assert_success(resp: &Resp, result: Value) {
    assert_eq!((resp.status, resp.body.get("result")), (200, Some(&result)), "answer: {}", resp.text);
    let keys: Vec<&str> = resp.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["result", "time"], "{}", resp.text);
    assert_time(&resp.body["time"]);
    assert_json_headers(resp);
}

/// Success of `user.delete`: the chat id as a JSON integer.
pub fn assert_removed(resp: &Resp, chat_id: i64) {
    assert_success(resp, Value::from(chat_id));
    assert!(resp.body["result"].is_i64(), "the chat id is a JSON integer: {}", resp.text);
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$`, like PHP's `date('c')`.
pub fn is_php_date(s: &str) -> bool {
    let pattern = "dddd-dd-ddTdd:dd:dd+00:00";
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| if p == b'd' { c.is_ascii_digit() } else { c == p })
}

/// The `time` block of a success (protocol.md, Success envelope).
pub fn assert_time(time: &Value) {
    let t = time.as_object().unwrap_or_else(|| panic!("`time` is an object: {time}"));
    for key in ["start", "finish", "duration", "processing", "operating"] {
        assert!(t.get(key).is_some_and(Value::is_number), "time.{key} is a number: {time}");
    }
    let f = |key: &str| t[key].as_f64().unwrap();
    let (start, finish) = (f("start"), f("finish"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((start - now).abs() < 120.0, "time.start is the current unix time: {time}");
    assert!(start <= finish, "start <= finish: {time}");
    assert!((f("duration") - (finish - start)).abs() < 1e-3, "duration = finish - start: {time}");
    assert!(f("processing") >= 0.0 && f("processing") <= f("duration") + 1e-3, "processing within duration: {time}");
    assert!(f("operating") >= 0.0, "operating: {time}");
    for (key, instant) in [("date_start", start), ("date_finish", finish)] {
        let text = t.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("time.{key} is a string: {time}"));
        assert!(is_php_date(text), "time.{key} looks like PHP's date('c'): {text}");
        let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp();
        assert!((parsed - instant.floor() as i64).abs() <= 1, "time.{key} is the same instant as the number: {time}");
    }
    let reset = t.get("operating_reset_at").unwrap_or_else(|| panic!("time.operating_reset_at: {time}"));
    assert!(reset.is_i64(), "time.operating_reset_at is an integer: {time}");
}

/// The chat `id` of an export.
pub fn chat(export: &Value, id: i64) -> &Value {
    export["chats"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("chat {id} exported"))
}

pub fn members(export: &Value, chat_id: i64) -> Vec<i64> {
    chat(export, chat_id)["members"].as_array().unwrap().iter().map(|m| m.as_i64().unwrap()).collect()
}

pub fn author(export: &Value, chat_id: i64) -> Option<i64> {
    chat(export, chat_id)["author"].as_i64()
}

// ---- added for the CRM chat family and batch tests ----

/// `ERROR_ARGUMENT` for `argument`, with the null-or-empty text, exactly (key order included).
pub fn assert_null_argument(resp: &Resp, argument: &str) {
    let text = format!(
        r#"{{"error":"ERROR_ARGUMENT","error_description":"Argument '{argument}' is null or empty","argument":"{argument}"}}"#
    );
    assert_error_body(resp, 400, &serde_json::from_str(&text).unwrap());
    assert_eq!(resp.text, text, "exact body");
}

/// Adds a webhook for `user` with exactly `scopes` and returns its prefix.
pub fn add_webhook_with_scopes(fixture: &mut Value, user: i64, code: &str, scopes: &[&str]) -> String {
    let webhook = serde_json::json!({"user": user, "code": code, "scopes": scopes});
    fixture["webhooks"].as_array_mut().unwrap().push(webhook);
    hook(user, code)
}

/// The vendor's error `(code, description)` with `status`, exactly (see [`assert_error`]).
pub fn expect(resp: &Resp, status: u16, (code, description): (&str, &str)) {
    assert_error(resp, status, code, description);
}

/// `params` with `key` set to `value` (`Value::Null` for "absent" is spelled with [`without`]).
pub fn with(mut params: Value, key: &str, value: Value) -> Value {
    params[key] = value;
    params
}

/// `params` without `key`.
pub fn without(mut params: Value, key: &str) -> Value {
    params.as_object_mut().unwrap().remove(key);
    params
}

// ---- added for the OAuth, credentials, limits and hostile-input tests ----

/// Like [`spawn_app_with`], with extra `serve` flags (`--access-token-ttl 1`). A later `restart()` starts the
/// server without them.
pub async fn spawn_app_with_args(fixture: Value, args: &[&str]) -> TestApp {
    let dir = tempfile::Builder::new().prefix("crmchat-test-").tempdir().expect("creating a temp dir");
    let data_dir = dir.path().to_path_buf();
    let fixture_path = data_dir.join("fixture.json");
    std::fs::write(&fixture_path, serde_json::to_vec_pretty(&fixture).unwrap()).expect("writing the fixture");
    let log_path = data_dir.join("server.log");
    let mut cmd = crmchat_command();
    cmd.args(["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"]).args(storage_args(&data_dir));
    cmd.arg("--fixture").arg(&fixture_path).args(args);
    let server = run_until_ready(cmd, &log_path);
    TestApp::from_server(server, data_dir, log_path, Vec::new(), dir)
}

/// `crmchat serve` on a new, empty data directory with `args` only (no state file), as a user starts it:
/// `spawn_app_flags(&["--demo", "--plan", "unlimited"])`.
pub async fn spawn_app_flags(args: &[&str]) -> TestApp {
    let dir = tempfile::Builder::new().prefix("crmchat-test-").tempdir().expect("creating a temp dir");
    let data_dir = dir.path().to_path_buf();
    let log_path = data_dir.join("server.log");
    let mut cmd = crmchat_command();
    cmd.args(["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0"]).args(storage_args(&data_dir)).args(args);
    let server = run_until_ready(cmd, &log_path);
    TestApp::from_server(server, data_dir, log_path, Vec::new(), dir)
}

/// A finished CLI run: its exit status and both outputs as text.
#[derive(Debug)]
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl TestApp {
    /// Runs `crmchat ARGS --data-dir DIR` against this server's database (while it runs).
    pub fn cli(&self, args: &[&str]) -> CliRun {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(storage_args(&self.data_dir));
        let out = run_cli(&all);
        CliRun {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Like [`TestApp::cli`], asserting success; returns standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let run = self.cli(args);
        assert!(run.ok, "crmchat {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
        run.stdout
    }

    /// `host:port` of the plain HTTP listener.
    pub fn http_addr(&self) -> String {
        self.http_base.trim_start_matches("http://").trim_end_matches('/').to_string()
    }

    /// `GET /healthz` answers 200 within five seconds: the server is alive.
    pub async fn assert_healthy(&self) {
        let request = self.client.get(self.url("/healthz")).timeout(Duration::from_secs(5));
        let resp = request.send().await.expect("the server still answers /healthz");
        assert_eq!(resp.status().as_u16(), 200, "/healthz");
    }
}

/// No answer ever shows the server's internals.
pub fn assert_no_internals(text: &str) {
    let lower = text.to_ascii_lowercase();
    for needle in ["sqlx", "sqlite", "panicked", "stack backtrace", "rust_backtrace", "src/"] {
        assert!(!lower.contains(needle), "the answer shows internals ({needle}): {text}");
    }
}

/// The error envelope with any code and text: exactly `{"error", "error_description"}` (plus `argument`),
/// JSON headers, no `time`, no internals.
pub fn assert_envelope(resp: &Resp, status: u16) {
    assert_eq!(resp.status, status, "answer: {}", resp.text);
    let body = resp.body.as_object().unwrap_or_else(|| panic!("a JSON object: {}", resp.text));
    assert!(body.get("error").is_some_and(Value::is_string), "error code: {}", resp.text);
    assert!(
        body.get("error_description").and_then(Value::as_str).is_some_and(|d| !d.is_empty()),
        "error_description: {}",
        resp.text
    );
    assert!(body.keys().all(|k| ["error", "error_description", "argument"].contains(&k.as_str())), "{}", resp.text);
    assert_json_headers(resp);
    assert_no_internals(&resp.text);
}

/// What a raw TCP exchange produced.
#[derive(Debug)]
pub struct RawAnswer {
    pub bytes: Vec<u8>,
    /// The server closed (or reset) the connection before `wait` ran out.
    pub closed: bool,
    pub elapsed: Duration,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of the first response, if one came.
    pub fn status(&self) -> Option<u16> {
        let text = self.text();
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    /// The body of the first response, parsed as JSON (`Null` when it is not).
    pub fn json_body(&self) -> Value {
        let text = self.text();
        text.split_once("\r\n\r\n").and_then(|(_, body)| serde_json::from_str(body).ok()).unwrap_or(Value::Null)
    }
}

/// Opens a TCP connection to `addr`, writes `chunks` (sleeping `pause` between them), then reads until the
/// server closes the connection or `wait` (counted from the connect) runs out.
pub async fn raw_exchange(addr: &str, chunks: &[&[u8]], pause: Duration, wait: Duration) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connecting");
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        if tokio::time::Instant::now() >= deadline || stream.write_all(chunk).await.is_err() {
            break; // out of time, or the server closed already: read what it said
        }
    }
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    RawAnswer { bytes, closed, elapsed: start.elapsed() }
}

/// An OAuth application registered with `crmchat app add`, with what that command printed once.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub secret: String,
    pub application_token: String,
}

/// The value of `name: value` in a CLI output.
pub fn printed_field(stdout: &str, name: &str) -> String {
    let prefix = format!("{name}: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{name}:` line in:\n{stdout}"))
        .trim()
        .to_string()
}

/// `application/x-www-form-urlencoded` text of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

impl TestApp {
    /// `crmchat app add --client-id ID --scope SCOPES`.
    pub fn add_oauth_app(&self, client_id: &str, scopes: &str) -> OAuthClient {
        let out = self.cli_ok(&["app", "add", "--client-id", client_id, "--scope", scopes]);
        assert_eq!(printed_field(&out, "client_id"), client_id);
        OAuthClient {
            client_id: client_id.to_string(),
            secret: printed_field(&out, "client_secret"),
            application_token: printed_field(&out, "application_token"),
        }
    }

    /// `crmchat app code --client-id ID --user USER`: a one-time authorization code.
    pub fn auth_code(&self, client_id: &str, user: i64) -> String {
        let out = self.cli_ok(&["app", "code", "--client-id", client_id, "--user", &user.to_string()]);
        out.trim().to_string()
    }

    /// POSTs `pairs` as a form to `/oauth/token/`.
    pub async fn token_request(&self, pairs: &[(&str, &str)]) -> Resp {
        self.post_form("/oauth/token/", &form(pairs)).await
    }

    /// The authorization-code grant for a fresh code of `user`; asserts success and returns the token JSON.
    pub async fn issue_tokens(&self, client: &OAuthClient, user: i64) -> Value {
        let code = self.auth_code(&client.client_id, user);
        let resp = self
            .token_request(&[
                ("grant_type", "authorization_code"),
                ("client_id", &client.client_id),
                ("client_secret", &client.secret),
                ("code", &code),
            ])
            .await;
        assert_eq!(resp.status, 200, "token endpoint: {}", resp.text);
        resp.body
    }

    /// POSTs `params` as JSON to `/rest/{method}` with `Authorization: Bearer TOKEN`.
    pub async fn call_bearer(&self, token: &str, method: &str, params: Value) -> Resp {
        let request = self.client.post(self.url(&format!("/rest/{method}"))).bearer_auth(token).json(&params);
        self.send(request).await
    }
}

// ---- added for the two-instance tests ----

/// `serve` settings from the environment that the harness must keep away from the servers it starts as well.
const SCRUBBED_SERVE_ENV: &[&str] = &["CRMCHAT_REDIS", "CRMCHAT_TRUST_FORWARDED_FOR", "CRMCHAT_ACCESS_TOKEN_TTL"];

/// Starts one more `crmchat serve` on a data directory and database that may already be in use by another
/// server: `--data-dir data_dir`, `--database url` when `database` is given (stated explicitly:
/// `CRMCHAT_TEST_DATABASE` is not consulted, so that several processes can share one database), `--fixture`
/// only when `fixture` is given, then `args`. Logs at `info` (so every REST call is in its log).
///
/// The returned app's `data_dir` is `data_dir`; its log (and fixture file) live in a directory of its own.
/// Its `export()`, `cli()` and `restart()` go by `CRMCHAT_TEST_DATABASE` and do not apply: use
/// [`export_database`]. Dropping it kills the process; the data directory and the database stay the caller's.
pub async fn spawn_instance(
    data_dir: &Path,
    database: Option<&str>,
    fixture: Option<&Value>,
    args: &[&str],
) -> TestApp {
    let dir = tempfile::Builder::new().prefix("crmchat-instance-").tempdir().expect("creating a temp dir");
    let log_path = dir.path().join("server.log");
    let mut cmd = crmchat_command();
    for key in SCRUBBED_SERVE_ENV {
        cmd.env_remove(key);
    }
    let extra_env = vec![("CRMCHAT_LOG".to_string(), "info,crmchat=debug,sqlx=warn".to_string())];
    cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
    cmd.args(["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
    if let Some(database) = database {
        cmd.arg("--database").arg(database);
    }
    if let Some(fixture) = fixture {
        let path = dir.path().join("fixture.json");
        std::fs::write(&path, serde_json::to_vec_pretty(fixture).unwrap()).expect("writing the fixture");
        cmd.arg("--fixture").arg(path);
    }
    cmd.args(args);
    let server = run_until_ready(cmd, &log_path);
    TestApp::from_server(server, data_dir.to_path_buf(), log_path, extra_env, dir)
}

/// `crmchat state export --data-dir DIR [--database URL]`, parsed (the storage stated explicitly, as for
/// [`spawn_instance`]).
pub fn export_database(data_dir: &Path, database: Option<&str>) -> Value {
    let mut args = vec!["state".to_string(), "export".to_string(), "--data-dir".to_string()];
    args.push(data_dir.display().to_string());
    if let Some(database) = database {
        args.push("--database".into());
        args.push(database.into());
    }
    let out = run_cli(&args);
    assert!(out.status.success(), "state export failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("state export printed something else than JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

// ---- database stalls ----

/// The database URL a server on `data_dir` uses.
pub fn database_url(data_dir: &Path) -> String {
    let args = storage_args(data_dir);
    match args.iter().position(|a| a == "--database") {
        Some(i) => args[i + 1].clone(),
        None => format!("sqlite://{}/crmchat.db", data_dir.display()),
    }
}

/// Another connection holding the write lock of the database, as a stuck job or an administrator would:
/// SQLite's `BEGIN IMMEDIATE`, PostgreSQL's `LOCK TABLE chats` (every change locks a chat row first).
pub enum DbStall {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl DbStall {
    pub async fn hold(data_dir: &Path) -> Self {
        use sqlx::{Connection, Executor};
        let url = database_url(data_dir);
        if is_postgres(&url) {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connecting to PostgreSQL");
            conn.execute("BEGIN").await.unwrap();
            conn.execute("LOCK TABLE chats IN ACCESS EXCLUSIVE MODE").await.unwrap();
            DbStall::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("opening the SQLite database");
            conn.execute("BEGIN IMMEDIATE").await.unwrap();
            DbStall::Sqlite(conn)
        }
    }

    pub async fn release(self) {
        use sqlx::{Connection, Executor};
        match self {
            DbStall::Sqlite(mut conn) => {
                conn.execute("COMMIT").await.unwrap();
                conn.close().await.unwrap();
            }
            DbStall::Postgres(mut conn) => {
                conn.execute("COMMIT").await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// How many rows `table` of the database of a server on `data_dir` holds, read as another client would.
pub async fn count_rows(data_dir: &Path, table: &str) -> i64 {
    use sqlx::Connection;
    let url = database_url(data_dir);
    let sql = format!("SELECT COUNT(*) FROM {table}");
    if is_postgres(&url) {
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connecting to PostgreSQL");
        sqlx::query_scalar(&sql).fetch_one(&mut conn).await.expect(&sql)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("opening the SQLite database");
        sqlx::query_scalar(&sql).fetch_one(&mut conn).await.expect(&sql)
    }
}

// ---- in-process: the router driven without a server process ----

/// A store holding the demo portal, in a SQLite database of a new temporary directory named `prefix…`.
pub async fn demo_store(prefix: &str) -> (TempDir, crmchat::store::DynStore) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let store = crmchat::store::open(&format!("sqlite://{}/crmchat.db", dir.path().display())).await.unwrap();
    store.load_state(crmchat::state::demo::demo_state(), true, 0).await.expect("loading the demo portal");
    (dir, store)
}

/// One request through `router`: the answer's status and JSON body.
pub async fn send_in_process(router: &axum::Router, request: axum::http::Request<axum::body::Body>) -> (u16, Value) {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("a JSON answer ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

/// Stores the authorization code `code` of the demo application for user 1, valid until `expires_ms`, and returns
/// the request that trades it for a token at the real token endpoint.
pub async fn demo_code_grant(
    store: &crmchat::store::DynStore,
    code: &str,
    expires_ms: i64,
) -> axum::http::Request<axum::body::Body> {
    let grant = crmchat::store::AuthCode { client_id: "local.demo.app".into(), user_id: 1, expires_ms };
    store.add_auth_code(&crmchat::secrets::sha256_hex(code), &grant).await.unwrap();
    let body = format!("grant_type=authorization_code&client_id=local.demo.app&client_secret=demo-secret&code={code}");
    axum::http::Request::post("/oauth/token/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body))
        .unwrap()
}
