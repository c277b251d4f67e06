-- Tables the tiered memory needs (not in the seed).

-- One row per setting of the store itself; 'store_id' names the store in
-- Redis keys and invalidation channels, so two stores never share a key, and
-- every process opening this database agrees on the name.
CREATE TABLE statekeep_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Content-addressed values: a large value written many times is stored once.
-- data carries codec.compress's one-byte header; the key is the sha256 of the
-- uncompressed bytes.
CREATE TABLE content_blobs (
    hash TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    size_bytes BIGINT NOT NULL CHECK(size_bytes >= 0),
    stored_bytes BIGINT NOT NULL CHECK(stored_bytes >= 0),
    ref_count BIGINT NOT NULL DEFAULT 0 CHECK(ref_count >= 0),
    created_at TIMESTAMPTZ NOT NULL
);

-- The long-term tier of HierarchicalMemory: a value inline (small) or by
-- reference to a content blob (large), never both.
CREATE TABLE memory_entries (
    key TEXT PRIMARY KEY,
    value BYTEA,
    blob_hash TEXT REFERENCES content_blobs(hash),
    importance DOUBLE PRECISION NOT NULL CHECK(importance >= 0 AND importance <= 1),
    size_bytes BIGINT NOT NULL CHECK(size_bytes >= 0),
    access_count BIGINT NOT NULL DEFAULT 0,
    last_accessed TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CHECK((value IS NULL) <> (blob_hash IS NULL))
);

CREATE INDEX idx_memory_blob ON memory_entries(blob_hash) WHERE blob_hash IS NOT NULL;

-- Sessions moved out of the database into zstd archive files.
CREATE TABLE archive_index (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    path TEXT NOT NULL,
    checksum TEXT NOT NULL,
    size_bytes BIGINT NOT NULL CHECK(size_bytes >= 0),
    item_counts JSONB,
    last_activity TIMESTAMPTZ NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_archive_expires ON archive_index(expires_at);
CREATE INDEX idx_archive_user ON archive_index(user_id);
