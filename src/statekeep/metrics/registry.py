"""Prometheus metrics of one :class:`~statekeep.system.StateSystem`, priced per use.

A hot-tier hit costs ~0.2 µs (~1 µs through the façade); the cheapest
prometheus-client call, ``Counter.inc``, costs ~0.3 µs and ``Histogram.observe``
~0.7 µs (a lock per value). So nothing on the hot read path calls
prometheus-client. Three mechanisms, by how often a thing happens:

* **Read at scrape time** (zero cost per operation): the tiers already keep
  hits, misses, evictions and bytes as plain integers; :class:`_TierCollector`
  turns them into metric families only when ``/metrics`` is scraped, together
  with the cache hit rate and the process's memory use.
* **Plain-integer histograms** (~0.1 µs an observation) for transaction
  latencies, which happen on every store call: :class:`LatencyHistogram`
  bumps one list slot and a float, with no lock. Like the tiers' counters, an
  increment racing another thread's may be lost -- acceptable for statistics,
  and it keeps a 5 µs SQLite point read from paying 15 % for its metric.
* **prometheus-client objects** for rare events (a GC run, a recovery, a sync
  conflict, an error): their cost does not matter and they are the idiom.

Each :class:`StateMetrics` has its own :class:`CollectorRegistry` unless given
one, because a process (a test suite, a server hosting several stores) may
open many systems, and the global registry refuses a metric name twice.
"""

from __future__ import annotations

import functools
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Concatenate, Final, ParamSpec, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_go_float

from statekeep.errors import ConfigError, StatekeepError
from statekeep.memory.hierarchy import HierarchicalMemory, process_rss
from statekeep.memory.hot import HotTier
from statekeep.memory.warm import WarmTier
from statekeep.metrics.report import (
    MB,
    HistogramSnapshot,
    PerformanceReport,
    TierFigures,
    cache_hit_rate,
    memory_efficiency,
)
from statekeep.store.base import TxObserver
from statekeep.store.sync import ConflictResolution, SyncResult

__all__ = [
    "GC_BUCKETS",
    "LATENCY_BUCKETS",
    "METRIC_NAMES",
    "RECOVERY_BUCKETS",
    "LatencyHistogram",
    "StateMetrics",
    "counts_errors",
]

#: Transaction latencies run from ~4 µs (a SQLite point read) to seconds (a
#: lock wait); prometheus-client's default buckets start at 5 ms and would put
#: every point read in the first one, leaving p95 meaningless.
LATENCY_BUCKETS: Final = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
                          2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GC_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
RECOVERY_BUCKETS: Final = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: Every family :class:`StateMetrics` exposes (the seed's six first), as scraped.
METRIC_NAMES: Final = (
    "state_query_latency_seconds",
    "state_write_latency_seconds",
    "state_cache_hit_rate",
    "state_memory_usage_bytes",
    "state_gc_duration_seconds",
    "state_recovery_time_seconds",
    "state_transaction_failures",
    "state_cache_hits",
    "state_cache_misses",
    "state_cache_evictions",
    "state_cache_expirations",
    "state_cache_errors",
    "state_cache_bytes",
    "state_cache_entries",
    "state_cache_capacity_bytes",
    "state_sync_conflicts",
    "state_errors",
)


#: The ``le`` label as prometheus-client writes it for its own histograms.
_go_float = cast(Callable[[float], str], _untyped_go_float)


#: Attribute on an exception: ids of the StateMetrics that already counted it.
_COUNTED: Final = "_statekeep_counted_by"

P = ParamSpec("P")
R = TypeVar("R")


class _HasMetrics(Protocol):
    @property
    def metrics(self) -> StateMetrics | None: ...


H = TypeVar("H", bound=_HasMetrics)


def counts_errors(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], R]:
    """Count the StatekeepErrors a façade method raises in ``self.metrics``.

    For methods off the hot path: the wrapper is one more Python call (~0.2
    µs), which a 1 µs hot-tier hit through the façade must not pay -- put a
    ``try/except`` around the store call of those instead (free until raised).
    """
    @functools.wraps(method)
    def call(self: H, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except StatekeepError as exc:
            metrics = self.metrics
            if metrics is not None:
                metrics.count_error(exc)
            raise

    return cast("Callable[Concatenate[H, P], R]", call)


class LatencyHistogram:
    """A histogram whose observation is one list increment and one float add.

    ``counts[i]`` holds observations ``<= bounds[i]`` and above the previous
    bound (``bisect_left`` puts a value equal to a bound in that bound's
    bucket, as Prometheus' ``le`` requires); the last slot is ``+Inf``.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bounds must be strictly increasing and not empty")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        """Cumulative counts, as exposition and quantiles want them.

        The total is derived from the buckets, so ``_count`` always equals the
        ``+Inf`` bucket even if a racing increment was lost.
        """
        running, cumulative = 0, []
        for n in list(self.counts):
            running += n
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self.sum)

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        snap = self.snapshot()
        buckets = [(_go_float(b), float(c))
                   for b, c in zip(snap.bounds, snap.cumulative, strict=False)]
        buckets.append(("+Inf", float(snap.count)))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=snap.sum)


def _prometheus_snapshot(histogram: Histogram) -> HistogramSnapshot:
    """A prometheus-client Histogram's state, read the way a scrape reads it."""
    bounds: list[float] = []
    cumulative: list[int] = []
    total = 0.0
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                if le != "+Inf":
                    bounds.append(float(le))
                cumulative.append(int(sample.value))
            elif sample.name.endswith("_sum"):
                total = float(sample.value)
    return HistogramSnapshot(tuple(bounds), tuple(cumulative), total)


class _SystemParts(Protocol):
    """What :meth:`StateMetrics.for_system` reads of a StateSystem (no import cycle)."""

    @property
    def store(self) -> _ObservedStore: ...

    @property
    def hot(self) -> HotTier | None: ...

    @property
    def cache_layer(self) -> WarmTier | None: ...

    @property
    def memory(self) -> HierarchicalMemory: ...


class _ObservedStore(Protocol):
    def add_tx_observer(self, observer: TxObserver) -> None: ...

    def remove_tx_observer(self, observer: TxObserver) -> None: ...


@dataclass(frozen=True, slots=True)
class _Tiers:
    hot: HotTier | None = None
    warm: WarmTier | None = None
    memory: HierarchicalMemory | None = None


def tier_figures(tiers: _Tiers) -> list[TierFigures]:
    """Each cache tier's counters, read now (a Redis GET per warm tier for its bytes)."""
    out: list[TierFigures] = []
    if tiers.hot is not None:
        out.append(_hot_figures("hot", tiers.hot, extra_evictions=0))
    if tiers.warm is not None:
        out.append(_warm_figures("warm", tiers.warm, evictions=None))
    memory = tiers.memory
    if memory is not None:
        counters = memory.counters
        # Moving an entry down a tier (evict_cold_data) is an eviction from
        # working memory too, though HotTier.discard does not count it.
        out.append(_hot_figures("working", memory.working,
                                extra_evictions=counters.get("working_moved_down", 0)))
        short = memory.short_term
        if isinstance(short, WarmTier):
            out.append(_warm_figures("short_term", short,
                                     evictions=counters.get("short_term_dropped", 0)))
    return out


def _hot_figures(name: str, tier: HotTier, *, extra_evictions: int) -> TierFigures:
    return TierFigures(name=name, in_process=True, hits=tier.hits, misses=tier.misses,
                       evictions=tier.evictions + extra_evictions,
                       expirations=tier.expirations, errors=0, bytes=tier.bytes_used,
                       entries=len(tier), capacity_bytes=tier.capacity_bytes)


def _warm_figures(name: str, tier: WarmTier, *, evictions: int | None) -> TierFigures:
    # The warm tier's Lua script evicts inside Redis and does not report how
    # many; only the short-term trims HierarchicalMemory makes are known.
    return TierFigures(name=name, in_process=False, hits=tier.hits, misses=tier.misses,
                       evictions=evictions, expirations=None, errors=tier.errors,
                       bytes=tier.bytes_used, entries=None, capacity_bytes=tier.max_bytes)


class _TierCollector(Collector):
    """The zero-cost-per-read half: tier counters and gauges, read at scrape time."""

    def __init__(self, owner: StateMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        # Without describe() the registry would call collect() on register --
        # a Redis round trip and a /proc read just to learn the names.
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(tier_figures(self._owner.tiers))

    def _families(self, tiers: list[TierFigures] | None) -> Iterator[Metric]:
        owner = self._owner
        yield owner.query_latency.family(
            "state_query_latency_seconds",
            "Duration of read transactions and point reads on the store (outermost only).")
        yield owner.write_latency.family(
            "state_write_latency_seconds",
            "Duration of write transactions on the store, commit included (outermost only).")
        failures = CounterMetricFamily(
            "state_transaction_failures",
            "Store transactions that raised (rolled back writes, failed reads).",
            labels=["kind"])
        hit_rate = GaugeMetricFamily(
            "state_cache_hit_rate",
            "Hits / (hits + misses) summed over this process's cache tiers (NaN before"
            " any lookup).")
        rss = GaugeMetricFamily("state_memory_usage_bytes",
                                "Resident set size of this process (in-process tiers included).")
        hits = CounterMetricFamily("state_cache_hits", "Cache tier hits.", labels=["tier"])
        misses = CounterMetricFamily("state_cache_misses", "Cache tier misses.",
                                     labels=["tier"])
        evictions = CounterMetricFamily(
            "state_cache_evictions", "Entries a tier dropped or moved down to make room.",
            labels=["tier"])
        expirations = CounterMetricFamily(
            "state_cache_expirations", "Entries found expired (TTL) on read.", labels=["tier"])
        errors = CounterMetricFamily("state_cache_errors",
                                     "Calls a shared (Redis) tier failed and fell through.",
                                     labels=["tier"])
        held = GaugeMetricFamily("state_cache_bytes",
                                 "Bytes a tier holds (Redis tiers: all processes).",
                                 labels=["tier"])
        entries = GaugeMetricFamily("state_cache_entries", "Entries an in-process tier holds.",
                                    labels=["tier"])
        capacity = GaugeMetricFamily("state_cache_capacity_bytes", "A tier's byte budget.",
                                     labels=["tier"])
        if tiers is not None:
            for kind in ("read", "write"):
                failures.add_metric([kind], owner.failures[kind])
            rate = cache_hit_rate(tiers)
            hit_rate.add_metric([], float("nan") if rate is None else rate)
            resident = process_rss()
            if resident is not None:
                rss.add_metric([], resident)
            for t in tiers:
                hits.add_metric([t.name], t.hits)
                misses.add_metric([t.name], t.misses)
                held.add_metric([t.name], t.bytes)
                capacity.add_metric([t.name], t.capacity_bytes)
                if t.evictions is not None:
                    evictions.add_metric([t.name], t.evictions)
                if t.expirations is not None:
                    expirations.add_metric([t.name], t.expirations)
                if t.entries is not None:
                    entries.add_metric([t.name], t.entries)
                if not t.in_process:
                    errors.add_metric([t.name], t.errors)
        yield from (failures, hit_rate, rss, hits, misses, evictions, expirations, errors,
                    held, entries, capacity)


class StateMetrics:
    """The seed's ``StatePerformanceMonitor``: Prometheus metrics and the report.

    Build it with :meth:`for_system`, or attach the parts yourself with
    :meth:`watch_store` and :meth:`watch_tiers`. Hooks for the façade:
    :meth:`observe_gc`, :meth:`observe_recovery`, :meth:`record_sync`,
    :meth:`record_resolution`, :meth:`count_error`.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: Where the metrics are registered; scrape it with
        #: ``prometheus_client.make_wsgi_app(metrics.registry)`` or :meth:`exposition`.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self.started = clock()
        self.started_at = datetime.now(UTC)
        self.query_latency = LatencyHistogram()
        self.write_latency = LatencyHistogram()
        self.failures: dict[str, int] = {"read": 0, "write": 0}
        self.tiers = _Tiers()
        self._stores: list[_ObservedStore] = []
        # One bound method, kept: the store removes observers by identity, and
        # each attribute access would make a new bound-method object.
        self._observer: TxObserver = self.observe_transaction
        self._registered: list[Collector] = []
        self._tier_collector = _TierCollector(self)
        try:
            self._register(self._tier_collector)
            self.gc_duration = Histogram(
                "state_gc_duration_seconds", "Duration of garbage-collection runs.",
                buckets=GC_BUCKETS, registry=None)
            self.recovery_time = Histogram(
                "state_recovery_time_seconds",
                "Duration of recoveries (point, point-in-time, snapshot restore).",
                buckets=RECOVERY_BUCKETS, registry=None)
            self.conflicts = Counter(
                "state_sync_conflicts",
                "Sync conflicts by strategy and outcome (write, keep, pending; resolved"
                " for a person's decision on a pending one).",
                ["strategy", "action"], registry=None)
            self.errors = Counter(
                "state_errors", "StatekeepError subclasses raised through the façade.",
                ["type"], registry=None)
            for metric in (self.gc_duration, self.recovery_time, self.conflicts, self.errors):
                self._register(metric)
        except ValueError as exc:  # prometheus_client's DuplicateTimeseries
            self.close()
            raise ConfigError(
                f"this registry already holds statekeep metrics ({exc}); give each"
                " StateSystem its own registry") from None

    def _register(self, collector: Collector) -> None:
        self.registry.register(collector)
        self._registered.append(collector)

    # -- wiring -----------------------------------------------------------------------

    @classmethod
    def for_system(cls, system: _SystemParts, *,
                   registry: CollectorRegistry | None = None) -> StateMetrics:
        """Metrics watching a system's store and every tier it has."""
        metrics = cls(registry=registry)
        metrics.watch_store(system.store)
        metrics.watch_tiers(hot=system.hot, warm=system.cache_layer, memory=system.memory)
        return metrics

    def watch_store(self, store: _ObservedStore) -> None:
        """Time the store's outermost transactions (the store calls us only then)."""
        store.add_tx_observer(self._observer)
        self._stores.append(store)

    def watch_tiers(self, *, hot: HotTier | None = None, warm: WarmTier | None = None,
                    memory: HierarchicalMemory | None = None) -> None:
        """The tiers whose counters are exposed at scrape time."""
        self.tiers = _Tiers(hot=hot, warm=warm, memory=memory)

    def close(self) -> None:
        """Stop observing and leave the registry as it was (it may be shared)."""
        for store in self._stores:
            store.remove_tx_observer(self._observer)
        self._stores.clear()
        for collector in self._registered:
            self.registry.unregister(collector)
        self._registered.clear()

    # -- recording (hooks) -------------------------------------------------------------

    def observe_transaction(self, kind: str, seconds: float, failed: bool) -> None:
        """The store's transaction observer: ~0.1 µs, no lock, never raises."""
        histogram = self.write_latency if kind == "write" else self.query_latency
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds
        if failed:
            self.failures[kind] = self.failures.get(kind, 0) + 1

    def observe_gc(self, seconds: float) -> None:
        """One garbage-collection run took ``seconds``."""
        self.gc_duration.observe(seconds)

    def observe_recovery(self, seconds: float) -> None:
        """One recovery (not a dry run) took ``seconds``."""
        self.recovery_time.observe(seconds)

    def record_sync(self, result: SyncResult) -> None:
        """Count the conflicts one ``sync_state`` met, by strategy and outcome."""
        for resolution in result.resolutions:
            self.conflicts.labels(resolution.strategy, resolution.action).inc()

    def record_resolution(self, resolution: ConflictResolution) -> None:
        """A person settled a pending conflict (strategy ``user_decides``)."""
        self.conflicts.labels("user_decides", "resolved").inc()

    def count_error(self, exc: BaseException) -> None:
        """Count a StatekeepError by its class, once however many façade methods it
        passes through (``resume_session`` calling ``get_session``); anything
        else is a bug, not a figure."""
        if not isinstance(exc, StatekeepError):
            return
        seen: set[int] = exc.__dict__.setdefault(_COUNTED, set())
        if id(self) in seen:
            return
        seen.add(id(self))
        self.errors.labels(type(exc).__name__).inc()

    # -- reading -----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format, as ``/metrics`` would serve it."""
        return generate_latest(self.registry)

    def generate_performance_report(self) -> PerformanceReport:
        """This process's figures since the metrics started (see docs/metrics.md)."""
        uptime = max(self._clock() - self.started, 1e-9)
        tiers = tier_figures(self.tiers)
        query = self.query_latency.snapshot()
        write = self.write_latency.snapshot()
        gc = _prometheus_snapshot(self.gc_duration)
        recovery = _prometheus_snapshot(self.recovery_time)
        rss = process_rss()
        cache_bytes = sum(t.bytes for t in tiers)
        outside = sum(t.bytes for t in tiers if not t.in_process)
        memory = None if rss is None else rss + outside
        rate = cache_hit_rate(tiers)
        committed = write.count - self.failures.get("write", 0)
        return PerformanceReport(
            generated_at=datetime.now(UTC),
            uptime_seconds=uptime,
            queries=query.count,
            avg_query_latency=query.mean,
            p95_query_latency=query.quantile(0.95),
            writes=write.count,
            failed_writes=self.failures.get("write", 0),
            avg_write_latency=write.mean,
            write_throughput=max(committed, 0) / uptime,
            cache_hit_rate=rate,
            cache_size_mb=cache_bytes / MB,
            memory_usage_mb=None if memory is None else memory / MB,
            memory_efficiency=memory_efficiency(rate, cache_bytes, memory),
            gc_runs=gc.count,
            # At least an hour: one run in a process a minute old is not "60 an hour".
            gc_frequency=gc.count / max(uptime / 3600.0, 1.0),
            avg_gc_duration=gc.mean,
            recoveries=recovery.count,
            avg_recovery_time=recovery.mean,
            conflicts=self._conflict_counts(),
            errors={labels[0]: n for labels, n in _children(self.errors)},
            tiers={t.name: t.to_dict() for t in tiers},
        )

    def _conflict_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (strategy, action), n in _children(self.conflicts):
            out.setdefault(strategy, {})[action] = n
        return out


def _children(counter: Counter) -> list[tuple[tuple[str, ...], int]]:
    """A labelled counter's children as (label values, count), from its ``_total`` samples."""
    out: list[tuple[tuple[str, ...], int]] = []
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out.append((tuple(sample.labels.values()), int(sample.value)))
    return out
