"""The seed's section 3 schema is the contract: tables, columns, CHECKs, UNIQUEs,
foreign keys with their ON DELETE rules, defaults and indexes -- on every backend.

These tests talk raw SQL through the store's own connection, so they see the
database exactly as another program would.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from statekeep import ConflictError, DuplicateError, StatekeepError, Store, ValidationError

SEED_COLUMNS: dict[str, list[str]] = {
    "sessions": ["id", "user_id", "start_time", "end_time", "status", "context_snapshot",
                 "metadata", "created_at", "updated_at", "version"],
    "tasks": ["id", "session_id", "parent_task_id", "type", "status", "priority",
              "description", "parameters", "result", "error_details", "started_at",
              "completed_at", "duration_ms", "retry_count", "created_at", "updated_at"],
    "context": ["id", "session_id", "context_type", "context_key", "context_value",
                "relevance_score", "access_count", "last_accessed", "expires_at",
                "created_at", "updated_at"],
    "state_snapshots": ["id", "session_id", "snapshot_type", "state_data",
                        "compression_type", "checksum", "size_bytes", "created_at"],
    "decisions": ["id", "session_id", "task_id", "decision_type", "context_hash",
                  "decision_made", "confidence", "autonomous", "user_override", "outcome",
                  "feedback_score", "reasoning", "created_at"],
    "user_preferences": ["id", "user_id", "preference_type", "preference_key",
                         "preference_value", "confidence", "observation_count",
                         "last_observed", "created_at", "updated_at"],
    "audit_log": ["id", "event_type", "entity_type", "entity_id", "old_value", "new_value",
                  "change_metadata", "user_id", "session_id", "timestamp"],
    "recovery_points": ["id", "name", "description", "state_snapshot_id",
                        "recovery_metadata", "created_at"],
}

SEED_NOT_NULL: dict[str, set[str]] = {
    "sessions": {"user_id", "start_time"},
    "tasks": {"type"},
    "context": {"context_type", "context_key", "context_value"},
    "state_snapshots": {"checksum"},
    "decisions": {"decision_type", "context_hash", "decision_made"},
    "user_preferences": {"user_id", "preference_type", "preference_key", "preference_value"},
    "audit_log": {"event_type", "entity_type", "entity_id"},
    "recovery_points": {"name"},
}

# name -> (table, indexed columns as written in the seed)
SEED_INDEXES: dict[str, tuple[str, str]] = {
    "idx_sessions_user_id": ("sessions", "user_id"),
    "idx_sessions_status": ("sessions", "status"),
    "idx_sessions_start_time": ("sessions", "start_time DESC"),
    "idx_tasks_session_id": ("tasks", "session_id"),
    "idx_tasks_parent_id": ("tasks", "parent_task_id"),
    "idx_tasks_status": ("tasks", "status"),
    "idx_tasks_type_status": ("tasks", "type, status"),
    "idx_context_session_type": ("context", "session_id, context_type"),
    "idx_context_relevance": ("context", "relevance_score DESC"),
    "idx_context_expires": ("context", "expires_at"),
    "idx_snapshots_session": ("state_snapshots", "session_id, created_at DESC"),
    "idx_decisions_context": ("decisions", "context_hash"),
    "idx_decisions_type": ("decisions", "decision_type"),
    "idx_decisions_autonomous": ("decisions", "autonomous"),
    "idx_preferences_user_type": ("user_preferences", "user_id, preference_type"),
    "idx_preferences_confidence": ("user_preferences", "confidence DESC"),
    "idx_audit_entity": ("audit_log", "entity_type, entity_id"),
    "idx_audit_timestamp": ("audit_log", "timestamp DESC"),
}

# (table, column) -> (referenced table, referenced column, ON DELETE rule)
SEED_FOREIGN_KEYS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("tasks", "session_id"): ("sessions", "id", "CASCADE"),
    ("tasks", "parent_task_id"): ("tasks", "id", "NO ACTION"),
    ("context", "session_id"): ("sessions", "id", "CASCADE"),
    ("state_snapshots", "session_id"): ("sessions", "id", "CASCADE"),
    ("decisions", "session_id"): ("sessions", "id", "NO ACTION"),
    ("decisions", "task_id"): ("tasks", "id", "NO ACTION"),
    ("recovery_points", "state_snapshot_id"): ("state_snapshots", "id", "NO ACTION"),
}

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _exec(store: Store, sql: str, params: tuple[Any, ...] = ()) -> None:
    with store.atomic() as conn:
        conn.execute(sql, params)


def _rows(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with store.reading() as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def _columns(store: Store, table: str) -> dict[str, bool]:
    """column name -> NOT NULL?"""
    if store.dialect == "sqlite":
        return {r[1]: bool(r[3]) for r in _rows(store, f"PRAGMA table_info({table})")}
    return {r[0]: r[1] == "NO" for r in _rows(
        store, "SELECT column_name, is_nullable FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?", (table,))}


def _foreign_keys(store: Store) -> dict[tuple[str, str], tuple[str, str, str]]:
    out: dict[tuple[str, str], tuple[str, str, str]] = {}
    if store.dialect == "sqlite":
        for table in SEED_COLUMNS:
            for r in _rows(store, f"PRAGMA foreign_key_list({table})"):
                out[(table, r[3])] = (r[2], r[4], r[6].upper())
        return out
    rules = {"a": "NO ACTION", "c": "CASCADE", "r": "RESTRICT", "n": "SET NULL",
             "d": "SET DEFAULT"}
    for r in _rows(store, """
            SELECT cl.relname, att.attname, rcl.relname, ratt.attname, con.confdeltype
            FROM pg_constraint con
            JOIN pg_class cl ON cl.oid = con.conrelid
            JOIN pg_namespace ns ON ns.oid = cl.relnamespace
            JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = con.conkey[1]
            JOIN pg_class rcl ON rcl.oid = con.confrelid
            JOIN pg_attribute ratt
              ON ratt.attrelid = con.confrelid AND ratt.attnum = con.confkey[1]
            WHERE con.contype = 'f' AND ns.nspname = current_schema()"""):
        out[(r[0], r[1])] = (r[2], r[3], rules[str(r[4])])
    return out


def _index(store: Store, name: str) -> tuple[str, str] | None:
    """(table, normalised definition) of an index, or None."""
    if store.dialect == "sqlite":
        rows = _rows(store, "SELECT tbl_name, sql FROM sqlite_master"
                     " WHERE type = 'index' AND name = ?", (name,))
    else:
        rows = _rows(store, "SELECT tablename, indexdef FROM pg_indexes"
                     " WHERE schemaname = current_schema() AND indexname = ?", (name,))
    if not rows:
        return None
    # Whitespace and identifier quotes (PostgreSQL quotes "timestamp") are not meaningful.
    return rows[0][0], re.sub(r'[\s"]+', "", rows[0][1]).lower()


def _session(store: Store, sid: str = "s1") -> None:
    _exec(store, "INSERT INTO sessions (id, user_id, start_time, status) VALUES (?, ?, ?, ?)",
          (sid, "alice", store.ts(T0), "active"))


def test_all_seed_tables_and_columns_exist(store: Store, schema_objects) -> None:
    tables = {name for kind, name in schema_objects(store) if kind == "table"}
    assert set(SEED_COLUMNS) <= tables
    for table, columns in SEED_COLUMNS.items():
        have = _columns(store, table)
        missing = [c for c in columns if c not in have]
        assert not missing, f"{table} lacks {missing}"
        not_null = {c for c in columns if have[c]} - {"id"}
        assert not_null == SEED_NOT_NULL[table], table


def test_every_seed_index_exists_on_the_right_columns(store: Store) -> None:
    for name, (table, columns) in SEED_INDEXES.items():
        found = _index(store, name)
        assert found is not None, f"index {name} is missing"
        assert found[0] == table, name
        wanted = "(" + re.sub(r"\s+", "", columns).lower() + ")"
        assert wanted in found[1], f"{name}: {found[1]}"
    partial = _index(store, "idx_context_expires")
    assert partial is not None and "where" in partial[1]
    assert "expires_atisnotnull" in partial[1]


def test_foreign_keys_and_delete_rules(store: Store) -> None:
    fks = _foreign_keys(store)
    for key, expected in SEED_FOREIGN_KEYS.items():
        assert fks.get(key) == expected, key


@pytest.mark.parametrize(("table", "sql", "params"), [
    ("sessions", "INSERT INTO sessions (id, user_id, start_time, status) VALUES (?, ?, ?, ?)",
     ("bad", "alice", "TS", "done")),
    ("sessions", "INSERT INTO sessions (id, user_id, start_time, status) VALUES (?, ?, ?, ?)",
     ("bad", "alice", "TS", "ACTIVE")),
    ("tasks", "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
     ("bad", "s1", "x", "running")),
    ("tasks", "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
     ("bad", "s1", "x", "")),
    ("state_snapshots", "INSERT INTO state_snapshots (id, session_id, snapshot_type, checksum)"
     " VALUES (?, ?, ?, ?)", ("bad", "s1", "nightly", "abc")),
])
def test_check_constraints_reject_bad_statuses(store: Store, table: str, sql: str,
                                               params: tuple[Any, ...]) -> None:
    _session(store)
    params = tuple(store.ts(T0) if p == "TS" else p for p in params)
    before = store.dump()
    with pytest.raises(ValidationError):
        _exec(store, sql, params)
    assert store.dump() == before


def test_check_constraints_accept_every_seed_status(store: Store) -> None:
    for i, status in enumerate(["active", "paused", "completed", "failed"]):
        _exec(store, "INSERT INTO sessions (id, user_id, start_time, status)"
              " VALUES (?, ?, ?, ?)", (f"s{i}", "u", store.ts(T0), status))
    for i, status in enumerate(["pending", "in_progress", "completed", "failed", "cancelled"]):
        _exec(store, "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
              (f"t{i}", "s0", "x", status))
    for i, kind in enumerate(["checkpoint", "backup", "recovery"]):
        _exec(store, "INSERT INTO state_snapshots (id, session_id, snapshot_type, checksum)"
              " VALUES (?, ?, ?, ?)", (f"p{i}", "s0", kind, "c"))
    assert len(store.dump()["sessions"]) == 4
    assert len(store.dump()["tasks"]) == 5
    assert len(store.dump()["state_snapshots"]) == 3


def test_unique_constraints(store: Store) -> None:
    _session(store)
    ctx = ("INSERT INTO context (id, session_id, context_type, context_key, context_value)"
           " VALUES (?, ?, ?, ?, ?)")
    _exec(store, ctx, ("c1", "s1", "file", "k", store.json_in(b"1")))
    pref = ("INSERT INTO user_preferences (id, user_id, preference_type, preference_key,"
            " preference_value) VALUES (?, ?, ?, ?, ?)")
    _exec(store, pref, ("p1", "alice", "style", "indent", store.json_in(b"4")))
    before = store.dump()
    for sql, params in [
        (ctx, ("c2", "s1", "file", "k", store.json_in(b"2"))),
        (pref, ("p2", "alice", "style", "indent", store.json_in(b"2"))),
        (ctx, ("c1", "s1", "file", "other", store.json_in(b"2"))),  # primary key
    ]:
        with pytest.raises(DuplicateError):
            _exec(store, sql, params)
        assert store.dump() == before
    # Any one part different is a different row.
    _exec(store, ctx, ("c3", "s1", "note", "k", store.json_in(b"3")))
    _exec(store, pref, ("p3", "bob", "style", "indent", store.json_in(b"3")))


def test_on_delete_cascade_where_the_seed_says_so(store: Store) -> None:
    _session(store, "s1")
    _session(store, "s2")
    _exec(store, "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
          ("t1", "s1", "x", "pending"))
    _exec(store, "INSERT INTO context (id, session_id, context_type, context_key,"
          " context_value) VALUES (?, ?, ?, ?, ?)", ("c1", "s1", "f", "k", store.json_in(b"1")))
    _exec(store, "INSERT INTO state_snapshots (id, session_id, snapshot_type, state_data,"
          " checksum) VALUES (?, ?, ?, ?, ?)", ("sn1", "s1", "checkpoint", b"\x00\x01", "c"))
    _exec(store, "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
          ("t2", "s2", "x", "pending"))
    _exec(store, "DELETE FROM sessions WHERE id = ?", ("s1",))
    dump = store.dump()
    assert [r[0] for r in dump["sessions"]] == ["s2"]
    assert [r[0] for r in dump["tasks"]] == ["t2"]
    assert dump["context"] == []
    assert dump["state_snapshots"] == []


def test_no_cascade_where_the_seed_has_none(store: Store) -> None:
    _session(store, "s1")
    _exec(store, "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
          ("t1", "s1", "x", "pending"))
    _exec(store, "INSERT INTO tasks (id, session_id, parent_task_id, type, status)"
          " VALUES (?, ?, ?, ?, ?)", ("t2", "s1", "t1", "x", "pending"))
    _exec(store, "INSERT INTO decisions (id, session_id, decision_type, context_hash,"
          " decision_made) VALUES (?, ?, ?, ?, ?)", ("d1", "s1", "t", "h", "x"))
    _exec(store, "INSERT INTO state_snapshots (id, session_id, snapshot_type, checksum)"
          " VALUES (?, ?, ?, ?)", ("sn1", "s1", "backup", "c"))
    _exec(store, "INSERT INTO recovery_points (id, name, state_snapshot_id) VALUES (?, ?, ?)",
          ("r1", "before upgrade", "sn1"))
    before = store.dump()
    for sql, params in [
        ("DELETE FROM sessions WHERE id = ?", ("s1",)),  # a decision refers to it
        ("DELETE FROM tasks WHERE id = ?", ("t1",)),  # a subtask refers to it
        ("DELETE FROM state_snapshots WHERE id = ?", ("sn1",)),  # a recovery point does
    ]:
        with pytest.raises(ConflictError):
            _exec(store, sql, params)
        assert store.dump() == before


def test_foreign_keys_are_enforced_on_insert(store: Store) -> None:
    before = store.dump()
    with pytest.raises(ConflictError):
        _exec(store, "INSERT INTO tasks (id, session_id, type, status) VALUES (?, ?, ?, ?)",
              ("t1", "ghost", "x", "pending"))
    assert store.dump() == before


def test_seed_defaults(store: Store) -> None:
    _session(store)
    _exec(store, "INSERT INTO tasks (id, session_id, type) VALUES (?, ?, ?)", ("t1", "s1", "x"))
    _exec(store, "INSERT INTO context (id, session_id, context_type, context_key,"
          " context_value) VALUES (?, ?, ?, ?, ?)", ("c1", "s1", "f", "k", store.json_in(b"1")))
    _exec(store, "INSERT INTO state_snapshots (id, session_id, checksum) VALUES (?, ?, ?)",
          ("sn1", "s1", "c"))
    _exec(store, "INSERT INTO decisions (id, decision_type, context_hash, decision_made)"
          " VALUES (?, ?, ?, ?)", ("d1", "t", "h", "x"))
    _exec(store, "INSERT INTO user_preferences (id, user_id, preference_type, preference_key,"
          " preference_value) VALUES (?, ?, ?, ?, ?)", ("p1", "u", "t", "k",
                                                         store.json_in(b"true")))
    _exec(store, "INSERT INTO audit_log (event_type, entity_type, entity_id) VALUES (?, ?, ?)",
          ("create", "x", "x1"))
    _exec(store, "INSERT INTO recovery_points (id, name) VALUES (?, ?)", ("r1", "n"))

    def one(sql: str) -> tuple[Any, ...]:
        rows = _rows(store, sql)
        assert len(rows) == 1
        return rows[0]

    version, created, updated = one("SELECT version, created_at, updated_at FROM sessions")
    assert version == 1 and created is not None and updated is not None
    assert one("SELECT priority, retry_count FROM tasks") == (5, 0)
    rel, count, last = one("SELECT relevance_score, access_count, last_accessed FROM context")
    assert (rel, count) == (1.0, 0) and last is not None
    assert one("SELECT compression_type FROM state_snapshots") == ("zstd",)
    auto, override = one("SELECT autonomous, user_override FROM decisions")
    assert not auto and not override
    assert one("SELECT confidence, observation_count FROM user_preferences") == (0.5, 1)
    audit_id, ts = one("SELECT id, timestamp FROM audit_log")
    assert isinstance(audit_id, int) and ts is not None
    assert one("SELECT created_at IS NOT NULL FROM recovery_points")[0]


def test_audit_ids_increase(store: Store) -> None:
    for i in range(5):
        _exec(store, "INSERT INTO audit_log (event_type, entity_type, entity_id)"
              " VALUES (?, ?, ?)", ("create", "x", f"x{i}"))
    ids = [r[0] for r in _rows(store, "SELECT id FROM audit_log ORDER BY entity_id")]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_json_columns_refuse_non_json_text(store: Store) -> None:
    _session(store)
    before = store.dump()
    with pytest.raises(StatekeepError):
        _exec(store, "INSERT INTO context (id, session_id, context_type, context_key,"
              " context_value) VALUES (?, ?, ?, ?, ?)", ("c1", "s1", "f", "k", "{not json"))
    assert store.dump() == before
