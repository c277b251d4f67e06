"""The health monitor: find corruption, repair what can be repaired without losing
anything committed, and say precisely what cannot.

Checks (each yields :class:`Finding` records):

* ``integrity`` / ``foreign_key`` -- the database's own checks
  (``Store.integrity_problems``); a check that cannot even complete is itself
  an ``integrity`` finding.
* ``wal`` -- SQLite only, on demand (``doctor``): the write-ahead log parsed
  by :mod:`statekeep.recovery.wal`. Not run by the monitor: a live writer's
  half-appended frame would look torn.
* ``snapshot`` -- every snapshot image decoded against its checksum.
* ``blob`` -- every content blob decompressed and hashed; referenced blobs
  that are missing.
* ``archive`` -- every archive file against its archive-index checksum.
* ``consistency`` -- :func:`statekeep.recovery.verify.consistency_problems`.

Repairs (:class:`AutoRepair`) only ever put back an *identical* copy, found in
a verified backup (or, for a blob, an intact snapshot image): a snapshot row
with the same id and checksum, a blob with the same sha256, an archive file
whose content matches the index. A damaged SQLite database is rebuilt by
:mod:`statekeep.recovery.salvage` from the newest verified backup plus every
row still readable, after a ``pre-repair`` copy of the damaged file was kept.
What cannot be repaired is escalated: a damaged snapshot with no good copy is
quarantined (recorded in ``statekeep_meta``; its image is refused on every
read anyway), never served. A finding counts as repaired only when the checks,
run again after the repair, no longer report it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson

from statekeep import codec
from statekeep.errors import (
    RecoveryError,
    SnapshotCorruptError,
    StatekeepError,
)
from statekeep.fileio import write_atomic
from statekeep.ids import new_id
from statekeep.memory.archive import ArchiveTier, read_archive_file
from statekeep.recovery.backup import BackupManager, BlobCopy, install_sqlite
from statekeep.recovery.image import decode_image
from statekeep.recovery.salvage import SalvageReport, reindex_file, salvage_sqlite
from statekeep.recovery.snapshots import SnapshotManager
from statekeep.recovery.verify import consistency_problems
from statekeep.recovery.wal import WalReport, inspect_wal
from statekeep.store.blobs import verified_blob
from statekeep.store.migrations import MIGRATIONS_TABLE
from statekeep.store.protocol import Store
from statekeep.store.sqlite import sqlite_path

__all__ = [
    "AutoRecovery",
    "AutoRepair",
    "CorruptionDetector",
    "Finding",
    "HealthChecker",
    "HealthReport",
    "IntegrityChecker",
    "quarantined_snapshots",
    "wal_findings",
]

log = logging.getLogger("statekeep.recovery")

_BATCH: Final = 64
_QUARANTINE: Final = "quarantine:snapshot:"
_INVALID_INDEX = re.compile(r"index (\S+) is invalid")
#: Findings a repair round's re-check does not look for again.
_NOT_RECHECKED: Final = frozenset({"wal", "lost"})


@dataclass(slots=True)
class Finding:
    """One thing wrong with the store."""

    #: integrity, foreign_key, wal, snapshot, blob, archive, consistency, lost, check
    kind: str
    #: What is affected: "database", a snapshot id, a blob hash, an archive file name...
    object: str
    detail: str
    repairable: bool = False
    repaired: bool = False
    #: "error" keeps ``doctor`` failing until repaired; "warning" is reported only.
    severity: str = "error"
    #: What was done about it, or what a person should do.
    action: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the finding across two rounds of checks."""
        return self.kind, self.detail if self.kind in ("consistency", "lost") else self.object

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "object": self.object, "detail": self.detail,
                "repairable": self.repairable, "repaired": self.repaired,
                "severity": self.severity, "action": self.action}


@dataclass(slots=True)
class HealthReport:
    """Findings of one round of checks (and repairs)."""

    checked_at: datetime
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    #: How many objects each check looked at.
    scanned: dict[str, int] = field(default_factory=dict)
    wal: WalReport | None = None
    #: What a database rebuild did, when one ran.
    salvage: SalvageReport | None = None

    @property
    def remaining(self) -> list[Finding]:
        """Errors not repaired: what keeps the store unhealthy."""
        return [f for f in self.findings if f.severity == "error" and not f.repaired]

    @property
    def ok(self) -> bool:
        return not self.remaining

    def to_dict(self) -> dict[str, Any]:
        return {"checked_at": self.checked_at.isoformat(), "ok": self.ok,
                "seconds": round(self.seconds, 4), "scanned": dict(self.scanned),
                "findings": [f.to_dict() for f in self.findings],
                "remaining": len(self.remaining),
                "wal": None if self.wal is None else self.wal.to_dict(),
                "salvage": None if self.salvage is None else self.salvage.to_dict()}


def quarantined_snapshots(store: Store) -> dict[str, dict[str, Any]]:
    """Snapshots the health monitor found damaged with no good copy: id -> record."""
    with store.reading() as conn:
        rows = conn.execute("SELECT key, value FROM statekeep_meta WHERE key LIKE ?",
                            (f"{_QUARANTINE}%",)).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for key, value in rows:
        with contextlib.suppress(orjson.JSONDecodeError):
            out[str(key)[len(_QUARANTINE):]] = orjson.loads(value)
    return out


# -- checks --------------------------------------------------------------------------


class IntegrityChecker:
    """The database's own checks, and SQLite's write-ahead log."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def check(self) -> list[Finding]:
        try:
            problems = self.store.integrity_problems()
        except StatekeepError as exc:
            return [Finding("integrity", "database",
                            f"the integrity check could not complete: {exc}")]
        return [Finding("foreign_key", _fk_object(p), p) if p.startswith("foreign key")
                else Finding("integrity", m.group(1) if (m := _INVALID_INDEX.search(p))
                             else "database", p)
                for p in problems]

    def check_wal(self) -> tuple[WalReport | None, list[Finding]]:
        path = _sqlite_file(self.store)
        return (None, []) if path is None else wal_findings(path)


def wal_findings(db_path: str | Path) -> tuple[WalReport, list[Finding]]:
    """The WAL of a SQLite database as findings: an error when committed transactions
    are provably lost, a warning when the WAL cannot tell."""
    report = inspect_wal(db_path)
    lost = report.committed_lost
    return report, [Finding("wal", str(report.path), p, severity="error" if lost else "warning",
                            action="not repairable: those bytes are gone; restore a backup if"
                            " the lost transactions matter" if lost else "")
                    for p in report.problems()]


class CorruptionDetector:
    """Checksums of what the database stores as opaque bytes, and of archive files."""

    def __init__(self, store: Store, archive: ArchiveTier | None = None) -> None:
        self.store = store
        self.archive = archive or ArchiveTier.for_store(store)

    def scan(self, scanned: dict[str, int] | None = None) -> list[Finding]:
        counts = {} if scanned is None else scanned
        return [*self.snapshots(counts), *self.blobs(counts), *self.archives(counts)]

    def snapshots(self, counts: dict[str, int]) -> list[Finding]:
        st = self.store
        quarantined = quarantined_snapshots(st)
        found: list[Finding] = []
        last = ""
        counts["snapshots"] = 0
        while True:
            rows = _all(st,
                "SELECT id, state_data, checksum, size_bytes, compression_type"
                " FROM state_snapshots WHERE id > ? ORDER BY id LIMIT ?", (last, _BATCH))
            if not rows:
                return found
            for sid, data, checksum, size, compression in rows:
                last = str(sid)
                counts["snapshots"] += 1
                why = _snapshot_problem(last, data, str(checksum), size, compression)
                if why is None:
                    continue
                held = quarantined.get(last)
                found.append(Finding(
                    "snapshot", last, why,
                    action="quarantined: never served" if held else ""))

    def blobs(self, counts: dict[str, int]) -> list[Finding]:
        st = self.store
        found: list[Finding] = []
        last = ""
        counts["blobs"] = 0
        while True:
            rows = _all(st, "SELECT hash, data FROM content_blobs WHERE hash > ?"
                                " ORDER BY hash LIMIT ?", (last, _BATCH))
            if not rows:
                break
            for digest, data in rows:
                last = str(digest)
                counts["blobs"] += 1
                try:
                    verified_blob(last, bytes(data))
                except codec.CorruptDataError as exc:
                    found.append(Finding("blob", last, str(exc)))
        missing = _all(st,
            "SELECT DISTINCT blob_hash FROM context_content c WHERE NOT EXISTS"
            " (SELECT 1 FROM content_blobs b WHERE b.hash = c.blob_hash)"
            " UNION SELECT DISTINCT blob_hash FROM memory_entries m WHERE blob_hash IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM content_blobs b WHERE b.hash = m.blob_hash)", ())
        found += [Finding("blob", str(r[0]), f"blob {r[0]} is referenced but missing")
                  for r in sorted(missing)]
        return found

    def archives(self, counts: dict[str, int]) -> list[Finding]:
        found: list[Finding] = []
        entries = self.archive.list()
        counts["archives"] = len(entries)
        for entry in entries:
            try:
                read_archive_file(entry.path, entry.checksum)
            except StatekeepError as exc:
                found.append(Finding("archive", entry.path.name,
                                     f"session {entry.session_id}: {exc}"))
        return found


class HealthChecker:
    """Every check, as one :class:`HealthReport`."""

    def __init__(self, store: Store, archive: ArchiveTier | None = None) -> None:
        self.store = store
        self.integrity = IntegrityChecker(store)
        self.corruption = CorruptionDetector(store, archive)

    def run(self, *, wal: bool = False) -> HealthReport:
        """All checks; ``wal`` adds the WAL inspection (only safe with no live writer)."""
        started = time.perf_counter()
        report = HealthReport(self.store.now())
        if wal:
            report.wal, found = self.integrity.check_wal()
            report.findings += found
        report.findings += self.integrity.check()
        report.findings += self._guarded("snapshot", self.corruption.snapshots, report)
        report.findings += self._guarded("blob", self.corruption.blobs, report)
        report.findings += self._guarded("archive", self.corruption.archives, report)
        try:
            report.findings += [Finding("consistency", p.split(":", 1)[0], p)
                                for p in consistency_problems(self.store)]
        except StatekeepError as exc:
            report.findings.append(Finding("check", "consistency",
                                            f"the consistency check failed: {exc}"))
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _guarded(name: str, check: Callable[[dict[str, int]], list[Finding]],
                 report: HealthReport) -> list[Finding]:
        """A check that cannot read its table (a damaged page) is a finding, not a crash."""
        try:
            return check(report.scanned)
        except StatekeepError as exc:
            return [Finding("check", name, f"the {name} check could not complete: {exc}")]


# -- repairs -------------------------------------------------------------------------


class AutoRepair:
    """Puts back identical copies of damaged things; rebuilds a damaged SQLite file.

    ``backups`` are the repair sources (newest verified first); ``recovery`` is
    optional: when it offers ``find_blob(hash) -> bytes | None`` it is asked
    for blobs the backups and snapshot images lack.
    """

    def __init__(self, store: Store, backups: BackupManager | None = None,
                 recovery: Any = None, *, archive: ArchiveTier | None = None,
                 on_repair: Callable[[], None] | None = None) -> None:
        self.store = store
        self.backups = backups
        self.recovery = recovery
        self.archive = archive or (backups.archive if backups else ArchiveTier.for_store(store))
        self.on_repair = on_repair

    def can_repair(self, item: Finding) -> bool:
        """Whether a repair source exists for this finding now."""
        return self._source(item) is not None

    def _source(self, item: Finding) -> Any:
        if item.kind == "integrity":
            if self.store.dialect == "sqlite":
                return "salvage" if _sqlite_file(self.store) is not None else None
            m = _INVALID_INDEX.search(item.detail)
            return ("reindex", m.group(1)) if m else None
        if item.kind == "blob":
            return self._find_blob(item.object)
        if item.kind == "snapshot" and self.backups is not None:
            return self.backups.find_snapshot(item.object, self._snapshot_checksum(item.object))
        if item.kind == "archive" and self.backups is not None:
            entry = next((e for e in self.archive.list() if e.path.name == item.object), None)
            if entry is not None:
                found = self.backups.find_archive_file(entry.path.name, entry.checksum)
                return None if found is None else (entry.path, *found)
        return None

    def repair(self, item: Finding) -> bool:
        """Apply the repair :meth:`can_repair` found (looked up again: a backup may
        have been pruned meanwhile); True when it was applied."""
        source = self._source(item)
        if source is None:
            return False
        if item.kind == "integrity":
            if source == "salvage":
                self.repair_database()
            else:
                with self.store.atomic() as conn:
                    conn.execute(f"REINDEX INDEX {source[1]}")
        elif item.kind == "blob":
            self._put_blob(item.object, source)
        elif item.kind == "snapshot":
            self._put_snapshot(item.object, *source)
        elif item.kind == "archive":
            path, copy, backup_id = source
            write_atomic(path, copy.read_bytes())
            self._audit("archive", path.name, {"source": f"backup {backup_id}"})
        else:
            return False
        item.action = f"repaired from {self._describe(source)}"
        return True

    @staticmethod
    def _describe(source: Any) -> str:
        if source == "salvage":
            return "the newest verified backup and the rows still readable"
        if isinstance(source, tuple) and source and source[0] == "reindex":
            return f"a REINDEX of {source[1]}"
        if isinstance(source, BlobCopy):
            return source.origin
        return f"backup {source[-1]}" if isinstance(source, tuple) else str(source)

    # -- blobs ----------------------------------------------------------------------

    def _find_blob(self, digest: str) -> BlobCopy | None:
        if self.backups is not None and (found := self.backups.find_blob(digest)):
            return found
        found = _blob_from_snapshots(self.store, digest)
        if found is not None:
            return found
        finder = getattr(self.recovery, "find_blob", None)
        if callable(finder):
            raw = finder(digest)
            if isinstance(raw, bytes) and codec.checksum(raw) == digest:
                return BlobCopy(raw, codec.compress(raw), None, "the recovery manager")
        return None

    def _put_blob(self, digest: str, copy: BlobCopy) -> None:
        """Put the blob row back (or its body, when damaged) with its live reference
        count; the stored bytes and date are the copy's, so the row is the original."""
        st = self.store
        with st.atomic() as conn:
            refs = int(conn.execute(
                "SELECT (SELECT COUNT(*) FROM context_content WHERE blob_hash = ?)"
                " + (SELECT COUNT(*) FROM memory_entries WHERE blob_hash = ?)",
                (digest, digest)).fetchone()[0])
            cur = conn.execute("UPDATE content_blobs SET data = ?, size_bytes = ?,"
                               " stored_bytes = ? WHERE hash = ?",
                               (copy.packed, len(copy.raw), len(copy.packed), digest))
            if not cur.rowcount:
                conn.execute(
                    "INSERT INTO content_blobs (hash, data, size_bytes, stored_bytes,"
                    " ref_count, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (digest, copy.packed, len(copy.raw), len(copy.packed), refs,
                     st.ts(copy.created_at or st.now())))
            _audit_repair(st, conn, "blob", digest, {"source": copy.origin})

    # -- snapshots --------------------------------------------------------------------

    def _snapshot_checksum(self, snapshot_id: str) -> str | None:
        row = self.store.query_one("SELECT checksum FROM state_snapshots WHERE id = ?",
                                   (snapshot_id,))
        return None if row is None else str(row[0])

    def _put_snapshot(self, snapshot_id: str, row: dict[str, Any], backup_id: str) -> None:
        st = self.store
        data = row["state_data"]
        with st.atomic() as conn:
            conn.execute("UPDATE state_snapshots SET state_data = ?, size_bytes = ?,"
                         " compression_type = ?, checksum = ? WHERE id = ?",
                         (data, len(data), str(row.get("compression_type") or "zstd"),
                          str(row["checksum"]), snapshot_id))
            conn.execute("DELETE FROM statekeep_meta WHERE key = ?",
                         (f"{_QUARANTINE}{snapshot_id}",))
            _audit_repair(st, conn, "snapshot", snapshot_id, {"source": f"backup {backup_id}"})

    def quarantine(self, item: Finding) -> None:
        """Record a damaged snapshot with no good copy, so recovery never picks it."""
        st = self.store
        record = orjson.dumps({"reason": item.detail, "at": st.now().isoformat()}).decode()
        with st.atomic() as conn:
            conn.execute("INSERT INTO statekeep_meta (key, value) VALUES (?, ?)"
                         " ON CONFLICT (key) DO NOTHING", (f"{_QUARANTINE}{item.object}", record))
        item.action = "quarantined: never served; no identical copy in any backup"

    # -- the database file ------------------------------------------------------------

    def repair_database(self) -> SalvageReport:
        """Rebuild a damaged SQLite database and write it into the live file.

        A ``pre-repair`` copy of the damaged database is kept first. The rows are
        read under the write lock (no writer commits meanwhile); the rebuilt file
        must pass ``integrity_check`` before anything is written. It is then
        written in with the backup API, one write transaction. Between releasing
        the lock and that transaction taking it again a writer of another process
        could commit, and its write would be replaced: stop other writers before
        repairing a damaged database by hand (the monitor repairs in place because
        a damaged database fails writes that touch the damage anyway).
        """
        st = self.store
        live = _sqlite_file(st)
        if live is None:
            raise RecoveryError("only a SQLite database file can be rebuilt")
        backups = self.backups or BackupManager(st, archive=self.archive)
        evidence: str | None = None
        try:
            evidence = backups.backup_now(kind="pre-repair").id
        except StatekeepError as exc:
            log.error("could not keep a copy of the damaged database: %s", exc)
        timeout = st.config.busy_timeout_ms / 1000
        out = Path(live).with_name(f".{Path(live).name}.salvage-{new_id('rep')}.db")
        lock = sqlite3.connect(live, timeout=timeout, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            version = _schema_version(lock)
            base = next((b for b in backups.verified_backups()
                         if b.backend == "sqlite" and b.schema_version == version), None)
            base_file = None if base is None else base.file("database")
            report = salvage_sqlite(
                lock, out, base=None if base is None or base_file is None
                else base.path / base_file.path,
                base_backup_id=None if base is None else base.id,
                base_high_water=None if base is None else base.audit_high_water,
                reindex=reindex_file)
            check = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
            try:
                bad = [r[0] for r in check.execute("PRAGMA integrity_check") if r[0] != "ok"]
            finally:
                check.close()
            if bad:
                raise RecoveryError(f"the rebuilt database failed its integrity check ({bad[0]});"
                                    " nothing was changed")
        except sqlite3.Error as exc:
            raise RecoveryError(f"cannot rebuild {live}: {exc}; nothing was changed") from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                lock.execute("ROLLBACK")
            lock.close()
        try:
            install_sqlite(out, live, timeout=timeout)
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{out}{suffix}").unlink()
        if evidence is not None:
            report.notes.append(f"the damaged database was kept as backup {evidence}")
        self._audit("database", live, {**report.to_dict(), "evidence": evidence})
        if self.on_repair is not None:
            self.on_repair()
        return report

    def _audit(self, what: str, object_id: str, meta: dict[str, Any]) -> None:
        with self.store.atomic() as conn:
            _audit_repair(self.store, conn, what, object_id, meta)


def _audit_repair(store: Store, conn: Any, what: str, object_id: str,
                  meta: dict[str, Any]) -> None:
    """One ``repair`` audit row. Entity ``store``, like recovery's own rows: a repair
    puts back what was there, so replaying the log passes over it."""
    store.audit_row(conn, "repair", "store", store.store_id, None, None, user_id=None,
                    session_id=None, notify=False,
                    meta={"object": what, "id": object_id,
                          **{k: v for k, v in meta.items() if k != "tables"}})


def _blob_from_snapshots(store: Store, digest: str) -> BlobCopy | None:
    """A blob from the newest intact snapshot image holding it (whole-store and
    session images carry the blobs their content links use)."""
    manager = SnapshotManager(store)
    try:
        snaps = manager.list(limit=100_000)
    except StatekeepError:
        return None
    for snap in snaps:
        try:
            doc = manager.load(snap.id)
        except StatekeepError:
            continue
        for row in doc.get("tables", {}).get("content_blobs", []):
            if row.get("hash") != digest or not isinstance(row.get("data"), str):
                continue
            try:
                packed = base64.b64decode(row["data"])
            except ValueError:
                continue
            found = BlobCopy.checked(digest, packed, row.get("created_at"),
                                     f"snapshot {snap.id}")
            if found is not None:
                return found
    return None


# -- the monitor ---------------------------------------------------------------------


class AutoRecovery:
    """The health monitor: checks on an interval, repairs, escalates the rest.

    Runs in a daemon thread with a stop event (``start``/``stop``); one round is
    :meth:`check_and_repair`. ``on_escalate`` receives every finding that could
    not be repaired (a log line is written either way).
    """

    def __init__(self, store: Store, *, backups: BackupManager | None = None,
                 recovery: Any = None, interval: float | None = None,
                 archive: ArchiveTier | None = None,
                 on_escalate: Callable[[Finding], None] | None = None,
                 on_repair: Callable[[], None] | None = None) -> None:
        self.store = store
        self.interval = store.config.health_check_interval if interval is None else interval
        self.checker = HealthChecker(store, archive)
        #: The seed's names for the parts.
        self.integrity_checker = self.checker.integrity
        self.corruption_detector = self.checker.corruption
        self.auto_repair = AutoRepair(store, backups, recovery, archive=archive,
                                      on_repair=on_repair)
        self.on_escalate = on_escalate
        self.last_report: HealthReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, *, wal: bool = False) -> HealthReport:
        """Run every check; change nothing."""
        report = self.checker.run(wal=wal)
        for f in report.findings:
            if f.severity == "error":
                f.repairable = self.auto_repair.can_repair(f)
        self.last_report = report
        return report

    def check_and_repair(self, *, wal: bool = False) -> HealthReport:
        """One round of the monitor: check, repair what can be repaired, escalate."""
        return self.handle_corruption(self.check(wal=wal))

    def handle_corruption(self, report: HealthReport) -> HealthReport:
        """Repair every repairable finding, quarantine damaged snapshots that have no
        good copy, check again, and escalate what is still wrong."""
        todo = [f for f in report.findings if f.severity == "error" and not f.repaired]
        if not todo:
            return report
        # The database file first: a rebuild may change everything after it.
        database = [f for f in todo if f.kind == "integrity" and f.repairable
                    and self.store.dialect == "sqlite"]
        if database:
            try:
                report.salvage = self.auto_repair.repair_database()
                for f in database:
                    f.action = "rebuilt from the newest verified backup and the readable rows"
            except (StatekeepError, OSError) as exc:
                for f in database:
                    f.action = f"repair failed: {exc}"
            todo = [f for f in self.checker.run().findings if f.severity == "error"]
            for f in todo:
                f.repairable = self.auto_repair.can_repair(f)
        for f in todo:
            if f.kind == "integrity" and database:
                continue
            if f.repairable:
                try:
                    self.auto_repair.repair(f)
                except (StatekeepError, OSError) as exc:
                    f.action = f"repair failed: {exc}"
            elif f.kind == "snapshot":
                self.auto_repair.quarantine(f)
        after = self.checker.run()
        return self._settle(report, todo, after)

    def _settle(self, report: HealthReport, attempted: list[Finding],
                after: HealthReport) -> HealthReport:
        """Mark what the second round no longer finds as repaired; add what is new."""
        still = {f.key for f in after.findings}
        actions = {f.key: f.action for f in attempted if f.action}
        for f in report.findings:
            f.action = actions.get(f.key, f.action)
            # Only what the second round checks again can be seen to be gone.
            if f.severity == "error" and f.kind not in _NOT_RECHECKED and f.key not in still:
                f.repaired = True
                f.action = f.action or "gone after the other repairs"
        known = {f.key for f in report.findings}
        report.findings += [f for f in after.findings if f.key not in known]
        if report.salvage is not None:
            report.findings += [
                Finding("lost", row, "unreadable in the damaged database and in no backup",
                        action="not repairable; the damaged file is kept as a pre-repair"
                        " backup") for row in report.salvage.lost]
            report.findings += [
                Finding("lost", row, "unreadable in the damaged database; the backup's"
                        " older version was kept", action="not repairable")
                for row in report.salvage.changed_and_kept_old]
        for f in report.remaining:
            self.escalate_corruption(f)
        self.last_report = report
        return report

    def escalate_corruption(self, item: Finding) -> None:
        """What could not be repaired goes to a person: the log and ``on_escalate``."""
        log.error("statekeep health: %s %s: %s%s", item.kind, item.object, item.detail,
                  f" ({item.action})" if item.action else "")
        if self.on_escalate is not None:
            try:
                self.on_escalate(item)
            except Exception:  # a failing alert hook must not stop the monitor
                log.exception("the escalation hook failed")

    # -- the thread ---------------------------------------------------------------------

    def monitor_health(self) -> None:
        """The monitor loop (the thread's body): a round, then wait for the interval."""
        while not self._stop.is_set():
            try:
                self.check_and_repair()
            except Exception:  # the monitor must outlive one failed round
                log.exception("health check round failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        """Start the monitor (no-op when the interval is 0 or it is running)."""
        if self.interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.monitor_health, daemon=True,
                                        name="statekeep-health")
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the monitor; a round in progress finishes first."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)


# -- helpers -------------------------------------------------------------------------


def _snapshot_problem(sid: str, data: Any, checksum: str, size: Any,
                      compression: Any) -> str | None:
    if data is None:
        return f"snapshot {sid} has no image"
    if (compression or "zstd") != "zstd":
        return f"snapshot {sid} has an unknown compression {compression!r}"
    blob = bytes(data)
    if size is not None and int(size) != len(blob):
        return f"snapshot {sid} is corrupt: its size is not the recorded one"
    try:
        decode_image(blob, checksum, what=f"snapshot {sid}")
    except SnapshotCorruptError as exc:
        return str(exc)
    return None


def _fk_object(problem: str) -> str:
    """``context_content row 1`` out of SQLite's or PostgreSQL's foreign-key sentence."""
    head = problem.split(" refers", 1)[0]
    return head.split(": ", 1)[1] if ": " in head else head


def _all(store: Store, sql: str, params: tuple[Any, ...]) -> list[Any]:
    with store.reading() as conn:
        return conn.execute(sql, params).fetchall()


def _sqlite_file(store: Store) -> str | None:
    if store.dialect != "sqlite":
        return None
    path = sqlite_path(store.config.db)
    return None if path == ":memory:" else str(Path(path).resolve())


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute(f"SELECT MAX(version) FROM {MIGRATIONS_TABLE}").fetchone()[0]
                   or 0)
    except sqlite3.DatabaseError:
        return -1
