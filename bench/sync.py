"""State sync: ``sync_state`` throughput across processes, and propagation latency.

Figures:

1. ``sync_state`` throughput with 1, 2 and 4 processes on one store -- each
   process is a component writing its own key, one durable transaction per
   call (row locks, base check, version bump, seen-version upsert, audit row)
   -- against the raw single-row update rate of the same backend, measured in
   the same run with the same number of processes: ``BEGIN IMMEDIATE; UPDATE kv
   SET value = ?, version = version + 1 WHERE key = ?; COMMIT`` on SQLite (same
   pragmas), ``UPDATE ... ; COMMIT`` through psycopg on PostgreSQL. Target >= 0.5.
2. propagation latency from a write in one process to the callback of a
   subscriber in another, median and p99, per transport (SQLite's audit-log
   poller, Redis pub/sub, PostgreSQL LISTEN/NOTIFY), beside the raw
   publish -> receive latency of redis-py and psycopg across two processes.
   Measured from just before ``sync_state`` is called, so the write's own
   commit is included: an upper bound of commit -> callback.

    python bench/sync.py [--quick] [--rounds N] [--only WORDS]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _harness import Bench
from statekeep import StateConfig, open_store
from statekeep.sync.manager import SyncManager
from statekeep.sync.propagation import Propagator

PG_URL = os.environ.get("STATEKEEP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STATEKEEP_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CTX = mp.get_context("spawn")


# -- workers (top level: spawned processes import them) --------------------------


def _sync_worker(db: str, proc: int, n: int, ready: Any, go: Any, out: Any) -> None:
    store = open_store(StateConfig(db=db))
    manager = SyncManager(store)
    manager.sync_state(f"c{proc}", {f"k{proc}": -1})  # the key exists: updates from here
    ready.put(proc)
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        manager.sync_state(f"c{proc}", {f"k{proc}": {"step": i, "by": proc}})
    out.put((t0, time.perf_counter()))
    store.close()


def _raw_sqlite_worker(path: str, proc: int, n: int, ready: Any, go: Any, out: Any) -> None:
    import orjson

    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    ready.put(proc)
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE kv SET value = ?, version = version + 1 WHERE key = ?",
                     (orjson.dumps({"step": i, "by": proc}).decode(), f"k{proc}"))
        conn.execute("COMMIT")
    out.put((t0, time.perf_counter()))
    conn.close()


def _raw_audit_worker(path: str, proc: int, n: int, ready: Any, go: Any, out: Any) -> None:
    """The raw update plus the audit row statekeep writes with it, in a database
    with statekeep's schema (so the same audit indexes and checks)."""
    import orjson

    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    ready.put(proc)
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        value = orjson.dumps({"step": i, "by": proc}).decode()
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE kv SET value = ?, version = version + 1 WHERE key = ?",
                     (value, f"k{proc}"))
        conn.execute(
            "INSERT INTO audit_log (event_type, entity_type, entity_id, old_value, new_value,"
            " change_metadata, user_id, session_id, timestamp)"
            " VALUES ('update', 'sync', ?, NULL, ?, ?, NULL, NULL, ?)",
            (f"global:k{proc}", orjson.dumps({"scope": "global", "key": f"k{proc}",
                                               "value": value, "version": i + 2,
                                               "component": f"c{proc}",
                                               "updated_at": now}).decode(),
             orjson.dumps({"component": f"c{proc}", "base_version": i + 1}).decode(), now))
        conn.execute("COMMIT")
    out.put((t0, time.perf_counter()))
    conn.close()


def _raw_pg_worker(url: str, proc: int, n: int, ready: Any, go: Any, out: Any) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    schema = url.rsplit("schema=", 1)[1]
    base = url.split("?", 1)[0]
    with psycopg.connect(base, options=f"-c search_path={schema}") as conn:
        ready.put(proc)
        go.wait()
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("UPDATE kv SET value = %s, version = version + 1 WHERE key = %s",
                         (Jsonb({"step": i, "by": proc}), f"k{proc}"))
            conn.commit()
        out.put((t0, time.perf_counter()))


def _writer(db: str, redis_url: str | None, n: int, gap: float, go: Any) -> None:
    store = open_store(StateConfig(db=db, redis_url=redis_url))
    with Propagator(store) as propagator:
        manager = SyncManager(store, propagator=propagator)
        propagator.wait_ready(10)
        go.wait()
        for i in range(n):
            manager.sync_state("writer", {"tick": {"i": i, "t": time.time_ns()}})
            time.sleep(gap)
    store.close()


def _raw_redis_writer(channel: str, n: int, gap: float, go: Any) -> None:
    import orjson
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    go.wait()
    for i in range(n):
        client.publish(channel, orjson.dumps({"i": i, "t": time.time_ns()}))
        time.sleep(gap)
    client.close()


def _raw_pg_writer(channel: str, n: int, gap: float, go: Any) -> None:
    import orjson
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        go.wait()
        for i in range(n):
            conn.execute("SELECT pg_notify(%s, %s)",
                         (channel, orjson.dumps({"i": i, "t": time.time_ns()}).decode()))
            time.sleep(gap)


# -- throughput -------------------------------------------------------------------


class _Fleet:
    """Processes started and ready before the clock starts; ``run`` releases them."""

    def __init__(self, stack: ExitStack, target: Any, args: Sequence[Any], procs: int,
                 n: int) -> None:
        self.ready, self.out, self.go = CTX.Queue(), CTX.Queue(), CTX.Event()
        self.procs = [CTX.Process(target=target, args=(*args, p, n, self.ready, self.go,
                                                         self.out), daemon=True)
                      for p in range(procs)]
        for proc in self.procs:
            proc.start()
        stack.callback(self._reap)
        for _ in self.procs:
            self.ready.get(timeout=120)
        self.n = n

    def run(self) -> float:
        """Operations per second from the first worker's start to the last one's end
        (process start-up and exit stay outside, as they would in a long-lived agent)."""
        self.go.set()
        spans = [self.out.get(timeout=600) for _ in self.procs]
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        return self.n * len(self.procs) / (end - start)

    def _reap(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


def _pg_schema(stack: ExitStack) -> str | None:
    try:
        import psycopg

        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except Exception:
        return None
    schema = "sk_bench_" + secrets.token_hex(5)
    admin.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()

    stack.callback(drop)
    return f"{PG_URL}?schema={schema}"


def throughput(bench: Bench, backend: str, procs: int) -> None:
    name = f"sync_state {backend}, {procs} process{'es' if procs > 1 else ''}"
    if not bench.wants(name):
        return
    n = (bench.size(4000, 200) if backend == "sqlite" else bench.size(1200, 60)) // procs

    def ours(stack: ExitStack) -> float:
        if backend == "sqlite":
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            db = str(folder / "sync.db")
        else:
            url = _pg_schema(stack)
            assert url is not None
            db = url
        open_store(StateConfig(db=db)).close()  # migrate once, before the workers
        return _Fleet(stack, _sync_worker, (db,), procs, n).run()

    def audited(stack: ExitStack) -> float:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        path = str(folder / "audited.db")
        open_store(StateConfig(db=path)).close()  # statekeep's schema: its audit_log
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                     " version INTEGER NOT NULL)")
        conn.executemany("INSERT INTO kv VALUES (?, '{}', 1)", [(f"k{p}",) for p in range(procs)])
        conn.close()
        return _Fleet(stack, _raw_audit_worker, (path,), procs, n).run()

    def baseline(stack: ExitStack) -> float:
        if backend == "sqlite":
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            path = str(folder / "raw.db")
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=wal")
            conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                         " version INTEGER NOT NULL)")
            conn.executemany("INSERT INTO kv VALUES (?, '{}', 1)",
                             [(f"k{p}",) for p in range(procs)])
            conn.close()
            return _Fleet(stack, _raw_sqlite_worker, (path,), procs, n).run()
        import psycopg

        url = _pg_schema(stack)
        assert url is not None
        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {schema}.kv (key TEXT PRIMARY KEY, value JSONB"
                         " NOT NULL, version BIGINT NOT NULL)")
            conn.execute(f"INSERT INTO {schema}.kv SELECT 'k' || g, '{{}}', 1"
                         f" FROM generate_series(0, {procs - 1}) g")
        return _Fleet(stack, _raw_pg_worker, (url,), procs, n).run()

    if backend == "postgres":
        with ExitStack() as probe:
            if _pg_schema(probe) is None:
                bench.skip(name, f"no PostgreSQL answers at {PG_URL}")
                return
    # The workers time themselves (first start to last end), so the rounds are run
    # here, alternating which side goes first, and handed to the harness as samples.
    samples: dict[str, list[float]] = {"ours": [], "baseline": [], "audited": []}
    cases = {"ours": ours, "baseline": baseline}
    if backend == "sqlite":
        cases["audited"] = audited
    rounds = bench.rounds_for(3)
    for r in range(rounds + 1):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        for label in order:
            with ExitStack() as stack:
                rate = cases[label](stack)
            if r:  # round 0 warms up
                samples[label].append(rate)
    bench.report(name, samples["ours"], samples["baseline"], target=0.5,
                 ops={"ours": n * procs, "baseline": n * procs},
                 note="each process its own component and key; raw: the same updates"
                      " of a one-table key/value store")
    if samples["audited"]:
        bench.report(f"{name}, raw also writes the audit row", samples["ours"],
                     samples["audited"], target=None, ops={"ours": n * procs})


# -- propagation latency ----------------------------------------------------------------


def _percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"median {statistics.median(samples) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"


def _collect(n: int) -> tuple[list[float], Any, Any]:
    got: list[float] = []
    done = threading.Event()
    lock = threading.Lock()

    def on(t_sent_ns: int) -> None:
        with lock:
            got.append((time.time_ns() - t_sent_ns) / 1e9)
            if len(got) >= n:
                done.set()

    return got, on, done


def latency(bench: Bench) -> None:
    n = bench.size(400, 40)
    gap = 0.005
    cases: list[tuple[str, str, str | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cases.append(("sqlite, audit-log poll", str(Path(tmp) / "poll.db"), None))
        cases.append(("sqlite + Redis pub/sub", str(Path(tmp) / "redis.db"), REDIS_URL))
        with ExitStack() as stack:
            url = _pg_schema(stack)
            if url is not None:
                cases.append(("PostgreSQL LISTEN/NOTIFY", url, None))
            for label, db, redis_url in cases:
                name = f"propagation latency, {label}"
                if not bench.wants("latency"):
                    return
                try:
                    store = open_store(StateConfig(db=db, redis_url=redis_url))
                except Exception as exc:
                    bench.skip(name, f"{type(exc).__name__}: {exc}")
                    continue
                with store, Propagator(store) as propagator:
                    got, on, done = _collect(n)
                    propagator.subscribe("reader", lambda e, on=on: on(e.value["t"]),
                                         keys="tick")
                    propagator.wait_ready(10)
                    go = CTX.Event()
                    proc = CTX.Process(target=_writer, args=(db, redis_url, n, gap, go))
                    proc.start()
                    time.sleep(1.0)  # the writer opens its store and transport
                    go.set()
                    done.wait(120)
                    proc.join(60)
                    stats = propagator.stats()
                if len(got) < n:
                    bench.skip(name, f"received {len(got)} of {n} changes")
                    continue
                bench.note(f"{name}: {_percentiles(got)} over {n} writes"
                           f" ({stats.transport})")
            raw_latency(bench, n, gap)


def raw_latency(bench: Bench, n: int, gap: float) -> None:
    import orjson

    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        pubsub = client.pubsub()
        channel = "bench-raw-" + secrets.token_hex(4)
        pubsub.subscribe(channel)
        pubsub.get_message(timeout=1)
        go = CTX.Event()
        proc = CTX.Process(target=_raw_redis_writer, args=(channel, n, gap, go))
        proc.start()
        time.sleep(1.0)
        go.set()
        got: list[float] = []
        deadline = time.monotonic() + 120
        while len(got) < n and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=1)
            if msg and msg["type"] == "message":
                got.append((time.time_ns() - orjson.loads(msg["data"])["t"]) / 1e9)
        proc.join(60)
        pubsub.close()
        client.close()
        bench.note(f"baseline raw redis-py publish -> subscriber: {_percentiles(got)}")
    except Exception as exc:
        bench.note(f"baseline raw redis-py: skipped ({type(exc).__name__}: {exc})")
    try:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            channel = "bench_raw_" + secrets.token_hex(4)
            conn.execute(f"LISTEN {channel}")
            go = CTX.Event()
            proc = CTX.Process(target=_raw_pg_writer, args=(channel, n, gap, go))
            proc.start()
            time.sleep(1.0)
            go.set()
            got = []
            for note in conn.notifies(timeout=60, stop_after=n):
                got.append((time.time_ns() - orjson.loads(note.payload)["t"]) / 1e9)
            proc.join(60)
        bench.note(f"baseline raw psycopg NOTIFY -> LISTEN: {_percentiles(got)}")
    except Exception as exc:
        bench.note(f"baseline raw psycopg: skipped ({type(exc).__name__}: {exc})")


def main(argv: Sequence[str] | None = None) -> int:
    bench = Bench("sync", "sync_state vs raw single-row updates; propagation latency", argv)
    for backend in ("sqlite", "postgres"):
        for procs in (1, 2, 4):
            throughput(bench, backend, procs)
    latency(bench)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())
