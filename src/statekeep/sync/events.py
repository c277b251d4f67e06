"""What propagation carries: one committed change of one synchronised key.

The store's sync transaction produces these; the propagator hands them to
subscribers in this process and, through a transport, in other processes.
An event is built only from committed data, so a subscriber never sees a
write that rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["SyncEvent"]


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """Key ``key`` of ``scope`` became ``value`` at ``version``, written by ``component``."""

    scope: str
    key: str
    value: Any
    version: int
    #: The component whose write this is; it is never notified of it.
    component: str
    committed_at: datetime
