"""One typed configuration object, resolved as kwargs > STATEKEEP_* env > file.

The seed gives two sets of sizes -- the storage layers (hot 512 MB / 5 min,
warm 2 GB / 1 h, cold 90 days, archive 1 year) and the hierarchical memory
(working 128 MB, short-term 512 MB). They are reconciled here: the hot tier is
the in-process cache (``hot_cache_bytes``), of which ``working_memory_bytes``
is the pinned working set for important entries; the warm tier is Redis
(``warm_cache_bytes``), of which ``short_term_bytes`` is the short-term memory
budget. docs/architecture.md carries the table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_type_hints

import platformdirs

from statekeep.errors import ConfigError

__all__ = [
    "SYNC_RULE_STRATEGIES",
    "Durability",
    "StateConfig",
    "default_config_path",
    "default_db_path",
]

Durability = Literal["process", "power"]

#: What a sync rule may name: strategies, never code (see docs/sync.md).
SYNC_RULE_STRATEGIES = frozenset(
    {"last_write_wins", "keep_current", "merge", "user_decides", "max", "min"})

ENV_PREFIX = "STATEKEEP_"
MB = 1024 * 1024


def default_db_path() -> Path:
    """The per-user default store, so ``statekeep`` works from any folder."""
    return Path(platformdirs.user_data_dir("statekeep")) / "statekeep.db"


def default_config_path() -> Path:
    """Where the optional TOML config file is looked for."""
    return Path(platformdirs.user_config_dir("statekeep")) / "config.toml"


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Every setting statekeep reads, with the seed's numbers as defaults."""

    #: SQLite file path, ``sqlite:///path``, or ``postgresql://...`` URL.
    db: str = field(default_factory=lambda: str(default_db_path()))
    #: ``redis://`` URL of the warm tier; None means no warm tier.
    redis_url: str | None = None

    # durability: "process" survives kill -9 (WAL, synchronous=NORMAL);
    # "power" survives power loss (synchronous=FULL).
    durability: Durability = "process"
    busy_timeout_ms: int = 5000
    #: Encoded JSON values larger than this are refused (context, params, ...).
    max_value_bytes: int = 16 * MB
    #: Access counters are batched in memory and flushed this often (seconds).
    access_flush_interval: float = 2.0
    #: Apply pending schema migrations when a store is opened.
    auto_migrate: bool = True
    #: Connections kept by the PostgreSQL pool.
    pool_min_size: int = 1
    pool_max_size: int = 8

    # tiers (seed 2.2) -- used by the memory layer
    hot_cache_bytes: int = 512 * MB
    hot_ttl_seconds: float = 300.0
    working_memory_bytes: int = 128 * MB
    warm_cache_bytes: int = 2048 * MB
    warm_ttl_seconds: float = 3600.0
    short_term_bytes: int = 512 * MB
    cold_retention_days: float = 90.0
    archive_retention_days: float = 365.0
    archive_dir: str | None = None
    #: Memory values whose JSON is at least this long are stored once per
    #: content (content_blobs) instead of inline; below it a blob row costs
    #: more than the duplicate it saves.
    dedup_min_bytes: int = 16 * 1024
    #: Process RSS above which HierarchicalMemory moves entries down a tier
    #: (0 turns the RSS check off; the tiers' own byte budgets still apply).
    memory_rss_limit_bytes: int = 1024 * MB
    #: Short-term hits within the short-term TTL before a value is promoted
    #: to working memory.
    promote_after_hits: int = 2

    # context engine (seed 4.1/4.2)
    #: Folder that captured paths must stay inside; None means the current
    #: directory at capture time.
    workspace_root: str | None = None
    #: Text files up to this size keep their content (deduplicated); larger
    #: and binary files are recorded by hash only.
    capture_max_file_bytes: int = 1 * MB
    #: A capture that would walk more files than this is refused up front.
    capture_max_files: int = 200_000
    #: Relevance formula: time decay per hour, access boost (per access, capped),
    #: the relationship weight, and the four component weights of the sum.
    relevance_decay_per_hour: float = 0.95
    relevance_access_boost: float = 0.1
    relevance_access_cap: float = 0.5
    relevance_relationship_weight: float = 0.3
    relevance_weight_time: float = 0.3
    relevance_weight_access: float = 0.2
    relevance_weight_relationship: float = 0.25
    relevance_weight_task: float = 0.25
    #: How many context items a reconstruction returns, most relevant first.
    reconstruct_context_limit: int = 200
    #: How far the context graph around those items reaches (relations hops).
    graph_depth: int = 2
    #: Default size of the resume brief, in (estimated) tokens.
    brief_budget_tokens: int = 2000

    # sync (seed 6.1/6.2)
    #: Key patterns (shell-style) whose conflicts always go to a person.
    sync_critical_keys: tuple[str, ...] = ("critical.*",)
    #: Conflict rules as "pattern=strategy", first match wins; strategies are
    #: names from SYNC_RULE_STRATEGIES. In the environment: comma-separated.
    sync_rules: tuple[str, ...] = ()
    #: Notifications queued per subscriber; beyond it new ones are dropped and
    #: counted, so a slow subscriber never holds up a writer.
    sync_queue_size: int = 1000
    #: How often (seconds) a process with neither Redis nor PostgreSQL reads
    #: the audit log for the changes of other processes.
    sync_poll_interval: float = 0.05

    # learning (decisions and preferences)
    #: Evidence loses half its weight in this many days.
    preference_half_life_days: float = 30.0
    #: Weight of one observation: an accepted decision, a user override, an
    #: explicit setting.
    preference_accept_weight: float = 1.0
    preference_override_weight: float = 3.0
    preference_explicit_weight: float = 5.0
    #: should_act_autonomously says yes at or above this confidence.
    autonomy_threshold: float = 0.8
    #: How many recent decisions of a type are compared for nearness.
    similar_decisions_scan: int = 500

    # recovery (seed 7)
    #: Where backups and exported snapshots go; None means a "backups" folder
    #: beside a SQLite file, or the user data folder for PostgreSQL.
    backup_dir: str | None = None
    #: Scheduled backups: how often (hours; 0 = never) and how many to keep.
    backup_interval_hours: float = 24.0
    backup_keep: int = 7
    #: The health monitor's interval (seconds; 0 = not started).
    health_check_interval: float = 60.0
    #: Snapshots not held by a recovery point are kept this long.
    snapshot_retention_days: float = 30.0

    # garbage collection (seed 9)
    #: Anything younger than this is kept, reachable or not.
    gc_min_age_hours: float = 24.0
    #: Decisions younger than this are GC roots (the seed's "recent_decision").
    gc_decision_retention_hours: float = 72.0
    #: Items more important than this are kept (seed: importance > 0.8).
    gc_importance_keep: float = 0.8
    #: Rows per sweep transaction: small enough that no reader or writer
    #: waits long behind one.
    gc_batch_size: int = 500
    #: Retention rules, highest priority first, the first match deciding:
    #: "name:entity[:status=a|b][:age<72h][:importance>0.8]=keep|collect@priority"
    #: (docs/gc.md); typed data, never code. Empty means the seed's four rules.
    #: In the environment: comma-separated.
    gc_rules: tuple[str, ...] = ()
    #: A collection without --force runs when the last one is this old ...
    gc_interval_hours: float = 24.0
    #: ... or when at least this many rows are collectable.
    gc_collect_threshold: int = 1000

    # query optimisation (seed 8)
    #: Keep per-shape query statistics (count, latency histogram, rows).
    query_stats: bool = True
    #: Let the index advisor create the indexes it suggests (allow-listed only).
    index_advisor_apply: bool = False
    #: Bytes of the result cache for deterministic read queries (0 = off).
    query_cache_bytes: int = 128 * MB

    # metrics (seed 10)
    #: Record Prometheus metrics for this system.
    metrics: bool = True

    def __post_init__(self) -> None:
        # Checked here, not only in load(): StateConfig(...) and replace() are
        # used directly, and a wrong type would otherwise fail far from its cause.
        hints = _hints()
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        if self.durability not in ("process", "power"):
            raise ConfigError(
                f"durability must be 'process' or 'power', not {self.durability!r}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{f.name} must not be negative (got {value})")
        if not 0.0 < self.relevance_decay_per_hour <= 1.0:
            raise ConfigError("relevance_decay_per_hour must be in (0, 1]")
        if self.graph_depth > 10:
            raise ConfigError("graph_depth must be at most 10")
        for rule in self.sync_rules:
            pattern, sep, strategy = rule.rpartition("=")
            if not sep or not pattern.strip() or strategy.strip() not in SYNC_RULE_STRATEGIES:
                raise ConfigError(
                    f"sync rule {rule!r} must be 'pattern=strategy' with a strategy from "
                    f"{', '.join(sorted(SYNC_RULE_STRATEGIES))}")
        if any(not p.strip() for p in self.sync_critical_keys):
            raise ConfigError("sync_critical_keys must not hold empty patterns")
        if not 0.0 <= self.autonomy_threshold <= 1.0:
            raise ConfigError("autonomy_threshold must be in [0, 1]")
        if self.preference_half_life_days <= 0:
            raise ConfigError("preference_half_life_days must be positive")
        if self.backup_keep < 1:
            raise ConfigError("backup_keep must be at least 1")
        if self.sync_queue_size < 1:
            raise ConfigError("sync_queue_size must be at least 1")
        self._check_gc()
        if self.pool_max_size < max(1, self.pool_min_size):
            raise ConfigError("pool_max_size must be >= pool_min_size and >= 1")
        self._check_query()

    def _check_gc(self) -> None:
        for name in ("gc_min_age_hours", "gc_decision_retention_hours", "gc_interval_hours"):
            value = getattr(self, name)
            if not math.isfinite(value) or value > 1e7:
                raise ConfigError(f"{name} must be a number of hours below 1e7, not {value!r}")
        if not 0.0 <= self.gc_importance_keep <= 1.0:
            raise ConfigError("gc_importance_keep must be in [0, 1]")
        if self.gc_batch_size < 1:
            raise ConfigError("gc_batch_size must be at least 1")
        if self.gc_collect_threshold < 1:
            raise ConfigError("gc_collect_threshold must be at least 1")
        # The rules' own module names the bad rule; imported here, not at the top,
        # because the gc package imports the store, which imports this module.
        from statekeep.gc.rules import validate_rules

        validate_rules(self.gc_rules)

    def _check_query(self) -> None:
        # A budget smaller than one result is a cache that refuses everything;
        # say so instead of silently caching nothing.
        if 0 < self.query_cache_bytes < 64 * 1024:
            raise ConfigError("query_cache_bytes must be 0 (result cache off) or at least"
                              f" 65536, not {self.query_cache_bytes}")
        if self.query_cache_bytes > 1 << 40:
            raise ConfigError(f"query_cache_bytes must be at most 1 TiB, not"
                              f" {self.query_cache_bytes}")

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> StateConfig:
        """Build a config from a TOML file, then STATEKEEP_* env vars, then kwargs.

        A missing default file is fine; a missing explicitly named file is an error.
        """
        values: dict[str, Any] = {}
        path = Path(config_file) if config_file else Path(
            os.environ.get(ENV_PREFIX + "CONFIG", default_config_path())
        )
        explicit = config_file is not None or ENV_PREFIX + "CONFIG" in os.environ
        if path.is_file():
            try:
                with path.open("rb") as fh:
                    data = tomllib.load(fh)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
            values.update(data.get("statekeep", data))
        elif explicit:
            raise ConfigError(f"config file {path} does not exist")
        hints = get_type_hints(cls)
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(f.name, raw, hints[f.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        for name, value in values.items():
            if isinstance(value, list):  # a TOML array
                values[name] = tuple(value)
            _check_type(name, values[name], hints[name])
        return cls(**values)

    def replace(self, **changes: Any) -> StateConfig:
        """A copy with some settings changed."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@functools.cache
def _hints() -> dict[str, Any]:
    return get_type_hints(StateConfig)


def _coerce(name: str, raw: str, hint: Any) -> Any:
    text = str(hint)
    try:
        if hint is bool or text == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if text.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {text}") from None
    if "None" in text and raw == "":
        return None
    return raw


def _check_type(name: str, value: Any, hint: Any) -> None:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif str(hint).startswith("tuple"):
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    else:  # str, an optional str, or a Literal of strings
        ok = isinstance(value, str) or (value is None and "None" in str(hint))
    if not ok:
        raise ConfigError(f"setting {name} has the wrong type: {value!r}")
