"""Query optimisation figures: an advised index, the statement observer's cost, the cache.

``query_figures(bench)`` adds these figures to a :class:`_harness.Bench` (the
performance report's script calls it; ``python bench/_query_figures.py`` runs
them alone):

1. a frequent filtered query before and after the advised index -- N context
   items whose values carry a ``path``; the query filters by
   ``json_extract(context_value, '$.path')``. "after" is a store on which the
   query ran often enough to be a frequent shape and the advisor's suggestion
   was applied (the figure checks the plan uses it); "before" is the same data
   without it. ratio = after / before throughput. SQLite, and PostgreSQL when a
   server answers (``STATEKEEP_BENCH_PG``).
2. the statement observer's overhead on point reads -- ``get_context`` on 10k
   items with the defaults (statistics sampled 1 in 16, result-cache write
   tracking) vs a store with ``query_stats=False, query_cache_bytes=0`` (plain
   connections); and with every call timed (``sample_every=1``).
3. the result cache on a repeated list read -- ``cached_query`` of a 50-row read
   (the top of 10k items by relevance) vs the same read through the store uncached.
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _harness import Bench, Run, ready
from statekeep import ContextInput, StateConfig, Store, open_store
from statekeep.query import QueryOptimizer

__all__ = ["query_figures"]

PG_URL = os.environ.get("STATEKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SESSION = "ses-qbench"
JSON_SQL = {
    "sqlite": "SELECT id, context_key FROM context WHERE json_extract(context_value, '$.path') = ?",
    "postgresql": "SELECT id, context_key FROM context WHERE context_value ->> 'path' = ?",
}
LIST_SQL = ("SELECT id, context_key, relevance_score FROM context WHERE session_id = ?"
            " AND context_type = ? ORDER BY relevance_score DESC, context_key LIMIT 50")


def _value(i: int) -> dict[str, Any]:
    return {"path": f"src/pkg{i % 97}/module_{i}.py", "language": "python", "lines": i % 900,
            "summary": f"module {i}: helpers for the request pipeline"}


def _populate(store: Store, n: int, ctype: str = "file") -> None:
    store.create_session("bench-user", session_id=SESSION)
    batch = 5_000
    for start in range(0, n, batch):
        store.set_context_many(SESSION, [ContextInput(ctype, f"k{i}", _value(i))
                                         for i in range(start, min(n, start + batch))])


def _tmp_db(stack: ExitStack, name: str) -> str:
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="sk-qbench-"))
    return str(Path(folder) / name)


def _open(stack: ExitStack, db: str, **overrides: Any) -> Store:
    store = open_store(StateConfig(db=db, **overrides))
    stack.callback(store.close)
    return store


def _advised(bench: Bench, store: Store, sql: str, probe: list[str]) -> str:
    """Run the query until it is a frequent shape, apply the advice; the index name."""
    opt = QueryOptimizer(store)
    for p in probe:
        _rows(store, sql, p)
    found = opt.suggest_indexes(min_calls=len(probe))
    if not found:
        raise RuntimeError(f"the advisor suggested nothing for {sql}")
    applied = opt.apply_indexes(found[:1], confirm=True)
    plan = opt.explain(sql)
    if applied[0].name not in plan.indexes:
        raise RuntimeError(f"after applying {applied[0].name} the plan is: {plan.verdict}")
    bench.note(f"{store.dialect}: advisor created {applied[0].name} ({found[0].reason[:90]}...);"
               f" plan now: {plan.verdict}")
    return applied[0].name


def _rows(store: Store, sql: str, param: str) -> int:
    with store.reading() as conn:
        return len(conn.execute(sql, (param,)).fetchall())


def _json_figure(bench: Bench, label: str, make: Callable[[ExitStack, str], Store],
                 n: int) -> None:
    name = f"{label} JSON-path filter, advised index vs none ({n // 1000}k items)"
    if not bench.wants(name):
        return
    with ExitStack() as stack:
        before = make(stack, "before")
        after = make(stack, "after")
        for store in (before, after):
            _populate(store, n)
        sql = JSON_SQL[before.dialect]
        rng = random.Random(7)
        probes = [_value(rng.randrange(n))["path"] for _ in range(400)]
        _advised(bench, after, sql, probes[:60])
        slow_n = bench.size(20, 5) if label == "sqlite" else bench.size(10, 3)
        fast_n = bench.size(4_000, 500) if label == "sqlite" else bench.size(1_000, 200)

        bench.measure(name, ready(_cycled(after, sql, probes, fast_n)),
                      ready(_cycled(before, sql, probes, slow_n)), target=None,
                      ops={"queries_after": fast_n, "queries_before": slow_n},
                      rounds=bench.rounds_for(5),
                      note="ours = with the index the advisor created; baseline = without")


def _cycled(store: Store, sql: str, probes: list[str], count: int) -> Run:
    def run() -> int:
        for i in range(count):
            if _rows(store, sql, probes[i % len(probes)]) != 1:
                raise RuntimeError("each probe path belongs to exactly one item")
        return count
    return run


def _observer_figures(bench: Bench) -> None:
    names = ("sqlite point read, statement stats on (1 in 16) vs off",
             "sqlite point read, stats timing every call vs off")
    if not any(bench.wants(n) for n in names):
        return
    items = 10_000
    n = bench.size(20_000, 5_000)
    with ExitStack() as stack:
        default = _open(stack, _tmp_db(stack, "observed.db"))
        every = _open(stack, _tmp_db(stack, "every.db"))
        every.query_stats.sample_every = 1
        plain = _open(stack, _tmp_db(stack, "plain.db"), query_stats=False,
                      query_cache_bytes=0)
        for store in (default, every, plain):
            _populate(store, items, ctype="note")
        rng = random.Random(20240601)
        keys = [f"k{rng.randrange(items)}" for _ in range(n)]

        def reads(store: Store) -> Run:
            def run() -> int:
                get = store.get_context
                for key in keys:
                    get(SESSION, "note", key)
                return n
            return run

        bench.measure(names[0], ready(reads(default)), ready(reads(plain)), target=None,
                      ops={"reads": n},
                      note="ratio < 1 is the observer's cost; defaults: stats on, cache on")
        bench.measure(names[1], ready(reads(every)), ready(reads(plain)), target=None,
                      ops={"reads": n})


def _cache_figure(bench: Bench) -> None:
    name = "sqlite 50-row list read, result cache vs uncached"
    if not bench.wants(name):
        return
    n = bench.size(20_000, 3_000)
    slow_n = bench.size(300, 50)  # the uncached read sorts 10k rows: ~2 ms each
    with ExitStack() as stack:
        store = _open(stack, _tmp_db(stack, "cache.db"))
        _populate(store, 10_000, ctype="note")
        params = (SESSION, "note")
        assert len(store.cached_query(LIST_SQL, params)) == 50

        def cached() -> int:
            q = store.cached_query
            for _ in range(n):
                q(LIST_SQL, params)
            return n

        def uncached() -> int:
            for _ in range(slow_n):
                with store.reading() as conn:
                    conn.execute(LIST_SQL, params).fetchall()
            return slow_n

        bench.measure(name, ready(cached), ready(uncached), target=None,
                      ops={"cached_reads": n, "uncached_reads": slow_n},
                      note="no writes between reads: every cached read is a hit after the"
                           " first (each still checks PRAGMA data_version)")


def _pg_maker(admin: Any, made: list[str]) -> Callable[[ExitStack, str], Store]:
    def make(stack: ExitStack, tag: str) -> Store:
        schema = f"sk_bench_q{secrets.token_hex(4)}_{tag}"
        admin.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        stack.callback(admin.execute, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        return _open(stack, f"{PG_URL}?schema={schema}")
    return make


def query_figures(bench: Bench) -> None:
    """Add the query optimisation figures to ``bench`` (see the module docstring)."""
    n = bench.size(100_000, 10_000)
    _json_figure(bench, "sqlite", lambda stack, tag: _open(stack, _tmp_db(stack, f"{tag}.db")),
                 n)
    _observer_figures(bench)
    _cache_figure(bench)
    pg_n = bench.size(50_000, 5_000)
    pg_name = f"pg JSON-path filter, advised index vs none ({pg_n // 1000}k items)"
    if not bench.wants(pg_name):
        return
    try:
        import psycopg

        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        bench.skip(pg_name, f"no PostgreSQL server answers ({str(exc).strip()[:80]})")
        return
    made: list[str] = []
    try:
        _json_figure(bench, "pg", _pg_maker(admin, made), pg_n)
    except Exception as exc:
        bench.skip(pg_name, f"failed: {type(exc).__name__}: {str(exc)[:120]}")
    finally:
        for schema in made:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


if __name__ == "__main__":
    _bench = Bench("query", "query optimisation: advised indexes, observer cost, result cache")
    query_figures(_bench)
    raise SystemExit(_bench.finish())
