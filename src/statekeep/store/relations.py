"""Relations between context items: a typed, weighted, directed graph per session.

An edge joins two items of one session (``dependency``, ``calls``,
``references``, ``defines``, ``related``) with a strength from 0 to 1. Edges
go with their items and their session (ON DELETE CASCADE), so the graph never
points at something that is gone.

The graph queries run in SQL and read one session's edges only, through the
indexes on ``session_id``, ``source_id`` and ``target_id``: a walk costs what
the session's graph costs, however large the store is, and the graph is never
loaded into Python to be walked there.

Every write is audited (``create``/``update``/``delete`` of a ``relation``;
one ``replace`` row, entity id = the session, for a batch replacement, whose
``old_value`` lists the ids it deleted and ``new_value`` the edges it
inserted, so that replaying the audit log rebuilds the graph exactly) and
announced to change listeners as entity type ``relation``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from statekeep import codec
from statekeep.context.elements import RELATION_STRENGTHS
from statekeep.errors import NotFoundError, ValidationError
from statekeep.ids import new_id, validate_id
from statekeep.store.base import Connection
from statekeep.store.sessions import SessionStore

__all__ = ["MAX_DEPTH", "RELATION_COLS", "Relation", "RelationStore"]

RELATION_COLS = ("id, session_id, source_id, target_id, relation_type, strength, metadata,"
                 " created_at")
#: The deepest walk :meth:`RelationStore.neighbours` takes.
MAX_DEPTH = 10
#: Ids per ``IN (...)`` list: well inside both drivers' parameter limits.
_CHUNK = 500
_MAX_SEEDS = 10_000
_ORDER = "ORDER BY source_id, target_id, relation_type"


@dataclass(frozen=True, slots=True)
class Relation:
    """One edge of a session's context graph (table ``context_relations``)."""

    id: str
    session_id: str
    source_id: str
    target_id: str
    relation_type: str
    strength: float
    metadata: Any
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (audit rows, ``--json`` output)."""
        return {
            "id": self.id, "session_id": self.session_id, "source_id": self.source_id,
            "target_id": self.target_id, "relation_type": self.relation_type,
            "strength": self.strength, "metadata": self.metadata,
            "created_at": self.created_at.isoformat(),
        }


def check_relation_type(value: object, field: str = "relation_type") -> str:
    """One of the known relation types, else ValidationError naming them."""
    if not isinstance(value, str) or value not in RELATION_STRENGTHS:
        raise ValidationError(f"{field} must be one of {', '.join(RELATION_STRENGTHS)},"
                              f" not {str(value)[:40]!r}", field=field)
    return value


def check_strength(value: object, field: str = "strength") -> float:
    """A number from 0 to 1 (not a bool, not NaN)."""
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not 0.0 <= value <= 1.0):  # also false for NaN
        raise ValidationError(f"{field} must be a number from 0 to 1", field=field)
    return float(value)


def _ids(values: object, field: str) -> list[str]:
    """A sequence of ids (not a lone string), validated, duplicates dropped."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValidationError(f"{field} must be a sequence of ids, not "
                              f"{type(values).__name__}", field=field)
    return list(dict.fromkeys(validate_id(v, field) for v in values))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _neighbours_sql(seeds: int) -> str:
    """The walk of :meth:`RelationStore.neighbours` for ``seeds`` seed ids.

    Parameters: session id three times, the seeds, the depth. PostgreSQL lets
    the recursive term name the walk only once, so both directions come from
    one edge list: the session's edges each way, read through the session
    index. UNION (not ALL) drops a (node, hops) pair already reached, which
    bounds the walk by nodes x depth even on a graph with cycles.
    """
    return (
        "WITH RECURSIVE edges (a, b) AS ("
        " SELECT source_id, target_id FROM context_relations WHERE session_id = ?"
        " UNION ALL"
        " SELECT target_id, source_id FROM context_relations WHERE session_id = ?),"
        " walk (id, hops) AS ("
        f" SELECT id, 0 FROM context WHERE session_id = ? AND id IN ({_marks(seeds)})"
        " UNION"
        " SELECT e.b, w.hops + 1 FROM walk w JOIN edges e ON e.a = w.id WHERE w.hops < ?)"
        " SELECT id, MIN(hops) FROM walk GROUP BY id"
    )


#: Per item: edges touching it and their mean strength (parameters: session id twice).
_STATS_SQL = (
    "SELECT id, COUNT(*), AVG(strength) FROM ("
    " SELECT source_id AS id, strength FROM context_relations WHERE session_id = ?"
    " UNION ALL"
    " SELECT target_id AS id, strength FROM context_relations WHERE session_id = ?"
    ") AS ends GROUP BY id"
)


class RelationStore(SessionStore):
    """The ``context_relations`` table: relate, replace, walk, summarise."""

    def relation_row(self, row: Any) -> Relation:
        return Relation(
            id=row[0], session_id=row[1], source_id=row[2], target_id=row[3],
            relation_type=row[4], strength=float(row[5]), metadata=self.json_col(row[6]),
            created_at=self.ts_out(row[7]),
        )

    def relate(self, session_id: str, source_id: str, target_id: str, relation_type: str,
               strength: float | None = None, metadata: Any = None) -> Relation:
        """Create or update the edge (source, target, type) between two items of a session.

        ``strength`` defaults to the type's usual strength
        (:data:`~statekeep.context.elements.RELATION_STRENGTHS`). An existing
        edge keeps its id and creation time and takes the new strength and
        metadata. Both items must exist and belong to ``session_id``.
        """
        validate_id(session_id, "session_id")
        validate_id(source_id, "source_id")
        validate_id(target_id, "target_id")
        rtype = check_relation_type(relation_type)
        value = RELATION_STRENGTHS[rtype] if strength is None else check_strength(strength)
        if source_id == target_id:
            raise ValidationError("an item cannot be related to itself", field="target_id")
        data = (None if metadata is None else
                codec.dumps(metadata, field="metadata", max_bytes=self.config.max_value_bytes))
        meta_p = None if data is None else self.json_in(data)
        meta = None if data is None else codec.loads(data)
        now = self.now()
        with self.atomic() as conn:
            user = self.session_user(conn, session_id)
            self._check_members(conn, session_id, {source_id: "source_id",
                                                   target_id: "target_id"})
            rel_id = new_id("rel")
            while True:
                cur = conn.execute(
                    f"INSERT INTO context_relations ({RELATION_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (source_id, target_id, relation_type) DO NOTHING",
                    (rel_id, session_id, source_id, target_id, rtype, value, meta_p,
                     self.ts(now)))
                if cur.rowcount == 1:
                    old = None
                    rel = Relation(rel_id, session_id, source_id, target_id, rtype, value,
                                   meta, now)
                    break
                row = conn.execute(
                    f"SELECT {RELATION_COLS} FROM context_relations WHERE source_id = ?"
                    f" AND target_id = ? AND relation_type = ?{self.row_lock}",
                    (source_id, target_id, rtype)).fetchone()
                if row is None:  # deleted by another writer in between: insert again
                    continue
                old = self.relation_row(row)
                conn.execute("UPDATE context_relations SET strength = ?, metadata = ?"
                             " WHERE id = ?", (value, meta_p, old.id))
                rel = Relation(old.id, session_id, source_id, target_id, rtype, value, meta,
                               old.created_at)
                break
            self.audit_row(conn, "update" if old else "create", "relation", rel.id,
                           None if old is None else old.to_dict(), rel.to_dict(),
                           user_id=user, session_id=session_id, at=now, notify=False)
            self.changed("upsert", "relation", (rel.id,), session_id)
        return rel

    def _check_members(self, conn: Connection, session_id: str,
                       wanted: dict[str, str]) -> None:
        """Every id of ``wanted`` (id -> field) is an item of ``session_id``."""
        ids = list(wanted)
        found: dict[str, str] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            rows = conn.execute(f"SELECT id, session_id FROM context WHERE id IN"
                                f" ({_marks(len(chunk))})", chunk).fetchall()
            found.update((str(r[0]), str(r[1])) for r in rows)
        for item_id, field in wanted.items():
            owner = found.get(item_id)
            if owner is None:
                raise NotFoundError("context item", item_id)
            if owner != session_id:
                raise ValidationError(f"context item {item_id!r} belongs to another session,"
                                      f" not {session_id!r}", field=field)

    def replace_relations(
        self,
        conn: Connection,
        session_id: str,
        source_ids: Sequence[str],
        relation_types: Sequence[str],
        rows: Sequence[tuple[str, str, str, float, Any]],
    ) -> int:
        """Make ``rows`` the outgoing edges of ``source_ids`` for ``relation_types``.

        Runs in the caller's transaction (a capture writes its items and their
        edges together): the sources' existing edges of those types are
        deleted, then ``rows`` -- (source_id, target_id, relation_type,
        strength, metadata or None) -- inserted in batches. Every row's source
        and type must be among the ones replaced, and both of its ends items
        of the session. One summary audit row records the replacement.
        Returns the number of edges inserted (a repeated row counts once, the
        last one given wins).
        """
        validate_id(session_id, "session_id")
        sources = _ids(source_ids, "source_ids")
        if isinstance(relation_types, str) or not isinstance(relation_types, Sequence):
            raise ValidationError("relation_types must be a sequence of relation types",
                                  field="relation_types")
        types = list(dict.fromkeys(check_relation_type(t, "relation_types")
                                   for t in relation_types))
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
            raise ValidationError("rows must be a sequence of tuples", field="rows")
        source_set, type_set = set(sources), set(types)
        edges: dict[tuple[str, str, str], tuple[float, Any, bytes | None]] = {}
        for i, row in enumerate(rows):
            field = f"rows[{i}]"
            if not isinstance(row, tuple) or len(row) != 5:
                raise ValidationError(f"{field} must be a tuple (source_id, target_id,"
                                      " relation_type, strength, metadata)", field="rows")
            src, dst, rtype, strength, meta = row
            validate_id(src, f"{field}.source_id")
            validate_id(dst, f"{field}.target_id")
            check_relation_type(rtype, f"{field}.relation_type")
            if src not in source_set or rtype not in type_set:
                raise ValidationError(f"{field}: source {src!r} with type {rtype!r} is not"
                                      " among the sources and types replaced", field="rows")
            if src == dst:
                raise ValidationError(f"{field}: an item cannot be related to itself",
                                      field="rows")
            data = (None if meta is None else codec.dumps(
                meta, field=f"{field}.metadata", max_bytes=self.config.max_value_bytes))
            edges[(src, dst, rtype)] = (check_strength(strength, f"{field}.strength"),
                                        None if data is None else self.json_in(data), data)
        if not sources or not types:
            return 0
        user = self.session_user(conn, session_id)
        members = {src: "source_ids" for src in sources}
        for _, dst, _ in edges:
            members.setdefault(dst, "rows")
        self._check_members(conn, session_id, members)
        deleted: list[str] = []
        type_marks = _marks(len(types))
        for start in range(0, len(sources), _CHUNK):
            chunk = sources[start:start + _CHUNK]
            deleted += [str(r[0]) for r in conn.execute(
                "DELETE FROM context_relations WHERE session_id = ?"
                f" AND source_id IN ({_marks(len(chunk))}) AND relation_type IN ({type_marks})"
                " RETURNING id", [session_id, *chunk, *types]).fetchall()]
        now = self.now()
        ts_now = self.ts(now)
        inserts = [(new_id("rel"), session_id, src, dst, rtype, strength, meta, ts_now)
                   for (src, dst, rtype), (strength, meta, _) in edges.items()]
        if inserts:
            conn.executemany(f"INSERT INTO context_relations ({RELATION_COLS})"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", inserts)
        # What replay needs: which edges went, and every column of those that came.
        now_iso = now.isoformat()
        inserted = [
            {"id": row[0], "session_id": session_id, "source_id": src, "target_id": dst,
             "relation_type": rtype, "strength": strength,
             "metadata": None if data is None else orjson.Fragment(data),
             "created_at": now_iso}
            for row, ((src, dst, rtype), (strength, _, data)) in zip(
                inserts, edges.items(), strict=True)]
        self.audit_row(conn, "replace", "relation", session_id, {"deleted": sorted(deleted)},
                       {"inserted": inserted}, user_id=user,
                       session_id=session_id, at=now, notify=False,
                       meta={"sources": len(sources), "relation_types": types,
                             "deleted": len(deleted), "inserted": len(inserts)})
        self.changed("replace", "relation", [r[0] for r in inserts], session_id)
        return len(inserts)

    def unrelate(self, relation_id: str) -> bool:
        """Delete one edge; False if there was none."""
        validate_id(relation_id, "relation_id")
        with self.atomic() as conn:
            row = conn.execute(f"SELECT {RELATION_COLS} FROM context_relations WHERE id = ?"
                               f"{self.row_lock}", (relation_id,)).fetchone()
            if row is None:
                return False
            old = self.relation_row(row)
            conn.execute("DELETE FROM context_relations WHERE id = ?", (relation_id,))
            self.audit_row(conn, "delete", "relation", relation_id, old.to_dict(), None,
                           user_id=self.session_user(conn, old.session_id),
                           session_id=old.session_id, notify=False)
            self.changed("delete", "relation", (relation_id,), old.session_id)
        return True

    def relations(self, session_id: str, *, item_ids: Sequence[str] | None = None,
                  limit: int | None = None) -> list[Relation]:
        """The session's edges, or those touching ``item_ids`` (at either end),
        ordered by (source, target, type)."""
        validate_id(session_id, "session_id")
        sql = f"SELECT {RELATION_COLS} FROM context_relations WHERE session_id = ?"
        params: list[Any] = [session_id]
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 1):
            raise ValidationError("limit must be a positive integer", field="limit")
        if item_ids is not None:
            ids = _ids(item_ids, "item_ids")
            if not ids:
                return []
            if len(ids) > _MAX_SEEDS:
                raise ValidationError(f"at most {_MAX_SEEDS} item_ids", field="item_ids")
            # Two indexed lookups (source, target) rather than the session's whole graph.
            marks = _marks(len(ids))
            sql += f" AND (source_id IN ({marks}) OR target_id IN ({marks}))"
            params += ids + ids
        sql += f" {_ORDER}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.reading() as conn:
            return [self.relation_row(r) for r in conn.execute(sql, params).fetchall()]

    def neighbours(self, session_id: str, item_ids: Sequence[str], depth: int) -> dict[str, int]:
        """Every item within ``depth`` hops of ``item_ids`` along the session's
        edges (either direction), with its fewest hops; the seeds are at 0.

        Seeds that are not items of the session are left out. One recursive
        query over the session's edges only (read through the session index),
        so its cost follows the session's graph, not the store's.
        """
        validate_id(session_id, "session_id")
        seeds = _ids(item_ids, "item_ids")
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= MAX_DEPTH:
            raise ValidationError(f"depth must be an integer from 0 to {MAX_DEPTH}",
                                  field="depth")
        if len(seeds) > _MAX_SEEDS:
            raise ValidationError(f"at most {_MAX_SEEDS} item_ids", field="item_ids")
        if not seeds:
            return {}
        sql = _neighbours_sql(len(seeds))
        params = [session_id, session_id, session_id, *seeds, depth]
        with self.reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def relation_stats(self, session_id: str) -> dict[str, tuple[int, float]]:
        """Per item of the session with edges: (edges touching it, their mean strength)."""
        validate_id(session_id, "session_id")
        with self.reading() as conn:
            rows = conn.execute(_STATS_SQL, (session_id, session_id)).fetchall()
        out: dict[str, tuple[int, float]] = {}
        for r in rows:
            mean = float(r[2])
            out[str(r[0])] = (int(r[1]), mean if math.isfinite(mean) else 0.0)
        return out
