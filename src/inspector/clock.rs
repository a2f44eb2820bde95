//! The Clock page: the portal clock with Advance and Real time, the same moves as `/_crmchat/clock` makes.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::pages::flash_box;
use super::session::Flash;
use super::{BASE, Login, Nav, layout};
use crate::app::AppState;
use crate::store::ms_to_rfc3339;

pub async fn page(State(app): State<Arc<AppState>>, Extension(login): Extension<Login>) -> Response {
    let offset_s = app.clock.offset_us() as f64 / 1e6;
    let flash = login.take_flash();
    let content = html! {
        h1 { "Clock" }
        (flash_box(flash))
        p class="hint" { "Everything that reads time reads this clock: token expiry, rate limits, operating time, the time block, session times." }
        dl {
            dt { "Portal time" } dd id="clock-now" { (ms_to_rfc3339(app.clock.unix_ms())) }
            dt { "Ahead of real time" } dd id="clock-offset" { (format!("{offset_s:.0}")) " s" }
        }
        form method="post" action={(BASE) "/clock/advance"} class="inline" aria-label="Advance the clock" {
            (login.csrf_field())
            label for="advance-s" { "Seconds" }
            input id="advance-s" type="number" name="seconds" min="1" value="3600" required;
            button type="submit" { "Advance" }
        }
        form method="post" action={(BASE) "/clock/real"} class="inline" {
            (login.csrf_field())
            button type="submit" { "Real time" }
        }
    };
    layout("Clock", Nav::Clock, &login, content).into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

#[derive(Deserialize)]
pub struct AdvanceForm {
    csrf: String,
    seconds: String,
}

pub async fn advance(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Form(form): Form<AdvanceForm>,
) -> Response {
    if let Err(refused) = login.check_csrf(&form.csrf) {
        return refused;
    }
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
    Redirect::to(&format!("{BASE}/clock")).into_response()
}

pub async fn real_time(
    State(app): State<Arc<AppState>>,
    Extension(login): Extension<Login>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = login.check_csrf(&form.csrf) {
        return refused;
    }
    app.clock.reset();
    login.set_flash(Flash {
        title: "Back to real time".into(),
        ok: true,
        detail: format!("portal time: {}", ms_to_rfc3339(app.clock.unix_ms())),
    });
    Redirect::to(&format!("{BASE}/clock")).into_response()
}
