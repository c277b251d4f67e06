-- The seed's section 3 schema on SQLite.
-- JSON columns are TEXT checked with json_valid (a JSONB declared type would
-- get NUMERIC affinity and turn the text '1' into the integer 1). Timestamps
-- are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', which sorts like time and which
-- SQLite's date functions read.

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT,
    status TEXT CHECK(status IN ('active', 'paused', 'completed', 'failed')),
    context_snapshot TEXT CHECK(context_snapshot IS NULL OR json_valid(context_snapshot)),
    metadata TEXT CHECK(metadata IS NULL OR json_valid(metadata)),
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP,
    version INTEGER DEFAULT 1
);

CREATE INDEX idx_sessions_user_id ON sessions(user_id);
CREATE INDEX idx_sessions_status ON sessions(status);
CREATE INDEX idx_sessions_start_time ON sessions(start_time DESC);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(id) ON DELETE CASCADE,
    parent_task_id TEXT REFERENCES tasks(id),
    type TEXT NOT NULL,
    status TEXT CHECK(status IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')),
    priority INTEGER DEFAULT 5,
    description TEXT,
    parameters TEXT CHECK(parameters IS NULL OR json_valid(parameters)),
    result TEXT CHECK(result IS NULL OR json_valid(result)),
    error_details TEXT CHECK(error_details IS NULL OR json_valid(error_details)),
    started_at TEXT,
    completed_at TEXT,
    duration_ms INTEGER,
    retry_count INTEGER DEFAULT 0,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_tasks_session_id ON tasks(session_id);
CREATE INDEX idx_tasks_parent_id ON tasks(parent_task_id);
CREATE INDEX idx_tasks_status ON tasks(status);
CREATE INDEX idx_tasks_type_status ON tasks(type, status);

CREATE TABLE context (
    id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(id) ON DELETE CASCADE,
    context_type TEXT NOT NULL,
    context_key TEXT NOT NULL,
    context_value TEXT NOT NULL CHECK(json_valid(context_value)),
    relevance_score REAL DEFAULT 1.0,
    access_count INTEGER DEFAULT 0,
    last_accessed TEXT DEFAULT CURRENT_TIMESTAMP,
    expires_at TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(session_id, context_type, context_key)
);

CREATE INDEX idx_context_session_type ON context(session_id, context_type);
CREATE INDEX idx_context_relevance ON context(relevance_score DESC);
CREATE INDEX idx_context_expires ON context(expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE state_snapshots (
    id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(id) ON DELETE CASCADE,
    snapshot_type TEXT CHECK(snapshot_type IN ('checkpoint', 'backup', 'recovery')),
    state_data BLOB,
    compression_type TEXT DEFAULT 'zstd',
    checksum TEXT NOT NULL,
    size_bytes INTEGER,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_snapshots_session ON state_snapshots(session_id, created_at DESC);

CREATE TABLE decisions (
    id TEXT PRIMARY KEY,
    session_id TEXT REFERENCES sessions(id),
    task_id TEXT REFERENCES tasks(id),
    decision_type TEXT NOT NULL,
    context_hash TEXT NOT NULL,
    decision_made TEXT NOT NULL,
    confidence REAL,
    autonomous INTEGER DEFAULT 0 CHECK(autonomous IN (0, 1)),
    user_override INTEGER DEFAULT 0 CHECK(user_override IN (0, 1)),
    outcome TEXT,
    feedback_score REAL,
    reasoning TEXT CHECK(reasoning IS NULL OR json_valid(reasoning)),
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_decisions_context ON decisions(context_hash);
CREATE INDEX idx_decisions_type ON decisions(decision_type);
CREATE INDEX idx_decisions_autonomous ON decisions(autonomous);

CREATE TABLE user_preferences (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    preference_type TEXT NOT NULL,
    preference_key TEXT NOT NULL,
    preference_value TEXT NOT NULL CHECK(json_valid(preference_value)),
    confidence REAL DEFAULT 0.5,
    observation_count INTEGER DEFAULT 1,
    last_observed TEXT DEFAULT CURRENT_TIMESTAMP,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(user_id, preference_type, preference_key)
);

CREATE INDEX idx_preferences_user_type ON user_preferences(user_id, preference_type);
CREATE INDEX idx_preferences_confidence ON user_preferences(confidence DESC);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    old_value TEXT CHECK(old_value IS NULL OR json_valid(old_value)),
    new_value TEXT CHECK(new_value IS NULL OR json_valid(new_value)),
    change_metadata TEXT CHECK(change_metadata IS NULL OR json_valid(change_metadata)),
    user_id TEXT,
    session_id TEXT,
    timestamp TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_audit_entity ON audit_log(entity_type, entity_id);
CREATE INDEX idx_audit_timestamp ON audit_log(timestamp DESC);
-- Not in the seed: the audit query and point-in-time replay filter by session.
CREATE INDEX idx_audit_session ON audit_log(session_id, id);

CREATE TABLE recovery_points (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    state_snapshot_id TEXT REFERENCES state_snapshots(id),
    recovery_metadata TEXT CHECK(recovery_metadata IS NULL OR json_valid(recovery_metadata)),
    created_at TEXT DEFAULT CURRENT_TIMESTAMP
);
