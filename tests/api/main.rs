//! Integration tests: the real server, called over HTTP like a Bitrix24 client.

mod helpers;

mod concurrency;
mod durability;
mod effects;
mod fixtures_cli;
mod sdk;
mod secrets;
mod transports;
mod urls;
mod user_delete_rules;
