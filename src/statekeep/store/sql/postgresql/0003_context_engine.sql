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
    strength DOUBLE PRECISION NOT NULL CHECK(strength >= 0 AND strength <= 1),
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL,
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
-- session is deleted, for which row triggers fire too.
CREATE TABLE context_content (
    context_id TEXT PRIMARY KEY REFERENCES context(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    blob_hash TEXT NOT NULL REFERENCES content_blobs(hash)
);

CREATE INDEX idx_context_content_blob ON context_content(blob_hash);

-- search_path is pinned to the schema the migration ran in, so the trigger
-- finds content_blobs whatever the search_path of the session that fires it.
CREATE FUNCTION statekeep_content_refs() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        UPDATE content_blobs SET ref_count = ref_count + 1 WHERE hash = NEW.blob_hash;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        UPDATE content_blobs SET ref_count = ref_count - 1 WHERE hash = OLD.blob_hash;
        DELETE FROM content_blobs WHERE hash = OLD.blob_hash AND ref_count = 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER context_content_ai AFTER INSERT ON context_content
    FOR EACH ROW EXECUTE FUNCTION statekeep_content_refs();
CREATE TRIGGER context_content_ad AFTER DELETE ON context_content
    FOR EACH ROW EXECUTE FUNCTION statekeep_content_refs();
CREATE TRIGGER context_content_au AFTER UPDATE OF blob_hash ON context_content
    FOR EACH ROW WHEN (OLD.blob_hash IS DISTINCT FROM NEW.blob_hash)
    EXECUTE FUNCTION statekeep_content_refs();

-- Full-text search over context items: the key (weight A, its path
-- punctuation turned into spaces, as PostgreSQL's parser would otherwise keep
-- "src/app/main.py" as one token), and the *string values* of the JSON value
-- (not its keys or numbers) with the item's type (weight B). A stored
-- generated column: always in step, computed once per write.
ALTER TABLE context ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, translate(context_key, '/._:', '    ')), 'A')
    || setweight(jsonb_to_tsvector('english'::regconfig, context_value, '["string"]'), 'B')
    || setweight(to_tsvector('english'::regconfig, translate(context_type, '_.:', '   ')), 'B')
) STORED;

CREATE INDEX idx_context_search ON context USING GIN (search_vector);
