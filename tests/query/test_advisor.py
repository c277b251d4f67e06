"""Plans and index advice on every backend: a frequent query filtering context
by a JSON path scans the table, the advisor suggests an index on exactly that
expression, creation is refused until enabled, and after it the plan uses the
index. The usage report lists an index nothing uses as unused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from statekeep import ContextInput, Store
from statekeep.errors import ValidationError
from statekeep.query import QueryOptimizer

ITEMS = 1500  # above the advisor's 1,000-row floor for a scan that matters
MIN_CALLS = 20


def json_sql(store: Store, style: str = "extract") -> str:
    if store.dialect == "postgresql":
        return "SELECT id, context_key FROM context WHERE context_value ->> 'path' = ?"
    if style == "arrow":
        return "SELECT c.id FROM context AS c WHERE c.context_value ->> '$.path' = ?"
    return "SELECT id, context_key FROM context WHERE json_extract(context_value, '$.path') = ?"


def seeded(store: Store) -> Store:
    store.create_session("u", session_id="ses-j")
    store.set_context_many("ses-j", [
        ContextInput("file", f"k{i}", {"path": f"src/m{i}.py", "language": "python"})
        for i in range(ITEMS)])
    if store.dialect == "postgresql":
        store.analyze()  # as autovacuum would after a bulk load
    return store


def run_often(store: Store, sql: str, n: int = MIN_CALLS) -> None:
    for i in range(n):
        with store.reading() as conn:
            assert len(conn.execute(sql, (f"src/m{i}.py",)).fetchall()) == 1


def test_frequent_json_filter_scan_is_advised_and_fixed(store: Store) -> None:
    seeded(store)
    sql = json_sql(store)
    run_often(store, sql)
    opt = QueryOptimizer(store, min_calls=MIN_CALLS)

    plan = opt.explain(sql)
    assert plan.large_scans == ("context",)
    assert plan.verdict == f"full scan of context ({ITEMS:,} rows)"
    scans = opt.frequent_scans()
    assert [v.stats.shape for v in scans] == [sql]

    [advice] = opt.suggest_indexes()
    assert advice.table == "context" and advice.calls == MIN_CALLS and not advice.exists
    assert advice.name == "sk_context_j_path"
    assert f"{MIN_CALLS} calls" in advice.reason and "full scan of context" in advice.reason
    assert "$.path" in advice.reason

    # off by default: nothing is created without the switch or a confirmation
    with pytest.raises(ValidationError, match="index_advisor_apply"):
        opt.apply_indexes([advice])
    assert "sk_context_j_path" not in {i.name for i in store.list_indexes()}

    [done] = opt.apply_indexes([advice], confirm=True)
    assert done.created and done.name == "sk_context_j_path"
    after = opt.explain(sql)
    assert after.large_scans == () and "sk_context_j_path" in after.indexes
    assert after.verdict == "uses sk_context_j_path"
    # the creation is recorded, and a second apply finds it there
    assert opt.advisor.applied()["sk_context_j_path"]["shapes"] == [sql]
    [again] = opt.apply_indexes([advice], confirm=True)
    assert not again.created and again.note == "already exists"
    assert opt.suggest_indexes() == [] or all(s.exists for s in opt.suggest_indexes())
    run_often(store, sql)  # still right with the index


def test_sqlite_index_matches_the_spelling_the_query_used(make_store: Callable[..., Store],
                                                          backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("->> '$.path' and json_extract are two spellings on SQLite only")
    store = seeded(make_store(index_advisor_apply=True))
    sql = json_sql(store, "arrow")
    run_often(store, sql)
    opt = QueryOptimizer(store, min_calls=MIN_CALLS)
    [advice] = opt.suggest_indexes()
    assert advice.name == "sk_context_a_path"
    assert "\"context_value\" ->> '$.path'" in advice.ddl
    [done] = opt.apply_indexes()  # enabled in the config: no confirmation needed
    assert done.created
    assert "sk_context_a_path" in opt.explain(sql).indexes


def test_filters_by_columns_get_a_composite_index(store: Store) -> None:
    seeded(store)
    sql = "SELECT id FROM context WHERE last_accessed > ? AND access_count = ?"
    params = (store.ts(datetime(2000, 1, 1, tzinfo=UTC)), 7)
    for _ in range(MIN_CALLS):
        with store.reading() as conn:
            conn.execute(sql, params).fetchall()
    opt = QueryOptimizer(store, min_calls=MIN_CALLS)
    plan = opt.explain(sql)
    if not plan.large_scans:
        pytest.skip(f"the planner found another way: {plan.verdict}")
    [advice] = opt.suggest_indexes()
    keys = [k.column for k in advice.spec.keys]
    # equalities first, in the order written, then one range
    assert keys == ["access_count", "last_accessed"]
    assert advice.name == "sk_context_access_count_last_accessed"


def test_infrequent_or_small_scans_are_not_advised(store: Store) -> None:
    store.create_session("u", session_id="ses-small")
    store.set_context_many("ses-small", [ContextInput("file", f"k{i}", {"path": f"p{i}"})
                                         for i in range(20)])
    sql = json_sql(store)
    for i in range(MIN_CALLS):
        with store.reading() as conn:
            conn.execute(sql, (f"p{i}",)).fetchall()
    opt = QueryOptimizer(store, min_calls=MIN_CALLS)
    assert opt.explain(sql).large_scans == ()  # 20 rows: a scan is fine
    assert opt.suggest_indexes() == []
    assert QueryOptimizer(store, min_calls=MIN_CALLS + 1).suggest_indexes(
        include_saved=False) == []


def test_advice_for_stated_statements(store: Store) -> None:
    seeded(store)
    opt = QueryOptimizer(store)
    [advice] = opt.suggest_indexes(extra_sql=[json_sql(store)])
    assert advice.name == "sk_context_j_path"


def test_plans_of_statements_that_cannot_be_explained_say_why(store: Store) -> None:
    opt = QueryOptimizer(store)
    plan = opt.explain("SELECT no_such_column FROM context WHERE id = ?")
    assert plan.error is not None and plan.verdict.startswith("no plan:")
    assert opt.explain("DROP TABLE sessions").error is not None
    assert opt.explain("SELECT 1; DROP TABLE sessions").error is not None
    assert "sessions" in store.catalog().tables


def test_usage_report_lists_an_index_nothing_uses_as_unused(store: Store) -> None:
    seeded(store)
    opt = QueryOptimizer(store, min_calls=MIN_CALLS)
    made = opt.create_index("tasks", ["priority"], confirm=True)
    assert made.created and made.name == "sk_tasks_priority"
    sql = json_sql(store)
    run_often(store, sql)
    for _ in range(3):
        store.get_session("ses-j")
    report = opt.analyze_index_usage()
    by_name = {u.name: u for u in report.index_usage}
    mine = by_name["sk_tasks_priority"]
    assert "sk_tasks_priority" in report.unused_indexes
    assert mine.status == "unused" and mine.created_by_advisor and mine.scans == 0
    assert mine.size_bytes is not None and mine.size_bytes > 0
    assert [s.name for s in report.suggested_indexes] == ["sk_context_j_path"]
    # the session lookup's index backs the primary key: never "unused"
    pk = [u for u in report.index_usage if u.table == "sessions" and u.constraint]
    assert pk and all(u.status == "constraint" for u in pk)
    if store.dialect == "sqlite":
        assert report.source == "plans of recorded shapes"
        assert pk[0].scans is not None and pk[0].scans >= 3
        assert any("sessions" in s for s in pk[0].used_by)
        # foreign-key indexes are not called unused on SQLite's evidence
        assert by_name["idx_tasks_session_id"].status == "foreign-key"
        assert by_name["idx_tasks_session_id"].supports_foreign_key
    else:
        assert report.source == "pg_stat_user_indexes"


def test_efficiency_after_analyze(store: Store) -> None:
    seeded(store)
    store.analyze()
    opt = QueryOptimizer(store)
    report = opt.analyze_index_usage()
    if store.dialect == "sqlite":
        by_name = {u.name: u for u in report.index_usage}
        # one session holds every item: the session index narrows nothing
        assert by_name["idx_context_session_type"].efficiency == pytest.approx(
            1 / ITEMS, abs=1e-9)
        unique = [u for u in report.index_usage if u.table == "context" and u.unique
                  and u.columns == ("id",)]
        assert unique and unique[0].efficiency == 1.0
    assert not report.inefficient_indexes  # nothing was scanned 100 times yet


def test_saved_statistics_reach_another_optimizer(make_store: Callable[..., Store]) -> None:
    first = seeded(make_store())
    sql = json_sql(first)
    run_often(first, sql)
    assert QueryOptimizer(first).save_statistics() > 0
    assert QueryOptimizer(first).save_statistics() == 0  # nothing new since
    run_often(first, sql, 5)
    assert QueryOptimizer(first).save_statistics() == 1
    other = make_store(query_stats=False)  # another process, as far as statistics go
    opt = QueryOptimizer(other, min_calls=MIN_CALLS)
    saved = [s for s in opt.saved_statistics() if s.shape == sql]
    assert saved and saved[0].count == MIN_CALLS + 5
    assert [s.name for s in opt.suggest_indexes()] == ["sk_context_j_path"]
