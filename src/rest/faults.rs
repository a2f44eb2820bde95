//! Fault rules (`/_crmchat/faults`): make chosen calls fail on purpose, so a client's retry and error paths
//! can be tested. A rule answers with any code of the error catalogue exactly as crmchat sends it for real,
//! or just a status, or closes the connection without an answer, or only slows the real answer down.
//!
//! Rules are checked in id order and the first that matches wins; `times` counts down and removes the rule
//! at 0. With no rules, checking costs one atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, Code, Variant};

/// The pseudo error code that closes the connection instead of answering.
pub const CONNECTION_RESET: &str = "connection_reset";
/// Longest delay a rule may ask for.
pub const MAX_DELAY_MS: u64 = 120_000;
/// At most this many rules at once (each is a few hundred bytes).
pub const MAX_RULES: usize = 1000;

/// A rule as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub method: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub times: Option<u64>,
    #[serde(default = "always")]
    pub probability: f64,
    #[serde(default)]
    pub webhook_id: Option<i64>,
    #[serde(default)]
    pub client_id: Option<String>,
}

fn always() -> f64 {
    1.0
}

/// Why a rule was refused: `(error code, message)` of the control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused { code, message: message.into() }
}

/// What a rule does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Only the delay; the real answer follows.
    Real,
    /// A catalogued error, its status optionally replaced.
    Error(Code, Option<StatusCode>),
    Reset,
}

#[derive(Debug, Clone)]
struct Rule {
    id: u64,
    spec: RuleSpec,
    answer: Answer,
    /// Left before the rule is removed; `None` = forever.
    times_left: Option<u64>,
}

impl Rule {
    fn matches(&self, call: &Target<'_>) -> bool {
        let spec = &self.spec;
        (spec.method == "*" || spec.method == call.method)
            && spec.webhook_id.is_none_or(|id| call.webhook_id == Some(id))
            && spec.client_id.as_deref().is_none_or(|id| call.client_id == Some(id))
    }

    fn to_json(&self) -> Value {
        let spec = &self.spec;
        json!({
            "id": self.id,
            "method": spec.method,
            "error": spec.error,
            "http_status": spec.http_status,
            "delay_ms": spec.delay_ms,
            "times": self.times_left,
            "probability": spec.probability,
            "webhook_id": spec.webhook_id,
            "client_id": spec.client_id,
        })
    }
}

/// The call a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Lower-case.
    pub method: &'a str,
    pub webhook_id: Option<i64>,
    pub client_id: Option<&'a str>,
    /// For `insufficient_scope`, whose text names the kind of credential.
    pub oauth: bool,
}

/// A rule that fired: wait `delay`, then answer as it says.
#[derive(Debug)]
pub struct Fired {
    pub id: u64,
    pub delay: Duration,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    /// Run the call for real (after the delay).
    Real,
    /// Answer with this error; the method does not run.
    Error(ApiError),
    /// Close the connection without an answer.
    Reset,
}

#[derive(Default)]
struct Rules {
    last_id: u64,
    rules: Vec<Rule>,
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<Rules>,
    /// The number of rules, read without the lock on every call.
    count: AtomicUsize,
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a rule; its id.
    pub fn add(&self, mut spec: RuleSpec) -> Result<u64, Refused> {
        let answer = validate(&mut spec)?;
        let mut rules = self.lock();
        if rules.rules.len() >= MAX_RULES {
            return Err(refused("too_many_faults", format!("at most {MAX_RULES} fault rules")));
        }
        rules.last_id += 1;
        let id = rules.last_id;
        let times_left = spec.times;
        rules.rules.push(Rule { id, spec, answer, times_left });
        self.count.store(rules.rules.len(), Ordering::Relaxed);
        Ok(id)
    }

    /// The rules in id order (the order they are matched in).
    pub fn list(&self) -> Value {
        Value::Array(self.lock().rules.iter().map(Rule::to_json).collect())
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.lock();
        let before = rules.rules.len();
        rules.rules.retain(|r| r.id != id);
        self.count.store(rules.rules.len(), Ordering::Relaxed);
        rules.rules.len() != before
    }

    /// Remove every rule (ids keep growing).
    pub fn clear(&self) {
        let mut rules = self.lock();
        rules.rules.clear();
        self.count.store(0, Ordering::Relaxed);
    }

    /// The first rule that matches `target` and whose probability comes up, counted down.
    pub fn check(&self, target: &Target<'_>) -> Option<Fired> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut rules = self.lock();
        let index = rules.rules.iter().position(|rule| {
            rule.matches(target) && (rule.spec.probability >= 1.0 || rand::random::<f64>() < rule.spec.probability)
        })?;
        let rule = &mut rules.rules[index];
        let fired = Fired {
            id: rule.id,
            delay: Duration::from_millis(rule.spec.delay_ms),
            action: match rule.answer {
                Answer::Real => Action::Real,
                Answer::Reset => Action::Reset,
                Answer::Error(code, status) => {
                    let err = if code == Code::InsufficientScope && target.oauth {
                        ApiError::from(Variant::ScopeOfAccessToken)
                    } else {
                        ApiError::from(code)
                    };
                    Action::Error(match status {
                        Some(status) => err.with_status(status),
                        None => err,
                    })
                }
            },
        };
        if let Some(left) = &mut rule.times_left {
            *left -= 1;
            if *left == 0 {
                rules.rules.remove(index);
                self.count.store(rules.rules.len(), Ordering::Relaxed);
            }
        }
        Some(fired)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn validate(spec: &mut RuleSpec) -> Result<Answer, Refused> {
    spec.method = spec.method.trim().to_ascii_lowercase();
    if spec.method.is_empty() {
        return Err(refused("invalid_fault", "method must be a method name or \"*\""));
    }
    if !(0.0..=1.0).contains(&spec.probability) {
        return Err(refused("invalid_fault", "probability must be between 0 and 1"));
    }
    if spec.times == Some(0) {
        return Err(refused("invalid_fault", "times must be at least 1 (or null: forever)"));
    }
    if spec.delay_ms > MAX_DELAY_MS {
        return Err(refused("invalid_fault", format!("delay_ms must be at most {MAX_DELAY_MS}")));
    }
    let status = match spec.http_status {
        None => None,
        Some(n) if (400..=599).contains(&n) => StatusCode::from_u16(n).ok(),
        Some(n) => return Err(refused("invalid_fault", format!("http_status {n} is not an error status (400-599)"))),
    };
    Ok(match (spec.error.as_deref(), status) {
        (Some(CONNECTION_RESET), _) => Answer::Reset,
        (Some(name), status) => match Code::find(name) {
            Some(code) => Answer::Error(code, status),
            None => {
                return Err(refused(
                    "unknown_error_code",
                    format!("{name} is not an error code crmchat answers (GET /_crmchat/errors lists them)"),
                ));
            }
        },
        (None, Some(status)) => Answer::Error(Code::InternalServerError, Some(status)),
        (None, None) => Answer::Real,
    })
}

/// The error catalogue as `GET /_crmchat/errors` lists it: each code with its status and canonical text, and
/// the other fixed texts it is sent with.
pub fn catalogue() -> Value {
    let entries: Vec<Value> = Code::ALL
        .iter()
        .map(|code| {
            let variants: Vec<Value> = Variant::ALL
                .iter()
                .filter(|v| v.code() == *code)
                .map(|v| json!({"status": v.status().as_u16(), "error_description": v.text()}))
                .collect();
            json!({
                "error": code.as_str(),
                "status": code.status().as_u16(),
                "error_description": code.text(),
                "variants": variants,
            })
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Value) -> RuleSpec {
        serde_json::from_value(value).unwrap()
    }

    const USER_DELETE: Target<'static> =
        Target { method: "imopenlines.crm.chat.user.delete", webhook_id: Some(1), client_id: None, oauth: false };

    #[test]
    fn first_match_wins_and_times_count_down() {
        let faults = Faults::new();
        let a = faults.add(spec(json!({"method": "server.time", "error": "ACCESS_DENIED"}))).unwrap();
        let b = faults.add(spec(json!({"method": "*", "error": "QUERY_LIMIT_EXCEEDED", "times": 2}))).unwrap();
        assert!(a < b);
        let fired = faults.check(&USER_DELETE).unwrap();
        assert_eq!(fired.id, b);
        let Action::Error(err) = fired.action else { panic!("an error") };
        assert_eq!((err.status().as_u16(), err.code()), (503, Code::QueryLimitExceeded));
        let time = Target { method: "server.time", ..USER_DELETE };
        assert_eq!(faults.check(&time).unwrap().id, a, "the older rule matches first");
        assert_eq!(faults.check(&USER_DELETE).unwrap().id, b);
        assert!(faults.check(&USER_DELETE).is_none(), "removed after two");
        assert_eq!(faults.list().as_array().unwrap().len(), 1);
        assert!(faults.remove(a));
        assert!(!faults.remove(a));
        assert!(faults.check(&time).is_none());
    }

    #[test]
    fn filters_by_credential_and_probability() {
        let faults = Faults::new();
        faults.add(spec(json!({"method": "*", "http_status": 502, "webhook_id": 7}))).unwrap();
        faults.add(spec(json!({"method": "*", "error": "expired_token", "client_id": "app"}))).unwrap();
        faults.add(spec(json!({"method": "*", "error": "ERROR_CORE", "probability": 0}))).unwrap();
        assert!(faults.check(&USER_DELETE).is_none());
        let hook7 = Target { webhook_id: Some(7), ..USER_DELETE };
        let Action::Error(err) = faults.check(&hook7).unwrap().action else { panic!() };
        assert_eq!((err.status().as_u16(), err.code()), (502, Code::InternalServerError));
        let app = Target { webhook_id: None, client_id: Some("app"), oauth: true, ..USER_DELETE };
        let Action::Error(err) = faults.check(&app).unwrap().action else { panic!() };
        assert_eq!(err.code(), Code::ExpiredToken);
        faults.clear();
        assert!(faults.check(&hook7).is_none());
    }

    #[test]
    fn rules_are_validated() {
        let faults = Faults::new();
        let code = |v: Value| faults.add(spec(v)).unwrap_err().code;
        assert_eq!(code(json!({"method": "*", "error": "NO_SUCH_CODE"})), "unknown_error_code");
        assert_eq!(code(json!({"method": "*", "error": "query_limit_exceeded"})), "unknown_error_code");
        assert_eq!(code(json!({"method": "*", "http_status": 200})), "invalid_fault");
        assert_eq!(code(json!({"method": "*", "probability": 1.5})), "invalid_fault");
        assert_eq!(code(json!({"method": "*", "times": 0})), "invalid_fault");
        assert_eq!(code(json!({"method": ""})), "invalid_fault");
        let id = faults.add(spec(json!({"method": "Server.Time", "error": "connection_reset"}))).unwrap();
        let fired = faults.check(&Target { method: "server.time", ..USER_DELETE }).unwrap();
        assert_eq!(fired.id, id);
        assert!(matches!(fired.action, Action::Reset));
        assert!(serde_json::from_value::<RuleSpec>(json!({"method": "*", "eror": "X"})).is_err());
    }

    #[test]
    fn insufficient_scope_names_the_credential() {
        let faults = Faults::new();
        faults.add(spec(json!({"method": "*", "error": "insufficient_scope"}))).unwrap();
        let Action::Error(err) = faults.check(&Target { oauth: true, ..USER_DELETE }).unwrap().action else { panic!() };
        assert!(err.description().ends_with("access token"));
        let Action::Error(err) = faults.check(&USER_DELETE).unwrap().action else { panic!() };
        assert!(err.description().ends_with("webhook token"));
    }

    #[test]
    fn the_catalogue_lists_every_code() {
        let listed = catalogue();
        assert_eq!(listed.as_array().unwrap().len(), Code::ALL.len());
        let limit = listed.as_array().unwrap().iter().find(|e| e["error"] == "QUERY_LIMIT_EXCEEDED").unwrap();
        assert_eq!(limit["status"], 503);
        assert_eq!(limit["error_description"], "Too many requests");
    }
}
