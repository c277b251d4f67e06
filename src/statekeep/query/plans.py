"""Query plans in one shape for both dialects, and the verdict the advisor needs.

SQLite's ``EXPLAIN QUERY PLAN`` says per table whether it is SCANned (every
row) or SEARCHed through an index; PostgreSQL's ``EXPLAIN (FORMAT JSON)`` says
the same with node types (Seq Scan, Index Scan, Bitmap Index Scan, ...). Both
are reduced to :class:`PlanStep` records naming the real table (SQLite prints
aliases; they are resolved from the statement text) and the index used.

The verdict that matters: a *full scan of a large table* in a frequent shape.
A scan of a small table is normal (PostgreSQL prefers it below a few hundred
rows even with an index), so a scan only counts when the table holds at least
``min_rows`` rows. PostgreSQL plans are the generic plans a prepared statement
would use (parameters unknown), which is what a store running the same shape
with many values gets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from statekeep.errors import StatekeepError
from statekeep.query import sqltext

if TYPE_CHECKING:
    from statekeep.store.indexes import IndexStore

__all__ = ["DEFAULT_MIN_ROWS", "PlanStep", "QueryPlan", "QueryPlanner"]

#: Tables with fewer rows than this are not worth an index for a scan verdict.
DEFAULT_MIN_ROWS = 1000

_SQLITE_SCAN = re.compile(r"SCAN (?:TABLE )?(\S+)(?: AS (\S+))?(.*)$")
_SQLITE_SEARCH = re.compile(r"SEARCH (?:TABLE )?(\S+)(?: AS (\S+))? USING (.*)$")
_USING_INDEX = re.compile(r"(?:(AUTOMATIC) )?(?:COVERING |PARTIAL )*INDEX (\S+)")
_PG_INDEX_NODES = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


@dataclass(frozen=True)
class PlanStep:
    """One table access of a plan."""

    #: The real table name (None for steps that access no table).
    table: str | None
    #: "scan" (every row), "index-scan" (every entry of an index), "search"
    #: (an index lookup), "automatic" (SQLite builds a throw-away index on
    #: every run), "virtual" (a virtual table) or "other".
    access: str
    index: str | None
    #: The database's own line for it.
    detail: str
    #: PostgreSQL's filter / index condition, when there is one.
    condition: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "access": self.access, "index": self.index,
                "detail": self.detail, "condition": self.condition}


@dataclass(frozen=True)
class QueryPlan:
    """The plan of one statement and what it means for the advisor."""

    sql: str
    dialect: str
    steps: tuple[PlanStep, ...] = ()
    #: Why no plan could be had (e.g. PostgreSQL cannot type a parameter).
    error: str | None = None
    #: Rows of each fully scanned table (estimates on PostgreSQL).
    table_rows: Mapping[str, int] = field(default_factory=dict)
    min_rows: int = DEFAULT_MIN_ROWS

    @property
    def scanned_tables(self) -> tuple[str, ...]:
        """Tables read row by row, large or small."""
        return tuple(dict.fromkeys(
            s.table for s in self.steps if s.access in ("scan", "automatic") and s.table))

    @property
    def large_scans(self) -> tuple[str, ...]:
        """Fully scanned tables with at least ``min_rows`` rows: the ones to fix."""
        return tuple(t for t in self.scanned_tables
                     if self.table_rows.get(t, 0) >= self.min_rows)

    @property
    def indexes(self) -> tuple[str, ...]:
        """Indexes the plan uses (SQLite's automatic ones excluded)."""
        return tuple(dict.fromkeys(
            s.index for s in self.steps if s.index and s.access != "automatic"))

    @property
    def verdict(self) -> str:
        """One phrase: "full scan of context (100,000 rows)", "uses idx_x", ..."""
        if self.error is not None:
            return f"no plan: {self.error}"
        if self.large_scans:
            return "; ".join(f"full scan of {t} ({self.table_rows.get(t, 0):,} rows)"
                             for t in self.large_scans)
        if self.indexes:
            return "uses " + ", ".join(self.indexes)
        if self.scanned_tables:
            return "scans small table " + ", ".join(
                f"{t} ({self.table_rows.get(t, 0):,} rows)" for t in self.scanned_tables)
        return "no table access"

    def to_dict(self) -> dict[str, Any]:
        return {"sql": self.sql, "dialect": self.dialect, "verdict": self.verdict,
                "error": self.error, "large_scans": list(self.large_scans),
                "indexes": list(self.indexes), "table_rows": dict(self.table_rows),
                "steps": [s.to_dict() for s in self.steps]}


def parse_sqlite(rows: list[tuple[Any, ...]], alias: Mapping[str, str]) -> list[PlanStep]:
    """Steps from ``EXPLAIN QUERY PLAN`` rows (id, parent, notused, detail)."""
    steps = []
    for row in rows:
        detail = str(row[-1])
        if m := _SQLITE_SEARCH.match(detail):
            table = alias.get((m.group(2) or m.group(1)).lower(), m.group(1).lower())
            using = _USING_INDEX.search(m.group(3))
            if using and using.group(1):
                steps.append(PlanStep(table, "automatic", None, detail))
            else:
                index = using.group(2) if using else (
                    "PRIMARY KEY" if "PRIMARY KEY" in m.group(3) else None)
                steps.append(PlanStep(table, "search", index, detail))
        elif (m := _SQLITE_SCAN.match(detail)) and m.group(1) not in ("CONSTANT", "SUBQUERY"):
            name = (m.group(2) or m.group(1)).lower()
            table = alias.get(name, m.group(1).lower())
            rest = m.group(3)
            if "VIRTUAL TABLE" in rest:
                steps.append(PlanStep(table, "virtual", None, detail))
            elif using := _USING_INDEX.search(rest):
                steps.append(PlanStep(table, "index-scan", using.group(2), detail))
            else:
                steps.append(PlanStep(table, "scan", None, detail))
        else:
            steps.append(PlanStep(None, "other", None, detail))
    return steps


def parse_postgres(plan: Any) -> list[PlanStep]:
    """Steps from ``EXPLAIN (FORMAT JSON)`` output (a list holding {"Plan": ...})."""
    steps: list[PlanStep] = []

    def walk(node: Mapping[str, Any], parent_table: str | None) -> None:
        kind = str(node.get("Node Type", ""))
        table = node.get("Relation Name") or parent_table
        cond = node.get("Index Cond") or node.get("Filter") or node.get("Recheck Cond")
        detail = kind + (f" on {table}" if node.get("Relation Name") else "") + (
            f" using {node['Index Name']}" if node.get("Index Name") else "")
        if kind == "Seq Scan":
            steps.append(PlanStep(table, "scan", None, detail, cond))
        elif kind in _PG_INDEX_NODES:
            access = "search" if node.get("Index Cond") or kind == "Bitmap Index Scan" \
                else "index-scan"
            steps.append(PlanStep(table, access, node.get("Index Name"), detail, cond))
        elif kind != "Bitmap Heap Scan":
            steps.append(PlanStep(None, "other", None, detail, cond))
        for child in node.get("Plans", ()):
            walk(child, table if kind == "Bitmap Heap Scan" else None)

    root = plan[0] if isinstance(plan, list) else plan
    if isinstance(root, Mapping) and "Plan" in root:
        walk(root["Plan"], None)
    return steps


class QueryPlanner:
    """Explains statements against a store and judges the plans."""

    def __init__(self, store: IndexStore, *, min_rows: int = DEFAULT_MIN_ROWS) -> None:
        self.store = store
        self.min_rows = min_rows

    def explain(self, sql: str) -> QueryPlan:
        """The plan of ``sql`` (placeholders as ``?``); never runs the statement.

        A plan that cannot be had (a statement this store cannot prepare, a
        parameter PostgreSQL cannot type) comes back with ``error`` set rather
        than raising: a report over many shapes must not stop at one.
        """
        store = self.store
        try:
            raw = store.explain_raw(sql)
            if store.dialect == "sqlite":
                steps = parse_sqlite(raw, sqltext.aliases(sql, store.catalog().tables))
            else:
                steps = parse_postgres(raw)
            rows = {s.table: store.table_rows(s.table) for s in steps
                    if s.access in ("scan", "automatic") and s.table
                    and s.table in store.catalog().tables}
        except StatekeepError as exc:
            return QueryPlan(sql=sql, dialect=store.dialect, error=str(exc),
                             min_rows=self.min_rows)
        return QueryPlan(sql=sql, dialect=store.dialect, steps=tuple(steps), table_rows=rows,
                         min_rows=self.min_rows)
