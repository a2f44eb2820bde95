-- Offline events are keyed like the vendor's: application, connector, MESSAGE_ID *and* process id. A row that
-- a caller has reserved is not refreshed by the same event again: a new free row is added, so an event that
-- happens while a batch is being processed is not lost when that batch is cleared. SQLite cannot change a
-- table's constraints, so the table is rebuilt. Kept in step with migrations/postgres.
CREATE TABLE offline_events_keyed (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES apps (client_id) ON DELETE CASCADE,
    connector_id TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    process_id TEXT NOT NULL,
    error BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (client_id, connector_id, message_id, process_id)
);
INSERT INTO offline_events_keyed
    SELECT id, client_id, connector_id, event, payload, user_id, message_id, process_id, error, created_ms
    FROM offline_events;
DROP TABLE offline_events;
ALTER TABLE offline_events_keyed RENAME TO offline_events;
CREATE INDEX offline_events_by_process ON offline_events (client_id, connector_id, process_id, error);
-- event.offline.error's rows are found by their MESSAGE_ID.
CREATE INDEX offline_events_by_message ON offline_events (client_id, connector_id, message_id);
