//! Login sessions of the inspector: a random id in the browser's cookie, its hash and CSRF token here.
//! Kept in memory (a restart logs everyone out) and bounded: the oldest session goes when there are too many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use crate::secrets::{random_alphanumeric, sha256_hex};

/// At most this many sessions at once (browsers, test runs); past it the least recently used is dropped.
const MAX_SESSIONS: usize = 256;
/// A session unused for this long is gone.
const IDLE: Duration = Duration::from_secs(12 * 3600);

/// What the previous action answered, shown once on the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    pub title: String,
    pub ok: bool,
    pub detail: String,
}

struct Entry {
    csrf: String,
    last_seen: Instant,
    flash: Option<Flash>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

/// A logged-in request: its session and the CSRF token its forms carry.
#[derive(Clone)]
pub struct Login {
    key: String,
    csrf: String,
    sessions: Arc<Sessions>,
}

impl Sessions {
    /// A new session; the id to put in the cookie.
    pub fn create(&self) -> String {
        let id = random_alphanumeric(43);
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, e| now.duration_since(e.last_seen) < IDLE);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(sha256_hex(&id), Entry { csrf: random_alphanumeric(43), last_seen: now, flash: None });
        id
    }

    pub fn find(self: &Arc<Self>, id: &str) -> Option<Login> {
        let key = sha256_hex(id);
        let mut map = self.lock();
        let entry = map.get_mut(&key)?;
        let now = Instant::now();
        if now.duration_since(entry.last_seen) >= IDLE {
            map.remove(&key);
            return None;
        }
        entry.last_seen = now;
        let csrf = entry.csrf.clone();
        Some(Login { key, csrf, sessions: self.clone() })
    }

    pub fn remove(&self, login: &Login) {
        self.lock().remove(&login.key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Login {
    /// The hidden field every state-changing form carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    /// A form's CSRF token must be this session's: a page of another site cannot know it.
    #[allow(clippy::result_large_err)]
    pub fn check_csrf(&self, candidate: &str) -> Result<(), Response> {
        if same(candidate, &self.csrf) {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "the form's CSRF token does not match this session: reload the page\n")
                .into_response())
        }
    }

    /// Leave a message for the next page this session shows.
    pub fn set_flash(&self, flash: Flash) {
        if let Some(entry) = self.sessions.lock().get_mut(&self.key) {
            entry.flash = Some(flash);
        }
    }

    /// The message left by the previous action, once.
    pub fn take_flash(&self) -> Option<Flash> {
        let mut map = self.sessions.lock();
        map.get_mut(&self.key)?.flash.take()
    }
}

/// Constant-time equality of two secrets (their digests, so lengths leak nothing either).
pub fn same(a: &str, b: &str) -> bool {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let da: [u8; 32] = sha2::Sha256::digest(a.as_bytes()).into();
    let db: [u8; 32] = sha2::Sha256::digest(b.as_bytes()).into();
    da.ct_eq(&db).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_id_and_bounded() {
        let sessions = Arc::new(Sessions::default());
        let id = sessions.create();
        let login = sessions.find(&id).expect("the new session");
        assert!(login.check_csrf(&login.csrf).is_ok());
        assert!(login.check_csrf("forged").is_err());
        assert!(sessions.find("not-a-session").is_none());
        login.set_flash(Flash { title: "t".into(), ok: true, detail: "d".into() });
        assert_eq!(login.take_flash().map(|f| f.title), Some("t".into()));
        assert!(login.take_flash().is_none());
        for _ in 0..MAX_SESSIONS {
            sessions.create();
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        sessions.remove(&login);
        assert!(sessions.find(&id).is_none());
    }
}
