"""Capture: read sources into elements, then write them, their content and the
session's derived relations in one transaction.

Reading happens before the transaction opens (a directory walk can take
seconds and must not hold the store's write lock); writing is all or nothing,
so an error half way -- a value too large, a session deleted meanwhile --
leaves the store exactly as it was.

An element whose value equals what is stored is not rewritten: re-capturing
an unchanged file must not make it look newer (relevance decays from the last
change) nor fill the audit log with no-op updates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statekeep.context.elements import CaptureResult, ContextElement, Skipped
from statekeep.context.relationships import DERIVED_TYPES, identify_relationships
from statekeep.errors import ValidationError
from statekeep.ids import validate_id, validate_key
from statekeep.store.base import Connection
from statekeep.store.context import ContextInput
from statekeep.store.protocol import Store

__all__ = [
    "CaptureReport",
    "Progress",
    "read_paths",
    "refresh_relations",
    "require_session",
    "write_capture",
]

#: Called as progress(done, total, label) while files are read.
Progress = Callable[[int, int, str], None]

_CHUNK = 400
_RELATED_TYPES = ("code", "file", "task")


@dataclass(slots=True)
class CaptureReport:
    """What one capture did."""

    session_id: str
    source: str
    written: int = 0
    unchanged: int = 0
    relations_added: int = 0
    relations_removed: int = 0
    keys: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "source": self.source,
            "written": self.written,
            "unchanged": self.unchanged,
            "relations_added": self.relations_added,
            "relations_removed": self.relations_removed,
            "items": [list(k) for k in self.keys],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "elapsed_s": round(self.elapsed_s, 4),
        }


def read_paths(root: Path, paths: Sequence[str | Path], *, max_bytes: int, max_files: int,
               progress: Progress | None = None) -> CaptureResult:
    """Walk and read files under the workspace ``root`` (no store involved)."""
    from statekeep.context.code import parse_code
    from statekeep.context.files import read_file
    from statekeep.context.workspace import Workspace, WorkspaceFile

    ws = Workspace(root)
    walked = list(ws.walk(paths, max_files=max_files))
    files = [w for w in walked if isinstance(w, WorkspaceFile)]
    result = CaptureResult(skipped=[w for w in walked if isinstance(w, Skipped)])
    total = len(files)
    for done, wf in enumerate(files, 1):
        got = read_file(wf, max_bytes=max_bytes, parse=parse_code)
        if isinstance(got, Skipped):
            result.skipped.append(got)
        else:
            result.elements.append(got)
        if progress is not None:
            progress(done, total, wf.rel)
    result.elements.append(ContextElement("workspace", "root", {
        "root": str(ws.root), "platform": sys.platform}))
    return result


def _check_elements(elements: Iterable[ContextElement]) -> dict[tuple[str, str], ContextElement]:
    """Last element per (type, key), validated before anything is written."""
    chosen: dict[tuple[str, str], ContextElement] = {}
    for e in elements:
        validate_key(e.identifier, "identifier")
        if not isinstance(e.attributes, dict):
            raise ValidationError(f"attributes of {e.type}:{e.identifier} must be a dict",
                                  field="attributes")
        chosen[(e.type, e.identifier)] = e
    return chosen


def _stored(store: Store, conn: Connection, session_id: str,
            keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, Any]]:
    """(id, value) of the items stored at ``keys``."""
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        marks = ", ".join(["(?, ?)"] * len(chunk))
        params: list[Any] = [p for k in chunk for p in k]
        params.append(session_id)
        rows = conn.execute(
            f"SELECT c.id, c.context_type, c.context_key, c.context_value"
            f" FROM (VALUES {marks}) AS v JOIN context c ON c.session_id = ?"
            " AND c.context_type = v.column1 AND c.context_key = v.column2", params).fetchall()
        for row in rows:
            found[(row[1], row[2])] = (row[0], store.json_out(row[3]))
    return found


def write_capture(store: Store, session_id: str, source: str, result: CaptureResult,
                  *, started: float | None = None) -> CaptureReport:
    """Write a capture's elements, their content and the session's derived
    relations in one transaction."""
    validate_id(session_id, "session_id")
    started = time.perf_counter() if started is None else started
    chosen = _check_elements(result.elements)
    report = CaptureReport(session_id, source, skipped=list(result.skipped),
                           keys=sorted(chosen))
    with store.atomic() as conn:
        store.session_user(conn, session_id)  # NotFoundError before any write
        before = _stored(store, conn, session_id, list(chosen))
        changed = [e for k, e in sorted(chosen.items())
                   if k not in before or before[k][1] != e.attributes]
        report.unchanged = len(chosen) - len(changed)
        if changed:
            store.set_context_many(session_id, [
                ContextInput(e.type, e.identifier, e.attributes) for e in changed])
            ids = {k: v[0] for k, v in _stored(store, conn, session_id, [
                (e.type, e.identifier) for e in changed]).items()}
            for e in changed:
                item_id = ids[(e.type, e.identifier)]
                if e.content is not None:
                    store.attach_content(conn, item_id, session_id, e.content)
                elif e.type == "file":
                    store.detach_content(conn, item_id)  # audited: replay must see it
        report.written = len(changed)
        if any(e.type in _RELATED_TYPES for e in changed):
            report.relations_added, report.relations_removed = refresh_relations(
                store, conn, session_id)
    report.elapsed_s = time.perf_counter() - started
    return report


def refresh_relations(store: Store, conn: Connection, session_id: str) -> tuple[int, int]:
    """Bring the session's derived relations in line with its items.

    Returns (added, removed). Only sources whose outgoing derived edges
    changed are rewritten, so an unchanged graph costs one read.
    """
    rows = conn.execute(
        "SELECT id, context_type, context_key, context_value FROM context"
        " WHERE session_id = ? AND context_type IN (?, ?, ?)",
        (session_id, *_RELATED_TYPES)).fetchall()
    ids = {(r[1], r[2]): r[0] for r in rows}
    elements = [ContextElement(r[1], r[2], store.json_out(r[3])) for r in rows]
    wanted: dict[str, set[tuple[str, str, float]]] = {}
    for rel in identify_relationships(elements):
        src, dst = ids.get(rel.source), ids.get(rel.target)
        if src is not None and dst is not None:
            wanted.setdefault(src, set()).add((dst, rel.type, rel.strength))
    have: dict[str, set[tuple[str, str, float]]] = {}
    for r in store.relations(session_id):
        if r.relation_type in DERIVED_TYPES:
            have.setdefault(r.source_id, set()).add((r.target_id, r.relation_type, r.strength))
    dirty = sorted(s for s in set(wanted) | set(have) if wanted.get(s) != have.get(s))
    if not dirty:
        return 0, 0
    added = sum(len(wanted.get(s, set()) - have.get(s, set())) for s in dirty)
    removed = sum(len(have.get(s, set()) - wanted.get(s, set())) for s in dirty)
    new_rows = [(s, dst, kind, strength, None)
                for s in dirty for dst, kind, strength in sorted(wanted.get(s, ()))]
    store.replace_relations(conn, session_id, dirty, DERIVED_TYPES, new_rows)
    return added, removed


def require_session(store: Store, session_id: str) -> None:
    """A clear NotFoundError before a long read of the disk."""
    validate_id(session_id, "session_id")
    with store.reading() as conn:
        store.session_user(conn, session_id)

