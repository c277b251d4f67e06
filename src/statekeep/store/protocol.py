"""The ``Store`` interface every backend implements.

``Store`` is the composed abstract class: transaction machinery
(:mod:`~statekeep.store.base`) plus one small module per entity -- sessions,
tasks, context, decisions and preferences, the audit log, content blobs,
context relations (:mod:`~statekeep.store.relations`) and full-text search
(:mod:`~statekeep.store.search`, which also keeps SQLite's search index in
step at the end of every write transaction), and the state components
synchronise (:mod:`~statekeep.store.sync`). A backend
subclasses it and supplies only connections, value conversion, error
translation and health checks -- see :mod:`statekeep.store.sqlite` and
:mod:`statekeep.store.postgres`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from statekeep.config import StateConfig
from statekeep.ids import new_id
from statekeep.store.audit import AuditStore
from statekeep.store.base import utcnow
from statekeep.store.blobs import BlobStore
from statekeep.store.context import AccessLog
from statekeep.store.indexes import IndexStore
from statekeep.store.relations import RelationStore
from statekeep.store.search import SearchStore
from statekeep.store.sync import SyncStore

__all__ = ["Store"]


class Store(AuditStore, BlobStore, RelationStore, SearchStore, SyncStore, IndexStore):
    """Sessions, tasks, context (with relations, content and search), decisions,
    preferences, blobs, synchronised state and the audit log."""

    def __init__(self, config: StateConfig, *, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(config, clock=clock)
        self.access_log = AccessLog(self, config.access_flush_interval)

    @property
    def store_id(self) -> str:
        """This database's own id, created on first use and kept in ``statekeep_meta``.

        Caches and channels are named after it, not after the path or URL, so
        every process that opens the database (by any path) agrees on the name,
        and two databases never do.
        """
        cached: str | None = self.__dict__.get("_store_id")
        if cached is None:
            with self.atomic() as conn:
                conn.execute("INSERT INTO statekeep_meta (key, value) VALUES ('store_id', ?)"
                             " ON CONFLICT (key) DO NOTHING", (new_id("store"),))
                row = conn.execute(
                    "SELECT value FROM statekeep_meta WHERE key = 'store_id'").fetchone()
            cached = self.__dict__["_store_id"] = str(row[0])
        return cached

    def close(self) -> None:
        """Flush the batched access counts, then release every connection."""
        if self._closed:
            return
        self.access_log.stop()
        try:
            self.access_log.flush()
        finally:
            self._closed = True
            self._close_connections()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
