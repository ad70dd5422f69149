-- Version 1: the first released schema. Small, indexed metadata lives in
-- `requests`; the large bodies live in `bodies`, keyed by the same id, so that
-- listing and counting never read a body page.
CREATE TABLE requests (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        TEXT    NOT NULL,
    received_ms       INTEGER NOT NULL,
    first_byte_ms     INTEGER,
    finished_ms       INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    client_model      TEXT    NOT NULL,
    actual_model      TEXT    NOT NULL,
    platform          TEXT    NOT NULL,
    stream            INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    error_type        TEXT,
    error_message     TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    cached_tokens     INTEGER,
    reasoning_tokens  INTEGER,
    client_addr       TEXT,
    user_agent        TEXT
);
CREATE TABLE bodies (
    id               INTEGER PRIMARY KEY,
    request_headers  TEXT NOT NULL,
    client_request   TEXT NOT NULL,
    upstream_request TEXT NOT NULL,
    response         TEXT NOT NULL
);
CREATE INDEX requests_received_ms ON requests (received_ms);
