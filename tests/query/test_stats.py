"""Per-shape statement statistics on every backend: one shape per query of the
code whatever its arguments, exact counts, a histogram that adds up, rows where
the driver can tell them (and an honest None where it cannot)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from statekeep import ContextInput, Store
from statekeep.errors import StatekeepError
from statekeep.query import ShapeStats, sqltext
from statekeep.query.stats import BUCKETS, QueryStatistics, merge

SELECT_SESSION = "SELECT id, user_id FROM sessions WHERE id = ?"


def shape(store: Store, text: str) -> ShapeStats:
    found = [s for s in store.query_stats.snapshot() if s.shape == sqltext.normalize(text)]
    assert len(found) == 1, [s.shape for s in store.query_stats.snapshot()]
    return found[0]


def test_one_shape_per_query_with_exact_counts_and_histogram(store: Store) -> None:
    store.query_stats.sample_every = 1
    store.create_session("u", session_id="ses-a")
    store.create_session("u", session_id="ses-b")
    for i in range(30):
        with store.reading() as conn:
            conn.execute(SELECT_SESSION, ("ses-a" if i % 2 else "ses-b",)).fetchone()
    # the same query written with other whitespace is the same shape
    with store.reading() as conn:
        conn.execute("SELECT id,   user_id\n  FROM sessions\tWHERE id = ?", ("ses-a",)).fetchone()
    s = shape(store, SELECT_SESSION)
    assert s.kind == "select"
    assert s.count == 31 and s.sampled == 31 and s.errors == 0
    assert sum(s.bucket_counts) == 31 and len(s.bucket_counts) == len(BUCKETS) + 1
    assert 0 < s.mean_seconds <= s.max_seconds
    assert s.p50_seconds <= s.p95_seconds <= s.p99_seconds <= max(s.max_seconds, BUCKETS[-1])
    assert s.total_seconds == pytest.approx(s.mean_seconds * 31)
    assert s.first_seen <= s.last_seen <= datetime.now(UTC)  # type: ignore[operator]
    # SELECT rows: psycopg knows them at execute, SQLite does not (honest None)
    if store.dialect == "postgresql":
        assert s.rows_per_call == 1.0 and s.rows == 31
    else:
        assert s.rows_per_call is None and s.rows is None


def test_in_lists_of_any_length_are_one_shape(store: Store) -> None:
    for n in (1, 2, 5, 9):
        ids = [f"ses-{i}" for i in range(n)]
        with store.reading() as conn:
            conn.execute(f"SELECT id FROM sessions WHERE id IN ({', '.join('?' * n)})",
                         ids).fetchall()
    shapes = {s.shape: s.count for s in store.query_stats.snapshot()
              if s.shape.startswith("SELECT id FROM sessions WHERE id IN")}
    assert shapes == {"SELECT id FROM sessions WHERE id IN (?)": 1,
                      "SELECT id FROM sessions WHERE id IN (?, ...)": 3}


def test_write_rowcounts_and_errors(store: Store) -> None:
    store.query_stats.sample_every = 1
    store.create_session("u", session_id="ses-w")
    store.set_context_many("ses-w", [ContextInput("note", f"k{i}", i) for i in range(3)])
    update = "UPDATE context SET relevance_score = ? WHERE session_id = ?"
    for score in (0.5, 0.7):
        with store.atomic() as conn:
            conn.execute(update, (score, "ses-w"))
    s = shape(store, update)
    assert s.kind == "update" and s.count == 2
    assert s.rows_per_call == 3.0 and s.rows == 6
    assert s.tables_written == ("context",)
    with pytest.raises(StatekeepError), store.reading() as conn:
        conn.execute("SELECT no_such_column FROM sessions WHERE id = ?", ("x",))
    bad = shape(store, "SELECT no_such_column FROM sessions WHERE id = ?")
    assert bad.count == 1 and bad.errors == 1


def test_sampling_keeps_counts_exact(store: Store) -> None:
    assert store.query_stats.sample_every == 16  # the default
    store.create_session("u", session_id="ses-s")
    store.query_stats.reset()
    for _ in range(40):
        store.get_session("ses-s")
    s = next(x for x in store.query_stats.snapshot()
         if x.kind == "select" and x.shape.startswith("SELECT") and "FROM sessions WHERE id"
         in x.shape)
    assert s.count == 40
    assert s.sampled == 3  # calls 1, 17 and 33: the first call of a shape is always timed
    assert sum(s.bucket_counts) == 3


def test_disabled_statistics_record_nothing(make_store: Callable[..., Store]) -> None:
    store = make_store(query_stats=False)
    store.create_session("u", session_id="ses-off")
    store.get_session("ses-off")
    assert store.query_stats.snapshot() == []


def test_no_observer_at_all_when_stats_and_cache_are_off(make_store: Callable[..., Store]
                                                         ) -> None:
    store = make_store(query_stats=False, query_cache_bytes=0)
    assert store._observer is None
    store.create_session("u", session_id="ses-plain")
    assert store.get_session("ses-plain").id == "ses-plain"
    assert store.query_stats.snapshot() == []


def test_shape_stats_survive_a_round_trip_and_add_up(store: Store) -> None:
    store.query_stats.sample_every = 1
    store.create_session("u", session_id="ses-r")
    for _ in range(5):
        store.get_session("ses-r")
    s = next(x for x in store.query_stats.snapshot() if "FROM sessions WHERE id" in x.shape)
    again = ShapeStats.from_dict(s.to_dict())
    assert again.count == s.count and again.bucket_counts == s.bucket_counts
    assert again.p95_seconds == pytest.approx(s.p95_seconds)
    both = merge([s], [again])[0]
    assert both.count == 2 * s.count and sum(both.bucket_counts) == 2 * s.sampled
    assert both.minus(s).count == s.count


def test_statistics_sample_rate_must_be_a_power_of_two() -> None:
    stats = QueryStatistics()
    with pytest.raises(ValueError, match="power of two"):
        stats.sample_every = 3
    stats.sample_every = 4
    assert stats.mask == 3
