"""The result cache on every backend: a hit until a write to a table the read
depends on commits (not a write to another table), cascades and triggers
counted as writes, nothing cached that is not deterministic, the byte budget
kept, and other connections' commits noticed on SQLite."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from statekeep import ContextInput, Store
from statekeep.errors import ValidationError
from statekeep.query.cache import QueryCache
from statekeep.store.indexes import PG_RESULT_TTL

SESSION_SQL = "SELECT id, status FROM sessions WHERE id = ?"
CONTEXT_SQL = "SELECT context_key FROM context WHERE session_id = ? ORDER BY context_key"


def counters(store: Store) -> tuple[int, int]:
    assert store.query_cache is not None
    stats = store.query_cache.stats()
    return stats.hits, stats.misses


def test_hit_then_invalidated_by_a_write_to_a_table_it_read(store: Store) -> None:
    store.create_session("u", session_id="ses-c")
    first = store.cached_query(SESSION_SQL, ("ses-c",))
    assert first == [("ses-c", "active")]
    assert counters(store) == (0, 1)
    assert store.cached_query(SESSION_SQL, ("ses-c",)) == first
    assert counters(store) == (1, 1)
    # a write to another table leaves the entry valid
    store.create_task("ses-c", "build", task_id="task-1")
    store.set_preference("u", "style", "tabs", True)
    assert store.cached_query(SESSION_SQL, ("ses-c",)) == first
    assert counters(store) == (2, 1)
    # a committed write to the table it read drops it
    store.update_session("ses-c", status="paused")
    assert store.cached_query(SESSION_SQL, ("ses-c",)) == [("ses-c", "paused")]
    assert counters(store) == (2, 2)
    assert store.query_cache is not None and store.query_cache.stale == 1


def test_other_parameters_are_other_entries(store: Store) -> None:
    store.create_session("u", session_id="ses-1")
    store.create_session("u", session_id="ses-2")
    assert store.cached_query(SESSION_SQL, ("ses-1",)) == [("ses-1", "active")]
    assert store.cached_query(SESSION_SQL, ("ses-2",)) == [("ses-2", "active")]
    assert counters(store) == (0, 2)


def test_a_cascade_from_another_table_invalidates(store: Store) -> None:
    store.create_session("u", session_id="ses-del")
    store.set_context_many("ses-del", [ContextInput("note", f"k{i}", i) for i in range(3)])
    assert len(store.cached_query(CONTEXT_SQL, ("ses-del",))) == 3
    assert "sessions" in store.query_dependencies(CONTEXT_SQL)  # ON DELETE CASCADE
    store.delete_session("ses-del")
    assert store.cached_query(CONTEXT_SQL, ("ses-del",)) == []


def test_writes_through_triggers_count(store: Store) -> None:
    deps = store.query_dependencies("SELECT hash, ref_count FROM content_blobs")
    # context_content's triggers (functions on PostgreSQL) write content_blobs,
    # and deleting context or a session cascades into context_content
    assert {"content_blobs", "context_content", "context", "sessions"} <= set(deps)


def test_a_rolled_back_write_leaves_the_right_answer(store: Store) -> None:
    store.create_session("u", session_id="ses-rb")
    assert store.cached_query(SESSION_SQL, ("ses-rb",)) == [("ses-rb", "active")]
    with pytest.raises(RuntimeError), store.atomic() as conn:
        conn.execute("UPDATE sessions SET status = 'failed' WHERE id = ?", ("ses-rb",))
        raise RuntimeError("abort")
    assert store.cached_query(SESSION_SQL, ("ses-rb",)) == [("ses-rb", "active")]


def test_inside_a_transaction_the_cache_is_bypassed(store: Store) -> None:
    store.create_session("u", session_id="ses-tx")
    assert store.cached_query(SESSION_SQL, ("ses-tx",)) == [("ses-tx", "active")]
    with store.atomic() as conn:
        conn.execute("UPDATE sessions SET status = 'paused' WHERE id = ?", ("ses-tx",))
        # the transaction sees its own uncommitted write, not the cached row
        assert store.cached_query(SESSION_SQL, ("ses-tx",)) == [("ses-tx", "paused")]
    assert store.cached_query(SESSION_SQL, ("ses-tx",)) == [("ses-tx", "paused")]


@pytest.mark.parametrize("sql", [
    "SELECT id, CURRENT_TIMESTAMP FROM sessions WHERE id = ?",
    "SELECT id, random() FROM sessions WHERE id = ?",
])
def test_nondeterministic_reads_are_not_cached(store: Store, sql: str) -> None:
    store.create_session("u", session_id="ses-n")
    reason = store.cacheability(sql)
    assert reason is not None and reason.startswith("not deterministic")
    assert store.query_cache is not None
    before = store.query_cache.bypassed
    assert len(store.cached_query(sql, ("ses-n",))) == 1
    assert len(store.cached_query(sql, ("ses-n",))) == 1
    assert store.query_cache.bypassed == before + 2
    assert len(store.query_cache.tier) == 0


def test_writes_and_unknown_tables_are_refused(store: Store) -> None:
    with pytest.raises(ValidationError, match="reads only"):
        store.cached_query("DELETE FROM sessions WHERE id = ?", ("x",))
    with pytest.raises(ValidationError, match="no_such_table"):
        store.cached_query(SESSION_SQL, ("x",), tables=["no_such_table"])


def test_the_byte_budget_is_kept(make_store: Callable[..., Store]) -> None:
    budget = 64 * 1024
    store = make_store(query_cache_bytes=budget)
    cache = store.query_cache
    assert cache is not None
    store.create_session("u", session_id="ses-b")
    store.set_context_many("ses-b", [ContextInput("note", f"k{i:03d}", "x" * 600)
                                     for i in range(120)])
    sql = "SELECT context_key, context_value FROM context WHERE session_id = ? AND context_key = ?"
    for i in range(120):
        assert len(store.cached_query(sql, ("ses-b", f"k{i:03d}"))) == 1
        assert cache.tier.bytes_used <= budget
    assert cache.tier.evictions > 0 and 0 < len(cache.tier) < 120
    # a result larger than an eighth of the budget is never kept
    big = "SELECT context_key, context_value FROM context WHERE session_id = ?"
    before = cache.bypassed
    assert len(store.cached_query(big, ("ses-b",))) == 120
    assert cache.bypassed == before + 1
    assert cache.tier.bytes_used <= budget


def test_a_commit_by_another_connection_is_noticed(make_store: Callable[..., Store],
                                                   backend: str) -> None:
    reader, writer = make_store(), make_store()
    if backend == "postgres":
        # no cheap signal on PostgreSQL: entries expire instead (docs/query.md);
        # a cache with a short life stands in for waiting PG_RESULT_TTL
        assert reader.query_cache is not None
        assert reader.query_cache.tier.ttl_seconds == PG_RESULT_TTL
        reader.query_cache = QueryCache(64 * 1024, ttl_seconds=0.05,
                                        generations=reader.table_generations)
    writer.create_session("u", session_id="ses-x")
    assert reader.cached_query(SESSION_SQL, ("ses-x",)) == [("ses-x", "active")]
    writer.update_session("ses-x", status="paused")
    if backend == "postgres":
        time.sleep(0.1)
    assert reader.cached_query(SESSION_SQL, ("ses-x",)) == [("ses-x", "paused")]
    if backend == "sqlite":  # found, and judged stale by PRAGMA data_version
        assert reader.query_cache is not None and reader.query_cache.stale == 1


def test_a_restore_or_recovery_announcement_clears_the_cache(store: Store) -> None:
    store.create_session("u", session_id="ses-z")
    store.cached_query(SESSION_SQL, ("ses-z",))
    with store.atomic() as conn:
        store.audit_row(conn, "restore", "store", "backup-1", None, None, user_id=None,
                        session_id=None)
    assert store.query_cache is not None and len(store.query_cache.tier) == 0


def test_cache_off(make_store: Callable[..., Store]) -> None:
    store = make_store(query_cache_bytes=0)
    assert store.query_cache is None
    store.create_session("u", session_id="ses-off")
    assert store.cached_query(SESSION_SQL, ("ses-off",)) == [("ses-off", "active")]
    assert store.cacheability(SESSION_SQL) == "the result cache is off"


def test_a_budget_too_small_to_hold_a_result_is_a_config_error() -> None:
    from statekeep import StateConfig
    from statekeep.errors import ConfigError

    with pytest.raises(ConfigError, match="query_cache_bytes"):
        StateConfig(db=":memory:", query_cache_bytes=1000)
    assert StateConfig(db=":memory:", query_cache_bytes=0).query_cache_bytes == 0
