-- What the context engine keeps beside the context items: the relation graph,
-- the full content of captured files, and a full-text index.

-- Directed, typed edges between two items of one session. session_id is
-- redundant with the items' own, on purpose: the graph queries filter on it
-- (a session's walk never reads another session's edges) and deleting a
-- session removes its edges without going through the items.
CREATE TABLE context_relations (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    source_id TEXT NOT NULL REFERENCES context(id) ON DELETE CASCADE,
    target_id TEXT NOT NULL REFERENCES context(id) ON DELETE CASCADE,
    relation_type TEXT NOT NULL
        CHECK(relation_type IN ('dependency', 'calls', 'references', 'defines', 'related')),
    strength REAL NOT NULL CHECK(strength >= 0 AND strength <= 1),
    metadata TEXT CHECK(metadata IS NULL OR json_valid(metadata)),
    created_at TEXT NOT NULL,
    CHECK(source_id <> target_id),
    UNIQUE(source_id, target_id, relation_type)
);

-- The UNIQUE index serves lookups by source_id; these serve the session's
-- graph and the walk in the other direction.
CREATE INDEX idx_relations_session ON context_relations(session_id);
CREATE INDEX idx_relations_target ON context_relations(target_id);

-- A context item's full content (a captured file's text), stored once per
-- distinct content in content_blobs. The triggers below keep
-- content_blobs.ref_count equal to the references wherever a link comes from
-- or goes -- including the rows ON DELETE CASCADE removes when an item or a
-- session is deleted, for which SQLite fires these triggers too.
CREATE TABLE context_content (
    context_id TEXT PRIMARY KEY REFERENCES context(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    blob_hash TEXT NOT NULL REFERENCES content_blobs(hash)
);

CREATE INDEX idx_context_content_blob ON context_content(blob_hash);

CREATE TRIGGER context_content_ai AFTER INSERT ON context_content BEGIN
    UPDATE content_blobs SET ref_count = ref_count + 1 WHERE hash = NEW.blob_hash;
END;

CREATE TRIGGER context_content_ad AFTER DELETE ON context_content BEGIN
    UPDATE content_blobs SET ref_count = ref_count - 1 WHERE hash = OLD.blob_hash;
    DELETE FROM content_blobs WHERE hash = OLD.blob_hash AND ref_count = 0;
END;

CREATE TRIGGER context_content_au AFTER UPDATE OF blob_hash ON context_content
WHEN OLD.blob_hash IS NOT NEW.blob_hash BEGIN
    UPDATE content_blobs SET ref_count = ref_count + 1 WHERE hash = NEW.blob_hash;
    UPDATE content_blobs SET ref_count = ref_count - 1 WHERE hash = OLD.blob_hash;
    DELETE FROM content_blobs WHERE hash = OLD.blob_hash AND ref_count = 0;
END;

-- Full-text search over context items: the key, and the *string values* of
-- the JSON value (not its keys, numbers or punctuation) with the item's type.
-- Contentless (content=''): the text already lives in context, so the index
-- holds only terms. Its rowid is the context row's rowid, which VACUUM may
-- renumber -- Store.reindex_search rebuilds the index after one. This SQLite
-- predates contentless_delete, so a row leaves the index through the 'delete'
-- command given exactly the terms it was indexed with: they are always
-- computed by the same expression from the row's stored columns.
CREATE VIRTUAL TABLE context_fts USING fts5(
    key, body, content = '', tokenize = 'porter unicode61'
);

-- The triggers do not write the index themselves. FTS5 flushes its pending
-- terms at every statement boundary, so a row-at-a-time write (executemany)
-- makes one index segment per row and spends its time merging them (100,000
-- items took 2.2 times as long to insert), and a one-item transaction pays a
-- segment flush that halves the rate of single writes. The triggers queue the changed rows
-- instead -- rows to index, and the columns a row had when it was indexed --
-- and Store.sync_search indexes both queues with set-based statements before
-- every search (and snapshot), so a search still sees every committed write.
-- A row may sit in both queues (re-indexed after an update): the old terms
-- are removed first.
CREATE TABLE context_fts_pending (
    item_rowid INTEGER PRIMARY KEY
);

CREATE TABLE context_fts_gone (
    item_rowid INTEGER PRIMARY KEY,
    context_type TEXT NOT NULL,
    context_key TEXT NOT NULL,
    context_value TEXT NOT NULL
);

CREATE TRIGGER context_fts_ai AFTER INSERT ON context BEGIN
    INSERT OR IGNORE INTO context_fts_pending (item_rowid) VALUES (NEW.rowid);
END;

-- A row still queued was never indexed: it just leaves the queue.
CREATE TRIGGER context_fts_ad AFTER DELETE ON context BEGIN
    INSERT OR IGNORE INTO context_fts_gone (item_rowid, context_type, context_key, context_value)
    SELECT OLD.rowid, OLD.context_type, OLD.context_key, OLD.context_value
    WHERE NOT EXISTS (SELECT 1 FROM context_fts_pending WHERE item_rowid = OLD.rowid);
    DELETE FROM context_fts_pending WHERE item_rowid = OLD.rowid;
END;

-- Only a change of the indexed columns touches the index: the batched
-- access-count updates never do.
CREATE TRIGGER context_fts_au AFTER UPDATE OF context_key, context_type, context_value ON context
WHEN OLD.context_value IS NOT NEW.context_value OR OLD.context_key IS NOT NEW.context_key
    OR OLD.context_type IS NOT NEW.context_type BEGIN
    INSERT OR IGNORE INTO context_fts_gone (item_rowid, context_type, context_key, context_value)
    SELECT OLD.rowid, OLD.context_type, OLD.context_key, OLD.context_value
    WHERE NOT EXISTS (SELECT 1 FROM context_fts_pending WHERE item_rowid = OLD.rowid);
    INSERT OR IGNORE INTO context_fts_pending (item_rowid) VALUES (NEW.rowid);
END;

-- Items stored before this migration.
INSERT INTO context_fts (rowid, key, body)
SELECT c.rowid, c.context_key,
       COALESCE((SELECT group_concat(j.value, ' ') FROM json_tree(c.context_value) AS j
                 WHERE j.type = 'text'), '') || ' ' || c.context_type
FROM context AS c;
