-- Outgoing webhooks: Bitrix24's "local integration" that posts chosen events to one URL, with an
-- application_token of its own and no OAuth tokens in the deliveries. Kept in step with migrations/postgres.
-- The id goes out with every delivery as `event_handler_id`.
CREATE TABLE outgoing_webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handler TEXT NOT NULL,
    application_token TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

-- The events each outgoing webhook is sent.
CREATE TABLE outgoing_webhook_events (
    webhook_id BIGINT NOT NULL REFERENCES outgoing_webhooks (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    PRIMARY KEY (webhook_id, event)
);
CREATE INDEX outgoing_webhook_events_by_event ON outgoing_webhook_events (event);
