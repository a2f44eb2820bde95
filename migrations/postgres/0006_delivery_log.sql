-- Seeing and steering deliveries (GET /_crmchat/events, POST /_crmchat/events/{id}/redeliver). Kept in step
-- with the other backend's migration.

-- 1 when a delivery was queued again while it was being sent: the attempt in flight records its outcome, and
-- the delivery then stays pending (due at once) instead of taking that outcome's state.
ALTER TABLE deliveries ADD COLUMN requeued BIGINT NOT NULL DEFAULT 0;

-- The oldest pending delivery (the crmchat_event_oldest_pending_seconds gauge) without a scan of every
-- pending one, and the events with a delivery in a given state.
CREATE INDEX deliveries_by_state_event ON deliveries (state, event_id);
