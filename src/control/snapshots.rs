//! Named snapshots of the portal's state: `POST /snapshots/{name}` saves, `…/restore` makes the state exactly
//! the snapshot (like `PUT /state`), `GET /snapshots` lists, `DELETE /snapshots/{name}` removes.
//!
//! A snapshot is the state's export (the JSON of `crmchat state export`) in `<data-dir>/snapshots/NAME.json`,
//! so it can be read, diffed and loaded with the CLI too. It is written to a temporary file, synced, and
//! renamed over the old one: a save that fails half-way leaves the previous snapshot as it was.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::state::{export_text, replace_with};
use super::{ControlError, Json};
use crate::server_state::AppState;
use crate::state::{self, Format};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/snapshots", axum::routing::get(list))
        .route("/snapshots/{name}", post(save).delete(remove))
        .route("/snapshots/{name}/restore", post(restore))
}

/// `[A-Za-z0-9_-]{1,64}`: safe as a file name everywhere, and never a path.
fn check_name(name: &str) -> Result<(), ControlError> {
    let ok =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ControlError::bad_request(
            "invalid_snapshot_name",
            format!("snapshot names are 1 to 64 of A-Z, a-z, 0-9, _ and -, not {name:?}"),
        ))
    }
}

fn file_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

fn not_found(name: &str) -> ControlError {
    ControlError::new(StatusCode::NOT_FOUND, "snapshot_not_found", format!("no snapshot named {name:?}"))
}

fn io_error(what: &str, err: std::io::Error) -> ControlError {
    tracing::error!(error = %err, "{what}");
    ControlError::new(StatusCode::INTERNAL_SERVER_ERROR, "snapshot_io_error", format!("{what}: {err}"))
}

/// `{name, created, bytes}` of a snapshot file.
fn describe(name: &str, path: &Path) -> std::io::Result<serde_json::Value> {
    let meta = std::fs::metadata(path)?;
    let created: chrono::DateTime<chrono::Utc> = meta.modified()?.into();
    let created = created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(json!({"name": name, "created": created, "bytes": meta.len()}))
}

/// `POST /snapshots/{name}`: the current state, saved. Answers the snapshot's `{name, created, bytes}`.
async fn save(State(app): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Result<Response, ControlError> {
    check_name(&name)?;
    // The export is one read transaction: a consistent state even while calls change it.
    let text = export_text(&app.store.export_state().await?)?;
    let dir = app.control.snapshots_dir.clone();
    let path = file_of(&dir, &name);
    let written = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &path, text.as_bytes()))
    };
    written
        .await
        .map_err(|e| io_error("saving the snapshot", std::io::Error::other(e)))?
        .map_err(|e| io_error("saving the snapshot", e))?;
    let description = describe(&name, &path).map_err(|e| io_error("reading the snapshot back", e))?;
    Ok(Json(description).into_response())
}

/// Writes `bytes` to a temporary file in `dir`, syncs it, renames it to `path` and syncs `dir`, so `path` is
/// either its old content or all of the new one, also after a crash.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{}.tmp-{}", path.file_name().unwrap_or_default().to_string_lossy(), {
        crate::secrets::random_alphanumeric(8)
    }));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// `POST /snapshots/{name}/restore`: the state becomes exactly the snapshot.
async fn restore(State(app): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Result<Response, ControlError> {
    let started = Instant::now();
    check_name(&name)?;
    let path = file_of(&app.control.snapshots_dir, &name);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(not_found(&name)),
        Err(err) => return Err(io_error("reading the snapshot", err)),
    };
    // A snapshot edited by hand is checked like any state document.
    let document = state::parse_document(&text, Format::Json).map_err(|e| ControlError::invalid_state(e.0))?;
    let state = state::validate(document.state).map_err(|e| ControlError::invalid_state(e.0))?;
    replace_with(&app, &state, false).await?;
    Ok(Json(json!({"ok": true, "took_ms": started.elapsed().as_millis() as u64})).into_response())
}

/// `GET /snapshots`: `[{name, created, bytes}]` by name.
async fn list(State(app): State<Arc<AppState>>) -> Result<Response, ControlError> {
    let dir = &app.control.snapshots_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Json(json!([])).into_response()),
        Err(err) => return Err(io_error("listing the snapshots", err)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
        .filter(|name| check_name(name).is_ok())
        .collect();
    names.sort();
    let mut snapshots = Vec::with_capacity(names.len());
    for name in names {
        // A snapshot removed meanwhile is simply not listed.
        if let Ok(description) = describe(&name, &file_of(dir, &name)) {
            snapshots.push(description);
        }
    }
    Ok(Json(serde_json::Value::Array(snapshots)).into_response())
}

/// `DELETE /snapshots/{name}`.
async fn remove(State(app): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Result<Response, ControlError> {
    check_name(&name)?;
    match std::fs::remove_file(file_of(&app.control.snapshots_dir, &name)) {
        Ok(()) => Ok(Json(json!({"ok": true})).into_response()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(not_found(&name)),
        Err(err) => Err(io_error("removing the snapshot", err)),
    }
}
