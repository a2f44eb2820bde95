//! The inspector: crmchat's state in a browser, at `/_crmchat/ui/`, whenever the control API is on.
//!
//! Pages are rendered on the server with maud (every interpolated value is HTML-escaped unless wrapped in
//! `PreEscaped`, which only the embedded assets use). The first visit asks for the control token in a form and
//! keeps a random session id in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/_crmchat/`; the token
//! itself is never stored in the browser. Every form that changes something is a POST carrying the session's
//! CSRF token. Actions on the portal go through the same REST code as a client's call (see [`actions`]).
//! The stylesheet and script are compiled into the binary: nothing is fetched from elsewhere.

mod actions;
mod events;
mod faults;
mod pages;
mod requests;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::server_state::{AppState, Transport};
pub(crate) use session::Login;
use session::Sessions;

/// Where the inspector lives.
pub const BASE: &str = "/_crmchat/ui";
/// The session cookie; scoped to `/_crmchat/` (the control API answers only to its bearer token, never to it).
const COOKIE: &str = "crmchat_ui";
/// The login form's double-submit cookie: a cross-site page cannot read it, so it cannot post the form.
const LOGIN_COOKIE: &str = "crmchat_ui_login";

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// The inspector's routes (absolute paths), merged into the application's router.
pub fn router(app: Arc<AppState>) -> Router<Arc<AppState>> {
    let sessions = Arc::new(Sessions::default());
    let pages = Router::new()
        .route(&format!("{BASE}/"), get(pages::overview))
        .route(&format!("{BASE}/records"), get(pages::records))
        .route(&format!("{BASE}/records/{{entity_type}}/{{id}}"), get(pages::record))
        .route(&format!("{BASE}/chats/{{id}}"), get(pages::chat))
        .route(&format!("{BASE}/chats/{{id}}/remove"), post(actions::remove_member))
        .route(&format!("{BASE}/chats/{{id}}/add"), post(actions::add_member))
        .route(&format!("{BASE}/credentials"), get(pages::credentials))
        .route(&format!("{BASE}/requests"), get(requests::page))
        .route(&format!("{BASE}/requests/live"), get(requests::live))
        .route(&format!("{BASE}/events"), get(events::page))
        .route(&format!("{BASE}/events/live"), get(events::live))
        .route(&format!("{BASE}/events/{{id}}/redeliver"), post(events::redeliver))
        .route(&format!("{BASE}/faults"), get(faults::page).post(faults::add))
        .route(&format!("{BASE}/faults/{{id}}/delete"), post(faults::delete))
        // The clock had a page of its own before it joined the faults.
        .route(&format!("{BASE}/clock"), get(|| async { Redirect::permanent(&format!("{BASE}/faults")) }))
        .route(&format!("{BASE}/clock/advance"), post(faults::advance))
        .route(&format!("{BASE}/clock/real"), post(faults::real_time))
        .route(&format!("{BASE}/reset"), post(actions::reset))
        .route(&format!("{BASE}/logout"), post(logout))
        // Inside the login check: a POST is checked against the session it belongs to.
        .layer(middleware::from_fn(require_csrf))
        .layer(middleware::from_fn(require_login));
    Router::new()
        .route(BASE, get(|| async { Redirect::to(&format!("{BASE}/")) }))
        .route(&format!("{BASE}/login"), get(login_form).post(login))
        .route(&format!("{BASE}/assets/style.css"), get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route(&format!("{BASE}/assets/app.js"), get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .merge(pages)
        .fallback(not_found)
        .layer(axum::Extension(sessions))
        .layer(middleware::from_fn_with_state(app, guard))
}

/// 404 while the control API is off; security headers on every answer.
async fn guard(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut response = if app.control.token.is_none() {
        (StatusCode::NOT_FOUND, "the inspector is off: start crmchat with --control-token (or --demo)\n")
            .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    // No inline script or style anywhere: even an escaping mistake could not run code.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], text).into_response()
}

async fn not_found(login: Option<axum::Extension<Login>>) -> Response {
    let body = html! { h1 { "Not found" } p { a href={(BASE) "/"} { "Back to the overview" } } };
    let markup = match login {
        Some(axum::Extension(login)) => layout("Not found", Nav::None, &login, body),
        None => bare("Not found", body),
    };
    (StatusCode::NOT_FOUND, markup).into_response()
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<u64>, https: bool) -> HeaderValue {
    let mut text = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if https {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).expect("cookie values are alphanumeric")
}

/// Pages need a session: without one, the login form (which comes back here afterwards).
async fn require_login(
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    mut request: Request,
    next: Next,
) -> Response {
    match cookie(request.headers(), COOKIE).and_then(|id| sessions.find(id)) {
        Some(login) => {
            request.extensions_mut().insert(login);
            next.run(request).await
        }
        None if request.method() == axum::http::Method::GET => {
            let next = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or(BASE);
            let target = format!("{BASE}/login?next={}", percent_encoding::utf8_percent_encode(next, QUERY_VALUE));
            Redirect::to(&target).into_response()
        }
        None => (
            StatusCode::FORBIDDEN,
            bare(
                "Logged out",
                html! { h1 { "Your session has ended" }
                p { a href={(BASE) "/login"} { "Log in again" } } },
            ),
        )
            .into_response(),
    }
}

const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.');

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only a path of the inspector itself: never another site (an open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with(&format!("{BASE}/")) && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => format!("{BASE}/"),
    }
}

async fn login_form(Query(query): Query<LoginQuery>, transport: Option<axum::Extension<Transport>>) -> Response {
    let nonce = crate::secrets::random_alphanumeric(32);
    let next = safe_next(query.next.as_deref());
    let mut response = login_page(&nonce, &next, None).into_response();
    let https = transport.is_some_and(|t| t.0 == Transport::Https);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &nonce, &format!("{BASE}/login"), None, https));
    response
}

fn login_page(nonce: &str, next: &str, error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            main id="main" class="login" {
                h1 { "crmchat inspector" }
                p { "Enter the control token crmchat was started with (" code { "--control-token" } ", or the one "
                    code { "serve --demo" } " printed)." }
                @if let Some(error) = error {
                    p class="flash error" role="alert" { (error) }
                }
                form method="post" action={(BASE) "/login"} id="login-form" {
                    input type="hidden" name="nonce" value=(nonce);
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Control token" }
                    input type="password" id="token" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    nonce: String,
    next: Option<String>,
}

async fn login(
    State(app): State<Arc<AppState>>,
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    transport: Option<axum::Extension<Transport>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let https = transport.is_some_and(|t| t.0 == Transport::Https);
    let next = safe_next(form.next.as_deref());
    let nonce_ok = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| session::same(c, &form.nonce));
    let token_ok = app.control.token.as_ref().is_some_and(|t| t.matches(&form.token));
    if !nonce_ok || !token_ok {
        let message = if nonce_ok {
            "Wrong token: that is not the control token of this server."
        } else {
            "The login form expired: please try again."
        };
        let nonce = crate::secrets::random_alphanumeric(32);
        // 200, not 401: the form is shown again, and browsers log any 4xx page as a console error.
        let mut response = login_page(&nonce, &next, Some(message)).into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &nonce, &format!("{BASE}/login"), None, https));
        return response;
    }
    let id = sessions.create();
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(COOKIE, &id, "/_crmchat/", None, https));
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", &format!("{BASE}/login"), Some(0), https));
    response
}

/// The largest form a page sends (the fault rule's is the longest, well under this).
const FORM_LIMIT: usize = 64 * 1024;

#[derive(Deserialize)]
struct CsrfField {
    csrf: String,
}

/// Every POST of a logged-in page carries the session's CSRF token in its `csrf` field, or changes nothing: a
/// page of another site cannot know the token. Checked here once for every form, so no handler can forget it;
/// the handlers' forms then simply leave the field out.
async fn require_csrf(request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let Some(login) = request.extensions().get::<Login>().cloned() else {
        return (StatusCode::FORBIDDEN, "no session\n").into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large\n").into_response();
    };
    // The field as the handler's `Form` would read it: the same content type, the same parser.
    let mut probe = Request::new(axum::body::Body::from(bytes.clone()));
    *probe.method_mut() = axum::http::Method::POST;
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        probe.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    }
    let candidate = match <Form<CsrfField> as axum::extract::FromRequest<()>>::from_request(probe, &()).await {
        Ok(Form(field)) => field.csrf,
        Err(_) => String::new(),
    };
    if let Err(refused) = login.check_csrf(&candidate) {
        return refused;
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

async fn logout(
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    axum::Extension(login): axum::Extension<Login>,
) -> Response {
    sessions.remove(&login);
    let mut response = Redirect::to(&format!("{BASE}/login")).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(COOKIE, "", "/_crmchat/", Some(0), false));
    response
}

/// Which navigation entry a page is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Records,
    Requests,
    Events,
    Faults,
    Credentials,
    None,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Overview, "Overview", "/"),
    (Nav::Records, "Records", "/records"),
    (Nav::Requests, "Requests", "/requests"),
    (Nav::Events, "Events", "/events"),
    (Nav::Faults, "Faults and clock", "/faults"),
    (Nav::Credentials, "Credentials", "/credentials"),
];

/// A page of the inspector: header, navigation, the page's content.
pub(crate) fn layout(title: &str, current: Nav, login: &Login, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href={(BASE) "/"} { "crmchat inspector" }
                    nav aria-label="Pages" {
                        ul {
                            @for (nav, name, path) in NAV {
                                li {
                                    @if *nav == current {
                                        a href={(BASE) (path)} aria-current="page" { (name) }
                                    } @else {
                                        a href={(BASE) (path)} { (name) }
                                    }
                                }
                            }
                        }
                    }
                    form method="post" action={(BASE) "/logout"} class="logout" {
                        (login.csrf_field())
                        button type="submit" class="link" { "Log out" }
                    }
                }
                main id="main" { (content) }
            }
        }
    }
}

/// A page without navigation (the login form).
fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (content) }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · crmchat inspector" }
            link rel="stylesheet" href={(BASE) "/assets/style.css"};
            // An empty icon: browsers otherwise ask for /favicon.ico and log the 404 as an error.
            link rel="icon" href="data:,";
            script src={(BASE) "/assets/app.js"} defer {}
        }
    }
}

/// A refused or failed page, inside the layout.
pub(crate) fn error_page(status: StatusCode, login: &Login, title: &str, message: &str) -> Response {
    (status, layout(title, Nav::None, login, html! { h1 { (title) } p role="alert" { (message) } })).into_response()
}
