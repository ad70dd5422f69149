-- Version 4: an upstream request that is mostly the client's bytes (an
-- OpenAI-compatible upstream gets the client's request with the model
-- rewritten) is kept as the bytes between those runs, in `upstream_request`,
-- and the runs as `[[at,from,len],…]` here: upstream bytes at..at+len are
-- client_request bytes from..from+len. NULL: `upstream_request` is whole.
-- The store rebuilds it on reading, and searches through
-- uniproxy_upstream_request(upstream_request, upstream_copies, client_request).
-- A 20 KB chat history was written twice into every row; now once.
ALTER TABLE bodies ADD COLUMN upstream_copies TEXT;
