"""``QueryOptimizer``: the seed's façade over statistics, plans, indexes and the cache.

The store does the per-statement work (its observer feeds
``store.query_stats``; ``store.cached_query`` serves the result cache); this
class adds what is worth doing now and then: explaining the recorded shapes,
finding the frequent ones that scan large tables, suggesting and creating
indexes, and the index usage report.

Statistics are per process. So that ``statekeep indexes report`` -- another
process -- sees what the application ran, :meth:`QueryOptimizer.save_statistics`
adds this process's counts since its last save into ``statekeep_meta``
(``query_shapes``; the most frequent :data:`MAX_SAVED_SHAPES` shapes are kept).
The façade calls it when the system closes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from statekeep.config import StateConfig
from statekeep.errors import StatekeepError
from statekeep.query import sqltext
from statekeep.query.advisor import (
    DEFAULT_MIN_CALLS,
    AppliedIndex,
    IndexAdvisor,
    IndexManager,
    IndexSpec,
    IndexSuggestion,
    IndexUsageReport,
)
from statekeep.query.cache import CacheStats, QueryCache
from statekeep.query.plans import DEFAULT_MIN_ROWS, QueryPlan, QueryPlanner
from statekeep.query.stats import QueryStatistics, ShapeStats, merge

if TYPE_CHECKING:
    from statekeep.store.indexes import IndexStore

__all__ = ["MAX_SAVED_SHAPES", "STATS_KEY", "QueryOptimizer", "ShapeVerdict", "stated_shape"]

log = logging.getLogger("statekeep.query")

#: statekeep_meta key of the saved statistics.
STATS_KEY = "query_shapes"
MAX_SAVED_SHAPES = 300
#: Statements that are no query of the application: transaction control, DDL.
QUERY_KINDS = ("select", "insert", "update", "delete")


def stated_shape(sql: str, count: int) -> ShapeStats:
    """A statement someone states is frequent, as a shape the advisor can weigh."""
    text = sqltext.parse(sql)
    return ShapeStats.build(shape=text.shape, kind=text.kind, sql=sql, count=count, errors=0,
                            sampled=0, sum_seconds=0.0, max_seconds=0.0, hist=(), rows_sum=0,
                            rows_sampled=0, first_seen=datetime.now(UTC), last_seen=None)


@dataclass(frozen=True)
class ShapeVerdict:
    """A recorded shape with its plan."""

    stats: ShapeStats
    plan: QueryPlan

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats.to_dict(), "plan": self.plan.to_dict(),
                "verdict": self.plan.verdict}


class QueryOptimizer:
    """Query statistics, plan inspection, index advice and the result cache of a store."""

    def __init__(self, store: IndexStore, config: StateConfig | None = None, *,
                 min_calls: int = DEFAULT_MIN_CALLS, min_rows: int = DEFAULT_MIN_ROWS) -> None:
        config = config or store.config
        self.store = store
        self.config = config
        self.min_calls = min_calls
        self.planner = QueryPlanner(store, min_rows=min_rows)
        self.advisor = IndexAdvisor(store, self.planner,
                                    apply_enabled=config.index_advisor_apply,
                                    min_calls=min_calls)
        self.indexes = IndexManager(store, self.planner, self.advisor)

    @property
    def statistics(self) -> QueryStatistics:
        """This process's per-shape statistics (``.snapshot()``)."""
        return self.store.query_stats

    @property
    def cache(self) -> QueryCache | None:
        """The result cache (None when ``query_cache_bytes`` is 0)."""
        return self.store.query_cache

    def cache_stats(self) -> CacheStats | None:
        cache = self.store.query_cache
        return None if cache is None else cache.stats()

    # -- running queries ------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = (), *,
                tables: Iterable[str] | None = None) -> list[Any]:
        """All rows of a read, through the result cache when it qualifies
        (see :meth:`~statekeep.store.indexes.IndexStore.cached_query`)."""
        return self.store.cached_query(sql, params, tables=tables)

    def explain(self, sql: str) -> QueryPlan:
        return self.planner.explain(sql)

    # -- shapes -----------------------------------------------------------------

    def shapes(self, *, include_saved: bool = True,
               kinds: Iterable[str] | None = QUERY_KINDS) -> list[ShapeStats]:
        """Recorded shapes, most total time first: this process's (those not yet
        saved) plus, with ``include_saved``, what processes saved before."""
        current = self.statistics.snapshot(kinds=kinds)
        if include_saved:
            current = [self._unsaved(s) for s in current]
            current = [s for s in current if s.count > 0]
            wanted = None if kinds is None else set(kinds)
            saved = [s for s in self.saved_statistics() if wanted is None or s.kind in wanted]
            return merge(saved, current)
        return current

    def _unsaved(self, s: ShapeStats) -> ShapeStats:
        base = self.statistics.saved_base.get(s.shape)
        return s if base is None else s.minus(base)

    def verdicts(self, *, top: int = 20, include_saved: bool = True) -> list[ShapeVerdict]:
        """The ``top`` shapes by total time, each with its plan's verdict."""
        return [ShapeVerdict(s, self.planner.explain(s.sql))
                for s in self.shapes(include_saved=include_saved)[:top]]

    def frequent_scans(self, *, min_calls: int | None = None,
                       include_saved: bool = True) -> list[ShapeVerdict]:
        """Shapes run at least ``min_calls`` times whose plan scans a large table."""
        threshold = self.min_calls if min_calls is None else min_calls
        out = []
        for s in self.shapes(include_saved=include_saved):
            if s.count < threshold or s.kind not in ("select", "update", "delete"):
                continue
            plan = self.planner.explain(s.sql)
            if plan.large_scans:
                out.append(ShapeVerdict(s, plan))
        return out

    # -- indexes ----------------------------------------------------------------

    def suggest_indexes(self, *, min_calls: int | None = None, include_saved: bool = True,
                        extra_sql: Sequence[str] = ()) -> list[IndexSuggestion]:
        """Suggestions for the recorded frequent shapes; ``extra_sql`` statements
        count as frequent too (``statekeep indexes advise --sql``)."""
        threshold = self.min_calls if min_calls is None else min_calls
        shapes = self.shapes(include_saved=include_saved)
        return self.advisor.suggest(
            merge(shapes, [stated_shape(sql, threshold) for sql in extra_sql]),
            min_calls=threshold)

    def apply_indexes(self, suggestions: Iterable[IndexSuggestion | IndexSpec] | None = None,
                      *, confirm: bool = False, min_calls: int | None = None,
                      extra_sql: Sequence[str] = ()) -> list[AppliedIndex]:
        """Create ``suggestions`` (default: every current suggestion not yet there)."""
        if suggestions is None:
            suggestions = [s for s in self.suggest_indexes(min_calls=min_calls,
                                                           extra_sql=extra_sql)
                           if not s.exists]
        return self.advisor.apply(suggestions, confirm=confirm)

    def create_index(self, table: str, columns: Sequence[str] = (),
                     json_paths: Sequence[tuple[str, str]] = (), *,
                     where_not_null: str | None = None, style: str | None = None,
                     confirm: bool = False) -> AppliedIndex:
        """Create one index by hand, under the same allow-list and switch as advice."""
        default = "json_extract" if self.store.dialect == "sqlite" else "pg"
        spec = IndexSpec.build(table, columns, json_paths, where_not_null=where_not_null,
                               style=style or default)
        return self.advisor.apply([spec], confirm=confirm)[0]

    def analyze_index_usage(self, *, min_calls: int | None = None,
                            include_saved: bool = True) -> IndexUsageReport:
        return self.indexes.analyze_index_usage(self.shapes(include_saved=include_saved),
                                                min_calls=min_calls)

    # -- saved statistics ---------------------------------------------------------

    def saved_statistics(self) -> list[ShapeStats]:
        """What processes saved with :meth:`save_statistics` (most total time first)."""
        data = self.store.meta_get(STATS_KEY)
        out = []
        for item in data if isinstance(data, list) else ():
            try:
                out.append(ShapeStats.from_dict(item))
            except (KeyError, TypeError, ValueError):
                continue  # a record of another version: skip it
        return out

    def save_statistics(self) -> int:
        """Add this process's counts since its last save to the saved statistics;
        returns how many shapes changed. Never raises for a store that is closing
        or unreachable (it is called on the way out): logs and returns 0."""
        # The optimiser's own bookkeeping (statekeep_meta) is no workload to save.
        current = [s for s in self.statistics.snapshot(kinds=QUERY_KINDS)
                   if "statekeep_meta" not in s.shape]
        delta = [d for d in (self._unsaved(s) for s in current) if d.count > 0]
        if not delta:
            return 0

        def update(old: Any) -> Any:
            saved = []
            for item in old if isinstance(old, list) else ():
                try:
                    saved.append(ShapeStats.from_dict(item))
                except (KeyError, TypeError, ValueError):
                    continue
            merged = merge(saved, delta)
            merged.sort(key=lambda s: s.count, reverse=True)
            return [s.to_dict() for s in merged[:MAX_SAVED_SHAPES]]

        try:
            self.store.meta_update(STATS_KEY, update)
        except StatekeepError:
            log.warning("could not save query statistics", exc_info=True)
            return 0
        self.statistics.saved_base.update({s.shape: s for s in current})
        return len(delta)

    def clear_saved_statistics(self) -> None:
        self.store.meta_update(STATS_KEY, lambda _old: [])
