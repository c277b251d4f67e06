"""statekeep: durable state and context for long-running AI-agent work.

Sessions, task trees, captured context, decisions and learned preferences,
kept on disk so that nothing committed is lost, served fast, and rebuilt for
an agent that comes back after a crash or a weekend::

    from statekeep import StateConfig, StateSystem

    with StateSystem(StateConfig(db="agent.db")) as sk:
        session = sk.create_session("alice")
        task = sk.create_task(session.id, "refactor", description="split the parser")
        sk.set_context(session.id, "file", "src/parser.py", {"lines": 812})

The async API of the design is :class:`StateManagementSystem`.
"""

from statekeep.config import StateConfig
from statekeep.context.analyzer import ContextAnalyzer
from statekeep.context.brief import Brief
from statekeep.context.engine import ContextEngine
from statekeep.context.reconstruct import SessionContext
from statekeep.context.relevance import RelevanceCalculator, RelevanceWeights
from statekeep.errors import (
    ArchiveCorruptError,
    ArchiveError,
    ArchiveMissingError,
    CaptureError,
    ConfigError,
    ConflictError,
    DuplicateError,
    InvalidIdError,
    InvalidStatusError,
    InvalidTransitionError,
    MigrationError,
    NotFoundError,
    NotJSONError,
    PathEscapeError,
    StatekeepError,
    StoreError,
    StoreUnavailableError,
    TaskCycleError,
    ValidationError,
    ValueTooLargeError,
    VersionConflictError,
)
from statekeep.models import (
    AuditEvent,
    ContextItem,
    Decision,
    Page,
    Preference,
    Session,
    SessionStatus,
    Task,
    TaskStatus,
    TaskTree,
)
from statekeep.store import Store, open_store
from statekeep.store.base import UNSET
from statekeep.store.context import ContextInput
from statekeep.store.migrations import Migration, MigrationRegistry, StateMigrationSystem
from statekeep.system import StateManagementSystem, StateSystem

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "ArchiveCorruptError",
    "ArchiveError",
    "ArchiveMissingError",
    "AuditEvent",
    "Brief",
    "CaptureError",
    "ConfigError",
    "ConflictError",
    "ContextAnalyzer",
    "ContextEngine",
    "ContextInput",
    "ContextItem",
    "Decision",
    "DuplicateError",
    "InvalidIdError",
    "InvalidStatusError",
    "InvalidTransitionError",
    "Migration",
    "MigrationError",
    "MigrationRegistry",
    "NotFoundError",
    "NotJSONError",
    "Page",
    "PathEscapeError",
    "Preference",
    "RelevanceCalculator",
    "RelevanceWeights",
    "Session",
    "SessionContext",
    "SessionStatus",
    "StateConfig",
    "StateManagementSystem",
    "StateMigrationSystem",
    "StateSystem",
    "StatekeepError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "Task",
    "TaskCycleError",
    "TaskStatus",
    "TaskTree",
    "ValidationError",
    "ValueTooLargeError",
    "VersionConflictError",
    "__version__",
    "open_store",
]
