//! `crmchat events list` and `crmchat events redeliver`: the delivery log of the database, read and steered
//! without a running server. A running server's delivery worker polls the deliveries table, so what
//! `redeliver` queues is sent within moments.

use std::process::ExitCode;

use anyhow::bail;

use super::EventsCommand;
use crate::events::log::{event_json, table};
use crate::store::{self, DeliveryState, EventLogFilter};

/// `--status`: one of the delivery states.
pub(super) fn parse_state(s: &str) -> Result<DeliveryState, String> {
    DeliveryState::parse(s).ok_or_else(|| "one of pending, delivered, failed is expected".to_string())
}

pub async fn events(command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::List { status, event, limit, json, storage } => {
            let store = store::open(&storage.database_url()).await?;
            let filter = EventLogFilter { state: status, event: event.map(|e| e.to_ascii_uppercase()), limit };
            let events = store.event_log(&filter).await?;
            if json {
                let shown: Vec<serde_json::Value> = events.iter().map(event_json).collect();
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print!("{}", table(&events));
            }
        }
        EventsCommand::Redeliver { id, storage } => {
            let store = store::open(&storage.database_url()).await?;
            // Real time: a server's portal clock is never behind it, so the deliveries are due there at once.
            let now = chrono::Utc::now().timestamp_millis();
            let Some(queued) = store.redeliver(id, now).await? else {
                bail!("no event with id {id}");
            };
            println!("event {id}: {queued} deliveries queued again");
        }
    }
    Ok(ExitCode::SUCCESS)
}
