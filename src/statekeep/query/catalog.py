"""What the database's catalog says, in one shape for both dialects.

The store reads the catalog (:mod:`statekeep.store.indexes`); the query
package reasons about it. Keeping these records here means the query package
never imports the store at run time, so the store can import the query
package for its statement observer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from statekeep.query.sqltext import ALL_TABLES

__all__ = ["Catalog", "IndexInfo", "dependency_map"]


@dataclass(frozen=True)
class Catalog:
    """The store's tables and views, and which writes can change which table."""

    tables: frozenset[str]
    #: view -> the tables it reads
    views: Mapping[str, frozenset[str]]
    #: table -> every table whose writes can change its rows: itself, and the
    #: tables whose deletes cascade into it or whose triggers write it.
    depends: Mapping[str, frozenset[str]]

    def dependencies(self, tables: Iterable[str]) -> tuple[str, ...]:
        """The tables whose writes may change a result read from ``tables``."""
        out: set[str] = set()
        for t in tables:
            for base in self.views.get(t, frozenset({t})):
                out |= self.depends.get(base, frozenset({base}))
        return tuple(sorted(out))


def dependency_map(tables: Iterable[str], affects: Mapping[str, set[str]]
                   ) -> dict[str, frozenset[str]]:
    """Invert "a write to T also writes U" (foreign-key actions, triggers) into
    "U depends on T", transitively. A trigger that writes tables it does not
    name (``"*"``) makes its table a dependency of every table."""
    names = set(tables)
    closure: dict[str, set[str]] = {}
    for start in names | set(affects):
        seen: set[str] = set()
        todo = [start]
        while todo:
            t = todo.pop()
            for u in affects.get(t, ()):
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        closure[start] = seen
    depends: dict[str, set[str]] = {t: {t} for t in names}
    for writer, reached in closure.items():
        targets = names if ALL_TABLES in reached else reached
        for t in targets:
            depends.setdefault(t, {t}).add(writer)
    return {t: frozenset(d) for t, d in depends.items()}


@dataclass(frozen=True)
class IndexInfo:
    """One index as the catalog (and, on PostgreSQL, the statistics views) tell it."""

    name: str
    table: str
    #: Key columns; an expression key as its SQL text.
    columns: tuple[str, ...]
    unique: bool
    #: Backs a PRIMARY KEY or UNIQUE constraint (or is SQLite's automatic one).
    constraint: bool
    partial: bool
    #: The CREATE INDEX statement (None for SQLite's automatic indexes).
    definition: str | None
    size_bytes: int | None = None
    #: PostgreSQL's counters since the last statistics reset; None on SQLite.
    scans: int | None = None
    tuples_read: int | None = None
    tuples_fetched: int | None = None
    #: Rows in the table (an estimate: reltuples, or sqlite_stat1, or a count).
    table_rows: int | None = None
    #: SQLite's sqlite_stat1 row for the index ("N a1 a2 ..."), when ANALYZE ran.
    stat: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
