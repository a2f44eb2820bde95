-- The portal served by crmchat. Kept in step with migrations/postgres (a test compares the schemas).

CREATE TABLE portal (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    domain TEXT NOT NULL,
    language TEXT NOT NULL,
    modules TEXT NOT NULL,
    plan TEXT NOT NULL,
    strict_line_permissions BOOLEAN NOT NULL,
    require_https BOOLEAN NOT NULL
);

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    kind TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    crm_read_lead TEXT NOT NULL,
    crm_read_deal TEXT NOT NULL,
    crm_read_contact TEXT NOT NULL,
    crm_read_company TEXT NOT NULL,
    line_join TEXT NOT NULL,
    line_history TEXT NOT NULL
);

CREATE TABLE crm_records (
    entity_type TEXT NOT NULL,
    id BIGINT NOT NULL,
    title TEXT NOT NULL,
    responsible BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (entity_type, id)
);

CREATE TABLE crm_observers (
    entity_type TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    position INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id, user_id),
    FOREIGN KEY (entity_type, entity_id) REFERENCES crm_records (entity_type, id) ON DELETE CASCADE
);

CREATE TABLE lines (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE line_queue (
    line_id BIGINT NOT NULL REFERENCES lines (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id),
    position INTEGER NOT NULL,
    PRIMARY KEY (line_id, user_id)
);

CREATE TABLE connectors (
    line_id BIGINT NOT NULL REFERENCES lines (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (line_id, id)
);

CREATE TABLE chats (
    id BIGINT PRIMARY KEY,
    line_id BIGINT NOT NULL REFERENCES lines (id),
    connector_id TEXT NOT NULL,
    author_id BIGINT REFERENCES users (id),
    member_count INTEGER NOT NULL,
    -- Next join sequence number: members are ordered by when they joined.
    next_join_seq BIGINT NOT NULL
);

CREATE TABLE chat_members (
    chat_id BIGINT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id),
    join_seq BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, user_id)
) WITHOUT ROWID; -- one b-tree, not a table plus its key index: a removal writes half the pages

CREATE TABLE sessions (
    id BIGINT PRIMARY KEY,
    chat_id BIGINT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    status INTEGER NOT NULL,
    modified_ms BIGINT NOT NULL
);

CREATE TABLE session_crm (
    session_id BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL,
    entity_id BIGINT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (session_id, entity_type, entity_id)
);
CREATE INDEX session_crm_by_record ON session_crm (entity_type, entity_id);

CREATE TABLE messages (
    id BIGINT PRIMARY KEY,
    chat_id BIGINT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    author_id BIGINT NOT NULL REFERENCES users (id),
    text TEXT NOT NULL,
    date_ms BIGINT NOT NULL
);
CREATE INDEX messages_by_chat ON messages (chat_id, id);

-- Messenger notifications (chatUserLeave, chatUserJoin) for the members of a chat.
-- Plain rowid keys, not AUTOINCREMENT, which would write the sqlite_sequence table on every insert; these
-- rows are never deleted, so the ids only grow anyway.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Transactional outbox: written in the same transaction as the change it describes.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_ms BIGINT
);

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id),
    code_sha256 TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE apps (
    client_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    application_token TEXT NOT NULL
);

-- One-time OAuth authorization codes (the local stand-in for the vendor's consent screen).
CREATE TABLE oauth_codes (
    code_sha256 TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES apps (client_id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id),
    expires_ms BIGINT NOT NULL
);

-- Issued OAuth token pairs; only hashes are kept. A refresh replaces the row (rotating refresh tokens).
CREATE TABLE oauth_tokens (
    access_sha256 TEXT PRIMARY KEY,
    refresh_sha256 TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL REFERENCES apps (client_id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id),
    scopes TEXT NOT NULL,
    access_expires_ms BIGINT NOT NULL,
    refresh_expires_ms BIGINT NOT NULL
);

-- Moved by every change of what servers keep in memory (see src/store/cache.rs), so they notice changes made by
-- other processes.
CREATE TABLE revision (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);
