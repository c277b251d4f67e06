"""Sessions on every backend: CRUD, keyset pagination, filters, versions, audit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from statekeep import (
    InvalidTransitionError,
    NotFoundError,
    Session,
    SessionStatus,
    Store,
    ValidationError,
    VersionConflictError,
)
from statekeep.errors import DuplicateError

ALL_SESSION_STATUSES = list(SessionStatus)
LEGAL_SESSION_MOVES = {
    ("active", "paused"), ("active", "completed"), ("active", "failed"),
    ("paused", "active"), ("paused", "completed"), ("paused", "failed"),
    ("failed", "active"),
}


def test_create_and_get(store: Store) -> None:
    s = store.create_session("alice", metadata={"goal": "ship", "n": [1, 2]},
                             context_snapshot={"files": ["a.py"]})
    assert s.id.startswith("ses_")
    assert s.user_id == "alice"
    assert s.status is SessionStatus.ACTIVE
    assert s.version == 1
    assert s.end_time is None
    assert s.metadata == {"goal": "ship", "n": [1, 2]}
    assert s.context_snapshot == {"files": ["a.py"]}
    assert s.start_time.tzinfo is not None
    assert s.created_at == s.updated_at
    assert store.get_session(s.id) == s


def test_create_with_chosen_id_start_time_and_final_status(make_store, clock) -> None:
    store = make_store(clock=clock)
    start = clock.now - timedelta(days=3)
    s = store.create_session("bob", session_id="my-session.1", start_time=start,
                             status="completed")
    assert s.id == "my-session.1"
    assert s.start_time == start
    assert s.status is SessionStatus.COMPLETED
    assert s.end_time == clock.now  # a session created already finished has ended now
    assert s.created_at == clock.now


def test_duplicate_session_id_is_refused(store: Store) -> None:
    store.create_session("alice", session_id="dup")
    before = store.dump()
    with pytest.raises(DuplicateError):
        store.create_session("bob", session_id="dup")
    assert store.dump() == before
    assert store.get_session("dup").user_id == "alice"


def test_get_missing_session(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        store.get_session("nope")
    assert info.value.entity == "session"
    assert info.value.entity_id == "nope"


def test_null_json_fields_round_trip(store: Store) -> None:
    s = store.create_session("alice")
    assert s.metadata is None and s.context_snapshot is None
    assert store.get_session(s.id).metadata is None


# --- versions and updated_at ---------------------------------------------------


def test_every_change_bumps_version_and_updated_at(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    assert s.version == 1
    t1 = clock.advance(seconds=5)
    s2 = store.update_session(s.id, metadata={"step": 1})
    assert (s2.version, s2.updated_at, s2.metadata) == (2, t1, {"step": 1})
    assert s2.created_at == s.created_at
    t2 = clock.advance(seconds=5)
    s3 = store.update_session(s.id, status="paused")
    assert (s3.version, s3.updated_at, s3.status) == (3, t2, SessionStatus.PAUSED)
    assert s3.metadata == {"step": 1}  # untouched fields stay
    t3 = clock.advance(seconds=5)
    s4 = store.update_session(s.id, context_snapshot=[1, 2, 3])
    assert (s4.version, s4.updated_at, s4.context_snapshot) == (4, t3, [1, 2, 3])
    # Clearing a JSON field to None is a change too.
    s5 = store.update_session(s.id, metadata=None)
    assert s5.metadata is None and s5.version == 5
    assert store.get_session(s.id) == s5


def test_expected_version_match_wins(store: Store) -> None:
    s = store.create_session("alice")
    s2 = store.update_session(s.id, metadata={"a": 1}, expected_version=1)
    assert s2.version == 2
    s3 = store.update_session(s.id, metadata={"a": 2}, expected_version=2)
    assert s3.version == 3


def test_expected_version_conflict(store: Store) -> None:
    s = store.create_session("alice")
    store.update_session(s.id, metadata={"writer": "first"})  # someone else wrote: v2
    before = store.dump()
    with pytest.raises(VersionConflictError) as info:
        store.update_session(s.id, metadata={"writer": "second"}, expected_version=1)
    assert info.value.expected == 1
    assert info.value.actual == 2
    assert store.dump() == before
    assert store.get_session(s.id).metadata == {"writer": "first"}


def test_two_stores_race_with_expected_version(make_store) -> None:
    a = make_store()
    b = make_store()
    s = a.create_session("alice")
    seen_a = a.get_session(s.id)
    seen_b = b.get_session(s.id)
    a.update_session(s.id, metadata="a", expected_version=seen_a.version)
    with pytest.raises(VersionConflictError):
        b.update_session(s.id, metadata="b", expected_version=seen_b.version)
    assert b.get_session(s.id).metadata == "a"


@pytest.mark.parametrize("old", ALL_SESSION_STATUSES)
@pytest.mark.parametrize("new", ALL_SESSION_STATUSES)
def test_session_transitions(make_store, clock, old: SessionStatus, new: SessionStatus) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice", status=old)
    clock.advance(seconds=1)
    if old == new or (old.value, new.value) in LEGAL_SESSION_MOVES:
        out = store.update_session(s.id, status=new)
        assert out.status is new
        if old != new:
            ending = new in (SessionStatus.COMPLETED, SessionStatus.FAILED)
            assert out.end_time == (clock.now if ending else None)
    else:
        before = store.dump()
        with pytest.raises(InvalidTransitionError):
            store.update_session(s.id, status=new)
        assert store.dump() == before


def test_resume_failed_session_clears_end_time(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    failed = store.update_session(s.id, status="failed")
    assert failed.end_time == clock.now
    clock.advance(minutes=1)
    resumed = store.update_session(s.id, status="active")
    assert resumed.end_time is None


def test_update_missing_session(store: Store) -> None:
    before = store.dump()
    with pytest.raises(NotFoundError):
        store.update_session("ghost", metadata={})
    assert store.dump() == before


# --- listing -----------------------------------------------------------------


def _collect(store: Store, limit: int, **filters) -> list[Session]:
    seen: list[Session] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_sessions(limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        seen.extend(page.items)
        pages += 1
        assert pages < 1000
        if page.next_cursor is None:
            return seen
        assert len(page.items) == limit
        cursor = page.next_cursor


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_keyset_pagination_no_duplicates_no_gaps(make_store, clock, limit: int) -> None:
    store = make_store(clock=clock)
    created: list[Session] = []
    for i in range(23):
        # Groups of equal start_time force the id tie-breaker to do its job.
        created.append(store.create_session(f"u{i % 3}", start_time=clock.now))
        if i % 4 == 3:
            clock.advance(seconds=1)
    listed = _collect(store, limit)
    ids = [s.id for s in listed]
    assert len(ids) == len(set(ids)), "a session appeared on two pages"
    assert set(ids) == {s.id for s in created}, "a session fell between pages"
    keys = [(s.start_time, s.id) for s in listed]
    assert keys == sorted(keys, reverse=True)  # newest first, then id descending


def test_pagination_is_stable_while_new_sessions_arrive(make_store, clock) -> None:
    store = make_store(clock=clock)
    old = []
    for _ in range(10):
        old.append(store.create_session("alice"))
        clock.advance(seconds=1)
    first = store.list_sessions(limit=4)
    # Newer sessions arriving between pages must not shift the remaining pages.
    for _ in range(5):
        store.create_session("alice")
        clock.advance(seconds=1)
    rest = _collect_from(store, first.next_cursor, 4)
    ids = [s.id for s in first.items + rest]
    assert ids == [s.id for s in reversed(old)]


def _collect_from(store: Store, cursor: str | None, limit: int) -> list[Session]:
    out: list[Session] = []
    while cursor is not None:
        page = store.list_sessions(limit=limit, cursor=cursor)
        out.extend(page.items)
        cursor = page.next_cursor
    return out


def test_exact_multiple_of_limit_ends_without_empty_page(store: Store) -> None:
    for _ in range(6):
        store.create_session("alice")
    p1 = store.list_sessions(limit=3)
    assert len(p1.items) == 3 and p1.next_cursor is not None
    p2 = store.list_sessions(limit=3, cursor=p1.next_cursor)
    assert len(p2.items) == 3
    assert p2.next_cursor is None


def test_empty_listing(store: Store) -> None:
    page = store.list_sessions()
    assert page.items == [] and page.next_cursor is None


def test_filters(make_store, clock) -> None:
    store = make_store(clock=clock)
    t0 = clock.now
    a1 = store.create_session("alice")
    clock.advance(hours=1)
    b1 = store.create_session("bob", status="paused")
    clock.advance(hours=1)
    a2 = store.create_session("alice", status="completed")
    clock.advance(hours=1)
    a3 = store.create_session("alice", status="paused")

    def ids(**kw) -> list[str]:
        return [s.id for s in _collect(store, 2, **kw)]

    assert ids(user_id="alice") == [a3.id, a2.id, a1.id]
    assert ids(user_id="bob") == [b1.id]
    assert ids(user_id="carol") == []
    assert ids(status="paused") == [a3.id, b1.id]
    assert ids(status=SessionStatus.COMPLETED) == [a2.id]
    assert ids(user_id="alice", status="paused") == [a3.id]
    assert ids(since=t0 + timedelta(hours=1)) == [a3.id, a2.id, b1.id]
    assert ids(until=t0 + timedelta(hours=2)) == [b1.id, a1.id]  # until is exclusive
    assert ids(since=t0 + timedelta(minutes=30), until=t0 + timedelta(hours=2, minutes=30)) \
        == [a2.id, b1.id]


def test_filter_since_in_other_timezone(make_store, clock) -> None:
    from datetime import timezone

    store = make_store(clock=clock)
    s = store.create_session("alice")
    plus2 = timezone(timedelta(hours=2))
    # The same instant expressed in UTC+2 must select the session, one second later not.
    assert [x.id for x in store.list_sessions(since=clock.now.astimezone(plus2)).items] == [s.id]
    later = (clock.now + timedelta(seconds=1)).astimezone(plus2)
    assert store.list_sessions(since=later).items == []


def test_malformed_cursor(store: Store) -> None:
    store.create_session("alice")
    for bad in ["garbage", "", "W10", "WyJ4IiwgIj8iXQ"]:
        with pytest.raises(ValidationError):
            store.list_sessions(cursor=bad)


# --- delete ------------------------------------------------------------------


def test_delete_cascades_but_keeps_decisions(store: Store) -> None:
    s = store.create_session("alice")
    other = store.create_session("bob")
    parent = store.create_task(s.id, "build")
    child = store.create_task(s.id, "compile", parent_task_id=parent.id)
    store.set_context(s.id, "file", "a.py", {"x": 1})
    d = store.record_decision("tool_choice", "use ruff", session_id=s.id, task_id=child.id,
                              context={"q": 1})
    keep_task = store.create_task(other.id, "other")
    keep_ctx = store.set_context(other.id, "file", "b.py", 2)

    store.delete_session(s.id)

    with pytest.raises(NotFoundError):
        store.get_session(s.id)
    for t in (parent, child):
        with pytest.raises(NotFoundError):
            store.get_task(t.id)
    assert store.list_tasks(s.id) == []
    assert store.list_context(s.id) == []
    kept = store.get_decision(d.id)
    assert kept.session_id is None and kept.task_id is None
    assert kept.decision_made == "use ruff"
    # Other sessions are untouched.
    assert store.get_task(keep_task.id) == keep_task
    assert store.get_context_by_id(keep_ctx.id) == keep_ctx
    assert store.integrity_problems() == []

    events = store.audit(entity_type="session", entity_id=s.id)
    assert [e.event_type for e in events] == ["create", "delete"]
    assert events[-1].new_value is None
    assert events[-1].old_value["id"] == s.id
    assert events[-1].change_metadata == {"tasks": 2, "context": 1, "decisions": 1}


def test_delete_missing_session(store: Store) -> None:
    before = store.dump()
    with pytest.raises(NotFoundError):
        store.delete_session("ghost")
    assert store.dump() == before


def test_reads_do_not_write(store: Store) -> None:
    s = store.create_session("alice")
    before = store.dump()
    store.get_session(s.id)
    store.list_sessions(user_id="alice")
    store.list_sessions(status="active", limit=1)
    assert store.dump() == before


def test_sessions_visible_to_a_second_store(make_store: Callable[..., Store]) -> None:
    a = make_store()
    s = a.create_session("alice", metadata={"k": "v"})
    b = make_store()
    assert b.get_session(s.id) == s
