"""The domain records of the seed's schema, their statuses and legal transitions.

Records are frozen dataclasses: a value read from the store (or a cache) can
be shared between threads and callers without anyone changing it under the
others. Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar, cast, get_args, get_type_hints

from statekeep.errors import InvalidStatusError, InvalidTransitionError

__all__ = [
    "AuditEvent",
    "ConflictStatus",
    "ContextItem",
    "Decision",
    "Page",
    "Preference",
    "RecoveryPoint",
    "Session",
    "SessionStatus",
    "Snapshot",
    "SnapshotType",
    "SyncConflict",
    "SyncEntry",
    "Task",
    "TaskStatus",
    "TaskTree",
    "check_session_transition",
    "check_task_transition",
]


E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


class SessionStatus(StrEnum):
    """Lifecycle of a session (seed: sessions.status CHECK)."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"

    @classmethod
    def parse(cls, value: object, field: str = "status") -> SessionStatus:
        return _parse_enum(cls, value, field)


class TaskStatus(StrEnum):
    """Lifecycle of a task (seed: tasks.status CHECK)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def parse(cls, value: object, field: str = "status") -> TaskStatus:
        return _parse_enum(cls, value, field)

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def _parse_enum(cls: type[E], value: object, field: str) -> E:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in cls)
    raise InvalidStatusError(
        f"{field} {value!r} is not one of: {allowed}", field=field
    )


# Sessions may pause and resume freely; a failed session may be resumed (the
# agent died, a person restarts it); a completed session is final.
_SESSION_MOVES: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.ACTIVE: frozenset(
        {SessionStatus.PAUSED, SessionStatus.COMPLETED, SessionStatus.FAILED}
    ),
    SessionStatus.PAUSED: frozenset(
        {SessionStatus.ACTIVE, SessionStatus.COMPLETED, SessionStatus.FAILED}
    ),
    SessionStatus.FAILED: frozenset({SessionStatus.ACTIVE}),
    SessionStatus.COMPLETED: frozenset(),
}

# pending -> in_progress -> completed | failed | cancelled; pending may be
# cancelled (or fail before it starts); a failed task is retried by going back
# to pending, which counts a retry.
_TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED, TaskStatus.FAILED}
    ),
    TaskStatus.IN_PROGRESS: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


def check_session_transition(entity_id: str, old: SessionStatus, new: SessionStatus) -> None:
    """Raise InvalidTransitionError unless ``old -> new`` is allowed."""
    if new != old and new not in _SESSION_MOVES[old]:
        raise InvalidTransitionError(
            f"session {entity_id!r} cannot go from {old.value} to {new.value}"
        )


def check_task_transition(entity_id: str, old: TaskStatus, new: TaskStatus) -> None:
    """Raise InvalidTransitionError unless ``old -> new`` is allowed."""
    if new not in _TASK_MOVES[old]:
        allowed = ", ".join(sorted(s.value for s in _TASK_MOVES[old])) or "nothing (final)"
        raise InvalidTransitionError(
            f"task {entity_id!r} cannot go from {old.value} to {new.value}; "
            f"allowed: {allowed}"
        )


class _Record:
    """Shared helpers for the record dataclasses."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO-8601 strings, enums as values)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, StrEnum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """The record back from :meth:`to_dict`'s form (a cache entry, an export).

        Only the record's own fields are read, each converted by its declared
        type, so a JSON document from elsewhere cannot smuggle in attributes.
        """
        kwargs: dict[str, Any] = {}
        optional = _defaulted(cast(Hashable, cls))
        for name, kind in _field_kinds(cast(Hashable, cls)).items():
            if name not in data and name in optional:
                continue  # written before the field existed: its default
            value = data[name]
            if value is not None and kind is not None:
                value = datetime.fromisoformat(value) if kind is datetime else kind(value)
            kwargs[name] = value
        return cls(**kwargs)


R = TypeVar("R", bound=_Record)


@functools.cache
def _defaulted(record: Hashable) -> frozenset[str]:
    """The fields with defaults: added later, so older documents may lack them."""
    return frozenset(f.name for f in dataclasses.fields(cast(type, record))
                     if f.default is not dataclasses.MISSING)


@functools.cache
def _field_kinds(record: Hashable) -> dict[str, Any]:
    """Per field: datetime or a StrEnum class to convert to, else None."""
    cls = cast(type, record)
    hints = get_type_hints(cls)
    kinds: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in get_args(hint) if a is not type(None)] or [hint]
        target = args[0]
        kinds[f.name] = (target if target is datetime
                         or (isinstance(target, type) and issubclass(target, StrEnum))
                         else None)
    return kinds


@dataclass(frozen=True, slots=True)
class Session(_Record):
    """A unit of agent work that may span days (seed table ``sessions``)."""

    id: str
    user_id: str
    start_time: datetime
    end_time: datetime | None
    status: SessionStatus
    context_snapshot: Any
    metadata: Any
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class Task(_Record):
    """One node of a session's task tree (seed table ``tasks``)."""

    id: str
    session_id: str
    parent_task_id: str | None
    type: str
    status: TaskStatus
    priority: int
    description: str | None
    parameters: Any
    result: Any
    error_details: Any
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    retry_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskTree:
    """A task with its subtasks, recursively, ordered by priority then age."""

    task: Task
    children: tuple[TaskTree, ...]

    def walk(self) -> list[Task]:
        """Depth-first list of every task in the tree, root first."""
        out = [self.task]
        for child in self.children:
            out.extend(child.walk())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.task.to_dict(), "children": [c.to_dict() for c in self.children]}


@dataclass(frozen=True, slots=True)
class ContextItem(_Record):
    """A piece of captured context (seed table ``context``)."""

    id: str
    session_id: str
    context_type: str
    context_key: str
    context_value: Any
    relevance_score: float
    access_count: int
    last_accessed: datetime
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Decision(_Record):
    """A decision the agent made, with how it turned out (seed table ``decisions``)."""

    id: str
    session_id: str | None
    task_id: str | None
    decision_type: str
    context_hash: str
    decision_made: str
    confidence: float | None
    autonomous: bool
    user_override: bool
    outcome: str | None
    feedback_score: float | None
    reasoning: Any
    created_at: datetime
    #: The context the decision was made in (canonical JSON), kept so that
    #: similar past decisions can be found by nearness; None when only a
    #: hash was given.
    context: Any = None


@dataclass(frozen=True, slots=True)
class Preference(_Record):
    """A learned or stated user preference (seed table ``user_preferences``)."""

    id: str
    user_id: str
    preference_type: str
    preference_key: str
    preference_value: Any
    confidence: float
    observation_count: int
    last_observed: datetime
    created_at: datetime
    updated_at: datetime
    #: The Beta distribution behind ``confidence``: decayed weights of the
    #: observations for and against ``preference_value``, each at least the
    #: prior 1.0; every observation leaves ``confidence`` equal to their mean,
    #: evidence_for / (evidence_for + evidence_against) (docs/learning.md).
    evidence_for: float = 1.0
    evidence_against: float = 1.0


class SnapshotType(StrEnum):
    """Why a snapshot was taken (seed: state_snapshots.snapshot_type CHECK)."""

    CHECKPOINT = "checkpoint"
    BACKUP = "backup"
    RECOVERY = "recovery"

    @classmethod
    def parse(cls, value: object, field: str = "snapshot_type") -> SnapshotType:
        return _parse_enum(cls, value, field)


@dataclass(frozen=True, slots=True)
class Snapshot(_Record):
    """A compressed, checksummed image of one session or of the whole store
    (seed table ``state_snapshots``; the image itself is not part of the record)."""

    id: str
    #: None for a whole-store snapshot.
    session_id: str | None
    snapshot_type: SnapshotType
    compression_type: str
    #: sha256 of the uncompressed image.
    checksum: str
    #: Compressed size.
    size_bytes: int
    created_at: datetime
    #: The image's audit position: every audit row with an id up to this one is
    #: reflected in it, none after (None: not usable as a point-in-time base).
    audit_id: int | None = None


@dataclass(frozen=True, slots=True)
class RecoveryPoint(_Record):
    """A named moment to come back to (seed table ``recovery_points``)."""

    id: str
    name: str
    description: str | None
    state_snapshot_id: str | None
    #: active_tasks, session_count, state_size as in the seed, and more.
    recovery_metadata: Any
    created_at: datetime


class ConflictStatus(StrEnum):
    """Lifecycle of a conflict left to a person."""

    PENDING = "pending"
    RESOLVED = "resolved"
    #: A newer proposal from the same component replaced it.
    SUPERSEDED = "superseded"

    @classmethod
    def parse(cls, value: object, field: str = "status") -> ConflictStatus:
        return _parse_enum(cls, value, field)


@dataclass(frozen=True, slots=True)
class SyncEntry(_Record):
    """One synchronised key: its value, version and the component that wrote it."""

    scope: str
    key: str
    value: Any
    version: int
    component: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SyncConflict(_Record):
    """A concurrent modification left to a person (``user_decides``)."""

    id: str
    scope: str
    key: str
    component: str
    base_version: int
    current_version: int
    current_value: Any
    proposed_value: Any
    status: ConflictStatus
    resolution: str | None
    resolved_value: Any
    resolved_by: str | None
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEvent(_Record):
    """One row of the audit log: a committed mutation, before and after."""

    id: int
    event_type: str
    entity_type: str
    entity_id: str
    old_value: Any
    new_value: Any
    change_metadata: Any
    user_id: str | None
    session_id: str | None
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing plus the cursor for the next (None at the end)."""

    items: list[T]
    next_cursor: str | None
