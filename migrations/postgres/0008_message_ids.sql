-- Message ids from a sequence instead of MAX(id) + 1 under a lock of the whole table (SQLite's single writer
-- needs neither): the next id follows the stored ones.
CREATE SEQUENCE message_ids;
SELECT setval('message_ids', COALESCE(MAX(id), 0) + 1, false) FROM messages;
