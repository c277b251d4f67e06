"""Snapshots: compressed, checksummed images of one session or of the whole store.

An image is one JSON document (see :func:`capture_image`)::

    {"format": 1, "kind": "store" | "session", "session_id": ..., "audit_id": N,
     "store_id": ..., "taken_at": ISO, "dialect": ..., "snapshot_id": ..., "snapshot_type": ...,
     "archived": [session ids in archive files], "tables": {name: [rows]}}

with rows in the portable form of :mod:`statekeep.store.rows`, stored zstd-
compressed in ``state_snapshots.state_data`` with the sha256 of the JSON
(:mod:`statekeep.recovery.image`). ``audit_id`` is the image's audit position:
every audit row with id <= N is reflected in it and none after, which is what
lets point-in-time recovery start from an image and replay the log from there.
An audit position means something only in the store whose log it counts: an
image imported from another store keeps its rows but not its position (it can
be restored with :meth:`~statekeep.recovery.manager.RecoveryManager.restore_snapshot`,
never used as a replay base).

That guarantee needs care on PostgreSQL, where audit ids are handed out when a
row is inserted, not when its transaction commits: a plain snapshot could see
id 101 committed while id 100 is still in flight, and a replay from 101 would
skip 100 forever. So the image's read transaction imports a snapshot exported
by a short transaction that first took ``LOCK audit_log IN SHARE MODE`` --
which waits for every transaction that already wrote an audit row to finish
and holds new writers off only until the snapshot is exported, not for the
duration of the copy. SQLite has one writer at a time: commit order is id order.

Exported files use the framing of :mod:`statekeep.fileio` with their own magic
(``SKSNAP``), so an archive is never taken for a snapshot; the body is the
stored image itself, byte for byte.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast

import orjson
import platformdirs

from statekeep.errors import NotFoundError, SnapshotCorruptError, ValidationError
from statekeep.fileio import FrameError, Framing, write_atomic
from statekeep.ids import new_id, validate_id
from statekeep.models import Snapshot, SnapshotType
from statekeep.recovery.image import compress_raw, decode_image, encode_image
from statekeep.store import rows
from statekeep.store.base import Connection
from statekeep.store.protocol import Store
from statekeep.store.rows import BLOBS, CONTENT, IMAGE_TABLES, SESSION_TABLES, Table
from statekeep.store.sqlite import sqlite_path

__all__ = [
    "IMAGE_FORMAT",
    "SNAPSHOT_SUFFIX",
    "SnapshotManager",
    "audit_position",
    "capture_image",
    "consistent_read",
    "default_backup_dir",
]

IMAGE_FORMAT: Final = 1
SNAPSHOT_SUFFIX: Final = ".sksnap"
_FRAMING: Final = Framing(b"SKSNAP\x00", 1, frozenset({1}))
_SNAP_COLS = ("id, session_id, snapshot_type, compression_type, checksum, size_bytes,"
              " created_at, audit_id, scope_session_id")
_PG_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


def default_backup_dir(store: Store) -> Path:
    """``config.backup_dir``, else a ``backups`` folder beside a SQLite file, else one
    per store under the user data folder."""
    config = store.config
    if config.backup_dir is not None:
        return Path(config.backup_dir).expanduser()
    if store.dialect == "sqlite":
        path = sqlite_path(config.db)
        if path != ":memory:":
            return Path(path).expanduser().resolve().parent / "backups"
    return Path(platformdirs.user_data_dir("statekeep")) / "backups" / store.store_id


def audit_position(conn: Connection) -> int:
    """The id of the newest audit row this transaction sees (0 when there is none)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0])


@contextmanager
def consistent_read(store: Store) -> Iterator[Connection]:
    """A read transaction in which the newest visible audit row is an exact
    position: every change with a smaller audit id is visible, none with a larger.

    Inside a transaction already open on this thread, that transaction is used.
    """
    if store.dialect != "postgresql" or store._tx.conn is not None:
        if store.dialect == "postgresql":
            with store.reading() as conn:
                conn.execute("LOCK TABLE audit_log IN SHARE MODE")
                yield conn
            return
        with store.snapshot() as conn:
            yield conn
        return
    locker = store._acquire()
    open_tx = False
    try:
        try:
            locker.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            open_tx = True
            locker.execute("LOCK TABLE audit_log IN SHARE MODE")
            snap = str(locker.execute("SELECT pg_export_snapshot()").fetchone()[0])
        except Exception as exc:
            store._reraise(exc)
        if not _PG_SNAPSHOT_ID.fullmatch(snap):
            raise SnapshotCorruptError(f"unexpected snapshot id {snap!r} from PostgreSQL")
        with store.snapshot() as conn:
            # A literal is the only form SET TRANSACTION SNAPSHOT takes; it was checked.
            conn.execute(f"SET TRANSACTION SNAPSHOT '{snap}'")
            locker.execute("ROLLBACK")  # writers may go on: our snapshot is fixed
            open_tx = False
            yield conn
    finally:
        if open_tx:
            with contextlib.suppress(Exception):
                locker.execute("ROLLBACK")
        store._release(locker)


def capture_image(store: Store, conn: Connection, *, session_id: str | None = None,
                  snapshot_id: str = "", snapshot_type: str = "checkpoint") -> dict[str, Any]:
    """The image of the store (or of one session) as ``conn`` sees it.

    ``conn`` must be a :func:`consistent_read` transaction for ``audit_id`` to
    be exact. A one-session image holds the session, its tasks, items,
    relations, content links (with their blobs) and its decisions.
    """
    audit_id = audit_position(conn)
    tables: dict[str, list[dict[str, Any]]] = {}
    if session_id is None:
        for t in IMAGE_TABLES:
            tables[t.name] = rows.select_rows(store, conn, t)
    else:
        for t in SESSION_TABLES:
            if t is BLOBS:
                continue
            tables[t.name] = rows.select_rows(store, conn, t, f"{t.session_col} = ?",
                                              (session_id,))
        if not tables["sessions"]:
            raise NotFoundError("session", session_id)
        tables[BLOBS.name] = rows.select_rows(
            store, conn, BLOBS, f"hash IN (SELECT blob_hash FROM {CONTENT.name}"
            " WHERE session_id = ?)", (session_id,))
    own = conn.execute("SELECT value FROM statekeep_meta WHERE key = 'store_id'").fetchone()
    archived = [str(r[0]) for r in conn.execute(
        "SELECT session_id FROM archive_index ORDER BY session_id").fetchall()]
    return {
        "format": IMAGE_FORMAT, "kind": "store" if session_id is None else "session",
        "session_id": session_id, "audit_id": audit_id,
        "store_id": None if own is None else str(own[0]),
        "taken_at": store.now().isoformat(), "dialect": store.dialect,
        "snapshot_id": snapshot_id, "snapshot_type": snapshot_type,
        "archived": archived, "tables": tables,
    }


def check_image(doc: dict[str, Any], what: str) -> None:
    """Refuse an image whose shape is not one this statekeep wrote (SnapshotCorruptError)."""
    def bad(why: str) -> SnapshotCorruptError:
        return SnapshotCorruptError(f"{what} is not a usable state image: {why}")

    if doc.get("format") != IMAGE_FORMAT:
        raise bad(f"format {doc.get('format')!r} is not {IMAGE_FORMAT}")
    kind = doc.get("kind")
    if kind not in ("store", "session"):
        raise bad(f"kind {kind!r}")
    if kind == "session":
        try:
            validate_id(doc.get("session_id"), "session_id")
        except ValidationError:
            raise bad("its session id is malformed") from None
    audit_id = doc.get("audit_id")
    if not isinstance(audit_id, int) or isinstance(audit_id, bool) or audit_id < 0:
        raise bad("its audit position is missing")
    tables = doc.get("tables")
    if not isinstance(tables, dict):
        raise bad("it has no tables")
    allowed: dict[str, Table] = {t.name: t for t in IMAGE_TABLES}
    for name, table_rows in tables.items():
        t = allowed.get(name)
        if t is None:
            raise bad(f"unknown table {name!r}")
        if not isinstance(table_rows, list):
            raise bad(f"table {name} is not a list of rows")
        for row in table_rows:
            if not isinstance(row, dict) or not set(row) <= set(t.cols) or any(
                    row.get(c) is None for c in t.pk):
                raise bad(f"a {name} row has unknown columns or no key")


def _scope(scope_session_id: Any, session_id: Any) -> str | None:
    """The session an image covers (None: the whole store)."""
    value = scope_session_id if scope_session_id is not None else session_id
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _Stored:
    snapshot: Snapshot
    data: bytes


class SnapshotManager:
    """Create, list, verify, export, import and expire snapshots."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- records ----------------------------------------------------------------

    def _record(self, row: Any) -> Snapshot:
        st = self.store
        return Snapshot(
            id=str(row[0]), session_id=_scope(row[8], row[1]),
            snapshot_type=SnapshotType(row[2]), compression_type=str(row[3] or "zstd"),
            checksum=str(row[4]), size_bytes=int(row[5] or 0), created_at=st.ts_out(row[6]),
            audit_id=None if row[7] is None else int(row[7]))

    def get(self, snapshot_id: str) -> Snapshot:
        """The snapshot's record, or NotFoundError."""
        validate_id(snapshot_id, "snapshot_id")
        row = self.store.query_one(f"SELECT {_SNAP_COLS} FROM state_snapshots WHERE id = ?",
                                   (snapshot_id,))
        if row is None:
            raise NotFoundError("snapshot", snapshot_id)
        return self._record(row)

    def list(self, *, session_id: str | None = None,
             snapshot_type: SnapshotType | str | None = None,
             whole_store: bool | None = None, limit: int = 1000) -> builtins.list[Snapshot]:
        """Snapshots newest first: of one session, of one type, only whole-store ones."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if session_id is not None:
            where.append("COALESCE(scope_session_id, session_id) = ?")
            params.append(validate_id(session_id, "session_id"))
        if snapshot_type is not None:
            where.append("snapshot_type = ?")
            params.append(SnapshotType.parse(snapshot_type).value)
        if whole_store is not None:
            where.append("scope_session_id IS NULL AND session_id IS NULL" if whole_store
                         else "(scope_session_id IS NOT NULL OR session_id IS NOT NULL)")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise ValidationError("limit must be an integer from 1 to 100000", field="limit")
        sql = f"SELECT {_SNAP_COLS} FROM state_snapshots"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self.store.reading() as conn:
            return [self._record(r) for r in conn.execute(sql, [*params, limit]).fetchall()]

    # -- creating ---------------------------------------------------------------

    def create(self, session_id: str | None = None,
               snapshot_type: SnapshotType | str = SnapshotType.CHECKPOINT) -> Snapshot:
        """Image the store (or one session) as of now and keep it.

        The image is read in one consistent transaction and written in a
        second, short one, so a large store's copy never holds the write lock.
        """
        if session_id is not None:
            validate_id(session_id, "session_id")
        kind = SnapshotType.parse(snapshot_type)
        st = self.store
        st.access_log.flush()  # batched access counts belong in the image
        _ = st.store_id  # created on first use: the image names the store it is of
        sid = new_id("snap")
        with consistent_read(st) as conn:
            doc = capture_image(st, conn, session_id=session_id, snapshot_id=sid,
                                snapshot_type=kind.value)
        return self._insert(doc, sid, kind)

    def _insert(self, doc: dict[str, Any], sid: str, kind: SnapshotType,
                encoded: tuple[bytes, str] | None = None) -> Snapshot:
        st = self.store
        data, digest = encode_image(doc) if encoded is None else encoded
        scope = doc.get("session_id")
        # Another store's audit position would point into the wrong log.
        audit_id = int(doc["audit_id"]) if doc.get("store_id") == st.store_id else None
        now = st.now()
        with st.atomic() as conn:
            # The session may have gone meanwhile: the image still covers it.
            owner = None if scope is None else conn.execute(
                "SELECT id FROM sessions WHERE id = ?", (scope,)).fetchone()
            conn.execute(
                "INSERT INTO state_snapshots (id, session_id, snapshot_type, state_data,"
                " compression_type, checksum, size_bytes, created_at, audit_id,"
                " scope_session_id) VALUES (?, ?, ?, ?, 'zstd', ?, ?, ?, ?, ?)",
                (sid, None if owner is None else scope, kind.value, data, digest, len(data),
                 st.ts(now), audit_id, scope))
        return Snapshot(id=sid, session_id=scope, snapshot_type=kind, compression_type="zstd",
                        checksum=digest, size_bytes=len(data), created_at=now,
                        audit_id=audit_id)

    # -- reading ----------------------------------------------------------------

    def _stored(self, snapshot_id: str) -> _Stored:
        validate_id(snapshot_id, "snapshot_id")
        row = self.store.query_one(
            f"SELECT {_SNAP_COLS}, state_data FROM state_snapshots WHERE id = ?",
            (snapshot_id,))
        if row is None:
            raise NotFoundError("snapshot", snapshot_id)
        snap = self._record(row)
        if snap.compression_type != "zstd" or row[9] is None:
            raise SnapshotCorruptError(f"snapshot {snapshot_id} has no zstd image")
        return _Stored(snap, bytes(row[9]))

    def load(self, snapshot_id: str) -> dict[str, Any]:
        """The snapshot's image, verified (SnapshotCorruptError before any use)."""
        stored = self._stored(snapshot_id)
        what = f"snapshot {snapshot_id}"
        if len(stored.data) != stored.snapshot.size_bytes:
            raise SnapshotCorruptError(f"{what} is corrupt: its size is not the recorded one")
        doc = decode_image(stored.data, stored.snapshot.checksum, what=what)
        check_image(doc, what)
        return doc

    def verify(self, snapshot_id: str) -> None:
        """Raise SnapshotCorruptError unless the snapshot's image is intact."""
        self.load(snapshot_id)

    def verify_all(self) -> builtins.list[str]:
        """One sentence per damaged snapshot; empty when all are intact."""
        problems: builtins.list[str] = []
        for snap in self.list(limit=100_000):
            try:
                self.load(snap.id)
            except SnapshotCorruptError as exc:
                problems.append(str(exc))
        return problems

    # -- files ------------------------------------------------------------------

    def export(self, snapshot_id: str, path: Path | str) -> Path:
        """Write the snapshot to ``path`` (atomically); the image is verified first."""
        stored = self._stored(snapshot_id)
        doc = self.load(snapshot_id)
        raw_len = len(orjson.dumps(doc))
        target = Path(path).expanduser()
        if target.is_dir():
            target = target / f"{snapshot_id}{SNAPSHOT_SUFFIX}"
        write_atomic(target, _FRAMING.pack_compressed(raw_len, stored.snapshot.checksum,
                                                      stored.data))
        return target

    def import_file(self, path: Path | str) -> Snapshot:
        """Keep the snapshot a file holds; the file is verified before anything is
        written. Importing the same snapshot twice returns the one already kept."""
        source = Path(path).expanduser()
        try:
            blob = source.read_bytes()
        except OSError as exc:
            raise SnapshotCorruptError(f"snapshot file {source} cannot be read: {exc}") from None
        what = f"snapshot file {source}"
        try:
            _, digest, payload = _FRAMING.unpack(blob)
        except FrameError as exc:
            why = str(exc).replace("not a file of this kind", "not a statekeep snapshot")
            raise SnapshotCorruptError(f"{what} is corrupt: {why}") from None
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise SnapshotCorruptError(f"{what} is corrupt: {exc}") from None
        if not isinstance(doc, dict):
            raise SnapshotCorruptError(f"{what} is corrupt: not a state image")
        check_image(doc, what)
        kind = SnapshotType.parse(doc.get("snapshot_type") or "backup")
        sid = doc.get("snapshot_id")
        if isinstance(sid, str) and sid:
            try:
                existing = self.get(validate_id(sid, "snapshot_id"))
            except (NotFoundError, ValidationError):
                pass
            else:
                if existing.checksum == digest:
                    return existing
                sid = None
        else:
            sid = None
        # The stored image is the file's own JSON, so its checksum stays the file's.
        return self._insert(cast(dict[str, Any], doc), sid or new_id("snap"), kind,
                            (compress_raw(payload), digest))

    # -- retention --------------------------------------------------------------

    def delete(self, snapshot_id: str) -> None:
        """Delete a snapshot; recovery points that used it as their base keep working
        from an older image (or the audit log) and lose only the shortcut."""
        validate_id(snapshot_id, "snapshot_id")
        with self.store.atomic() as conn:
            conn.execute("UPDATE recovery_points SET state_snapshot_id = NULL"
                         " WHERE state_snapshot_id = ?", (snapshot_id,))
            if conn.execute("DELETE FROM state_snapshots WHERE id = ?",
                            (snapshot_id,)).rowcount != 1:
                raise NotFoundError("snapshot", snapshot_id)

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete snapshots older than ``snapshot_retention_days`` that no recovery
        point holds; returns how many went."""
        st = self.store
        at = st.ts_arg(now, "now") or st.now()
        cutoff = at - timedelta(days=st.config.snapshot_retention_days)
        with st.atomic() as conn:
            cur = conn.execute(
                "DELETE FROM state_snapshots WHERE created_at < ? AND id NOT IN"
                " (SELECT state_snapshot_id FROM recovery_points"
                " WHERE state_snapshot_id IS NOT NULL)", (st.ts(cutoff),))
            return max(cur.rowcount, 0)
