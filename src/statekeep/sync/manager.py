"""The seed's ``SyncManager``: components synchronise state through the store.

The manager joins the store's exact conflict detection to the resolver's
policy, and hands committed changes to propagation. It holds no state of its
own -- versions, bases and pending conflicts live in the store -- so any
number of managers, in any number of processes, agree on every key.

Propagation happens strictly after commit (``store.after_commit``): a
subscriber never hears of a write that rolled back, and a sync made inside a
caller's transaction is announced only when that transaction commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from statekeep.config import StateConfig
from statekeep.models import ConflictStatus, SyncConflict, SyncEntry
from statekeep.store import Store
from statekeep.store.base import UNSET, Unset
from statekeep.store.sync import (
    CONFLICT_CHOICES,
    Conflict,
    ConflictResolution,
    KeyResolution,
    SyncResult,
)
from statekeep.sync.events import SyncEvent
from statekeep.sync.merge import merge_states
from statekeep.sync.resolver import ConflictResolver

__all__ = [
    "CONFLICT_CHOICES",
    "ConflictResolution",
    "KeyResolution",
    "SyncManager",
    "SyncPublisher",
    "SyncResult",
]


class SyncPublisher(Protocol):
    """What the manager needs of a propagator: hand it committed events."""

    def publish(self, events: Sequence[SyncEvent]) -> None: ...


class SyncManager:
    """Synchronise components' state: write, detect, resolve, propagate."""

    def __init__(self, store: Store, config: StateConfig | None = None,
                 propagator: SyncPublisher | None = None) -> None:
        self.store = store
        self.config = config or store.config
        self.resolver = ConflictResolver(self.config)
        self.propagator = propagator

    def sync_state(
        self,
        component: str,
        state: Mapping[str, Any],
        *,
        scope: str = "global",
        base_versions: Mapping[str, int] | None = None,
        strategy: str | None = None,
    ) -> SyncResult:
        """Push ``component``'s ``state``; conflicts are settled by ``strategy``
        (forced for every conflicting key) or by the resolver's selection.

        Bases default to the versions the component last read or wrote. One
        transaction: on any error nothing is written.
        """
        resolve = self.resolver.policy(strategy)
        if strategy == "rule_based" and isinstance(state, Mapping):
            self.resolver.check_rules(state)
        result = self.store.sync_write(component, state, scope=scope,
                                       base_versions=base_versions, resolve=resolve)
        self.propagate_state_change(result.events)
        return result

    def detect_conflicts(
        self,
        component: str,
        state: Mapping[str, Any],
        *,
        scope: str = "global",
        base_versions: Mapping[str, int] | None = None,
    ) -> list[Conflict]:
        """The conflicts :meth:`sync_state` would meet now; writes nothing."""
        return self.store.sync_preview(component, state, scope=scope,
                                       base_versions=base_versions)

    def propagate_state_change(self, events: Sequence[SyncEvent]) -> None:
        """Publish committed changes once the enclosing transaction commits.

        Takes the events a committed sync produced, not a raw state dict as the
        seed did: only what the store committed may reach other components.
        """
        propagator = self.propagator
        if propagator is None or not events:
            return
        batch = tuple(events)
        self.store.after_commit(lambda: propagator.publish(batch))

    def get_state(
        self,
        scope: str = "global",
        keys: Sequence[str] | None = None,
        *,
        component: str | None = None,
    ) -> dict[str, SyncEntry]:
        """The scope's keys; with ``component``, the read becomes its bases."""
        return self.store.get_sync_state(scope, keys, component=component)

    def conflicts(
        self,
        *,
        status: ConflictStatus | str | None = ConflictStatus.PENDING,
        scope: str | None = None,
        key: str | None = None,
        component: str | None = None,
        limit: int = 100,
    ) -> list[SyncConflict]:
        """Conflicts oldest first; pending ones unless ``status`` says otherwise."""
        return self.store.list_conflicts(status=status, scope=scope, key=key,
                                         component=component, limit=limit)

    def get_conflict(self, conflict_id: str) -> SyncConflict:
        return self.store.get_conflict(conflict_id)

    def resolve_conflict(
        self,
        conflict_id: str,
        choice: str,
        *,
        value: Any | Unset = UNSET,
        resolved_by: str | None = None,
    ) -> ConflictResolution:
        """A person's decision on a pending conflict (``current``, ``proposed``,
        ``merge`` or ``value``); a changed key is propagated like any write."""
        result = self.store.resolve_conflict(conflict_id, choice, value=value,
                                             resolved_by=resolved_by, merge=merge_states)
        self.propagate_state_change(result.events)
        return result
