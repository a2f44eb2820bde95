//! The method registry: every vendor method crmchat serves, with its scope and handler; and the global methods
//! that describe this table to a caller (`scope`, `methods`, `method.get`).

use serde_json::{Value, json};

use super::introspection;
use crate::methods::args::is_empty;
use crate::methods::{CallContext, Handler, MethodResult, Params, crm_chat, event, event_offline, im_chat, message};

pub enum Kind {
    Method(Handler),
    /// `batch` runs other methods and so lives in the protocol layer.
    Batch,
}

pub struct MethodDef {
    /// Lower-case, as the URL's method segment is matched after lower-casing.
    pub name: &'static str,
    /// `None` for global methods that need no scope.
    pub scope: Option<&'static str>,
    pub kind: Kind,
}

macro_rules! method {
    ($name:literal, $scope:expr, $f:path) => {
        MethodDef { name: $name, scope: $scope, kind: Kind::Method(|ctx, params| Box::pin($f(ctx, params))) }
    };
}

pub static METHODS: &[MethodDef] = &[
    MethodDef { name: "batch", scope: None, kind: Kind::Batch },
    method!("scope", None, scope),
    method!("methods", None, methods),
    method!("method.get", None, method_get),
    method!("server.time", None, introspection::server_time),
    method!("profile", None, introspection::profile),
    method!("app.info", None, introspection::app_info),
    method!("events", None, event::list),
    method!("event.bind", None, event::bind),
    method!("event.unbind", None, event::unbind),
    method!("event.get", None, event::get),
    method!("event.test", None, event::test),
    method!("event.offline.get", None, event_offline::get),
    method!("event.offline.clear", None, event_offline::clear),
    method!("event.offline.error", None, event_offline::error),
    method!("event.offline.list", None, event_offline::list_events),
    method!("imopenlines.crm.chat.user.delete", Some("imopenlines"), crm_chat::user_delete),
    method!("imopenlines.crm.chat.user.add", Some("imopenlines"), crm_chat::user_add),
    method!("imopenlines.crm.chat.getlastid", Some("imopenlines"), crm_chat::get_last_id),
    method!("imopenlines.crm.chat.get", Some("imopenlines"), crm_chat::get),
    method!("imopenlines.crm.message.add", Some("imopenlines"), message::add),
    method!("im.chat.user.list", Some("im"), im_chat::user_list),
];

pub fn find(name: &str) -> Option<&'static MethodDef> {
    position(name).map(|i| &METHODS[i])
}

/// Where `name` is in [`METHODS`] (per-method tables are indexed by it).
pub fn position(name: &str) -> Option<usize> {
    METHODS.iter().position(|m| m.name == name)
}

/// Every scope some method belongs to, sorted.
pub fn all_scopes() -> Vec<&'static str> {
    let mut scopes: Vec<&'static str> = METHODS.iter().filter_map(|m| m.scope).collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// PHP truthiness of a flag such as `full=true`.
fn flag(params: &Params, name: &str) -> bool {
    !is_empty(params.get(name))
}

pub async fn scope(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    if flag(params, "full") {
        return Ok(json!(all_scopes()).into());
    }
    Ok(json!(ctx.scopes).into())
}

pub async fn methods(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let names: Vec<&str> = if flag(params, "full") {
        METHODS.iter().map(|m| m.name).collect()
    } else if let Some(Value::String(scope)) = params.get("scope") {
        METHODS.iter().filter(|m| m.scope == Some(scope.as_str())).map(|m| m.name).collect()
    } else {
        METHODS.iter().filter(|m| m.scope.is_none_or(|s| ctx.scopes.iter().any(|g| g == s))).map(|m| m.name).collect()
    };
    Ok(json!(names).into())
}

pub async fn method_get(ctx: &CallContext<'_>, params: &Params) -> MethodResult {
    let name = match params.get("name") {
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    let method = find(&name);
    let available = method.is_some_and(|m| m.scope.is_none_or(|s| ctx.scopes.iter().any(|g| g == s)));
    Ok(json!({"isExisting": method.is_some(), "isAvailable": available}).into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_lower_case_and_unique() {
        let mut names: Vec<&str> = super::METHODS.iter().map(|m| m.name).collect();
        assert!(names.iter().all(|n| *n == n.to_lowercase()));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), super::METHODS.len());
    }
}
