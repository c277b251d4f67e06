"""State consistency: the rules the schema alone does not enforce.

The database's own checks (``Store.integrity_problems``: SQLite's
integrity_check and foreign_key_check, PostgreSQL's orphan scan and amcheck)
say the files and indexes are sound. These say the *state* is: task trees are
trees within one session, relations join items of their own session, content
links point at blobs whose bytes still match their hash, blob reference counts
equal their references, a decision's task is of the decision's session, and
no session lives both in the database and in an archive file. Recovery runs
them inside its transaction (so a failure rolls the recovery back); the
health monitor runs them on the committed state.

Each check is one query over indexed columns, scoped to some sessions or
blobs when the caller knows what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from statekeep.codec import CorruptDataError
from statekeep.store.base import Connection
from statekeep.store.blobs import verified_blob
from statekeep.store.protocol import Store
from statekeep.store.rows import IMAGE_TABLES, RECOVERY_POINTS, SNAPSHOTS

__all__ = ["consistency_problems"]

#: Problems reported per check at most: enough to act on, never a flood.
_LIMIT = 50
_CHUNK = 500


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join('?' * len(values))})"


def _chunks(values: Iterable[str]) -> list[list[str]]:
    items = sorted(set(values))
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)] or [[]]


def consistency_problems(store: Store, conn: Connection | None = None, *,
                         sessions: Iterable[str] | None = None,
                         blob_hashes: Iterable[str] | None = None) -> list[str]:
    """Consistency problems of the stored state, one sentence each; empty when sound.

    ``sessions`` and ``blob_hashes`` narrow the session-bound and blob checks
    (a recovery passes what it touched); by default everything is checked,
    including every linked blob's bytes against its hash. ``conn`` runs the
    checks inside that transaction (and sees its uncommitted writes).
    """
    if conn is None:
        with store.reading() as own:
            return consistency_problems(store, own, sessions=sessions,
                                        blob_hashes=blob_hashes)
    scope = None if sessions is None else sorted(set(sessions))
    blobs = None if blob_hashes is None else sorted(set(blob_hashes))
    problems: list[str] = []
    groups = [None] if scope is None else _chunks(scope)
    for group in groups:
        if group == []:
            continue
        problems += _orphans(conn, group)
        problems += _task_problems(conn, group)
        problems += _relation_problems(conn, group)
        problems += _content_problems(conn, group)
        problems += _decision_problems(conn, group)
        problems += _archived_problems(conn, group)
    for group in [None] if blobs is None else _chunks(blobs):
        if group == []:
            continue
        problems += _blob_problems(conn, group)
    return problems


def _where(column: str, group: list[str] | None, *, first: bool = True) -> tuple[str, list[Any]]:
    if group is None:
        return "", []
    return (" WHERE " if first else " AND ") + _in(column, group), list(group)


def _orphans(conn: Connection, group: list[str] | None) -> list[str]:
    """Every declared foreign key, checked row by row (PostgreSQL enforces them at
    once; SQLite inside a recovery defers them, and this is where they show)."""
    problems: list[str] = []
    for t in (*IMAGE_TABLES, SNAPSHOTS, RECOVERY_POINTS):
        for col, parent, pcol in t.fks:
            if group is not None and t.session_col is None:
                continue
            sql = (f"SELECT c.{t.pk[0]}, c.{col} FROM {t.name} c WHERE c.{col} IS NOT NULL"
                   f" AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{pcol} = c.{col})")
            extra, params = _where(f"c.{t.session_col}", group, first=False)
            rows = conn.execute(f"{sql}{extra} LIMIT {_LIMIT}", params).fetchall()
            problems += [f"{t.name} {r[0]}: {col} {r[1]!r} refers to a missing {parent} row"
                         for r in rows]
    return problems


def _task_problems(conn: Connection, group: list[str] | None) -> list[str]:
    extra, params = _where("c.session_id", group, first=False)
    problems = [
        f"task {r[0]} (session {r[1]}) has parent {r[2]} of another session ({r[3]})"
        for r in conn.execute(
            "SELECT c.id, c.session_id, p.id, p.session_id FROM tasks c"
            " JOIN tasks p ON p.id = c.parent_task_id"
            f" WHERE p.session_id <> c.session_id{extra} LIMIT {_LIMIT}", params).fetchall()]
    where, params = _where("session_id", group)
    parent = {str(r[0]): None if r[1] is None else str(r[1]) for r in conn.execute(
        f"SELECT id, parent_task_id FROM tasks{where}", params).fetchall()}
    done: set[str] = set()
    for start in parent:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node is not None and node not in done:
            if node in on_path:
                cycle = path[path.index(node):]
                problems.append(f"tasks {' -> '.join([*cycle, node])} form a cycle")
                break
            on_path.add(node)
            path.append(node)
            node = parent.get(node)
        done.update(path)
        if len(problems) >= _LIMIT:
            break
    return problems


def _relation_problems(conn: Connection, group: list[str] | None) -> list[str]:
    extra, params = _where("r.session_id", group, first=False)
    return [
        f"relation {r[0]} of session {r[1]} joins item {r[2]} of session {r[3]}"
        for r in conn.execute(
            "SELECT r.id, r.session_id, c.id, c.session_id FROM context_relations r"
            " JOIN context c ON c.id = r.source_id OR c.id = r.target_id"
            f" WHERE c.session_id <> r.session_id{extra} LIMIT {_LIMIT}", params).fetchall()]


def _content_problems(conn: Connection, group: list[str] | None) -> list[str]:
    extra, params = _where("cc.session_id", group, first=False)
    return [
        f"content link of item {r[0]} says session {r[1]}, the item is of session {r[2]}"
        for r in conn.execute(
            "SELECT cc.context_id, cc.session_id, c.session_id FROM context_content cc"
            " JOIN context c ON c.id = cc.context_id"
            f" WHERE c.session_id <> cc.session_id{extra} LIMIT {_LIMIT}", params).fetchall()]


def _decision_problems(conn: Connection, group: list[str] | None) -> list[str]:
    extra, params = _where("d.session_id", group, first=False)
    return [
        f"decision {r[0]} of session {r[1]} names task {r[2]} of session {r[3]}"
        for r in conn.execute(
            "SELECT d.id, d.session_id, t.id, t.session_id FROM decisions d"
            " JOIN tasks t ON t.id = d.task_id WHERE d.session_id IS NOT NULL"
            f" AND t.session_id <> d.session_id{extra} LIMIT {_LIMIT}", params).fetchall()]


def _archived_problems(conn: Connection, group: list[str] | None) -> list[str]:
    extra, params = _where("s.id", group, first=False)
    return [f"session {r[0]} is both in the store and in an archive file"
            for r in conn.execute(
                "SELECT s.id FROM sessions s JOIN archive_index a ON a.session_id = s.id"
                f" WHERE 1 = 1{extra} LIMIT {_LIMIT}", params).fetchall()]


def _blob_problems(conn: Connection, group: list[str] | None) -> list[str]:
    where, params = _where("b.hash", group)
    problems = [
        f"blob {r[0]} counts {r[1]} references but has {r[2]}"
        for r in conn.execute(
            "SELECT b.hash, b.ref_count,"
            " (SELECT COUNT(*) FROM memory_entries m WHERE m.blob_hash = b.hash)"
            " + (SELECT COUNT(*) FROM context_content c WHERE c.blob_hash = b.hash)"
            f" FROM content_blobs b{where}", params).fetchall()
        if int(r[1]) != int(r[2])][:_LIMIT]
    # Only linked blobs are read back: their bytes are what a content link promises.
    linked = ("SELECT b.hash, b.data FROM content_blobs b WHERE b.hash IN"
              " (SELECT blob_hash FROM context_content)")
    extra, params = _where("b.hash", group, first=False)
    for r in conn.execute(f"{linked}{extra}", params).fetchall():
        try:
            verified_blob(str(r[0]), bytes(r[1]))
        except CorruptDataError as exc:
            problems.append(str(exc))
            if len(problems) >= _LIMIT:
                break
    return problems
