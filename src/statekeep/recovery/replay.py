"""Replaying the audit log: the state of the store at any audit position.

Every mutation writes its audit row in its own transaction, with the entity's
full row image (``new_value``, the record's ``to_dict()``) -- so the audit
log is a change log, and the state at audit position N is the state of an
image taken at position B <= N with the rows B < id <= N applied in id order.

:class:`StateModel` holds that state in memory as portable rows (the form of
:mod:`statekeep.store.rows`), keyed by primary key, and applies audit events
to it with the same cascades the store's own deletes have (a session takes
its tasks, context, relations and content links; decisions outlive both
their session and their task with the links cleared; an item takes its
relations and its content link). Recovery then compares the model with the
live rows and writes only the difference.

What replay reproduces, and what it cannot:

* Exactly: sessions, tasks, context items, relations (``replace`` rows carry
  the ids deleted and the edges inserted), content links (with the blob's
  bytes recorded on a content's first link), decisions, preferences,
  synchronised keys and conflicts, and recovery's own ``recover`` rows.
* Access statistics (``context.access_count``/``last_accessed``) are batched
  bookkeeping without audit rows: a replayed item has the values of its last
  audited write or of the base image, whichever is later.
* Long-term memory entries whose audit row does not carry the value (the
  memory tier records importance, size and blob only) cannot be rebuilt: the
  key is marked :attr:`StateModel.opaque`, recovery leaves its live row as it
  is rather than guess, and the key is reported in :attr:`StateModel.warnings`.
* ``archive``/``restore`` move a session between the database and a file
  without changing it: replay keeps the rows where they are. ``purge``
  deletes it for good, like ``delete``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from statekeep import codec
from statekeep.errors import RecoveryError, SnapshotCorruptError
from statekeep.models import AuditEvent
from statekeep.store import rows
from statekeep.store.audit import AUDIT_COLS
from statekeep.store.base import Connection
from statekeep.store.protocol import Store
from statekeep.store.rows import (
    BLOBS,
    CONTENT,
    CONTEXT,
    DECISIONS,
    IMAGE_TABLES,
    MEMORY,
    PREFERENCES,
    RELATIONS,
    SESSIONS,
    SYNC_CONFLICTS,
    SYNC_STATE,
    TASKS,
    Table,
)

__all__ = ["REPLAY_PAGE", "StateModel", "audit_events"]

#: Audit rows read per query while replaying.
REPLAY_PAGE = 2000
#: Tables the model keeps rows of. Blobs are derived (from the links and memory
#: rows that use them); sync_seen is a component's read bookkeeping, not state.
MODEL_TABLES: tuple[Table, ...] = tuple(
    t for t in IMAGE_TABLES if t.name not in ("content_blobs", "sync_seen"))
#: Session-bound tables, children before parents (the order a cascade deletes in).
_SESSION_CHILDREN = (CONTENT, RELATIONS, CONTEXT, TASKS)
#: Events that change nothing a replay keeps (the archive moves a session to a
#: file and back unchanged; a sync conflict kept the stored value).
_NO_OPS = frozenset({("session", "archive"), ("session", "restore"),
                     ("sync_resolution", "keep"), ("store", "recover"),
                     # a backup restore or repair: its result is in the rows
                     # it wrote, and is rebuilt by the next snapshot or recovery
                     ("store", "restore"), ("store", "repair"),
                     # garbage collection: an orphaned blob (the model derives
                     # blobs from the rows that use them; an orphan has none) and
                     # a superseded snapshot (images are not state)
                     ("blob", "delete"), ("snapshot", "delete")})


def audit_events(store: Store, conn: Connection, *, after: int, upto: int | None,
                 sessions: frozenset[str] | None = None,
                 page: int = REPLAY_PAGE) -> Iterator[AuditEvent]:
    """Audit rows with ``after < id <= upto`` (no upper bound for None) in id order,
    of ``sessions`` only when given; read a page at a time."""
    last = after
    marks = ""
    extra: list[Any] = []
    if sessions is not None:
        if not sessions:
            return
        marks = f" AND session_id IN ({', '.join('?' * len(sessions))})"
        extra = sorted(sessions)
    while True:
        sql = f"SELECT {AUDIT_COLS} FROM audit_log WHERE id > ?"
        params: list[Any] = [last]
        if upto is not None:
            sql += " AND id <= ?"
            params.append(upto)
        sql += f"{marks} ORDER BY id LIMIT ?"
        batch = conn.execute(sql, [*params, *extra, page]).fetchall()
        for row in batch:
            yield store.audit_event_row(row)
        if len(batch) < page:
            return
        last = int(batch[-1][0])


class StateModel:
    """The store's state as portable rows, advanced one audit event at a time."""

    def __init__(self, *, dedup_min_bytes: int = 16 * 1024) -> None:
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {t.name: {} for t in MODEL_TABLES}
        #: Blob rows whose bytes are known (from images and audit records), by hash.
        self.blobs: dict[str, dict[str, Any]] = {}
        #: Row keys of the session-bound tables, by session (None: no session).
        self._by_session: dict[str, dict[Any, set[Any]]] = {
            t.name: {} for t in MODEL_TABLES if t.session_col is not None}
        self.dedup_min_bytes = dedup_min_bytes
        self.events = 0
        self.warnings: list[str] = []
        #: Rows whose state at the target is unknown (table, key): recovery leaves
        #: them as they are rather than guess.
        self.opaque: set[tuple[str, Any]] = set()

    # -- rows -----------------------------------------------------------------

    def rows(self, t: Table) -> dict[Any, dict[str, Any]]:
        return self.tables[t.name]

    def session_keys(self, t: Table, session_id: str | None) -> set[Any]:
        """Keys of ``t``'s rows that belong to ``session_id`` (a copy)."""
        return set(self._by_session[t.name].get(session_id, ()))

    def put(self, t: Table, row: dict[str, Any]) -> None:
        key = rows.row_key(t, row)
        table = self.tables[t.name]
        index = self._by_session.get(t.name)
        if index is not None:
            old = table.get(key)
            if old is not None:
                index.get(old[t.session_col or ""], set()).discard(key)
            index.setdefault(row[t.session_col or ""], set()).add(key)
        table[key] = row

    def drop(self, t: Table, key: Any) -> dict[str, Any] | None:
        old = self.tables[t.name].pop(key, None)
        index = self._by_session.get(t.name)
        if old is not None and index is not None:
            index.get(old[t.session_col or ""], set()).discard(key)
        return old

    def load_image(self, doc: dict[str, Any]) -> None:
        """Start from a snapshot image (see :mod:`statekeep.recovery.snapshots`)."""
        tables = doc.get("tables")
        if not isinstance(tables, dict):
            raise SnapshotCorruptError("snapshot image has no tables")
        for t in MODEL_TABLES:
            for row in tables.get(t.name, []):
                if not isinstance(row, dict) or any(c not in row for c in t.pk):
                    raise SnapshotCorruptError(f"snapshot image has a malformed {t.name} row")
                self.put(t, {c: row.get(c) for c in t.cols})
        for row in tables.get(BLOBS.name, []):
            if not isinstance(row, dict) or not isinstance(row.get("hash"), str):
                raise SnapshotCorruptError("snapshot image has a malformed content_blobs row")
            self.remember_blob(row)

    def remember_blob(self, row: dict[str, Any]) -> None:
        """Keep a blob's bytes for the links that will need them (latest record wins:
        a blob deleted and stored again is dated by its newer row)."""
        self.blobs[str(row["hash"])] = {c: row.get(c) for c in BLOBS.cols if c != "ref_count"}

    # -- events ---------------------------------------------------------------

    def apply(self, ev: AuditEvent) -> None:
        """Advance the model by one audit event (RecoveryError if it cannot be replayed)."""
        self.events += 1
        kind, event = ev.entity_type, ev.event_type
        if (kind, event) in _NO_OPS:
            return
        if event == "recover":
            self._recover_row(ev)
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise self._cannot(ev, "its entity type is unknown to this statekeep")
        handler(self, ev)

    def _cannot(self, ev: AuditEvent, why: str) -> RecoveryError:
        return RecoveryError(f"audit row {ev.id} ({ev.entity_type} {ev.event_type} of"
                             f" {ev.entity_id!r}) cannot be replayed: {why}")

    def _image(self, ev: AuditEvent) -> dict[str, Any]:
        if not isinstance(ev.new_value, dict):
            raise self._cannot(ev, "it carries no row image")
        return ev.new_value

    def _upsert_entity(self, t: Table, ev: AuditEvent) -> None:
        try:
            self.put(t, rows.entity_row(t, self._image(ev)))
        except (KeyError, TypeError, ValueError) as exc:
            raise self._cannot(ev, f"malformed row image ({exc})") from None

    def _entity(self, ev: AuditEvent, t: Table, creates: frozenset[str],
                deletes: frozenset[str] = frozenset({"delete"})) -> None:
        if ev.event_type in creates:
            self._upsert_entity(t, ev)
        elif ev.event_type in deletes:
            self.drop(t, ev.entity_id)
        else:
            raise self._cannot(ev, "unknown event")

    def _session(self, ev: AuditEvent) -> None:
        if ev.event_type in ("create", "update"):
            self._upsert_entity(SESSIONS, ev)
        elif ev.event_type in ("delete", "purge"):
            self.delete_session(ev.entity_id)
        else:
            raise self._cannot(ev, "unknown event")

    def delete_session(self, sid: str) -> None:
        """What ``Store.delete_session`` does: children go, decisions stay unlinked."""
        tasks = self.session_keys(TASKS, sid)
        for key in self.session_keys(DECISIONS, sid):
            self._unlink_decision(key, session=True)
        for dkey in self.session_keys(DECISIONS, None):
            if self.rows(DECISIONS)[dkey]["task_id"] in tasks:
                self._unlink_decision(dkey, session=False)
        for t in _SESSION_CHILDREN:
            for key in self.session_keys(t, sid):
                self.drop(t, key)
        self.drop(SESSIONS, sid)

    def _unlink_decision(self, key: Any, *, session: bool) -> None:
        row = dict(self.rows(DECISIONS)[key])
        row["task_id"] = None
        if session:
            row["session_id"] = None
        self.put(DECISIONS, row)

    def _task(self, ev: AuditEvent) -> None:
        if ev.event_type in ("create", "update", "transition"):
            self._upsert_entity(TASKS, ev)
        elif ev.event_type == "delete":
            task = self.rows(TASKS).get(ev.entity_id)
            sid = None if task is None else task["session_id"]
            for bucket in {sid, None}:
                for key in self.session_keys(DECISIONS, bucket):
                    if self.rows(DECISIONS)[key]["task_id"] == ev.entity_id:
                        self._unlink_decision(key, session=False)
            self.drop(TASKS, ev.entity_id)
        else:
            raise self._cannot(ev, "unknown event")

    def _context(self, ev: AuditEvent) -> None:
        if ev.event_type in ("create", "update"):
            self._upsert_entity(CONTEXT, ev)
        elif ev.event_type == "delete":
            self.delete_item(ev.entity_id)
        else:
            raise self._cannot(ev, "unknown event")

    def delete_item(self, item_id: str) -> None:
        """An item goes with its relations and its content link (ON DELETE CASCADE)."""
        item = self.drop(CONTEXT, item_id)
        self.drop(CONTENT, item_id)
        if item is None:
            return
        for key in self.session_keys(RELATIONS, item["session_id"]):
            rel = self.rows(RELATIONS)[key]
            if item_id in (rel["source_id"], rel["target_id"]):
                self.drop(RELATIONS, key)

    def _relation(self, ev: AuditEvent) -> None:
        if ev.event_type != "replace":
            self._entity(ev, RELATIONS, frozenset({"create", "update"}))
            return
        old, new = ev.old_value, ev.new_value
        if not (isinstance(old, dict) and isinstance(new, dict)
                and isinstance(old.get("deleted"), list)
                and isinstance(new.get("inserted"), list)):
            raise self._cannot(ev, "it was written before replacements recorded their edges")
        for rel_id in old["deleted"]:
            self.drop(RELATIONS, rel_id)
        for entity in new["inserted"]:
            self.put(RELATIONS, rows.entity_row(RELATIONS, entity))

    def _content(self, ev: AuditEvent) -> None:
        if ev.event_type == "attach":
            meta = ev.change_metadata
            if isinstance(meta, dict) and isinstance(meta.get("blob"), dict):
                self.remember_blob(meta["blob"])
            self.put(CONTENT, {c: self._image(ev).get(c) for c in CONTENT.cols})
        elif ev.event_type == "detach":
            self.drop(CONTENT, ev.entity_id)
        else:
            raise self._cannot(ev, "unknown event")

    def _memory(self, ev: AuditEvent) -> None:
        if ev.event_type == "delete":
            self.drop(MEMORY, ev.entity_id)
            self.opaque.discard((MEMORY.name, ev.entity_id))
            return
        if ev.event_type not in ("create", "update"):
            raise self._cannot(ev, "unknown event")
        image = self._image(ev)
        if "value" not in image:
            if (MEMORY.name, ev.entity_id) not in self.opaque:
                self.opaque.add((MEMORY.name, ev.entity_id))
                self.warnings.append(
                    f"memory key {ev.entity_id!r}: its value at the target is not in the"
                    f" audit log (row {ev.id}); it is left as it is")
            return
        raw = codec.dumps_trusted(image["value"])
        packed = codec.compress(raw)
        at = ev.timestamp.isoformat()
        old = self.rows(MEMORY).get(ev.entity_id)
        blob_hash = None
        inline: str | None = base64.b64encode(packed).decode("ascii")
        if len(raw) >= self.dedup_min_bytes:
            blob_hash = codec.checksum(raw)
            if blob_hash not in self.blobs:
                self.remember_blob({"hash": blob_hash, "data": inline, "size_bytes": len(raw),
                                    "stored_bytes": len(packed), "created_at": at})
            inline = None
        self.opaque.discard((MEMORY.name, ev.entity_id))
        self.put(MEMORY, {
            "key": ev.entity_id, "value": inline, "blob_hash": blob_hash,
            "importance": float(image.get("importance", 0.5)), "size_bytes": len(raw),
            "access_count": 0 if old is None else old["access_count"],
            "last_accessed": at if old is None else old["last_accessed"],
            "created_at": at if old is None else old["created_at"], "updated_at": at})

    def _sync(self, ev: AuditEvent) -> None:
        if ev.event_type in ("create", "update"):
            self._upsert_entity(SYNC_STATE, ev)
        elif ev.event_type == "delete" and isinstance(ev.old_value, dict):
            self.drop(SYNC_STATE, (ev.old_value.get("scope"), ev.old_value.get("key")))
        else:
            raise self._cannot(ev, "unknown event")

    def _recover_row(self, ev: AuditEvent) -> None:
        """A row recovery wrote: its portable image, or its removal."""
        meta = ev.change_metadata if isinstance(ev.change_metadata, dict) else {}
        name = meta.get("table")
        t = next((t for t in MODEL_TABLES if t.name == name), None)
        if t is None:
            raise self._cannot(ev, f"unknown table {name!r}")
        if isinstance(meta.get("blob"), dict):
            self.remember_blob(meta["blob"])
        if isinstance(ev.new_value, dict):
            self.put(t, {c: ev.new_value.get(c) for c in t.cols})
        elif isinstance(ev.old_value, dict):
            self.drop(t, rows.row_key(t, ev.old_value))
        else:
            raise self._cannot(ev, "it carries no row")

    def replay(self, events: Iterator[AuditEvent],
               progress: Callable[[int], None] | None = None) -> int:
        """Apply ``events`` in order; returns how many were applied."""
        n = 0
        for ev in events:
            self.apply(ev)
            n += 1
            if progress is not None and n % 1000 == 0:
                progress(n)
        return n


def _decision(model: StateModel, ev: AuditEvent) -> None:
    model._entity(ev, DECISIONS, frozenset({"create", "update"}))


def _preference(model: StateModel, ev: AuditEvent) -> None:
    model._entity(ev, PREFERENCES, frozenset({"create", "update"}))


def _sync_conflict(model: StateModel, ev: AuditEvent) -> None:
    model._entity(ev, SYNC_CONFLICTS, frozenset({"create", "supersede", "resolve"}))


_HANDLERS: dict[str, Callable[[StateModel, AuditEvent], None]] = {
    "session": StateModel._session,
    "task": StateModel._task,
    "context": StateModel._context,
    "relation": StateModel._relation,
    "content": StateModel._content,
    "decision": _decision,
    "preference": _preference,
    "memory": StateModel._memory,
    "sync": StateModel._sync,
    "sync_conflict": _sync_conflict,
}
