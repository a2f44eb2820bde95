//! The Faults and clock page: the fault rules (`crate::rest::faults`) with a form to add one and **Delete**
//! per rule, and the portal clock with **Advance** and **Real time** — the same moves as `/_crmchat/faults`
//! and `/_crmchat/clock` make. (The page was the Clock page once: `/_crmchat/ui/clock` leads here.)

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::pages::flash_box;
use super::session::Flash;
use super::{BASE, Login, Nav, layout};
use crate::error::Code;
use crate::rest::faults::{CONNECTION_RESET, MAX_DELAY_MS, RuleSpec};
use crate::server_state::AppState;
use crate::store::ms_to_rfc3339;

fn back() -> Response {
    Redirect::to(&format!("{BASE}/faults")).into_response()
}

pub async fn page(State(app): State<Arc<AppState>>, Extension(login): Extension<Login>) -> Response {
    let offset_s = app.clock.offset_us() as f64 / 1e6;
    let rules = app.faults.list();
    let rules = rules.as_array().map(Vec::as_slice).unwrap_or_default();
    let flash = login.take_flash();
    let content = html! {
        h1 { "Faults and clock" }
        (flash_box(flash))
        section aria-labelledby="faults-h" {
            h2 id="faults-h" { "Fault rules" }
            p class="hint" { "A matching REST call gets the rule's answer instead of the real one, exactly as crmchat sends that error for real, and changes nothing. Rules are tried in id order; the first that matches wins. An HTTP status without an error code sends that status with the "
                code { (Code::InternalServerError.as_str()) } " body; a delay alone slows the real answer." }
            @if rules.is_empty() {
                p id="no-rules" { "No fault rule: every call gets its real answer." }
            } @else {
                div class="table-wrap" {
                    table class="rules" {
                        caption class="visually-hidden" { "Fault rules" }
                        thead { tr {
                            th scope="col" { "Rule" } th scope="col" { "Method" } th scope="col" { "Answer" }
                            th scope="col" { "Delay" } th scope="col" { "Times left" } th scope="col" { "Probability" }
                            th scope="col" { "Credential" }
                        } }
                        tbody {
                            @for rule in rules { (rule_row(&login, rule)) }
                        }
                    }
                }
            }
            (add_form(&login))
        }
        section aria-labelledby="clock-h" {
            h2 id="clock-h" { "Clock" }
            p class="hint" { "Everything that reads time reads this clock: token expiry, rate limits, operating time, the time block, session times." }
            dl {
                dt { "Portal time" } dd id="clock-now" { (ms_to_rfc3339(app.clock.unix_ms())) }
                dt { "Ahead of real time" } dd id="clock-offset" { (format!("{offset_s:.0}")) " s" }
            }
            div class="clock-actions" {
                form method="post" action={(BASE) "/clock/advance"} class="inline" aria-label="Advance the clock" {
                    (login.csrf_field())
                    label for="advance-s" { "Seconds" }
                    input id="advance-s" type="number" name="seconds" min="1" value="3600" required;
                    button type="submit" { "Advance" }
                }
                form method="post" action={(BASE) "/clock/real"} class="inline" aria-label="Back to real time" {
                    (login.csrf_field())
                    button type="submit" { "Real time" }
                }
            }
        }
    };
    layout("Faults and clock", Nav::Faults, &login, content).into_response()
}

fn rule_row(login: &Login, rule: &Value) -> Markup {
    let id = rule.get("id").and_then(Value::as_u64).unwrap_or(0);
    let number = |key: &str| rule.get(key).and_then(Value::as_u64);
    let answer = match (rule.get("error").and_then(Value::as_str), number("http_status")) {
        (Some(CONNECTION_RESET), _) => "connection closed without an answer".to_string(),
        (Some(code), Some(status)) => format!("{code} with HTTP {status}"),
        (Some(code), None) => code.to_string(),
        (None, Some(status)) => format!("HTTP {status} ({} body)", Code::InternalServerError.as_str()),
        (None, None) => "the real answer".to_string(),
    };
    let credential = match (number("webhook_id"), rule.get("client_id").and_then(Value::as_str)) {
        (Some(hook), _) => format!("webhook {hook}"),
        (None, Some(client)) => format!("application {client}"),
        (None, None) => "any".to_string(),
    };
    html! {
        tr data-rule=(id) {
            // The button first: on a phone the table scrolls sideways, and Delete stays in sight.
            td class="rule-id" {
                (id) " "
                form method="post" action={(BASE) "/faults/" (id) "/delete"} {
                    (login.csrf_field())
                    button type="submit" class="small" { "Delete" span class="visually-hidden" { " rule " (id) } }
                }
            }
            td { code { (breakable(rule.get("method").and_then(Value::as_str).unwrap_or(""))) } }
            td { (answer) }
            td { (number("delay_ms").unwrap_or(0)) " ms" }
            td { @match number("times") { Some(n) => { (n) }, None => { "forever" } } }
            td { (rule.get("probability").and_then(Value::as_f64).unwrap_or(1.0)) }
            td { (credential) }
        }
    }
}

/// A method name that may wrap after its dots (a narrow screen), never inside a word.
fn breakable(method: &str) -> Markup {
    html! {
        @for (i, part) in method.split('.').enumerate() {
            @if i > 0 { "." wbr; }
            (part)
        }
    }
}

fn add_form(login: &Login) -> Markup {
    html! {
        form method="post" action={(BASE) "/faults"} class="fault-form" aria-labelledby="add-rule-h" {
            h3 id="add-rule-h" { "Add a rule" }
            (login.csrf_field())
            div class="fields" {
                span class="field" {
                    label for="fault-method" { "Method" }
                    input id="fault-method" type="text" name="method" list="fault-methods" required
                        value="*" autocomplete="off";
                    datalist id="fault-methods" {
                        option value="*" {}
                        @for method in crate::rest::registry::METHODS { option value=(method.name) {} }
                    }
                }
                span class="field" {
                    label for="fault-error" { "Error code" }
                    select id="fault-error" name="error" {
                        option value="" { "none (the real answer)" }
                        option value=(CONNECTION_RESET) { (CONNECTION_RESET) ": close without an answer" }
                        @for code in Code::ALL { option value=(code.as_str()) { (code.as_str()) } }
                    }
                }
                span class="field" {
                    label for="fault-status" { "HTTP status" }
                    input id="fault-status" type="number" name="http_status" min="400" max="599" inputmode="numeric";
                }
                span class="field" {
                    label for="fault-delay" { "Delay (ms)" }
                    input id="fault-delay" type="number" name="delay_ms" min="0" max=(MAX_DELAY_MS) value="0" inputmode="numeric";
                }
                span class="field" {
                    label for="fault-times" { "Times" }
                    input id="fault-times" type="number" name="times" min="1" placeholder="forever" inputmode="numeric";
                }
                span class="field" {
                    label for="fault-probability" { "Probability" }
                    input id="fault-probability" type="number" name="probability" min="0" max="1" step="any" value="1";
                }
                span class="field" {
                    label for="fault-webhook" { "Webhook ID" }
                    input id="fault-webhook" type="number" name="webhook_id" min="1" placeholder="any" inputmode="numeric";
                }
                span class="field" {
                    label for="fault-client" { "Client ID" }
                    input id="fault-client" type="text" name="client_id" placeholder="any" autocomplete="off";
                }
            }
            button type="submit" { "Add rule" }
        }
    }
}

/// The add form as sent: every field text, empty meaning "not given".
#[derive(Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    method: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    http_status: String,
    #[serde(default)]
    delay_ms: String,
    #[serde(default)]
    times: String,
    #[serde(default)]
    probability: String,
    #[serde(default)]
    webhook_id: String,
    #[serde(default)]
    client_id: String,
}

/// The rule the form describes, in the control API's terms; the fields that are not numbers are named.
fn rule_spec(form: &RuleForm) -> Result<RuleSpec, String> {
    fn optional<T: std::str::FromStr>(name: &str, value: &str) -> Result<Option<T>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        value.parse().map(Some).map_err(|_| format!("{name} {value:?} is not a number"))
    }
    let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    Ok(RuleSpec {
        method: form.method.clone(),
        error: text(&form.error),
        http_status: optional("HTTP status", &form.http_status)?,
        delay_ms: optional("Delay", &form.delay_ms)?.unwrap_or(0),
        times: optional("Times", &form.times)?,
        probability: optional("Probability", &form.probability)?.unwrap_or(1.0),
        webhook_id: optional("Webhook ID", &form.webhook_id)?,
        client_id: text(&form.client_id),
    })
}

/// Adds the rule through the same checks as `POST /_crmchat/faults`, and says what happened.
pub async fn add(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Form(form): Form<RuleForm>,
) -> Response {
    let flash = match rule_spec(&form)
        .map_err(|message| ("invalid_fault", message))
        .and_then(|spec| app.faults.add(spec).map_err(|refused| (refused.code, refused.message)))
    {
        Ok(id) => Flash { title: format!("Fault rule {id} added"), ok: true, detail: rule_summary(&app, id) },
        Err((code, message)) => Flash { title: format!("Refused: {code}"), ok: false, detail: message },
    };
    login.set_flash(flash);
    back()
}

/// The rule as the control API lists it.
fn rule_summary(app: &AppState, id: u64) -> String {
    let rules = app.faults.list();
    let rule = rules.as_array().and_then(|rules| rules.iter().find(|r| r["id"] == id)).cloned();
    rule.map(|r| serde_json::to_string_pretty(&r).unwrap_or_default()).unwrap_or_default()
}

pub async fn delete(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Path(id): Path<String>,
) -> Response {
    let removed = id.parse::<u64>().is_ok_and(|id| app.faults.remove(id));
    login.set_flash(if removed {
        Flash {
            title: format!("Fault rule {id} deleted"),
            ok: true,
            detail: "Matching calls get their real answer again.".into(),
        }
    } else {
        // Used up (`times`) or deleted in another tab meanwhile.
        Flash { title: format!("No fault rule {id}"), ok: false, detail: "It was already gone.".into() }
    });
    back()
}

#[derive(Deserialize)]
pub struct AdvanceForm {
    seconds: String,
}

pub async fn advance(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Form(form): Form<AdvanceForm>,
) -> Response {
    // Forward only, as `POST /_crmchat/clock {"advance_s"}`.
    let flash = match form.seconds.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => {
            app.clock.advance(Duration::from_secs(seconds));
            Flash {
                title: format!("Clock advanced by {seconds} s"),
                ok: true,
                detail: format!("portal time: {}", ms_to_rfc3339(app.clock.unix_ms())),
            }
        }
        _ => Flash {
            title: "Refused: invalid_argument".into(),
            ok: false,
            detail: format!("{:?}: the clock moves forward by a whole number of seconds (1 or more)", form.seconds),
        },
    };
    login.set_flash(flash);
    back()
}

pub async fn real_time(State(app): State<Arc<AppState>>, Extension(login): Extension<Login>) -> Response {
    app.clock.reset();
    login.set_flash(Flash {
        title: "Back to real time".into(),
        ok: true,
        detail: format!("portal time: {}", ms_to_rfc3339(app.clock.unix_ms())),
    });
    back()
}
