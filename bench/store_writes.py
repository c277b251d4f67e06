"""statekeep's store against the raw drivers it stands on: writes, batch inserts, reads.

Figures (ratio = statekeep throughput / raw driver throughput, same run, same rows):

1. durable single write -- ``set_context`` (one transaction and commit each, audit
   row included) vs raw ``BEGIN IMMEDIATE; INSERT INTO context; COMMIT``; a second,
   informational line lets the raw side also write the same audit row.
2. batch insert -- ``set_context_many`` of N items (audit rows included) vs a raw
   ``executemany`` of the same N context rows in one transaction.
3. point read without cache -- ``get_context`` vs a raw ``SELECT`` by
   (session, type, key) plus ``orjson.loads`` of the value, on 10,000 items, same
   random key sequence for both.
4. the same three on PostgreSQL against raw psycopg, when the backend exists and a
   server answers (``STATEKEEP_BENCH_PG`` overrides the URL).

Each side works in a database of its own (a fresh temporary directory, or a fresh
PostgreSQL schema); the baseline's schema is created by statekeep's own migrations,
so tables and indexes are identical, and its SQLite connection gets exactly the
pragmas read back from a statekeep connection.

    python bench/store_writes.py [--quick] [--rounds N] [--only WORDS] [--profile]
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import secrets
import sqlite3
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from _harness import Bench, Run, ready
from statekeep import ContextInput, StateConfig, Store, open_store

PG_URL = os.environ.get("STATEKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SESSION = "ses-bench"
USER = "bench-user"
CTYPE = "note"
#: Connection settings read back from a statekeep SQLite connection and applied to the
#: raw one: the ones statekeep sets today, and the ones it might set tomorrow.
PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "temp_store",
           "cache_size", "mmap_size", "wal_autocheckpoint", "journal_size_limit")
COLS = ("id, session_id, context_type, context_key, context_value, relevance_score,"
        " access_count, last_accessed, expires_at, created_at, updated_at")
AUDIT_COLS = ("event_type, entity_type, entity_id, old_value, new_value, change_metadata,"
              " user_id, session_id, timestamp")


def make_value(i: int) -> dict[str, Any]:
    """A realistic ~320-byte context value (what an agent notes after a tool call)."""
    return {
        "role": "tool",
        "summary": f"Fetched page {i} of the API reference: rate limit is 600 requests/min"
                   " per key; retries use exponential backoff with jitter.",
        "source": {"tool": "web.fetch", "url": f"https://docs.example.com/api/v2/reference/{i}",
                   "status": 200},
        "tags": ["api", "rate-limit", "retry"],
        "confidence": 0.82,
        "turn": i,
        "tokens": 212,
    }


#: Distinct values, reused round-robin so that 100k items do not need 100k dicts.
VALUES = [make_value(i) for i in range(4096)]


def value(i: int) -> dict[str, Any]:
    return VALUES[i % len(VALUES)]


def sk_config(db: str) -> StateConfig:
    """statekeep's defaults, untouched by any config file or environment variable."""
    return StateConfig(db=db)


def new_store(db: str, stack: ExitStack, populate: int = 0) -> Store:
    """A migrated store on ``db`` with the bench session (and ``populate`` items)."""
    store = open_store(sk_config(db))
    stack.callback(store.close)
    store.create_session(USER, session_id=SESSION)
    if populate:
        store.set_context_many(SESSION, [ContextInput(CTYPE, f"k{i}", value(i))
                                         for i in range(populate)])
    return store


class Raw(ABC):
    """What a skilled user of the raw driver writes for the same results."""

    @abstractmethod
    def write(self, key: str, val: Any, *, audit: bool) -> None:
        """One context row (and optionally its audit row) in its own transaction."""

    @abstractmethod
    def insert_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Context rows for (key, value) pairs, one transaction, executemany."""

    @abstractmethod
    def read(self, key: str) -> Any:
        """The row at (session, type, key) with its value decoded by orjson."""

    @abstractmethod
    def count(self, table: str) -> int: ...


def time_id() -> str:
    """A time-ordered 128-bit hex id: new rows land at the right end of the id index,
    as statekeep's own ids do (a random uuid4 would scatter them and slow the raw side)."""
    return f"ctx_{time.time_ns() // 1_000_000 << 80 | random.getrandbits(80):032x}"


def audit_json(item_id: str, key: str, data: bytes, at: str) -> str:
    """The audit row's new_value, the same document statekeep writes."""
    return orjson.dumps({
        "id": item_id, "session_id": SESSION, "context_type": CTYPE, "context_key": key,
        "context_value": orjson.Fragment(data), "relevance_score": 1.0, "access_count": 0,
        "last_accessed": at, "expires_at": None, "created_at": at, "updated_at": at,
    }).decode()


# -- SQLite -------------------------------------------------------------------


def now_text() -> str:
    """UTC timestamp text in the store's column format."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class RawSQLite(Raw):
    INSERT = f"INSERT INTO context ({COLS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
    AUDIT = f"INSERT INTO audit_log ({AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    SELECT = (f"SELECT {COLS} FROM context"
              " WHERE session_id = ? AND context_type = ? AND context_key = ?")

    def __init__(self, path: str, pragmas: dict[str, Any], busy_timeout_ms: int) -> None:
        self.conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000,
                                    isolation_level=None, cached_statements=256)
        for name, val in pragmas.items():
            self.conn.execute(f"PRAGMA {name} = {val}")
        got = {name: self.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in pragmas}
        if got != pragmas:
            raise RuntimeError(f"raw connection pragmas {got} differ from statekeep's {pragmas}")

    def write(self, key: str, val: Any, *, audit: bool) -> None:
        data = orjson.dumps(val)
        item_id = time_id()
        ts = now_text()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(self.INSERT, (item_id, SESSION, CTYPE, key, data.decode(), 1.0,
                                       ts, None, ts, ts))
            if audit:
                conn.execute(self.AUDIT, ("create", "context", item_id, None,
                                          audit_json(item_id, key, data, ts), None, USER,
                                          SESSION, ts))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def insert_many(self, items: Sequence[tuple[str, Any]]) -> None:
        ts = now_text()
        rows = [(time_id(), SESSION, CTYPE, key, orjson.dumps(val).decode(), 1.0,
                 ts, None, ts, ts) for key, val in items]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self.INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def read(self, key: str) -> Any:
        row = self.conn.execute(self.SELECT, (SESSION, CTYPE, key)).fetchone()
        return None if row is None else (*row[:4], orjson.loads(row[4]), *row[5:])

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        self.conn.close()


class SQLiteSetup:
    """Fresh SQLite databases, each in a temporary directory of its own."""

    label = "sqlite"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.pragmas: dict[str, Any] | None = None

    def _dir(self, stack: ExitStack) -> Path:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sk-bench-")))

    def ours(self, stack: ExitStack, populate: int = 0) -> Store:
        return new_store(str(self._dir(stack) / "ours.db"), stack, populate)

    def raw(self, stack: ExitStack, populate: int = 0) -> RawSQLite:
        path = str(self._dir(stack) / "raw.db")
        with ExitStack() as schema_stack:  # statekeep creates the identical schema
            store = new_store(path, schema_stack, populate)
            with store.reading() as conn:
                pragmas = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in PRAGMAS}
        if self.pragmas is None:
            self.pragmas = pragmas
            self.bench.note("sqlite pragmas (statekeep's, copied to the raw side): "
                            + ", ".join(f"{k}={v}" for k, v in pragmas.items()))
        raw = RawSQLite(path, pragmas, sk_config(path).busy_timeout_ms)
        stack.callback(raw.close)
        return raw


# -- PostgreSQL ---------------------------------------------------------------


class RawPostgres(Raw):
    INSERT = (f"INSERT INTO context ({COLS})"
              " VALUES (%s, %s, %s, %s, %s::jsonb, %s, 0, %s, %s, %s, %s)")
    AUDIT = (f"INSERT INTO audit_log ({AUDIT_COLS})"
             " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s)")
    SELECT = (f"SELECT {COLS} FROM context"
              " WHERE session_id = %s AND context_type = %s AND context_key = %s")

    def __init__(self, schema: str) -> None:
        import psycopg
        from psycopg.types.json import set_json_loads

        self.conn = psycopg.connect(PG_URL, autocommit=True)
        self.conn.execute(f"SET search_path TO {schema}")
        set_json_loads(orjson.loads, self.conn)

    def write(self, key: str, val: Any, *, audit: bool) -> None:
        data = orjson.dumps(val)
        item_id = time_id()
        now = datetime.now(UTC)
        with self.conn.transaction():
            self.conn.execute(self.INSERT, (item_id, SESSION, CTYPE, key, data.decode(), 1.0,
                                            now, None, now, now))
            if audit:
                self.conn.execute(self.AUDIT, (
                    "create", "context", item_id, None,
                    audit_json(item_id, key, data, now.isoformat()), None, USER, SESSION,
                    now))

    def insert_many(self, items: Sequence[tuple[str, Any]]) -> None:
        now = datetime.now(UTC)
        rows = [(time_id(), SESSION, CTYPE, key, orjson.dumps(val).decode(), 1.0,
                 now, None, now, now) for key, val in items]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self.INSERT, rows)

    def read(self, key: str) -> Any:
        # jsonb arrives decoded by orjson (set_json_loads above).
        return self.conn.execute(self.SELECT, (SESSION, CTYPE, key)).fetchone()

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.conn.close()


class PostgresSetup:
    """Fresh databases as private schemas ``sk_bench_<random>_<n>``, dropped after."""

    label = "pg"

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.prefix = f"sk_bench_{secrets.token_hex(4)}"
        self.made = 0

    def _schema(self, stack: ExitStack) -> str:
        self.made += 1
        schema = f"{self.prefix}_{self.made}"
        self.admin.execute(f"CREATE SCHEMA {schema}")
        stack.callback(self.admin.execute, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        return schema

    def _analyze(self, schema: str, populate: int) -> None:
        # Fresh statistics after a bulk load, as autovacuum would soon give: without
        # them the planner reads a point lookup through idx_context_session_type and
        # filters every row of the session instead of using the unique index.
        if populate:
            self.admin.execute(f"ANALYZE {schema}.context")

    def ours(self, stack: ExitStack, populate: int = 0) -> Store:
        schema = self._schema(stack)
        store = new_store(f"{PG_URL}?schema={schema}", stack, populate)
        self._analyze(schema, populate)
        return store

    def raw(self, stack: ExitStack, populate: int = 0) -> RawPostgres:
        schema = self._schema(stack)
        with ExitStack() as schema_stack:
            new_store(f"{PG_URL}?schema={schema}", schema_stack, populate)
        self._analyze(schema, populate)
        raw = RawPostgres(schema)
        stack.callback(raw.close)
        return raw

    def sweep(self) -> None:
        """Drop any schema of this run left behind (after a failure)."""
        rows = self.admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
            (self.prefix + "\\_%",)).fetchall()
        for (name,) in rows:
            self.admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


Setup = SQLiteSetup | PostgresSetup


# -- the figures ----------------------------------------------------------------


def single_write(bench: Bench, setup: Setup, stack: ExitStack, *, target: float) -> None:
    name = f"{setup.label} durable single write"
    if not bench.wants(name):
        return
    n = bench.size(5_000, 1_000) if setup.label == "sqlite" else bench.size(1_500, 200)
    store = setup.ours(stack)
    raw, raw_audit = setup.raw(stack), setup.raw(stack)
    counters = {"ours": 0, "raw": 0, "raw+audit": 0}

    def ours() -> int:
        start = counters["ours"]
        for i in range(start, start + n):
            store.set_context(SESSION, CTYPE, f"k{i}", value(i))
        counters["ours"] = start + n
        return n

    def baseline(side: Raw, label: str, audit: bool) -> Run:
        def run() -> int:
            start = counters[label]
            for i in range(start, start + n):
                side.write(f"k{i}", value(i), audit=audit)
            counters[label] = start + n
            return n
        return run

    bench.measure(name, ready(ours), ready(baseline(raw, "raw", False)), target=target,
                  ops={"writes": n},
                  extra={f"{setup.label} single write vs raw + audit row":
                         ready(baseline(raw_audit, "raw+audit", True))},
                  note="ours writes its audit row; the main baseline writes the context row"
                       " only")
    if not bench.profiling:  # every side did the same number of writes
        ours_rows = len(store.list_context(SESSION))
        assert ours_rows == counters["ours"] == raw.count("context"), (ours_rows, counters)
        assert raw_audit.count("audit_log") == counters["raw+audit"] + 1  # + create_session


def batch_insert(bench: Bench, setup: Setup, *, target: float) -> None:
    n = bench.size(100_000, 10_000)
    name = f"{setup.label} batch insert {n // 1000}k context items"
    if not bench.wants(name):
        return
    items = [(f"k{i}", value(i)) for i in range(n)]

    def ours(stack: ExitStack) -> Run:
        store = setup.ours(stack)

        def run() -> int:
            return store.set_context_many(
                SESSION, [ContextInput(CTYPE, key, val) for key, val in items])
        return run

    def baseline(stack: ExitStack) -> Run:
        raw = setup.raw(stack)
        stack.callback(lambda: _check_count(raw, n))

        def run() -> int:
            raw.insert_many(items)
            return n
        return run

    bench.measure(name, ours, baseline, target=target, ops={"items": n},
                  rounds=bench.rounds_for(5 if setup.label == "sqlite" else 3),
                  warmup=0 if bench.quick else 1,
                  note="ours includes one audit row per item; each sample starts from an"
                       " empty database")


def _check_count(raw: Raw, n: int) -> None:
    assert raw.count("context") == n


def point_read(bench: Bench, setup: Setup, stack: ExitStack, *, target: float) -> None:
    name = f"{setup.label} point read, no cache (10k items)"
    if not bench.wants(name):
        return
    items = 10_000
    n = bench.size(20_000, 5_000) if setup.label == "sqlite" else bench.size(4_000, 500)
    rng = random.Random(20240601)
    keys = [f"k{rng.randrange(items)}" for _ in range(n)]
    store = setup.ours(stack, populate=items)
    raw = setup.raw(stack, populate=items)
    assert store.get_context(SESSION, CTYPE, keys[0]) is not None
    assert raw.read(keys[0]) is not None

    def ours() -> int:
        get = store.get_context
        for key in keys:
            get(SESSION, CTYPE, key)
        return n

    def baseline() -> int:
        read = raw.read
        for key in keys:
            read(key)
        return n

    bench.measure(name, ready(ours), ready(baseline), target=target, ops={"reads": n},
                  note="default access_flush_interval: access counts batched in memory")


TARGETS = {"write": 0.7, "batch": 0.4, "read": 0.5}


def run_backend(bench: Bench, setup: Setup) -> None:
    with ExitStack() as stack:
        single_write(bench, setup, stack, target=TARGETS["write"])
    batch_insert(bench, setup, target=TARGETS["batch"])
    with ExitStack() as stack:
        point_read(bench, setup, stack, target=TARGETS["read"])


def pg_figure_names(bench: Bench) -> list[str]:
    n = bench.size(100_000, 10_000)
    return ["pg durable single write", f"pg batch insert {n // 1000}k context items",
            "pg point read, no cache (10k items)"]


def skip_pg(bench: Bench, reason: str) -> None:
    for name in pg_figure_names(bench):
        if bench.wants(name):
            bench.skip(name, reason)


def run_postgres(bench: Bench) -> None:
    if not any(bench.wants(n) for n in pg_figure_names(bench)):
        return
    if importlib.util.find_spec("statekeep.store.postgres") is None:
        skip_pg(bench, "statekeep.store.postgres does not exist yet")
        return
    import psycopg

    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        skip_pg(bench, f"no PostgreSQL server answers ({str(exc).strip().splitlines()[0]})")
        return
    setup = PostgresSetup(admin)

    def in_stack(fn: Callable[..., None], target: float) -> Callable[[], None]:
        def step() -> None:
            with ExitStack() as stack:
                fn(bench, setup, stack, target=target)
        return step

    names = pg_figure_names(bench)
    steps: list[tuple[str, Callable[[], None]]] = [
             (names[0], in_stack(single_write, TARGETS["write"])),
             (names[1], lambda: batch_insert(bench, setup, target=TARGETS["batch"])),
             (names[2], in_stack(point_read, TARGETS["read"]))]
    try:
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # a backend being written must not stop the run
                if bench.wants(name):
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    first = re.sub(r"[^\s'\"]*/(statekeep/)", r"\1", first)  # no machine paths
                    bench.skip(name, f"failed: {type(exc).__name__}: {first}")
    finally:
        setup.sweep()
        admin.close()


def main(argv: Sequence[str] | None = None) -> int:
    bench = Bench("store_writes", "statekeep store vs raw sqlite3 / psycopg", argv)
    run_backend(bench, SQLiteSetup(bench))
    run_postgres(bench)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())
