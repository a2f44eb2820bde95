//! `batch`: up to 50 commands in one request, run in order with the outer call's authentication, each in
//! its own transaction, later ones able to refer to earlier results.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::auth::{self, Caller};
use super::envelope::php_array;
use super::registry::{self, Kind};
use super::{AppState, Draft, params, run_in_scope};
use crate::clock::Start;
use crate::domain::PortalSettings;
use crate::error::{ApiError, Code};
use crate::journal;
use crate::methods::args::is_empty;
use crate::methods::{Output, Params};
use crate::read_timeout::ResetSwitch;

pub const MAX_COMMANDS: usize = 50;

/// What the journal learns of one command: its method and parameters.
#[derive(Default)]
struct Seen {
    method: String,
    params: Params,
    fault: Option<u64>,
}

/// What earlier commands produced, for `$result[...]`-style references.
#[derive(Default)]
struct Answers {
    result: Map<String, Value>,
    error: Map<String, Value>,
    total: Map<String, Value>,
    next: Map<String, Value>,
    time: Map<String, Value>,
}

/// `batch`'s own parameters are matched case-insensitively (`CMD`, `Halt`).
fn own_param<'a>(params: &'a Params, name: &str) -> Option<&'a Value> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// Run a batch's commands; with a journal `draft`, each command is added to it.
pub async fn run(
    app: &AppState,
    caller: &Caller,
    portal: &Arc<PortalSettings>,
    params: &Params,
    mut draft: Option<&mut Draft>,
    reset: Option<&ResetSwitch>,
) -> Output {
    // PHP truthiness: "false" is a non-empty string, so it halts.
    let halt = !is_empty(own_param(params, "halt"));
    let commands: Vec<(String, Value)> = match own_param(params, "cmd") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Array(list)) => list.iter().enumerate().map(|(i, v)| (i.to_string(), v.clone())).collect(),
        _ => Vec::new(),
    };
    let mut answers = Answers::default();
    for (index, (key, command)) in commands.into_iter().enumerate() {
        let start = Start::now(&app.clock);
        let mut seen = draft.is_some().then(Seen::default);
        let outcome = if index >= MAX_COMMANDS {
            Err(Code::BatchLengthExceeded.into())
        } else {
            let batch = Batch { app, caller, portal, reset };
            run_command(&batch, &command, &answers, start, seen.as_mut()).await
        };
        if let (Some(draft), Some(seen)) = (draft.as_deref_mut(), seen) {
            let (status, error, result) = match &outcome {
                _ if reset.is_some_and(ResetSwitch::is_reset) => (None, Some(super::faults::CONNECTION_RESET), None),
                Ok((output, _)) => (Some(200), None, Some(journal::cut_copy(&output.result))),
                Err(err) => (Some(err.status().as_u16()), Some(err.code().as_str()), None),
            };
            let params = super::redacted_with(seen.params, &draft.secret);
            draft.commands.push(journal::Call {
                at_ms: start.unix_ms(),
                method: seen.method,
                // The outer call's, filled in when it is recorded.
                transport: "",
                http_method: axum::http::Method::POST,
                auth: super::journal_auth(caller),
                params,
                status,
                error,
                result,
                duration_ms: start.instant.elapsed().as_secs_f64() * 1000.0,
                fault: seen.fault,
            });
        }
        // The connection is gone: nothing after the command that closed it runs.
        if reset.is_some_and(ResetSwitch::is_reset) {
            break;
        }
        match outcome {
            Ok((output, timing)) => {
                answers.result.insert(key.clone(), output.result);
                if let Some(total) = output.total {
                    answers.total.insert(key.clone(), json!(total));
                }
                if let Some(next) = output.next {
                    answers.next.insert(key.clone(), json!(next));
                }
                answers.time.insert(key, timing.to_json());
            }
            Err(err) => {
                answers
                    .error
                    .insert(key, json!({"error": err.code().as_str(), "error_description": err.description()}));
                if halt {
                    break;
                }
            }
        }
    }
    json!({
        "result": php_array(answers.result),
        "result_error": php_array(answers.error),
        "result_total": php_array(answers.total),
        "result_next": php_array(answers.next),
        "result_time": php_array(answers.time),
    })
    .into()
}

/// What every command of a batch shares.
struct Batch<'a> {
    app: &'a AppState,
    caller: &'a Caller,
    portal: &'a Arc<PortalSettings>,
    reset: Option<&'a ResetSwitch>,
}

async fn run_command(
    batch: &Batch<'_>,
    command: &Value,
    answers: &Answers,
    start: Start,
    mut seen: Option<&mut Seen>,
) -> Result<(Output, super::envelope::Timing), ApiError> {
    let Batch { app, caller, portal, reset } = *batch;
    let Value::String(command) = command else {
        return Err(Code::MethodNotFound.into());
    };
    let (path, query) = command.split_once('?').unwrap_or((command.as_str(), ""));
    let name = path.trim_start_matches('/').to_ascii_lowercase();
    // A format suffix means nothing inside a batch: the batch's own answer decides the format.
    let name = name.strip_suffix(".json").or_else(|| name.strip_suffix(".xml")).unwrap_or(&name);
    if let Some(seen) = seen.as_deref_mut() {
        seen.method = name.to_string();
    }
    let Some(method) = registry::find(name) else {
        if let Some(seen) = seen {
            // Parameters of a command that runs nothing, for the journal only.
            let _ = params::parse_str_into(&mut seen.params, query, &app.settings.param_limits);
        }
        return Err(Code::MethodNotFound.into());
    };
    if matches!(method.kind, Kind::Batch) {
        return Err(Code::BatchMethodNotAllowed.into());
    }
    let mut params = Params::new();
    params::parse_str_into(&mut params, query, &app.settings.param_limits).map_err(ApiError::unreadable_params)?;
    auth::strip_reserved(&mut params);
    for value in params.values_mut() {
        substitute(value, answers);
    }
    // The journal shows what the method got, references resolved.
    if let Some(seen) = seen.as_deref_mut() {
        seen.params = params.clone();
    }
    // A command's own scope is checked first, as for a call of its own.
    super::check_scope(caller, method)?;
    if let Some(fired) = app.faults.check(&super::fault_target(method.name, caller)) {
        if let Some(seen) = seen {
            seen.fault = Some(fired.id);
        }
        super::apply_fault(fired, reset).await?;
    }
    run_in_scope(app, caller, portal, method, &params, start).await
}

const REFERENCE_KINDS: [&str; 5] = ["result", "error", "time", "next", "total"];

/// A reference found in a parameter value: `$kind[a][b]…`, spanning `start..end` of the text.
struct Reference<'a> {
    start: usize,
    end: usize,
    kind: &'a str,
    path: Vec<&'a str>,
}

fn find_references(text: &str) -> Vec<Reference<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find('$') {
        let start = from + offset;
        from = start + 1;
        let rest = &text[start + 1..];
        let Some(kind) = REFERENCE_KINDS.iter().find(|k| rest.starts_with(**k)) else {
            continue;
        };
        let mut pos = start + 1 + kind.len();
        let mut path = Vec::new();
        while text[pos..].starts_with('[') {
            let Some(close) = text[pos + 1..].find(']') else { break };
            path.push(&text[pos + 1..pos + 1 + close]);
            pos += close + 2;
        }
        if !path.is_empty() {
            found.push(Reference { start, end: pos, kind, path });
            from = pos;
        }
    }
    found
}

fn resolve<'a>(reference: &Reference<'_>, answers: &'a Answers) -> Option<&'a Value> {
    let map = match reference.kind {
        "result" => &answers.result,
        "error" => &answers.error,
        "time" => &answers.time,
        "next" => &answers.next,
        _ => &answers.total,
    };
    let mut value = map.get(reference.path[0])?;
    for segment in &reference.path[1..] {
        value = match value {
            Value::Object(map) => map.get(*segment)?,
            Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// How PHP writes a value into a string: arrays become "Array", true "1", false and null "".
fn php_string(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => String::new(),
        Some(Value::Bool(true)) => "1".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(_) | Value::Object(_)) => "Array".into(),
    }
}

/// Replace references to earlier answers: a value that is exactly one reference takes the referenced value
/// with its type; references inside text are spliced in as text. A missing path gives null / "".
fn substitute(value: &mut Value, answers: &Answers) {
    match value {
        Value::String(text) => {
            let references = find_references(text);
            if references.is_empty() {
                return;
            }
            if references.len() == 1 && references[0].start == 0 && references[0].end == text.len() {
                *value = resolve(&references[0], answers).cloned().unwrap_or(Value::Null);
                return;
            }
            let mut spliced = String::with_capacity(text.len());
            let mut last = 0;
            for reference in &references {
                spliced.push_str(&text[last..reference.start]);
                spliced.push_str(&php_string(resolve(reference, answers)));
                last = reference.end;
            }
            spliced.push_str(&text[last..]);
            *value = Value::String(spliced);
        }
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, answers)),
        Value::Array(list) => list.iter_mut().for_each(|v| substitute(v, answers)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        let mut a = Answers::default();
        a.result.insert("get".into(), json!([{"CHAT_ID": "8773"}]));
        a.result.insert("last".into(), json!(8773));
        a.total.insert("get".into(), json!(1));
        a
    }

    #[test]
    fn exact_reference_keeps_the_type() {
        let mut v = json!("$result[last]");
        substitute(&mut v, &answers());
        assert_eq!(v, json!(8773));
        let mut v = json!("$result[get]");
        substitute(&mut v, &answers());
        assert_eq!(v, json!([{"CHAT_ID": "8773"}]));
    }

    #[test]
    fn references_in_text_are_spliced() {
        let mut v = json!("chat $result[get][0][CHAT_ID] of $total[get]: $result[get]");
        substitute(&mut v, &answers());
        assert_eq!(v, json!("chat 8773 of 1: Array"));
    }

    #[test]
    fn missing_paths_are_empty() {
        let mut v = json!("$result[nope][x]");
        substitute(&mut v, &answers());
        assert_eq!(v, json!(null));
        let mut v = json!("id=$result[nope]!");
        substitute(&mut v, &answers());
        assert_eq!(v, json!("id=!"));
    }

    #[test]
    fn dollar_signs_that_are_not_references_stay() {
        let mut v = json!("costs $5 or $result or $resultx[1");
        substitute(&mut v, &answers());
        assert_eq!(v, json!("costs $5 or $result or $resultx[1"));
    }
}
