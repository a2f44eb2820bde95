-- portal.events.retries of the state file: how many times a failed event delivery is tried again (0: the
-- vendor's single attempt). Kept in step with the other backend's migration.
ALTER TABLE portal ADD COLUMN event_retries BIGINT NOT NULL DEFAULT 10;
