//! Integration tests: the real server, called over HTTP like a Bitrix24 client.

mod helpers;

mod backend_move;
mod batch;
mod chat_get;
mod chat_user_list;
mod clock;
mod concurrency;
mod control;
mod credentials;
mod doc_links;
mod durability;
mod effects;
mod events;
mod fixtures_cli;
mod fuzz_corpus;
mod get_last_id;
mod hostile;
mod introspection;
mod message_add;
mod oauth;
mod operating_time;
mod power_loss;
mod rate_limit;
mod readme;
mod schema;
mod sdk;
mod secrets;
mod secrets_oauth;
mod shutdown;
mod transports;
mod two_instances;
mod urls;
mod user_add;
mod user_delete_rules;
mod xml;
