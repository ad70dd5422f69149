-- Version 2: who called (key hash), how many upstream tries, which fields a
-- translator dropped, the raw stream chunks, and the body size per row (used
-- by size-based retention). Adds the status and model indexes; each ends in
-- received_ms so a filtered listing, newest first, reads the index in order.
ALTER TABLE requests ADD COLUMN key_hash TEXT;
ALTER TABLE requests ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE requests ADD COLUMN dropped_fields TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN body_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bodies ADD COLUMN raw_chunks TEXT;
UPDATE requests SET body_bytes = coalesce((
    SELECT length(CAST(b.request_headers AS BLOB)) + length(CAST(b.client_request AS BLOB))
         + length(CAST(b.upstream_request AS BLOB)) + length(CAST(b.response AS BLOB))
    FROM bodies b WHERE b.id = requests.id), 0);
CREATE INDEX requests_status ON requests (status, received_ms);
CREATE INDEX requests_client_model ON requests (client_model, received_ms);
CREATE INDEX requests_actual_model ON requests (actual_model, received_ms);
