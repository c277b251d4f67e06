"""Garbage collection with retention rules: mark, sweep, compact (docs/gc.md)."""

from __future__ import annotations

from statekeep.gc.collector import (
    BatchStats,
    CollectionResult,
    CollectionStatistics,
    CompactionReport,
    GarbageCollector,
    KindStatistics,
    PlannedItem,
)
from statekeep.gc.rules import (
    DEFAULT_RULES,
    ENTITIES,
    RetentionRule,
    RetentionRules,
    RuleDecision,
    parse_rule,
)

__all__ = [
    "DEFAULT_RULES",
    "ENTITIES",
    "BatchStats",
    "CollectionResult",
    "CollectionStatistics",
    "CompactionReport",
    "GarbageCollector",
    "KindStatistics",
    "PlannedItem",
    "RetentionRule",
    "RetentionRules",
    "RuleDecision",
    "parse_rule",
]
