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
    ConflictClosedError,
    ConflictError,
    DuplicateError,
    InvalidIdError,
    InvalidStatusError,
    InvalidTransitionError,
    MigrationError,
    NoRuleError,
    NotFoundError,
    NotJSONError,
    NotMergeableError,
    PathEscapeError,
    RecoveryError,
    RecoveryVerificationError,
    SnapshotCorruptError,
    StatekeepError,
    StoreError,
    StoreUnavailableError,
    TaskCycleError,
    UnknownStrategyError,
    ValidationError,
    ValueTooLargeError,
    VersionConflictError,
)
from statekeep.gc import GarbageCollector, RetentionRules
from statekeep.learning.autonomy import AutonomyAnswer
from statekeep.learning.engine import DecisionEngine
from statekeep.metrics import PerformanceReport, StateMetrics
from statekeep.models import (
    AuditEvent,
    ConflictStatus,
    ContextItem,
    Decision,
    Page,
    Preference,
    RecoveryPoint,
    Session,
    SessionStatus,
    Snapshot,
    SnapshotType,
    SyncConflict,
    SyncEntry,
    Task,
    TaskStatus,
    TaskTree,
)
from statekeep.recovery.backup import BackupManager
from statekeep.recovery.manager import RecoveryManager
from statekeep.store import Store, open_store
from statekeep.store.base import UNSET
from statekeep.store.context import ContextInput
from statekeep.store.migrations import Migration, MigrationRegistry, StateMigrationSystem
from statekeep.sync.events import SyncEvent
from statekeep.sync.manager import SyncManager, SyncResult
from statekeep.sync.propagation import Propagator, Subscription
from statekeep.sync.resolver import ConflictResolver
from statekeep.system import StateManagementSystem, StateSystem

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "ArchiveCorruptError",
    "ArchiveError",
    "ArchiveMissingError",
    "AuditEvent",
    "AutonomyAnswer",
    "BackupManager",
    "Brief",
    "CaptureError",
    "ConfigError",
    "ConflictClosedError",
    "ConflictError",
    "ConflictResolver",
    "ConflictStatus",
    "ContextAnalyzer",
    "ContextEngine",
    "ContextInput",
    "ContextItem",
    "Decision",
    "DecisionEngine",
    "DuplicateError",
    "GarbageCollector",
    "InvalidIdError",
    "InvalidStatusError",
    "InvalidTransitionError",
    "Migration",
    "MigrationError",
    "MigrationRegistry",
    "NoRuleError",
    "NotFoundError",
    "NotJSONError",
    "NotMergeableError",
    "Page",
    "PathEscapeError",
    "PerformanceReport",
    "Preference",
    "Propagator",
    "RecoveryError",
    "RecoveryManager",
    "RecoveryPoint",
    "RecoveryVerificationError",
    "RelevanceCalculator",
    "RelevanceWeights",
    "RetentionRules",
    "Session",
    "SessionContext",
    "SessionStatus",
    "Snapshot",
    "SnapshotCorruptError",
    "SnapshotType",
    "StateConfig",
    "StateManagementSystem",
    "StateMetrics",
    "StateMigrationSystem",
    "StateSystem",
    "StatekeepError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "Subscription",
    "SyncConflict",
    "SyncEntry",
    "SyncEvent",
    "SyncManager",
    "SyncResult",
    "Task",
    "TaskCycleError",
    "TaskStatus",
    "TaskTree",
    "UnknownStrategyError",
    "ValidationError",
    "ValueTooLargeError",
    "VersionConflictError",
    "__version__",
    "open_store",
]
