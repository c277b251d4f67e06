"""One rooted exception tree for everything statekeep raises on purpose.

Callers catch :class:`StatekeepError` to handle any statekeep failure, or a
subclass to handle one kind. Driver exceptions (``sqlite3``, ``psycopg``) are
translated to this tree at exactly one boundary, the store backends, so code
above the store never sees a driver type::

    StatekeepError
    ├── ConfigError                 bad settings, unknown URL scheme
    ├── ValidationError             bad input; nothing was written
    │   ├── InvalidIdError          malformed or hostile id / key / type name
    │   ├── InvalidStatusError      a status that does not exist
    │   ├── NotJSONError            a value JSON cannot represent
    │   ├── ValueTooLargeError      over the configured size cap
    │   ├── UnknownStrategyError    a conflict strategy statekeep does not have
    │   ├── NoRuleError             rule_based chosen, and no rule matches the key
    │   └── NotMergeableError       merge asked of values that cannot merge
    ├── NotFoundError               the entity does not exist (or is not yours)
    ├── ConflictError               the write lost a race or breaks a rule
    │   ├── VersionConflictError    optimistic concurrency check failed
    │   ├── DuplicateError          a unique key is already taken
    │   ├── InvalidTransitionError  a status change the state machine forbids
    │   ├── TaskCycleError          a parent link that would close a loop
    │   └── ConflictClosedError     resolving a sync conflict that is no longer pending
    ├── StoreError                  the backend failed (I/O, lock timeout, lost server)
    │   └── StoreUnavailableError   the backend cannot be reached at all
    ├── MigrationError              a schema migration failed and was rolled back
    ├── ArchiveError                an archive file is damaged or missing
    ├── CaptureError                context could not be captured from the workspace
    │   └── PathEscapeError         a path leaves the workspace root (also a ValidationError)
    └── RecoveryError               a snapshot, backup or recovery could not be used or done
        ├── SnapshotCorruptError    a snapshot or backup failed its checksum or format check
        └── RecoveryVerificationError  the recovered state failed verification (rolled back)

Every error carries a message that names the field or entity at fault, because
the caller is often an agent that must decide what to do from the text alone.
"""

from __future__ import annotations

__all__ = [
    "ArchiveCorruptError",
    "ArchiveError",
    "ArchiveMissingError",
    "CaptureError",
    "ConfigError",
    "ConflictClosedError",
    "ConflictError",
    "DuplicateError",
    "InvalidIdError",
    "InvalidStatusError",
    "InvalidTransitionError",
    "MigrationError",
    "NoRuleError",
    "NotFoundError",
    "NotJSONError",
    "NotMergeableError",
    "PathEscapeError",
    "RecoveryError",
    "RecoveryVerificationError",
    "SnapshotCorruptError",
    "StatekeepError",
    "StoreError",
    "StoreUnavailableError",
    "TaskCycleError",
    "UnknownStrategyError",
    "ValidationError",
    "ValueTooLargeError",
    "VersionConflictError",
]


class StatekeepError(Exception):
    """Base of every error statekeep raises deliberately."""


class ConfigError(StatekeepError):
    """A setting is missing, malformed or contradictory."""


class ValidationError(StatekeepError):
    """Input was rejected before anything was written.

    ``field`` names the argument at fault so that programs can react without
    parsing the message.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidIdError(ValidationError):
    """An id, key or type name is empty, too long or contains forbidden characters."""


class InvalidStatusError(ValidationError):
    """A status value is not one of the allowed ones."""


class NotJSONError(ValidationError):
    """A value cannot be represented as JSON (sets, bytes, NaN, objects...)."""


class ValueTooLargeError(ValidationError):
    """An encoded value is larger than the configured cap."""


class NotFoundError(StatekeepError):
    """The requested entity does not exist."""

    def __init__(self, entity: str, entity_id: str) -> None:
        super().__init__(f"{entity} {entity_id!r} not found")
        self.entity = entity
        self.entity_id = entity_id


class ConflictError(StatekeepError):
    """The write is well-formed but conflicts with the stored state."""


class VersionConflictError(ConflictError):
    """The caller's expected version is not the stored one (someone wrote first)."""

    def __init__(self, entity: str, entity_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{entity} {entity_id!r} is at version {actual}, not the expected {expected}"
        )
        self.expected = expected
        self.actual = actual


class DuplicateError(ConflictError):
    """An entity with the same unique key already exists."""


class InvalidTransitionError(ConflictError):
    """The status machine does not allow this change."""


class TaskCycleError(ConflictError):
    """Linking a task under this parent would make the task tree cyclic."""


class UnknownStrategyError(ValidationError):
    """A conflict strategy name statekeep does not have."""


class NoRuleError(ValidationError):
    """``rule_based`` was asked for a key that no configured rule matches."""


class NotMergeableError(ValidationError):
    """``merge`` was asked of two values that have no merge (scalars, mixed types)."""


class RecoveryError(StatekeepError):
    """A snapshot, backup or recovery could not be used or carried out."""


class SnapshotCorruptError(RecoveryError):
    """A snapshot or backup failed its checksum or format check; it is never used."""


class RecoveryVerificationError(RecoveryError):
    """The recovered state failed verification; the store was rolled back to before."""

    def __init__(self, message: str, *, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class ConflictClosedError(ConflictError):
    """The sync conflict was already resolved or superseded."""


class StoreError(StatekeepError):
    """The storage backend failed; the transaction was rolled back."""


class StoreUnavailableError(StoreError):
    """The storage backend cannot be reached (server down, file unopenable)."""


class MigrationError(StatekeepError):
    """A migration failed; the database was left as it was before."""


class ArchiveError(StatekeepError):
    """An archived session cannot be read back; the store was left unchanged."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ArchiveCorruptError(ArchiveError):
    """An archive file's header, compression or checksum is wrong (it names the file)."""


class ArchiveMissingError(ArchiveError):
    """The archive index names a file that is not there."""


class CaptureError(StatekeepError):
    """Context could not be captured from the workspace (nothing was written)."""


class PathEscapeError(CaptureError, ValidationError):
    """A path, or the target of a symlink, lies outside the workspace root.

    Also a :class:`ValidationError`: it is bad input, refused before any write.
    """

    def __init__(self, path: str, root: str) -> None:
        super().__init__(f"path {path!r} is outside the workspace root {root!r}", field="path")
        self.path = path
        self.root = root
