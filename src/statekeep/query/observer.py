"""The statement observer: statistics for every statement, and which tables changed.

The store's connections call it around each ``execute``: SQLite's through a
``sqlite3.Connection`` subclass (the fast path is inlined there, see
``statekeep.store.sqlite``), PostgreSQL's through ``_PgConnection``, which
calls :meth:`StatementObserver.observe`.

Write tracking is what lets the result cache be exact about its own process's
writes. A write statement's tables (:func:`sqltext.parse`) are remembered per
connection while its transaction is open, and bumped in
:class:`TableGenerations` only once the connection is out of the transaction
-- after ``COMMIT`` returned (or ``ROLLBACK``: bumping for a write that did not
happen costs a cache miss, never a wrong answer). Bumping *after* the commit is
the point: a reader that saw the new generation also sees the new rows, and a
result read before the commit carries the old generation and is never served
after it. A write outside a transaction (autocommit) is bumped at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from statekeep.query.sqltext import ALL_TABLES
from statekeep.query.stats import QueryStatistics, Shape

__all__ = ["StatementObserver", "TableGenerations"]

_perf = time.perf_counter


class TableGenerations:
    """A counter per table, bumped after every committed write to it; plus an epoch
    that any "everything may have changed" event (DDL, a foreign commit, a
    restore) bumps. A cached result is valid while the counters it was read
    under are unchanged."""

    __slots__ = ("_gens", "_lock", "epoch")

    def __init__(self) -> None:
        self._gens: dict[str, int] = {}
        self._lock = threading.Lock()
        self.epoch = 0

    def bump(self, tables: Iterable[str]) -> None:
        with self._lock:
            for table in tables:
                if table == ALL_TABLES:
                    self.epoch += 1
                else:
                    self._gens[table] = self._gens.get(table, 0) + 1

    def bump_all(self) -> None:
        with self._lock:
            self.epoch += 1

    def stamp(self, tables: tuple[str, ...]) -> tuple[int, ...]:
        """The counters of ``tables`` now (epoch first); compare, never order."""
        get = self._gens.get
        return (self.epoch, *[get(t, 0) for t in tables])

    def generation(self, table: str) -> int:
        return self._gens.get(table, 0)


class StatementObserver:
    """Feeds :class:`QueryStatistics` and :class:`TableGenerations` from executes."""

    __slots__ = ("generations", "pending", "stats")

    def __init__(self, stats: QueryStatistics, generations: TableGenerations) -> None:
        self.stats = stats
        self.generations = generations
        #: id(connection) -> tables written in its open transaction.
        self.pending: dict[int, set[str]] = {}

    def track(self, shape: Shape, key: int, in_transaction: bool) -> None:
        """After a statement: remember its writes; once out of the transaction,
        bump everything the transaction wrote."""
        if shape.writes:
            if in_transaction:
                self.pending.setdefault(key, set()).update(shape.writes)
                return
            tables = self.pending.pop(key, set())
            tables.update(shape.writes)
            self.generations.bump(tables)
            return
        if not in_transaction:
            done = self.pending.pop(key, None)
            if done:
                self.generations.bump(done)

    def failed(self, shape: Shape) -> None:
        shape.errors += 1

    def observe(self, run: Callable[[str, Any], Any], sql: str, params: Any, key: int,
                in_transaction: Callable[[], bool]) -> Any:
        """``run(sql, params)`` observed: the generic path (PostgreSQL's connection).

        ``key`` identifies the connection whose transaction the statement joins;
        ``in_transaction()`` tells, afterwards, whether that connection is still
        inside one.
        """
        stats = self.stats
        shape = stats.by_text.get(sql) or stats.shape_of(sql)
        n = shape.count
        shape.count = n + 1
        try:
            if n & stats.mask:
                cur = run(sql, params)
            else:
                start = _perf()
                cur = run(sql, params)
                shape.timed(_perf() - start, getattr(cur, "rowcount", -1))
        except BaseException:
            shape.errors += 1
            if self.pending and not in_transaction():
                # Usually a rollback, but a COMMIT whose answer was lost may have
                # committed: bumping costs a miss, not bumping a wrong answer.
                done = self.pending.pop(key, None)
                if done:
                    self.generations.bump(done)
            raise
        if shape.writes is not None or self.pending:
            self.track(shape, key, in_transaction())
        return cur
