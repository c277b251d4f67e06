"""The bad-input battery, on every backend.

Every rejected call must raise the specific :class:`StatekeepError` subclass
*and* leave the store exactly as it was: each attempt is bracketed by two
``store.dump()`` calls that must be equal. Free-text keys are the exception
that proves the rule: quotes and SQL fragments in them are data, stored and
returned verbatim.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekeep import (
    ContextInput,
    DuplicateError,
    InvalidIdError,
    InvalidStatusError,
    InvalidTransitionError,
    NotFoundError,
    NotJSONError,
    StatekeepError,
    Store,
    TaskCycleError,
    TaskStatus,
    ValidationError,
    ValueTooLargeError,
)

SEED_TABLES = {"sessions", "tasks", "context", "state_snapshots", "decisions",
               "user_preferences", "audit_log", "recovery_points"}

HYPOTHESIS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclasses.dataclass
class World:
    """A small populated store and handles to what is in it."""

    store: Store
    s: str  # alice's session
    s2: str  # a second session
    t: str  # pending task of s
    t_child: str  # pending subtask of t
    t_running: str
    t_done: str
    t2: str  # task of s2
    dec: str


def build_world(store: Store) -> World:
    s = store.create_session("alice", metadata={"m": 1})
    s2 = store.create_session("bob")
    t = store.create_task(s.id, "root")
    child = store.create_task(s.id, "child", parent_task_id=t.id)
    running = store.start_task(store.create_task(s.id, "run").id)
    done = store.start_task(store.create_task(s.id, "done").id)
    store.complete_task(done.id, {"ok": True})
    t2 = store.create_task(s2.id, "other")
    store.set_context(s.id, "file", "a.py", {"lines": 3})
    dec = store.record_decision("plan", "go", session_id=s.id, task_id=t.id)
    store.set_preference("alice", "style", "indent", 4)
    return World(store, s.id, s2.id, t.id, child.id, running.id, done.id, t2.id, dec.id)


@pytest.fixture
def world(make_store) -> World:
    return build_world(make_store(access_flush_interval=0))


def assert_rejected(w: World, call: Callable[[], Any], expected: type[StatekeepError],
                    field: str | None = None, label: str = "") -> StatekeepError:
    """``call`` raises exactly ``expected`` and the store is unchanged."""
    before = w.store.dump()
    with pytest.raises(StatekeepError) as info:
        call()
    err = info.value
    assert type(err) is expected, f"{label}: {type(err).__name__}: {err}"
    if field is not None:
        assert isinstance(err, ValidationError)
        assert err.field == field, f"{label}: field {err.field!r} != {field!r}"
    assert w.store.dump() == before, f"{label}: the store changed"
    return err


# --- ids -----------------------------------------------------------------------

HOSTILE_IDS: list[Any] = [
    "", "a'b", 'a"b', "a\x00b", "\x00", "a" * 129, "x'; DROP TABLE sessions;--",
    "1 OR 1=1", "../../etc/passwd", "..", "/abs", "a\\b",
    "\uff41\uff44\uff4d\uff49\uff4e", "\u0430dmin",  # fullwidth and Cyrillic look-alikes
    "\u202eabc", "ab\u200bc", "e\u0301", " a", "a ", "a\n", "a\tb", "-rf", ".hidden",
    "_x", "a/b", "a;b", "a%b", "a*b", "\ud800", "🤖", 5, 5.0, True, b"abc", ["a"], {"a": 1},
]

# name -> (call taking the world and the bad id, field, whether None is a valid value)
ID_POSITIONS: dict[str, tuple[Callable[[World, Any], Any], str, bool]] = {
    "create_session.user_id": (lambda w, x: w.store.create_session(x), "user_id", False),
    "create_session.session_id": (
        lambda w, x: w.store.create_session("alice", session_id=x), "session_id", True),
    "get_session": (lambda w, x: w.store.get_session(x), "session_id", False),
    "update_session": (lambda w, x: w.store.update_session(x, metadata=1), "session_id", False),
    "delete_session": (lambda w, x: w.store.delete_session(x), "session_id", False),
    "list_sessions.user_id": (lambda w, x: w.store.list_sessions(user_id=x), "user_id", True),
    "create_task.session_id": (lambda w, x: w.store.create_task(x, "t"), "session_id", False),
    "create_task.task_id": (
        lambda w, x: w.store.create_task(w.s, "t", task_id=x), "task_id", True),
    "create_task.parent_task_id": (
        lambda w, x: w.store.create_task(w.s, "t", parent_task_id=x), "parent_task_id", True),
    "get_task": (lambda w, x: w.store.get_task(x), "task_id", False),
    "update_task": (lambda w, x: w.store.update_task(x, priority=1), "task_id", False),
    "update_task.parent_task_id": (
        lambda w, x: w.store.update_task(w.t2, parent_task_id=x), "parent_task_id", True),
    "transition_task": (
        lambda w, x: w.store.transition_task(x, "in_progress"), "task_id", False),
    "start_task": (lambda w, x: w.store.start_task(x), "task_id", False),
    "cancel_task": (lambda w, x: w.store.cancel_task(x), "task_id", False),
    "delete_task": (lambda w, x: w.store.delete_task(x), "task_id", False),
    "list_tasks": (lambda w, x: w.store.list_tasks(x), "session_id", False),
    "task_tree": (lambda w, x: w.store.task_tree(x), "session_id", False),
    "task_tree.root_task_id": (
        lambda w, x: w.store.task_tree(w.s, root_task_id=x), "root_task_id", True),
    "set_context": (lambda w, x: w.store.set_context(x, "f", "k", 1), "session_id", False),
    "set_context_many": (
        lambda w, x: w.store.set_context_many(x, [ContextInput("f", "k", 1)]),
        "session_id", False),
    "get_context": (lambda w, x: w.store.get_context(x, "f", "k"), "session_id", False),
    "get_context_by_id": (lambda w, x: w.store.get_context_by_id(x), "item_id", False),
    "list_context": (lambda w, x: w.store.list_context(x), "session_id", False),
    "delete_context": (lambda w, x: w.store.delete_context(x, "f", "k"), "session_id", False),
    "record_decision.session_id": (
        lambda w, x: w.store.record_decision("t", "d", session_id=x), "session_id", True),
    "record_decision.task_id": (
        lambda w, x: w.store.record_decision("t", "d", task_id=x), "task_id", True),
    "update_decision": (
        lambda w, x: w.store.update_decision(x, outcome="o"), "decision_id", False),
    "get_decision": (lambda w, x: w.store.get_decision(x), "decision_id", False),
    "list_decisions.session_id": (
        lambda w, x: w.store.list_decisions(session_id=x), "session_id", True),
    "set_preference": (
        lambda w, x: w.store.set_preference(x, "style", "k", 1), "user_id", False),
    "get_preference": (
        lambda w, x: w.store.get_preference(x, "style", "k"), "user_id", False),
    "list_preferences": (lambda w, x: w.store.list_preferences(x), "user_id", False),
    "delete_preference": (
        lambda w, x: w.store.delete_preference(x, "style", "indent"), "user_id", False),
    "audit.entity_id": (lambda w, x: w.store.audit(entity_id=x), "entity_id", True),
    "audit.session_id": (lambda w, x: w.store.audit(session_id=x), "session_id", True),
    "audit.user_id": (lambda w, x: w.store.audit(user_id=x), "user_id", True),
}


@pytest.mark.parametrize("position", sorted(ID_POSITIONS))
def test_hostile_ids_are_refused(world: World, position: str) -> None:
    call, field, none_ok = ID_POSITIONS[position]
    values = HOSTILE_IDS if none_ok else [*HOSTILE_IDS, None]
    for value in values:
        assert_rejected(world, lambda v=value: call(world, v), InvalidIdError, field,
                        f"{position}={value!r}")


# --- type names ----------------------------------------------------------------

HOSTILE_NAMES: list[Any] = [
    "", "1abc", "_x", "-x", "a b", "a'b", 'a"b', "x'; DROP TABLE sessions;--", "../etc",
    "a/b", "a" * 65, "fïle", "ﬁle", "a\x00", "\u202efile", "file\n", "\ud800", 3, b"file",
]

NAME_POSITIONS: dict[str, tuple[Callable[[World, Any], Any], str, bool]] = {
    "create_task.type": (lambda w, x: w.store.create_task(w.s, x), "type", False),
    "list_tasks.type": (lambda w, x: w.store.list_tasks(w.s, type=x), "type", True),
    "set_context.context_type": (
        lambda w, x: w.store.set_context(w.s, x, "k", 1), "context_type", False),
    "get_context.context_type": (
        lambda w, x: w.store.get_context(w.s, x, "k"), "context_type", False),
    "delete_context.context_type": (
        lambda w, x: w.store.delete_context(w.s, x, "a.py"), "context_type", False),
    "list_context.context_type": (
        lambda w, x: w.store.list_context(w.s, context_type=x), "context_type", True),
    "set_context_many.context_type": (
        lambda w, x: w.store.set_context_many(w.s, [ContextInput("f", "ok", 1),
                                                    ContextInput(x, "k", 1)]),
        "items[1].context_type", False),
    "record_decision.decision_type": (
        lambda w, x: w.store.record_decision(x, "d"), "decision_type", False),
    "list_decisions.decision_type": (
        lambda w, x: w.store.list_decisions(decision_type=x), "decision_type", True),
    "set_preference.preference_type": (
        lambda w, x: w.store.set_preference("alice", x, "k", 1), "preference_type", False),
    "get_preference.preference_type": (
        lambda w, x: w.store.get_preference("alice", x, "k"), "preference_type", False),
    "delete_preference.preference_type": (
        lambda w, x: w.store.delete_preference("alice", x, "indent"), "preference_type",
        False),
    "list_preferences.preference_type": (
        lambda w, x: w.store.list_preferences("alice", preference_type=x), "preference_type",
        True),
    "audit.entity_type": (lambda w, x: w.store.audit(entity_type=x), "entity_type", True),
}


@pytest.mark.parametrize("position", sorted(NAME_POSITIONS))
def test_hostile_type_names_are_refused(world: World, position: str) -> None:
    call, field, none_ok = NAME_POSITIONS[position]
    values = HOSTILE_NAMES if none_ok else [*HOSTILE_NAMES, None]
    for value in values:
        assert_rejected(world, lambda v=value: call(world, v), InvalidIdError, field,
                        f"{position}={value!r}")


# --- free-text keys ------------------------------------------------------------

BAD_KEYS: list[Any] = ["", "a\x00b", "\x00", "\x1b[31mred", "a\rb", "\x7f", "\x08", "k" * 513,
                       "tab\there", "line\nbreak", "a\u0085b", "\x80\x9f",
                       "\ud800", "a\udfffb", 3, b"key", ["k"]]

KEY_POSITIONS: dict[str, tuple[Callable[[World, Any], Any], str, bool]] = {
    "set_context": (lambda w, x: w.store.set_context(w.s, "f", x, 1), "context_key", False),
    "get_context": (lambda w, x: w.store.get_context(w.s, "f", x), "context_key", False),
    "delete_context": (
        lambda w, x: w.store.delete_context(w.s, "f", x), "context_key", False),
    "set_context_many": (
        lambda w, x: w.store.set_context_many(w.s, [ContextInput("f", x, 1)]),
        "items[0].context_key", False),
    "set_preference": (
        lambda w, x: w.store.set_preference("alice", "style", x, 1), "preference_key", False),
    "get_preference": (
        lambda w, x: w.store.get_preference("alice", "style", x), "preference_key", False),
    "delete_preference": (
        lambda w, x: w.store.delete_preference("alice", "style", x), "preference_key", False),
    "list_decisions.context_hash": (
        lambda w, x: w.store.list_decisions(context_hash=x), "context_hash", True),
}


@pytest.mark.parametrize("position", sorted(KEY_POSITIONS))
def test_bad_keys_are_refused(world: World, position: str) -> None:
    call, field, none_ok = KEY_POSITIONS[position]
    values = BAD_KEYS if none_ok else [*BAD_KEYS, None]
    for value in values:
        assert_rejected(world, lambda v=value: call(world, v), InvalidIdError, field,
                        f"{position}={value!r}")


HOSTILE_BUT_VALID_KEYS = [
    "x'; DROP TABLE sessions;--", "'; DELETE FROM context WHERE '1'='1", '"quoted"',
    "Robert'); DROP TABLE tasks;--", "../../etc/passwd", "..\\..\\windows\\system32",
    "%", "_", "%_%", "*", "?", "$1", ":name", "@var", "\\", "\\x00", "\\u0000", "ключ", "键",
    "🔑", "\u202eevil", "zero\u200bwidth", "e\u0301", "\u00e9",
    "k" * 512, " leading", "trailing ", "NULL", "null", "None", "{}", "[]",
]


def test_hostile_keys_round_trip_verbatim(world: World, schema_objects) -> None:
    store = world.store
    items = {k: store.set_context(world.s, "note", k, {"key": k}) for k in HOSTILE_BUT_VALID_KEYS}
    assert len({i.id for i in items.values()}) == len(HOSTILE_BUT_VALID_KEYS)
    for k, item in items.items():
        assert item.context_key == k
        got = store.get_context(world.s, "note", k)
        assert got is not None and got.id == item.id, repr(k)
        assert got.context_key == k and got.context_value == {"key": k}
        pref = store.set_preference("alice", "keys", k, k)
        assert store.get_preference("alice", "keys", k) == pref
        assert pref.preference_key == k
    listed = store.list_context(world.s, context_type="note")
    assert sorted(i.context_key for i in listed) == sorted(HOSTILE_BUT_VALID_KEYS)
    assert sorted(p.preference_key for p in store.list_preferences(
        "alice", preference_type="keys")) == sorted(HOSTILE_BUT_VALID_KEYS)
    # Wildcards are literal: deleting "%" removes that item only.
    assert store.delete_context(world.s, "note", "%") is True
    assert len(store.list_context(world.s, context_type="note")) == \
        len(HOSTILE_BUT_VALID_KEYS) - 1
    tables = {name for kind, name in schema_objects(store) if kind == "table"}
    assert tables >= SEED_TABLES
    assert store.get_session(world.s).user_id == "alice"
    assert store.integrity_problems() == []


# --- statuses and transitions --------------------------------------------------

BAD_STATUSES: list[Any] = ["done", "ACTIVE", "Active", "", " active", "active\x00", "pending ",
                           "running", 1, 0, b"active", ["active"], object()]


@pytest.mark.parametrize("position", [
    "create_session", "update_session", "list_sessions", "transition_task", "list_tasks",
])
def test_unknown_statuses(world: World, position: str) -> None:
    calls: dict[str, Callable[[Any], Any]] = {
        "create_session": lambda x: world.store.create_session("alice", status=x),
        "update_session": lambda x: world.store.update_session(world.s, status=x),
        "list_sessions": lambda x: world.store.list_sessions(status=x),
        "transition_task": lambda x: world.store.transition_task(world.t, x),
        "list_tasks": lambda x: world.store.list_tasks(world.s, status=x),
    }
    values = list(BAD_STATUSES)
    if position in ("create_session", "transition_task"):
        values.append(None)
    if position.endswith("session") or position == "list_sessions":
        values += ["pending", "in_progress", "cancelled", TaskStatus.PENDING]
    else:
        values += ["active", "paused"]
    for value in values:
        assert_rejected(world, lambda v=value: calls[position](v), InvalidStatusError,
                        "status", f"{position}={value!r}")


def test_invalid_transitions(world: World) -> None:
    st = world.store
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("complete pending", lambda: st.complete_task(world.t)),
        ("retry pending", lambda: st.retry_task(world.t)),
        ("start running", lambda: st.start_task(world.t_running)),
        ("retry running", lambda: st.retry_task(world.t_running)),
        ("start completed", lambda: st.start_task(world.t_done)),
        ("fail completed", lambda: st.fail_task(world.t_done, "late")),
        ("cancel completed", lambda: st.cancel_task(world.t_done)),
        ("complete completed", lambda: st.complete_task(world.t_done, "again")),
        ("retry completed", lambda: st.retry_task(world.t_done)),
    ]
    for label, call in cases:
        assert_rejected(world, call, InvalidTransitionError, label=label)
    st.cancel_task(world.t)  # cascades to t_child
    for label, call in [
        ("start cancelled", lambda: st.start_task(world.t)),
        ("cancel cancelled", lambda: st.cancel_task(world.t)),
        ("retry cancelled", lambda: st.retry_task(world.t)),
        ("start cascaded", lambda: st.start_task(world.t_child)),
    ]:
        assert_rejected(world, call, InvalidTransitionError, label=label)
    st.update_session(world.s, status="completed")
    for status in ("active", "paused", "failed"):
        assert_rejected(world, lambda s=status: st.update_session(world.s, status=s),
                        InvalidTransitionError, label=f"completed session -> {status}")


# --- JSON values ---------------------------------------------------------------


@dataclasses.dataclass
class _Point:
    x: int


def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


def _circular() -> Any:
    a: list[Any] = []
    a.append(a)
    return a


NOT_JSON: list[Any] = [
    {1, 2}, frozenset(), b"bytes", bytearray(b"x"), memoryview(b"x"), object(),
    float("nan"), float("inf"), float("-inf"), {"a": [1, {"b": float("nan")}]},
    [float("-inf")], datetime.now(UTC), datetime(2024, 1, 1), date(2024, 1, 1),
    timedelta(seconds=1), Decimal("1.5"), complex(1, 2), {1: "a"}, {(1, 2): "a"},
    {None: 1}, {"ok": {2: "nested int key"}}, 2**64, -(2**63) - 1, {"big": [2**70]},
    _Point(1), _deep(300), _circular(), print, type, range(3),
    "\ud800", {"k": "a\udfffb"}, {"\ud800": 1},
]

WITH_NUL: list[Any] = ["a\x00b", {"k\x00": 1}, {"a": ["\x00"]}, [[{"b": "x\x00"}]]]

# name -> (call with the bad value, expected field or None when not named)
JSON_POSITIONS: dict[str, tuple[Callable[[World, Any], Any], str | None]] = {
    "create_session.metadata": (
        lambda w, x: w.store.create_session("alice", metadata=x), "metadata"),
    "create_session.context_snapshot": (
        lambda w, x: w.store.create_session("alice", context_snapshot=x), "context_snapshot"),
    "update_session.metadata": (
        lambda w, x: w.store.update_session(w.s, metadata=x), "metadata"),
    "update_session.context_snapshot": (
        lambda w, x: w.store.update_session(w.s, context_snapshot=x), "context_snapshot"),
    "create_task.parameters": (
        lambda w, x: w.store.create_task(w.s, "t", parameters=x), "parameters"),
    "update_task.parameters": (
        lambda w, x: w.store.update_task(w.t, parameters=x), "parameters"),
    "complete_task.result": (lambda w, x: w.store.complete_task(w.t_running, x), "result"),
    "fail_task.error_details": (
        lambda w, x: w.store.fail_task(w.t_running, x), "error_details"),
    "transition_task.result": (
        lambda w, x: w.store.transition_task(w.t_running, "completed", result=x), "result"),
    "set_context.value": (lambda w, x: w.store.set_context(w.s, "f", "k", x), "value"),
    "set_context.upsert": (lambda w, x: w.store.set_context(w.s, "file", "a.py", x), "value"),
    "set_context_many.value": (
        lambda w, x: w.store.set_context_many(w.s, [ContextInput("f", "k", 1),
                                                    ContextInput("f", "j", x)]),
        "items[1].context_value"),
    "record_decision.reasoning": (
        lambda w, x: w.store.record_decision("t", "d", reasoning=x), "reasoning"),
    "record_decision.context": (
        lambda w, x: w.store.record_decision("t", "d", context=x), "context"),
    "set_preference.value": (
        lambda w, x: w.store.set_preference("alice", "style", "indent", x), "value"),
}


@pytest.mark.parametrize("position", sorted(JSON_POSITIONS))
def test_non_json_values_are_refused(world: World, position: str) -> None:
    call, field = JSON_POSITIONS[position]
    # NUL cannot be stored on every backend (PostgreSQL's jsonb refuses it), so no
    # backend stores it; a decision's context is only hashed, never stored.
    stored = position != "record_decision.context"
    for value in NOT_JSON + (WITH_NUL if stored else []):
        assert_rejected(world, lambda v=value: call(world, v), NotJSONError, field,
                        f"{position}={value!r:.60}")


@pytest.fixture
def small_world(make_store) -> World:
    return build_world(make_store(max_value_bytes=1000, access_flush_interval=0))


@pytest.mark.parametrize("position", sorted(p for p in JSON_POSITIONS
                                            if p != "record_decision.context"))
def test_oversized_values_are_refused(small_world: World, position: str) -> None:
    call, field = JSON_POSITIONS[position]
    for value in ["x" * 999, {"k": ["y" * 100] * 10}, list(range(400)), "é" * 500]:
        assert_rejected(small_world, lambda v=value: call(small_world, v), ValueTooLargeError,
                        field, position)


def test_size_cap_boundary(small_world: World) -> None:
    store = small_world.store
    at_cap = "x" * 998  # '"' + 998 + '"' = exactly 1000 bytes
    assert store.set_context(small_world.s, "f", "edge", at_cap).context_value == at_cap
    assert_rejected(small_world, lambda: store.set_context(small_world.s, "f", "edge",
                                                           at_cap + "x"), ValueTooLargeError)
    # The cap counts encoded bytes, not characters.
    assert_rejected(small_world, lambda: store.set_context(small_world.s, "f", "u", "é" * 500),
                    ValueTooLargeError)


# --- numbers, flags, text, datetimes and the rest ---------------------------------

NAIVE = datetime(2030, 1, 1, 12, 0)

# (label, call, expected error, field)
OTHER_CASES: list[tuple[str, Callable[[World], Any], type[StatekeepError], str | None]] = []


def _case(label: str, expected: type[StatekeepError], field: str | None,
          *calls: Callable[[World], Any]) -> None:
    for i, call in enumerate(calls):
        OTHER_CASES.append((f"{label}#{i}", call, expected, field))


V = ValidationError
_case("priority", V, "priority", *[
    (lambda w, x=x: w.store.create_task(w.s, "t", priority=x))
    for x in ["5", 5.0, True, None, 2**31, -(2**31) - 1, float("nan"), [5]]
], *[(lambda w, x=x: w.store.update_task(w.t, priority=x)) for x in ["1", 2**40, False]])
_case("confidence", V, "confidence", *[
    (lambda w, x=x: w.store.record_decision("t", "d", confidence=x))
    for x in [-0.01, 1.01, 2, -1, 10**400, float("nan"), float("inf"), "0.5", True, [0.5]]
], *[(lambda w, x=x: w.store.set_preference("alice", "style", "indent", 1, confidence=x))
     for x in [-0.5, 1.5, float("nan"), "1", False]])
_case("feedback", V, "feedback_score", *[
    (lambda w, x=x: w.store.record_decision("t", "d", feedback_score=x))
    for x in [-1.01, 1.5, -(10**400), float("nan"), float("-inf"), "0", True]
], *[(lambda w, x=x: w.store.update_decision(w.dec, feedback_score=x))
     for x in [2, -2, float("nan"), "x"]])
_case("relevance", V, "relevance_score", *[
    (lambda w, x=x: w.store.set_context(w.s, "f", "k", 1, relevance_score=x))
    for x in [-0.1, 1.1, 10**400, float("nan"), float("inf"), "0.5", True]
])
_case("relevance_many", V, "relevance_score", *[
    (lambda w, x=x: w.store.set_context_many(w.s, [ContextInput("f", "k", 1, x)]))
    for x in [-0.1, 1.1, float("nan")]
])
_case("flags", V, "autonomous", *[
    (lambda w, x=x: w.store.record_decision("t", "d", autonomous=x))
    for x in [1, 0, "true", None, 1.0]
])
_case("override", V, "user_override",
      lambda w: w.store.record_decision("t", "d", user_override="yes"),
      lambda w: w.store.update_decision(w.dec, user_override=1),
      lambda w: w.store.update_decision(w.dec, user_override=None))
_case("limit", V, "limit", *[
    (lambda w, x=x: w.store.list_sessions(limit=x))
    for x in [0, -1, 10_001, "10", True, 1.5, None]
], *[(lambda w, x=x: w.store.list_context(w.s, limit=x)) for x in [0, -3, "2", True]],
   *[(lambda w, x=x: w.store.list_decisions(limit=x)) for x in [0, "2", None]],
   *[(lambda w, x=x: w.store.audit(limit=x)) for x in [0, 100_001, "5"]])
_case("expected_version", V, "expected_version", *[
    (lambda w, x=x: w.store.update_session(w.s, metadata=2, expected_version=x))
    for x in ["1", 1.0, True, [1]]
])
_case("after_id", V, "after_id", lambda w: w.store.audit(after_id="1"),
      lambda w: w.store.audit(after_id=1.5))
_case("order", V, "order", lambda w: w.store.list_context(w.s, order="random"),
      lambda w: w.store.list_context(w.s, order=None),
      lambda w: w.store.list_context(w.s, order="relevance; DROP TABLE context"))
_case("ttl", V, "ttl_seconds", *[
    (lambda w, x=x: w.store.set_context(w.s, "f", "k", 1, ttl_seconds=x))
    for x in [0, -1, "60", True, float("nan"), float("inf"), 1e300, 10**400]
], lambda w: w.store.set_context(w.s, "f", "k", 1, ttl_seconds=5,
                                 expires_at=datetime(2031, 1, 1, tzinfo=UTC)))
_case("description", V, "description", *[
    (lambda w, x=x: w.store.create_task(w.s, "t", description=x))
    for x in [5, b"text", "x" * 65_537, "a\x00b", "\ud800"]
], lambda w: w.store.update_task(w.t, description=["d"]))
_case("decision_made", V, "decision_made", *[
    (lambda w, x=x: w.store.record_decision("t", x))
    for x in ["", None, 5, "a\x00b", "x" * 65_537, "\udc00"]
])
_case("outcome", V, "outcome", lambda w: w.store.record_decision("t", "d", outcome=5),
      lambda w: w.store.update_decision(w.dec, outcome="a\x00"),
      lambda w: w.store.update_decision(w.dec, outcome="\ud800"))
_case("context_hash", V, "context_hash", *[
    (lambda w, x=x: w.store.record_decision("t", "d", context_hash=x))
    for x in ["abc", "AB" * 32, "g" * 64, "a" * 63, "a" * 65, 5, "'" * 64]
])
_case("context_and_hash", V, "context",
      lambda w: w.store.record_decision("t", "d", context={"a": 1}, context_hash="a" * 64))
_case("start_time", V, "start_time", *[
    (lambda w, x=x: w.store.create_session("alice", start_time=x))
    for x in [NAIVE, "2030-01-01T00:00:00Z", 1_700_000_000, date(2030, 1, 1)]
])
_case("since", V, "since", lambda w: w.store.list_sessions(since=NAIVE),
      lambda w: w.store.list_sessions(since="yesterday"),
      lambda w: w.store.audit(since=NAIVE))
_case("until", V, "until", lambda w: w.store.list_sessions(until=NAIVE))
_case("expires_at", V, "expires_at",
      lambda w: w.store.set_context(w.s, "f", "k", 1, expires_at=NAIVE),
      lambda w: w.store.set_context(w.s, "f", "k", 1, expires_at="2031-01-01"))
_case("expires_many", V, "items[0].expires_at",
      lambda w: w.store.set_context_many(w.s, [ContextInput("f", "k", 1, None, NAIVE)]))
_case("cursor", V, "cursor", *[
    (lambda w, x=x: w.store.list_sessions(cursor=x))
    for x in ["garbage", "", "W10", "eyJ4Ijox", "x'; DROP TABLE sessions;--", 5, b"abc",
              "WyIyMDMwLTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgIicgT1IgMT0xIl0"]
])
_case("items", V, "items",
      lambda w: w.store.set_context_many(w.s, [("f", "k", 1)]),
      lambda w: w.store.set_context_many(w.s, [ContextInput("f", "k", 1), {"k": 1}]),
      lambda w: w.store.set_context_many(w.s, "abc"),
      lambda w: w.store.set_context_many(w.s, 5),
      lambda w: w.store.set_context_many(w.s, None))
_case("parent_other_session", V, "parent_task_id",
      lambda w: w.store.create_task(w.s2, "t", parent_task_id=w.t),
      lambda w: w.store.update_task(w.t2, parent_task_id=w.t))
_case("decision_task_other_session", V, "task_id",
      lambda w: w.store.record_decision("t", "d", session_id=w.s2, task_id=w.t))
_case("cycle", TaskCycleError, None,
      lambda w: w.store.update_task(w.t, parent_task_id=w.t),
      lambda w: w.store.update_task(w.t, parent_task_id=w.t_child))
_case("missing", NotFoundError, None,
      lambda w: w.store.get_session("ses_missing"),
      lambda w: w.store.update_session("ses_missing", metadata=1),
      lambda w: w.store.create_task("ses_missing", "t"),
      lambda w: w.store.create_task(w.s, "t", parent_task_id="tsk_missing"),
      lambda w: w.store.update_task(w.t, parent_task_id="tsk_missing"),
      lambda w: w.store.start_task("tsk_missing"),
      lambda w: w.store.delete_task("tsk_missing"),
      lambda w: w.store.set_context("ses_missing", "f", "k", 1),
      lambda w: w.store.record_decision("t", "d", task_id="tsk_missing"),
      lambda w: w.store.update_decision("dec_missing", outcome="x"),
      lambda w: w.store.task_tree(w.s, root_task_id=w.t2))
_case("duplicate", DuplicateError, None,
      lambda w: w.store.create_session("alice", session_id=w.s),
      lambda w: w.store.create_task(w.s, "t", task_id=w.t))


@pytest.mark.parametrize(("label", "call", "expected", "field"), OTHER_CASES,
                         ids=[c[0] for c in OTHER_CASES])
def test_other_bad_arguments(world: World, label: str, call: Callable[[World], Any],
                             expected: type[StatekeepError], field: str | None) -> None:
    assert_rejected(world, lambda: call(world), expected, field, label)


# --- property-based ------------------------------------------------------------

_HOSTILE_CHARS = [*"'\";%_*?/\\.:-+@ \t\n\r\x00\x1b\x7f",
                  "\u202e", "\u200b", "\u0301", "é", "\uff41", "\u0430", "🤖", "\ud800",
                  "\udfff"]
_chars = st.one_of(
    st.sampled_from("abcXYZ0129._:@+-"),
    st.sampled_from(_HOSTILE_CHARS),
    st.characters(),
    st.characters(categories=["Cs"]),
)
hostile_text = st.one_of(
    st.text(_chars, max_size=40),
    st.text(st.sampled_from("ab9._-"), min_size=120, max_size=140),
    st.text(_chars, min_size=505, max_size=520),
    st.sampled_from(["x'; DROP TABLE sessions;--", "../../etc/passwd", "", "NULL"]),
)

_SAFE_ID = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@+-")


def _key_ok(k: str) -> bool:
    """The documented key rule: 1-512 characters, no control characters (C0, DEL,
    C1), no lone surrogates (they cannot be encoded)."""
    return 0 < len(k) <= 512 and not any(
        ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in k)


@settings(HYPOTHESIS, max_examples=300)
@given(raw=hostile_text)
def test_property_ids_are_safe_or_refused(world: World, raw: str) -> None:
    store = world.store
    before = store.dump()
    try:
        s = store.create_session("alice", session_id=raw)
    except InvalidIdError:
        assert store.dump() == before
        return
    except DuplicateError:
        assert store.dump() == before
        return
    # Whatever is accepted is plain ASCII that is harmless in paths, URLs and logs.
    assert s.id == raw
    assert set(raw) <= _SAFE_ID and 1 <= len(raw) <= 128
    assert raw[0] not in "._:@+-"  # no ".hidden", "-flag" or "../" look-alikes
    assert store.get_session(raw) == s
    assert store.list_tasks(raw) == []


@settings(HYPOTHESIS, max_examples=300)
@given(key=hostile_text)
def test_property_keys_round_trip_or_are_refused(world: World, key: str) -> None:
    store = world.store
    before = store.dump()
    try:
        item = store.set_context(world.s, "prop", key, {"k": key})
    except InvalidIdError:
        assert not _key_ok(key), repr(key)
        assert store.dump() == before
        return
    assert _key_ok(key), repr(key)
    assert item.context_key == key
    got = store.get_context(world.s, "prop", key)
    assert got is not None and got.context_key == key and got.context_value == {"k": key}
    assert got.id == item.id


# Any JSON text but NUL, which the store refuses on every backend (tested above).
json_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                    max_size=20)
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), json_text,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(json_text, inner, max_size=5)),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    """Equal JSON values of the same JSON types (1 and 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(HYPOTHESIS, max_examples=200)
@given(value=json_values)
def test_property_any_json_value_round_trips(world: World, value: Any) -> None:
    store = world.store
    item = store.set_context(world.s, "json", "v", value)
    assert _same(item.context_value, value)
    got = store.get_context(world.s, "json", "v")
    assert got is not None
    assert _same(got.context_value, value), (got.context_value, value)
    pref = store.set_preference("alice", "json", "v", value)
    assert _same(store.get_preference("alice", "json", "v").preference_value, value)
    assert _same(pref.preference_value, value)


# --- random operation sequences against a model of the task state machine ----------

MOVES = {
    "pending": {"in_progress", "cancelled", "failed"},
    "in_progress": {"completed", "failed", "cancelled"},
    "failed": {"pending"},
    "completed": set(),
    "cancelled": set(),
}
FINISHED = {"completed", "failed", "cancelled"}
OPS = ["create", "start", "complete", "fail", "cancel", "retry", "reparent", "unparent",
       "delete"]
TARGET = {"start": "in_progress", "complete": "completed", "fail": "failed",
          "cancel": "cancelled", "retry": "pending"}


class TaskModel:
    """What the task table of one session should hold."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.parent: dict[str, str | None] = {}
        self.retries: dict[str, int] = {}

    def subtree(self, root: str) -> list[str]:
        out = [root]
        for tid in out:
            out.extend(c for c, p in self.parent.items() if p == tid)
        return out


@settings(HYPOTHESIS, max_examples=100)
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 30), st.integers(0, 30)),
                    min_size=1, max_size=30))
def test_property_task_operations_follow_the_model(world: World,
                                                   ops: list[tuple[str, int, int]]) -> None:
    store = world.store
    sid = store.create_session("model").id
    model = TaskModel()
    order: list[str] = []  # creation order, for picking tasks by index

    def pick(i: int) -> str | None:
        live = [t for t in order if t in model.status]
        return live[i % len(live)] if live else None

    for op, i, j in ops:
        a = pick(i)
        if op == "create" or a is None:
            parent = pick(j) if j % 3 else None
            t = store.create_task(sid, "m", parent_task_id=parent)
            order.append(t.id)
            model.status[t.id], model.parent[t.id], model.retries[t.id] = "pending", parent, 0
        elif op in TARGET:
            new = TARGET[op]
            if new in MOVES[model.status[a]]:
                out = store.transition_task(a, new)
                assert out.status.value == new
                if op == "retry":
                    model.retries[a] += 1
                model.status[a] = new
                if op == "cancel":
                    for sub in model.subtree(a)[1:]:
                        if model.status[sub] not in FINISHED:
                            model.status[sub] = "cancelled"
            else:
                before = store.dump()
                with pytest.raises(InvalidTransitionError):
                    store.transition_task(a, new)
                assert store.dump() == before
        elif op in ("reparent", "unparent"):
            b = None if op == "unparent" else pick(j)
            if b is not None and b in model.subtree(a):
                before = store.dump()
                with pytest.raises(TaskCycleError):
                    store.update_task(a, parent_task_id=b)
                assert store.dump() == before
            else:
                assert store.update_task(a, parent_task_id=b).parent_task_id == b
                model.parent[a] = b
        else:  # delete
            gone = model.subtree(a)
            assert store.delete_task(a) == len(gone)
            for tid in gone:
                del model.status[tid], model.parent[tid], model.retries[tid]

        tasks = {t.id: t for t in store.list_tasks(sid)}
        assert {k: v.status.value for k, v in tasks.items()} == model.status
        assert {k: v.parent_task_id for k, v in tasks.items()} == model.parent
        assert {k: v.retry_count for k, v in tasks.items()} == model.retries
        for t in tasks.values():
            finished = t.status.value in FINISHED
            assert (t.completed_at is not None) == finished
            assert (t.duration_ms is not None) == (finished and t.started_at is not None)
            if t.status.value == "pending":
                assert t.started_at is None
            if t.status.value == "in_progress":
                assert t.started_at is not None
    tree_ids = sorted(t.id for tree in store.task_tree(sid) for t in tree.walk())
    assert tree_ids == sorted(model.status)
