"""The ``Store`` interface every backend implements.

``Store`` is the composed abstract class: transaction machinery
(:mod:`~statekeep.store.base`) plus one small module per entity. A backend
subclasses it and supplies only connections, value conversion, error
translation and health checks -- see :mod:`statekeep.store.sqlite` and
:mod:`statekeep.store.postgres`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from statekeep.config import StateConfig
from statekeep.store.audit import AuditStore
from statekeep.store.base import utcnow
from statekeep.store.context import AccessLog

__all__ = ["Store"]


class Store(AuditStore):
    """Sessions, tasks, context, decisions, preferences and the audit log."""

    def __init__(self, config: StateConfig, *, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(config, clock=clock)
        self.access_log = AccessLog(self, config.access_flush_interval)

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
