//! The request journal: the last `--journal-size` REST calls (default 10,000; 0 = off) in a ring in memory,
//! for tests to see what the code under test sent (`GET /_crmchat/requests`).
//!
//! Every call is recorded, refused ones included, and the commands of a `batch` each get an entry of their own
//! pointing at the batch's. Secrets never reach it: the parameters are redacted before they are stored, and
//! each entry's parameters and result are cut at [`CUT_BYTES`], so the ring's memory is bounded.
//!
//! Ids are handed out when an entry is stored, under the ring's lock, so they grow in the order entries become
//! visible: a client polling with `since_id` never misses one.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// Default number of entries kept.
pub const DEFAULT_SIZE: usize = 10_000;
/// A result (and parameters) whose JSON text is longer than this is stored as its first `CUT_BYTES` bytes.
pub const CUT_BYTES: usize = 4096;
/// What a secret is replaced with.
pub const REDACTED: &str = "***";
/// At most this many entries are answered at once.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// How the call was authenticated (or tried to be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Webhook,
    OAuth,
    None,
}

impl AuthType {
    fn as_str(self) -> &'static str {
        match self {
            AuthType::Webhook => "webhook",
            AuthType::OAuth => "oauth",
            AuthType::None => "none",
        }
    }
}

/// The `auth` of an entry. `user_id` is the authenticated user, or for a refused webhook the user its path
/// named; `webhook_id` and `client_id` are known only once the credentials were accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    pub kind: AuthType,
    pub user_id: Option<i64>,
    pub webhook_id: Option<i64>,
    pub client_id: Option<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Self { kind: AuthType::None, user_id: None, webhook_id: None, client_id: None }
    }
}

/// One call, as the protocol layer reports it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Portal-clock time the call began, ms since the epoch.
    pub at_ms: i64,
    pub method: String,
    /// `json` or `xml`.
    pub transport: &'static str,
    pub http_method: axum::http::Method,
    pub auth: Auth,
    /// Already redacted ([`redact`]).
    pub params: Value,
    /// `None` when the connection was closed without an answer.
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub result: Option<Value>,
    pub duration_ms: f64,
    /// The fault rule that answered instead of the method.
    pub fault: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    call: Call,
    batch_id: Option<u64>,
}

impl Entry {
    fn to_json(&self) -> Value {
        let call = &self.call;
        let mut auth = Map::new();
        auth.insert("type".into(), json!(call.auth.kind.as_str()));
        auth.insert("user_id".into(), json!(call.auth.user_id));
        match call.auth.kind {
            AuthType::Webhook => {
                auth.insert("webhook_id".into(), json!(call.auth.webhook_id));
            }
            AuthType::OAuth => {
                auth.insert("client_id".into(), json!(call.auth.client_id));
            }
            AuthType::None => {}
        }
        let mut entry = json!({
            "id": self.id,
            "at": rfc3339_ms(call.at_ms),
            "method": call.method,
            "transport": call.transport,
            "http_method": call.http_method.as_str(),
            "auth": auth,
            "params": call.params,
            "status": call.status,
            "error": call.error,
            "result": call.result,
            "duration_ms": call.duration_ms,
            "batch_id": self.batch_id,
        });
        if let Some(fault) = call.fault {
            entry["fault"] = json!(fault);
        }
        entry
    }
}

/// A time as the control API shows it: RFC 3339, UTC, with milliseconds.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What `GET /_crmchat/requests` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub method: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub user_id: Option<i64>,
    pub since_id: Option<u64>,
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        let call = &entry.call;
        self.method.as_ref().is_none_or(|m| m.eq_ignore_ascii_case(&call.method))
            && self.status.is_none_or(|s| call.status == Some(s))
            && self.error.as_ref().is_none_or(|e| call.error == Some(e.as_str()))
            && self.user_id.is_none_or(|u| call.auth.user_id == Some(u))
            && self.since_id.is_none_or(|s| entry.id > s)
    }
}

#[derive(Default)]
struct Ring {
    last_id: u64,
    entries: VecDeque<Entry>,
}

pub struct Journal {
    capacity: usize,
    ring: Mutex<Ring>,
    /// The id of the newest entry, for watchers (the inspector's live Requests page) to wake on.
    newest: tokio::sync::watch::Sender<u64>,
}

/// Where a page of the journal starts, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest entries.
    Newest,
    /// The newest entries older than this id.
    Before(u64),
    /// The oldest entries newer than this id.
    After(u64),
}

/// A page of the entries that match a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// How many entries match in all.
    pub total: usize,
    /// The page, newest first, shaped as `GET /_crmchat/requests` answers them.
    pub entries: Vec<Value>,
    /// The cursor of the next older page (`Cursor::Before`), if there is one.
    pub older: Option<u64>,
    /// The cursor of the next newer page (`Cursor::After`), if there is one.
    pub newer: Option<u64>,
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, ring: Mutex::new(Ring::default()), newest: tokio::sync::watch::channel(0).0 }
    }

    /// Off with `--journal-size 0`: the protocol layer then prepares nothing for it.
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Store a call.
    pub fn record(&self, call: Call) {
        self.record_batch(call, Vec::new());
    }

    /// Store a call and the commands it ran (a `batch`): the batch first, its commands after it, each
    /// pointing at the batch's id.
    pub fn record_batch(&self, call: Call, commands: Vec<Call>) {
        if !self.is_enabled() {
            return;
        }
        let mut ring = self.lock();
        ring.last_id += 1;
        let batch_id = ring.last_id;
        let evicted = ring.push(Entry { id: batch_id, call, batch_id: None }, self.capacity);
        for command in commands {
            ring.last_id += 1;
            let id = ring.last_id;
            ring.push(Entry { id, call: command, batch_id: Some(batch_id) }, self.capacity);
        }
        let newest = ring.last_id;
        drop(ring);
        // Freed outside the lock, which other calls wait on.
        drop(evicted);
        // Nobody watching (nearly always): no write to the channel on the REST path. A watcher that subscribes
        // later reads the journal itself before it waits.
        if self.newest.receiver_count() > 0 {
            self.newest.send_replace(newest);
        }
    }

    /// Changes whenever an entry is stored (its value: the newest id).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// A page of at most `limit` entries matching `filter` (its `since_id` and `limit` aside), newest first.
    pub fn window(&self, filter: &Filter, cursor: Cursor, limit: usize) -> Window {
        let filter = Filter { since_id: None, ..filter.clone() };
        let ring = self.lock();
        let matching: Vec<&Entry> = ring.entries.iter().filter(|e| filter.matches(e)).collect();
        let (start, end) = match cursor {
            Cursor::Newest => (matching.len().saturating_sub(limit), matching.len()),
            Cursor::Before(id) => {
                let end = matching.partition_point(|e| e.id < id);
                (end.saturating_sub(limit), end)
            }
            Cursor::After(id) => {
                let start = matching.partition_point(|e| e.id <= id);
                (start, (start + limit).min(matching.len()))
            }
        };
        let page = &matching[start..end];
        Window {
            total: matching.len(),
            entries: page.iter().rev().map(|e| e.to_json()).collect(),
            older: (start > 0).then(|| page.first().map(|e| e.id)).flatten(),
            newer: (end < matching.len()).then(|| page.last().map(|e| e.id)).flatten(),
        }
    }

    /// The entries newer than `after_id` that match `filter` (at most the newest `limit` of them, oldest
    /// first), and the newest id of the journal (to continue from). Looks only at the entries after `after_id`,
    /// so a watcher costs little however long the journal is.
    pub fn after(&self, filter: &Filter, after_id: u64, limit: usize) -> (Vec<Value>, u64) {
        let ring = self.lock();
        let start = ring.entries.partition_point(|e| e.id <= after_id);
        let newer: Vec<&Entry> = ring.entries.range(start..).filter(|e| filter.matches(e)).collect();
        let shown = &newer[newer.len().saturating_sub(limit)..];
        (shown.iter().map(|e| e.to_json()).collect(), ring.last_id)
    }

    /// How many entries match `filter` (its `since_id` and `limit` aside).
    pub fn count(&self, filter: &Filter) -> usize {
        let filter = Filter { since_id: None, ..filter.clone() };
        self.lock().entries.iter().filter(|e| filter.matches(e)).count()
    }

    /// The id of the newest entry ever stored (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    /// `{"total", "requests"}`: how many entries match, and up to `limit` of them, oldest first. With
    /// `since_id` they are the first ones after it (so polling continues where it stopped); without it the
    /// newest ones.
    pub fn query(&self, filter: &Filter) -> Value {
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let ring = self.lock();
        let matching: Vec<&Entry> = ring.entries.iter().filter(|e| filter.matches(e)).collect();
        let chosen = if filter.since_id.is_some() {
            &matching[..limit.min(matching.len())]
        } else {
            &matching[matching.len().saturating_sub(limit)..]
        };
        let requests: Vec<Value> = chosen.iter().map(|e| e.to_json()).collect();
        json!({"total": matching.len(), "requests": requests})
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every entry (ids keep growing, so a poller's `since_id` stays valid).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ring {
    /// Store `entry`, and hand back the oldest one when the ring was full.
    fn push(&mut self, entry: Entry, capacity: usize) -> Option<Entry> {
        let evicted = if self.entries.len() >= capacity { self.entries.pop_front() } else { None };
        self.entries.push_back(entry);
        evicted
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Redaction and cutting

/// Parameter names whose values are secrets wherever they occur: `auth` and anything naming a token, a secret
/// or a password (`access_token`, `refresh_token`, `application_token`, `client_secret` …).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "auth" || key.contains("token") || key.contains("secret") || key.contains("password")
}

/// Replace secrets in `value`: the values of secret keys ([`is_secret_key`]) at any depth, the values of
/// secret keys inside query strings (a batch's `cmd` entries: `profile?auth=…`), and any occurrence of one of
/// `secrets` (the call's webhook code and token) in any text.
pub fn redact(value: &mut Value, secrets: &[&str]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key) {
                    *v = json!(REDACTED);
                } else {
                    redact(v, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        Value::String(text) => {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                if text.contains(secret) {
                    *text = text.replace(secret, REDACTED);
                }
            }
            if text.contains('=')
                && let Some(redacted) = redact_query(text)
            {
                *text = redacted;
            }
        }
        _ => {}
    }
}

/// `text` with the values of secret keys in its query string (after `?`, or all of it) replaced; `None` when
/// there was nothing to replace.
fn redact_query(text: &str) -> Option<String> {
    let (prefix, query) = match text.split_once('?') {
        Some((path, query)) => (Some(path), query),
        None => (None, text),
    };
    let mut changed = false;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(query_key(key).as_ref()) => {
                changed = true;
                format!("{key}={REDACTED}")
            }
            _ => pair.to_string(),
        })
        .collect();
    if !changed {
        return None;
    }
    let query = pairs.join("&");
    Some(match prefix {
        Some(path) => format!("{path}?{query}"),
        None => query,
    })
}

/// The top-level name of a query key (`auth%5Baccess_token%5D` → `auth`).
fn query_key(key: &str) -> std::borrow::Cow<'_, str> {
    let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
    match decoded.find('[') {
        Some(i) => std::borrow::Cow::Owned(decoded[..i].to_string()),
        None => decoded,
    }
}

/// `value`, or when its JSON text is longer than [`CUT_BYTES`], the first `CUT_BYTES` bytes of that text.
pub fn cut(value: Value) -> Value {
    if json_size_within(&value, CUT_BYTES) { value } else { first_bytes(&value) }
}

/// [`cut`] of a value the caller keeps: copied only when it is small.
pub fn cut_copy(value: &Value) -> Value {
    if json_size_within(value, CUT_BYTES) { value.clone() } else { first_bytes(value) }
}

/// The first [`CUT_BYTES`] bytes of the JSON text of `value`, as a string (never a broken UTF-8 sequence).
fn first_bytes(value: &Value) -> Value {
    // Written only up to the cut: the whole text of a 1 MiB parameter would be made for 4 KiB of it, and a
    // truncated String keeps its capacity, so each entry held the whole size for as long as it was kept.
    let mut text = FirstBytes(Vec::with_capacity(CUT_BYTES));
    let _ = serde_json::to_writer(&mut text, value);
    let mut text = text.0;
    while std::str::from_utf8(&text).is_err() {
        text.pop();
    }
    Value::String(String::from_utf8(text).unwrap_or_default())
}

/// Keeps the first [`CUT_BYTES`] bytes written to it, then fails, which stops the writing.
struct FirstBytes(Vec<u8>);

impl std::io::Write for FirstBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = CUT_BYTES - self.0.len();
        if room == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let taken = buf.len().min(room);
        self.0.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Is the JSON text of `value` at most `budget` bytes? Walks the value and stops as soon as the budget is spent,
/// so a small answer (nearly all of them) is never serialised for this.
fn json_size_within(value: &Value, budget: usize) -> bool {
    fn walk(value: &Value, left: &mut isize) -> bool {
        let cost = match value {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 24,
            Value::String(s) => escaped_len(s) as isize,
            Value::Array(items) => {
                *left -= 2 + items.len() as isize;
                return *left >= 0 && items.iter().all(|v| walk(v, left));
            }
            Value::Object(map) => {
                *left -= 2 + map.len() as isize;
                return *left >= 0
                    && map.iter().all(|(k, v)| {
                        *left -= k.len() as isize + 3;
                        *left >= 0 && walk(v, left)
                    });
            }
        };
        *left -= cost;
        *left >= 0
    }
    let mut left = budget as isize;
    walk(value, &mut left)
}

/// An upper bound of the length of `s` as a JSON string, quotes included.
fn escaped_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| {
            if b == b'"' || b == b'\\' {
                2
            } else if b < 0x20 {
                6
            } else {
                1
            }
        })
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, status: u16, user: Option<i64>) -> Call {
        Call {
            at_ms: 1_796_000_000_123,
            method: method.into(),
            transport: "json",
            http_method: axum::http::Method::POST,
            auth: Auth { kind: AuthType::Webhook, user_id: user, webhook_id: Some(1), client_id: None },
            params: json!({}),
            status: Some(status),
            error: (status != 200).then_some("ERROR_METHOD_NOT_FOUND"),
            result: None,
            duration_ms: 0.5,
            fault: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_ids_keep_growing() {
        let journal = Journal::new(3);
        for i in 0..5 {
            journal.record(call(&format!("m{i}"), 200, Some(1)));
        }
        assert_eq!(journal.len(), 3);
        let answer = journal.query(&Filter::default());
        let ids: Vec<u64> = answer["requests"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [3, 4, 5]);
        journal.clear();
        journal.record(call("m", 200, Some(1)));
        assert_eq!(journal.query(&Filter::default())["requests"][0]["id"], 6);
        let off = Journal::new(0);
        off.record(call("m", 200, None));
        assert!(off.is_empty());
    }

    #[test]
    fn filters_and_polling() {
        let journal = Journal::new(100);
        journal.record(call("server.time", 200, Some(1)));
        journal.record(call("nope", 404, None));
        journal.record_batch(call("batch", 200, Some(12)), vec![call("profile", 200, Some(12))]);
        let q = |f: Filter| journal.query(&f);
        assert_eq!(q(Filter { status: Some(404), ..Default::default() })["total"], 1);
        assert_eq!(q(Filter { user_id: Some(12), ..Default::default() })["total"], 2);
        assert_eq!(q(Filter { method: Some("SERVER.TIME".into()), ..Default::default() })["total"], 1);
        assert_eq!(q(Filter { error: Some("ERROR_METHOD_NOT_FOUND".into()), ..Default::default() })["total"], 1);
        let polled = q(Filter { since_id: Some(2), limit: Some(1), ..Default::default() });
        assert_eq!((polled["total"].as_u64(), polled["requests"][0]["id"].as_u64()), (Some(2), Some(3)));
        let all = q(Filter::default());
        assert_eq!(all["requests"][3]["batch_id"], 3, "{all}");
        assert_eq!(all["requests"][2]["batch_id"], Value::Null);
        assert_eq!(all["requests"][0]["at"], "2026-11-30T00:53:20.123Z");
        let newest = q(Filter { limit: Some(2), ..Default::default() });
        assert_eq!(newest["requests"][0]["id"], 3);
    }

    #[test]
    fn windows_page_through_the_matching_entries_newest_first() {
        let journal = Journal::new(100);
        for i in 1..=25 {
            journal.record(call(
                if i % 5 == 0 { "nope" } else { "server.time" },
                if i % 5 == 0 { 404 } else { 200 },
                Some(1),
            ));
        }
        let ids = |w: &Window| w.entries.iter().map(|e| e["id"].as_u64().unwrap()).collect::<Vec<_>>();
        let all = Filter::default();
        let newest = journal.window(&all, Cursor::Newest, 10);
        assert_eq!((newest.total, ids(&newest)), (25, (16..=25).rev().collect::<Vec<_>>()));
        assert_eq!((newest.older, newest.newer), (Some(16), None));
        let older = journal.window(&all, Cursor::Before(16), 10);
        assert_eq!(ids(&older), (6..=15).rev().collect::<Vec<_>>());
        let oldest = journal.window(&all, Cursor::Before(6), 10);
        assert_eq!((ids(&oldest), oldest.older, oldest.newer), (vec![5, 4, 3, 2, 1], None, Some(5)));
        let back = journal.window(&all, Cursor::After(5), 10);
        assert_eq!((ids(&back), back.newer), ((6..=15).rev().collect::<Vec<_>>(), Some(15)));
        let failed = Filter { status: Some(404), ..Default::default() };
        let page = journal.window(&failed, Cursor::Newest, 2);
        assert_eq!((page.total, ids(&page), page.older), (5, vec![25, 20], Some(20)));
        assert_eq!(ids(&journal.window(&failed, Cursor::Before(20), 2)), vec![15, 10]);

        let (after, last) = journal.after(&failed, 12, 10);
        assert_eq!(after.iter().map(|e| e["id"].as_u64().unwrap()).collect::<Vec<_>>(), vec![15, 20, 25]);
        assert_eq!(last, 25);
        let (after, _) = journal.after(&all, 20, 2);
        assert_eq!(after.iter().map(|e| e["id"].as_u64().unwrap()).collect::<Vec<_>>(), vec![24, 25]);
        assert!(journal.after(&all, 25, 10).0.is_empty());
        assert_eq!((journal.count(&all), journal.count(&failed)), (25, 5));
    }

    #[tokio::test]
    async fn watchers_wake_when_an_entry_is_stored() {
        let journal = Journal::new(10);
        let mut newest = journal.subscribe();
        journal.record(call("server.time", 200, None));
        newest.changed().await.unwrap();
        assert_eq!(*newest.borrow_and_update(), 1);
        assert_eq!(journal.last_id(), 1);
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let mut params = json!({
            "auth": "tok123456",
            "ACCESS_TOKEN": "x",
            "nested": {"client_secret": "s", "list": [{"refresh_token": "r"}], "auth": {"access_token": "y"}},
            "cmd": {"a": "profile?auth=tok123456&ID=1", "b": "user.get?auth%5Baccess_token%5D=zzz&x=1"},
            "text": "see https://h/rest/1/hookcode99/ and tok123456",
            "USER_ID": 12,
        });
        redact(&mut params, &["hookcode99", "tok123456"]);
        let text = params.to_string();
        for secret in ["tok123456", "hookcode99", "zzz", "\"s\"", "\"r\"", "\"y\"", "\"x\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(params["cmd"]["a"], "profile?auth=***&ID=1");
        assert_eq!(params["cmd"]["b"], "user.get?auth%5Baccess_token%5D=***&x=1");
        assert_eq!(params["text"], "see https://h/rest/1/***/ and ***");
        assert_eq!(params["USER_ID"], 12);
        assert_eq!(params["auth"], REDACTED);
    }

    #[test]
    fn big_values_are_cut() {
        let small = json!({"a": [1, 2, 3], "b": "x".repeat(100)});
        assert_eq!(cut(small.clone()), small);
        assert_eq!(cut_copy(&small), small);
        let big = json!(vec!["é".repeat(100); 100]);
        assert_eq!(cut_copy(&big), cut(big.clone()));
        let Value::String(text) = cut(big.clone()) else { panic!("a cut value is text") };
        assert!(text.len() <= CUT_BYTES && text.len() > CUT_BYTES - 4 && text.starts_with("[\"é"));
        assert_eq!(text.as_bytes(), &serde_json::to_vec(&big).unwrap()[..text.len()], "the start of the text");
        assert!(text.capacity() <= CUT_BYTES, "no more kept than the cut ({})", text.capacity());
        // The estimate never lets a value through that is longer than the budget.
        for n in [0, 10, 100, 1000, 2000, 4000, 5000] {
            let v = json!({"k": "\"".repeat(n)});
            let within = json_size_within(&v, CUT_BYTES);
            assert!(!within || serde_json::to_string(&v).unwrap().len() <= CUT_BYTES, "{n}");
        }
    }
}
