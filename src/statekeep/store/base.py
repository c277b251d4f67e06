"""The store's transaction machinery, shared by every SQL backend.

A backend (``sqlite.py``, ``postgres.py``) supplies connections, the few
dialect differences (placeholders, how timestamps and JSON travel, error
translation) and its own health checks. Everything else -- the domain rules,
the audit rows, the SQL text -- lives once, in the entity modules that
subclass :class:`StoreCore`.

Transactions nest: the outermost :meth:`StoreCore.atomic` opens a real
transaction (``BEGIN IMMEDIATE`` on SQLite, so the write lock is taken up
front and never upgraded mid-transaction), inner ones are savepoints.
Callbacks registered with :meth:`StoreCore.after_commit` run only once the
outermost commit has returned, so a cache is never invalidated for a write
that then rolls back, and never left valid for one that committed.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NoReturn, Protocol

from statekeep import codec
from statekeep.config import StateConfig
from statekeep.errors import StatekeepError, StoreError, ValidationError

__all__ = [
    "AUDIT_INSERT",
    "UNSET",
    "Change",
    "ChangeListener",
    "Connection",
    "Cursor",
    "StoreCore",
    "Unset",
    "utcnow",
]

#: The one INSERT every audit row goes through (single and batched writes).
AUDIT_INSERT = (
    "INSERT INTO audit_log (event_type, entity_type, entity_id, old_value, new_value,"
    " change_metadata, user_id, session_id, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

log = logging.getLogger("statekeep.store")


class Unset(Enum):
    """Sentinel type for 'argument not given' where None is a real value."""

    UNSET = 0


UNSET = Unset.UNSET


def utcnow() -> datetime:
    """The default clock: an aware UTC datetime."""
    return datetime.now(UTC)


class Cursor(Protocol):
    """The slice of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The slice of a DB-API connection the store uses (``?`` placeholders)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq: Any, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Change:
    """What a committed transaction changed: one entity kind, some ids, one session.

    Listeners (caches, the cross-process invalidation bus) receive these only
    after the commit returned, so they never act on a write that rolled back.
    """

    event: str
    entity_type: str
    entity_ids: tuple[str, ...]
    session_id: str | None
    #: For context items: the (context_type, context_key) of each id, which is
    #: how caches key them.
    keys: tuple[tuple[str, str], ...] = ()


ChangeListener = Callable[[Change], None]
#: Told of every finished outermost transaction: "read" or "write", its
#: duration in seconds, and whether it failed (metrics, query statistics).
TxObserver = Callable[[str, float, bool], None]


class _TxState(threading.local):
    conn: Connection | None = None
    depth: int = 0
    hooks: list[Callable[[], None]] | None = None


class StoreCore(ABC):
    """Connections, transactions, value conversion and after-commit hooks."""

    #: "sqlite" or "postgresql"; the migrations directory has the same name.
    dialect: str
    #: The URL or path this store was opened with (secrets removed).
    location: str
    #: Appended to a write transaction's reads of rows it is about to change.
    #: SQLite has one writer at a time and needs nothing; PostgreSQL's READ
    #: COMMITTED would let two writers read one row and both act on it.
    row_lock: str = ""
    #: The driver's exception types: only these are translated to StatekeepError.
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self, config: StateConfig, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.clock = clock
        self._tx = _TxState()
        self._closed = False
        self._listeners: list[ChangeListener] = []
        # Empty unless metrics are on: then each outermost transaction costs two
        # clock reads and one call per observer, and nothing otherwise.
        self._tx_observers: tuple[TxObserver, ...] = ()

    # -- what a backend supplies ------------------------------------------

    @abstractmethod
    def _acquire(self) -> Connection:
        """A connection for this thread's next transaction or read."""

    @abstractmethod
    def _release(self, conn: Connection) -> None:
        """Give back a connection obtained from :meth:`_acquire`."""

    @abstractmethod
    def _begin(self, conn: Connection) -> None:
        """Start a write transaction (taking the write lock where there is one)."""

    @abstractmethod
    def _translate(self, exc: Exception) -> StatekeepError:
        """Map a driver exception to the statekeep error tree."""

    @abstractmethod
    def ts(self, value: datetime) -> Any:
        """A UTC datetime as this backend's query parameter."""

    @abstractmethod
    def ts_out(self, value: Any) -> datetime:
        """A timestamp column value as an aware UTC datetime."""

    @abstractmethod
    def json_in(self, data: bytes) -> Any:
        """JSON bytes (from :func:`codec.dumps`) as a query parameter."""

    @abstractmethod
    def json_out(self, value: Any) -> Any:
        """A JSON column value as Python data."""

    @abstractmethod
    def integrity_problems(self) -> list[str]:
        """The database's own integrity and foreign-key checks; empty when healthy."""

    @abstractmethod
    def close(self) -> None:
        """Flush pending bookkeeping and release every connection."""

    @abstractmethod
    def _close_connections(self) -> None:
        """Release every connection this process opened (called once, by close)."""

    # -- transactions -------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        """A write transaction; nested calls become savepoints."""
        self._check_open()
        st = self._tx
        if st.depth:
            assert st.conn is not None
            conn = st.conn
            name = f"sk_sp{st.depth}"
            conn.execute(f"SAVEPOINT {name}")
            st.depth += 1
            try:
                yield conn
            except BaseException:
                st.depth -= 1
                conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            st.depth -= 1
            conn.execute(f"RELEASE SAVEPOINT {name}")
            return

        observers = self._tx_observers
        started = time.perf_counter() if observers else 0.0
        conn = self._acquire()
        try:
            self._begin(conn)
        except Exception as exc:
            self._release(conn)
            if observers:
                self._observed(observers, "write", started, failed=True)
            self._reraise(exc)
        st.conn, st.depth, st.hooks = conn, 1, []
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if observers:
                self._observed(observers, "write", started, failed=True)
            hooks = None
            try:
                conn.execute("ROLLBACK")
            except Exception:  # the transaction may already be gone
                log.debug("rollback after failure also failed", exc_info=True)
            if isinstance(exc, Exception):
                self._reraise(exc)
            raise
        else:
            hooks = st.hooks
            if observers:
                self._observed(observers, "write", started, failed=False)
        finally:
            st.conn, st.depth, st.hooks = None, 0, None
            self._release(conn)
        for hook in hooks or ():
            try:
                hook()
            except Exception:  # a cache hiccup must not fail a committed write
                log.warning("after-commit hook failed", exc_info=True)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads: the open transaction's, else a fresh one."""
        self._check_open()
        st = self._tx
        if st.conn is not None:
            yield st.conn
            return
        observers = self._tx_observers
        started = time.perf_counter() if observers else 0.0
        conn = self._acquire()
        failed = False
        try:
            yield conn
        except Exception as exc:
            failed = True
            self._reraise(exc)
        finally:
            self._release(conn)
            if observers:
                self._observed(observers, "read", started, failed=failed)

    #: SQL for the hours from ``{col}`` to a ``?`` parameter (the current time);
    #: the relevance ranking reads ages from the database rather than parsing
    #: thousands of timestamps in Python. Dialects override.
    hours_since_sql = "(julianday(?) - julianday({col})) * 24.0"

    #: How :meth:`snapshot` opens a read-only transaction (dialects override).
    snapshot_begin = "BEGIN"

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """Several reads that must agree with each other: one read transaction.

        A reconstruction reads the session, its tasks, its context and its
        relations in separate queries; without a snapshot a write committing
        between them could pair a task with context that was not there yet.
        Inside a write transaction this is that transaction's connection.
        Nothing may be written inside a snapshot: it is read-only.
        """
        self._check_open()
        st = self._tx
        if st.conn is not None:
            yield st.conn
            return
        conn = self._acquire()
        try:
            conn.execute(self.snapshot_begin)
            st.conn = conn  # the store's own reads inside join the snapshot
            try:
                yield conn
            finally:
                st.conn = None
                conn.execute("ROLLBACK")  # read-only: nothing to commit
        except Exception as exc:
            self._reraise(exc)
        finally:
            self._release(conn)

    def query_one(self, sql: str, params: Sequence[Any]) -> Any:
        """One row (or None) for a point read: :meth:`reading` without a generator,
        because point reads are the hottest path of the store."""
        conn = self._tx.conn
        if conn is not None:
            return conn.execute(sql, params).fetchone()
        self._check_open()
        observers = self._tx_observers
        started = time.perf_counter() if observers else 0.0
        conn = self._acquire()
        failed = False
        try:
            return conn.execute(sql, params).fetchone()
        except Exception as exc:
            failed = True
            self._reraise(exc)
        finally:
            self._release(conn)
            if observers:
                self._observed(observers, "read", started, failed=failed)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once the current outermost transaction has committed.

        Outside a transaction the hook runs at once.
        """
        if self._tx.hooks is None:
            hook()
        else:
            self._tx.hooks.append(hook)

    def add_tx_observer(self, observer: TxObserver) -> None:
        """Call ``observer(kind, seconds, failed)`` after every outermost transaction
        (``kind`` "read" or "write"); it must be quick and must not raise."""
        self._tx_observers = (*self._tx_observers, observer)

    def remove_tx_observer(self, observer: TxObserver) -> None:
        self._tx_observers = tuple(o for o in self._tx_observers if o is not observer)

    @staticmethod
    def _observed(observers: tuple[TxObserver, ...], kind: str, started: float, *,
                  failed: bool) -> None:
        elapsed = time.perf_counter() - started
        for observer in observers:
            try:
                observer(kind, elapsed, failed)
            except Exception:  # a metrics hiccup must never fail a store call
                log.debug("transaction observer failed", exc_info=True)

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` with every :class:`Change` once its transaction committed."""
        self._listeners.append(listener)

    def changed(self, event: str, entity_type: str, entity_ids: Sequence[str],
                session_id: str | None, keys: Sequence[tuple[str, str]] = ()) -> None:
        """Announce a change made in the current transaction (delivered after commit)."""
        if not self._listeners:
            return
        change = Change(event, entity_type, tuple(entity_ids), session_id, tuple(keys))

        def deliver() -> None:
            for listener in self._listeners:
                listener(change)

        self.after_commit(deliver)

    def _reraise(self, exc: Exception) -> NoReturn:
        """Translate a driver error at this one boundary; let anything else
        (statekeep's own errors, the caller's exceptions) through unchanged."""
        if isinstance(exc, self.driver_errors):
            raise self._translate(exc) from exc
        raise exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.location} is closed")

    # -- value helpers ------------------------------------------------------

    def now(self) -> datetime:
        return self.clock()

    def json_param(self, value: Any, field: str) -> Any:
        """Validate and encode an optional JSON value for a query."""
        if value is None:
            return None
        return self.json_in(codec.dumps(value, field=field,
                                        max_bytes=self.config.max_value_bytes))

    def json_col(self, value: Any) -> Any:
        return None if value is None else self.json_out(value)

    def ts_col(self, value: Any) -> datetime | None:
        return None if value is None else self.ts_out(value)

    def ts_arg(self, value: object, field: str) -> datetime | None:
        """Validate a caller-supplied optional datetime (must be timezone-aware)."""
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValidationError(
                f"{field} must be a datetime, not {type(value).__name__}", field=field
            )
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(
                f"{field} must be timezone-aware (use datetime.now(timezone.utc))",
                field=field,
            )
        return value.astimezone(UTC)

    def audit_row(
        self,
        conn: Connection,
        event_type: str,
        entity_type: str,
        entity_id: str,
        old: Any,
        new: Any,
        *,
        user_id: str | None,
        session_id: str | None,
        meta: Any = None,
        at: datetime | None = None,
        notify: bool = True,
    ) -> None:
        """Write one audit row inside the caller's transaction.

        ``old`` and ``new`` are entity dicts built by statekeep from validated
        values (or their JSON bytes, already encoded), so they skip the strict
        checks of :func:`codec.dumps`. ``notify=False`` when the caller announces
        the change itself, with more detail.
        """
        if notify:
            self.changed(event_type, entity_type, (entity_id,), session_id)
        conn.execute(AUDIT_INSERT, (
            event_type,
            entity_type,
            entity_id,
            self._audit_json(old),
            self._audit_json(new),
            self._audit_json(meta),
            user_id,
            session_id,
            self.ts(at or self.now()),
        ))

    def _audit_json(self, value: Any) -> Any:
        if value is None:
            return None
        return self.json_in(value if isinstance(value, bytes) else codec.dumps_trusted(value))
