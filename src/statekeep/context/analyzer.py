"""``ContextAnalyzer`` -- the seed names it and leaves it empty; this is what a
returning agent asks first: what did I touch most, what has gone stale, which
things belong together, and what changed on disk while I was away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from statekeep.context.files import Drift
from statekeep.errors import ValidationError
from statekeep.ids import validate_id
from statekeep.store.protocol import Store

__all__ = ["Cluster", "ContextAnalyzer", "Touched"]


@dataclass(frozen=True, slots=True)
class Touched:
    """An item and how often it was read (accesses) and changed (updates)."""

    item_id: str
    context_type: str
    context_key: str
    accesses: int
    updates: int

    @property
    def touches(self) -> int:
        return self.accesses + self.updates


@dataclass(frozen=True, slots=True)
class Cluster:
    """Items connected by relations (a connected component of the graph)."""

    keys: tuple[tuple[str, str], ...]

    @property
    def size(self) -> int:
        return len(self.keys)


def _positive(value: object, name: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ValidationError(f"{name} must be a positive number", field=name)


class ContextAnalyzer:
    """Read-only questions about a session's context."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def most_touched(self, session_id: str, n: int = 10, *,
                     context_type: str | None = "file") -> list[Touched]:
        """Items by reads plus changes, most first; changes come from the audit log."""
        validate_id(session_id, "session_id")
        _positive(n, "n")
        st = self.store
        sql = ("SELECT c.id, c.context_type, c.context_key, c.access_count,"
               " (SELECT COUNT(*) FROM audit_log a WHERE a.session_id = c.session_id"
               "  AND a.entity_type = 'context' AND a.entity_id = c.id) AS changes"
               " FROM context c WHERE c.session_id = ?")
        params: list[Any] = [session_id]
        if context_type is not None:
            sql += " AND c.context_type = ?"
            params.append(context_type)
        with st.reading() as conn:
            st.session_user(conn, session_id)
            rows = conn.execute(sql, params).fetchall()
        found = [Touched(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]
        found.sort(key=lambda t: (-t.touches, t.context_type, t.context_key))
        return found[:int(n)]

    def stale(self, session_id: str, *, older_than_hours: float = 48.0) -> list[Touched]:
        """Items neither changed nor read for ``older_than_hours``, oldest first:
        candidates to re-check before trusting them."""
        validate_id(session_id, "session_id")
        _positive(older_than_hours, "older_than_hours")
        st = self.store
        cutoff = st.ts(st.now() - timedelta(hours=older_than_hours))
        with st.reading() as conn:
            st.session_user(conn, session_id)
            rows = conn.execute(
                "SELECT id, context_type, context_key, access_count FROM context"
                " WHERE session_id = ? AND updated_at < ? AND last_accessed < ?"
                " ORDER BY updated_at, context_type, context_key",
                (session_id, cutoff, cutoff)).fetchall()
        return [Touched(r[0], r[1], r[2], int(r[3]), 0) for r in rows]

    def clusters(self, session_id: str, *, min_size: int = 2) -> list[Cluster]:
        """Connected components of the session's relation graph, largest first."""
        validate_id(session_id, "session_id")
        st = self.store
        relations = st.relations(session_id)
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for r in relations:
            a, b = find(r.source_id), find(r.target_id)
            if a != b:
                parent[max(a, b)] = min(a, b)
        groups: dict[str, list[str]] = {}
        for item_id in parent:
            groups.setdefault(find(item_id), []).append(item_id)
        with st.reading() as conn:
            keys = {r[0]: (r[1], r[2]) for r in conn.execute(
                "SELECT id, context_type, context_key FROM context WHERE session_id = ?",
                (session_id,)).fetchall()}
        out = [Cluster(tuple(sorted(keys[i] for i in members if i in keys)))
               for members in groups.values() if len(members) >= min_size]
        out.sort(key=lambda c: (-c.size, c.keys))
        return out

    def drift(self, session_id: str) -> list[Drift]:
        """Captured files compared with the disk now: modified, touched, deleted.

        Needs the workspace root recorded by the capture; a session captured
        from elsewhere (another machine) reports nothing rather than guessing.
        """
        from statekeep.context.files import check_drift
        from statekeep.context.workspace import Workspace

        validate_id(session_id, "session_id")
        st = self.store
        with st.reading() as conn:  # not get_context: looking is not an access
            found_root = conn.execute(
                "SELECT context_value FROM context WHERE session_id = ?"
                " AND context_type = 'workspace' AND context_key = 'root'",
                (session_id,)).fetchone()
            value = None if found_root is None else st.json_out(found_root[0])
            if not isinstance(value, dict) or not Path(str(value.get("root", ""))).is_dir():
                return []
            ws = Workspace(Path(str(value["root"])))
            rows = conn.execute(
                "SELECT context_value FROM context WHERE session_id = ?"
                " AND context_type = 'file' ORDER BY context_key", (session_id,)).fetchall()
        out = []
        for row in rows:
            attrs = st.json_out(row[0])
            if isinstance(attrs, dict) and "sha256" in attrs:
                found = check_drift(ws, attrs)
                if found.state != "unchanged":
                    out.append(found)
        return out
