-- Offline events are keyed like the vendor's: application, connector, MESSAGE_ID *and* process id. A row that
-- a caller has reserved is not refreshed by the same event again: a new free row is added, so an event that
-- happens while a batch is being processed is not lost when that batch is cleared. Kept in step with
-- migrations/sqlite.
ALTER TABLE offline_events DROP CONSTRAINT offline_events_client_id_connector_id_message_id_key;
ALTER TABLE offline_events ADD CONSTRAINT offline_events_key UNIQUE (client_id, connector_id, message_id, process_id);
DROP INDEX offline_events_by_process;
CREATE INDEX offline_events_by_process ON offline_events (client_id, connector_id, process_id, error);
CREATE INDEX offline_events_by_message ON offline_events (client_id, connector_id, message_id);
