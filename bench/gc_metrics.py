"""GC, query optimisation and metrics: the figures of the seed's sections 8-10.

The GC and query figures live beside this script, in ``bench/_gc_figures.py``
(``gc_figures(bench)``) and ``bench/_query_figures.py`` (``query_figures(bench)``);
while one of them cannot be imported its figures are reported as skipped, with
the reason. This script measures the metrics itself:

1. **metrics on vs off: hot get via the facade** (target: < 2 % slower). A façade
   ``get_context`` served by the hot tier, with a :class:`StateMetrics` watching
   the system against the same system unwatched. Hot-path counters are plain
   integers the tiers keep anyway and are read only at scrape time, so the two
   run the same code: the figure proves nothing was slipped onto the hot path.
   The same comparison on the bare ``HotTier.get`` follows (info).
2. **metrics on vs off: store point read** (info): the one per-operation
   cost metrics add -- the transaction observer (a ``perf_counter`` pair and a
   plain-integer histogram bucket) -- against a SQLite primary-key read through
   the store (~15 µs with decoding).
3. **one observation vs a HotTier.get** (info, time ratio): the raw price of
   a plain-integer histogram observation (the transaction observer), of
   prometheus-client's ``Histogram.observe`` and of ``Counter.inc``, against
   one bare ``HotTier.get`` -- why prometheus-client stays off per-read paths.
4. a note with the cost of one scrape (``generate_latest`` of a system's registry).

    python bench/gc_metrics.py [--quick] [--rounds N] [--only WORDS]
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, Counter, Histogram

from _harness import Bench, Prepare, ready
from statekeep import StateConfig, StateSystem
from statekeep.memory.hot import HotTier
from statekeep.metrics import LATENCY_BUCKETS, StateMetrics

KEYS = 1_000


def external(bench: Bench, module: str, function: str, label: str) -> None:
    """Run another engineer's figures, or skip them with the reason they cannot run."""
    if not bench.wants(label):
        return
    try:
        figures: Callable[[Bench], None] = getattr(importlib.import_module(module), function)
    except ImportError as exc:  # the module, or what it measures, does not exist yet
        bench.skip(label, f"bench/{module}.py cannot be imported ({exc})")
        return
    except AttributeError:
        bench.skip(label, f"bench/{module}.py has no {function}(bench)")
        return
    figures(bench)


def open_system(stack: ExitStack) -> StateSystem:
    """A system with its own metrics off, so the figures switch metrics on and off."""
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sk-bench-"))
    sk = StateSystem(StateConfig(db=str(Path(tmp) / "bench.db"), metrics=False))
    stack.callback(sk.close)
    return sk


def watched(sk: StateSystem, run: Callable[[], int]) -> Prepare:
    """A case that runs ``run`` with a StateMetrics watching ``sk`` (detached after)."""
    def prepare(stack: ExitStack) -> Callable[[], int]:
        metrics = StateMetrics.for_system(sk)
        stack.callback(metrics.close)
        return run
    return prepare


def python_calls(fn: Callable[[], object]) -> int:
    """Python and C function calls ``fn`` makes: a noise-free proof that metrics
    add no call to a path (the timed figures on a shared machine are not)."""
    count = 0

    def profile(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count - 1  # the setprofile(None) call itself


def hot_get_figures(bench: Bench) -> None:
    name = "metrics on vs off: hot get via the facade"
    bare = "metrics on vs off: bare HotTier.get"
    if not (bench.wants(name) or bench.wants(bare)):
        return
    n = bench.size(200_000, 60_000)
    with ExitStack() as stack:
        sk = open_system(stack)
        session = sk.create_session("bench")
        keys = [f"k{i}" for i in range(KEYS)]
        for key in keys:
            sk.set_context(session.id, "note", key, {"key": key, "tokens": 212})
            sk.get_context(session.id, "note", key)  # now in the hot tier
        sid, order = session.id, [keys[i % KEYS] for i in range(n)]
        assert sk.hot is not None
        hot = sk.hot

        def facade() -> int:
            get = sk.get_context
            for key in order:
                get(sid, "note", key)
            return n

        # Both sides run the same code, so the ratio is the machine's noise: more
        # rounds than usual give its median a chance to settle near 1.
        rounds = None if bench.quick else max(bench.rounds, 21)
        bench.measure(name, watched(sk, facade), ready(facade), target=1.02, kind="time",
                      ops={"gets": n}, rounds=rounds, warmup=2,
                      note="all hits; ours with a StateMetrics watching the system")
        if not bench.profiling:
            with ExitStack() as on:
                watched(sk, facade)(on)
                with_metrics = python_calls(lambda: sk.get_context(sid, "note", keys[0]))
            without = python_calls(lambda: sk.get_context(sid, "note", keys[0]))
            bench.note(f"function calls per hot get via the facade: {with_metrics} with"
                       f" metrics, {without} without (counted by sys.setprofile, noise-free)")
        tier_keys = [("ctx", sid, "note", key) for key in order]

        def tier() -> int:
            get = hot.get
            for key in tier_keys:
                get(key)
            return n

        bench.measure(bare, watched(sk, tier), ready(tier), target=None, kind="time",
                      ops={"gets": n})


def store_read_figure(bench: Bench) -> None:
    name = "metrics on vs off: store point read"
    if not bench.wants(name):
        return
    n = bench.size(50_000, 10_000)
    with ExitStack() as stack:
        sk = open_system(stack)
        ids = [sk.create_session(f"u{i}").id for i in range(200)]
        order = [ids[i % len(ids)] for i in range(n)]
        get = sk.store.get_session

        def read() -> int:
            for sid in order:
                get(sid)
            return n

        bench.measure(name, watched(sk, read), ready(read), target=None, kind="time",
                      ops={"reads": n},
                      note="SQLite primary-key read past the hot tier; the observer times it")


def observation_figures(bench: Bench) -> None:
    names = ["plain-int observe vs a HotTier.get",
             "Histogram.observe vs a HotTier.get",
             "Counter.inc vs a HotTier.get"]
    if not any(bench.wants(x) for x in names):
        return
    n = bench.size(500_000, 100_000)
    hot = HotTier(1 << 30, 3600)
    keys = [("ctx", "ses_1", "note", f"k{i}") for i in range(KEYS)]
    for key in keys:
        hot.put(key, {"k": key}, 20)
    order = [keys[i % KEYS] for i in range(n)]
    metrics = StateMetrics()
    observe = metrics.observe_transaction
    registry = CollectorRegistry()
    histogram = Histogram("bench_seconds", "bench", buckets=LATENCY_BUCKETS, registry=registry)
    counter = Counter("bench_ops", "bench", registry=registry)
    seconds = [2e-6 * (1 + i % 50) for i in range(n)]  # spread over the buckets

    def hot_get() -> int:
        get = hot.get
        for key in order:
            get(key)
        return n

    def plain() -> int:
        for s in seconds:
            observe("read", s, False)
        return n

    def prom_observe() -> int:
        obs = histogram.observe
        for s in seconds:
            obs(s)
        return n

    def prom_inc() -> int:
        inc = counter.inc
        for _ in seconds:
            inc()
        return n

    bench.measure(names[0], ready(plain), ready(hot_get), target=None, kind="time",
                  ops={"ops": n}, note="StateMetrics.observe_transaction, the store's observer")
    bench.measure(names[1], ready(prom_observe), ready(hot_get), target=None, kind="time",
                  ops={"ops": n})
    bench.measure(names[2], ready(prom_inc), ready(hot_get), target=None, kind="time",
                  ops={"ops": n})
    metrics.close()


def scrape_note(bench: Bench) -> None:
    if bench.profiling or not bench.wants("scrape"):
        return
    with ExitStack() as stack:
        sk = open_system(stack)
        metrics = StateMetrics.for_system(sk)
        stack.callback(metrics.close)
        session = sk.create_session("bench")
        for i in range(100):
            sk.set_context(session.id, "note", f"k{i}", i)
            sk.get_context(session.id, "note", f"k{i}")
        rounds = bench.size(2_000, 300)
        metrics.exposition()
        start = time.perf_counter()
        for _ in range(rounds):
            metrics.exposition()
        per = (time.perf_counter() - start) / rounds
        size = len(metrics.exposition())
        bench.note(f"one scrape of a system's registry (generate_latest, {size} bytes):"
                   f" {per * 1e6:.0f} µs")


def main(argv: Sequence[str] | None = None) -> int:
    bench = Bench("gc_metrics", "GC, query optimisation and metrics recording costs", argv)
    external(bench, "_gc_figures", "gc_figures", "GC figures (bench/_gc_figures.py)")
    external(bench, "_query_figures", "query_figures",
             "query figures (bench/_query_figures.py)")
    hot_get_figures(bench)
    store_read_figure(bench)
    observation_figures(bench)
    scrape_note(bench)
    return bench.finish()


if __name__ == "__main__":
    raise SystemExit(main())
