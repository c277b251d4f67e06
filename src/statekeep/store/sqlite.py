"""The embedded SQLite backend (stdlib ``sqlite3``): the default store.

Every SQLite setting lives here. Each thread gets its own connection (SQLite
connections must not be shared mid-transaction), recreated after ``fork``
because a connection inherited by a child process corrupts locks. WAL lets
readers run beside the one writer; writers take the lock up front with
``BEGIN IMMEDIATE`` so a transaction never fails half-way on a lock upgrade.

Durability: in WAL mode with ``synchronous=NORMAL`` a committed transaction is
in the WAL file before ``COMMIT`` returns, so it survives the process being
killed; only a power loss or OS crash can lose the last transactions. With
``durability="power"`` (``synchronous=FULL``) the WAL is fsynced at every
commit and those survive too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from statekeep.config import StateConfig
from statekeep.errors import (
    ConflictError,
    DuplicateError,
    StatekeepError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from statekeep.query.observer import StatementObserver
from statekeep.store.base import Connection, utcnow
from statekeep.store.protocol import Store

__all__ = ["SQLiteStore", "sqlite_path"]


def sqlite_path(location: str) -> str:
    """The file path of a plain path, ``~/path``, ``sqlite:///path`` or ``file://path``."""
    for prefix in ("sqlite:///", "sqlite://", "file://"):
        if location.startswith(prefix):
            location = location[len(prefix):]  # sqlite:////abs is /abs, as elsewhere
            break
    return location if location == ":memory:" else str(Path(location).expanduser())


_execute = sqlite3.Connection.execute
_executemany = sqlite3.Connection.executemany
_perf = time.perf_counter


class _ObservedConnection(sqlite3.Connection):
    """A connection whose statements feed the store's statement observer.

    The observer's generic path is inlined here because a point read is a few
    microseconds: per statement, one dict lookup and one increment; the clock,
    the histogram and the row count only on sampled calls (statekeep.query.stats).
    """

    observer: StatementObserver

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        obs = self.observer
        stats = obs.stats
        shape = stats.by_text.get(sql) or stats.shape_of(sql)
        n = shape.count
        shape.count = n + 1
        try:
            if n & stats.mask:
                cur = _execute(self, sql, parameters)
            else:
                start = _perf()
                cur = _execute(self, sql, parameters)
                shape.timed(_perf() - start, cur.rowcount)
        except BaseException:
            shape.errors += 1
            if obs.pending and not self.in_transaction:
                obs.track(shape, id(self), False)
            raise
        if shape.writes is not None or obs.pending:
            obs.track(shape, id(self), self.in_transaction)
        return cur

    def executemany(self, sql: str, seq: Any, /) -> sqlite3.Cursor:
        cur: sqlite3.Cursor = self.observer.observe(
            lambda q, p: _executemany(self, q, p), sql, seq, id(self),
            lambda: self.in_transaction)
        return cur


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = 0


class SQLiteStore(Store):
    """Store on one SQLite database file."""

    dialect = "sqlite"
    driver_errors = (sqlite3.Error,)

    def __init__(self, config: StateConfig, *, clock: Any = utcnow) -> None:
        super().__init__(config, clock=clock)
        self.path = sqlite_path(config.db)
        self.location = self.path
        self._memory = self.path == ":memory:"
        self._local = _Local()
        self._all: list[tuple[sqlite3.Connection, int]] = []
        self._all_lock = threading.Lock()
        # An in-memory database exists only inside one connection, so it is
        # shared by all threads and serialised by this lock.
        self._mem_lock = threading.RLock()
        if not self._memory:
            parent = Path(self.path).expanduser().resolve().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(f"cannot create {parent}: {exc}") from None
        self._connect()  # fail fast on an unopenable file

    # -- connections ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        local = self._local
        pid = os.getpid()
        if local.conn is not None and local.pid == pid:
            return local.conn
        if self._memory and self._all:
            local.conn, local.pid = self._all[0][0], pid
            return local.conn
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.config.busy_timeout_ms / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # per-thread by design; close() runs elsewhere
                cached_statements=256,
                factory=sqlite3.Connection if self._observer is None else _ObservedConnection,
            )
            if self._observer is not None:
                conn.observer = self._observer  # type: ignore[attr-defined]
            conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_ms)}")
            if not self._memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"could not put {self.path} in WAL mode (got {mode})")
            sync = "FULL" if self.config.durability == "power" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open SQLite database {self.path}: {exc}") \
                from None
        local.conn, local.pid = conn, pid
        with self._all_lock:
            self._all.append((conn, pid))
        return conn

    def _acquire(self) -> Connection:
        if self._memory:
            self._mem_lock.acquire()
        conn: Connection = self._connect()
        return conn

    def _release(self, conn: Connection) -> None:
        if self._memory:
            self._mem_lock.release()

    def _begin(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    # -- values -----------------------------------------------------------

    def ts(self, value: datetime) -> str:
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def ts_out(self, value: Any) -> datetime:
        # Parsing the offset is ~6x cheaper than replace(tzinfo=...) afterwards.
        return datetime.fromisoformat(value + "+00:00")

    def json_in(self, data: bytes) -> str:
        return data.decode()

    def json_out(self, value: Any) -> Any:
        return orjson.loads(value)

    # -- errors -----------------------------------------------------------

    def _translate(self, exc: Exception) -> StatekeepError:
        if isinstance(exc, StatekeepError):
            return exc
        msg = str(exc)
        if isinstance(exc, sqlite3.IntegrityError):
            if "UNIQUE" in msg or "PRIMARY KEY" in msg:
                return DuplicateError(f"already exists: {msg}")
            if "FOREIGN KEY" in msg:
                return ConflictError(f"refers to an entity that does not exist: {msg}")
            return ValidationError(f"rejected by the schema: {msg}")
        if isinstance(exc, sqlite3.OperationalError) and "locked" in msg:
            return StoreError(
                f"database {self.path} stayed locked for {self.config.busy_timeout_ms} ms: {msg}")
        if isinstance(exc, sqlite3.DatabaseError):
            return StoreError(f"SQLite error on {self.path}: {msg}")
        return StoreError(f"unexpected error on {self.path}: {type(exc).__name__}: {msg}")

    # -- maintenance ------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        with self.reading() as conn:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()
                        if r[0] != "ok"]
            problems += [f"foreign key: {r[0]} row {r[1]} refers to missing {r[2]}"
                         for r in conn.execute("PRAGMA foreign_key_check").fetchall()]
        return problems

    def backup_to(self, name: str, directory: Path | None = None) -> str:
        """Online copy of the database with SQLite's backup API; returns its path."""
        if self._memory:
            raise StoreError("an in-memory database cannot be backed up to a file")
        folder = directory or Path(self.path).expanduser().resolve().parent / "backups"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        dest = sqlite3.connect(target)
        try:
            with self.reading() as conn:
                assert isinstance(conn, sqlite3.Connection)
                conn.backup(dest)
        finally:
            dest.close()
        return str(target)

    def _close_connections(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        pid = os.getpid()
        for conn, owner in conns:
            # A connection inherited across fork belongs to the parent:
            # closing it here would drop the parent's POSIX file locks.
            if owner == pid:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self._local = _Local()
