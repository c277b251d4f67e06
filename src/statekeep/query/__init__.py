"""Query optimisation: statement statistics, plans, index advice, a result cache.

See docs/query.md. :class:`QueryOptimizer` is the façade; the store itself
owns the statistics (``store.query_stats``) and the result cache
(``store.query_cache``, ``store.cached_query``), because its connections feed
them. Nothing here imports the store at run time, so the store can import
this package.
"""

from statekeep.query.advisor import (
    ALLOWED,
    AppliedIndex,
    IndexAdvisor,
    IndexKey,
    IndexManager,
    IndexSpec,
    IndexSuggestion,
    IndexUsage,
    IndexUsageReport,
)
from statekeep.query.cache import CacheStats, QueryCache
from statekeep.query.optimizer import QueryOptimizer, ShapeVerdict
from statekeep.query.plans import PlanStep, QueryPlan, QueryPlanner
from statekeep.query.stats import QueryStatistics, ShapeStats

__all__ = [
    "ALLOWED",
    "AppliedIndex",
    "CacheStats",
    "IndexAdvisor",
    "IndexKey",
    "IndexManager",
    "IndexSpec",
    "IndexSuggestion",
    "IndexUsage",
    "IndexUsageReport",
    "PlanStep",
    "QueryCache",
    "QueryOptimizer",
    "QueryPlan",
    "QueryPlanner",
    "QueryStatistics",
    "ShapeStats",
    "ShapeVerdict",
]
