"""Rebuilding a damaged SQLite database: the newest verified backup, overlaid with
every row that can still be read from the damaged file, and an exact account
of what could not be read.

SQLite stops a table scan at the first damaged page with "database disk image
is malformed", although a damaged page usually holds a few dozen rows out of
many thousands. This module reads around the damage:

1. Each table is scanned by rowid. At a damaged page the scan resumes at the
   smallest rowid whose lookup no longer touches it (found by exponential
   probing, then bisection), so everything before and after is read.
2. The table's key set comes from one of its full (non-partial) indexes,
   which live on other pages: every rowid the table holds, and its primary
   key, even for rows on a damaged table page. Rows the scan skipped are then
   read one by one (a point lookup may still reach a readable page inside a
   skipped range), so what remains unread is known row by row, by key.
3. The result starts as the backup (same schema version) -- or, without one,
   as an empty database with the damaged file's own schema -- and takes every
   readable row of the damaged file (the newer state), drops rows the damaged
   file provably no longer has, and keeps the backup's version of a row that
   is unreadable now. The damaged file's audit log then tells whether such a
   row changed after the backup: if not, nothing of it was lost.

Derived data (the full-text index and its queues) is not copied but rebuilt.
Foreign keys are checked at the end and violations reported, never "fixed" by
deleting rows: a row whose parent is lost is still the user's data.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from statekeep.config import StateConfig
from statekeep.store import rows as registry

__all__ = ["SalvageReport", "TableSalvage", "reindex_file", "salvage_sqlite"]

_BATCH: Final = 500
#: Rebuilt from the context table after the copy (see store/search.py).
_DERIVED: Final = frozenset({"context_fts_pending", "context_fts_gone"})
#: FTS3/4/5 and R*Tree shadow tables, for SQLite without ``PRAGMA table_list``.
_SHADOW_SUFFIXES: Final = ("data", "idx", "content", "docsize", "config", "segments",
                           "segdir", "stat", "node", "rowid", "parent")
_MAX_ROWID: Final = (1 << 63) - 1
_MIN_ROWID: Final = -(1 << 63)


@dataclass(slots=True)
class TableSalvage:
    """What happened to one table."""

    name: str
    #: Rows read from the damaged file and written to the result.
    read: int = 0
    #: Of those, rows a scan skipped but a point lookup could still read.
    read_by_key: int = 0
    #: Rows of the backup the damaged file no longer has (deleted since).
    deleted_since_backup: int = 0
    #: Unreadable rows whose backup version was kept: key -> what the audit log says.
    kept_from_backup: dict[str, str] = field(default_factory=dict)
    #: Unreadable rows with no older copy: their keys (or rowid ranges when the
    #: table has no index to name them).
    lost: list[str] = field(default_factory=list)
    #: The key set could not be read: rows of the backup that may have been
    #: deleted since were kept.
    keys_unknown: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.name, "read": self.read, "read_by_key": self.read_by_key,
                "deleted_since_backup": self.deleted_since_backup,
                "kept_from_backup": dict(self.kept_from_backup), "lost": list(self.lost),
                "keys_unknown": self.keys_unknown}


@dataclass(slots=True)
class SalvageReport:
    """The result file and an exact account of what it does and does not hold."""

    output: Path
    base_backup_id: str | None
    base_high_water: int | None
    tables: list[TableSalvage] = field(default_factory=list)
    #: Foreign-key violations left in the result (a parent row was lost).
    orphans: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        """Every row that could not be recovered, ``table: key``."""
        return [f"{t.name}: {key}" for t in self.tables for key in t.lost]

    @property
    def changed_and_kept_old(self) -> list[str]:
        """Unreadable rows whose backup version was kept though the audit log shows
        later changes (those changes are lost)."""
        return [f"{t.name}: {k} ({why})" for t in self.tables
                for k, why in t.kept_from_backup.items() if not why.startswith("unchanged")]

    @property
    def complete(self) -> bool:
        """Nothing committed is missing from the result."""
        return not self.lost and not self.changed_and_kept_old and not any(
            t.keys_unknown for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "base_backup_id": self.base_backup_id,
                "base_high_water": self.base_high_water, "complete": self.complete,
                "lost": self.lost, "changed_and_kept_old": self.changed_and_kept_old,
                "orphans": list(self.orphans), "notes": list(self.notes),
                "tables": [t.to_dict() for t in self.tables if t.read or t.lost
                           or t.kept_from_backup or t.deleted_since_backup]}


def salvage_sqlite(damaged: sqlite3.Connection, output: Path, *,
                   base: Path | None = None, base_backup_id: str | None = None,
                   base_high_water: int | None = None,
                   reindex: Callable[[Path], None] | None = None) -> SalvageReport:
    """Build ``output`` from ``base`` (a verified backup copy of the same schema
    version, or None) and every readable row of ``damaged``.

    ``damaged`` is a connection to the damaged database; the caller decides what
    transaction it reads in (a write lock keeps writers out while it is read).
    ``reindex`` rebuilds derived data in the result (the full-text index); it
    gets the result's path once every row is in.
    """
    report = SalvageReport(output, base_backup_id, base_high_water)
    schema = damaged.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        " ORDER BY rowid").fetchall()
    if output.exists():
        output.unlink()
    if base is not None:
        shutil.copyfile(base, output)
    out = sqlite3.connect(output, isolation_level=None)
    try:
        if base is None:
            _create_schema(damaged, out, schema)
            report.notes.append("no usable backup: started from an empty database with the"
                                " damaged file's schema")
        out.execute("PRAGMA foreign_keys = OFF")
        triggers = [(str(r[0]), str(r[1])) for r in out.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()]
        out.execute("BEGIN")
        for name, _ in triggers:  # reference counts travel as stored, not recounted
            out.execute(f'DROP TRIGGER "{name}"')
        changed = _changed_since(damaged, base_high_water) if base is not None else None
        for name in _copyable(damaged, schema):
            report.tables.append(_salvage_table(damaged, out, name, base is not None, changed))
        for _, sql in triggers:
            out.execute(sql)
        out.execute("COMMIT")
        report.orphans = [f"{r[0]} row {r[1]} refers to missing {r[2]}" for r in
                          out.execute("PRAGMA foreign_key_check").fetchall()]
        out.execute("PRAGMA journal_mode = WAL")  # the live database's mode: installable
    finally:
        out.close()
    if reindex is not None:
        reindex(output)
    return report


def _create_schema(damaged: sqlite3.Connection, out: sqlite3.Connection,
                   schema: list[Any]) -> None:
    """The damaged file's tables, indexes, triggers and views, in creation order."""
    page_size = damaged.execute("PRAGMA page_size").fetchone()[0]
    out.execute(f"PRAGMA page_size = {int(page_size)}")
    user_version = int(damaged.execute("PRAGMA user_version").fetchone()[0])
    out.execute(f"PRAGMA user_version = {user_version}")
    shadows = _shadow_tables(damaged, schema)
    order = {"table": 0, "index": 1, "view": 2, "trigger": 3}
    out.execute("BEGIN")
    for _kind, name, _, sql in sorted(schema, key=lambda r: order.get(str(r[0]), 9)):
        if str(name).startswith("sqlite_") or name in shadows:
            continue
        out.execute(str(sql))
    out.execute("COMMIT")


def _shadow_tables(conn: sqlite3.Connection, schema: Iterable[Any]) -> set[str]:
    """The tables a virtual table keeps its data in (created with it, never by hand)."""
    with contextlib.suppress(sqlite3.DatabaseError):  # PRAGMA table_list: SQLite 3.37+
        return {str(r[1]) for r in conn.execute("PRAGMA table_list") if r[2] == "shadow"}
    virtual = [str(r[1]) for r in schema
               if r[0] == "table" and str(r[3]).upper().startswith("CREATE VIRTUAL")]
    return {f"{v}_{suffix}" for v in virtual for suffix in _SHADOW_SUFFIXES}


def _copyable(conn: sqlite3.Connection, schema: list[Any]) -> list[str]:
    """Tables whose rows are copied: not virtual, not their shadow tables, not derived."""
    shadows = _shadow_tables(conn, schema)
    names = [str(r[1]) for r in schema if r[0] == "table"
             and not str(r[1]).startswith("sqlite_")
             and not str(r[3]).upper().startswith("CREATE VIRTUAL")
             and str(r[1]) not in shadows and str(r[1]) not in _DERIVED]
    return names + ["sqlite_sequence"] * any(
        "AUTOINCREMENT" in str(r[3]).upper() for r in schema)


def _changed_since(damaged: sqlite3.Connection,
                   high_water: int | None) -> set[tuple[str, str]] | None:
    """(entity type, id) of every audit row after the backup's high-water mark, or
    None when the damaged file's audit log cannot be read that far."""
    try:
        rows = damaged.execute("SELECT entity_type, entity_id FROM audit_log WHERE id > ?",
                               (high_water or 0,)).fetchall()
    except sqlite3.DatabaseError:
        return None
    return {(str(r[0]), str(r[1])) for r in rows}


def _columns(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[str], bool]:
    """(all columns, primary-key columns, whether the key is the rowid itself)."""
    info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    cols = [str(r[1]) for r in info]
    keyed = sorted((r for r in info if r[5]), key=lambda r: r[5])
    alias = len(keyed) == 1 and str(keyed[0][2]).upper() == "INTEGER"
    return cols, [str(r[1]) for r in keyed], alias


def _salvage_table(damaged: sqlite3.Connection, out: sqlite3.Connection, table: str,
                   has_base: bool, changed: set[tuple[str, str]] | None) -> TableSalvage:
    """Overlay one table of the result with the damaged file's readable rows.

    Rows are streamed (only their rowids are remembered). ``INSERT OR REPLACE``
    with the damaged file's rowid also displaces a backup row holding the same
    primary key under another rowid, so afterwards every backup row that is
    left over is either an unreadable row (kept) or one deleted since (dropped).
    """
    result = TableSalvage(table)
    if table == "sqlite_sequence":
        _merge_sequences(damaged, out, result)
        return result
    cols, pk, alias = _columns(damaged, table)
    col_sql = ", ".join(f'"{c}"' for c in cols)
    insert = (f'INSERT OR REPLACE INTO "{table}" (rowid, {col_sql})'
              f" VALUES (?, {', '.join('?' * len(cols))})")
    seen: set[int] = set()

    def put(batch: list[tuple[Any, ...]]) -> None:
        out.executemany(insert, batch)
        seen.update(int(r[0]) for r in batch)

    gaps = _scan(damaged, table, col_sql, put)
    keys = _key_set(damaged, table, pk, alias)
    for rowid in sorted(set(keys or ()) - seen):  # skipped by the scan: try each
        with contextlib.suppress(sqlite3.DatabaseError):
            row = damaged.execute(f'SELECT rowid, {col_sql} FROM "{table}" WHERE rowid = ?',
                                  (rowid,)).fetchone()
            if row is not None:
                put([tuple(row)])
                result.read_by_key += 1
    result.read = len(seen)
    unread = {r: keys[r] for r in keys if r not in seen} if keys is not None else {}
    if has_base:
        if keys is None and gaps:
            result.keys_unknown = True  # a leftover backup row may be deleted or unreadable
        else:
            _drop_deleted(out, table, pk, seen, set(unread.values()), set(unread), result)
    entity = _entity(table)
    for rowid, key in sorted(unread.items()):
        label = (f"{', '.join(map(str, key))} (rowid {rowid})" if pk and key is not None
                 else f"rowid {rowid}")
        where = " AND ".join(f'"{c}" = ?' for c in pk) if pk else "rowid = ?"
        held = None if key is None else out.execute(
            f'SELECT 1 FROM "{table}" WHERE {where}', list(key) if pk else [rowid]).fetchone()
        if held is None or key is None:
            result.lost.append(label)
        else:
            result.kept_from_backup[label] = _verdict(entity, key, changed)
    if keys is None:
        result.lost += [f"rowids {lo + 1} to {'the end' if hi is None else hi - 1} (no"
                        " index names them)" for lo, hi in gaps]
    return result


def _drop_deleted(out: sqlite3.Connection, table: str, pk: list[str], seen: set[int],
                  unread_keys: set[Any], unread_rowids: set[int],
                  result: TableSalvage) -> None:
    """Delete the backup rows the damaged file provably no longer has."""
    key_sql = ", ".join(f'"{c}"' for c in pk) if pk else "rowid"
    for rowid, *key in out.execute(f'SELECT rowid, {key_sql} FROM "{table}"').fetchall():
        if rowid in seen or (tuple(key) in unread_keys if pk else rowid in unread_rowids):
            continue
        out.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,))
        result.deleted_since_backup += 1


def _entity(table: str) -> str | None:
    try:
        return registry.table(table).entity or None
    except KeyError:
        return None


def _verdict(entity: str | None, key: tuple[Any, ...],
             changed: set[tuple[str, str]] | None) -> str:
    if entity is None or changed is None or len(key) != 1:
        return "the audit log cannot say whether it changed after the backup"
    if (entity, str(key[0])) in changed:
        return "changed after the backup: those changes are lost"
    return "unchanged since the backup (the audit log has no later event for it)"


def _scan(conn: sqlite3.Connection, table: str, col_sql: str,
          put: Callable[[list[tuple[Any, ...]]], None]) -> list[tuple[int, int | None]]:
    """Hand every row a rowid-ordered scan can read to ``put`` (rowid first); returns
    the rowid ranges it had to skip as (last readable rowid, first readable rowid
    after, None meaning to the end)."""
    gaps: list[tuple[int, int | None]] = []
    start = _MIN_ROWID
    while True:
        try:
            cur = conn.execute(f'SELECT rowid, {col_sql} FROM "{table}" WHERE rowid >= ?'
                               " ORDER BY rowid", (start,))
            while batch := cur.fetchmany(_BATCH):
                put([tuple(r) for r in batch])
                start = int(batch[-1][0]) + 1
            return gaps
        except sqlite3.DatabaseError:
            resume = _next_readable(conn, table, start)
            gaps.append((start - 1, resume))
            if resume is None:
                return gaps
            start = resume


def _readable_from(conn: sqlite3.Connection, table: str, x: int) -> tuple[bool, int | None]:
    """Whether seeking to rowid ``x`` avoids damage, and the first rowid found there."""
    try:
        row = conn.execute(f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid'
                           " LIMIT 1", (x,)).fetchone()
    except sqlite3.DatabaseError:
        return False, None
    return True, None if row is None else int(row[0])


def _next_readable(conn: sqlite3.Connection, table: str, start: int) -> int | None:
    """The first readable rowid after the damage that a seek to ``start`` hits."""
    step = 1
    while True:
        probe = min(start + step, _MAX_ROWID)
        ok, first = _readable_from(conn, table, probe)
        if ok:
            break
        if probe == _MAX_ROWID:
            return None
        step *= 2
    lo, hi = start + step // 2, probe  # seeking to lo fails (or is start), to hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, found = _readable_from(conn, table, mid)
        if ok:
            hi, first = mid, found
        else:
            lo = mid
    return first


def _key_set(conn: sqlite3.Connection, table: str, pk: list[str],
             alias: bool) -> dict[int, tuple[Any, ...] | None] | None:
    """rowid -> primary key of every row, read from a full index (on other pages than
    the table); the key is None where only the rowid could be read. None when no
    index of the table can be read in full."""
    indexes = conn.execute(f'PRAGMA index_list("{table}")').fetchall()
    # The primary-key index first: it names the keys too.
    for _, name, _unique, origin, partial in sorted(indexes, key=lambda r: r[3] != "pk"):
        if partial:
            continue
        with_pk = origin == "pk" and bool(pk)
        select = ", ".join(["rowid", *(f'"{c}"' for c in pk)]) if with_pk else "rowid"
        try:
            rows = conn.execute(f'SELECT {select} FROM "{table}" INDEXED BY "{name}"'
                                ).fetchall()
        except sqlite3.DatabaseError:
            continue
        if with_pk:
            return {int(r[0]): tuple(r[1:]) for r in rows}
        if alias or not pk:
            return {int(r[0]): (int(r[0]),) if alias else () for r in rows}
        return {int(r[0]): _key_of(conn, table, pk, int(r[0])) for r in rows}
    return None


def _key_of(conn: sqlite3.Connection, table: str, pk: list[str],
            rowid: int) -> tuple[Any, ...] | None:
    columns = ", ".join(f'"{c}"' for c in pk)
    try:
        got = conn.execute(f'SELECT {columns} FROM "{table}" WHERE rowid = ?',
                           (rowid,)).fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if got is None else tuple(got)


def _merge_sequences(damaged: sqlite3.Connection, out: sqlite3.Connection,
                     result: TableSalvage) -> None:
    """AUTOINCREMENT counters: the larger of the two, so no id is ever handed out twice."""
    try:
        rows = damaged.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.DatabaseError:
        result.lost.append("the AUTOINCREMENT counters (kept the backup's)")
        return
    for name, seq in rows:
        cur = out.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?",
                          (seq, name))
        if not cur.rowcount:
            out.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
        result.read += 1


def reindex_file(path: Path) -> None:
    """Rebuild the full-text index of a salvaged file with the store's own code."""
    from statekeep.store.sqlite import SQLiteStore

    store = SQLiteStore(StateConfig(db=str(path), auto_migrate=False))
    try:
        store.reindex_search()
    finally:
        store.close()
