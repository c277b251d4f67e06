"""Recovery points, and recovery to them or to any instant: full, selective, incremental.

**A recovery point is an audit position, not a copy.** Creating one reads the
newest audit id (under a brief ``SHARE`` lock of ``audit_log`` on PostgreSQL,
so that no transaction holding a smaller id is still in flight), counts the
seed's metadata and inserts one row: a few indexed reads, cheap enough for
every task boundary. The state at a point is rebuilt when it is needed: the
newest snapshot image at or before its position, then the audit log replayed
up to it (:mod:`statekeep.recovery.replay`). To keep that replay short, a
point whose base image is more than ``rebase_events`` audit rows behind takes
a new image first (of the session for a session point, of the whole store
otherwise) -- so images are taken in proportion to the rate of change, not
to the rate of points. ``docs/recovery.md`` has the measured costs.

**A recovery is one transaction.** It locks out writers (``BEGIN IMMEDIATE``
on SQLite, ``LOCK ... IN EXCLUSIVE MODE`` of the state tables on PostgreSQL,
which still lets readers read), rebuilds the target state in memory, compares
it with the live rows in scope and writes only the difference: deletes
children first, inserts and updates parents first, task parents linked last,
blob reference counts recomputed for the blobs it touched. Every row it
writes gets an audit row (event ``recover``, the full row image), so the
audit log stays a complete change log: a recovery can itself be undone
(:meth:`RecoveryManager.rollback_recovery`, or any later point-in-time
recovery). Then, *inside the same transaction*, it verifies -- the database's
own checks (SQLite: integrity_check and foreign_key_check, with foreign keys
deferred until then; PostgreSQL enforces them at each statement and runs its
orphan scan and amcheck) and the state's consistency
(:func:`~statekeep.recovery.verify.consistency_problems`). Any failure rolls
the transaction back -- the database's own rollback, so the store is exactly
as before -- and raises :class:`~statekeep.errors.RecoveryVerificationError`
with the problems.

Strategies:

* ``full``: everything in the point's scope (the whole store, or the point's
  session) becomes what it was at the point; rows created since go.
* ``selective``: only the chosen sessions, entity types (``session``,
  ``task``, ``context``, ``relation``, ``content``, ``decision``,
  ``preference``, ``memory``, ``sync``, ``sync_conflict``) and/or keys (a
  row's id, or its natural key: context key, preference key, memory key, sync
  key); everything else is left alone. A selection that would break a
  reference (a task without its parent) fails verification and changes nothing.
* ``incremental``: only what the audit log says changed since the point is
  put back -- the rows (and sessions) touched after it; nothing else is read
  or compared, so a recent point is recovered in time proportional to the
  changes since, not to the size of the store.

Archived sessions (in ``archive_index``) are left where they are by every
recovery: their rows live in their archive file.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from statekeep import codec
from statekeep.errors import (
    ConflictError,
    NotFoundError,
    RecoveryError,
    RecoveryVerificationError,
    SnapshotCorruptError,
    ValidationError,
)
from statekeep.ids import new_id, validate_id, validate_key, validate_text
from statekeep.models import AuditEvent, RecoveryPoint, SnapshotType
from statekeep.recovery.replay import MODEL_TABLES, StateModel, audit_events
from statekeep.recovery.snapshots import SnapshotManager, audit_position
from statekeep.recovery.verify import consistency_problems
from statekeep.store import rows
from statekeep.store.base import AUDIT_INSERT, Connection
from statekeep.store.protocol import Store
from statekeep.store.rows import (
    BLOBS,
    CONTENT,
    CONTEXT,
    DECISIONS,
    MEMORY,
    PREFERENCES,
    RELATIONS,
    SESSIONS,
    SYNC_CONFLICTS,
    SYNC_STATE,
    TASKS,
    Table,
)

__all__ = [
    "ENTITY_TYPES",
    "STRATEGIES",
    "RecoveryManager",
    "RecoveryResult",
    "Strategy",
]

log = logging.getLogger("statekeep.recovery")

Strategy = Literal["full", "selective", "incremental"]
STRATEGIES: Final = ("full", "selective", "incremental")
#: Entity types a selective recovery may choose (the audit log's names).
ENTITY_TYPES: Final = tuple(t.entity for t in MODEL_TABLES)
_BY_ENTITY: Final = {t.entity: t for t in MODEL_TABLES}
#: Deletes run children first, inserts and updates parents first.
_DELETE_ORDER: Final = (CONTENT, RELATIONS, DECISIONS, PREFERENCES, MEMORY, SYNC_CONFLICTS,
                        SYNC_STATE, CONTEXT, TASKS, SESSIONS)
_UPSERT_ORDER: Final = (SESSIONS, TASKS, CONTEXT, CONTENT, RELATIONS, DECISIONS, PREFERENCES,
                        MEMORY, SYNC_STATE, SYNC_CONFLICTS)
#: What a recovery locks on PostgreSQL (EXCLUSIVE: writers wait, readers read on).
_LOCKED: Final = ("sessions", "tasks", "context", "content_blobs", "context_content",
                  "context_relations", "decisions", "user_preferences", "memory_entries",
                  "sync_state", "sync_conflicts", "state_snapshots", "recovery_points",
                  "archive_index", "audit_log")
_CHUNK: Final = 500
_POINT_COLS: Final = "id, name, description, state_snapshot_id, recovery_metadata, created_at"
#: Set by a future audit-log retention: audit rows up to this id were deleted.
PRUNED_KEY: Final = "audit_pruned_through"


@dataclass(frozen=True)
class _Scope:
    """Which rows a recovery may change."""

    sessions: frozenset[str] | None = None
    entity_types: frozenset[str] | None = None
    keys: frozenset[str] | None = None
    archived: frozenset[str] = frozenset()
    #: incremental: row keys touched since the point, by table ...
    touched: dict[str, set[Any]] | None = None
    #: ... and sessions touched as a whole (deleted, cascaded).
    whole: frozenset[str] = frozenset()

    def covers(self, t: Table, row: dict[str, Any]) -> bool:
        sid = row.get(t.session_col) if t.session_col else None
        if sid is not None and sid in self.archived:
            return False
        if self.sessions is not None and (sid is None or sid not in self.sessions):
            return False
        if self.entity_types is not None and t.entity not in self.entity_types:
            return False
        key = rows.row_key(t, row)
        if self.keys is not None and _key_text(t, key) not in self.keys and (
                t.natural_key is None or row.get(t.natural_key) not in self.keys):
            return False
        if self.touched is not None:
            return key in self.touched.get(t.name, ()) or (sid is not None and sid in self.whole)
        return True

    def reads(self, t: Table) -> bool:
        """Whether any row of ``t`` can be in scope."""
        if self.entity_types is not None and t.entity not in self.entity_types:
            return False
        return not (self.sessions is not None and t.session_col is None)

    def describe(self) -> dict[str, Any]:
        return {"sessions": None if self.sessions is None else sorted(self.sessions),
                "entity_types": None if self.entity_types is None
                else sorted(self.entity_types),
                "keys": None if self.keys is None else sorted(self.keys)}


def _key_text(t: Table, key: Any) -> str:
    return ":".join(str(k) for k in key) if isinstance(key, tuple) else str(key)


@dataclass
class RecoveryResult:
    """What one recovery did (or, with ``dry_run``, would do)."""

    recovery_id: str
    strategy: str
    #: The audit position recovered to, and the instant it stands for.
    target_audit_id: int
    target_time: datetime | None
    point_id: str | None
    base_snapshot_id: str | None
    events_replayed: int
    #: table -> {"inserted": n, "updated": n, "deleted": n}, tables that changed only.
    changed: dict[str, dict[str, int]] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)
    #: Archived sessions left in their files.
    skipped_archived: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The audit position just before the recovery, and the point made there
    #: (what :meth:`RecoveryManager.rollback_recovery` goes back to).
    before_audit_id: int = 0
    before_point_id: str | None = None
    dry_run: bool = False
    elapsed_s: float = 0.0

    @property
    def rows_changed(self) -> int:
        return sum(sum(c.values()) for c in self.changed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "recovery_id": self.recovery_id, "strategy": self.strategy,
            "target_audit_id": self.target_audit_id,
            "target_time": None if self.target_time is None else self.target_time.isoformat(),
            "point_id": self.point_id, "base_snapshot_id": self.base_snapshot_id,
            "events_replayed": self.events_replayed, "changed": self.changed,
            "rows_changed": self.rows_changed, "scope": self.scope,
            "skipped_archived": self.skipped_archived, "warnings": self.warnings,
            "before_audit_id": self.before_audit_id, "before_point_id": self.before_point_id,
            "dry_run": self.dry_run, "elapsed_s": round(self.elapsed_s, 6),
        }


#: Builds the model a recovery starts from: (model, image id, audit position or -1
#: for "nothing to replay", warnings).
_BaseOf = Callable[[Connection], tuple[StateModel, str | None, int, list[str]]]


class _DryRun(Exception):
    """Raised inside the recovery transaction to roll a dry run back."""


@dataclass
class _Diff:
    deletes: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    #: table -> key -> (row before or None, row after)
    upserts: dict[str, dict[Any, tuple[dict[str, Any] | None, dict[str, Any]]]] = field(
        default_factory=dict)

    def count(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for t in MODEL_TABLES:
            dels = len(self.deletes.get(t.name, {}))
            ups = self.upserts.get(t.name, {})
            ins = sum(1 for old, _ in ups.values() if old is None)
            if dels or ups:
                out[t.name] = {"inserted": ins, "updated": len(ups) - ins, "deleted": dels}
        return out


class RecoveryManager:
    """Recovery points and recoveries for one store."""

    def __init__(self, store: Store, *, rebase_events: int = 20_000) -> None:
        if isinstance(rebase_events, bool) or not isinstance(rebase_events, int) \
                or rebase_events < 1:
            raise ValidationError("rebase_events must be a positive integer",
                                  field="rebase_events")
        self.store = store
        self.snapshots = SnapshotManager(store)
        self.rebase_events = rebase_events

    # -- recovery points ----------------------------------------------------------

    def _point(self, row: Any) -> RecoveryPoint:
        st = self.store
        return RecoveryPoint(id=str(row[0]), name=str(row[1]), description=row[2],
                             state_snapshot_id=row[3],
                             recovery_metadata=st.json_col(row[4]) or {},
                             created_at=st.ts_out(row[5]))

    def create_recovery_point(self, name: str | None = None, *, session_id: str | None = None,
                              description: str | None = None) -> RecoveryPoint:
        """Mark this moment (of the store, or of one session) to come back to.

        Cheap: an audit position and three counts, plus -- once every
        ``rebase_events`` audit rows -- a new base image.
        """
        st = self.store
        now = st.now()
        label = f"auto_{now.isoformat()}" if name is None else name
        if not isinstance(label, str) or not label.strip() or len(label) > 200:
            raise ValidationError("name must be non-empty text of at most 200 characters",
                                  field="name")
        validate_text(label, "name", max_length=200)
        validate_text(description, "description", max_length=10_000)
        if session_id is not None:
            validate_id(session_id, "session_id")
        base = self._latest_base(session_id)
        hwm = st.query_one("SELECT COALESCE(MAX(id), 0) FROM audit_log", ())[0]
        if base is None or int(hwm) - base[1] > self.rebase_events:
            snap = self.snapshots.create(session_id, SnapshotType.RECOVERY)
            base = (snap.id, int(snap.audit_id or 0))
        with st.atomic() as conn:
            if st.dialect == "postgresql":
                # No transaction may still hold a smaller audit id than the one we read.
                conn.execute("LOCK TABLE audit_log IN SHARE MODE")
            if session_id is not None:
                st.session_user(conn, session_id)  # NotFoundError for an unknown session
            point = self._insert_point(conn, label, description, session_id, base, now)
        return point

    def _insert_point(self, conn: Connection, name: str, description: str | None,
                      session_id: str | None, base: tuple[str, int] | None,
                      now: datetime, extra: dict[str, Any] | None = None) -> RecoveryPoint:
        st = self.store
        hwm = audit_position(conn)
        meta = {**self._metadata(conn, session_id), "audit_id": hwm, "session_id": session_id,
                "base_snapshot_id": None if base is None else base[0],
                "events_since_base": hwm - (0 if base is None else base[1]), **(extra or {})}
        pid = new_id("rp")
        conn.execute(
            f"INSERT INTO recovery_points ({_POINT_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
            (pid, name, description, None if base is None else base[0],
             st.json_in(codec.dumps_trusted(meta)), st.ts(now)))
        return RecoveryPoint(pid, name, description, None if base is None else base[0], meta,
                             now)

    def _metadata(self, conn: Connection, session_id: str | None) -> dict[str, Any]:
        """The seed's metadata: active tasks, sessions, and the database's size."""
        if session_id is None:
            active = conn.execute("SELECT COUNT(*) FROM tasks WHERE status IN"
                                  " ('pending', 'in_progress')").fetchone()[0]
            sessions = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        else:
            active = conn.execute("SELECT COUNT(*) FROM tasks WHERE session_id = ? AND status"
                                  " IN ('pending', 'in_progress')", (session_id,)).fetchone()[0]
            sessions = 1
        if self.store.dialect == "sqlite":
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            size = int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])
        else:
            # The state tables' heaps (one size lookup each): summing every relation
            # of the schema, indexes and TOAST included, cost 8 ms a point.
            names = [t.name for t in MODEL_TABLES]
            size = conn.execute(
                "SELECT COALESCE(SUM(pg_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                f" WHERE n.nspname = current_schema() AND c.relname IN"
                f" ({', '.join('?' * len(names))})", names).fetchone()[0]
        return {"active_tasks": int(active), "session_count": int(sessions),
                "state_size": int(size)}

    def _latest_base(self, session_id: str | None) -> tuple[str, int] | None:
        """The newest image a point of this scope can start from: (id, audit position)."""
        sql = ("SELECT id, audit_id FROM state_snapshots WHERE audit_id IS NOT NULL AND"
               " (scope_session_id IS NULL AND session_id IS NULL")
        params: list[Any] = []
        if session_id is not None:
            sql += " OR scope_session_id = ?"
            params.append(session_id)
        sql += ") ORDER BY audit_id DESC, created_at DESC LIMIT 1"
        row = self.store.query_one(sql, params)
        return None if row is None else (str(row[0]), int(row[1]))

    def list_recovery_points(self, *, session_id: str | None = None,
                             limit: int = 1000) -> list[RecoveryPoint]:
        """Recovery points newest first (of one session's scope, if given)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise ValidationError("limit must be an integer from 1 to 100000", field="limit")
        if session_id is not None:
            validate_id(session_id, "session_id")
        with self.store.reading() as conn:
            found = [self._point(r) for r in conn.execute(
                f"SELECT {_POINT_COLS} FROM recovery_points"
                " ORDER BY created_at DESC, id DESC").fetchall()]
        if session_id is not None:
            found = [p for p in found if isinstance(p.recovery_metadata, dict)
                     and p.recovery_metadata.get("session_id") == session_id]
        return found[:limit]

    def get_recovery_point(self, point_id: str) -> RecoveryPoint:
        """The recovery point, or NotFoundError."""
        validate_id(point_id, "recovery_point_id")
        row = self.store.query_one(f"SELECT {_POINT_COLS} FROM recovery_points WHERE id = ?",
                                   (point_id,))
        if row is None:
            raise NotFoundError("recovery point", point_id)
        return self._point(row)

    def delete_recovery_point(self, point_id: str) -> None:
        """Forget a recovery point (its base image becomes subject to retention)."""
        validate_id(point_id, "recovery_point_id")
        with self.store.atomic() as conn:
            if conn.execute("DELETE FROM recovery_points WHERE id = ?",
                            (point_id,)).rowcount != 1:
                raise NotFoundError("recovery point", point_id)

    # -- recovering -------------------------------------------------------------

    def recover(self, recovery_point_id: str, strategy: str = "full", *,
                sessions: Sequence[str] | None = None,
                entity_types: Sequence[str] | None = None,
                keys: Sequence[str] | None = None, dry_run: bool = False,
                progress: Callable[[int, int], None] | None = None) -> RecoveryResult:
        """Bring the store (or the chosen part of it) back to a recovery point.

        See the module documentation for the strategies. Raises
        RecoveryVerificationError (store unchanged) when the recovered state
        fails verification; ``dry_run`` computes and reports the changes and
        writes nothing.
        """
        point = self.get_recovery_point(recovery_point_id)
        if strategy not in STRATEGIES:
            raise ValidationError(f"strategy {strategy!r} is not one of: "
                                  f"{', '.join(STRATEGIES)}", field="strategy")
        chosen = self._selectors(sessions, entity_types, keys)
        if strategy == "selective" and not any(v is not None for v in chosen):
            raise ValidationError("a selective recovery needs sessions, entity_types or keys",
                                  field="strategy")
        if strategy != "selective" and any(v is not None for v in chosen):
            raise ValidationError(f"sessions, entity_types and keys choose what a selective"
                                  f" recovery restores; strategy {strategy!r} takes none",
                                  field="strategy")
        meta = point.recovery_metadata if isinstance(point.recovery_metadata, dict) else {}
        target = meta.get("audit_id")
        if not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise RecoveryError(f"recovery point {point.id} has no audit position to recover to")
        chosen_sessions = chosen[0]
        point_session = meta.get("session_id")
        if isinstance(point_session, str):
            if chosen_sessions is not None and chosen_sessions != {point_session}:
                raise ValidationError(f"recovery point {point.id} is of session"
                                      f" {point_session!r} only", field="sessions")
            chosen_sessions = frozenset({point_session})
        scope = _Scope(chosen_sessions, chosen[1], chosen[2])
        return self._recover(lambda _conn: target, scope, strategy=strategy,
                             point_id=point.id, target_time=point.created_at,
                             dry_run=dry_run, progress=progress)

    def recover_to_time(self, at: datetime, *, sessions: Sequence[str] | None = None,
                        dry_run: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> RecoveryResult:
        """Bring the store (or some sessions) back to its state at instant ``at``.

        The state at ``at`` is the audit log's longest prefix stamped no later
        than ``at``, rebuilt from the newest image before it.
        """
        st = self.store
        when = st.ts_arg(at, "at")
        if when is None:
            raise ValidationError("at must be a timezone-aware datetime", field="at")
        if when > st.now():
            raise ValidationError("at is in the future: there is no state to recover there",
                                  field="at")
        chosen = self._selectors(sessions, None, None)[0]

        def target(conn: Connection) -> int:
            row = conn.execute("SELECT MIN(id), COUNT(*) FROM audit_log WHERE timestamp > ?",
                               (st.ts(when),)).fetchone()
            first_after = row[0]
            upto = audit_position(conn) if first_after is None else int(first_after) - 1
            self._check_known(conn, when, upto)
            return upto

        return self._recover(target, _Scope(chosen), strategy="point_in_time",
                             point_id=None, target_time=when, dry_run=dry_run,
                             progress=progress)

    def restore_snapshot(self, snapshot_id: str, *, sessions: Sequence[str] | None = None,
                         entity_types: Sequence[str] | None = None,
                         keys: Sequence[str] | None = None, dry_run: bool = False,
                         ) -> RecoveryResult:
        """Make the store (or the image's session, or the chosen part) exactly what a
        snapshot holds -- no replay: an imported image from another store, a backup.

        The image is verified before anything is read from it.
        """
        doc = self.snapshots.load(snapshot_id)
        chosen = self._selectors(sessions, entity_types, keys)
        scope_sessions = chosen[0]
        if doc.get("kind") == "session":
            own = frozenset({str(doc["session_id"])})
            if scope_sessions is not None and scope_sessions != own:
                raise ValidationError(f"snapshot {snapshot_id} holds session"
                                      f" {doc['session_id']!r} only", field="sessions")
            scope_sessions = own
        selective = any(v is not None for v in chosen)

        def model_of(_conn: Connection) -> tuple[StateModel, str | None, int, list[str]]:
            model = StateModel(dedup_min_bytes=self.store.config.dedup_min_bytes)
            model.load_image(doc)
            return model, snapshot_id, -1, []

        return self._recover(audit_position,
                             _Scope(scope_sessions, chosen[1], chosen[2]),
                             strategy="selective" if selective else "full", point_id=None,
                             target_time=None, dry_run=dry_run, base=model_of)

    def rollback_recovery(self, result: RecoveryResult) -> RecoveryResult:
        """Undo a recovery: the same part of the store goes back to where it was
        just before it (through the point the recovery made there)."""
        if result.dry_run or result.before_point_id is None:
            raise ValidationError("a dry run changed nothing: there is nothing to roll back",
                                  field="result")
        scope = result.scope
        selective = any(scope.get(k) is not None for k in ("entity_types", "keys"))
        point = self.get_recovery_point(result.before_point_id)
        if selective:
            return self.recover(point.id, "selective", sessions=scope.get("sessions"),
                                entity_types=scope.get("entity_types"),
                                keys=scope.get("keys"))
        if scope.get("sessions") is not None:
            return self._recover(lambda _c: result.before_audit_id,
                                 _Scope(frozenset(scope["sessions"])), strategy="full",
                                 point_id=point.id, target_time=point.created_at)
        return self.recover(point.id, "full")

    def verify_recovery(self) -> list[str]:
        """The database's own checks and the state's consistency, on the committed
        state: what a person runs after a recovery (each problem one sentence)."""
        return [*self.store.integrity_problems(), *consistency_problems(self.store)]

    # -- the engine ---------------------------------------------------------------

    def _selectors(self, sessions: Sequence[str] | None, entity_types: Sequence[str] | None,
                   keys: Sequence[str] | None) -> tuple[frozenset[str] | None, ...]:
        def seq(value: object, name: str) -> list[Any]:
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | set
                                                                | frozenset):
                raise ValidationError(f"{name} must be a list, not {type(value).__name__}",
                                      field=name)
            items = list(value)
            if not items:
                raise ValidationError(f"{name} must not be empty", field=name)
            return items

        out_sessions = None if sessions is None else frozenset(
            validate_id(s, "sessions") for s in seq(sessions, "sessions"))
        out_types = None
        if entity_types is not None:
            found = seq(entity_types, "entity_types")
            for e in found:
                if e not in _BY_ENTITY:
                    raise ValidationError(f"entity type {e!r} is not one of: "
                                          f"{', '.join(ENTITY_TYPES)}", field="entity_types")
            out_types = frozenset(found)
        out_keys = None if keys is None else frozenset(
            validate_key(k, "keys") for k in seq(keys, "keys"))
        return out_sessions, out_types, out_keys

    def _check_known(self, conn: Connection, when: datetime, upto: int) -> None:
        """Refuse an instant from before anything this store knows of."""
        st = self.store
        first = conn.execute("SELECT MIN(timestamp) FROM audit_log").fetchone()[0]
        snap = conn.execute("SELECT MIN(created_at) FROM state_snapshots"
                            " WHERE audit_id IS NOT NULL AND audit_id <= ?",
                            (upto,)).fetchone()[0]
        known = [st.ts_out(v) for v in (first, snap) if v is not None]
        if known and when < min(known):
            raise RecoveryError(
                f"nothing is known about this store before {min(known).isoformat()}:"
                " no snapshot and no history reach back to the time asked for")

    def _recover(self, target_of: Callable[[Connection], int], scope: _Scope, *,
                 strategy: str, point_id: str | None, target_time: datetime | None,
                 dry_run: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 base: _BaseOf | None = None) -> RecoveryResult:
        st = self.store
        started = time.perf_counter()
        st.access_log.flush()  # pending access counts must not land on recovered rows later
        rid = new_id("rec")
        result: RecoveryResult | None = None
        try:
            with st.atomic() as conn:
                self._lock(conn)
                result = self._run(conn, rid, target_of(conn), scope, strategy=strategy,
                                   point_id=point_id, target_time=target_time,
                                   dry_run=dry_run, progress=progress, base=base)
                if dry_run:
                    raise _DryRun
                st.after_commit(self._announce)
        except _DryRun:
            pass
        except RecoveryError:
            raise
        except (ConflictError, ValidationError) as exc:
            # A row the database refused (a reference, a uniqueness rule): the
            # recovered state is not a consistent one, and nothing was kept.
            raise RecoveryVerificationError(
                f"recovery {rid} was rolled back: the recovered state breaks a rule of the"
                f" schema ({exc})", problems=[str(exc)]) from exc
        assert result is not None
        result.elapsed_s = time.perf_counter() - started
        return result

    def _announce(self) -> None:
        """After a recovery every cache is stale: tell the store's listeners."""
        cache = self.store.__dict__.get("_session_users")
        if isinstance(cache, dict):
            cache.clear()
        self.store.changed("recover", "store", (), None)

    def _lock(self, conn: Connection) -> None:
        st = self.store
        if st.dialect == "sqlite":
            # Checked by verification (foreign_key_check) before the commit, so a
            # violation becomes a verification failure with the offending rows.
            conn.execute("PRAGMA defer_foreign_keys = ON")
        else:
            conn.execute(f"LOCK TABLE {', '.join(_LOCKED)} IN EXCLUSIVE MODE")

    def _run(self, conn: Connection, rid: str, upto: int, scope: _Scope, *, strategy: str,
             point_id: str | None, target_time: datetime | None, dry_run: bool,
             progress: Callable[[int, int], None] | None,
             base: _BaseOf | None) -> RecoveryResult:
        st = self.store
        before = audit_position(conn)
        if upto > before:
            raise RecoveryError(f"audit position {upto} is beyond the newest one ({before})")
        archived = frozenset(str(r[0]) for r in conn.execute(
            "SELECT session_id FROM archive_index").fetchall())
        scope = _Scope(scope.sessions, scope.entity_types, scope.keys, archived)
        if base is None:
            model, base_id, base_audit, warnings = self._base(conn, upto, scope.sessions)
        else:  # an image as it is: nothing to replay
            model, base_id, base_audit, warnings = base(conn)
        total = max(upto - base_audit, 0)

        def step(n: int) -> None:
            if progress is not None:
                progress(n, max(total, n))

        replayed = 0 if base_audit < 0 else model.replay(
            audit_events(st, conn, after=base_audit, upto=upto, sessions=scope.sessions),
            step)
        if strategy == "incremental":
            scope = self._touched(conn, scope, model, upto)
        diff = self._diff(conn, model, scope)
        result = RecoveryResult(
            recovery_id=rid, strategy=strategy, target_audit_id=upto, target_time=target_time,
            point_id=point_id, base_snapshot_id=base_id, events_replayed=replayed,
            changed=diff.count(), scope=scope.describe(), warnings=warnings + model.warnings,
            skipped_archived=sorted(archived & self._model_sessions(model)),
            before_audit_id=before, dry_run=dry_run)
        if dry_run:
            return result
        now = st.now()
        pre = self._insert_point(conn, f"pre-recovery {rid}", "taken automatically before"
                                 f" recovery {rid}", None, None, now,
                                 {"recovery_id": rid, "before_recovery": True})
        result.before_point_id = pre.id
        touched_sessions, touched_blobs = self._apply(conn, rid, model, diff, now)
        result.changed = diff.count()  # with the decisions a delete unlinked
        self._audit_summary(conn, rid, result, now)
        problems = consistency_problems(
            st, conn, sessions=None if scope.sessions is None and scope.touched is None
            else touched_sessions, blob_hashes=touched_blobs)
        problems += st.integrity_problems()
        if problems:
            raise RecoveryVerificationError(
                f"recovery {rid} was rolled back: the recovered state failed verification"
                f" ({len(problems)} problem(s), first: {problems[0]})", problems=problems)
        if progress is not None:
            progress(max(total, replayed), max(total, replayed))
        return result

    @staticmethod
    def _model_sessions(model: StateModel) -> set[str]:
        return {str(k) for k in model.rows(SESSIONS)}

    # -- the base image --------------------------------------------------------------

    def _base(self, conn: Connection, upto: int,
              sessions: frozenset[str] | None,
              ) -> tuple[StateModel, str | None, int, list[str]]:
        """A model loaded with the newest usable image at or before ``upto``, the
        image's id and its audit position.

        A damaged image is skipped (with a warning) for an older one; with no image,
        the whole audit log is replayed from an empty store, if it is whole.
        """
        st = self.store
        warnings: list[str] = []
        rows_found = conn.execute(
            "SELECT id, audit_id, scope_session_id, session_id FROM state_snapshots"
            " WHERE audit_id IS NOT NULL AND audit_id <= ?"
            " ORDER BY audit_id DESC, created_at DESC", (upto,)).fetchall()
        for sid, audit_id, scope_sid, session_id in rows_found:
            covered = scope_sid if scope_sid is not None else session_id
            if covered is not None and (sessions is None or sessions != {covered}):
                continue
            try:
                doc = self.snapshots.load(str(sid))
            except SnapshotCorruptError as exc:
                warnings.append(f"skipped a damaged base image: {exc}")
                log.warning("recovery skipped snapshot %s: %s", sid, exc)
                continue
            model = StateModel(dedup_min_bytes=st.config.dedup_min_bytes)
            model.load_image(doc)
            return model, str(sid), int(audit_id), warnings
        pruned = conn.execute("SELECT value FROM statekeep_meta WHERE key = ?",
                              (PRUNED_KEY,)).fetchone()
        if pruned is not None:
            raise RecoveryError(
                f"no snapshot reaches back to audit position {upto}, and the audit log"
                f" before position {pruned[0]} was pruned: that state cannot be rebuilt")
        return StateModel(dedup_min_bytes=st.config.dedup_min_bytes), None, 0, warnings

    # -- incremental scope -------------------------------------------------------------

    def _touched(self, conn: Connection, scope: _Scope, model: StateModel,
                 upto: int) -> _Scope:
        """What the audit log says changed after ``upto``: row keys, and sessions
        changed as a whole (deleted, or changed by a cascade the log does not list)."""
        touched: dict[str, set[Any]] = {t.name: set() for t in MODEL_TABLES}
        whole: set[str] = set()
        for ev in audit_events(self.store, conn, after=upto, upto=None,
                               sessions=scope.sessions):
            _note_touch(ev, touched, whole)
        for sid in whole:  # decisions a cascade unlinked are found from the target side
            touched[DECISIONS.name] |= model.session_keys(DECISIONS, sid)
        return _Scope(scope.sessions, scope.entity_types, scope.keys, scope.archived,
                      touched, frozenset(whole))

    # -- comparing ----------------------------------------------------------------

    def _current(self, conn: Connection, t: Table, scope: _Scope) -> dict[Any, dict[str, Any]]:
        st = self.store
        found: list[dict[str, Any]] = []
        if not scope.reads(t):
            return {}
        if scope.touched is not None:
            keys = list(scope.touched.get(t.name, ()))
            found += self._by_keys(conn, t, keys)
            if t.session_col is not None and scope.whole:
                for part in _chunks(sorted(scope.whole)):
                    found += rows.select_rows(st, conn, t, f"{t.session_col} IN"
                                              f" ({', '.join('?' * len(part))})", part)
        elif scope.sessions is not None:
            for part in _chunks(sorted(scope.sessions)):
                found += rows.select_rows(st, conn, t, f"{t.session_col} IN"
                                          f" ({', '.join('?' * len(part))})", part)
        else:
            found = rows.select_rows(st, conn, t)
        return {rows.row_key(t, r): r for r in found if scope.covers(t, r)}

    def _by_keys(self, conn: Connection, t: Table, keys: list[Any]) -> list[dict[str, Any]]:
        if not keys:
            return []
        out: list[dict[str, Any]] = []
        if len(t.pk) == 1:
            for part in _chunks(keys):
                out += rows.select_rows(self.store, conn, t,
                                        f"{t.pk[0]} IN ({', '.join('?' * len(part))})", part)
            return out
        for key in keys:
            out += rows.select_rows(self.store, conn, t, t.pk_where(), rows.key_params(t, key))
        return out

    def _diff(self, conn: Connection, model: StateModel, scope: _Scope) -> _Diff:
        diff = _Diff()
        for t in MODEL_TABLES:
            current = self._current(conn, t, scope)
            target = {k: r for k, r in model.rows(t).items() if scope.covers(t, r)}
            if model.opaque:  # unknown at the target: left as they are
                current = {k: r for k, r in current.items() if (t.name, k) not in model.opaque}
                target = {k: r for k, r in target.items() if (t.name, k) not in model.opaque}
            missing = [k for k in target if k not in current]
            # Rows in the target that are outside the scope now (a decision whose
            # session was deleted meanwhile): they exist, so they are updated.
            elsewhere = {rows.row_key(t, r): r for r in self._by_keys(conn, t, missing)}
            deletes = {k: r for k, r in current.items() if k not in target}
            ups: dict[Any, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
            for k, row in target.items():
                old = current.get(k) or elsewhere.get(k)
                if old is None or not self._same(t, old, row):
                    ups[k] = (old, row)
            if deletes:
                diff.deletes[t.name] = deletes
            if ups:
                diff.upserts[t.name] = ups
        return diff

    def _same(self, t: Table, a: dict[str, Any], b: dict[str, Any]) -> bool:
        for col in t.cols:
            x, y = a.get(col), b.get(col)
            if x == y:
                continue
            # jsonb keeps its own key order: compare values, types included.
            if (col in t.json and x is not None and y is not None
                    and self.store.dialect == "postgresql"
                    and _canonical(x) == _canonical(y)):
                continue
            return False
        return True

    # -- applying -----------------------------------------------------------------

    def _apply(self, conn: Connection, rid: str, model: StateModel, diff: _Diff,
               now: datetime) -> tuple[set[str], set[str]]:
        """Write the difference; returns the sessions and blobs it touched."""
        st = self.store
        dels = {t.name: diff.deletes.setdefault(t.name, {}) for t in MODEL_TABLES}
        ups = {t.name: diff.upserts.setdefault(t.name, {}) for t in MODEL_TABLES}
        self._unlink_dependents(conn, dels, ups)
        self._refuse_cascades(conn, dels)
        needed = {r["blob_hash"] for t in (CONTENT, MEMORY) for _, r in ups[t.name].values()
                  if r.get("blob_hash")}
        old_hashes = {r["blob_hash"] for t in (CONTENT, MEMORY)
                      for r in (*dels[t.name].values(),
                                *(o for o, _ in ups[t.name].values() if o is not None))
                      if r.get("blob_hash")}
        live_blobs = {r["hash"]: r for r in self._by_keys(conn, BLOBS, sorted(needed))}
        linked_before = {str(r[0]) for part in _chunks(sorted(needed)) if part
                         for r in conn.execute(
                             "SELECT DISTINCT blob_hash FROM context_content WHERE blob_hash"
                             f" IN ({', '.join('?' * len(part))})", part).fetchall()}
        audits: list[tuple[Any, ...]] = []
        ts_now = st.ts(now)
        for t in _DELETE_ORDER:
            gone = dels[t.name]
            if gone:
                conn.executemany(f"DELETE FROM {t.name} WHERE {t.pk_where()}",
                                 [rows.key_params(t, k) for k in gone])
                audits += [self._audit(t, rid, k, old, None, ts_now) for k, old in gone.items()]
        self._ensure_blobs(conn, needed, model, live_blobs)
        parents: list[tuple[str, str]] = []
        for t in _UPSERT_ORDER:
            todo = ups[t.name]
            inserts, updates = [], []
            for k, (old, new) in todo.items():
                row = new
                if t is TASKS and new.get("parent_task_id") is not None:
                    parents.append((new["parent_task_id"], new["id"]))
                    row = {**new, "parent_task_id": None}
                values = rows.row_in(st, t, row)
                if old is None:
                    inserts.append(values)
                else:
                    updates.append([v for c, v in zip(t.cols, values, strict=True)
                                    if c not in t.pk] + rows.key_params(t, k))
                blob = None
                if t is CONTENT and new["blob_hash"] not in linked_before:
                    blob = model.blobs.get(new["blob_hash"]) or live_blobs.get(new["blob_hash"])
                audits.append(self._audit(t, rid, k, old, new, ts_now, blob))
            if updates:
                conn.executemany(t.update_sql(), updates)
            if inserts:
                conn.executemany(t.insert_sql(), inserts)
        if parents:
            conn.executemany("UPDATE tasks SET parent_task_id = ? WHERE id = ?", parents)
        blobs = needed | old_hashes
        self._recount_blobs(conn, blobs, model)
        if audits:
            conn.executemany(AUDIT_INSERT, audits)
        sessions: set[str] = set()
        for t in MODEL_TABLES:
            if t.session_col is None:
                continue
            for r in (*dels[t.name].values(), *(n for _, n in ups[t.name].values()),
                      *(o for o, _ in ups[t.name].values() if o is not None)):
                if r.get(t.session_col) is not None:
                    sessions.add(str(r[t.session_col]))
        return sessions, blobs

    def _audit(self, t: Table, rid: str, key: Any, old: dict[str, Any] | None,
               new: dict[str, Any] | None, ts_now: Any,
               blob: dict[str, Any] | None = None) -> tuple[Any, ...]:
        st = self.store
        row = new if new is not None else old
        assert row is not None
        sid = row.get(t.session_col) if t.session_col else None
        meta: dict[str, Any] = {"recovery": rid, "table": t.name}
        if blob is not None:
            meta["blob"] = {c: blob.get(c) for c in BLOBS.cols if c != "ref_count"}
        user = row.get("user_id") if t in (SESSIONS, PREFERENCES) else None
        return ("recover", t.entity, _key_text(t, key),
                None if old is None else st.json_in(codec.dumps_trusted(old)),
                None if new is None else st.json_in(codec.dumps_trusted(new)),
                st.json_in(codec.dumps_trusted(meta)), user, sid, ts_now)

    def _unlink_dependents(self, conn: Connection, dels: dict[str, dict[Any, Any]],
                           ups: dict[str, dict[Any, Any]]) -> None:
        """Clear the links a delete or rewrite would leave dangling mid-way, exactly
        as the store's own deletes do: task parents and decision links of rows
        about to be rewritten, decisions (outside the scope too) of deleted tasks
        and sessions -- those become updates with an audit row like any other."""
        st = self.store
        rewritten_tasks = [k for k, (old, _) in ups[TASKS.name].items() if old is not None]
        for part in _chunks([*dels[TASKS.name], *rewritten_tasks]):
            if part:
                conn.execute("UPDATE tasks SET parent_task_id = NULL WHERE id IN"
                             f" ({', '.join('?' * len(part))})", part)
        gone_tasks = set(dels[TASKS.name])
        gone_sessions = set(dels[SESSIONS.name])
        affected: list[dict[str, Any]] = []
        for column, ids in (("task_id", gone_tasks), ("session_id", gone_sessions)):
            for part in _chunks(sorted(ids)):
                if part:
                    affected += rows.select_rows(st, conn, DECISIONS, f"{column} IN"
                                                 f" ({', '.join('?' * len(part))})", part)
        decision_ups = ups[DECISIONS.name]
        for row in affected:
            key = row["id"]
            if key in dels[DECISIONS.name]:
                continue
            old, new = decision_ups.get(key, (row, row))
            fixed = dict(new)
            if fixed["task_id"] in gone_tasks:
                fixed["task_id"] = None
            if fixed["session_id"] in gone_sessions:
                fixed["session_id"] = fixed["task_id"] = None
            decision_ups[key] = (old or row, fixed)
        relinked = [k for k, (old, _) in decision_ups.items() if old is not None]
        for part in _chunks([*dels[DECISIONS.name], *relinked]):
            if part:
                conn.execute("UPDATE decisions SET session_id = NULL, task_id = NULL WHERE id"
                             f" IN ({', '.join('?' * len(part))})", part)
        for part in _chunks(sorted(gone_sessions)):
            if part:
                conn.execute("UPDATE recovery_points SET state_snapshot_id = NULL"
                             " WHERE state_snapshot_id IN (SELECT id FROM state_snapshots"
                             f" WHERE session_id IN ({', '.join('?' * len(part))}))", part)

    def _refuse_cascades(self, conn: Connection, dels: dict[str, dict[Any, Any]]) -> None:
        """A delete must not take rows outside the recovery with it (ON DELETE CASCADE
        would, silently): a selection that implies one is refused."""
        problems: list[str] = []
        checks = (
            (SESSIONS, ((TASKS, "session_id"), (CONTEXT, "session_id"),
                        (RELATIONS, "session_id"), (CONTENT, "session_id"))),
            (CONTEXT, ((RELATIONS, "source_id"), (RELATIONS, "target_id"),
                       (CONTENT, "context_id"))),
        )
        for parent, children in checks:
            gone = sorted(dels[parent.name])
            for child, column in children:
                for part in _chunks(gone):
                    if not part:
                        continue
                    for r in conn.execute(
                            f"SELECT {child.pk[0]}, {column} FROM {child.name} WHERE {column}"
                            f" IN ({', '.join('?' * len(part))})", part).fetchall():
                        if r[0] not in dels[child.name]:
                            problems.append(
                                f"deleting {parent.entity} {r[1]} would also delete"
                                f" {child.entity} {r[0]}, which this recovery does not cover")
        if problems:
            raise RecoveryVerificationError(
                f"the recovery would delete rows outside its selection ({problems[0]})",
                problems=problems[:50])

    def _ensure_blobs(self, conn: Connection, needed: Iterable[str], model: StateModel,
                      live: dict[str, dict[str, Any]]) -> None:
        """Every blob a link or memory row will name exists (with 0 references:
        the links' triggers and the recount below set them)."""
        st = self.store
        for digest in sorted(needed):
            if conn.execute("SELECT 1 FROM content_blobs WHERE hash = ?",
                            (digest,)).fetchone() is not None:
                continue
            record = model.blobs.get(digest) or live.get(digest)
            if record is None:
                raise RecoveryVerificationError(
                    f"blob {digest} is needed by the recovered state but its bytes are in"
                    " no image and no audit row", problems=[f"blob {digest} is missing"])
            data = base64.b64decode(record["data"])
            conn.execute(
                "INSERT INTO content_blobs (hash, data, size_bytes, stored_bytes, ref_count,"
                " created_at) VALUES (?, ?, ?, ?, 0, ?)",
                (digest, data, int(record["size_bytes"]), int(record["stored_bytes"]),
                 st.ts(datetime.fromisoformat(record["created_at"]))))

    def _recount_blobs(self, conn: Connection, hashes: set[str], model: StateModel) -> None:
        st = self.store
        for part in _chunks(sorted(hashes)):
            if not part:
                continue
            marks = ", ".join("?" * len(part))
            conn.execute(
                "UPDATE content_blobs SET ref_count ="
                " (SELECT COUNT(*) FROM memory_entries m WHERE m.blob_hash = content_blobs.hash)"
                " + (SELECT COUNT(*) FROM context_content c"
                " WHERE c.blob_hash = content_blobs.hash)"
                f" WHERE hash IN ({marks})", part)
            conn.execute(f"DELETE FROM content_blobs WHERE hash IN ({marks}) AND ref_count = 0",
                         part)
        # A blob stored again after it went is dated by its newer row; the target's
        # own record wins where the model has one.
        fixes = []
        for digest in sorted(hashes):
            rec = model.blobs.get(digest)
            if rec is None or rec.get("created_at") is None:
                continue
            fixes.append((st.ts(datetime.fromisoformat(rec["created_at"])), digest))
        if fixes:
            conn.executemany("UPDATE content_blobs SET created_at = ? WHERE hash = ?", fixes)

    def _audit_summary(self, conn: Connection, rid: str, result: RecoveryResult,
                       now: datetime) -> None:
        self.store.audit_row(conn, "recover", "store", rid, None, None, user_id=None,
                             session_id=None, at=now, notify=False, meta={
                                 "strategy": result.strategy, "point_id": result.point_id,
                                 "target_audit_id": result.target_audit_id,
                                 "target_time": None if result.target_time is None
                                 else result.target_time.isoformat(),
                                 "base_snapshot_id": result.base_snapshot_id,
                                 "events_replayed": result.events_replayed,
                                 "changed": result.changed, "scope": result.scope,
                                 "before_point_id": result.before_point_id})


def _note_touch(ev: AuditEvent, touched: dict[str, set[Any]], whole: set[str]) -> None:
    kind, event = ev.entity_type, ev.event_type
    if event == "recover":
        meta = ev.change_metadata if isinstance(ev.change_metadata, dict) else {}
        t = next((t for t in MODEL_TABLES if t.name == meta.get("table")), None)
        row = ev.new_value if isinstance(ev.new_value, dict) else ev.old_value
        if t is not None and isinstance(row, dict):
            touched[t.name].add(rows.row_key(t, row))
        return
    if kind == "session" and event in ("delete", "purge"):
        whole.add(ev.entity_id)
        return
    cascades = ((kind in ("task", "context") and event == "delete")
                or (kind == "relation" and event == "replace"))
    if cascades and ev.session_id is not None:
        # Cascades the log does not list (decision links, relations, content).
        whole.add(ev.session_id)
    t = _BY_ENTITY.get(kind)
    if t is None:
        return
    if t is SYNC_STATE:
        row = ev.new_value if isinstance(ev.new_value, dict) else ev.old_value
        if isinstance(row, dict):
            touched[t.name].add((row.get("scope"), row.get("key")))
        return
    touched[t.name].add(ev.entity_id)


def _canonical(text: str) -> bytes:
    with contextlib.suppress(orjson.JSONDecodeError):
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)
    return text.encode()


def _chunks(values: Sequence[Any]) -> list[list[Any]]:
    items = list(values)
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)] or [[]]
