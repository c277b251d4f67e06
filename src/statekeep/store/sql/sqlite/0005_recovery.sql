-- What recovery needs beside the seed's snapshot tables.

-- The audit position an image was taken at: every audit row with a smaller or
-- equal id is in the image, none with a larger one. Point-in-time recovery
-- starts from the newest image at or before its target and replays the audit
-- log from here. NULL for snapshots made without one (not usable as a base).
ALTER TABLE state_snapshots ADD COLUMN audit_id INTEGER;

-- The session a one-session image covers, kept even when that session no
-- longer exists (session_id, a foreign key, is then NULL): an imported or
-- surviving image of a deleted session is exactly what recovery needs.
-- NULL for a whole-store image.
ALTER TABLE state_snapshots ADD COLUMN scope_session_id TEXT;

-- The base lookup of every recovery point reads only these columns: covered
-- by the index, it never walks the image's overflow pages (1 ms -> 3 us on a
-- store with a 6 MB image).
CREATE INDEX idx_snapshots_audit ON state_snapshots(audit_id, scope_session_id, session_id,
    created_at, id) WHERE audit_id IS NOT NULL;
