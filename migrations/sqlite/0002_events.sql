-- Events: the handlers applications bind (event.bind), the events changes produce for them, each delivery
-- with its attempts, and offline events for applications that poll. Kept in step with migrations/postgres.

-- Bound handlers. `handler` is empty for an offline binding; `user_id` is the binding's auth_type (0: the
-- user who caused the event). The id goes out with every delivery as `event_handler_id`.
CREATE TABLE event_bindings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL REFERENCES apps (client_id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    handler TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    connector_id TEXT NOT NULL,
    -- options[minTimeout] of an ONOFFLINEEVENT binding, in seconds.
    min_timeout BIGINT,
    -- When ONOFFLINEEVENT was last queued for this binding.
    notified_ms BIGINT,
    created_ms BIGINT NOT NULL,
    UNIQUE (client_id, event, handler, user_id, connector_id)
);
CREATE INDEX event_bindings_by_event ON event_bindings (event);

-- The outbox of the first migration was written for every change and read by nobody: it is replaced by one
-- that is written only when a handler listens, and read by the delivery worker.
DROP TABLE outbox;

-- Events, written in the same transaction as the change that produced them. `user_id` caused the event;
-- `depth` is the loop guard (one more than the depth of the token the change was made with).
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    depth BIGINT NOT NULL
);

-- One per event and online binding, written with the event. The handler, application and token user are
-- copied: ONAPPUNINSTALL is delivered after its application and bindings are gone. `user_id` 0 sends no
-- token. `lease_until_ms` keeps other instances off a delivery being sent.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    event_id BIGINT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    binding_id BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    application_token TEXT NOT NULL,
    handler TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    -- pending, delivered or failed
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX deliveries_by_state ON deliveries (state, next_attempt_ms);
CREATE INDEX deliveries_by_event ON deliveries (event_id);

-- Every attempt of a delivery: HTTP status (NULL without an answer) or error, and how long it took.
CREATE TABLE delivery_attempts (
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    status BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Offline events, one row per application, connector and MESSAGE_ID (the same event again refreshes the
-- row). `process_id` is empty while the row is free; `error` 1 after event.offline.error.
CREATE TABLE offline_events (
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
    UNIQUE (client_id, connector_id, message_id)
);
CREATE INDEX offline_events_by_process ON offline_events (client_id, process_id);

-- The loop guard: a token minted for a delivery carries the event's depth.
ALTER TABLE oauth_tokens ADD COLUMN event_depth BIGINT NOT NULL DEFAULT 0;
