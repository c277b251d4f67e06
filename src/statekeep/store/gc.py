"""The garbage collector's SQL: verdicts, pages, batched deletes, compaction.

:mod:`statekeep.gc` decides *what* to collect; this module is the only place
that knows *how* in SQL, so the engine never writes dialect SQL (the project's
rule). Everything here is the shared ``?``-placeholder SQL of both backends,
except where a dialect branch says otherwise.

Rules arrive as typed records (:class:`GcRule`) and become SQL by
:func:`rule_sql` -- their statuses, ages and thresholds always travel as
parameters, never as text -- and :func:`verdict_sql` folds a kind's rules into
one ``CASE`` that gives, per row, the index of the first rule that matches.
So marking a million rows is one ``GROUP BY`` over that ``CASE``, and the
sweep deletes exactly the rows whose ``CASE`` still says "collect" inside the
deleting transaction -- a row changed since it was read is re-judged, never
deleted on a stale verdict.

Each sweep batch is its own short write transaction: at most ``limit`` rows,
``DELETE ... RETURNING`` the rows it really removed, and their audit rows
(``delete`` events of ``context``, ``blob`` or ``snapshot``, each with the old
row) written with one ``executemany`` -- the change log recovery replays. On
PostgreSQL the batch first locks its rows ``FOR UPDATE SKIP LOCKED``, so the
collector never waits behind a writer and no writer waits behind more than
one batch. On SQLite the same batch also brings the full-text index up to
date, so that deleting a million items never leaves a million-row catch-up
for the next search to do under the write lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, cast

from statekeep import codec
from statekeep.errors import StoreError
from statekeep.store.base import AUDIT_INSERT, Connection
from statekeep.store.context import CONTEXT_COLS, _item_json
from statekeep.store.protocol import Store
from statekeep.store.search import _body as _fts_body

__all__ = [
    "KINDS",
    "NO_MATCH",
    "REFERENCED",
    "Candidate",
    "Deleted",
    "GcKind",
    "GcQueries",
    "GcRule",
    "SqliteSpace",
    "pg_row_estimates",
    "pg_vacuum",
    "read_meta",
    "rule_sql",
    "sqlite_full_vacuum",
    "sqlite_incremental_vacuum",
    "sqlite_space",
    "verdict_sql",
    "write_meta",
]

#: The verdict of a row no rule matched.
NO_MATCH: Final = -1
#: The verdict of a session a kept decision points at.
REFERENCED: Final = -2


class GcRule(Protocol):
    """What this module reads of a retention rule (:class:`statekeep.gc.RetentionRule`)."""

    @property
    def statuses(self) -> frozenset[str] | None: ...

    @property
    def max_age_hours(self) -> float | None: ...

    @property
    def min_importance(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class GcKind:
    """How one entity's rows look to the rules: which columns are its age,
    importance and status."""

    entity: str
    table: str
    key: str
    #: The column a rule's ``age<`` reads.
    age_col: str
    #: The column a rule's ``importance>`` reads (None: the entity has none).
    importance_col: str | None = None
    #: The column holding the statuses in ``column_statuses``.
    status_col: str | None = None
    column_statuses: frozenset[str] = frozenset()
    #: Statuses every collectable row of the kind has by definition (an expired
    #: item, an orphaned blob): a rule naming one matches without a column.
    static_statuses: frozenset[str] = frozenset()


KINDS: Final[dict[str, GcKind]] = {k.entity: k for k in (
    GcKind("context", "context", "id", "updated_at", importance_col="relevance_score",
           static_statuses=frozenset({"expired"})),
    GcKind("blob", "content_blobs", "hash", "created_at",
           static_statuses=frozenset({"orphaned"})),
    GcKind("snapshot", "state_snapshots", "id", "created_at", status_col="snapshot_type",
           column_statuses=frozenset({"checkpoint", "backup", "recovery"})),
    GcKind("session", "sessions", "id", "updated_at", status_col="status",
           column_statuses=frozenset({"active", "paused", "completed", "failed"})),
    GcKind("decision", "decisions", "id", "created_at"),
)}

Sql = tuple[str, list[Any]]


def rule_sql(store: Store, kind: GcKind, rule: GcRule, now: datetime,
             alias: str = "x") -> Sql | None:
    """The condition under which ``rule`` matches a collectable row of ``kind``,
    or None when it never can (a status those rows never have, an importance
    the entity lacks)."""
    parts: list[str] = []
    params: list[Any] = []
    if rule.statuses is not None and rule.statuses.isdisjoint(kind.static_statuses):
        values = sorted(rule.statuses & kind.column_statuses)
        if not values or kind.status_col is None:
            return None
        parts.append(f"{alias}.{kind.status_col} IN ({', '.join('?' * len(values))})")
        params += values
    if rule.max_age_hours is not None:
        parts.append(f"{alias}.{kind.age_col} > ?")
        params.append(store.ts(now - timedelta(hours=rule.max_age_hours)))
    if rule.min_importance is not None:
        if kind.importance_col is None:
            return None
        parts.append(f"{alias}.{kind.importance_col} > ?")
        params.append(rule.min_importance)
    return (" AND ".join(parts) or "1 = 1"), params


def verdict_sql(store: Store, kind: GcKind, rules: Sequence[GcRule], now: datetime, *,
                alias: str = "x", referenced: Sql | None = None) -> Sql:
    """``CASE`` giving each row the index in ``rules`` of the first rule it matches,
    :data:`REFERENCED` where ``referenced`` holds (tried first), else :data:`NO_MATCH`."""
    branches: list[str] = []
    params: list[Any] = []
    if referenced is not None:
        branches.append(f"WHEN {referenced[0]} THEN {REFERENCED}")
        params += referenced[1]
    for i, rule in enumerate(rules):
        cond = rule_sql(store, kind, rule, now, alias)
        if cond is not None:
            branches.append(f"WHEN {cond[0]} THEN {i}")
            params += cond[1]
    if not branches:
        return str(NO_MATCH), []
    return f"(CASE {' '.join(branches)} ELSE {NO_MATCH} END)", params


@dataclass(frozen=True, slots=True)
class Candidate:
    """One collectable row as a page lists it, with its verdict."""

    kind: str
    id: str
    verdict: int
    session_id: str | None = None
    #: A label people recognise: (context type, key) of an item, a snapshot's type.
    label: str = ""
    #: The row as read (context items: ``CONTEXT_COLS``), for its audit image.
    row: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Deleted:
    """What one sweep transaction removed."""

    kind: str
    #: Rows deleted (each with its audit row).
    rows: int
    #: Rows the batch was given: fewer are deleted when some changed meanwhile
    #: (re-judged and kept) or are locked by a writer (PostgreSQL: left for the next run).
    offered: int
    #: Payload bytes of the deleted rows (values, blob and image bytes).
    bytes: int
    #: Seconds the write transaction was open, from BEGIN to COMMIT returning.
    seconds: float


_ELIGIBLE: Final[dict[str, str]] = {
    "context": "x.expires_at IS NOT NULL AND x.expires_at <= ?",
    "blob": ("x.ref_count = 0"
             " AND NOT EXISTS (SELECT 1 FROM context_content cc WHERE cc.blob_hash = x.hash)"
             " AND NOT EXISTS (SELECT 1 FROM memory_entries m WHERE m.blob_hash = x.hash)"),
    # Past the retention, held by no recovery point, and superseded: a newer
    # image of the same scope (one session, or the whole store) exists.
    "snapshot": (
        "x.created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM recovery_points rp WHERE rp.state_snapshot_id = x.id)"
        " AND EXISTS (SELECT 1 FROM state_snapshots n WHERE"
        " (n.created_at > x.created_at OR (n.created_at = x.created_at AND n.id > x.id))"
        " AND (COALESCE(n.scope_session_id, n.session_id)"
        " = COALESCE(x.scope_session_id, x.session_id)"
        " OR (COALESCE(n.scope_session_id, n.session_id) IS NULL"
        " AND COALESCE(x.scope_session_id, x.session_id) IS NULL)))"),
}
_CTX_COLS = ", ".join(f"x.{c.strip()}" for c in CONTEXT_COLS.split(","))
_SNAP_RETURNING = ("id, COALESCE(scope_session_id, session_id), snapshot_type, checksum,"
                   " size_bytes, created_at, audit_id")
_BLOB_RETURNING = "hash, size_bytes, stored_bytes, created_at"
#: Ids per statement when judging a list of sessions.
_CHUNK: Final = 500


class GcQueries:
    """The SQL of one collection run: rules compiled once, against one instant ``now``."""

    def __init__(self, store: Store, rules: dict[str, Sequence[GcRule]], now: datetime, *,
                 snapshot_cutoff: datetime, run_id: str) -> None:
        self.store = store
        self.now = now
        self.run_id = run_id
        self._rules = rules
        ts_now = store.ts(now)
        self._eligible: dict[str, Sql] = {
            "context": (_ELIGIBLE["context"], [ts_now]),
            "blob": (_ELIGIBLE["blob"], []),
            "snapshot": (_ELIGIBLE["snapshot"], [store.ts(snapshot_cutoff)]),
        }
        self.verdicts: dict[str, Sql] = {
            kind: verdict_sql(store, KINDS[kind], rules.get(kind, ()), now)
            for kind in ("context", "blob", "snapshot")}
        self.verdicts["session"] = verdict_sql(
            store, KINDS["session"], rules.get("session", ()), now,
            referenced=self._held_by_decisions(rules.get("decision", ())))
        self._users: dict[str, str | None] = {}

    def _held_by_decisions(self, rules: Sequence[GcRule]) -> Sql | None:
        """Sessions a kept decision points at, directly or through its task.

        Decision rules only keep, so "kept" is any of them matching. Uncorrelated
        ``IN`` subqueries: each is evaluated once (decisions have no index by
        session), not once per session.
        """
        conds = [c for r in rules
                 if (c := rule_sql(self.store, KINDS["decision"], r, self.now, "d")) is not None]
        if not conds:
            return None
        keep = " OR ".join(f"({c[0]})" for c in conds)
        params = [p for c in conds for p in c[1]]
        return (f"(x.id IN (SELECT d.session_id FROM decisions d WHERE d.session_id IS NOT NULL"
                f" AND ({keep})) OR x.id IN (SELECT t.session_id FROM tasks t WHERE t.id IN"
                f" (SELECT d.task_id FROM decisions d WHERE d.task_id IS NOT NULL"
                f" AND ({keep}))))", params + params)

    # -- marking ----------------------------------------------------------------

    def count(self, kind: str) -> dict[int, int]:
        """How many collectable rows of ``kind`` get each verdict: one aggregate read."""
        v_sql, v_params = self.verdicts[kind]
        e_sql, e_params = self._eligible[kind]
        table = KINDS[kind].table
        with self.store.reading() as conn:
            rows = conn.execute(
                f"SELECT v, COUNT(*) FROM (SELECT {v_sql} AS v FROM {table} x WHERE {e_sql}) q"
                " GROUP BY v", [*v_params, *e_params]).fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    def count_upto(self, kind: str, limit: int, collect: Sequence[int]) -> int:
        """Rows of ``kind`` the rules would collect, counted up to ``limit``: the
        cheap look :meth:`GarbageCollector.should_collect` takes."""
        if limit <= 0:
            return 0
        v_sql, v_params = self.verdicts[kind]
        e_sql, e_params = self._eligible[kind]
        row = self.store.query_one(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {KINDS[kind].table} x WHERE {e_sql}"
            f" AND {v_sql} IN ({', '.join('?' * len(collect))}) LIMIT ?) q",
            [*e_params, *v_params, *collect, limit])
        return int(row[0])

    def session_verdicts(self, session_ids: Sequence[str]) -> dict[str, int]:
        """The verdict of each of these sessions (archive candidates)."""
        v_sql, v_params = self.verdicts["session"]
        out: dict[str, int] = {}
        ids = list(session_ids)
        with self.store.reading() as conn:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i:i + _CHUNK]
                rows = conn.execute(
                    f"SELECT x.id, {v_sql} FROM sessions x"
                    f" WHERE x.id IN ({', '.join('?' * len(chunk))})",
                    [*v_params, *chunk]).fetchall()
                out.update((str(r[0]), int(r[1])) for r in rows)
        return out

    # -- pages ------------------------------------------------------------------

    def context_page(self, cursor: tuple[Any, Any] | None,
                     limit: int) -> tuple[list[Candidate], tuple[Any, Any] | None]:
        """The next ``limit`` expired items after ``cursor``, in expiry order, with
        their verdicts; and the cursor after them (None when there are no more).

        A read, outside any write transaction. Paging by a cursor, not by
        "the first N still there", matters: items the rules keep stay in the
        expired range, and would otherwise be read again by every batch.
        SQLite pages by (expires_at, rowid), the order of its expiry index, in
        two index seeks; PostgreSQL by (expires_at, id).
        """
        st = self.store
        v_sql, v_params = self.verdicts["context"]
        cols = f"{_CTX_COLS}, {v_sql}, x.expires_at"
        ts_now = st.ts(self.now)
        rows: list[Any] = []
        with st.reading() as conn:
            if st.dialect == "sqlite":
                cols += ", x.rowid"
                if cursor is not None:  # the rest of the cursor's own expiry instant
                    rows = conn.execute(
                        f"SELECT {cols} FROM context x WHERE x.expires_at IS NOT NULL"
                        " AND x.expires_at = ? AND x.rowid > ? ORDER BY x.rowid LIMIT ?",
                        [*v_params, cursor[0], cursor[1], limit]).fetchall()
                if len(rows) < limit:
                    after = "" if cursor is None else " AND x.expires_at > ?"
                    rows += conn.execute(
                        f"SELECT {cols} FROM context x WHERE x.expires_at IS NOT NULL"
                        f" AND x.expires_at <= ?{after} ORDER BY x.expires_at, x.rowid LIMIT ?",
                        [*v_params, ts_now, *(() if cursor is None else (cursor[0],)),
                         limit - len(rows)]).fetchall()
            else:
                cols += ", x.id"
                after = "" if cursor is None else " AND (x.expires_at, x.id) > (?, ?)"
                rows = conn.execute(
                    f"SELECT {cols} FROM context x WHERE x.expires_at IS NOT NULL"
                    f" AND x.expires_at <= ?{after} ORDER BY x.expires_at, x.id LIMIT ?",
                    [*v_params, ts_now, *(() if cursor is None else cursor), limit]).fetchall()
        page = [Candidate("context", str(r[0]), int(r[11]), str(r[1]), f"{r[2]}/{r[3]}",
                          tuple(r[:11])) for r in rows]
        nxt = (rows[-1][12], rows[-1][13]) if len(rows) == limit else None
        return page, nxt

    def key_page(self, kind: str, after: str | None,
                 limit: int) -> tuple[list[Candidate], str | None]:
        """The next ``limit`` collectable blobs or snapshots after key ``after``."""
        v_sql, v_params = self.verdicts[kind]
        e_sql, e_params = self._eligible[kind]
        key = KINDS[kind].key
        extra = ", COALESCE(x.scope_session_id, x.session_id), x.snapshot_type" \
            if kind == "snapshot" else ", NULL, NULL"
        where = e_sql + ("" if after is None else f" AND x.{key} > ?")
        with self.store.reading() as conn:
            rows = conn.execute(
                f"SELECT x.{key}, {v_sql}{extra} FROM {KINDS[kind].table} x WHERE {where}"
                f" ORDER BY x.{key} LIMIT ?",
                [*v_params, *e_params, *(() if after is None else (after,)), limit]).fetchall()
        page = [Candidate(kind, str(r[0]), int(r[1]), None if r[2] is None else str(r[2]),
                          "" if r[3] is None else str(r[3])) for r in rows]
        return page, (str(rows[-1][0]) if len(rows) == limit else None)

    # -- sweeping -----------------------------------------------------------------

    def _locked(self, conn: Connection, kind: str, ids: list[str]) -> list[str]:
        """PostgreSQL: the ids this transaction could lock without waiting."""
        if self.store.dialect != "postgresql":
            return ids
        k = KINDS[kind]
        rows = conn.execute(
            f"SELECT {k.key} FROM {k.table} WHERE {k.key} IN ({', '.join('?' * len(ids))})"
            " FOR UPDATE SKIP LOCKED", ids).fetchall()
        return [str(r[0]) for r in rows]

    def _delete(self, conn: Connection, kind: str, ids: list[str], collect: Sequence[int],
                returning: str) -> list[Any]:
        """Delete the rows among ``ids`` that are still collectable with a collecting
        verdict, returning what they were."""
        k = KINDS[kind]
        v_sql, v_params = self.verdicts[kind]
        e_sql, e_params = self._eligible[kind]
        return conn.execute(
            f"DELETE FROM {k.table} AS x WHERE x.{k.key} IN ({', '.join('?' * len(ids))})"
            f" AND {e_sql} AND {v_sql} IN ({', '.join('?' * len(collect))})"
            f" RETURNING {returning}", [*ids, *e_params, *v_params, *collect]).fetchall()

    def _meta(self, rule: str, cache: dict[str, Any]) -> Any:
        meta = cache.get(rule)
        if meta is None:
            meta = cache[rule] = self.store.json_in(
                codec.dumps_trusted({"gc": self.run_id, "rule": rule}))
        return meta

    def _session_users(self, conn: Connection, session_ids: set[str]) -> None:
        missing = sorted(s for s in session_ids if s not in self._users)
        for i in range(0, len(missing), _CHUNK):
            chunk = missing[i:i + _CHUNK]
            found = dict(conn.execute(
                f"SELECT id, user_id FROM sessions WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk).fetchall())
            for sid in chunk:
                user = found.get(sid)
                self._users[sid] = None if user is None else str(user)

    def delete_context(self, picks: dict[str, str], collect: Sequence[int],
                       read: Mapping[str, Sequence[Any]] | None = None) -> Deleted:
        """One sweep transaction over expired items: ``picks`` maps item id to the
        rule that collects it (for the audit row's metadata).

        ``read`` holds the rows as the page read them (``CONTEXT_COLS``): their
        audit images are built *before* the write transaction, which then only
        compares each deleted row with the one read and rebuilds the image of a
        row that changed in between -- the lock is held for SQL, not for JSON.
        """
        st = self.store
        ts_at = st.ts(st.now())
        metas: dict[str, Any] = {}
        isos: dict[Any, str] = {}
        if read:
            with st.reading() as conn:
                self._session_users(conn, {str(r[1]) for r in read.values()
                                           if r[1] is not None})
        built = {item_id: (tuple(row), self._context_audit(row, picks[item_id], metas, isos,
                                                            ts_at))
                 for item_id, row in (read or {}).items() if item_id in picks}
        started = time.perf_counter()
        size = 0
        with st.atomic() as conn:
            ids = self._locked(conn, "context", list(picks))
            returning = CONTEXT_COLS + (", rowid" if st.dialect == "sqlite" else "")
            rows = self._delete(conn, "context", ids, collect, returning) if ids else []
            if rows:
                self._session_users(conn, {str(r[1]) for r in rows if r[1] is not None})
                audits: list[tuple[Any, ...]] = []
                sessions: dict[str | None, tuple[list[str], list[tuple[str, str]]]] = {}
                for r in rows:
                    item_id = str(r[0])
                    row = tuple(r[:11])
                    prior = built.get(item_id)
                    if prior is not None and prior[0] == row:
                        audit, n = prior[1]
                    else:  # written since the page was read
                        audit, n = self._context_audit(row, picks.get(item_id, "unreachable"),
                                                       metas, isos, ts_at)
                    audits.append(audit)
                    size += n
                    group = sessions.setdefault(audit[7], ([], []))
                    group[0].append(item_id)
                    group[1].append((str(r[2]), str(r[3])))
                conn.executemany(AUDIT_INSERT, audits)
                for sid, (item_ids, keys) in sessions.items():
                    st.changed("delete", "context", item_ids, sid, keys)
                if st.dialect == "sqlite":
                    self._unindex(conn, [int(r[11]) for r in rows])
        return Deleted("context", len(rows), len(picks), size, time.perf_counter() - started)

    def _context_audit(self, r: Sequence[Any], rule: str, metas: dict[str, Any],
                       isos: dict[Any, str], ts_at: Any) -> tuple[tuple[Any, ...], int]:
        """The audit row of deleting context row ``r`` (``CONTEXT_COLS``), and the
        size of its value: the image ``delete_context`` of the store writes."""
        st = self.store

        def iso(value: Any) -> str:
            # Bulk-written items share their timestamps: parse each once.
            text = isos.get(value)
            if text is None:
                text = isos[value] = st.ts_out(value).isoformat()
            return text

        data = r[4].encode() if st.dialect == "sqlite" else codec.dumps_trusted(r[4])
        old = _item_json(str(r[0]), r[1], str(r[2]), str(r[3]), data, float(r[5]), int(r[6]),
                         iso(r[7]), None if r[8] is None else iso(r[8]), iso(r[9]),
                         iso(r[10]))
        sid = None if r[1] is None else str(r[1])
        return ("delete", "context", str(r[0]), st.json_in(old), None,
                self._meta(rule, metas), self._users.get(sid or ""), sid, ts_at), len(data)

    def _unindex(self, conn: Connection, rowids: list[int]) -> None:
        """Take these deleted items out of SQLite's full-text index now.

        Their delete trigger queued their indexed terms (see the 0003 migration);
        left queued, a million-item sweep would leave a million-row catch-up for
        the next search to do under the write lock. Only this batch's rows are
        applied, so a batch never pays for a queue other writers built up.
        """
        if not self.store._has_search_queue(conn):
            return
        marks = ", ".join("?" * len(rowids))
        conn.execute(
            "INSERT INTO context_fts (context_fts, rowid, key, body)"
            f" SELECT 'delete', g.item_rowid, g.context_key, {_fts_body('g')}"
            f" FROM context_fts_gone g WHERE g.item_rowid IN ({marks})", rowids)
        conn.execute(f"DELETE FROM context_fts_gone WHERE item_rowid IN ({marks})", rowids)

    def delete_blobs(self, picks: dict[str, str], collect: Sequence[int]) -> Deleted:
        """One sweep transaction over orphaned blobs."""
        st = self.store
        started = time.perf_counter()
        with st.atomic() as conn:
            ids = self._locked(conn, "blob", list(picks))
            rows = self._delete(conn, "blob", ids, collect, _BLOB_RETURNING) if ids else []
            ts_at = st.ts(st.now())
            metas: dict[str, Any] = {}
            audits = [("delete", "blob", str(r[0]), self._audit_json({
                "hash": str(r[0]), "size_bytes": int(r[1]), "stored_bytes": int(r[2]),
                "created_at": st.ts_out(r[3]).isoformat()}), None,
                self._meta(picks.get(str(r[0]), "unreachable"), metas), None, None, ts_at)
                for r in rows]
            if audits:
                conn.executemany(AUDIT_INSERT, audits)
                st.changed("delete", "blob", [str(r[0]) for r in rows], None)
        return Deleted("blob", len(rows), len(picks), sum(int(r[2]) for r in rows),
                       time.perf_counter() - started)

    def delete_snapshots(self, picks: dict[str, str], collect: Sequence[int]) -> Deleted:
        """One sweep transaction over superseded snapshots."""
        st = self.store
        started = time.perf_counter()
        with st.atomic() as conn:
            ids = self._locked(conn, "snapshot", list(picks))
            rows = self._delete(conn, "snapshot", ids, collect, _SNAP_RETURNING) if ids else []
            ts_at = st.ts(st.now())
            metas: dict[str, Any] = {}
            audits = [("delete", "snapshot", str(r[0]), self._audit_json({
                "id": str(r[0]), "session_id": r[1], "snapshot_type": str(r[2]),
                "checksum": str(r[3]), "size_bytes": int(r[4] or 0),
                "created_at": st.ts_out(r[5]).isoformat(),
                "audit_id": None if r[6] is None else int(r[6])}), None,
                self._meta(picks.get(str(r[0]), "unreachable"), metas), None,
                None if r[1] is None else str(r[1]), ts_at) for r in rows]
            if audits:
                conn.executemany(AUDIT_INSERT, audits)
                st.changed("delete", "snapshot", [str(r[0]) for r in rows], None)
        return Deleted("snapshot", len(rows), len(picks), sum(int(r[4] or 0) for r in rows),
                       time.perf_counter() - started)

    def _audit_json(self, value: dict[str, Any]) -> Any:
        return self.store.json_in(codec.dumps_trusted(value))


# -- bookkeeping ----------------------------------------------------------------


def read_meta(store: Store, key: str) -> str | None:
    """A value of ``statekeep_meta`` (None when unset)."""
    row = store.query_one("SELECT value FROM statekeep_meta WHERE key = ?", (key,))
    return None if row is None else str(row[0])


def write_meta(store: Store, key: str, value: str) -> None:
    """Set a value of ``statekeep_meta`` in its own short transaction."""
    with store.atomic() as conn:
        conn.execute("INSERT INTO statekeep_meta (key, value) VALUES (?, ?)"
                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


# -- compaction -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SqliteSpace:
    """How a SQLite file's pages are used."""

    page_size: int
    page_count: int
    freelist_count: int
    #: 0 none (the default), 1 full, 2 incremental.
    auto_vacuum: int

    @property
    def free_bytes(self) -> int:
        return self.freelist_count * self.page_size

    @property
    def file_bytes(self) -> int:
        return self.page_count * self.page_size


def _outside_transaction(store: Store) -> None:
    if store._tx.conn is not None:
        raise StoreError("compaction cannot run inside a transaction")


def sqlite_space(store: Store) -> SqliteSpace:
    """Page size, pages, free pages and the auto_vacuum mode of a SQLite store."""
    with store.reading() as conn:
        values = [int(conn.execute(f"PRAGMA {name}").fetchone()[0])
                  for name in ("page_size", "page_count", "freelist_count", "auto_vacuum")]
    return SqliteSpace(*values)


def sqlite_incremental_vacuum(store: Store, pages: int) -> None:
    """Return up to ``pages`` free pages to the file system in one short write
    transaction (a file in incremental auto-vacuum mode only; elsewhere SQLite
    ignores it).

    Run as a script: the pragma frees one page per step, and ``execute`` takes
    only the first step.
    """
    _outside_transaction(store)
    with store.reading() as conn:
        cast(sqlite3.Connection, conn).executescript(
            f"PRAGMA incremental_vacuum({int(pages)});")


def sqlite_full_vacuum(store: Store) -> None:
    """Rewrite the file without its free pages, switching it to incremental
    auto-vacuum on the way so that later collections can shrink it a few pages
    at a time; then rebuild the search index, whose rowids VACUUM may renumber.

    Writers wait for the whole rewrite (readers go on, in WAL mode): only on request.
    """
    _outside_transaction(store)
    with store.reading() as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
    store.reindex_search()


def pg_row_estimates(store: Store, tables: Sequence[str]) -> dict[str, float]:
    """The planner's row estimate of each table (``pg_class.reltuples``; 0 when unknown)."""
    if not tables:
        return {}
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT c.relname, c.reltuples FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
            f" AND c.relname IN ({', '.join('?' * len(tables))})", list(tables)).fetchall()
    return {str(r[0]): max(float(r[1]), 0.0) for r in rows}


def pg_vacuum(store: Store, table: str) -> None:
    """``VACUUM (ANALYZE)`` one table: its dead rows become reusable space, its
    statistics current. VACUUM refuses to run inside a transaction, so this takes
    a pooled connection in autocommit (the pool's mode) outside any. Plain VACUUM
    does not block readers or writers."""
    _outside_transaction(store)
    if table not in _VACUUMABLE:  # a name from code, never from input; checked anyway
        raise StoreError(f"{table!r} is not a table garbage collection vacuums")
    with store.reading() as conn:
        conn.execute(f"VACUUM (ANALYZE) {table}")


_VACUUMABLE: Final = frozenset({
    "context", "context_relations", "context_content", "content_blobs", "state_snapshots",
    "sessions", "tasks", "audit_log"})
