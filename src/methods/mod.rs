//! The vendor methods, one function per method, each reading like its table in `docs/methods.md`.

pub mod args;
pub mod crm_chat;
pub mod event;
pub mod event_offline;
pub mod im_chat;
pub mod message;

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use crate::domain::{PortalSettings, User};
use crate::error::ApiError;
use crate::store::DynStore;

pub type Params = Map<String, Value>;

/// Everything a method may use: the store, the portal's settings and the authenticated caller. Borrowed from
/// the request: cloning the shared `Arc`s instead moved their reference counts' cache lines between the cores
/// on every request.
pub struct CallContext<'r> {
    pub store: &'r DynStore,
    pub portal: &'r PortalSettings,
    pub caller: &'r User,
    /// The scopes granted to the caller's webhook or application token.
    pub scopes: &'r [String],
    /// The OAuth application's client id; `None` for a webhook.
    pub client_id: Option<&'r str>,
    /// The call's `auth_connector` (the source key of offline events); empty when not given.
    pub auth_connector: &'r str,
    /// The call's `start` (a list method's page offset; the protocol layer takes it out of the parameters).
    pub list_start: i64,
    /// The loop guard's depth of the events this call produces (see [`crate::store::Cause`]).
    pub event_depth: i64,
    pub now_ms: i64,
}

/// A method's answer: `result`, and `total`/`next` for list methods only (a client starts paging when it
/// sees `next`).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub result: Value,
    pub total: Option<i64>,
    pub next: Option<i64>,
}

impl From<Value> for Output {
    fn from(result: Value) -> Self {
        Self { result, total: None, next: None }
    }
}

impl CallContext<'_> {
    /// Who causes the changes of this call, for their events.
    pub fn cause(&self) -> crate::store::Cause {
        let origin = self.client_id.map(|client_id| {
            std::sync::Arc::new(crate::store::offline::Origin {
                client_id: client_id.to_string(),
                connector_id: self.auth_connector.to_string(),
            })
        });
        crate::store::Cause { user_id: self.caller.id, depth: self.event_depth, origin }
    }
}

pub type MethodResult = Result<Output, ApiError>;
pub type MethodFuture<'a> = Pin<Box<dyn Future<Output = MethodResult> + Send + 'a>>;
pub type Handler = for<'a, 'r> fn(&'a CallContext<'r>, &'a Params) -> MethodFuture<'a>;
