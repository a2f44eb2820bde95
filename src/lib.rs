//! crmchat: a self-hosted server implementing the Bitrix24 REST API for Open Channel chats bound to CRM
//! records.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod control;
pub mod domain;
pub mod error;
pub mod events;
pub mod inspector;
pub mod journal;
pub mod log_throttle;
pub mod methods;
pub mod read_timeout;
pub mod rest;
pub mod secrets;
pub mod server_state;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
