"""Memory tiers against the parts they stand on.

Figures (targets from docs/benchmarks.md):

* hot-tier get vs ``cachetools.LRUCache`` get on the same keys (time, <= 2x);
* warm-tier get / batch get vs raw redis-py GET / pipeline (>= 0.8);
* a Zipf (s=1.1) 90 % read / 10 % write workload through HierarchicalMemory vs
  the store alone, i.e. the same code with no upper tier (>= 10x). Writes are
  durable commits on both sides, so the ratio is bounded by the write share;
* compression of realistic JSON state vs the ``zstd -3`` command line (info);
* dedup: bytes on disk for 1,000 copies of one 1 MB value (info);
* the lz4 / zstd size table behind ``codec.TINY_BYTES`` / ``SMALL_BYTES`` (notes).

Run: ``python bench/tiers.py [--quick]``.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cachetools
import lz4.frame
import orjson
import zstandard

from _harness import Bench, Run, ready
from statekeep import StateConfig, Store, codec, open_store
from statekeep.memory.hierarchy import HierarchicalMemory
from statekeep.memory.hot import HotTier

REDIS_URL = os.environ.get("STATEKEEP_BENCH_REDIS", "redis://127.0.0.1:6379/0")
MB = 1024 * 1024
WORDS = [
    "the", "agent", "task", "file", "function", "error", "result", "test", "build",
    "deploy", "session", "context", "user", "query", "plan", "step", "review", "patch",
    "code", "module", "import", "value", "config", "path", "status", "retry",
]


def agent_state(rng: random.Random, n: int) -> dict[str, Any]:
    """JSON shaped like an agent's state: a message log and a map of files."""
    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))
    return {
        "session_id": "ses_019ab1c2d3e4f5", "step": rng.randrange(1000),
        "messages": [{"role": rng.choice(["user", "assistant", "tool"]),
                      "content": sentence(rng.randrange(5, 40)),
                      "tokens": rng.randrange(10, 900), "ts": f"2030-01-01T12:{i % 60:02d}:00Z"}
                     for i in range(n)],
        "files": {f"src/pkg/mod{i}.py": {"hash": f"{rng.getrandbits(64):016x}",
                                         "lines": rng.randrange(2000)}
                  for i in range(n // 3 + 1)},
    }


def new_store(stack: ExitStack, **overrides: Any) -> Store:
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sk-bench-"))
    store = open_store(StateConfig(db=str(Path(tmp) / "bench.db"), **overrides))
    stack.callback(store.close)
    return store


# -- hot tier ---------------------------------------------------------------------


def hot_get(bench: Bench) -> None:
    name = "hot-tier get vs cachetools.LRUCache get"
    if not bench.wants(name):
        return
    n_keys, n = 10_000, bench.size(1_000_000, 200_000)
    rng = random.Random(1)
    keys = [("ctx", "ses_1", "file", f"k{rng.randrange(n_keys)}") for _ in range(n)]
    hot = HotTier(1 << 30, 3600)
    lru: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(maxsize=n_keys * 2)
    for i in range(n_keys):
        key = ("ctx", "ses_1", "file", f"k{i}")
        hot.put(key, {"i": i}, 20)
        lru[key] = {"i": i}

    def ours() -> int:
        get = hot.get
        for key in keys:
            get(key)
        return n

    def baseline() -> int:
        get = lru.get
        for key in keys:
            get(key)
        return n

    bench.measure(name, ready(ours), ready(baseline), target=2.0, kind="time",
                  ops={"gets": n}, note="all hits, 10k keys; ours also checks the TTL")


# -- warm tier --------------------------------------------------------------------


def warm_figures(bench: Bench) -> None:
    names = ["warm-tier get vs redis-py GET", "warm-tier batch get vs redis-py pipeline"]
    if not any(bench.wants(n) for n in names):
        return
    try:
        from statekeep.memory.warm import WarmTier
    except ImportError:
        for name in names:
            bench.skip(name, "statekeep.memory.warm does not exist yet")
        return
    import redis

    raw = redis.Redis.from_url(REDIS_URL)
    try:
        raw.ping()
    except redis.RedisError as exc:
        for name in names:
            bench.skip(name, f"no Redis answers ({exc})")
        return
    ns = "bench-" + secrets.token_hex(4)
    warm = WarmTier(REDIS_URL, ns, ttl_seconds=3600, max_bytes=256 * MB)
    rng = random.Random(2)
    n_keys = 2_000
    payload = codec.compress(orjson.dumps(agent_state(rng, 5)))
    raw_prefix = f"bench-raw-{ns}:"
    for i in range(n_keys):
        warm.put(f"k{i}", payload)
        raw.set(f"{raw_prefix}k{i}", payload, px=3_600_000)
    try:
        n = bench.size(5_000, 1_000)
        keys = [f"k{rng.randrange(n_keys)}" for _ in range(n)]

        def ours() -> int:
            for key in keys:
                warm.get(key)
            return n

        def baseline() -> int:
            for key in keys:
                raw.get(raw_prefix + key)
            return n

        bench.measure(names[0], ready(ours), ready(baseline), target=0.8, ops={"gets": n})

        batch, batches = 1_000, bench.size(50, 10)
        groups = [[f"k{rng.randrange(n_keys)}" for _ in range(batch)] for _ in range(batches)]

        def ours_many() -> int:
            for group in groups:
                warm.get_many(group)
            return batch * batches

        def base_many() -> int:
            for group in groups:
                pipe = raw.pipeline(transaction=False)
                for key in group:
                    pipe.get(raw_prefix + key)
                pipe.execute()
            return batch * batches

        bench.measure(names[1], ready(ours_many), ready(base_many), target=0.8,
                      ops={"gets": batch * batches}, note="batches of 1,000 keys")
    finally:
        warm.clear()
        warm.close()
        for i in range(n_keys):
            raw.delete(f"{raw_prefix}k{i}")
        raw.close()


# -- Zipf workload through the tiers ---------------------------------------------------


def zipf_keys(rng: random.Random, n_keys: int, n: int, s: float = 1.1) -> list[int]:
    weights = [1 / (rank ** s) for rank in range(1, n_keys + 1)]
    return rng.choices(range(n_keys), weights=weights, k=n)


def zipf_workload(bench: Bench, write_share: float = 0.1) -> None:
    reads = round((1 - write_share) * 100)
    name = (f"Zipf {reads}/{100 - reads} through HierarchicalMemory vs store alone"
            if write_share else "Zipf reads only through HierarchicalMemory vs store alone")
    if not bench.wants(name):
        return
    n_keys, n = 5_000, bench.size(20_000, 4_000)
    rng = random.Random(3)
    values = [agent_state(rng, rng.randrange(1, 8)) for _ in range(64)]
    picks = zipf_keys(rng, n_keys, n)
    ops = [(f"k{k}", rng.random() < write_share, values[k % 64]) for k in picks]

    def case(tiered: bool) -> Any:
        def prepare(stack: ExitStack) -> Run:
            store = new_store(stack)
            mem = HierarchicalMemory(store, rss_limit_bytes=0) if tiered else \
                HierarchicalMemory(store, working=HotTier(0, 1), rss_limit_bytes=0)
            for i in range(n_keys):  # importance by rank: the head is important
                mem.store(f"k{i}", values[i % 64], importance=0.9 if i < 500 else 0.5)
            mem.working.clear()

            def run() -> int:
                for key, write, value in ops:
                    if write:
                        mem.store(key, value, importance=0.9)
                    else:
                        mem.retrieve(key)
                return n
            return run
        return prepare

    bench.measure(name, case(True), case(False), target=10.0 if write_share else None,
                  ops={"ops": n}, rounds=bench.rounds_for(3), warmup=0,
                  note="SQLite, durable commit per write on both sides, no Redis; a write"
                       " (~250 us, commit + audit row) outweighs a store read (~3 us) 80x,"
                       " so with 10% writes both sides spend ~90% of their time writing")


# -- compression ------------------------------------------------------------------


def compression(bench: Bench) -> None:
    name = "compress realistic JSON vs zstd -3 CLI"
    if not bench.wants(name):
        return
    zstd_bin = shutil.which("zstd")
    if zstd_bin is None:
        bench.skip(name, "the zstd command line is not installed")
        return
    rng = random.Random(4)
    data = orjson.dumps([agent_state(rng, 200) for _ in range(bench.size(60, 10))])
    ours_out = codec.compress(data)
    cli_out = subprocess.run([zstd_bin, "-3", "-c", "-q"], input=data, capture_output=True,
                             check=True).stdout
    bench.note(f"{name}: {len(data) / MB:.1f} MB of JSON; ratio ours"
               f" {len(data) / len(ours_out):.2f} (codec {ours_out[0]}),"
               f" zstd -3 CLI {len(data) / len(cli_out):.2f}")

    def ours() -> int:
        codec.compress(data)
        return len(data)

    def baseline() -> int:
        subprocess.run([zstd_bin, "-3", "-c", "-q"], input=data, capture_output=True,
                       check=True)
        return len(data)

    bench.measure(name, ready(ours), ready(baseline), target=None, ops={"bytes": len(data)},
                  note="throughput in bytes/s; the CLI pays process start and pipes")


def thresholds(bench: Bench) -> None:
    """The table behind codec.TINY_BYTES / SMALL_BYTES, re-measured."""
    if not bench.wants("compression thresholds"):
        return
    rng = random.Random(7)
    zc, zd = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()

    def per_call(fn: Any, arg: bytes, reps: int) -> tuple[float, Any]:
        start = time.perf_counter()
        for _ in range(reps):
            out = fn(arg)
        return (time.perf_counter() - start) / reps * 1e6, out

    bench.note("compression thresholds: size | lz4 ratio c/d us | zstd-3 ratio c/d us")
    for n in (1, 3, 10, 50, 200, 1000):
        data = orjson.dumps(agent_state(rng, n))
        reps = bench.size(max(20, 400_000 // len(data)), max(5, 50_000 // len(data)))
        lc, lz = per_call(lz4.frame.compress, data, reps)
        ld, _ = per_call(lz4.frame.decompress, lz, reps)
        zc_t, zz = per_call(zc.compress, data, reps)
        zd_t, _ = per_call(zd.decompress, zz, reps)
        bench.note(f"  {len(data):>8} B | {len(data) / len(lz):.2f} {lc:.1f}/{ld:.1f}"
                   f" | {len(data) / len(zz):.2f} {zc_t:.1f}/{zd_t:.1f}")


# -- dedup --------------------------------------------------------------------------


def dedup(bench: Bench) -> None:
    name = "dedup: 1,000 copies of a 1 MB value"
    if not bench.wants(name):
        return
    copies = bench.size(1_000, 200)
    value = {"tool_output": os.urandom(MB // 2).hex()}  # 1 MB of JSON, barely compressible
    with ExitStack() as stack:
        store = new_store(stack)
        mem = HierarchicalMemory(store, rss_limit_bytes=0)
        db = Path(store.location)
        start = time.perf_counter()
        for i in range(copies):
            mem.store(f"copy{i}", value, importance=0.1)
        elapsed = time.perf_counter() - start
        with store.reading() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        on_disk = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        stats = store.blob_stats()
    logical = copies * len(orjson.dumps(value))
    bench.note(f"{name}: {copies} copies, {logical / MB:.0f} MB logical -> blob table"
               f" {stats.stored_bytes / MB:.2f} MB, SQLite files {on_disk / MB:.2f} MB,"
               f" {copies / elapsed:.0f} writes/s")


def main(argv: Sequence[str] | None = None) -> int:
    bench = Bench("tiers", "memory tiers vs cachetools / redis-py / store alone / zstd CLI",
                  argv)
    hot_get(bench)
    warm_figures(bench)
    zipf_workload(bench)
    zipf_workload(bench, write_share=0.0)
    compression(bench)
    thresholds(bench)
    dedup(bench)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())
