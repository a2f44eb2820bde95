//! `ONAPPINSTALL` and `ONAPPUNINSTALL`: what an application's handlers are told when it is installed (the
//! control API's install, `crmchat app add --handler`) and removed (the control API's uninstall,
//! `crmchat app remove`). Shared by both, so that the two ways give the same events.

use serde_json::json;

use crate::domain::PortalSettings;
use crate::store::{BindingFilter, Cause, Change, DynStore, EventBinding, StoreResult};

/// The installed application's version: crmchat registers applications without one, and the vendor's
/// first version is 1.
const APP_VERSION: i64 = 1;

/// `data` of `ONAPPINSTALL`.
pub fn install_data(portal: &PortalSettings) -> String {
    json!({"VERSION": APP_VERSION, "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": portal.language}).to_string()
}

/// `data` of `ONAPPUNINSTALL`; `clean`: the application's data is to be removed too.
pub fn uninstall_data(portal: &PortalSettings, clean: bool) -> String {
    json!({"LANGUAGE_ID": portal.language, "CLEAN": i64::from(clean)}).to_string()
}

/// The application was installed by `user_id`: binds `handler` (already checked with
/// [`super::check_handler`]) to `ONAPPINSTALL` when given, and queues `ONAPPINSTALL` for every handler of the
/// application bound to it. The handlers receive a token pair of `user_id`.
pub async fn installed(
    store: &DynStore,
    client_id: &str,
    user_id: i64,
    handler: Option<&str>,
    at_ms: i64,
) -> StoreResult<u64> {
    if let Some(handler) = handler {
        let binding = EventBinding {
            id: 0,
            client_id: client_id.to_string(),
            event: "ONAPPINSTALL".into(),
            handler: handler.to_string(),
            // The user who installs it: every installation delivers the installer's tokens.
            user_id: 0,
            connector_id: String::new(),
            min_timeout: None,
        };
        // Installed again with the same handler: the binding exists already, which is as good.
        store.add_binding(&binding, at_ms).await?;
    }
    let portal = store.portal().await?;
    emit(store, "ONAPPINSTALL", install_data(&portal), client_id, user_id, at_ms).await
}

/// The application is being removed: queues `ONAPPUNINSTALL` for its handlers (delivered without tokens, as
/// the application's access is gone), then removes every binding of the application. How many bindings went.
pub async fn uninstalling(store: &DynStore, client_id: &str, clean: bool, at_ms: i64) -> StoreResult<u64> {
    let portal = store.portal().await?;
    emit(store, "ONAPPUNINSTALL", uninstall_data(&portal, clean), client_id, 0, at_ms).await?;
    let mut unbound = 0;
    let mut seen = std::collections::HashSet::new();
    for binding in store.bindings(client_id).await? {
        if seen.insert((binding.event.clone(), binding.handler.clone())) {
            let filter = BindingFilter {
                client_id: client_id.to_string(),
                event: binding.event,
                handler: binding.handler,
                user_id: None,
                connector_id: None,
            };
            unbound += store.remove_bindings(&filter).await?;
        }
    }
    Ok(unbound)
}

/// How many deliveries the event got.
async fn emit(
    store: &DynStore,
    event: &'static str,
    payload: String,
    client_id: &str,
    user_id: i64,
    at_ms: i64,
) -> StoreResult<u64> {
    let change = Change::Emit {
        event,
        payload,
        client_id: client_id.to_string(),
        at_ms,
        cause: Cause { user_id, depth: 0, origin: None },
    };
    match store.apply(change).await? {
        crate::store::ChangeOutcome::Emitted(count) => Ok(count),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_has_the_vendors_fields() {
        let portal = PortalSettings { language: "de".into(), ..PortalSettings::default() };
        let install: serde_json::Value = serde_json::from_str(&install_data(&portal)).unwrap();
        assert_eq!(install, json!({"VERSION": 1, "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "de"}));
        let uninstall: serde_json::Value = serde_json::from_str(&uninstall_data(&portal, true)).unwrap();
        assert_eq!(uninstall, json!({"LANGUAGE_ID": "de", "CLEAN": 1}));
    }
}
