"""Synchronised state: versioned keys, exact conflict detection, pending conflicts.

Components push their state as key/value maps into a scope. Every key carries
a version, bumped by each committed write. A write is *based on* a version --
given explicitly, else the version the component last read or wrote (kept in
``sync_seen``, so it holds across processes and restarts), else 0 -- and a
write based on an older version than the stored one is a concurrent
modification. Detection compares integers inside the write transaction with
the key's row locked, so it is exact: no clocks are compared, and two
processes (or machines, on PostgreSQL) can never both believe they wrote on
top of the same version.

What to do about a conflict is policy, and policy lives above the store
(:mod:`statekeep.sync.resolver`): :meth:`SyncStore.sync_write` takes a
``resolve`` callable, calls it with a :class:`Conflict` while the row is
locked, and applies the :class:`Resolution` it returns -- write a value, keep
the stored one, or leave the decision to a person as a pending conflict. The
whole sync is one transaction: any error (bad input found late, a merge that
has none) leaves the store exactly as it was.

Audit rows, all in the sync's own transaction:

* ``sync`` (``create``/``update``, entity id ``scope:key``): one per committed
  key write, ``new_value`` = the :class:`~statekeep.models.SyncEntry`; when a
  conflict was resolved, ``change_metadata`` carries the strategy and both
  values. These rows are exactly the key's versions, one each, so replaying
  them in id order rebuilds the state.
* ``sync_resolution`` (``keep``): a conflict resolved in favour of the stored
  value (``keep_current``, a merge that added nothing, ``max``/``min``), which
  writes no version but is still a resolution to account for.
* ``sync_conflict`` (``create``/``supersede``/``resolve``, entity id = the
  conflict id): the life of a pending conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from statekeep import codec
from statekeep.errors import ConflictClosedError, NotFoundError, ValidationError
from statekeep.ids import new_id, validate_id, validate_key, validate_name
from statekeep.models import ConflictStatus, SyncConflict, SyncEntry
from statekeep.store.base import UNSET, Connection, StoreCore, Unset
from statekeep.sync.events import SyncEvent

__all__ = [
    "CONFLICT_CHOICES",
    "Conflict",
    "ConflictResolution",
    "KeyResolution",
    "Resolution",
    "Resolve",
    "SyncResult",
    "SyncStore",
]

SYNC_COLS = "scope, key, value, version, component, updated_at"
CONFLICT_COLS = (
    "id, scope, key, component, base_version, current_version, current_value,"
    " proposed_value, status, resolution, resolved_value, resolved_by, created_at, resolved_at"
)
#: How a person may settle a pending conflict.
CONFLICT_CHOICES = ("current", "proposed", "merge", "value")
#: The component recorded for a key written by a person's resolution when no
#: ``resolved_by`` is given.
PERSON = "user"
_ACTIONS = ("write", "keep", "pending")
#: Keys per ``IN (...)`` list: well inside both drivers' parameter limits.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Conflict:
    """A write based on ``base_version`` met ``current_version``, with a different value."""

    scope: str
    key: str
    component: str
    base_version: int
    current_version: int
    current_value: Any
    proposed_value: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "key": self.key, "component": self.component,
            "base_version": self.base_version, "current_version": self.current_version,
            "current_value": self.current_value, "proposed_value": self.proposed_value,
        }


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the policy decided for one :class:`Conflict`.

    ``write`` stores ``value``; ``keep`` leaves the stored value; ``pending``
    leaves the decision to a person. ``strategy`` is what the audit log
    records; ``rule`` is the configured ``pattern=strategy`` that applied, for
    ``rule_based``.
    """

    strategy: str
    action: Literal["write", "keep", "pending"]
    value: Any = None
    rule: str | None = None


#: The policy a sync applies to each conflict, called with the key's row locked.
Resolve = Callable[[Conflict], Resolution]


@dataclass(frozen=True, slots=True)
class KeyResolution:
    """How one conflict of a sync ended.

    ``action`` is ``write`` when the key got a new version, ``keep`` when the
    stored value stayed (also when a ``write`` would not have changed it), and
    ``pending`` when a person decides (``conflict_id``).
    """

    key: str
    strategy: str
    rule: str | None
    action: str
    base_version: int
    current_version: int
    current_value: Any
    proposed_value: Any
    #: The value the key holds because of this resolution; None while pending.
    resolved_value: Any
    #: The key's version after the sync.
    version: int
    conflict_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "strategy": self.strategy, "rule": self.rule,
            "action": self.action, "base_version": self.base_version,
            "current_version": self.current_version, "current_value": self.current_value,
            "proposed_value": self.proposed_value, "resolved_value": self.resolved_value,
            "version": self.version, "conflict_id": self.conflict_id,
        }


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one sync did, key by key.

    ``applied``/``versions`` hold, for every key of the request, the value and
    version the key has after the sync -- what the component should now hold
    (for a pending key: the stored value it keeps meanwhile).
    """

    scope: str
    component: str
    applied: Mapping[str, Any]
    versions: Mapping[str, int]
    #: Keys that got a new version (without conflict or by a resolution).
    written: tuple[str, ...]
    #: Keys whose proposed value was already the stored one.
    unchanged: tuple[str, ...]
    resolutions: tuple[KeyResolution, ...]
    #: Key -> id of the pending conflict a person decides.
    pending: Mapping[str, str]
    #: One per committed key write, for propagation after the commit.
    events: tuple[SyncEvent, ...] = field(default=(), repr=False)

    @property
    def conflicts(self) -> int:
        """How many keys of the request met a concurrent modification."""
        return len(self.resolutions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json`` output)."""
        return {
            "scope": self.scope, "component": self.component, "applied": dict(self.applied),
            "versions": dict(self.versions), "written": list(self.written),
            "unchanged": list(self.unchanged),
            "resolutions": [r.to_dict() for r in self.resolutions],
            "pending": dict(self.pending),
        }


@dataclass(frozen=True, slots=True)
class ConflictResolution:
    """A pending conflict settled by a person, and the key afterwards."""

    conflict: SyncConflict
    entry: SyncEntry
    #: False when the chosen value was already the stored one (no new version).
    written: bool
    events: tuple[SyncEvent, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"conflict": self.conflict.to_dict(), "entry": self.entry.to_dict(),
                "written": self.written}


@dataclass(frozen=True, slots=True)
class _Proposal:
    """One validated key of a request: the value as stored (decoded) and encoded."""

    value: Any
    data: bytes


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``==`` to reject fast, then the canonical form, which tells
    ``1``, ``1.0`` and ``true`` apart (``==`` does not) and ignores key order."""
    return bool(a == b) and codec.canonical_hash(a) == codec.canonical_hash(b)


def _count(value: object, field_name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f"{field_name} must be a non-negative integer, not {value!r}",
                              field=field_name)
    return value


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


class SyncStore(StoreCore):
    """Versioned shared state, conflict detection and pending conflicts."""

    # -- rows ---------------------------------------------------------------

    def sync_entry_row(self, row: Any) -> SyncEntry:
        return SyncEntry(scope=row[0], key=row[1], value=self.json_out(row[2]),
                         version=int(row[3]), component=row[4],
                         updated_at=self.ts_out(row[5]))

    def sync_conflict_row(self, row: Any) -> SyncConflict:
        return SyncConflict(
            id=row[0], scope=row[1], key=row[2], component=row[3],
            base_version=int(row[4]), current_version=int(row[5]),
            current_value=self.json_out(row[6]), proposed_value=self.json_out(row[7]),
            status=ConflictStatus(row[8]), resolution=row[9],
            resolved_value=self.json_col(row[10]), resolved_by=row[11],
            created_at=self.ts_out(row[12]), resolved_at=self.ts_col(row[13]),
        )

    def _sync_entry(self, conn: Connection, scope: str, key: str, *,
                    lock: bool = False) -> SyncEntry | None:
        row = conn.execute(
            f"SELECT {SYNC_COLS} FROM sync_state WHERE scope = ? AND key = ?"
            f"{self.row_lock if lock else ''}", (scope, key)).fetchone()
        return None if row is None else self.sync_entry_row(row)

    def _sync_conflict(self, conn: Connection, conflict_id: str, *,
                       lock: bool = False) -> SyncConflict:
        row = conn.execute(
            f"SELECT {CONFLICT_COLS} FROM sync_conflicts WHERE id = ?"
            f"{self.row_lock if lock else ''}", (conflict_id,)).fetchone()
        if row is None:
            raise NotFoundError("sync conflict", conflict_id)
        return self.sync_conflict_row(row)

    def _sync_encode(self, value: Any, field_name: str) -> _Proposal:
        data = codec.dumps(value, field=field_name, max_bytes=self.config.max_value_bytes)
        # Decoded again so that results and events carry the value as a reader
        # of the store will see it (a tuple comes back a list).
        return _Proposal(codec.loads(data), data)

    def _sync_trusted(self, value: Any) -> Any:
        """A value read from the store, as a JSON parameter again."""
        return self.json_in(codec.dumps_trusted(value))

    # -- input --------------------------------------------------------------

    def _sync_input(
        self,
        component: str,
        state: Mapping[str, Any],
        scope: str,
        base_versions: Mapping[str, int] | None,
    ) -> tuple[dict[str, _Proposal], dict[str, int]]:
        """Every check that needs no database, so bad input fails before any lock."""
        validate_id(component, "component")
        validate_id(scope, "scope")
        if not isinstance(state, Mapping):
            raise ValidationError(
                f"state must be a mapping of key to JSON value, not {type(state).__name__}",
                field="state")
        proposals: dict[str, _Proposal] = {}
        for key, value in state.items():
            validate_key(key, "key")
            proposals[key] = self._sync_encode(value, f"state[{key!r}]")
        bases: dict[str, int] = {}
        if base_versions is not None:
            if not isinstance(base_versions, Mapping):
                raise ValidationError("base_versions must be a mapping of key to version",
                                      field="base_versions")
            for key, version in base_versions.items():
                if key not in proposals:
                    raise ValidationError(
                        f"base_versions names key {key!r}, which state does not hold",
                        field="base_versions")
                bases[key] = _count(version, f"base_versions[{key!r}]")
        return proposals, bases

    def _sync_seen(self, conn: Connection, scope: str, component: str,
                   keys: Sequence[str]) -> dict[str, int]:
        seen: dict[str, int] = {}
        for part in _chunks(keys):
            rows = conn.execute(
                "SELECT key, version FROM sync_seen WHERE scope = ? AND component = ?"
                f" AND key IN ({', '.join('?' * len(part))})",
                (scope, component, *part)).fetchall()
            seen.update((r[0], int(r[1])) for r in rows)
        return seen

    def _sync_mark_seen(self, conn: Connection, scope: str, component: str,
                        versions: Mapping[str, int]) -> None:
        if versions:
            conn.executemany(
                "INSERT INTO sync_seen (scope, component, key, version) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope, component, key) DO UPDATE SET version = excluded.version",
                [(scope, component, k, v) for k, v in sorted(versions.items())])

    @staticmethod
    def _sync_ahead(key: str, base: int, stored: int) -> ValidationError:
        return ValidationError(
            f"base version {base} of key {key!r} is ahead of the stored version {stored}:"
            " a base must be a version the component read or wrote", field="base_versions")

    # -- writes -------------------------------------------------------------

    def sync_write(
        self,
        component: str,
        state: Mapping[str, Any],
        *,
        scope: str = "global",
        base_versions: Mapping[str, int] | None = None,
        resolve: Resolve,
    ) -> SyncResult:
        """Write ``state`` on behalf of ``component``; detect and resolve conflicts.

        For each key (in sorted order, so that concurrent syncs lock rows in
        one order and cannot deadlock): lock the row, compare the stored
        version with the base. Equal values are never a conflict; a different
        value on the base version is a plain write; a different value on a
        newer version is a :class:`Conflict`, handed to ``resolve``. A base
        ahead of the stored version is a ValidationError: that version never
        existed. Any error rolls the whole sync back.
        """
        proposals, bases = self._sync_input(component, state, scope, base_versions)
        if not callable(resolve):
            raise ValidationError("resolve must be a callable policy", field="resolve")
        now = self.now()
        applied: dict[str, Any] = {}
        versions: dict[str, int] = {}
        written: list[str] = []
        unchanged: list[str] = []
        resolutions: list[KeyResolution] = []
        pending: dict[str, str] = {}
        events: list[SyncEvent] = []
        seen_now: dict[str, int] = {}
        keys = sorted(proposals)

        def settle(entry: SyncEntry, wrote: bool) -> None:
            if wrote:
                written.append(entry.key)
                events.append(SyncEvent(scope, entry.key, entry.value, entry.version,
                                        entry.component, now))
            applied[entry.key], versions[entry.key] = entry.value, entry.version
            seen_now[entry.key] = entry.version

        with self.atomic() as conn:
            seen = self._sync_seen(conn, scope, component, keys)
            for key in keys:
                proposal = proposals[key]
                base = bases.get(key, seen.get(key, 0))
                current = self._sync_entry(conn, scope, key, lock=True)
                if current is None:
                    if base > 0:
                        raise self._sync_ahead(key, base, 0)
                    created = self._sync_insert_entry(conn, scope, key, component, proposal, now)
                    if created is not None:
                        self._sync_audit(conn, None, created, {
                            "component": component, "base_version": base}, now)
                        settle(created, True)
                        continue
                    # Another writer created it first; it is committed now: lock it.
                    current = self._sync_entry(conn, scope, key, lock=True)
                    assert current is not None
                if base > current.version:
                    raise self._sync_ahead(key, base, current.version)
                # After the key's lock, as resolve_conflict does: one lock order.
                self._sync_supersede(conn, scope, key, component, now)
                if _same(current.value, proposal.value):
                    unchanged.append(key)
                    settle(current, False)
                elif base == current.version:
                    entry = self._sync_update_entry(conn, current, component, proposal, now)
                    self._sync_audit(conn, current, entry, {
                        "component": component, "base_version": base}, now)
                    settle(entry, True)
                else:
                    conflict = Conflict(scope, key, component, base, current.version,
                                        current.value, proposal.value)
                    decided = resolve(conflict)
                    outcome = self._sync_apply(conn, conflict, current, decided, now)
                    resolutions.append(outcome)
                    if outcome.conflict_id is not None:
                        # Not marked seen: the component has not seen what a
                        # person will decide, so its next write still conflicts.
                        pending[key] = outcome.conflict_id
                        applied[key], versions[key] = current.value, current.version
                    elif outcome.action == "keep":
                        settle(current, False)
                    else:
                        settle(SyncEntry(scope, key, outcome.resolved_value, outcome.version,
                                         component, now), True)
            self._sync_mark_seen(conn, scope, component, seen_now)
        return SyncResult(scope=scope, component=component, applied=applied,
                          versions=versions, written=tuple(written),
                          unchanged=tuple(unchanged), resolutions=tuple(resolutions),
                          pending=pending, events=tuple(events))

    def _sync_insert_entry(self, conn: Connection, scope: str, key: str, component: str,
                           proposal: _Proposal, now: datetime) -> SyncEntry | None:
        """Create the key at version 1, or None when a concurrent writer just did.

        Insert-first: at READ COMMITTED two writers of a new key may both have
        found no row; the second insert waits for the first and then does
        nothing, and its caller re-reads the (now committed) row locked.
        """
        cur = conn.execute(
            f"INSERT INTO sync_state ({SYNC_COLS}) VALUES (?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (scope, key) DO NOTHING",
            (scope, key, self.json_in(proposal.data), component, self.ts(now)))
        if cur.rowcount != 1:
            return None
        return SyncEntry(scope, key, proposal.value, 1, component, now)

    def _sync_update_entry(self, conn: Connection, current: SyncEntry, component: str,
                           proposal: _Proposal, now: datetime) -> SyncEntry:
        version = current.version + 1
        conn.execute(
            "UPDATE sync_state SET value = ?, version = ?, component = ?, updated_at = ?"
            " WHERE scope = ? AND key = ?",
            (self.json_in(proposal.data), version, component, self.ts(now),
             current.scope, current.key))
        return SyncEntry(current.scope, current.key, proposal.value, version, component, now)

    def _sync_audit(self, conn: Connection, old: SyncEntry | None, new: SyncEntry,
                    meta: dict[str, Any], now: datetime, *, user_id: str | None = None) -> None:
        self.audit_row(conn, "create" if old is None else "update", "sync",
                       f"{new.scope}:{new.key}", None if old is None else old.to_dict(),
                       new.to_dict(), user_id=user_id, session_id=None, meta=meta, at=now)

    def _sync_apply(self, conn: Connection, conflict: Conflict, current: SyncEntry,
                    resolution: Resolution, now: datetime) -> KeyResolution:
        if not isinstance(resolution, Resolution) or resolution.action not in _ACTIONS:
            raise ValidationError(
                f"the resolve policy returned {resolution!r}, not a Resolution",
                field="resolve")
        strategy = validate_name(resolution.strategy, "strategy")
        meta: dict[str, Any] = {"component": conflict.component,
                                "base_version": conflict.base_version, "strategy": strategy}
        if resolution.rule is not None:
            meta["rule"] = resolution.rule
        if resolution.action == "pending":
            cid = self._sync_insert_conflict(conn, conflict, meta, now)
            return KeyResolution(conflict.key, strategy, resolution.rule, "pending",
                                 conflict.base_version, conflict.current_version,
                                 conflict.current_value, conflict.proposed_value, None,
                                 current.version, cid)
        action = "keep"
        entry = current
        if resolution.action == "write":
            resolved = self._sync_encode(resolution.value,
                                         f"resolved value of key {conflict.key!r}")
            if not _same(resolved.value, current.value):
                action = "write"
                entry = self._sync_update_entry(conn, current, conflict.component, resolved, now)
        meta["conflict"] = {
            "base_version": conflict.base_version,
            "current_version": conflict.current_version,
            "current_value": conflict.current_value,
            "proposed_value": conflict.proposed_value,
            "resolved_value": entry.value,
        }
        if action == "write":
            self._sync_audit(conn, current, entry, meta, now)
        else:
            self.audit_row(conn, "keep", "sync_resolution", f"{current.scope}:{current.key}",
                           None, current.to_dict(), user_id=None, session_id=None, meta=meta,
                           at=now)
        return KeyResolution(conflict.key, strategy, resolution.rule, action,
                             conflict.base_version, conflict.current_version,
                             conflict.current_value, conflict.proposed_value, entry.value,
                             entry.version)

    def _sync_supersede(self, conn: Connection, scope: str, key: str, component: str,
                        now: datetime) -> None:
        """A newer proposal from a component replaces its pending one, whatever
        becomes of the newer one: a person must never be asked to decide on a
        value its own author has since moved on from."""
        row = conn.execute(
            f"SELECT {CONFLICT_COLS} FROM sync_conflicts WHERE scope = ? AND key = ?"
            " AND component = ? AND status = 'pending'", (scope, key, component)).fetchone()
        if row is None:
            return
        old = self.sync_conflict_row(row)
        conn.execute("UPDATE sync_conflicts SET status = 'superseded', resolved_at = ?"
                     " WHERE id = ?", (self.ts(now), old.id))
        new = self._sync_conflict(conn, old.id)
        self.audit_row(conn, "supersede", "sync_conflict", old.id, old.to_dict(),
                       new.to_dict(), user_id=None, session_id=None,
                       meta={"component": component}, at=now)

    def _sync_insert_conflict(self, conn: Connection, conflict: Conflict,
                              meta: dict[str, Any], now: datetime) -> str:
        cid = new_id("cfl")
        conn.execute(
            "INSERT INTO sync_conflicts (id, scope, key, component, base_version,"
            " current_version, current_value, proposed_value, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (cid, conflict.scope, conflict.key, conflict.component, conflict.base_version,
             conflict.current_version, self._sync_trusted(conflict.current_value),
             self._sync_trusted(conflict.proposed_value), self.ts(now)))
        created = self._sync_conflict(conn, cid)
        self.audit_row(conn, "create", "sync_conflict", cid, None, created.to_dict(),
                       user_id=None, session_id=None, meta=meta, at=now)
        return cid

    def resolve_conflict(
        self,
        conflict_id: str,
        choice: str,
        *,
        value: Any | Unset = UNSET,
        resolved_by: str | None = None,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> ConflictResolution:
        """Settle a pending conflict: keep the ``current`` value, take the
        ``proposed`` one, ``merge`` the two (with the given merge function), or
        store ``value``.

        "current" and "merge" mean the value stored *now*, which may be newer
        than the one recorded with the conflict. A key that changes gets a new
        version, written as ``resolved_by`` (default ``"user"``), so the
        component that proposed it is told the outcome like any other.
        """
        validate_id(conflict_id, "conflict_id")
        if choice not in CONFLICT_CHOICES:
            raise ValidationError(
                f"choice {choice!r} is not one of: {', '.join(CONFLICT_CHOICES)}",
                field="choice")
        given: _Proposal | None = None
        if choice == "value":
            if isinstance(value, Unset):
                raise ValidationError("choice 'value' needs the value to store", field="value")
            given = self._sync_encode(value, "value")
        elif not isinstance(value, Unset):
            raise ValidationError(f"a value is only taken with choice 'value', not {choice!r}",
                                  field="value")
        if choice == "merge" and not callable(merge):
            raise ValidationError("choice 'merge' needs a merge function", field="merge")
        if resolved_by is not None:
            validate_id(resolved_by, "resolved_by")
        writer = resolved_by or PERSON
        now = self.now()
        with self.atomic() as conn:
            found = self._sync_conflict(conn, conflict_id)
            # The key's row first, as a sync locks it: one lock order, no deadlock.
            current = self._sync_entry(conn, found.scope, found.key, lock=True)
            old = self._sync_conflict(conn, conflict_id, lock=True)
            if old.status is not ConflictStatus.PENDING:
                raise ConflictClosedError(
                    f"sync conflict {conflict_id!r} is {old.status.value}, not pending:"
                    " it cannot be resolved again")
            if current is None:
                raise NotFoundError("sync key", f"{old.scope}:{old.key}")
            if choice == "current":
                resolved = _Proposal(current.value, codec.dumps_trusted(current.value))
            elif choice == "proposed":
                resolved = _Proposal(old.proposed_value, codec.dumps_trusted(old.proposed_value))
            elif choice == "merge":
                assert merge is not None
                resolved = self._sync_encode(merge(current.value, old.proposed_value),
                                             "merged value")
            else:
                assert given is not None
                resolved = given
            conn.execute(
                "UPDATE sync_conflicts SET status = 'resolved', resolution = ?,"
                " resolved_value = ?, resolved_by = ?, resolved_at = ? WHERE id = ?",
                (choice, self.json_in(resolved.data), resolved_by, self.ts(now), conflict_id))
            new = self._sync_conflict(conn, conflict_id)
            meta: dict[str, Any] = {"strategy": "user_decides", "choice": choice,
                                    "component": old.component}
            self.audit_row(conn, "resolve", "sync_conflict", conflict_id, old.to_dict(),
                           new.to_dict(), user_id=resolved_by, session_id=None, meta=meta,
                           at=now)
            entry = current
            events: tuple[SyncEvent, ...] = ()
            if not _same(resolved.value, current.value):
                entry = self._sync_update_entry(conn, current, writer, resolved, now)
                self._sync_audit(conn, current, entry, {
                    **meta, "conflict_id": conflict_id, "resolved_by": resolved_by,
                    "conflict": {
                        "base_version": old.base_version,
                        "current_version": current.version,
                        "current_value": current.value,
                        "proposed_value": old.proposed_value,
                        "resolved_value": entry.value,
                    }}, now, user_id=resolved_by)
                events = (SyncEvent(entry.scope, entry.key, entry.value, entry.version,
                                    entry.component, now),)
        return ConflictResolution(new, entry, bool(events), events)

    # -- reads --------------------------------------------------------------

    def get_sync_state(
        self,
        scope: str = "global",
        keys: Sequence[str] | None = None,
        *,
        component: str | None = None,
    ) -> dict[str, SyncEntry]:
        """The scope's keys (or the given ones that exist), in key order.

        With ``component``, the versions read become that component's bases:
        it has now seen them, so its next write of those keys is a conflict
        only if someone writes in between. That bookkeeping is a write, so
        such a read is a (short) write transaction.
        """
        validate_id(scope, "scope")
        wanted: list[str] | None = None
        if keys is not None:
            if isinstance(keys, str) or not isinstance(keys, Sequence | set | frozenset):
                raise ValidationError("keys must be a list of keys", field="keys")
            wanted = sorted({validate_key(k, "key") for k in keys})
        if component is not None:
            validate_id(component, "component")
        if component is None:
            with self.reading() as conn:
                return self._sync_read(conn, scope, wanted)
        with self.atomic() as conn:
            entries = self._sync_read(conn, scope, wanted)
            self._sync_mark_seen(conn, scope, component,
                                 {k: e.version for k, e in entries.items()})
        return entries

    def _sync_read(self, conn: Connection, scope: str,
                   keys: list[str] | None) -> dict[str, SyncEntry]:
        base = f"SELECT {SYNC_COLS} FROM sync_state WHERE scope = ?"
        rows: list[Any] = []
        if keys is None:
            rows = conn.execute(base + " ORDER BY key", (scope,)).fetchall()
        else:
            for part in _chunks(keys):
                rows += conn.execute(
                    base + f" AND key IN ({', '.join('?' * len(part))})",
                    (scope, *part)).fetchall()
        entries = [self.sync_entry_row(r) for r in rows]
        return {e.key: e for e in sorted(entries, key=lambda e: e.key)}

    def sync_preview(
        self,
        component: str,
        state: Mapping[str, Any],
        *,
        scope: str = "global",
        base_versions: Mapping[str, int] | None = None,
    ) -> list[Conflict]:
        """The conflicts :meth:`sync_write` would meet now, without writing anything.

        A preview, not a reservation: another writer may commit before the
        real sync, which detects again under lock.
        """
        proposals, bases = self._sync_input(component, state, scope, base_versions)
        keys = sorted(proposals)
        found: list[Conflict] = []
        with self.snapshot() as conn:
            seen = self._sync_seen(conn, scope, component, keys)
            current = self._sync_read(conn, scope, keys)
        for key in keys:
            base = bases.get(key, seen.get(key, 0))
            entry = current.get(key)
            stored = 0 if entry is None else entry.version
            if base > stored:
                raise self._sync_ahead(key, base, stored)
            if (entry is not None and base < stored
                    and not _same(entry.value, proposals[key].value)):
                found.append(Conflict(scope, key, component, base, stored, entry.value,
                                      proposals[key].value))
        return found

    def sync_seen_versions(self, component: str, *, scope: str = "global") -> dict[str, int]:
        """The versions ``component`` last read or wrote: its default bases."""
        validate_id(component, "component")
        validate_id(scope, "scope")
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT key, version FROM sync_seen WHERE scope = ? AND component = ?"
                " ORDER BY key", (scope, component)).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def sync_scopes(self) -> list[str]:
        """Every scope that holds synchronised keys."""
        with self.reading() as conn:
            rows = conn.execute("SELECT DISTINCT scope FROM sync_state ORDER BY scope",
                                ()).fetchall()
        return [str(r[0]) for r in rows]

    def get_conflict(self, conflict_id: str) -> SyncConflict:
        """The conflict, or NotFoundError."""
        validate_id(conflict_id, "conflict_id")
        with self.reading() as conn:
            return self._sync_conflict(conn, conflict_id)

    def list_conflicts(
        self,
        *,
        status: ConflictStatus | str | None = ConflictStatus.PENDING,
        scope: str | None = None,
        key: str | None = None,
        component: str | None = None,
        limit: int = 100,
    ) -> list[SyncConflict]:
        """Conflicts oldest first (pending ones by default; ``status=None`` for all)."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(ConflictStatus.parse(status).value)
        if scope is not None:
            where.append("scope = ?")
            params.append(validate_id(scope, "scope"))
        if key is not None:
            where.append("key = ?")
            params.append(validate_key(key, "key"))
        if component is not None:
            where.append("component = ?")
            params.append(validate_id(component, "component"))
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise ValidationError("limit must be an integer from 1 to 100000", field="limit")
        sql = f"SELECT {CONFLICT_COLS} FROM sync_conflicts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT ?"
        params.append(limit)
        with self.reading() as conn:
            return [self.sync_conflict_row(r) for r in conn.execute(sql, params).fetchall()]
