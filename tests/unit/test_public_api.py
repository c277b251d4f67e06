"""The public surface is curated: this test fails when it changes by accident.

Adding or removing a public name is a deliberate act -- update EXPECTED here in
the same change, and the changelog with it.
"""

from __future__ import annotations

import inspect

import statekeep
from statekeep import errors

EXPECTED = sorted([
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
    "UNSET",
    "UnknownStrategyError",
    "ValidationError",
    "ValueTooLargeError",
    "VersionConflictError",
    "__version__",
    "open_store",
])


def test_exported_names_are_exactly_the_expected_ones() -> None:
    assert sorted(statekeep.__all__) == EXPECTED
    assert len(statekeep.__all__) == len(set(statekeep.__all__)), "a name is exported twice"


def test_every_exported_name_exists() -> None:
    for name in statekeep.__all__:
        assert hasattr(statekeep, name), name


def test_no_public_name_is_left_out_of_all() -> None:
    public = {n for n, v in vars(statekeep).items()
              if not n.startswith("_") and not inspect.ismodule(v)}
    assert public <= set(statekeep.__all__), sorted(public - set(statekeep.__all__))


def test_every_exported_error_is_in_the_one_tree() -> None:
    assert sorted(errors.__all__) == sorted(n for n in EXPECTED if n.endswith("Error"))
    for name in errors.__all__:
        cls = getattr(statekeep, name)
        assert cls is getattr(errors, name)
        assert issubclass(cls, statekeep.StatekeepError)
        assert not issubclass(statekeep.StatekeepError, cls) or cls is statekeep.StatekeepError


def test_every_public_class_and_function_has_a_docstring() -> None:
    for name in statekeep.__all__:
        obj = getattr(statekeep, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_version() -> None:
    assert isinstance(statekeep.__version__, str)
    assert statekeep.__version__.count(".") >= 2
