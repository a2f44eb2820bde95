//! The fuzz harness: what each cargo-fuzz target does with one input. `tests/api/fuzz_corpus.rs` includes this
//! file and replays every file of `fuzz/corpus/<target>/` through the same functions, so the committed corpus is
//! checked by every `cargo test` (CI runs no open-ended fuzzing).
//!
//! Input formats (the seeds in `fuzz/corpus/` are readable examples):
//! * `params_parse_str`: the whole input (lossily as UTF-8) goes to `parse_str`; then the first byte picks a
//!   content type from [`CONTENT_TYPES`] (the digits `0`–`5` pick their own index), the rest up to the first
//!   newline is the query string (when it is UTF-8) and what follows the body of `parse_request`.
//! * `batch_command`: a leading `?` makes the rest a urlencoded `batch` request (`cmd[a]=server.time&halt=1`);
//!   otherwise a leading `!` sets `halt`, and each line is a command (`method?query`), named `key<TAB>command`
//!   when any line has a tab, else a list. The caller is user 1 with no scopes, so scoped methods are refused
//!   by their scope check (after their query was parsed and substituted) and nothing is ever written.

use std::path::Path;
use std::sync::Arc;

use crmchat::config::Settings;
use crmchat::domain::PortalSettings;
use crmchat::rest::auth::{AuthKind, Caller};
use crmchat::rest::limits::SystemClock;
use crmchat::rest::params::{self, Limits, Tree};
use crmchat::server_state::AppState;
use serde_json::{Map, Value};

/// The content types `params_parse_str` chooses from with its first byte.
pub const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("multipart/form-data; boundary=X"),
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
];

/// Most commands taken from one input: a few past `batch`'s 50.
pub const MAX_LINES: usize = 60;

pub fn params_parse_str(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(tree) = params::parse_str(&text) {
        check_round_trip(&tree);
    }
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(newline) => (&rest[..newline], &rest[newline + 1..]),
        None => (rest, &[][..]),
    };
    let query = std::str::from_utf8(query).ok();
    for limits in [Limits::default(), Limits { max_depth: 2, max_vars: 3 }] {
        if let Ok(tree) = futures::executor::block_on(params::parse_request(query, content_type, body, &limits)) {
            assert!(depth(&Value::Object(tree)) <= limits.max_depth + 2, "nesting past the limit");
        }
    }
}

/// `http_build_query` of a parsed form parses back to the same tree, key order included.
fn check_round_trip(tree: &Tree) {
    let query = params::build_query(tree);
    let again = params::parse_str(&query).unwrap_or_else(|e| panic!("{query:?} does not parse back: {e}"));
    assert_eq!(
        Value::Object(again).to_string(),
        Value::Object(tree.clone()).to_string(),
        "round trip through {query:?}"
    );
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(list) => 1 + list.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A store with the demo portal and a caller, for running `batch` in process.
pub struct BatchHarness {
    runtime: tokio::runtime::Runtime,
    app: Arc<AppState>,
    caller: Caller,
    portal: Arc<PortalSettings>,
}

impl BatchHarness {
    /// Opens (or creates) a SQLite store with the demo portal in `dir`.
    pub fn new(dir: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let (app, caller, portal) = runtime.block_on(async {
            std::fs::create_dir_all(dir).expect("creating the store directory");
            let store = crmchat::store::open(&format!("sqlite://{}/crmchat.db", dir.display()))
                .await
                .expect("opening the store");
            if !store.is_initialized().await.expect("reading the store") {
                store.load_state(crmchat::state::demo::demo_state(), true, 0).await.expect("loading the demo");
            }
            let portal = store.portal().await.expect("the portal");
            let user = store.user(1).await.expect("reading user 1").expect("user 1 exists");
            let caller = Caller {
                user,
                scopes: Vec::new().into(),
                kind: AuthKind::Webhook,
                credential_id: "webhook:fuzz".into(),
                client_id: None,
                auth_connector: String::new(),
                list_start: 0,
                event_depth: 0,
            };
            (Arc::new(AppState::new(store, Settings::default(), Arc::new(SystemClock))), caller, portal)
        });
        BatchHarness { runtime, app, caller, portal }
    }
}

/// `batch`'s parameters from the line format, with the number of commands and whether `halt` is set.
fn batch_params(text: &str) -> (Map<String, Value>, usize, bool) {
    let (halt, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let lines: Vec<&str> = body.split('\n').take(MAX_LINES).collect();
    let cmd = if lines.iter().any(|l| l.contains('\t')) {
        let mut map = Map::new();
        for (i, line) in lines.iter().enumerate() {
            let (key, command) = line.split_once('\t').map_or((format!("n{i}"), *line), |(k, c)| (k.to_string(), c));
            map.insert(key, Value::String(command.to_string()));
        }
        Value::Object(map)
    } else {
        Value::Array(lines.iter().map(|l| Value::String(l.to_string())).collect())
    };
    let count = match &cmd {
        Value::Object(map) => map.len(),
        Value::Array(list) => list.len(),
        _ => 0,
    };
    let mut params = Map::new();
    params.insert("cmd".into(), cmd);
    if halt {
        params.insert("halt".into(), Value::String("1".into()));
    }
    (params, count, halt)
}

fn len(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.len(),
        Value::Array(list) => list.len(),
        other => panic!("a batch map is an object or a list: {other}"),
    }
}

pub fn batch_command(harness: &BatchHarness, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (params, expected) = match text.strip_prefix('?') {
        Some(query) => match params::parse_str(query) {
            Ok(params) => (params, None),
            Err(_) => return,
        },
        None => {
            let (params, count, halt) = batch_params(&text);
            (params, Some((count, halt)))
        }
    };
    let h = harness;
    let output = h.runtime.block_on(crmchat::rest::batch::run(&h.app, &h.caller, &h.portal, &params, None, None));
    let result = &output.result;
    for key in ["result", "result_error", "result_total", "result_next", "result_time"] {
        assert!(result.get(key).is_some_and(|v| v.is_object() || v.is_array()), "{key} in {result}");
    }
    let answered = len(&result["result"]) + len(&result["result_error"]);
    assert_eq!(len(&result["result"]), len(&result["result_time"]), "a time for each result: {result}");
    if let Some((count, halt)) = expected {
        if halt {
            assert!(answered <= count && len(&result["result_error"]) <= 1, "{result}");
        } else {
            assert_eq!(answered, count, "every command answered once: {result}");
        }
    }
}
