"""The archive tier: finished, long-idle sessions moved out of the database into
zstd-compressed files, and brought back on demand.

A session is archived when it is finished (completed or failed) and nothing of
it -- the session row, its tasks, its context items and their relations --
changed for ``cold_retention_days``. Its rows (session, tasks, context, the relations
between its items, state snapshots, and which decisions and recovery points
pointed at it) become one JSON document with the full content its items link
to (the blobs' bytes: deleting the session drops its references, and a blob
no other row uses is deleted with them), compressed into
``<session_id>.<checksum prefix>.skarc``. The audit log stays
in the database: it is the change log, and it records the move itself
(``archive``, ``restore`` and ``purge`` events).

Nothing committed is ever lost, whatever crashes when:

* The file is written first, atomically (temporary file, fsync, rename, fsync
  of the folder), so a file either is complete or does not exist.
* One transaction then re-reads the session's rows under lock, checks they are
  byte for byte what the file holds (a write that slipped in makes the session
  stay), inserts the index row and deletes the rows. Until that commits the
  database still has everything; after it, the file is durable.
* A file is deleted only once the transaction that made it unneeded committed
  (restore, purge), or once it is known that no committed index row names it
  (a failed archive). A crash in between leaves an unreferenced file, which the
  next :meth:`ArchiveTier.run` removes when the session is back in the
  database and :meth:`ArchiveTier.verify` reports otherwise.
* The file name carries the content's checksum, so two processes archiving
  the same session can never overwrite a committed file with other content.

Reading an archived session is meant to restore it (the façade calls
:meth:`ArchiveTier.restore` when the store says "not found" and
:meth:`ArchiveTier.is_archived` says yes): an archived session is one its user
came back to, so it belongs in the database again, and restoring it is the
only way its tasks and context become queryable.

The file format is portable between backends: timestamps are ISO-8601 UTC
strings, JSON columns their JSON text, binary columns base64. Format 2 added
``context_relations``, ``context_content`` and ``blobs``; a format 1 file
restores with none of them.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import platformdirs

from statekeep import codec
from statekeep.errors import (
    ArchiveCorruptError,
    ArchiveMissingError,
    DuplicateError,
    NotFoundError,
    StatekeepError,
    ValidationError,
)
from statekeep.fileio import FrameError, Framing, write_atomic
from statekeep.ids import validate_id
from statekeep.models import Session
from statekeep.store import rows
from statekeep.store.base import Connection
from statekeep.store.blobs import verified_blob
from statekeep.store.protocol import Store
from statekeep.store.rows import CONTENT, CONTEXT, RELATIONS, SESSIONS, SNAPSHOTS, TASKS
from statekeep.store.sessions import SESSION_COLS
from statekeep.store.sqlite import sqlite_path

__all__ = [
    "ArchiveCandidate",
    "ArchiveReport",
    "ArchiveTier",
    "ArchivedSession",
    "default_archive_dir",
    "read_archive_file",
]

log = logging.getLogger("statekeep.memory")

MAGIC: Final = b"SKARC\x00"
FORMAT_VERSION: Final = 2
#: Formats this version reads: 1 lacks the context engine's tables.
_FRAMING: Final = Framing(MAGIC, FORMAT_VERSION, frozenset({1, 2}))
#: magic, format version, uncompressed length, sha256 of the uncompressed payload.
_HEADER: Final = _FRAMING.header
SUFFIX: Final = ".skarc"
#: A temporary file this old was left by a crashed writer, not one still writing.
_STALE_TMP_SECONDS: Final = 3600.0

_INDEX_COLS = (
    "session_id, user_id, path, checksum, size_bytes, item_counts, last_activity,"
    " archived_at, expires_at"
)
_CHILD_TABLES = (TASKS, CONTEXT, SNAPSHOTS)
#: The context engine's rows (format 2), each with the column it is ordered by.
_LINK_TABLES = ((RELATIONS, "id"), (CONTENT, "context_id"))


@dataclass(frozen=True, slots=True)
class ArchiveCandidate:
    """A finished session idle for longer than the cold retention."""

    session_id: str
    user_id: str
    status: str
    last_activity: datetime


@dataclass(frozen=True, slots=True)
class ArchivedSession:
    """One row of the archive index: where a session's rows now live."""

    session_id: str
    user_id: str
    path: Path
    checksum: str
    size_bytes: int
    item_counts: dict[str, int]
    last_activity: datetime
    archived_at: datetime
    expires_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for ``--json`` output)."""
        return {
            "session_id": self.session_id, "user_id": self.user_id, "path": str(self.path),
            "checksum": self.checksum, "size_bytes": self.size_bytes,
            "item_counts": dict(self.item_counts),
            "last_activity": self.last_activity.isoformat(),
            "archived_at": self.archived_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


@dataclass(slots=True)
class ArchiveReport:
    """What one :meth:`ArchiveTier.run` did, session by session."""

    archived: list[ArchivedSession] = field(default_factory=list)
    #: (session id, why): changed or vanished while being archived; retried next run.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (session id, error): the session stays in the database.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Unreferenced files of earlier crashed runs that were removed.
    swept: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "archived": [a.to_dict() for a in self.archived],
            "skipped": [{"session_id": s, "reason": r} for s, r in self.skipped],
            "failed": [{"session_id": s, "error": e} for s, e in self.failed],
            "swept": self.swept,
        }


class _Changed(Exception):
    """The session changed (or vanished) between writing the file and the transaction."""


def default_archive_dir(store: Store) -> Path:
    """``config.archive_dir``, else a folder beside the SQLite file, else (PostgreSQL,
    in-memory SQLite) one per store under the user data folder."""
    config = store.config
    if config.archive_dir is not None:
        return Path(config.archive_dir).expanduser()
    if store.dialect == "sqlite":
        path = sqlite_path(config.db)
        if path != ":memory:":
            db = Path(path)
            return db.with_name(f"{db.stem}-archive")
    return Path(platformdirs.user_data_dir("statekeep")) / "archive" / store.store_id


class ArchiveTier:
    """Moves finished, idle sessions between the store and archive files."""

    def __init__(
        self,
        store: Store,
        directory: Path,
        *,
        cold_retention_days: float,
        archive_retention_days: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, value in (("cold_retention_days", cold_retention_days),
                            ("archive_retention_days", archive_retention_days)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValidationError(f"{name} must be a non-negative number", field=name)
        self.store = store
        self.directory = Path(directory)
        self.cold_retention = timedelta(days=cold_retention_days)
        self.archive_retention = timedelta(days=archive_retention_days)
        self.clock = clock or store.clock

    @classmethod
    def for_store(cls, store: Store) -> ArchiveTier:
        """The tier configured by the store's own :class:`StateConfig`."""
        config = store.config
        return cls(store, default_archive_dir(store),
                   cold_retention_days=config.cold_retention_days,
                   archive_retention_days=config.archive_retention_days)

    # -- choosing -------------------------------------------------------------

    def candidates(self, now: datetime | None = None) -> builtins.list[ArchiveCandidate]:
        """Finished sessions whose last activity is older than the cold retention.

        Last activity is the latest ``updated_at`` of the session, its tasks and
        its context items, or the creation of one of its context relations; the
        filter runs in one query, on the indexes.
        """
        st = self.store
        cutoff = st.ts(self._now(now) - self.cold_retention)
        sql = (
            "SELECT s.id, s.user_id, s.status, s.updated_at,"
            " (SELECT MAX(t.updated_at) FROM tasks t WHERE t.session_id = s.id),"
            " (SELECT MAX(c.updated_at) FROM context c WHERE c.session_id = s.id),"
            " (SELECT MAX(r.created_at) FROM context_relations r WHERE r.session_id = s.id)"
            " FROM sessions s"
            " WHERE s.status IN ('completed', 'failed') AND s.updated_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.session_id = s.id"
            " AND t.updated_at >= ?)"
            " AND NOT EXISTS (SELECT 1 FROM context c WHERE c.session_id = s.id"
            " AND c.updated_at >= ?)"
            " AND NOT EXISTS (SELECT 1 FROM context_relations r WHERE r.session_id = s.id"
            " AND r.created_at >= ?)"
            " ORDER BY s.updated_at, s.id"
        )
        with st.reading() as conn:
            rows = conn.execute(sql, (cutoff, cutoff, cutoff, cutoff)).fetchall()
        return [
            ArchiveCandidate(str(r[0]), str(r[1]), str(r[2]),
                             max(st.ts_out(v) for v in r[3:7] if v is not None))
            for r in rows
        ]

    # -- archiving ------------------------------------------------------------

    def run(self, now: datetime | None = None,
            progress: Callable[[int, int], None] | None = None) -> ArchiveReport:
        """Archive every candidate; ``progress(done, total)`` after each one.

        Safe to re-run after a crash at any point, and alongside another run.
        """
        at = self._now(now)
        self.store.access_log.flush()  # batched access counts belong in the file
        report = ArchiveReport(swept=self._sweep())
        todo = self.candidates(at)
        for done, cand in enumerate(todo, 1):
            try:
                report.archived.append(self._archive_one(cand, at))
            except _Changed as exc:
                report.skipped.append((cand.session_id, str(exc)))
            except StatekeepError as exc:
                report.failed.append((cand.session_id, str(exc)))
            if progress is not None:
                progress(done, len(todo))
        if report.archived:
            self._index_catch_up()
        return report

    def _index_catch_up(self) -> None:
        """Let SQLite's search index forget the archived rows now, rather than
        keep their terms queued until the next search."""
        try:
            self.store.sync_search()
        except StatekeepError:  # the archive itself committed; the next search retries
            log.warning("search index catch-up after archiving failed", exc_info=True)

    def _archive_one(self, cand: ArchiveCandidate, at: datetime) -> ArchivedSession:
        st = self.store
        sid = cand.session_id
        with st.reading() as conn:
            dumped = self._dump(conn, sid, lock=False)
        if dumped is None:
            raise _Changed("the session was deleted meanwhile")
        payload, _ = dumped
        data = codec.dumps_trusted(payload)
        digest = codec.checksum(data)
        name = f"{sid}.{digest[:16]}{SUFFIX}"
        path = self.directory / name
        if not self._holds(path, digest):
            self._write_atomic(path, _encode_file(data))
        counts = {t.name: len(payload[t.name]) for t in _CHILD_TABLES}
        entry = ArchivedSession(
            session_id=sid, user_id=cand.user_id, path=path, checksum=digest,
            size_bytes=path.stat().st_size, item_counts=counts,
            last_activity=cand.last_activity, archived_at=at,
            expires_at=at + self.archive_retention)
        try:
            with st.atomic() as conn:
                again = self._dump(conn, sid, lock=True)
                if again is None:
                    raise _Changed("the session was deleted meanwhile")
                if codec.dumps_trusted(again[0]) != data:
                    raise _Changed("the session changed while it was being archived")
                self._insert_index(conn, entry)
                self._delete_rows(conn, sid)
                st.audit_row(conn, "archive", "session", sid, again[1].to_dict(), None,
                             user_id=cand.user_id, session_id=sid, at=at, notify=False,
                             meta={"file": name, "checksum": digest, "counts": counts})
                # For caches the rows are gone exactly as after a delete.
                st.changed("delete", "session", (sid,), sid)
        except BaseException:
            self._discard_unreferenced(path)
            raise
        return entry

    def _holds(self, path: Path, digest: str) -> bool:
        """True when ``path`` is already a sound archive of exactly this payload
        (left by a run that crashed before its transaction): it is reused."""
        try:
            read_archive_file(path, digest)
        except (OSError, StatekeepError):
            return False
        return True

    def _write_atomic(self, path: Path, blob: bytes) -> None:
        """Complete file or none (:func:`statekeep.fileio.write_atomic`)."""
        write_atomic(path, blob)

    def _discard_unreferenced(self, path: Path) -> None:
        """After a failed archive: remove the file unless a committed index row names
        it (another process may have archived the same content). When the database
        cannot say, keep the file; the next run's sweep decides."""
        try:
            row = self.store.query_one("SELECT 1 FROM archive_index WHERE path = ?",
                                       (path.name,))
        except Exception:
            return
        if row is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _sweep(self) -> int:
        """Remove what crashed runs left: temporary files, and archive files that no
        index row names whose session is in the database (so they hold nothing the
        database lacks). Other unreferenced files are left for :meth:`verify`."""
        if not self.directory.is_dir():
            return 0
        removed = 0
        now = time.time()
        for tmp in self.directory.glob(f".*{SUFFIX}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()
                    removed += 1
        for name in self._unreferenced_files():
            sid = name.split(".", 1)[0]
            if self.store.query_one("SELECT 1 FROM sessions WHERE id = ?", (sid,)) is not None:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
                    removed += 1
        return removed

    def _unreferenced_files(self) -> builtins.list[str]:
        if not self.directory.is_dir():
            return []
        with self.store.reading() as conn:
            rows = conn.execute("SELECT path FROM archive_index").fetchall()
        known = {str(r[0]) for r in rows}
        return sorted(p.name for p in self.directory.glob(f"*{SUFFIX}")
                      if not p.name.startswith(".") and p.name not in known)

    # -- rows <-> document ------------------------------------------------------

    def _dump(self, conn: Connection, sid: str, *,
              lock: bool) -> tuple[dict[str, Any], Session] | None:
        """The session's rows as a portable, deterministic document, or None.

        With ``lock`` (inside the archiving transaction) the rows are locked
        against concurrent writers on PostgreSQL; FOR UPDATE on the session row
        also blocks new tasks, context and decisions, whose foreign-key checks
        need a key-share lock on it. SQLite's write transaction already excludes
        every other writer.
        """
        st = self.store
        suffix = " FOR UPDATE" if lock and st.dialect == "postgresql" else ""
        row = conn.execute(f"SELECT {SESSION_COLS} FROM sessions WHERE id = ?{suffix}",
                           (sid,)).fetchone()
        if row is None:
            return None
        doc: dict[str, Any] = {"format": FORMAT_VERSION,
                               "session": self._row_out(SESSIONS, row)}
        for table in _CHILD_TABLES:
            rows = conn.execute(
                f"SELECT {', '.join(table.cols)} FROM {table.name}"
                f" WHERE session_id = ? ORDER BY id{suffix}", (sid,)).fetchall()
            doc[table.name] = [self._row_out(table, r) for r in rows]
        for table, order in _LINK_TABLES:
            rows = conn.execute(
                f"SELECT {', '.join(table.cols)} FROM {table.name}"
                f" WHERE session_id = ? ORDER BY {order}{suffix}", (sid,)).fetchall()
            doc[table.name] = [self._row_out(table, r) for r in rows]
        # The content's bytes, verified: a damaged blob fails the archive (the
        # session stays) instead of being carried into the file.
        doc["blobs"] = [
            [str(r[0]), st.ts_out(r[2]).isoformat(),
             base64.b64encode(verified_blob(str(r[0]), bytes(r[1]))).decode("ascii")]
            for r in conn.execute(
                "SELECT hash, data, created_at FROM content_blobs WHERE hash IN"
                " (SELECT blob_hash FROM context_content WHERE session_id = ?) ORDER BY hash",
                (sid,)).fetchall()]
        doc["decision_links"] = [
            [str(r[0]), r[1]] for r in conn.execute(
                f"SELECT id, task_id FROM decisions WHERE session_id = ? ORDER BY id{suffix}",
                (sid,)).fetchall()]
        doc["recovery_point_links"] = [
            [str(r[0]), str(r[1])] for r in conn.execute(
                "SELECT id, state_snapshot_id FROM recovery_points WHERE state_snapshot_id IN"
                f" (SELECT id FROM state_snapshots WHERE session_id = ?) ORDER BY id{suffix}",
                (sid,)).fetchall()]
        return doc, st.session_row(row)

    def _row_out(self, table: rows.Table, row: Any) -> dict[str, Any]:
        return rows.row_out(self.store, table, row)

    def _row_in(self, table: rows.Table, row: dict[str, Any]) -> list[Any]:
        return rows.row_in(self.store, table, row)

    def _insert_index(self, conn: Connection, e: ArchivedSession) -> None:
        st = self.store
        conn.execute(
            f"INSERT INTO archive_index ({_INDEX_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.session_id, e.user_id, e.path.name, e.checksum, e.size_bytes,
             st.json_in(codec.dumps_trusted(e.item_counts)), st.ts(e.last_activity),
             st.ts(e.archived_at), st.ts(e.expires_at)))

    def _delete_rows(self, conn: Connection, sid: str) -> None:
        """What ``Store.delete_session`` does, without its ``delete`` audit row:
        decisions and recovery points outlive the session with their links
        cleared (the file remembers them, and restore puts them back)."""
        conn.execute("UPDATE decisions SET task_id = NULL WHERE task_id IN"
                     " (SELECT id FROM tasks WHERE session_id = ?)", (sid,))
        conn.execute("UPDATE decisions SET session_id = NULL WHERE session_id = ?", (sid,))
        conn.execute("UPDATE recovery_points SET state_snapshot_id = NULL"
                     " WHERE state_snapshot_id IN"
                     " (SELECT id FROM state_snapshots WHERE session_id = ?)", (sid,))
        conn.execute("UPDATE tasks SET parent_task_id = NULL WHERE session_id = ?", (sid,))
        conn.execute("DELETE FROM sessions WHERE id = ?", (sid,))

    # -- reading the index ------------------------------------------------------

    def _entry_row(self, row: Any) -> ArchivedSession:
        st = self.store
        counts = st.json_col(row[5]) or {}
        return ArchivedSession(
            session_id=str(row[0]), user_id=str(row[1]), path=self.directory / str(row[2]),
            checksum=str(row[3]), size_bytes=int(row[4]),
            item_counts={str(k): int(v) for k, v in counts.items()},
            last_activity=st.ts_out(row[6]), archived_at=st.ts_out(row[7]),
            expires_at=st.ts_out(row[8]))

    def list(self, *, user_id: str | None = None) -> list[ArchivedSession]:
        """Every archived session (of one user, if given), oldest archive first."""
        sql = f"SELECT {_INDEX_COLS} FROM archive_index"
        params: list[Any] = []
        if user_id is not None:
            sql += " WHERE user_id = ?"
            params.append(validate_id(user_id, "user_id"))
        sql += " ORDER BY archived_at, session_id"
        with self.store.reading() as conn:
            return [self._entry_row(r) for r in conn.execute(sql, params).fetchall()]

    def get(self, session_id: str) -> ArchivedSession:
        """The index row of an archived session, or NotFoundError."""
        validate_id(session_id, "session_id")
        row = self.store.query_one(
            f"SELECT {_INDEX_COLS} FROM archive_index WHERE session_id = ?", (session_id,))
        if row is None:
            raise NotFoundError("archived session", session_id)
        return self._entry_row(row)

    def is_archived(self, session_id: str) -> bool:
        """True when the session lives in an archive file (one indexed point read)."""
        validate_id(session_id, "session_id")
        return self.store.query_one("SELECT 1 FROM archive_index WHERE session_id = ?",
                                    (session_id,)) is not None

    # -- restoring ------------------------------------------------------------

    def restore(self, session_id: str) -> Session:
        """Put an archived session's rows back, then delete its file.

        The file is checked (header, length, checksum) before anything is
        written; a damaged or missing file raises an ArchiveError naming it and
        changes nothing. Decisions and recovery points get their links back
        where nothing else claimed them meanwhile.
        """
        entry = self.get(session_id)
        doc = codec.loads(read_archive_file(entry.path, entry.checksum))
        st = self.store
        counts = {t.name: len(doc[t.name]) for t in _CHILD_TABLES}
        try:
            with st.atomic() as conn:
                lock = " FOR UPDATE" if st.dialect == "postgresql" else ""
                row = conn.execute(
                    f"SELECT checksum FROM archive_index WHERE session_id = ?{lock}",
                    (session_id,)).fetchone()
                if row is None or str(row[0]) != entry.checksum:
                    raise NotFoundError("archived session", session_id)  # restored meanwhile
                self._insert_rows(conn, doc, entry.path)
                conn.execute("DELETE FROM archive_index WHERE session_id = ?", (session_id,))
                session = st.session_row(conn.execute(
                    f"SELECT {SESSION_COLS} FROM sessions WHERE id = ?",
                    (session_id,)).fetchone())
                st.audit_row(conn, "restore", "session", session_id, None, session.to_dict(),
                             user_id=entry.user_id, session_id=session_id,
                             meta={"file": entry.path.name, "checksum": entry.checksum,
                                   "counts": counts})
                st.after_commit(lambda: _unlink_quietly(entry.path))
        except DuplicateError as exc:
            raise DuplicateError(
                f"cannot restore session {session_id!r}: some of its ids are in use again"
                f" ({exc})") from None
        return session

    def _insert_rows(self, conn: Connection, doc: dict[str, Any], path: Path) -> None:
        """Insert the document's rows; task parents are linked once every task exists,
        blobs are stored before the content rows that count references to them."""
        sql = {t.name: t.insert_sql() for t in (SESSIONS, *_CHILD_TABLES)}
        conn.execute(sql["sessions"], self._row_in(SESSIONS, doc["session"]))
        parents: list[tuple[str, str]] = []
        for task in doc["tasks"]:
            if task["parent_task_id"] is not None:
                parents.append((task["parent_task_id"], task["id"]))
            conn.execute(sql["tasks"], self._row_in(TASKS, {**task, "parent_task_id": None}))
        if parents:
            conn.executemany("UPDATE tasks SET parent_task_id = ? WHERE id = ?", parents)
        for table in (CONTEXT, SNAPSHOTS):
            rows = [self._row_in(table, r) for r in doc[table.name]]
            if rows:
                conn.executemany(sql[table.name], rows)
        st = self.store
        for digest, created, b64 in doc.get("blobs", []):
            stored = st.ensure_blob(conn, base64.b64decode(b64),
                                    created_at=datetime.fromisoformat(created))
            if stored != digest:
                raise ArchiveCorruptError(f"archive file {path} is corrupt: blob {digest}"
                                          " does not match its hash", path=str(path))
        for table, _ in _LINK_TABLES:
            rows = [self._row_in(table, r) for r in doc.get(table.name, [])]
            if rows:
                conn.executemany(f"INSERT INTO {table.name} ({', '.join(table.cols)})"
                                 f" VALUES ({', '.join('?' * len(table.cols))})", rows)
        sid = doc["session"]["id"]
        for decision_id, task_id in doc["decision_links"]:
            conn.execute("UPDATE decisions SET session_id = ?, task_id = ?"
                         " WHERE id = ? AND session_id IS NULL AND task_id IS NULL",
                         (sid, task_id, decision_id))
        for point_id, snapshot_id in doc["recovery_point_links"]:
            conn.execute("UPDATE recovery_points SET state_snapshot_id = ?"
                         " WHERE id = ? AND state_snapshot_id IS NULL", (snapshot_id, point_id))

    # -- retention and health ---------------------------------------------------

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete archives past their retention: index rows (with a ``purge`` audit
        row each) in one transaction, then their files once it committed."""
        st = self.store
        at = self._now(now)
        with st.atomic() as conn:
            lock = " FOR UPDATE" if st.dialect == "postgresql" else ""
            rows = conn.execute(
                "SELECT session_id, user_id, path, checksum FROM archive_index"
                f" WHERE expires_at <= ? ORDER BY session_id{lock}", (st.ts(at),)).fetchall()
            for sid, user, name, digest in rows:
                conn.execute("DELETE FROM archive_index WHERE session_id = ?", (sid,))
                st.audit_row(conn, "purge", "session", str(sid), None, None,
                             user_id=str(user), session_id=str(sid), at=at, notify=False,
                             meta={"file": str(name), "checksum": str(digest)})
            for r in rows:
                st.after_commit(functools.partial(_unlink_quietly, self.directory / str(r[2])))
        return len(rows)

    def verify(self) -> builtins.list[str]:
        """Problems with the archive, one sentence each; empty when healthy.

        Every indexed file must exist and match its checksum; files no index
        row names are reported too (left by a crash, removed by the next run
        when their session is back in the database).
        """
        problems: builtins.list[str] = []
        for entry in self.list():
            try:
                read_archive_file(entry.path, entry.checksum)
            except StatekeepError as exc:
                problems.append(f"session {entry.session_id}: {exc}")
        problems.extend(f"archive file {name} is not in the archive index"
                        for name in self._unreferenced_files())
        return problems

    def _now(self, now: datetime | None) -> datetime:
        if now is None:
            return self.clock()
        at = self.store.ts_arg(now, "now")
        assert at is not None
        return at


# -- the file format -----------------------------------------------------------


def _encode_file(payload: bytes) -> bytes:
    """Header (magic, format version, length, sha256 of ``payload``), then zstd."""
    return _FRAMING.pack(payload)


def read_archive_file(path: Path, expected: str) -> bytes:
    """The verified payload of an archive file, or ArchiveError naming the file."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ArchiveMissingError(f"archive file {path} is missing", path=str(path)) from None
    except OSError as exc:
        raise ArchiveCorruptError(f"archive file {path} cannot be read: {exc}",
                                  path=str(path)) from None
    try:
        _, _, payload = _FRAMING.unpack(blob, expected)
    except FrameError as exc:
        why = str(exc).replace("not a file of this kind", "not a statekeep archive")
        why = why.replace("the one in the index", "the one in the archive index")
        raise ArchiveCorruptError(f"archive file {path} is corrupt: {why}",
                                  path=str(path)) from None
    return payload


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
