//! The Bitrix24 REST wire protocol: URLs, parameters, authentication, envelopes and dispatch.

pub mod auth;
pub mod batch;
pub mod body_budget;
pub mod envelope;

pub mod faults;
pub mod introspection;
pub mod limits;
pub mod limits_redis;
pub mod oauth;
pub mod params;
pub mod registry;

use std::sync::Arc;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;

use self::body_budget::{BodyBudget, Share};
use self::envelope::{Format, Timing, render_error, render_success};
use self::limits::{OperatingStatus, Plan, WINDOW_SECS, operating_key, request_key};
use self::registry::{Kind, MethodDef};
use crate::clock::Start;
use crate::domain::PortalSettings;
use crate::error::{ApiError, Code, Variant};
use crate::journal::{self, Auth, AuthType};
use crate::log_throttle::LogThrottle;
use crate::methods::{CallContext, Output, Params};
use crate::read_timeout::ResetSwitch;
use crate::server_state::{AppState, Transport};
use crate::telemetry;

/// The parts of a `/rest/...` path: `{method}`, `{method}/`, `{user}/{code}/{method}`, `{user}/{code}/{method}/`.
#[derive(Debug, PartialEq)]
pub struct RestPath<'a> {
    pub webhook: Option<(&'a str, &'a str)>,
    /// Lower-cased, without the format suffix.
    pub method: String,
    pub format: Format,
}

/// `path` with each run of slashes made one, as the vendor's web server does (nginx's `merge_slashes`): its JS
/// SDK joins `client_endpoint` (`https://portal/rest/`) and `/{method}` into `/rest//{method}`.
pub fn merge_slashes(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("//") {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    std::borrow::Cow::Owned(merged)
}

pub fn parse_path(path: &str) -> Option<RestPath<'_>> {
    let rest = path.strip_prefix("/rest/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segments = rest.split('/');
    let (webhook, method) = match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some(method), None, None, None) => (None, method),
        (Some(user), Some(code), Some(method), None) => (Some((user, code)), method),
        _ => return None,
    };
    let has_suffix = |suffix: &str| {
        method.len() >= suffix.len()
            && method.as_bytes()[method.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    let (method, format) = if has_suffix(".json") {
        (&method[..method.len() - 5], Format::Json)
    } else if has_suffix(".xml") {
        (&method[..method.len() - 4], Format::Xml)
    } else {
        (method, Format::Json)
    };
    if method.is_empty() {
        return None;
    }
    Some(RestPath { webhook, method: method.to_ascii_lowercase(), format })
}

/// The method of a REST 3.0 path, `/rest/api/{method}` or `/rest/api/{user}/{code}/{method}` (a trailing `/`
/// allowed), as the client wrote it; `""` for another shape under `/rest/api/` (whose last segment may be a
/// webhook code, which must not be echoed or logged). `None` outside `/rest/api/`.
pub fn v3_method(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/rest/api/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    Some(match segments[..] {
        [method] | [_, _, method] => method,
        _ => "",
    })
}

/// The client IP of a request: the peer's address, or behind a trusted proxy, the one the proxy reports.
#[derive(Clone, Copy)]
enum ClientIp<'a> {
    Peer(Option<std::net::IpAddr>),
    Forwarded(&'a str),
}

impl std::fmt::Display for ClientIp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientIp::Peer(Some(ip)) => ip.fmt(f),
            ClientIp::Peer(None) => Ok(()),
            ClientIp::Forwarded(ip) => f.write_str(ip),
        }
    }
}

/// The transport and client IP of a request; behind a trusted proxy, as the proxy reports them.
fn client_of<'a>(app: &AppState, parts: &'a axum::http::request::Parts) -> (Transport, ClientIp<'a>) {
    let mut transport = parts.extensions.get::<Transport>().copied().unwrap_or(Transport::Http);
    let mut ip = ClientIp::Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    if app.settings.trust_forwarded_for {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        // The proxy appends the address it saw; earlier entries come from the client and prove nothing.
        if let Some(last) = header("x-forwarded-for").and_then(|v| v.rsplit(',').next()).map(str::trim)
            && !last.is_empty()
        {
            ip = ClientIp::Forwarded(last);
        }
        if header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")) {
            transport = Transport::Https;
        }
    }
    (transport, ip)
}

/// Every `/rest/...` request: method lookup (404) → parameters → authentication and scope (401) → method.
pub async fn handle(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let start = Start::now(&app.clock);
    let (parts, body) = request.into_parts();
    let (transport, client_ip) = client_of(&app, &parts);
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let path = merge_slashes(parts.uri.path());
    if let Some(method) = v3_method(&path) {
        // None of crmchat's methods exists in REST 3.0: the vendor's "not found", decided before authentication
        // as for REST 2. Only the method's name is logged: the path holds the webhook code.
        tracing::info!(method = %method, status = 404, "rest 3.0 call refused");
        let err = ApiError::v3_method_not_found(method);
        telemetry::rest_call_refused(telemetry::UNKNOWN_METHOD, err.code().as_str(), start.instant.elapsed());
        if app.journal.is_enabled() {
            app.journal.record(journal::Call {
                at_ms: start.unix_ms(),
                method: method.to_ascii_lowercase(),
                transport: Format::Json.as_str(),
                http_method: parts.method.clone(),
                auth: Auth::default(),
                params: serde_json::Value::Object(Params::new()),
                status: Some(err.status().as_u16()),
                error: Some(err.code().as_str()),
                result: None,
                duration_ms: start.instant.elapsed().as_secs_f64() * 1000.0,
                fault: None,
            });
        }
        return envelope::render(err.status(), &err.v3_body(), Format::Json);
    }
    let Some(rest_path) = parse_path(&path) else {
        // Not a REST method URL at all. Logged without the path, which may hold a webhook code.
        let err = ApiError::from(Code::MethodNotFound);
        telemetry::rest_call_refused(telemetry::UNKNOWN_METHOD, err.code().as_str(), start.instant.elapsed());
        tracing::info!(status = 404, error = err.code().as_str(), request_id, "request to an unknown path refused");
        return render_error(&err, Format::Json);
    };
    let format = rest_path.format;
    let reset = parts.extensions.get::<ResetSwitch>();
    let request = Incoming { rest_path: &rest_path, transport, client_ip, query: parts.uri.query(), reset };
    let mut draft = app.journal.is_enabled().then(Draft::default);
    let method = registry::position(&rest_path.method);
    let result =
        call(&app, request, method.map(|i| &registry::METHODS[i]), &parts.headers, body, start, draft.as_mut()).await;
    // Closed without an answer by a fault rule: neither a success nor the error the method gave.
    let closed = reset.is_some_and(ResetSwitch::is_reset);
    let error = match &result {
        _ if closed => Some(faults::CONNECTION_RESET),
        Ok(_) => None,
        Err(err) => Some(err.code().as_str()),
    };
    count_call(method, error, start.instant.elapsed());
    let response = match &result {
        Ok((output, timing)) => render_success(output, timing, format),
        Err(err) => render_error(err, format),
    };
    // Only the method name is logged: the path holds the webhook code and parameters may hold tokens.
    // Refused calls are logged at info; successes at debug, since formatting a line per call costs a tenth of
    // the server's throughput (`CRMCHAT_LOG=debug` shows them).
    // The elapsed time is worked out only when the line is written.
    match &result {
        Ok(_) => tracing::debug!(
            method = %rest_path.method,
            status = 200,
            request_id,
            elapsed_ms = start.instant.elapsed().as_secs_f64() * 1000.0,
            "rest call"
        ),
        Err(err) => tracing::info!(
            method = %rest_path.method,
            status = err.status().as_u16(),
            error = err.code().as_str(),
            request_id,
            elapsed_ms = start.instant.elapsed().as_secs_f64() * 1000.0,
            "rest call refused"
        ),
    }
    // Recorded last, so the journal takes the method's name and result instead of copies.
    if let Some(draft) = draft {
        let (status, result) = match result {
            _ if closed => (None, None),
            Ok((output, _)) => (Some(200), Some(journal::cut(output.result))),
            Err(err) => (Some(err.status().as_u16()), None),
        };
        let call = journal::Call {
            at_ms: start.unix_ms(),
            method: rest_path.method,
            transport: format.as_str(),
            http_method: parts.method,
            auth: draft.auth,
            params: draft.params,
            status,
            error,
            result,
            duration_ms: start.instant.elapsed().as_secs_f64() * 1000.0,
            fault: draft.fault,
        };
        let mut commands = draft.commands;
        for command in &mut commands {
            command.transport = call.transport;
            command.http_method.clone_from(&call.http_method);
        }
        app.journal.record_batch(call, commands);
    }
    response
}

/// The handles of each method's successful calls, by its place in the registry.
static METHOD_METRICS: std::sync::OnceLock<Vec<telemetry::MethodHandles>> = std::sync::OnceLock::new();

/// Count a call in the metrics: `method` is its place in the registry (`None`: no such method), `error` the
/// code it was answered with (`None`: a result).
fn count_call(method: Option<usize>, error: Option<&'static str>, elapsed: std::time::Duration) {
    match (method, error) {
        (Some(i), None) => {
            let handles = METHOD_METRICS
                .get_or_init(|| registry::METHODS.iter().map(|m| telemetry::MethodHandles::new(m.name)).collect());
            handles[i].succeeded(elapsed);
        }
        (method, error) => {
            let name = method.map_or(telemetry::UNKNOWN_METHOD, |i| registry::METHODS[i].name);
            telemetry::rest_call_refused(name, error.unwrap_or(telemetry::OK), elapsed);
        }
    }
}

/// What the journal learns of a call while it runs: who called, with what (redacted), and for a batch, its
/// commands.
#[derive(Default)]
pub struct Draft {
    auth: Auth,
    params: serde_json::Value,
    /// The call's webhook code or token, to be replaced wherever it appears in the commands' parameters too.
    secret: String,
    commands: Vec<journal::Call>,
    fault: Option<u64>,
}

impl Draft {
    /// Who the credentials claim to be, before they are checked.
    fn claimed(&mut self, credentials: &auth::Credentials) {
        self.secret = secret_of(credentials).to_string();
        self.auth = match credentials {
            auth::Credentials::Webhook { user_id, .. } => {
                Auth { kind: AuthType::Webhook, user_id: user_id.parse().ok(), ..Auth::default() }
            }
            auth::Credentials::Token(_) => Auth { kind: AuthType::OAuth, ..Auth::default() },
            auth::Credentials::None => Auth::default(),
        };
    }
}

/// The journal's `auth` of an authenticated caller.
pub(crate) fn journal_auth(caller: &auth::Caller) -> Auth {
    match caller.kind {
        auth::AuthKind::Webhook => Auth {
            kind: AuthType::Webhook,
            user_id: Some(caller.user.id),
            webhook_id: caller.webhook_id(),
            client_id: None,
        },
        auth::AuthKind::OAuth => Auth {
            kind: AuthType::OAuth,
            user_id: Some(caller.user.id),
            webhook_id: None,
            client_id: caller.client_id.clone(),
        },
    }
}

/// What the protocol layer needs of a request besides its headers and body.
struct Incoming<'a> {
    rest_path: &'a RestPath<'a>,
    transport: Transport,
    client_ip: ClientIp<'a>,
    query: Option<&'a str>,
    /// Closes the connection unanswered (a `connection_reset` fault); absent for in-process calls.
    reset: Option<&'a ResetSwitch>,
}

async fn call(
    app: &AppState,
    request: Incoming<'_>,
    method: Option<&'static MethodDef>,
    headers: &HeaderMap,
    body: Body,
    start: Start,
    draft: Option<&mut Draft>,
) -> Result<(Output, Timing), ApiError> {
    let Some(method) = method else {
        // Decided before the body is read; the journal gets what the URL and headers tell.
        if let Some(draft) = draft {
            let mut params = Params::new();
            let _ = params::parse_str_into(&mut params, request.query.unwrap_or(""), &app.settings.param_limits);
            let credentials = auth::extract(request.rest_path.webhook, headers, &mut params.clone());
            draft.claimed(&credentials);
            draft.params = redacted(params, &credentials);
        }
        return Err(Code::MethodNotFound.into());
    };
    let (params, _body_share) = match read_params(app, request.query, headers, body).await {
        Ok(read) => read,
        Err(err) => {
            if let Some(draft) = draft {
                draft.claimed(&auth::extract(request.rest_path.webhook, headers, &mut Params::new()));
                draft.params = serde_json::Value::Object(Params::new());
            }
            return Err(err);
        }
    };
    // The request is in: from here on the time is the server's, and the client must get an answer before it
    // gives up on the call (a dropped connection leaves it not knowing whether its change applied).
    match tokio::time::timeout(
        app.settings.request_timeout,
        process(app, &request, headers, params, method, start, draft),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            if let Some(held_back) = TIMEOUT_LOG.allow() {
                tracing::warn!(
                    method = %request.rest_path.method,
                    timeout_s = app.settings.request_timeout.as_secs(),
                    similar_lines_held_back = held_back,
                    "call timed out waiting for the server (database stalled?): answered 500"
                );
            }
            Err(Code::InternalServerError.into())
        }
    }
}

/// Calls that ran past the request timeout, told at most every 10 s.
static TIMEOUT_LOG: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));

/// A call once its parameters are read: authentication, limits, the method.
async fn process(
    app: &AppState,
    request: &Incoming<'_>,
    headers: &HeaderMap,
    mut params: Params,
    method: &'static MethodDef,
    start: Start,
    mut draft: Option<&mut Draft>,
) -> Result<(Output, Timing), ApiError> {
    // A reserved key, removed with the credentials; offline events need it.
    let auth_connector = match params.get("auth_connector") {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    // Reserved too: the page offset of list methods (`event.offline.list`), a number or a numeric string.
    let list_start = match params.get("start") {
        Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    };
    // Held until the call is done, taken once its body is in (a slow client must not hold back a reset): a
    // replace of the whole state waits for it (see `AppState::state_gate`).
    let _calls = app.state_gate.read().await;
    // The journal keeps the parameters as sent, reserved keys included (redacted).
    let sent = draft.is_some().then(|| params.clone());
    let credentials = auth::extract(request.rest_path.webhook, headers, &mut params);
    if let (Some(draft), Some(sent)) = (draft.as_deref_mut(), sent) {
        draft.claimed(&credentials);
        draft.params = redacted(sent, &credentials);
    }
    let portal = app.store.portal().await?;
    if portal.require_https
        && request.transport == Transport::Http
        && matches!(credentials, auth::Credentials::Webhook { .. })
    {
        return Err(Code::InvalidRequest.into());
    }
    let mut caller = auth::authenticate(&app.store, credentials, start.unix_ms()).await?;
    caller.auth_connector = auth_connector;
    caller.list_start = list_start;
    if let Some(draft) = draft.as_deref_mut() {
        draft.auth = journal_auth(&caller);
    }
    check_scope(&caller, method)?;
    // Fault rules come after authentication (they may name a webhook or an application) and before the
    // bucket, so a faulted call changes nothing, not even the request count.
    if let Some(fired) = app.faults.check(&fault_target(method.name, &caller)) {
        if let Some(draft) = draft.as_deref_mut() {
            draft.fault = Some(fired.id);
        }
        apply_fault(fired, request.reset).await?;
    }
    // One bucket per portal and client IP: applications on one server share it. A batch counts once.
    if let Some(plan) = Plan::for_name(&portal.plan)
        && !app.requests.admit(&request_key(&portal.domain, request.client_ip), plan).await
    {
        telemetry::rate_limit_refusal(telemetry::Limit::Requests);
        return Err(Code::QueryLimitExceeded.into());
    }
    let (output, timing) = match method.kind {
        Kind::Batch => {
            let output = batch::run(app, &caller, &portal, &params, draft, request.reset).await;
            let finish = std::time::Instant::now();
            // The outer batch is not charged operating time; its commands are.
            let operating =
                OperatingStatus { operating: 0.0, reset_at: start.unix as i64 + WINDOW_SECS, blocked: false };
            (output, timing(&start, start.instant, finish, &operating))
        }
        Kind::Method(_) => run_in_scope(app, &caller, &portal, method, &params, start).await?,
    };
    Ok((output, timing))
}

/// What fault rules are matched against.
pub(crate) fn fault_target<'a>(method: &'a str, caller: &'a auth::Caller) -> faults::Target<'a> {
    faults::Target {
        method,
        webhook_id: caller.webhook_id(),
        client_id: caller.client_id.as_deref(),
        oauth: caller.kind == auth::AuthKind::OAuth,
    }
}

/// Wait out a fired rule's delay, then answer as it says: `Ok` lets the call run for real.
pub(crate) async fn apply_fault(fired: faults::Fired, reset: Option<&ResetSwitch>) -> Result<(), ApiError> {
    if !fired.delay.is_zero() {
        tokio::time::sleep(fired.delay).await;
    }
    match fired.action {
        faults::Action::Real => Ok(()),
        faults::Action::Error(err) => Err(err),
        faults::Action::Reset => match reset {
            Some(switch) => {
                switch.reset();
                // Never written: the connection fails its next write.
                Err(Code::InternalServerError.into())
            }
            None => Err(Code::InternalServerError.into()),
        },
    }
}

/// Parameters for the journal: secrets replaced, the call's own webhook code and token included.
fn redacted(params: Params, credentials: &auth::Credentials) -> serde_json::Value {
    redacted_with(params, secret_of(credentials))
}

fn redacted_with(params: Params, secret: &str) -> serde_json::Value {
    let mut params = serde_json::Value::Object(params);
    journal::redact(&mut params, &[secret]);
    journal::cut(params)
}

fn secret_of(credentials: &auth::Credentials) -> &str {
    match credentials {
        auth::Credentials::Webhook { code, .. } => code,
        auth::Credentials::Token(token) => token,
        auth::Credentials::None => "",
    }
}

pub(crate) fn check_scope(caller: &auth::Caller, method: &MethodDef) -> Result<(), ApiError> {
    match method.scope {
        Some(scope) if !caller.has_scope(scope) => Err(caller.insufficient_scope()),
        _ => Ok(()),
    }
}

/// Run one method for an authenticated caller: its scope check, its operating-time limit, the method itself.
pub(crate) async fn invoke(
    app: &AppState,
    caller: &auth::Caller,
    portal: &Arc<PortalSettings>,
    method: &MethodDef,
    params: &Params,
    start: Start,
) -> Result<(Output, Timing), ApiError> {
    check_scope(caller, method)?;
    run_in_scope(app, caller, portal, method, params, start).await
}

/// [`invoke`] once the caller's scope was checked (a call and a batch command check it before their fault
/// rules): the operating-time limit, the method itself.
pub(crate) async fn run_in_scope(
    app: &AppState,
    caller: &auth::Caller,
    portal: &Arc<PortalSettings>,
    method: &MethodDef,
    params: &Params,
    start: Start,
) -> Result<(Output, Timing), ApiError> {
    let Kind::Method(handler) = method.kind else {
        return Err(Code::BatchMethodNotAllowed.into());
    };
    let operating_key = operating_key(&portal.domain, &caller.credential_id, method.name);
    let before = app.operating.status(&operating_key).await;
    if before.blocked {
        telemetry::rate_limit_refusal(telemetry::Limit::OperatingTime);
        return Err(Code::OperationTimeLimit.into());
    }
    let ctx = CallContext {
        store: &app.store,
        portal,
        caller: &caller.user,
        scopes: &caller.scopes,
        client_id: caller.client_id.as_deref(),
        auth_connector: &caller.auth_connector,
        list_start: caller.list_start,
        event_depth: caller.event_depth,
        now_ms: start.unix_ms(),
    };
    // Durations come from the monotonic clock: moving the portal clock must not charge or refund time.
    let method_start = std::time::Instant::now();
    let (result, running) = limits::executed(handler(&ctx, params)).await;
    let finish = std::time::Instant::now();
    // Calls the caller made fail consume operating time too: the work was done. A call not charged leaves the
    // standing as it was, so it is not asked for again.
    let server_fault = result.as_ref().is_err_and(|err| err.status().is_server_error());
    let operating = match limits::charge(running, server_fault) {
        Some(charged) => {
            app.operating.record(&operating_key, charged).await;
            app.operating.status(&operating_key).await
        }
        None => before,
    };
    let output = result?;
    Ok((output, timing(&start, method_start, finish, &operating)))
}

/// The `time` block: instants on the portal clock, durations on the monotonic one.
fn timing(
    start: &Start,
    method_start: std::time::Instant,
    finish: std::time::Instant,
    operating: &OperatingStatus,
) -> Timing {
    Timing {
        start: start.unix,
        finish: start.unix_at(finish),
        processing: finish.saturating_duration_since(method_start).as_secs_f64(),
        operating: operating.operating,
        operating_reset_at: operating.reset_at,
    }
}

/// The whole body, refused past `max_bytes` (413), when it trickles in slower than the read timeout (408), or
/// when the budget of all bodies has no room for it (503), with the share of the budget it holds.
pub(crate) async fn read_body(
    body: Body,
    max_bytes: usize,
    read_timeout: std::time::Duration,
    budget: &BodyBudget,
) -> Result<(Vec<u8>, Share), ApiError> {
    // A declared length far over the limit is refused at once, without waiting for the body. A body just
    // over it is read up to the limit first: answering mid-upload makes most clients fail on a broken pipe
    // before they read the 413.
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if declared > 8 * max_bytes as u64 {
        return Err(Code::RequestTooLarge.into());
    }
    // Most bodies came in with the headers: a first poll collects them without arming a timer.
    let mut collect = std::pin::pin!(collect_body(body, declared, max_bytes, budget));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(collect.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => {
            tokio::time::timeout(read_timeout, collect).await.unwrap_or(Err(Code::RequestTimeout.into()))
        }
    }
}

/// Reads `body` into one buffer, each chunk copied in and dropped at once: collecting the chunks and joining
/// them at the end cost twice the body, and each chunk kept the whole read buffer it was cut from alive. The
/// buffer grows by doubling as bytes arrive, up to the declared length, and each step takes its room from
/// `budget` first, so a client that declares a large body and sends it slowly holds only about what it sent.
/// Without room the part read is let go and the rest of the body read and dropped, so the client is past
/// sending when it gets its 503.
async fn collect_body(
    mut body: Body,
    declared: u64,
    max_bytes: usize,
    budget: &BodyBudget,
) -> Result<(Vec<u8>, Share), ApiError> {
    use http_body_util::BodyExt as _;
    // A body that comes without its length may be as long as the limit.
    let longest = match usize::try_from(declared) {
        Ok(0) | Err(_) => max_bytes,
        Ok(declared) => declared.min(max_bytes),
    };
    let mut share = budget.share();
    let mut buffer = Vec::new();
    let mut refused = false;
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| match is_timeout(&err) {
            true => ApiError::from(Code::RequestTimeout),
            false => ApiError::from(Variant::MalformedBody),
        })?;
        let Ok(chunk) = frame.into_data() else { continue };
        received = received.saturating_add(chunk.len());
        if received > max_bytes {
            return Err(Code::RequestTooLarge.into());
        }
        if refused {
            continue;
        }
        if received > buffer.capacity() {
            let size = received.max(buffer.capacity() * 2).max(FIRST_BUFFER_BYTES).min(longest.max(received));
            if !share.grow_to(size) {
                refused = true;
                // Given back at once: others may finish with the room.
                (buffer, share) = (Vec::new(), budget.share());
                continue;
            }
            buffer.reserve_exact(size - buffer.len());
        }
        buffer.extend_from_slice(&chunk);
    }
    if refused {
        if let Some(held_back) = BUDGET_LOG.allow() {
            tracing::warn!(
                available_bytes = budget.available(),
                similar_lines_held_back = held_back,
                "request bodies fill --max-buffered-bytes: a body was answered 503"
            );
        }
        return Err(Code::QueryLimitExceeded.into());
    }
    Ok((buffer, share))
}

/// The first room taken for a body longer than this; a shorter one gets room for its declared length at once.
const FIRST_BUFFER_BYTES: usize = 16 * 1024;

/// Bodies refused for want of room in the budget, told at most every 10 s.
static BUDGET_LOG: LogThrottle = LogThrottle::new(std::time::Duration::from_secs(10));

/// Does `err` or one of its causes satisfy `test`?
fn caused_by(err: &axum::Error, test: impl Fn(&(dyn std::error::Error + 'static)) -> bool) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if test(e) {
            return true;
        }
        source = e.source();
    }
    false
}

/// The connection's read timeout (`crate::read_timeout`) fired while the body was awaited.
fn is_timeout(err: &axum::Error) -> bool {
    caused_by(err, |e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut))
}

/// The parameters of query and body, with the share of the body budget the body took: held until the call is
/// answered, since the parameters are as big as the body was.
async fn read_params(
    app: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Params, Share), ApiError> {
    let (bytes, share) =
        read_body(body, app.settings.max_body_bytes, app.settings.read_timeout, &app.body_budget).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let params = params::parse_request(query, content_type, &bytes, &app.settings.param_limits)
        .await
        .map_err(ApiError::unreadable_params)?;
    Ok((params, share))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_3_paths_name_their_method() {
        assert_eq!(
            v3_method("/rest/api/1/code/imopenlines.crm.chat.user.delete"),
            Some("imopenlines.crm.chat.user.delete")
        );
        assert_eq!(v3_method("/rest/api/server.time/"), Some("server.time"));
        assert_eq!(v3_method("/rest/api/"), Some(""));
        assert_eq!(v3_method("/rest/api/1/secretcode/"), Some(""), "never the webhook code");
        assert_eq!(v3_method("/rest/1/code/server.time"), None);
        assert_eq!(v3_method("/rest/api"), None, "REST 2's method `api`");
    }

    #[test]
    fn runs_of_slashes_count_as_one() {
        assert_eq!(merge_slashes("/rest//imopenlines.crm.chat.get"), "/rest/imopenlines.crm.chat.get");
        assert_eq!(merge_slashes("//rest/1//code///m.json"), "/rest/1/code/m.json");
        assert!(matches!(merge_slashes("/rest/1/code/m"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn all_four_url_shapes() {
        let p = parse_path("/rest/imopenlines.crm.chat.getLastId.json").unwrap();
        assert_eq!((p.webhook, p.method.as_str(), p.format), (None, "imopenlines.crm.chat.getlastid", Format::Json));
        let p = parse_path("/rest/server.time/").unwrap();
        assert_eq!(p.method, "server.time");
        let p = parse_path("/rest/1/abc/Method.XML").unwrap();
        assert_eq!((p.webhook, p.method.as_str(), p.format), (Some(("1", "abc")), "method", Format::Xml));
        let p = parse_path("/rest/1/abc/method/").unwrap();
        assert_eq!(p.webhook, Some(("1", "abc")));
        assert!(parse_path("/rest/1/method").is_none());
        assert!(parse_path("/rest/").is_none());
        assert!(parse_path("/rest/a/b/c/d").is_none());
    }
}
