"""models: statuses, the two state machines, records and trees."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
import pytest

from statekeep import (
    InvalidStatusError,
    InvalidTransitionError,
    Page,
    Session,
    SessionStatus,
    Task,
    TaskStatus,
    TaskTree,
)
from statekeep.models import check_session_transition, check_task_transition

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

SESSION_MOVES = {
    ("active", "paused"), ("active", "completed"), ("active", "failed"),
    ("paused", "active"), ("paused", "completed"), ("paused", "failed"),
    ("failed", "active"),
}
TASK_MOVES = {
    ("pending", "in_progress"), ("pending", "cancelled"), ("pending", "failed"),
    ("in_progress", "completed"), ("in_progress", "failed"), ("in_progress", "cancelled"),
    ("failed", "pending"),
}


def test_status_values_are_the_seeds() -> None:
    assert [s.value for s in SessionStatus] == ["active", "paused", "completed", "failed"]
    assert [s.value for s in TaskStatus] == ["pending", "in_progress", "completed", "failed",
                                             "cancelled"]


def test_parse() -> None:
    assert SessionStatus.parse("paused") is SessionStatus.PAUSED
    assert SessionStatus.parse(SessionStatus.ACTIVE) is SessionStatus.ACTIVE
    assert TaskStatus.parse("in_progress") is TaskStatus.IN_PROGRESS
    for bad in ["Paused", "", "done", None, 1, b"active", TaskStatus.PENDING]:
        with pytest.raises(InvalidStatusError) as info:
            SessionStatus.parse(bad, field="new_status")
        assert info.value.field == "new_status"
        assert "active, paused, completed, failed" in str(info.value)


def test_finished() -> None:
    assert {s.value for s in TaskStatus if s.finished} == {"completed", "failed", "cancelled"}


@pytest.mark.parametrize("old", list(SessionStatus))
@pytest.mark.parametrize("new", list(SessionStatus))
def test_session_machine(old: SessionStatus, new: SessionStatus) -> None:
    if old == new or (old.value, new.value) in SESSION_MOVES:
        check_session_transition("s", old, new)
    else:
        with pytest.raises(InvalidTransitionError, match=f"from {old.value} to {new.value}"):
            check_session_transition("s", old, new)


@pytest.mark.parametrize("old", list(TaskStatus))
@pytest.mark.parametrize("new", list(TaskStatus))
def test_task_machine(old: TaskStatus, new: TaskStatus) -> None:
    # Unlike sessions, staying in the same status is not a task transition.
    if (old.value, new.value) in TASK_MOVES:
        check_task_transition("t", old, new)
    else:
        with pytest.raises(InvalidTransitionError) as info:
            check_task_transition("t", old, new)
        assert "allowed:" in str(info.value)


def _session(**changes) -> Session:
    base = Session("ses_1", "alice", NOW, None, SessionStatus.ACTIVE, None, {"k": [1]},
                   NOW, NOW, 1)
    return dataclasses.replace(base, **changes)


def _task(tid: str, parent: str | None = None, priority: int = 5) -> Task:
    return Task(tid, "ses_1", parent, "t", TaskStatus.PENDING, priority, None, None, None,
                None, None, None, None, 0, NOW, NOW)


def test_records_are_frozen_and_json_ready() -> None:
    s = _session()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.status = SessionStatus.PAUSED  # type: ignore[misc]
    d = s.to_dict()
    assert d["status"] == "active" and type(d["status"]) is str
    assert d["start_time"] == "2030-01-01T12:00:00+00:00"
    assert d["end_time"] is None and d["metadata"] == {"k": [1]}
    assert orjson.loads(orjson.dumps(d)) == d
    assert set(d) == {f.name for f in dataclasses.fields(Session)}


def test_records_compare_by_value() -> None:
    assert _session() == _session()
    assert _session() != _session(version=2)
    assert hash(_task("a")) == hash(_task("a"))


def test_task_tree_walk_and_dict() -> None:
    tree = TaskTree(_task("a"), (
        TaskTree(_task("b", "a"), (TaskTree(_task("d", "b"), ()),)),
        TaskTree(_task("c", "a"), ()),
    ))
    assert [t.id for t in tree.walk()] == ["a", "b", "d", "c"]
    d = tree.to_dict()
    assert d["id"] == "a" and d["status"] == "pending"
    assert [c["id"] for c in d["children"]] == ["b", "c"]
    assert d["children"][0]["children"][0]["id"] == "d"
    assert orjson.loads(orjson.dumps(d)) == d


def test_page() -> None:
    page = Page(items=[1, 2], next_cursor=None)
    assert page.items == [1, 2] and page.next_cursor is None
