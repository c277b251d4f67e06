"""The seed's performance report, and the arithmetic behind its figures.

Kept apart from the registry so that the definitions -- what "p95" means when
all that is kept is a histogram, what "memory efficiency" measures -- sit in
one short module a reader can check against docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

__all__ = [
    "MB",
    "HistogramSnapshot",
    "PerformanceReport",
    "TierFigures",
    "cache_hit_rate",
    "histogram_quantile",
    "memory_efficiency",
]

MB: Final = 1024 * 1024


def histogram_quantile(q: float, bounds: tuple[float, ...],
                       cumulative: tuple[int, ...]) -> float | None:
    """The ``q`` quantile estimated from cumulative bucket counts, or None if empty.

    Prometheus' own ``histogram_quantile`` rule, so the report and a Grafana
    panel agree: find the bucket holding the observation of rank ``q * total``
    and interpolate linearly between its lower and upper bound (the first
    bucket's lower bound is 0). A rank in the ``+Inf`` bucket answers the
    highest finite bound -- a floor, since nothing above it is resolved.
    ``cumulative`` has one more entry than ``bounds`` (the ``+Inf`` bucket).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be in [0, 1]")
    if len(cumulative) != len(bounds) + 1:
        raise ValueError("cumulative needs one count per bound plus +Inf")
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    previous = 0
    for i, count in enumerate(cumulative):
        if count >= rank and count > previous:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - previous) / (count - previous)
        previous = count
    return bounds[-1]


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram at one instant: finite bounds, cumulative counts (+Inf last), sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        if not self.cumulative:
            return None
        return histogram_quantile(q, self.bounds, self.cumulative)


@dataclass(frozen=True, slots=True)
class TierFigures:
    """One cache tier's counters as read at one instant.

    ``None`` marks a figure the tier does not keep (the warm tier evicts
    inside Redis without reporting it; Redis tiers count no entries).
    """

    name: str
    #: True when the tier's bytes live in this process (and so inside its RSS).
    in_process: bool
    hits: int
    misses: int
    evictions: int | None
    expirations: int | None
    errors: int
    bytes: int
    entries: int | None
    capacity_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"in_process": self.in_process, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions, "expirations": self.expirations,
                "errors": self.errors, "bytes": self.bytes, "entries": self.entries,
                "capacity_bytes": self.capacity_bytes}


def cache_hit_rate(tiers: Iterable[TierFigures]) -> float | None:
    """Hits / lookups summed over every cache tier; None before the first lookup.

    A read that misses the hot tier and hits the warm one counts one miss and
    one hit: this is the rate at which cache lookups succeed, not the share of
    reads that never reached the store (per-tier counters give that).
    """
    hits = misses = 0
    for t in tiers:
        hits += t.hits
        misses += t.misses
    lookups = hits + misses
    return hits / lookups if lookups else None


def memory_efficiency(hit_rate: float | None, cache_bytes: int,
                      memory_bytes: int | None) -> float | None:
    """The share of memory held by cache, discounted by how often cache misses.

    ``hit_rate * cache_bytes / memory_bytes``, in [0, 1]: the bytes that serve
    hits as a share of all the bytes held (process RSS plus Redis tiers). 1.0
    would be a process that is all cache and never misses; a large cache that
    rarely hits, or a process whose memory is mostly not cache, scores low.
    """
    if hit_rate is None or not memory_bytes:
        return None
    return min(1.0, hit_rate * cache_bytes / memory_bytes)


def _round(value: float | None, digits: int = 9) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """The seed's ``PerformanceReport``: this process's figures since metrics started.

    Latencies are in seconds (Prometheus' base unit); rates per second, GC
    frequency per hour, sizes in MiB. A figure with nothing measured yet is
    None rather than 0, so "no queries" never reads as "instant queries".
    """

    generated_at: datetime
    #: Seconds since the metrics started: the window of every rate below.
    uptime_seconds: float
    queries: int
    avg_query_latency: float | None
    #: Interpolated from the histogram buckets (see :func:`histogram_quantile`).
    p95_query_latency: float | None
    writes: int
    failed_writes: int
    avg_write_latency: float | None
    #: Committed write transactions per second since start.
    write_throughput: float
    cache_hit_rate: float | None
    #: Bytes held by every cache tier, in process and in Redis.
    cache_size_mb: float
    #: Process RSS plus the Redis tiers' bytes (in-process tiers are inside RSS).
    memory_usage_mb: float | None
    #: See :func:`memory_efficiency`.
    memory_efficiency: float | None
    gc_runs: int
    #: GC runs per hour since start (over at least one hour).
    gc_frequency: float
    avg_gc_duration: float | None
    recoveries: int
    avg_recovery_time: float | None
    #: strategy -> action (write, keep, pending, resolved) -> count.
    conflicts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: StatekeepError class name -> count.
    errors: Mapping[str, int] = field(default_factory=dict)
    #: tier name -> its counters (:meth:`TierFigures.to_dict`).
    tiers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``statekeep stats --json``)."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "uptime_seconds": round(self.uptime_seconds, 3),
            "queries": self.queries,
            "avg_query_latency": _round(self.avg_query_latency),
            "p95_query_latency": _round(self.p95_query_latency),
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "avg_write_latency": _round(self.avg_write_latency),
            "write_throughput": round(self.write_throughput, 3),
            "cache_hit_rate": _round(self.cache_hit_rate, 6),
            "cache_size_mb": round(self.cache_size_mb, 3),
            "memory_usage_mb": _round(self.memory_usage_mb, 3),
            "memory_efficiency": _round(self.memory_efficiency, 6),
            "gc_runs": self.gc_runs,
            "gc_frequency": round(self.gc_frequency, 3),
            "avg_gc_duration": _round(self.avg_gc_duration),
            "recoveries": self.recoveries,
            "avg_recovery_time": _round(self.avg_recovery_time),
            "conflicts": {s: dict(a) for s, a in self.conflicts.items()},
            "errors": dict(self.errors),
            "tiers": {name: dict(t) for name, t in self.tiers.items()},
        }
