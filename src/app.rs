//! The router, and serving it over HTTP and HTTPS with graceful shutdown. The state every handler shares is
//! [`crate::server_state`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::Code;
use crate::read_timeout::ReadTimeoutAcceptor;
use crate::rest;
use crate::rest::envelope::{Format, render_error};
use crate::server_state::{AppState, Transport};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(crate::control::readyz))
        .route("/metrics", get(crate::control::metrics::metrics))
        .merge(crate::control::router(state.clone()))
        .merge(crate::inspector::router(state.clone()))
        .route("/oauth/token/", any(rest::oauth::token))
        .route("/oauth/token", any(rest::oauth::token))
        // The OAuth server of `server_endpoint` (`…/oauth/rest/`): clients find it by taking `/rest/` off, as the
        // vendor's `https://oauth.bitrix.info/rest/` names `https://oauth.bitrix.info`, and post to its
        // `/oauth/token/` (the JS SDK's token refresh does).
        .route("/oauth/oauth/token/", any(rest::oauth::token))
        .route("/oauth/oauth/token", any(rest::oauth::token))
        // Every other path goes to the REST handler, which parses `/rest/...` itself and answers anything
        // else with the vendor's 404. A `/rest/{*path}` route would make the router copy the path into a
        // parameter nobody reads, on every call.
        .fallback(rest::handle)
        .with_state(state)
        // A panic anywhere in a handler becomes the vendor's error envelope, never a stack trace.
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            render_error(&Code::InternalServerError.into(), Format::Json)
        }))
}

/// 200 once the portal is loaded and REST calls are accepted (the listeners open only then). With Redis, the
/// detail tells whether limits are currently shared or local to this instance.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let limits = match &state.redis {
        None => "local",
        Some(redis) if redis.is_healthy() => "redis",
        Some(_) => "local (redis unreachable)",
    };
    let body = serde_json::json!({"status": "ok", "limits": limits});
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Listeners bound and ready; `serve` runs them until a shutdown signal.
pub struct Bound {
    pub http: std::net::TcpListener,
    pub https: std::net::TcpListener,
}

impl Bound {
    pub fn bind(http: SocketAddr, https: SocketAddr) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr| -> anyhow::Result<std::net::TcpListener> {
            let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        Ok(Self { http: bind(http)?, https: bind(https)? })
    }
}

/// Serve until SIGINT/SIGTERM: then stop accepting, let in-flight requests finish, return.
pub async fn serve(
    state: Arc<AppState>,
    bound: Bound,
    tls: RustlsConfig,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let (read_timeout, max_connections) = (state.settings.read_timeout, state.settings.max_connections);
    let stopping = state.stopping.clone();
    let app = router(state);
    let http_app = app.clone().layer(Extension(Transport::Http));
    let https_app = app.layer(Extension(Transport::Https));
    let handle = Handle::new();
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        shutdown.received().await;
        tracing::info!("shutting down: finishing in-flight requests");
        stopping.send_replace(true);
        signal_handle.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let connections = crate::connections::Connections::new(max_connections);
    tracing::info!(max_connections, "accepting connections");
    let silent = ReadTimeoutAcceptor { limit: read_timeout };
    let admitting = |inner| crate::connections::AdmittingMakeService { inner, connections: connections.clone() };
    let mut http = axum_server::from_tcp(bound.http).acceptor(silent.clone()).handle(handle.clone());
    limit_slow_clients(http.http_builder(), read_timeout);
    let mut https =
        axum_server::from_tcp(bound.https).acceptor(RustlsAcceptor::new(tls).acceptor(silent)).handle(handle);
    limit_slow_clients(https.http_builder(), read_timeout);
    let http = http.serve(admitting(http_app.into_make_service_with_connect_info::<SocketAddr>()));
    let https = https.serve(admitting(https_app.into_make_service_with_connect_info::<SocketAddr>()));
    tokio::try_join!(http, https)?;
    Ok(())
}

/// Cut off HTTP/2 clients that stop answering pings. HTTP/1 clients that send their headers too slowly are cut
/// off by [`ReadTimeoutAcceptor`], which needs no timer per request as hyper's header-read timeout does.
/// Idle keep-alive connections are parked tasks, not threads, so hundreds of them cost no worker.
fn limit_slow_clients(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limit: Duration,
) {
    builder.http2().timer(hyper_util::rt::TokioTimer::new()).keep_alive_timeout(limit);
    // Hyper grows a connection's read buffer to about 400 KiB while a body streams in fast: over hundreds of
    // uploads that is more than the bodies themselves (`--max-buffered-bytes`). Its cap is also the longest
    // request head accepted, 64 KiB here (longer ones are answered 431).
    builder.http1().max_buf_size(READ_BUFFER_BYTES);
}

/// The most an HTTP/1 connection buffers of what it reads, beyond the body it keeps.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// SIGINT and SIGTERM, listened to from the moment this is made: made before the server says `ready`, so a
/// signal that follows at once still shuts it down gracefully instead of killing it.
pub struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}
