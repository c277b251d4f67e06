-- Tables state synchronisation and preference learning need (not in the seed).

-- Shared state that components synchronise, one row per (scope, key). The
-- version is bumped by every committed write; a write based on an older
-- version than this one is a concurrent modification.
CREATE TABLE sync_state (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL CHECK(json_valid(value)),
    version INTEGER NOT NULL CHECK(version >= 1),
    component TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

-- The version of each key a component last read or wrote: the base of its
-- next write when the caller does not give one. Kept in the store so that it
-- holds across processes and restarts.
CREATE TABLE sync_seen (
    scope TEXT NOT NULL,
    component TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL CHECK(version >= 0),
    PRIMARY KEY (scope, component, key)
);

-- Conflicts a person decides. The key keeps its current value meanwhile; a
-- newer proposal from the same component replaces its pending one.
CREATE TABLE sync_conflicts (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    component TEXT NOT NULL,
    base_version INTEGER NOT NULL CHECK(base_version >= 0),
    current_version INTEGER NOT NULL CHECK(current_version >= 1),
    current_value TEXT NOT NULL CHECK(json_valid(current_value)),
    proposed_value TEXT NOT NULL CHECK(json_valid(proposed_value)),
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK(status IN ('pending', 'resolved', 'superseded')),
    resolution TEXT CHECK(resolution IS NULL OR resolution IN
        ('current', 'proposed', 'merge', 'value')),
    resolved_value TEXT CHECK(resolved_value IS NULL OR json_valid(resolved_value)),
    resolved_by TEXT,
    created_at TEXT NOT NULL,
    resolved_at TEXT
);

CREATE UNIQUE INDEX idx_sync_conflicts_one_pending
    ON sync_conflicts(scope, key, component) WHERE status = 'pending';
CREATE INDEX idx_sync_conflicts_status ON sync_conflicts(status, created_at);

-- Decisions keep the (canonical) context they were made in, so that similar
-- past decisions can be found by nearness, not only by equal hashes.
ALTER TABLE decisions ADD COLUMN context TEXT CHECK(context IS NULL OR json_valid(context));
CREATE INDEX idx_decisions_type_created ON decisions(decision_type, created_at DESC);

-- Preference learning keeps its evidence (a Beta distribution's two
-- parameters, decayed with age) beside the value it supports.
ALTER TABLE user_preferences ADD COLUMN evidence_for REAL NOT NULL DEFAULT 1.0
    CHECK(evidence_for > 0);
ALTER TABLE user_preferences ADD COLUMN evidence_against REAL NOT NULL DEFAULT 1.0
    CHECK(evidence_against > 0);
