"""Backups: online, verified, carried with the archive files, kept on a schedule,
restored without ever leaving the store worse than before.

A backup is one folder under ``backup_dir`` named by its id, holding the
database copy, the archive files its archive index names, and
``manifest.json`` (id, time, kind, every file with its sha256 and size, the
audit high-water mark ``MAX(audit_log.id)`` and the schema version). It is
built under a hidden temporary name, every file fsynced, then renamed into
place and the folder fsynced: after a crash a backup is complete or absent.

* SQLite: SQLite's own backup API, from a connection that holds one read
  transaction for the whole copy. Writers keep writing meanwhile (WAL): the
  copy is the database as of that transaction's start, so the high-water mark
  read from the copy is exact. Copying in steps inside one read transaction
  keeps the copy consistent; without it every commit by another process would
  restart a stepped copy, and a busy writer would starve it.
* PostgreSQL: ``COPY ... TO STDOUT`` of every statekeep table inside one
  ``REPEATABLE READ READ ONLY`` transaction (recovery's ``consistent_read``,
  whose snapshot is taken under a brief ``SHARE`` lock of ``audit_log``), so all
  tables come from one snapshot and the high-water mark is exact; each table
  zstd-compressed in its own file.

Every backup is verified right after it is written, before it counts: the
files re-read and their checksums compared, SQLite's ``integrity_check`` run on
the copy, and each PostgreSQL table file decompressed and decoded row by row.

Restore verifies first, then takes a ``pre-restore`` safety backup of the
live store (so a restore can itself be undone), then replaces the state in one
step: on SQLite the backup API writes the copy into the live database in one
write transaction (other connections see the old state until it commits, and
pick up the new one after); on PostgreSQL one transaction deletes and reloads
every statekeep table. Audit ids never go backwards across a restore, because
readers of the audit log (sync polling, replay) remember positions in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import zstandard

from statekeep import codec
from statekeep.errors import (
    NotFoundError,
    RecoveryError,
    RecoveryVerificationError,
    SnapshotCorruptError,
    StatekeepError,
)
from statekeep.fileio import fsync_dir, write_atomic
from statekeep.ids import new_id, validate_id
from statekeep.memory.archive import ArchiveTier, read_archive_file
from statekeep.recovery.snapshots import consistent_read, default_backup_dir
from statekeep.store.migrations import MIGRATIONS_TABLE, StateMigrationSystem
from statekeep.store.protocol import Store
from statekeep.store.sqlite import sqlite_path

__all__ = [
    "BACKUP_KINDS",
    "Backup",
    "BackupFile",
    "BackupManager",
    "BackupScheduler",
    "BackupVerification",
    "BlobCopy",
    "RestoreResult",
    "install_sqlite",
]

log = logging.getLogger("statekeep.recovery")

Progress = Callable[[int, int], None]

MANIFEST: Final = "manifest.json"
FORMAT: Final = 1
DB_FILE: Final = "statekeep.db"
#: Why a backup was taken. Regular backups are ``manual`` and ``scheduled``; the
#: safety copies taken before a restore or a repair are kept apart from them.
BACKUP_KINDS: Final = ("manual", "scheduled", "pre-restore", "pre-repair")
_REGULAR: Final = frozenset({"manual", "scheduled"})
_STEP_PAGES: Final = 1024
_CHUNK: Final = 1 << 20
#: A temporary backup folder this old was left by a crashed writer.
_STALE_SECONDS: Final = 3600.0
_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)",
                           re.I)
_COPY_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.S)
_COPY_CHARS: Final = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t",
                      b"v": b"\v"}


# -- records --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupFile:
    """One file of a backup, as its manifest lists it."""

    #: Relative to the backup folder, with forward slashes.
    path: str
    sha256: str
    size: int
    #: ``database`` (SQLite copy), ``table`` (PostgreSQL export) or ``archive``.
    role: str
    table: str | None = None
    rows: int | None = None
    columns: tuple[str, ...] = ()
    #: For an archive file: the checksum its archive index row holds, and whether
    #: the file matched it when it was copied (a damaged file is carried as
    #: evidence but never used to repair).
    archive_checksum: str | None = None
    valid: bool = True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size,
                               "role": self.role}
        if self.table is not None:
            out.update(table=self.table, rows=self.rows, columns=list(self.columns))
        if self.role == "archive":
            out.update(archive_checksum=self.archive_checksum, valid=self.valid)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackupFile:
        return cls(str(d["path"]), str(d["sha256"]), int(d["size"]), str(d["role"]),
                   d.get("table"), d.get("rows"), tuple(d.get("columns", ())),
                   d.get("archive_checksum"), bool(d.get("valid", True)))


@dataclass(frozen=True, slots=True)
class Backup:
    """A complete backup: where it is and what its manifest says."""

    id: str
    created_at: datetime
    kind: str
    backend: str
    store_id: str
    schema_version: int
    #: ``MAX(audit_log.id)`` in the copy: every audit row up to it is in the backup.
    audit_high_water: int | None
    files: tuple[BackupFile, ...]
    path: Path
    seconds: float = 0.0
    #: Passed its verification when written. Safety copies of a damaged store are
    #: kept unverified (as evidence); they are never restored automatically.
    verified: bool = True
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """The manifest (JSON-ready), plus where the backup is."""
        return {
            "format": FORMAT, "id": self.id, "created_at": self.created_at.isoformat(),
            "kind": self.kind, "backend": self.backend, "store_id": self.store_id,
            "schema_version": self.schema_version, "audit_high_water": self.audit_high_water,
            "seconds": round(self.seconds, 4), "verified": self.verified,
            "problems": list(self.problems), "notes": list(self.notes),
            "size_bytes": self.size_bytes, "files": [f.to_dict() for f in self.files],
            "path": str(self.path),
        }

    @classmethod
    def from_manifest(cls, doc: dict[str, Any], path: Path) -> Backup:
        if doc.get("format") != FORMAT:
            raise SnapshotCorruptError(f"backup {path.name}: unknown manifest format"
                                       f" {doc.get('format')!r}")
        return cls(
            id=str(doc["id"]), created_at=datetime.fromisoformat(doc["created_at"]),
            kind=str(doc["kind"]), backend=str(doc["backend"]), store_id=str(doc["store_id"]),
            schema_version=int(doc["schema_version"]),
            audit_high_water=doc.get("audit_high_water"),
            files=tuple(BackupFile.from_dict(f) for f in doc["files"]), path=path,
            seconds=float(doc.get("seconds", 0.0)), verified=bool(doc.get("verified", True)),
            problems=tuple(doc.get("problems", ())), notes=tuple(doc.get("notes", ())))

    def file(self, role: str, name: str | None = None) -> BackupFile | None:
        """The first file of ``role`` (and, for tables/archives, of that table or name)."""
        for f in self.files:
            if f.role == role and (name is None or f.table == name
                                   or f.path.rsplit("/", 1)[-1] == name):
                return f
        return None


@dataclass(frozen=True, slots=True)
class BlobCopy:
    """An intact copy of a content blob found somewhere (a backup, a snapshot image)."""

    raw: bytes
    #: The stored form (codec header + body), exactly as the copy holds it.
    packed: bytes
    created_at: datetime | None
    #: Where it came from, for the report ("backup bk_...", "snapshot snap_...").
    origin: str

    @classmethod
    def checked(cls, blob_hash: str, packed: Any, created_at: Any,
                origin: str) -> BlobCopy | None:
        """The copy, if ``packed`` decompresses to bytes with this sha256; else None."""
        if not isinstance(packed, bytes | bytearray | memoryview):
            return None
        try:
            raw = codec.decompress(bytes(packed))
        except codec.CorruptDataError:
            return None
        if codec.checksum(raw) != blob_hash:
            return None
        return cls(raw, bytes(packed), _when(created_at), origin)


@dataclass(slots=True)
class BackupVerification:
    """What re-reading a backup found."""

    backup_id: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "ok": self.ok, "problems": list(self.problems),
                "seconds": round(self.seconds, 4), "bytes_read": self.bytes_read}


@dataclass(slots=True)
class RestoreResult:
    """What a restore did."""

    backup_id: str
    #: The safety backup of the store as it was just before (restore it to undo).
    safety_backup_id: str | None
    audit_high_water: int | None
    #: Rows per table after the restore.
    rows: dict[str, int] = field(default_factory=dict)
    #: Archive files put back into the archive folder from the backup.
    archives_restored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "safety_backup_id": self.safety_backup_id,
                "audit_high_water": self.audit_high_water, "rows": dict(self.rows),
                "archives_restored": list(self.archives_restored), "notes": list(self.notes),
                "seconds": round(self.seconds, 4)}


# -- the manager ------------------------------------------------------------------


class BackupManager:
    """Backups of one store: take, list, verify, restore, prune; and the schedule.

    ``on_restore`` runs after a restore committed: whoever caches the store's
    state (the façade's hot tier) must forget all of it.
    """

    def __init__(self, store: Store, directory: Path | None = None, *,
                 keep: int | None = None, interval_hours: float | None = None,
                 archive: ArchiveTier | None = None,
                 on_restore: Callable[[], None] | None = None) -> None:
        self.store = store
        self.directory = Path(directory) if directory is not None else default_backup_dir(store)
        self.keep = store.config.backup_keep if keep is None else keep
        if self.keep < 1:
            raise RecoveryError("a backup policy must keep at least one backup")
        self.interval_hours = (store.config.backup_interval_hours if interval_hours is None
                               else interval_hours)
        self.archive = archive or ArchiveTier.for_store(store)
        self.on_restore = on_restore
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: The scheduler's last failure (None after a success), for health reports.
        self.last_error: str | None = None
        self._lock = threading.Lock()

    # -- taking -------------------------------------------------------------------

    def backup_now(self, progress: Progress | None = None, *, kind: str = "manual") -> Backup:
        """Take a backup while writers keep writing, verify it, and return it.

        A backup that fails its verification is deleted and RecoveryError raised;
        only the safety kinds (``pre-restore``, ``pre-repair``) are kept anyway,
        marked unverified, because a copy of a damaged store is still the only
        record of what it held.
        """
        if kind not in BACKUP_KINDS:
            raise RecoveryError(f"unknown backup kind {kind!r} ({', '.join(BACKUP_KINDS)})")
        with self._locked():
            return self._take(kind, progress)

    def _take(self, kind: str, progress: Progress | None) -> Backup:
        st = self.store
        started = time.perf_counter()
        backup_id = new_id("bk")
        at = st.now()
        store_id = st.store_id  # before the copy: a new store creates it on first use
        self.directory.mkdir(parents=True, exist_ok=True)
        stage = self.directory / f".tmp-{backup_id}"
        stage.mkdir()
        try:
            with contextlib.suppress(StatekeepError):  # counts are best effort
                st.access_log.flush()
            early = self._archives_before(stage)
            if st.dialect == "sqlite":
                files, meta = self._copy_sqlite(stage, progress)
            else:
                files, meta = self._export_postgres(stage, progress)
            archived, notes = self._archives_after(stage, meta.pop("archive_index"), early)
            backup = Backup(
                id=backup_id, created_at=at, kind=kind, backend=st.dialect,
                store_id=store_id, schema_version=int(meta["schema_version"]),
                audit_high_water=meta["audit_high_water"], files=(*files, *archived),
                path=self.directory / backup_id, notes=tuple(notes))
            # The database and table files were hashed from disk after their fsync;
            # archive copies were hashed as they were read, so they are read back.
            check = self._verify_files(backup, stage, hashed=frozenset(
                f.path for f in files))
            backup = replace(backup, seconds=time.perf_counter() - started,
                             verified=check.ok, problems=tuple(check.problems))
            if not check.ok and kind in _REGULAR:
                raise RecoveryError(f"backup {backup_id} failed its verification and was"
                                    f" discarded: {'; '.join(check.problems)}")
            write_atomic(stage / MANIFEST, _manifest_bytes(backup))
            fsync_dir(stage)
            os.rename(stage, backup.path)
            fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        log.info("backup %s (%s) written: %d bytes in %.2f s", backup.id, kind,
                 backup.size_bytes, backup.seconds)
        return backup

    def _copy_sqlite(self, stage: Path,
                     progress: Progress | None) -> tuple[list[BackupFile], dict[str, Any]]:
        path = self._sqlite_file()
        target = stage / DB_FILE
        src = sqlite3.connect(path, timeout=self.store.config.busy_timeout_ms / 1000,
                              isolation_level=None)
        dest = sqlite3.connect(target)
        try:
            # One read transaction for the whole stepped copy: a consistent
            # snapshot that commits by other processes cannot restart.
            src.execute("BEGIN")
            src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

            def step(_status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dest, pages=_STEP_PAGES, progress=step)
            src.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise RecoveryError(f"cannot back up {path}: {exc}") from None
        finally:
            dest.close()
            src.close()
        _fsync_file(target)
        meta = _sqlite_meta(target)
        return [BackupFile(DB_FILE, *_digest(target), role="database")], meta

    def _export_postgres(self, stage: Path,
                         progress: Progress | None) -> tuple[list[BackupFile], dict[str, Any]]:
        st = self.store
        files: list[BackupFile] = []
        (stage / "tables").mkdir()
        # consistent_read, not a bare REPEATABLE READ snapshot: PostgreSQL hands out
        # audit ids before commit, so a snapshot can see id 101 and miss a slower
        # transaction's 100. A brief SHARE lock of audit_log while the snapshot is
        # taken makes MAX(id) an exact high-water mark.
        with consistent_read(st) as conn:
            raw = _raw(conn)
            _pg_session_settings(raw)
            tables = _pg_tables(raw, _statekeep_tables(st))
            meta = {
                "schema_version": _scalar(raw, f"SELECT MAX(version) FROM {MIGRATIONS_TABLE}"),
                "audit_high_water": _scalar(raw, "SELECT MAX(id) FROM audit_log"),
                "archive_index": [(str(r[0]), str(r[1])) for r in raw.execute(
                    "SELECT path, checksum FROM archive_index").fetchall()],
            }
            for done, (table, columns) in enumerate(tables, 1):
                rel = f"tables/{table}.copy.zst"
                rows = 0
                with (stage / rel).open("wb") as fh:
                    writer = zstandard.ZstdCompressor(level=3).stream_writer(fh, closefd=False)
                    with raw.cursor().copy(
                            f"COPY {table} ({', '.join(columns)}) TO STDOUT") as copy:
                        for chunk in copy:
                            data = bytes(chunk)
                            rows += data.count(b"\n")
                            writer.write(data)
                    writer.flush(zstandard.FLUSH_FRAME)
                    fh.flush()
                    os.fsync(fh.fileno())
                files.append(BackupFile(rel, *_digest(stage / rel), role="table", table=table,
                                        rows=rows, columns=tuple(columns)))
                if progress is not None:
                    progress(done, len(tables))
        meta["schema_version"] = int(meta["schema_version"] or 0)
        return files, meta

    def _archives_before(self, stage: Path) -> dict[str, tuple[str, int]]:
        """First pass, before the database copy: every archive file present, so one
        that a concurrent restore or purge deletes meanwhile is already safe."""
        copied: dict[str, tuple[str, int]] = {}
        if self.archive.directory.is_dir():
            for src in sorted(self.archive.directory.glob("*.skarc")):
                if not src.name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        copied[src.name] = _copy_file(src, stage / "archive" / src.name)
        return copied

    def _archives_after(self, stage: Path, index: list[tuple[str, str]],
                        early: dict[str, tuple[str, int]]) -> tuple[list[BackupFile], list[str]]:
        """Second pass: keep exactly the files the copy's archive index names, copying
        those archived since the first pass."""
        folder = stage / "archive"
        files: list[BackupFile] = []
        notes: list[str] = []
        named = dict(index)
        for name in sorted(set(early) - set(named)):
            (folder / name).unlink()  # not part of the state this backup holds
        for name, checksum in sorted(named.items()):
            if name not in early:
                try:
                    early[name] = _copy_file(self.archive.directory / name, folder / name)
                except FileNotFoundError:
                    notes.append(f"archive file {name} (named by the archive index) was"
                                 " missing when the backup was taken")
                    continue
            valid = _archive_ok(folder / name, checksum)
            if not valid:
                notes.append(f"archive file {name} was already damaged when copied; it is"
                             " kept as evidence and never used to repair")
            files.append(BackupFile(f"archive/{name}", *early[name], role="archive",
                                    archive_checksum=checksum, valid=valid))
        return files, notes

    # -- reading --------------------------------------------------------------------

    def list_backups(self) -> list[Backup]:
        """This store's complete backups, newest first."""
        found: list[Backup] = []
        if not self.directory.is_dir():
            return found
        store_id = self.store.store_id
        for sub in self.directory.iterdir():
            if sub.name.startswith(".") or not (sub / MANIFEST).is_file():
                continue
            try:
                backup = _load(sub)
            except (OSError, ValueError, KeyError, TypeError, StatekeepError) as exc:
                log.warning("skipping backup folder %s: unreadable manifest (%s)", sub, exc)
                continue
            if backup.store_id == store_id:
                found.append(backup)
        found.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        return found

    def get(self, backup_id: str) -> Backup:
        """One backup by id, or NotFoundError."""
        validate_id(backup_id, "backup_id")
        folder = self.directory / backup_id
        if not (folder / MANIFEST).is_file():
            raise NotFoundError("backup", backup_id)
        try:
            backup = _load(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotCorruptError(f"backup {backup_id}: its manifest is unreadable"
                                       f" ({exc})") from None
        if backup.store_id != self.store.store_id:
            raise NotFoundError("backup", backup_id)
        return backup

    def verified_backups(self) -> list[Backup]:
        """Backups that passed verification when written, newest first (repair sources)."""
        return [b for b in self.list_backups() if b.verified]

    def verify_backup(self, backup_id: str) -> BackupVerification:
        """Re-read a backup now: every file's checksum and size, then SQLite's
        integrity check on the copy or the PostgreSQL tables decoded row by row."""
        return self._verify_files(self.get(backup_id), None)

    def _verify_files(self, backup: Backup, folder: Path | None, *,
                      hashed: frozenset[str] = frozenset()) -> BackupVerification:
        """Every file against its manifest entry, then decoded. ``hashed`` names files
        whose checksum was just computed from the bytes on disk (not read twice)."""
        started = time.perf_counter()
        base = folder or backup.path
        result = BackupVerification(backup.id)
        for f in backup.files:
            path = base / f.path
            try:
                digest, size = (f.sha256, f.size) if f.path in hashed else _digest(path)
            except FileNotFoundError:
                result.problems.append(f"{f.path} is missing")
                continue
            result.bytes_read += size
            if (digest, size) != (f.sha256, f.size):
                result.problems.append(f"{f.path} does not match its manifest checksum"
                                       " (damaged or replaced)")
                continue
            if f.role == "database":
                result.problems += _sqlite_problems(path, backup)
            elif f.role == "table":
                result.problems += _table_problems(path, f)
        result.seconds = time.perf_counter() - started
        return result

    # -- looking things up (repair sources) -----------------------------------------

    def find_blob(self, blob_hash: str) -> BlobCopy | None:
        """The newest backed-up copy of a blob whose bytes still match its hash."""
        for backup in self.verified_backups():
            for row in self._rows(backup, "content_blobs", "hash", blob_hash):
                found = BlobCopy.checked(blob_hash, row.get("data"), row.get("created_at"),
                                         f"backup {backup.id}")
                if found is not None:
                    return found
        return None

    def find_snapshot(self, snapshot_id: str,
                      checksum: str | None = None) -> tuple[dict[str, Any], str] | None:
        """The newest backed-up ``state_snapshots`` row with this id whose image decodes,
        as column -> value (``state_data`` as bytes), with the backup's id.

        A row with the same checksum is preferred; failing that any intact row with
        the id (snapshots are never changed once written, so a backed-up row with
        the id *is* the committed one -- the live checksum may be what was damaged).
        """
        from statekeep.recovery.image import decode_image

        fallback: tuple[dict[str, Any], str] | None = None
        for backup in self.verified_backups():
            for row in self._rows(backup, "state_snapshots", "id", snapshot_id):
                data = row.get("state_data")
                if not isinstance(data, bytes):
                    continue
                try:
                    decode_image(data, str(row.get("checksum")))
                except SnapshotCorruptError:
                    continue
                if checksum is None or row.get("checksum") == checksum:
                    return row, backup.id
                fallback = fallback or (row, backup.id)
        return fallback

    def find_archive_file(self, name: str, checksum: str) -> tuple[Path, str] | None:
        """The newest backed-up copy of an archive file whose content matches the
        archive index's checksum, with the backup id."""
        for backup in self.verified_backups():
            f = backup.file("archive", name)
            if f is None or not f.valid:
                continue
            path = backup.path / f.path
            if _archive_ok(path, checksum):
                return path, backup.id
        return None

    def _rows(self, backup: Backup, table: str, key_col: str,
              key: str) -> Iterator[dict[str, Any]]:
        """Rows of one table of a backup whose ``key_col`` equals ``key``."""
        if backup.backend == "sqlite":
            f = backup.file("database")
            if f is None:
                return
            try:  # a backup pruned meanwhile, or damaged since: not a source
                conn = _open_copy(backup.path / f.path)
                try:
                    cur = conn.execute(f"SELECT * FROM {table} WHERE {key_col} = ?", (key,))
                    names = [d[0] for d in cur.description]
                    found = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
                finally:
                    conn.close()
            except sqlite3.Error:
                return
            yield from found
            return
        f = backup.file("table", table)
        if f is None:
            return
        try:
            for fields in _copy_rows(backup.path / f.path):
                row = dict(zip(f.columns, fields, strict=True))
                if row.get(key_col) == key.encode():
                    yield {c: _pg_value(c, v) for c, v in row.items()}
        except (OSError, zstandard.ZstdError, ValueError):
            return

    # -- restoring ------------------------------------------------------------------

    def restore(self, backup_id: str, progress: Progress | None = None) -> RestoreResult:
        """Replace the store's state with a backup's, after verifying it and taking a
        safety backup of the current state (``pre-restore``).

        Everything committed after the backup's high-water mark is replaced;
        the safety backup keeps it. Raises before changing anything when the
        backup fails verification or belongs to a newer schema.
        """
        started = time.perf_counter()
        with self._locked():
            backup = self.get(backup_id)
            check = self._verify_files(backup, None)
            if not check.ok:
                raise SnapshotCorruptError(f"backup {backup_id} failed verification; nothing"
                                           f" was changed: {'; '.join(check.problems)}")
            latest = StateMigrationSystem(self.store).registry.latest
            if backup.schema_version > latest:
                raise RecoveryError(f"backup {backup_id} is at schema version"
                                    f" {backup.schema_version}, newer than this statekeep"
                                    f" knows ({latest}); upgrade statekeep first")
            if backup.backend != self.store.dialect:
                raise RecoveryError(f"backup {backup_id} is a {backup.backend} backup; this"
                                    f" store is {self.store.dialect}")
            safety = self._take("pre-restore", None)
            result = RestoreResult(backup.id, safety.id, backup.audit_high_water)
            if self.store.dialect == "sqlite":
                self._restore_sqlite(backup, result, progress)
            else:
                self._restore_postgres(backup, result, progress)
            result.archives_restored = self._restore_archives(backup)
        if self.on_restore is not None:
            self.on_restore()
        result.seconds = time.perf_counter() - started
        log.info("store restored from backup %s (safety backup %s)", backup.id, safety.id)
        return result

    def _restore_sqlite(self, backup: Backup, result: RestoreResult,
                        progress: Progress | None) -> None:
        st = self.store
        f = backup.file("database")
        assert f is not None
        before = _scalar_sqlite(st, "SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'")
        install_sqlite(backup.path / f.path, self._sqlite_file(),
                       timeout=st.config.busy_timeout_ms / 1000, progress=progress)
        if backup.schema_version < StateMigrationSystem(st).registry.latest:
            StateMigrationSystem(st).migrate()
            result.notes.append(f"migrated from schema version {backup.schema_version}")
        with st.atomic() as conn:
            if before is not None:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'audit_log'"
                             " AND seq < ?", (before, before))
            self._audit_restore(conn, backup, result)
            for table in _statekeep_tables(st):
                row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                result.rows[table] = int(row[0])
        problems = st.integrity_problems()
        if problems:  # cannot happen with a verified copy; undo rather than serve it
            safety = self.get(result.safety_backup_id or "")
            sf = safety.file("database")
            assert sf is not None
            install_sqlite(safety.path / sf.path, self._sqlite_file(),
                           timeout=st.config.busy_timeout_ms / 1000)
            raise RecoveryVerificationError(
                f"the store failed its integrity check after restoring backup {backup.id};"
                f" the state from before was put back", problems=problems)

    def _restore_postgres(self, backup: Backup, result: RestoreResult,
                          progress: Progress | None) -> None:
        st = self.store
        live = StateMigrationSystem(st).current_version()
        if backup.schema_version != live:
            raise RecoveryError(f"backup {backup.id} is at schema version"
                                f" {backup.schema_version} and the store at {live}; a"
                                " PostgreSQL backup restores into the same schema version only")
        with st.atomic() as conn:
            raw = _raw(conn)
            _pg_session_settings(raw)
            live_tables = dict(_pg_tables(raw, _statekeep_tables(st)))
            exported = [f for f in backup.files if f.role == "table"]
            for f in exported:
                assert f.table is not None
                missing = set(f.columns) - set(live_tables.get(f.table, ()))
                if missing:
                    raise RecoveryError(f"backup {backup.id}: table {f.table} lacks columns"
                                        f" {sorted(missing)} in the live store; nothing changed")
            order = [t for t in live_tables if any(f.table == t for f in exported)]
            sequences = _pg_sequences(raw, order)
            names = ", ".join(order)
            raw.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
            for table in order:
                # Reference counts and search vectors travel as they were: the
                # content triggers must not count every reloaded link again.
                raw.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            for table in reversed(order):
                raw.execute(f"DELETE FROM {table}")
            by_table = {f.table: f for f in exported}
            for done, table in enumerate(order, 1):
                f = by_table[table]
                with raw.cursor() as cur:
                    with cur.copy(f"COPY {table} ({', '.join(f.columns)}) FROM STDIN") as cp:
                        for chunk in _decompressed(backup.path / f.path):
                            cp.write(chunk)
                    if cur.rowcount != f.rows:
                        raise RecoveryVerificationError(
                            f"restoring {table} loaded {cur.rowcount} rows, the backup holds"
                            f" {f.rows}; rolled back", problems=[table])
                result.rows[table] = int(f.rows or 0)
                if progress is not None:
                    progress(done, len(order))
            for table in order:
                raw.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            for seq, table, column, last in sequences:
                top = _scalar(raw, f"SELECT MAX({column}) FROM {table}")
                value = max(int(top or 0), last)
                if value >= 1:
                    raw.execute("SELECT setval(%s::regclass, %s, true)", (seq, value))
            self._audit_restore(conn, backup, result)

    def _audit_restore(self, conn: Any, backup: Backup, result: RestoreResult) -> None:
        # Entity "store", like recovery's own rows: replay treats it as a no-op
        # (the audit rows after the backup's high-water mark went with the restore).
        self.store.audit_row(conn, "restore", "store", self.store.store_id, None, None,
                             user_id=None, session_id=None, notify=False,
                             meta={"backup_id": backup.id, "kind": backup.kind,
                                   "audit_high_water": backup.audit_high_water,
                                   "safety_backup_id": result.safety_backup_id})

    def _restore_archives(self, backup: Backup) -> list[str]:
        """Put back every archive file the restored index names and the folder lacks
        (or holds damaged); files of later archives are left where they are."""
        restored: list[str] = []
        for entry in self.archive.list():
            if _archive_ok(entry.path, entry.checksum):
                continue
            f = backup.file("archive", entry.path.name)
            if f is not None and f.valid and _archive_ok(backup.path / f.path, entry.checksum):
                entry.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(entry.path, (backup.path / f.path).read_bytes())
                restored.append(entry.path.name)
        return restored

    # -- retention --------------------------------------------------------------------

    def prune(self, keep: int | None = None) -> list[str]:
        """Delete all but the newest ``keep`` backups of each group -- regular ones
        (verified only count) and the safety copies taken before restores and
        repairs (kept whether verified or not: a copy of a damaged store is
        evidence) -- and leftovers of crashed backups; returns the deleted ids."""
        keep = self.keep if keep is None else keep
        if keep < 1:
            raise RecoveryError("prune must keep at least one backup")
        with self._locked():
            return self._prune(keep)

    def _prune(self, keep: int) -> list[str]:
        removed: list[str] = []
        backups = self.list_backups()
        regular = [b for b in backups if b.kind in _REGULAR]
        safety = [b for b in backups if b.kind not in _REGULAR]
        kept = {b.id for b in [b for b in regular if b.verified][:keep] + safety[:keep]}
        for b in regular + safety:
            if b.id not in kept:
                shutil.rmtree(b.path, ignore_errors=True)
                removed.append(b.id)
        now = time.time()
        for stale in self.directory.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(stale)
        if removed:
            fsync_dir(self.directory)
        return removed

    # -- the schedule -------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        """When the next scheduled backup is due (None: scheduling is off).

        Counted from the newest regular backup on disk, not from process start,
        so a process restarted more often than the interval still backs up.
        """
        if self.interval_hours <= 0:
            return None
        regular = [b for b in self.list_backups() if b.kind in _REGULAR and b.verified]
        if not regular:
            return self.store.now()
        return regular[0].created_at + timedelta(hours=self.interval_hours)

    def run_due(self) -> Backup | None:
        """Take a scheduled backup and prune, if one is due; else None.

        Due-ness is decided under the lock, so of several processes on one store
        only the first takes the backup; the others then find it on disk.
        """
        with self._locked():
            due = self.next_due()
            if due is None or due > self.store.now():
                return None
            backup = self._take("scheduled", None)
            self._prune(self.keep)
        return backup

    def start(self) -> None:
        """Run the schedule in a daemon thread (no-op when the interval is 0)."""
        if self.interval_hours <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="statekeep-backups",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the schedule; waits for a backup in progress to finish."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = 60.0
            try:
                self.run_due()
                self.last_error = None
                due = self.next_due()
                if due is not None:
                    wait = min(wait, max(0.5, (due - self.store.now()).total_seconds()))
            except Exception as exc:  # the schedule must outlive one failed backup
                self.last_error = str(exc)
                log.error("scheduled backup failed: %s", exc)
            self._stop.wait(wait)

    # -- helpers ------------------------------------------------------------------------

    def _sqlite_file(self) -> str:
        path = sqlite_path(self.store.config.db)
        if path == ":memory:":
            raise RecoveryError("an in-memory database has no file to back up or restore")
        return str(Path(path).resolve())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One backup operation at a time, across threads and processes (``flock``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock, (self.directory / ".lock").open("a+b") as fh:
            try:
                import fcntl
            except ImportError:  # Windows: the in-process lock only
                yield
                return
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: The seed's name for the object that keeps backups on a schedule.
BackupScheduler = BackupManager


# -- SQLite --------------------------------------------------------------------------


def install_sqlite(source: Path, live: str, *, timeout: float,
                   progress: Progress | None = None) -> None:
    """Write a database file into the live database with the backup API.

    One write transaction on the live database from the first step to the last:
    readers see the old state until it commits, the new one after (the schema
    cookie changes, so every connection re-reads the schema), and a failure
    rolls back to the old state.
    """
    src = _open_copy(source)
    dest = sqlite3.connect(live, timeout=timeout, isolation_level=None)
    try:
        def step(_status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        src.backup(dest, pages=_STEP_PAGES, progress=step)
    except sqlite3.Error as exc:
        raise RecoveryError(f"cannot write {source} into {live}: {exc}; the database was"
                            " left as it was") from None
    finally:
        dest.close()
        src.close()


def _open_copy(path: Path) -> sqlite3.Connection:
    """A read-only connection to a private copy that creates no -wal/-shm beside it."""
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)


def _sqlite_meta(path: Path) -> dict[str, Any]:
    """Schema version, audit high-water mark and archive index of a copy. Each is
    read on its own: a copy of a damaged store (a safety copy) may lack some."""
    meta: dict[str, Any] = {"schema_version": 0, "audit_high_water": None, "archive_index": []}
    queries = (("schema_version", f"SELECT MAX(version) FROM {MIGRATIONS_TABLE}"),
               ("audit_high_water", "SELECT MAX(id) FROM audit_log"),
               ("archive_index", "SELECT path, checksum FROM archive_index"))
    conn = _open_copy(path)
    try:
        for key, sql in queries:
            with contextlib.suppress(sqlite3.Error):
                rows = conn.execute(sql).fetchall()
                meta[key] = ([(str(r[0]), str(r[1])) for r in rows] if key == "archive_index"
                             else rows[0][0])
    finally:
        conn.close()
    meta["schema_version"] = int(meta["schema_version"] or 0)
    return meta


def _sqlite_problems(path: Path, backup: Backup) -> list[str]:
    conn = _open_copy(path)
    try:
        problems = [f"{path.name}: {r[0]}" for r in
                    conn.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        if problems:
            return problems
        row = conn.execute("SELECT value FROM statekeep_meta WHERE key = 'store_id'").fetchone()
        if row is not None and row[0] != backup.store_id:
            problems.append(f"{path.name} belongs to store {row[0]}, not {backup.store_id}")
        top = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
        if top != backup.audit_high_water:
            problems.append(f"{path.name}: audit high-water mark {top}, the manifest says"
                            f" {backup.audit_high_water}")
    except sqlite3.Error as exc:
        problems = [f"{path.name} cannot be read: {exc}"]
    finally:
        conn.close()
    return problems


def _scalar_sqlite(store: Store, sql: str) -> Any:
    row = store.query_one(sql, ())
    return None if row is None else row[0]


# -- PostgreSQL ----------------------------------------------------------------------


def _raw(conn: Any) -> Any:
    """The psycopg connection under the store's ``?``-placeholder wrapper (COPY and
    ``%s`` statements go to it directly)."""
    return conn.raw


def _scalar(raw: Any, sql: str) -> Any:
    row = raw.execute(sql).fetchone()
    return None if row is None else row[0]


def _pg_session_settings(raw: Any) -> None:
    """Output that reloads exactly: hex bytea, ISO dates, shortest exact floats."""
    raw.execute("SET LOCAL bytea_output = 'hex'")
    raw.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    raw.execute("SET LOCAL extra_float_digits = 1")


def _statekeep_tables(store: Store) -> list[str]:
    """The tables statekeep's migrations create (and its migrations table): only
    these are backed up from a schema that may hold other applications' tables."""
    names: list[str] = [MIGRATIONS_TABLE]
    for m in StateMigrationSystem(store).registry.all():
        names += [n.lower() for n in _CREATE_TABLE.findall(m.sql) if n.lower() not in names]
    return names


def _pg_tables(raw: Any, names: list[str]) -> list[tuple[str, list[str]]]:
    """(table, stored columns) for the statekeep tables present, parents first."""
    rows = raw.execute(
        "SELECT c.relname, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        " AND c.relname = ANY(%s)", (names,)).fetchall()
    oids = {str(r[0]): r[1] for r in rows}
    columns: dict[str, list[str]] = {}
    for name, oid in oids.items():
        columns[name] = [str(r[0]) for r in raw.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0"
            " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (oid,)).fetchall()]
    parents: dict[str, set[str]] = {name: set() for name in oids}
    for ref in raw.execute(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
            " WHERE contype = 'f' AND conrelid = ANY(%s)", (list(oids.values()),)).fetchall():
        child, parent = (str(name).rsplit(".", 1)[-1] for name in ref)
        if child in parents and parent in parents and parent != child:
            parents[child].add(parent)
    ordered: list[str] = []
    while len(ordered) < len(parents):
        ready = sorted(t for t, ps in parents.items() if t not in ordered and ps <= set(ordered))
        if not ready:
            raise RecoveryError("the statekeep tables' foreign keys form a cycle")
        ordered += ready
    return [(t, columns[t]) for t in ordered]


def _pg_sequences(raw: Any, tables: list[str]) -> list[tuple[str, str, str, int]]:
    """(sequence, table, column, last value handed out) of identity/serial columns."""
    out: list[tuple[str, str, str, int]] = []
    for table, column in raw.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ANY(%s)"
            " AND (is_identity = 'YES' OR column_default LIKE 'nextval(%%')",
            (tables,)).fetchall():
        seq = _scalar(raw, f"SELECT pg_get_serial_sequence('{table}', '{column}')")
        if seq is None:
            continue
        last, called = raw.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
        out.append((str(seq), str(table), str(column), int(last) if called else int(last) - 1))
    return out


def _decompressed(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        while chunk := reader.read(_CHUNK):
            yield chunk


def _copy_lines(path: Path) -> Iterator[bytes]:
    """The rows of a ``COPY ... TO STDOUT`` text export, one line each (text
    format escapes newlines inside values, so a line is a row)."""
    rest = b""
    for chunk in _decompressed(path):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        raise ValueError("the export ends in the middle of a row")


def _copy_rows(path: Path) -> Iterator[list[bytes | None]]:
    """Decoded fields of each row of a COPY text export (``None`` for ``\\N``)."""
    for line in _copy_lines(path):
        yield [None if f == b"\\N" else _COPY_ESCAPE.sub(_unescape, f)
               for f in line.split(b"\t")]


def _unescape(m: re.Match[bytes]) -> bytes:
    octal, hexa, char = m.groups()
    if octal is not None:
        return bytes((int(octal, 8) & 0xFF,))
    if hexa is not None:
        return bytes((int(hexa, 16),))
    return _COPY_CHARS.get(char, char)


def _pg_value(column: str, value: bytes | None) -> Any:
    """A decoded COPY field as Python: bytea (hex) to bytes, the rest as text."""
    if value is None:
        return None
    if value.startswith(b"\\x") and column in ("data", "state_data", "value"):
        return bytes.fromhex(value[2:].decode("ascii"))
    return value.decode()


def _table_problems(path: Path, f: BackupFile) -> list[str]:
    """Decode an exported table: zstd frames intact, every row with its columns."""
    rows = 0
    try:
        for line in _copy_lines(path):
            if line.count(b"\t") != len(f.columns) - 1:
                return [f"{f.path}: row {rows + 1} has the wrong number of columns"]
            rows += 1
    except (zstandard.ZstdError, ValueError, OSError) as exc:
        return [f"{f.path} cannot be decoded: {exc}"]
    if rows != f.rows:
        return [f"{f.path} holds {rows} rows, the manifest says {f.rows}"]
    return []


# -- files ---------------------------------------------------------------------------


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_file(src: Path, dest: Path) -> tuple[str, int]:
    """Copy and fsync; returns (sha256, size) of the bytes written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dest.open("wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def _archive_ok(path: Path, checksum: str) -> bool:
    try:
        read_archive_file(path, checksum)
    except StatekeepError:
        return False
    return True


def _manifest_bytes(backup: Backup) -> bytes:
    doc = backup.to_dict()
    del doc["path"]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def _when(value: Any) -> datetime | None:
    """A stored timestamp (SQLite text without offset = UTC; PostgreSQL text; a
    datetime) as an aware datetime, or None."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _load(folder: Path) -> Backup:
    return Backup.from_manifest(orjson.loads((folder / MANIFEST).read_bytes()), folder)

