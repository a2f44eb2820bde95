//! `crmchat webhook …` and `crmchat app …`: credentials management. A running server reads credentials from
//! the database on every call, so changes take effect without a restart.

use std::process::ExitCode;

use anyhow::{Context, bail};

use super::{AppCommand, WebhookCommand};
use crate::events::{HandlerUrlError, check_handler, lifecycle};
use crate::rest::registry::all_scopes;
use crate::secrets::new_secret;
use crate::secrets::{random_alphanumeric, sha256_hex};
use crate::store::{self, AppRecord, AuthCode, DynStore, OutgoingWebhook};

/// Authorization codes are short-lived, as on the vendor's consent screen.
const AUTH_CODE_TTL_MS: i64 = 30_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn check_scopes(scopes: &[String]) -> anyhow::Result<Vec<String>> {
    let known = all_scopes();
    let mut out: Vec<String> = Vec::new();
    for scope in scopes.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !known.contains(&scope) {
            bail!("unknown scope {scope:?} (known: {})", known.join(", "));
        }
        if !out.iter().any(|s| s == scope) {
            out.push(scope.to_string());
        }
    }
    if out.is_empty() {
        bail!("at least one scope is required (known: {})", known.join(", "));
    }
    Ok(out)
}

/// The events an outgoing webhook can be sent: those of the portal's changes (not an application's own
/// lifecycle events), upper-cased, sorted, without repeats.
fn check_outgoing_events(events: &[String]) -> anyhow::Result<Vec<String>> {
    let allowed: Vec<&str> = crate::events::EVENTS.iter().filter(|e| e.scope.is_some()).map(|e| e.name).collect();
    let mut out: Vec<String> = Vec::new();
    for event in events.iter().map(|e| e.trim().to_ascii_uppercase()).filter(|e| !e.is_empty()) {
        if !crate::events::is_portal_event(&event) {
            bail!("--event {event:?}: not an event an outgoing webhook can be sent (known: {})", allowed.join(", "));
        }
        out.push(event);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("at least one --event is required (known: {})", allowed.join(", "));
    }
    Ok(out)
}

fn check_handler_arg(handler: &str) -> anyhow::Result<()> {
    check_handler(handler).map_err(|e| match e {
        HandlerUrlError::WrongUrl => {
            anyhow::anyhow!("--handler {handler:?}: its host needs a dot after the first character")
        }
        HandlerUrlError::UnsupportedProtocol => {
            anyhow::anyhow!("--handler {handler:?}: only http and https are supported")
        }
    })
}

/// The active administrator with the lowest id.
async fn first_admin(store: &DynStore) -> anyhow::Result<i64> {
    let state = store.export_structure().await?;
    for def in &state.users {
        if let Some(user) = store.user(def.id).await?
            && user.active
            && user.admin
        {
            return Ok(user.id);
        }
    }
    bail!("the portal has no active administrator to install the application; name one with --user")
}

async fn require_user(store: &DynStore, user: i64) -> anyhow::Result<()> {
    match store.user(user).await? {
        Some(u) if u.active => Ok(()),
        Some(_) => bail!("user {user} is deactivated"),
        None => bail!("user {user} does not exist"),
    }
}

pub async fn webhook(command: WebhookCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhookCommand::Add { outgoing: true, event, handler, storage, .. } => {
            let events = check_outgoing_events(&event)?;
            let handler = handler.unwrap_or_default();
            check_handler_arg(&handler)?;
            let store = store::open(&storage.database_url()).await?;
            let webhook = OutgoingWebhook {
                id: 0,
                handler: handler.clone(),
                events,
                application_token: new_secret(),
                created_ms: now_ms(),
            };
            let id = store.add_outgoing_webhook(&webhook).await?;
            println!("outgoing webhook {id}: {} -> {handler}", webhook.events.join(","));
            println!("application_token: {}", webhook.application_token);
            eprintln!("Every delivery carries auth[application_token]; check it in the handler.");
        }
        WebhookCommand::Add { user, scope, base_url, storage, .. } => {
            let user = user.context("--user is required")?;
            let scopes = check_scopes(&scope)?;
            let store = store::open(&storage.database_url()).await?;
            require_user(&store, user).await?;
            let code = random_alphanumeric(24);
            let id = store.add_webhook(user, &sha256_hex(&code), &scopes, now_ms()).await?;
            println!("webhook {id}: {}/rest/{user}/{code}/", base_url.trim_end_matches('/'));
            eprintln!("The code is shown only now; crmchat keeps only its hash.");
        }
        WebhookCommand::List { storage } => {
            let store = store::open(&storage.database_url()).await?;
            println!("{:>6}  {:>8}  {:<24}  created", "id", "user", "scopes");
            for hook in store.list_webhooks().await? {
                let created = crate::store::ms_to_rfc3339(hook.created_ms);
                println!("{:>6}  {:>8}  {:<24}  {created}", hook.id, hook.user_id, hook.scopes.join(","));
            }
            let outgoing = store.list_outgoing_webhooks().await?;
            if !outgoing.is_empty() {
                println!();
                println!("outgoing webhooks (application tokens are not shown):");
                println!("{:>6}  {:<40}  {:<32}  created", "id", "events", "handler");
                for hook in outgoing {
                    let created = crate::store::ms_to_rfc3339(hook.created_ms);
                    println!("{:>6}  {:<40}  {:<32}  {created}", hook.id, hook.events.join(","), hook.handler);
                }
            }
        }
        WebhookCommand::Revoke { id, outgoing: true, storage } => {
            let store = store::open(&storage.database_url()).await?;
            if !store.remove_outgoing_webhook(id).await? {
                bail!("no outgoing webhook with id {id}");
            }
            println!("outgoing webhook {id} removed");
        }
        WebhookCommand::Revoke { id, storage, .. } => {
            let store = store::open(&storage.database_url()).await?;
            if !store.revoke_webhook(id).await? {
                bail!("no webhook with id {id}");
            }
            println!("webhook {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn app(command: AppCommand) -> anyhow::Result<ExitCode> {
    match command {
        AppCommand::Add { client_id, scope, handler, user, storage } => {
            let scopes = check_scopes(&scope)?;
            if client_id.trim().is_empty() {
                bail!("the client id must not be empty");
            }
            if let Some(handler) = &handler {
                check_handler_arg(handler)?;
            }
            let store = store::open(&storage.database_url()).await?;
            let installer = match (&handler, user) {
                (None, _) => None,
                (Some(_), Some(user)) => {
                    require_user(&store, user).await?;
                    Some(user)
                }
                (Some(_), None) => Some(first_admin(&store).await?),
            };
            let secret = new_secret();
            let application_token = new_secret();
            let record = AppRecord {
                client_id: client_id.clone(),
                secret_sha256: sha256_hex(&secret),
                scopes,
                application_token: application_token.clone(),
            };
            if !store.add_app(&record).await? {
                bail!("an application {client_id:?} exists already");
            }
            println!("client_id: {client_id}");
            println!("client_secret: {secret}");
            println!("application_token: {application_token}");
            eprintln!("The client secret is shown only now; crmchat keeps only its hash.");
            if let (Some(handler), Some(user)) = (&handler, installer) {
                lifecycle::installed(&store, &client_id, user, Some(handler), now_ms()).await?;
                eprintln!("Installed by user {user}: ONAPPINSTALL is queued; a running crmchat serve delivers it.");
            }
        }
        AppCommand::List { storage } => {
            let store = store::open(&storage.database_url()).await?;
            for app in store.list_apps().await? {
                println!("{}  {}", app.client_id, app.scopes.join(","));
            }
        }
        AppCommand::Remove { client_id, clean, storage } => {
            let store = store::open(&storage.database_url()).await?;
            if store.app(&client_id).await?.is_none() {
                bail!("no application {client_id:?}");
            }
            // Queued while the application still exists: the deliveries carry its application token.
            lifecycle::uninstalling(&store, &client_id, clean, now_ms()).await?;
            if !store.remove_app(&client_id).await? {
                bail!("no application {client_id:?}");
            }
            println!("application {client_id} removed");
        }
        AppCommand::Code { client_id, user, storage } => {
            let store = store::open(&storage.database_url()).await?;
            store.app(&client_id).await?.with_context(|| format!("no application {client_id:?}"))?;
            require_user(&store, user).await?;
            let code = random_alphanumeric(32);
            let grant = AuthCode { client_id, user_id: user, expires_ms: now_ms() + AUTH_CODE_TTL_MS };
            store.add_auth_code(&sha256_hex(&code), &grant).await?;
            println!("{code}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
