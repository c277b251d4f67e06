-- Tables the tiered memory needs (not in the seed).

-- One row per setting of the store itself; 'store_id' names the store in
-- Redis keys and invalidation channels, so two stores never share a key, and
-- every process opening this database (by any path) agrees on the name.
CREATE TABLE statekeep_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Content-addressed values: a large value written many times is stored once.
-- data carries codec.compress's one-byte header; checksum is the sha256 of
-- the uncompressed bytes, which is also the key.
CREATE TABLE content_blobs (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    size_bytes INTEGER NOT NULL CHECK(size_bytes >= 0),
    stored_bytes INTEGER NOT NULL CHECK(stored_bytes >= 0),
    ref_count INTEGER NOT NULL DEFAULT 0 CHECK(ref_count >= 0),
    created_at TEXT NOT NULL
);

-- The long-term tier of HierarchicalMemory: a value inline (small) or by
-- reference to a content blob (large), never both.
CREATE TABLE memory_entries (
    key TEXT PRIMARY KEY,
    value BLOB,
    blob_hash TEXT REFERENCES content_blobs(hash),
    importance REAL NOT NULL CHECK(importance >= 0 AND importance <= 1),
    size_bytes INTEGER NOT NULL CHECK(size_bytes >= 0),
    access_count INTEGER NOT NULL DEFAULT 0,
    last_accessed TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK((value IS NULL) <> (blob_hash IS NULL))
);

CREATE INDEX idx_memory_blob ON memory_entries(blob_hash) WHERE blob_hash IS NOT NULL;

-- Sessions moved out of the database into zstd archive files.
CREATE TABLE archive_index (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    path TEXT NOT NULL,
    checksum TEXT NOT NULL,
    size_bytes INTEGER NOT NULL CHECK(size_bytes >= 0),
    item_counts TEXT CHECK(item_counts IS NULL OR json_valid(item_counts)),
    last_activity TEXT NOT NULL,
    archived_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE INDEX idx_archive_expires ON archive_index(expires_at);
CREATE INDEX idx_archive_user ON archive_index(user_id);
