"""The index advisor: suggestions from plans, creation from an allow-list only.

The seed built DDL with an f-string from whatever it was handed
(``CREATE INDEX {index_name} ON {table}({cols}) WHERE {where}``), which is an
injection hole the moment a table, column or predicate comes from a saved
statistic, a config file or a command line. Here nothing of the DDL is taken
from input:

* tables, columns and JSON paths must be in :data:`ALLOWED` -- a fixed table
  in this module, not configuration -- and anything else is refused with a
  :class:`~statekeep.errors.ValidationError` naming it, before any SQL runs;
* JSON keys are rendered from the allow-list entry (the path literal quoted
  here), in the spelling the query used, because SQLite and PostgreSQL only
  use an expression index for the very expression it was built on;
* index names are generated from the validated parts (``sk_<table>_<keys>``);
* the only partial-index predicate is ``<allowed column> IS NOT NULL``.

Creation is off unless ``StateConfig.index_advisor_apply`` is set or the
caller confirms (``statekeep indexes apply --yes``). Each created index is
recorded in ``statekeep_meta`` (``index_advisor:<name>``: when, the DDL, and
the shapes that asked for it) -- not in the audit log, whose rows recovery
replays as state changes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from statekeep.errors import StatekeepError, ValidationError
from statekeep.query import sqltext
from statekeep.query.catalog import IndexInfo
from statekeep.query.plans import QueryPlan, QueryPlanner
from statekeep.query.stats import ShapeStats

if TYPE_CHECKING:
    from statekeep.store.indexes import IndexStore

__all__ = [
    "ALLOWED",
    "AllowedTable",
    "AppliedIndex",
    "IndexAdvisor",
    "IndexKey",
    "IndexManager",
    "IndexSpec",
    "IndexSuggestion",
    "IndexUsage",
    "IndexUsageReport",
]

log = logging.getLogger("statekeep.query")

#: statekeep_meta key prefix of the record of each index the advisor created.
APPLIED_PREFIX = "index_advisor:"
#: A shape is frequent from this many calls on.
DEFAULT_MIN_CALLS = 50
#: The seed's thresholds: an index is inefficient below this efficiency ...
INEFFICIENT_BELOW = 0.1
#: ... once it has been scanned more than this many times.
INEFFICIENT_MIN_SCANS = 100
_PATH = re.compile(r"\$(?:\.[a-z_][a-z0-9_]*)+")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_NAME = 63  # PostgreSQL's identifier limit


@dataclass(frozen=True)
class AllowedTable:
    """What may be indexed on one table."""

    columns: frozenset[str]
    #: JSON column -> the paths (``$.a.b``) that may be indexed inside it.
    json_paths: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _allowed(columns: str, **json: str) -> AllowedTable:
    return AllowedTable(frozenset(columns.split()),
                        MappingProxyType({c: frozenset(p.split()) for c, p in json.items()}))


#: The allow-list: tables, columns and JSON paths the advisor may index. Keys
#: of context values are the ones statekeep itself writes (captured files:
#: path, language, sha256; agent notes: role, status, source.tool).
ALLOWED: Mapping[str, AllowedTable] = MappingProxyType({
    "sessions": _allowed("user_id status start_time end_time created_at updated_at",
                         metadata="$.project $.agent $.branch"),
    "tasks": _allowed("session_id parent_task_id type status priority started_at"
                      " completed_at created_at updated_at retry_count",
                      parameters="$.kind $.target"),
    "context": _allowed("session_id context_type context_key relevance_score access_count"
                        " last_accessed expires_at created_at updated_at",
                        context_value="$.path $.language $.sha256 $.role $.status $.kind"
                                      " $.source.tool $.tool"),
    "decisions": _allowed("session_id task_id decision_type context_hash confidence"
                          " autonomous user_override outcome created_at"),
    "user_preferences": _allowed("user_id preference_type preference_key confidence"
                                 " last_observed updated_at"),
    "audit_log": _allowed("event_type entity_type entity_id user_id session_id timestamp"),
    "context_relations": _allowed("session_id source_id target_id relation_type strength"
                                  " created_at"),
    "state_snapshots": _allowed("session_id snapshot_type created_at audit_id"
                                " scope_session_id"),
    "memory_entries": _allowed("importance last_accessed created_at updated_at"),
    "sync_state": _allowed("scope component updated_at"),
    "sync_conflicts": _allowed("scope key component status created_at"),
    "archive_index": _allowed("user_id last_activity archived_at expires_at"),
})

#: How a JSON key is spelled in SQL (an expression index serves one spelling).
JSON_STYLES = ("json_extract", "arrow", "arrow_short", "pg")


def _check_str(value: object, what: str, field_name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}",
                              field=field_name)
    return value


def _table_rules(table: object) -> tuple[str, AllowedTable]:
    name = _check_str(table, "table", "table")
    rules = ALLOWED.get(name)
    if rules is None:
        raise ValidationError(f"table {name!r} is not on the index allow-list (allowed:"
                              f" {', '.join(sorted(ALLOWED))})", field="table")
    return name, rules


@dataclass(frozen=True)
class IndexKey:
    """One key of an index: a column, or a JSON path inside a JSON column."""

    column: str
    #: ``$.a.b`` for a JSON key, None for a plain column.
    path: str | None = None
    #: For JSON keys: "json_extract" (``json_extract(col, '$.a')``), "arrow"
    #: (``col ->> '$.a'``), "arrow_short" (``col ->> 'a'``) on SQLite; "pg"
    #: (``col ->> 'a'`` / ``col #>> '{a,b}'``) on PostgreSQL.
    style: str = "json_extract"

    def validate(self, table: str, rules: AllowedTable) -> None:
        column = _check_str(self.column, "column", "columns")
        if self.path is None:
            if column not in rules.columns:
                raise ValidationError(f"column {column!r} of table {table!r} is not on the"
                                      f" index allow-list (allowed: "
                                      f"{', '.join(sorted(rules.columns))})", field="columns")
            return
        path = _check_str(self.path, "JSON path", "json_paths")
        paths = rules.json_paths.get(column)
        if paths is None:
            raise ValidationError(f"column {column!r} of table {table!r} is not a JSON column"
                                  " on the index allow-list", field="json_paths")
        if path not in paths or not _PATH.fullmatch(path):
            raise ValidationError(f"JSON path {path!r} of {table}.{column} is not on the"
                                  f" index allow-list (allowed: {', '.join(sorted(paths))})",
                                  field="json_paths")
        if self.style not in JSON_STYLES:
            raise ValidationError(f"unknown JSON key style {self.style!r}", field="json_paths")
        if self.style == "arrow_short" and path.count(".") != 1:
            raise ValidationError(f"JSON path {path!r} is nested; ->> 'key' reaches one level",
                                  field="json_paths")

    @property
    def label(self) -> str:
        """The key's part of a generated index name."""
        if self.path is None:
            return self.column
        prefix = {"json_extract": "j", "arrow": "a", "arrow_short": "s", "pg": "j"}[self.style]
        return f"{prefix}_{self.path[2:].replace('.', '_')}"

    def sql(self, dialect: str) -> str:
        """The key as SQL: identifiers quoted, the path a quoted literal."""
        col = f'"{self.column}"'
        if self.path is None:
            return col
        keys = self.path[2:].split(".")
        if dialect == "sqlite":
            if self.style == "arrow":
                return f"{col} ->> {sqltext.quote_literal(self.path)}"
            if self.style == "arrow_short":
                return f"{col} ->> {sqltext.quote_literal(keys[0])}"
            return f"json_extract({col}, {sqltext.quote_literal(self.path)})"
        if len(keys) == 1:
            return f"({col} ->> {sqltext.quote_literal(keys[0])})"
        return f"({col} #>> {sqltext.quote_literal('{' + ','.join(keys) + '}')})"


@dataclass(frozen=True)
class IndexSpec:
    """A validated index: every part checked against :data:`ALLOWED` on creation."""

    table: str
    keys: tuple[IndexKey, ...]
    #: Partial index on rows where this (allow-listed) column is not NULL.
    where_not_null: str | None = None

    def __post_init__(self) -> None:
        table, rules = _table_rules(self.table)
        if not isinstance(self.keys, tuple) or not self.keys or len(self.keys) > 4:
            raise ValidationError("an index needs one to four keys", field="columns")
        for key in self.keys:
            if not isinstance(key, IndexKey):
                raise ValidationError("index keys must be IndexKey values", field="columns")
            key.validate(table, rules)
        if len({(k.column, k.path, k.style) for k in self.keys}) != len(self.keys):
            raise ValidationError("an index key is repeated", field="columns")
        if self.where_not_null is not None:
            col = _check_str(self.where_not_null, "where_not_null", "where_not_null")
            if col not in rules.columns:
                raise ValidationError(f"column {col!r} of table {table!r} is not on the index"
                                      " allow-list", field="where_not_null")

    @classmethod
    def build(cls, table: str, columns: Sequence[str] = (),
              json_paths: Sequence[tuple[str, str]] = (), *,
              where_not_null: str | None = None, style: str = "json_extract") -> IndexSpec:
        """From names: columns first, then ``(json_column, "$.path")`` keys."""
        if isinstance(columns, str) or isinstance(json_paths, str):
            raise ValidationError("columns and json_paths are lists, not one string",
                                  field="columns")
        keys: list[IndexKey] = [IndexKey(c) for c in columns]
        for item in json_paths:
            if not isinstance(item, tuple) or len(item) != 2:
                raise ValidationError(f"a JSON key is (json_column, '$.path'), not {item!r}",
                                      field="json_paths")
            keys.append(IndexKey(item[0], item[1], style))
        return cls(table, tuple(keys), where_not_null)

    @property
    def name(self) -> str:
        """Generated from the validated parts only: ``sk_<table>_<key>_<key>``."""
        parts = ["sk", self.table, *(k.label for k in self.keys)]
        if self.where_not_null:
            parts += ["nn", self.where_not_null]
        name = "_".join(parts)
        if len(name) > _MAX_NAME:
            digest = hashlib.sha1(name.encode()).hexdigest()[:8]
            name = f"{name[:_MAX_NAME - 9]}_{digest}"
        if not _NAME.fullmatch(name):  # cannot happen with allow-listed parts
            raise ValidationError(f"generated index name {name!r} is not a plain name")
        return name

    def keys_sql(self, dialect: str) -> str:
        return ", ".join(k.sql(dialect) for k in self.keys)

    def where_sql(self) -> str | None:
        return None if self.where_not_null is None else f'"{self.where_not_null}" IS NOT NULL'

    def ddl(self, dialect: str) -> str:
        """The statement that creates it (shown by ``advise``; ``apply`` runs it)."""
        where = self.where_sql()
        how = "CONCURRENTLY IF NOT EXISTS" if dialect == "postgresql" else "IF NOT EXISTS"
        return (f'CREATE INDEX {how} "{self.name}" ON "{self.table}" ({self.keys_sql(dialect)})'
                + (f" WHERE {where}" if where else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "name": self.name,
                "keys": [{"column": k.column, "path": k.path,
                          "style": k.style if k.path else None} for k in self.keys],
                "where_not_null": self.where_not_null}


@dataclass(frozen=True)
class IndexSuggestion:
    """An index the advisor recommends, and why."""

    spec: IndexSpec
    #: "shape X ran N times; its plan shows a full scan of T (R rows) filtered by K".
    reason: str
    shapes: tuple[str, ...]
    calls: int
    plan: str
    dialect: str
    #: An equivalent index is already there (apply skips it).
    exists: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def ddl(self) -> str:
        return self.spec.ddl(self.dialect)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "table": self.table, "ddl": self.ddl,
                "reason": self.reason, "shapes": list(self.shapes), "calls": self.calls,
                "plan": self.plan, "exists": self.exists, "spec": self.spec.to_dict()}


@dataclass(frozen=True)
class AppliedIndex:
    """What ``apply`` did with one suggestion."""

    name: str
    table: str
    ddl: str
    created: bool
    #: Why not, when not created ("already exists", the database's error).
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "table": self.table, "ddl": self.ddl,
                "created": self.created, "note": self.note}


def _ops(sep: str) -> str:
    return (rf"{sep}\s*(?P<op>==|=|<>|!=|<=|>=|<|>|\bIN\b|\bIS\b|\bLIKE\b|\bBETWEEN\b|"
            r"\bGLOB\b)")


_EQUALITY = {"=", "==", "in", "is"}


def _filter_keys(sql: str, table: str, dialect: str, tables: Iterable[str]) -> list[IndexKey]:
    """Allow-listed keys of ``table`` the statement filters by: equalities in the
    order written, then at most one range -- the order an index serves best."""
    rules = ALLOWED.get(table)
    if rules is None:
        return []
    alias = sqltext.aliases(sql, tables)
    mine = {a for a, t in alias.items() if t == table}
    others = {t for t in alias.values() if t != table}
    where = sqltext.where_clause(sql)
    found: list[tuple[int, bool, IndexKey]] = []

    def owner_ok(qualifier: str | None, column: str) -> bool:
        if qualifier is not None:
            return qualifier.lower() in mine
        # unqualified: ours unless another table of the statement has it too
        return not any(column in ALLOWED.get(t, AllowedTable(frozenset())).columns
                       or column in ALLOWED.get(t, AllowedTable(frozenset())).json_paths
                       for t in others)

    q = r"(?:(?P<q>[A-Za-z_]\w*)\.)?"
    for column in sorted(rules.columns):
        pattern = re.compile(rf"(?<![\w.\"]){q}\"?{column}\"?(?![\w\"])\s*" + _ops(""), re.I)
        for m in pattern.finditer(where):
            if owner_ok(m.group("q"), column):
                found.append((m.start(), m.group("op").lower() in _EQUALITY, IndexKey(column)))
                break
    for column, paths in sorted(rules.json_paths.items()):
        for path in sorted(paths):
            keys = path[2:].split(".")
            forms: list[tuple[str, str]] = []
            col = rf"{q}\"?{column}\"?"
            if dialect == "sqlite":
                forms.append(("json_extract",
                              rf"json_extract\(\s*{col}\s*,\s*'{re.escape(path)}'\s*\)"))
                forms.append(("arrow", rf"{col}\s*->>\s*'{re.escape(path)}'"))
                if len(keys) == 1:
                    forms.append(("arrow_short", rf"{col}\s*->>\s*'{re.escape(keys[0])}'"))
            elif len(keys) == 1:
                forms.append(("pg", rf"\(?\s*{col}\s*->>\s*'{re.escape(keys[0])}'\s*\)?"))
            else:
                forms.append(("pg", rf"\(?\s*{col}\s*#>>\s*'\{{{','.join(keys)}\}}'\s*\)?"))
            for style, expr in forms:
                hit = re.search(rf"(?<![\w.]){expr}\s*" + _ops(""), where, re.I)
                if hit and owner_ok(hit.group("q"), column):
                    found.append((hit.start(), hit.group("op").lower() in _EQUALITY,
                                  IndexKey(column, path, style)))
                    break
    found.sort(key=lambda f: f[0])
    equal = [k for _, eq, k in found if eq]
    ranges = [k for _, eq, k in found if not eq]
    return (equal + ranges[:1])[:4]


def _norm(text: str) -> str:
    """An index key's text reduced for comparison across quoting and casts."""
    text = re.sub(r"::\w+(?:\s+\w+)?", "", text.lower())
    return re.sub(r"[\s\"()]", "", text)


def _key_texts(info: IndexInfo) -> list[str]:
    """The index's keys as comparable texts (SQLite: from its CREATE statement)."""
    if info.definition and "<expr>" in info.columns:
        m = re.search(r"\bON\s+\S+\s*\((.*)\)", info.definition, re.I | re.S)
        if m:
            body = m.group(1)
            body = re.split(r"\)\s*WHERE\b", body, flags=re.I)[0]
            parts, depth, cur = [], 0, ""
            for ch in body:
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                if ch == "," and depth == 0:
                    parts.append(cur)
                    cur = ""
                else:
                    cur += ch
            parts.append(cur)
            return [_norm(p) for p in parts]
    return [_norm(c) for c in info.columns]


class IndexAdvisor:
    """Suggests indexes for frequent shapes whose plans scan large tables."""

    def __init__(self, store: IndexStore, planner: QueryPlanner, *,
                 apply_enabled: bool = False, min_calls: int = DEFAULT_MIN_CALLS) -> None:
        self.store = store
        self.planner = planner
        self.apply_enabled = apply_enabled
        self.min_calls = min_calls

    def suggest(self, shapes: Iterable[ShapeStats], *, min_calls: int | None = None,
                plans: Mapping[str, QueryPlan] | None = None) -> list[IndexSuggestion]:
        """Suggestions for shapes run at least ``min_calls`` times, most calls first."""
        threshold = self.min_calls if min_calls is None else min_calls
        store = self.store
        tables = store.catalog().tables
        existing = store.list_indexes()
        by_name: dict[str, IndexSuggestion] = {}
        for shape in shapes:
            if shape.kind not in ("select", "update", "delete") or shape.count < threshold:
                continue
            plan = (plans or {}).get(shape.shape) or self.planner.explain(shape.sql)
            for table in plan.large_scans:
                keys = _filter_keys(shape.sql, table, store.dialect, tables)
                if not keys:
                    continue
                spec = IndexSpec(table, tuple(keys))
                named = ", ".join(k.column if k.path is None else f"{k.column} {k.path}"
                                  for k in keys)
                reason = (f"{shape.count:,} calls of: {shape.shape[:160]} -- the plan shows a"
                          f" full scan of {table} ({plan.table_rows.get(table, 0):,} rows)"
                          f" filtered by {named}")
                have = by_name.get(spec.name)
                if have is not None:
                    by_name[spec.name] = IndexSuggestion(
                        spec, have.reason, (*have.shapes, shape.shape), have.calls + shape.count,
                        have.plan, have.dialect, have.exists)
                    continue
                by_name[spec.name] = IndexSuggestion(
                    spec, reason, (shape.shape,), shape.count, plan.verdict, store.dialect,
                    exists=self._exists(spec, existing))
        return sorted(by_name.values(), key=lambda s: s.calls, reverse=True)

    def _exists(self, spec: IndexSpec, existing: list[IndexInfo]) -> bool:
        want = [_norm(k.sql(self.store.dialect)) for k in spec.keys]
        for info in existing:
            if info.table != spec.table or info.partial:
                continue
            if info.name == spec.name or _key_texts(info)[:len(want)] == want:
                return True
        return False

    def apply(self, suggestions: Iterable[IndexSuggestion | IndexSpec], *,
              confirm: bool = False) -> list[AppliedIndex]:
        """Create the suggested indexes (allow-listed by construction).

        Refused unless ``index_advisor_apply`` is set or ``confirm`` is true.
        """
        if not (self.apply_enabled or confirm):
            raise ValidationError("index creation is off: set index_advisor_apply = true, or"
                                  " confirm (statekeep indexes apply --yes)",
                                  field="index_advisor_apply")
        items = list(suggestions)
        for item in items:  # everything is checked before anything is created
            if not isinstance(item, IndexSuggestion | IndexSpec):
                raise ValidationError(f"cannot create an index from {type(item).__name__}",
                                      field="suggestions")
            spec = item.spec if isinstance(item, IndexSuggestion) else item
            IndexSpec(spec.table, spec.keys, spec.where_not_null)  # re-validate
        existing = self.store.list_indexes()
        out: list[AppliedIndex] = []
        for item in items:
            spec = item.spec if isinstance(item, IndexSuggestion) else item
            ddl = spec.ddl(self.store.dialect)
            if self._exists(spec, existing):
                out.append(AppliedIndex(spec.name, spec.table, ddl, False, "already exists"))
                continue
            try:
                ran = self.store.create_index_ddl(name=spec.name, table=spec.table,
                                                  keys_sql=spec.keys_sql(self.store.dialect),
                                                  where_sql=spec.where_sql())
            except StatekeepError as exc:
                out.append(AppliedIndex(spec.name, spec.table, ddl, False, str(exc)))
                continue
            self._record(spec, ran, item if isinstance(item, IndexSuggestion) else None)
            out.append(AppliedIndex(spec.name, spec.table, ran, True))
        return out

    def _record(self, spec: IndexSpec, ddl: str, why: IndexSuggestion | None) -> None:
        record = {"name": spec.name, "table": spec.table, "ddl": ddl,
                  "created_at": datetime.now(UTC).isoformat(),
                  "reason": why.reason if why else "created on request",
                  "shapes": list(why.shapes) if why else [], "calls": why.calls if why else 0}
        self.store.meta_update(APPLIED_PREFIX + spec.name, lambda _old: record)
        log.info("index advisor created index %s on %s: %s", spec.name, spec.table, ddl)

    def applied(self) -> dict[str, Any]:
        """The records of indexes the advisor created, by index name."""
        return {k[len(APPLIED_PREFIX):]: v for k, v in
                self.store.meta_items(APPLIED_PREFIX).items()}


@dataclass(frozen=True)
class IndexUsage:
    """One index and what is known of its use."""

    name: str
    table: str
    columns: tuple[str, ...]
    definition: str | None
    unique: bool
    constraint: bool
    size_bytes: int | None
    #: PostgreSQL: idx_scan. SQLite: calls of recorded shapes whose plans use it.
    scans: int | None
    tuples_read: int | None
    #: 1 - (rows an average lookup reads beyond the first / rows in the table):
    #: near 0 means every lookup reads most of the table, 1 a unique lookup.
    #: PostgreSQL: idx_tup_read per idx_scan; SQLite: sqlite_stat1 (after
    #: ANALYZE). None when unknown.
    efficiency: float | None
    #: Recorded shapes whose plan uses it.
    used_by: tuple[str, ...]
    #: Leads with a foreign key's column (referential checks use it unseen).
    supports_foreign_key: bool
    created_by_advisor: bool
    #: "used", "unused", "inefficient", "constraint", "foreign-key" (SQLite: no
    #: recorded plan uses it, but it leads with a foreign key column) or "unknown".
    status: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, columns=list(self.columns), used_by=list(self.used_by))


@dataclass(frozen=True)
class IndexUsageReport:
    """The seed's report: usage per index, unused, inefficient, suggested."""

    index_usage: list[IndexUsage]
    unused_indexes: list[str]
    inefficient_indexes: list[str]
    suggested_indexes: list[IndexSuggestion]
    #: Where the usage figures come from.
    source: str
    #: PostgreSQL: since when its counters run.
    stats_since: datetime | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"index_usage": [u.to_dict() for u in self.index_usage],
                "unused_indexes": self.unused_indexes,
                "inefficient_indexes": self.inefficient_indexes,
                "suggested_indexes": [s.to_dict() for s in self.suggested_indexes],
                "source": self.source,
                "stats_since": None if self.stats_since is None
                else self.stats_since.isoformat(), "notes": self.notes}


def _efficiency(info: IndexInfo) -> float | None:
    if info.scans is not None:  # PostgreSQL counters
        if not info.scans or not info.table_rows or info.tuples_read is None:
            return None
        per_scan = info.tuples_read / info.scans
        return max(0.0, 1.0 - min(max(per_scan - 1.0, 0.0) / info.table_rows, 1.0))
    if info.stat:  # sqlite_stat1: "rows rows-per-first-key ..."
        parts = info.stat.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]):
            return max(0.0, 1.0 - (int(parts[1]) - 1) / int(parts[0]))
    return None


class IndexManager:
    """The seed's ``IndexManager``: usage analysis plus the advisor."""

    def __init__(self, store: IndexStore, planner: QueryPlanner, advisor: IndexAdvisor
                 ) -> None:
        self.store = store
        self.planner = planner
        self.advisor = advisor

    def analyze_index_usage(self, shapes: Sequence[ShapeStats] = (), *,
                            min_calls: int | None = None,
                            max_plans: int = 200) -> IndexUsageReport:
        """Every index with its use; the unused and inefficient ones; suggestions.

        ``shapes`` are the recorded statement shapes (the optimizer passes this
        process's and the saved ones): their plans tell which indexes serve
        them -- on SQLite the only usage evidence there is.
        """
        store = self.store
        infos = store.list_indexes()
        planned = [s for s in sorted(shapes, key=lambda s: s.count, reverse=True)
                   if s.kind in ("select", "update", "delete")][:max_plans]
        plans = {s.shape: self.planner.explain(s.sql) for s in planned}
        used_by: dict[str, list[str]] = {}
        calls: dict[str, int] = {}
        for s in planned:
            for index in plans[s.shape].indexes:
                used_by.setdefault(index, []).append(s.shape)
                calls[index] = calls.get(index, 0) + s.count
        fk = store.foreign_key_columns()
        applied = set(self.advisor.applied())
        notes: list[str] = []
        sqlite = store.dialect == "sqlite"
        if sqlite:
            notes.append("SQLite keeps no index counters: an index is 'unused' when no plan"
                         " of a recorded query shape uses it (foreign-key indexes excepted:"
                         " referential checks use them unseen)" if planned else
                         "no recorded query shapes: SQLite keeps no index counters, so usage"
                         " is known only from the plans of recorded statements")
        if sqlite and not any(i.stat for i in infos):
            notes.append("no sqlite_stat1: run 'statekeep indexes report --analyze' (ANALYZE)"
                         " for index selectivity")
        if sqlite and infos and all(i.size_bytes is None for i in infos):
            notes.append("this SQLite has no dbstat table: index sizes unknown")
        usage: list[IndexUsage] = []
        for info in infos:
            scans = info.scans if info.scans is not None else (
                calls.get(info.name, 0) if planned else None)
            eff = _efficiency(info)
            leads_fk = bool(info.columns) and (info.table, info.columns[0].lower()) in fk
            if info.constraint or info.unique:
                status = "constraint"
            elif scans is None:
                status = "unknown"
            elif scans == 0 and sqlite and leads_fk:
                status = "foreign-key"
            elif scans == 0:
                status = "unused"
            elif eff is not None and eff < INEFFICIENT_BELOW and scans > INEFFICIENT_MIN_SCANS:
                status = "inefficient"
            else:
                status = "used"
            usage.append(IndexUsage(
                name=info.name, table=info.table, columns=info.columns,
                definition=info.definition, unique=info.unique, constraint=info.constraint,
                size_bytes=info.size_bytes, scans=scans, tuples_read=info.tuples_read,
                efficiency=eff, used_by=tuple(used_by.get(info.name, ())),
                supports_foreign_key=leads_fk, created_by_advisor=info.name in applied,
                status=status))
        suggestions = self.advisor.suggest(planned, min_calls=min_calls, plans=plans)
        return IndexUsageReport(
            index_usage=usage,
            unused_indexes=[u.name for u in usage if u.status == "unused"],
            inefficient_indexes=[u.name for u in usage if u.status == "inefficient"],
            suggested_indexes=suggestions,
            source="pg_stat_user_indexes" if not sqlite else "plans of recorded shapes",
            stats_since=store.index_stats_since(), notes=notes)
