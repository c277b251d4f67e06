"""Per-shape statement statistics: counts, a fixed-bucket latency histogram, rows.

A *shape* is a statement's normalized text (:func:`sqltext.normalize`); the
store's SQL binds every value as a parameter, so one shape is one query of the
code, whatever its arguments.

Cost decides the design. The observer runs inside every ``execute`` of the
store, and a SQLite point read takes a few microseconds, so the per-statement
work is a dict lookup and a counter increment; the clock is read, the
histogram updated and the row count taken only for one call in
``sample_every`` (1 in 16 by default; the first call of every shape is always
timed). Counts are exact; latencies and rows come from the sampled calls and
are scaled to the count where a total is reported. Counters are bumped without
a lock: under threads an occasional increment may be lost, which statistics
can afford and a lock on the hottest path could not.

Honesty about rows: a write's row count is the driver's ``rowcount``. A SELECT's
rows are fetched after ``execute`` returns, so SQLite cannot tell them (they
are reported as unknown, None) unless the statement ran through
:meth:`statekeep.store.indexes.IndexStore.cached_query`, which fetches them all;
psycopg knows a SELECT's row count at ``execute``. The latency of a SELECT on
SQLite is the time to its first row (the rest is stepped by ``fetch``).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from statekeep.query import sqltext

__all__ = ["BUCKETS", "QueryStatistics", "ShapeStats"]

#: Upper bounds (seconds) of the latency histogram's buckets; one more bucket
#: (+Inf) holds the rest. Prometheus-style, from 10 us to 10 s.
BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Distinct shapes kept; later new shapes are counted together as OVERFLOW_SHAPE.
MAX_SHAPES = 2000
OVERFLOW_SHAPE = "(other statements: too many distinct shapes)"
#: Distinct statement texts remembered before the text -> shape map starts over.
MAX_TEXTS = 4096
DEFAULT_SAMPLE_EVERY = 16


class Shape:
    """The running totals of one shape (mutable, updated on the hot path)."""

    __slots__ = ("count", "errors", "first_seen", "hist", "kind", "last", "max", "rows",
                 "rows_sampled", "sampled", "shape", "sql", "total", "writes")

    def __init__(self, text: sqltext.SqlText, sql: str) -> None:
        self.shape = text.shape
        self.kind = text.kind
        self.writes = text.writes
        #: One statement of this shape as it was run (EXPLAIN needs real placeholders).
        self.sql = sqltext.compact(sql)
        self.count = 0
        self.sampled = 0
        self.errors = 0
        self.total = 0.0
        self.max = 0.0
        self.rows = 0
        self.rows_sampled = 0
        self.hist = [0] * (len(BUCKETS) + 1)
        self.first_seen = time.time()
        #: perf_counter() of the last sampled call (0.0: none yet).
        self.last = 0.0

    def timed(self, seconds: float, rowcount: int) -> None:
        self.sampled += 1
        self.total += seconds
        if seconds > self.max:  # noqa: PLR1730 -- max() is a call; this is the hot path
            self.max = seconds
        self.hist[bisect_left(BUCKETS, seconds)] += 1
        if rowcount >= 0:
            self.rows += rowcount
            self.rows_sampled += 1
        self.last = time.perf_counter()


def _percentile(hist: list[int] | tuple[int, ...], total: int, q: float,
                top: float) -> float:
    """The q-quantile from bucket counts, linear inside the bucket it falls in."""
    if total <= 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            low = BUCKETS[i - 1] if i else 0.0
            high = BUCKETS[i] if i < len(BUCKETS) else max(top, low)
            return min(low + (high - low) * (rank - seen) / n, max(top, low))
        seen += n
    return top


@dataclass(frozen=True)
class ShapeStats:
    """What is known about one query shape (a snapshot; safe to keep and share)."""

    shape: str
    #: "select", "insert", "update", "delete", "transaction", "ddl" or "other".
    kind: str
    #: One statement of the shape as run (placeholders intact), for EXPLAIN.
    sql: str
    count: int
    errors: int
    #: Calls that were timed (every one with sample_every=1).
    sampled: int
    mean_seconds: float
    p50_seconds: float
    p95_seconds: float
    p99_seconds: float
    max_seconds: float
    #: Estimated total time: mean of the sampled calls times the count.
    total_seconds: float
    #: Rows per call over the sampled calls whose row count was observable;
    #: None when never observable (SELECTs on SQLite outside cached_query).
    rows_per_call: float | None
    #: rows_per_call times the count; None when unknown.
    rows: int | None
    first_seen: datetime
    last_seen: datetime | None
    buckets: tuple[float, ...] = BUCKETS
    #: Samples per bucket; the last one is +Inf.
    bucket_counts: tuple[int, ...] = ()
    tables_written: tuple[str, ...] = ()
    # raw sums, so that snapshots of several processes can be added up
    sum_seconds: float = 0.0
    rows_sum: int = 0
    rows_sampled: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, *, shape: str, kind: str, sql: str, count: int, errors: int, sampled: int,
              sum_seconds: float, max_seconds: float, hist: Iterable[int], rows_sum: int,
              rows_sampled: int, first_seen: datetime, last_seen: datetime | None,
              tables_written: Iterable[str] = ()) -> ShapeStats:
        counts = tuple(hist)
        mean = sum_seconds / sampled if sampled else 0.0
        per_call = rows_sum / rows_sampled if rows_sampled else None
        return cls(
            shape=shape, kind=kind, sql=sql, count=count, errors=errors, sampled=sampled,
            mean_seconds=mean,
            p50_seconds=_percentile(counts, sampled, 0.50, max_seconds),
            p95_seconds=_percentile(counts, sampled, 0.95, max_seconds),
            p99_seconds=_percentile(counts, sampled, 0.99, max_seconds),
            max_seconds=max_seconds, total_seconds=mean * count, rows_per_call=per_call,
            rows=None if per_call is None else round(per_call * count),
            first_seen=first_seen, last_seen=last_seen, bucket_counts=counts,
            tables_written=tuple(sorted(tables_written)), sum_seconds=sum_seconds,
            rows_sum=rows_sum, rows_sampled=rows_sampled)

    def plus(self, other: ShapeStats) -> ShapeStats:
        """Both snapshots' counts together (two processes, or saved + current)."""
        lasts = [t for t in (self.last_seen, other.last_seen) if t is not None]
        return ShapeStats.build(
            shape=self.shape, kind=self.kind, sql=self.sql or other.sql,
            count=self.count + other.count, errors=self.errors + other.errors,
            sampled=self.sampled + other.sampled,
            sum_seconds=self.sum_seconds + other.sum_seconds,
            max_seconds=max(self.max_seconds, other.max_seconds),
            hist=_add(self.bucket_counts, other.bucket_counts),
            rows_sum=self.rows_sum + other.rows_sum,
            rows_sampled=self.rows_sampled + other.rows_sampled,
            first_seen=min(self.first_seen, other.first_seen),
            last_seen=max(lasts) if lasts else None,
            tables_written=set(self.tables_written) | set(other.tables_written))

    def minus(self, base: ShapeStats) -> ShapeStats:
        """What happened since ``base`` (an earlier snapshot of the same shape)."""
        return ShapeStats.build(
            shape=self.shape, kind=self.kind, sql=self.sql,
            count=self.count - base.count, errors=self.errors - base.errors,
            sampled=self.sampled - base.sampled,
            sum_seconds=self.sum_seconds - base.sum_seconds, max_seconds=self.max_seconds,
            hist=[a - b for a, b in zip(self.bucket_counts,
                                         base.bucket_counts or (0,) * len(self.bucket_counts),
                                         strict=True)],
            rows_sum=self.rows_sum - base.rows_sum,
            rows_sampled=self.rows_sampled - base.rows_sampled, first_seen=self.first_seen,
            last_seen=self.last_seen, tables_written=self.tables_written)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "kind": self.kind, "sql": self.sql, "count": self.count,
            "errors": self.errors, "sampled": self.sampled,
            "mean_seconds": self.mean_seconds, "p50_seconds": self.p50_seconds,
            "p95_seconds": self.p95_seconds, "p99_seconds": self.p99_seconds,
            "max_seconds": self.max_seconds, "total_seconds": self.total_seconds,
            "rows_per_call": self.rows_per_call, "rows": self.rows,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
            "buckets": list(self.buckets), "bucket_counts": list(self.bucket_counts),
            "tables_written": list(self.tables_written), "sum_seconds": self.sum_seconds,
            "rows_sum": self.rows_sum, "rows_sampled": self.rows_sampled,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeStats:
        """The inverse of :meth:`to_dict` (saved statistics of other processes)."""
        buckets = tuple(float(b) for b in data.get("buckets", BUCKETS))
        hist = [int(n) for n in data.get("bucket_counts", ())]
        if buckets != BUCKETS or len(hist) != len(BUCKETS) + 1:
            hist = [0] * (len(BUCKETS) + 1)  # another version's buckets: keep the sums
        last = data.get("last_seen")
        return cls.build(
            shape=str(data["shape"]), kind=str(data.get("kind", "other")),
            sql=str(data.get("sql", data["shape"])), count=int(data.get("count", 0)),
            errors=int(data.get("errors", 0)), sampled=int(data.get("sampled", 0)),
            sum_seconds=float(data.get("sum_seconds", 0.0)),
            max_seconds=float(data.get("max_seconds", 0.0)), hist=hist,
            rows_sum=int(data.get("rows_sum", 0)), rows_sampled=int(data.get("rows_sampled", 0)),
            first_seen=datetime.fromisoformat(str(data["first_seen"])),
            last_seen=None if last is None else datetime.fromisoformat(str(last)),
            tables_written=[str(t) for t in data.get("tables_written", ())])


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> list[int]:
    if not a:
        return list(b)
    if not b:
        return list(a)
    return [x + y for x, y in zip(a, b, strict=True)]


class QueryStatistics:
    """The statement statistics of one store in this process.

    ``store.query_stats.snapshot()`` is the read API (metrics, the performance
    report, ``statekeep indexes report``); the store's statement observer feeds
    it. Disabled (``StateConfig.query_stats=False``), it records nothing and
    ``snapshot()`` is empty.
    """

    def __init__(self, *, enabled: bool = True,
                 sample_every: int = DEFAULT_SAMPLE_EVERY) -> None:
        self.enabled = enabled
        #: statement text -> its shape's totals (many texts may share a shape).
        self.by_text: dict[str, Shape] = {}
        self._shapes: dict[str, Shape] = {}
        #: The snapshot of each shape at the last QueryOptimizer.save_statistics,
        #: so that a save adds only what happened since.
        self.saved_base: dict[str, ShapeStats] = {}
        self._lock = threading.Lock()
        #: ``count & mask`` is 0 for the calls that are timed; disabled, only the
        #: first call of a shape is (and nothing is reported).
        self.mask = 0
        self.sample_every = sample_every
        if not enabled:
            self.mask = (1 << 62) - 1

    @property
    def sample_every(self) -> int:
        """Time one call in this many per shape (a power of two; 1 = every call)."""
        return self.mask + 1

    @sample_every.setter
    def sample_every(self, n: int) -> None:
        if n < 1 or n & (n - 1):
            raise ValueError("sample_every must be a power of two (1, 2, 4, ...)")
        if self.enabled:
            self.mask = n - 1

    def shape_of(self, sql: str) -> Shape:
        """The totals object for a statement text (classified on first sight)."""
        shape = self.by_text.get(sql)
        if shape is not None:
            return shape
        text = sqltext.parse(sql)
        with self._lock:
            shape = self._shapes.get(text.shape)
            if shape is None:
                if len(self._shapes) >= MAX_SHAPES:
                    shape = self._shapes.get(OVERFLOW_SHAPE)
                    if shape is None:
                        shape = self._shapes[OVERFLOW_SHAPE] = Shape(
                            sqltext.SqlText(OVERFLOW_SHAPE, "other", None), "")
                    if text.writes is not None:  # the write tracking still needs them
                        shape = Shape(text, sql)
                else:
                    shape = self._shapes[text.shape] = Shape(text, sql)
            if len(self.by_text) >= MAX_TEXTS:
                self.by_text.clear()
            self.by_text[sql] = shape
        return shape

    def note_rows(self, sql: str, rows: int) -> None:
        """Rows a caller fetched for a statement it ran (SQLite cannot see SELECT rows)."""
        shape = self.by_text.get(sql)
        if shape is not None and self.enabled:
            shape.rows += rows
            shape.rows_sampled += 1

    def snapshot(self, *, kinds: Iterable[str] | None = None) -> list[ShapeStats]:
        """Every shape seen, most total time first (empty when disabled)."""
        if not self.enabled:
            return []
        wanted = None if kinds is None else set(kinds)
        now_wall, now_perf = time.time(), time.perf_counter()
        with self._lock:
            shapes = list(self._shapes.values())
        out = []
        for s in shapes:
            if s.count == 0 or (wanted is not None and s.kind not in wanted):
                continue
            last = (None if not s.last else
                    datetime.fromtimestamp(now_wall - (now_perf - s.last), UTC))
            out.append(ShapeStats.build(
                shape=s.shape, kind=s.kind, sql=s.sql, count=s.count, errors=s.errors,
                sampled=s.sampled, sum_seconds=s.total, max_seconds=s.max, hist=list(s.hist),
                rows_sum=s.rows, rows_sampled=s.rows_sampled,
                first_seen=datetime.fromtimestamp(s.first_seen, UTC), last_seen=last,
                tables_written=() if not s.writes else s.writes))
        out.sort(key=lambda st: st.total_seconds, reverse=True)
        return out

    def reset(self) -> None:
        """Forget every shape (e.g. between benchmark phases)."""
        with self._lock:
            self._shapes.clear()
            self.by_text.clear()
            self.saved_base.clear()


def merge(*groups: Iterable[ShapeStats]) -> list[ShapeStats]:
    """Shapes of several snapshots added up by shape text, most total time first."""
    out: dict[str, ShapeStats] = {}
    for group in groups:
        for s in group:
            have = out.get(s.shape)
            out[s.shape] = s if have is None else have.plus(s)
    return sorted(out.values(), key=lambda st: st.total_seconds, reverse=True)
