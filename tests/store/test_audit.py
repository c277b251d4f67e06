"""The audit log on every backend: one exact row per mutation, in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from statekeep import AuditEvent, ContextInput, StatekeepError, Store, ValidationError


def _since(store: Store, mark: int) -> list[AuditEvent]:
    return store.audit(after_id=mark, limit=100_000)


def _mark(store: Store) -> int:
    events = store.audit(limit=100_000)
    return events[-1].id if events else 0


def _one(store: Store, mark: int) -> AuditEvent:
    events = _since(store, mark)
    assert len(events) == 1, [(e.event_type, e.entity_type) for e in events]
    return events[0]


def test_every_mutation_writes_exactly_its_row(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)

    m = _mark(store)
    s = store.create_session("alice", metadata={"m": 1})
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("create", "session", s.id)
    assert (e.old_value, e.new_value) == (None, s.to_dict())
    assert (e.user_id, e.session_id, e.timestamp) == ("alice", s.id, clock.now)

    clock.advance(seconds=1)
    m = _mark(store)
    s2 = store.update_session(s.id, status="paused", expected_version=1)
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("update", "session", s.id)
    assert (e.old_value, e.new_value) == (s.to_dict(), s2.to_dict())
    assert e.change_metadata == {"expected_version": 1}
    assert (e.user_id, e.session_id, e.timestamp) == ("alice", s.id, clock.now)

    m = _mark(store)
    t = store.create_task(s.id, "build", parameters={"p": 1})
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("create", "task", t.id)
    assert (e.old_value, e.new_value) == (None, t.to_dict())
    assert (e.user_id, e.session_id) == ("alice", s.id)

    m = _mark(store)
    t2 = store.update_task(t.id, priority=1)
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("update", "task", t.id)
    assert (e.old_value, e.new_value) == (t.to_dict(), t2.to_dict())

    for op in (store.start_task, store.complete_task):
        clock.advance(seconds=1)
        m = _mark(store)
        before = store.get_task(t.id)
        after = op(t.id)
        e = _one(store, m)
        assert (e.event_type, e.entity_type, e.entity_id) == ("transition", "task", t.id)
        assert (e.old_value, e.new_value) == (before.to_dict(), after.to_dict())
        assert (e.user_id, e.session_id, e.timestamp) == ("alice", s.id, clock.now)

    m = _mark(store)
    c = store.set_context(s.id, "file", "a.py", [1])
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("create", "context", c.id)
    assert (e.old_value, e.new_value) == (None, c.to_dict())
    assert (e.user_id, e.session_id) == ("alice", s.id)

    m = _mark(store)
    c2 = store.set_context(s.id, "file", "a.py", [2])
    e = _one(store, m)
    assert (e.event_type, e.entity_id) == ("update", c.id)
    assert (e.old_value, e.new_value) == (c.to_dict(), c2.to_dict())

    m = _mark(store)
    store.get_context(s.id, "file", "a.py")
    store.access_log.flush()
    assert _since(store, m) == []  # access bookkeeping is not audited

    m = _mark(store)
    assert store.delete_context(s.id, "file", "a.py")
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("delete", "context", c.id)
    assert e.new_value is None and e.old_value["context_value"] == [2]

    m = _mark(store)
    d = store.record_decision("plan", "go", session_id=s.id, task_id=t.id)
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("create", "decision", d.id)
    assert (e.old_value, e.new_value) == (None, d.to_dict())
    assert (e.user_id, e.session_id) == ("alice", s.id)

    m = _mark(store)
    d2 = store.update_decision(d.id, outcome="ok")
    e = _one(store, m)
    assert (e.event_type, e.entity_id) == ("update", d.id)
    assert (e.old_value, e.new_value) == (d.to_dict(), d2.to_dict())

    m = _mark(store)
    p = store.set_preference("alice", "style", "indent", 4)
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("create", "preference", p.id)
    assert (e.old_value, e.new_value) == (None, p.to_dict())
    assert (e.user_id, e.session_id) == ("alice", None)

    m = _mark(store)
    assert store.delete_preference("alice", "style", "indent")
    e = _one(store, m)
    assert (e.event_type, e.entity_id, e.new_value) == ("delete", p.id, None)
    assert e.old_value == p.to_dict()

    m = _mark(store)
    assert store.delete_task(t.id) == 1
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("delete", "task", t.id)

    m = _mark(store)
    store.delete_session(s.id)
    e = _one(store, m)
    assert (e.event_type, e.entity_type, e.entity_id) == ("delete", "session", s.id)
    assert e.old_value == _full_session_row(e)


def _full_session_row(e: AuditEvent) -> dict[str, Any]:
    # The old value of a session delete is the full row as it was.
    assert e.old_value is not None
    assert set(e.old_value) == {"id", "user_id", "start_time", "end_time", "status",
                                "context_snapshot", "metadata", "created_at", "updated_at",
                                "version"}
    return e.old_value


def test_failed_writes_leave_no_audit_row(store: Store) -> None:
    s = store.create_session("alice")
    t = store.create_task(s.id, "x")
    m = _mark(store)
    attempts: list[Callable[[], Any]] = [
        lambda: store.create_session("bob", session_id=s.id),  # duplicate id
        lambda: store.complete_task(t.id),  # pending -> completed is illegal
        lambda: store.update_session(s.id, metadata=1, expected_version=7),
        lambda: store.set_context(s.id, "f", "k", {1, 2}),
        lambda: store.create_task("ghost", "x"),
        lambda: store.record_decision("t", "x", confidence=2),
    ]
    for attempt in attempts:
        with pytest.raises(StatekeepError):
            attempt()
    assert _since(store, m) == []


class _Abort(StatekeepError):
    pass


def test_outer_rollback_takes_the_audit_rows_with_it(store: Store) -> None:
    s = store.create_session("alice")
    before = store.dump()
    with pytest.raises(_Abort), store.atomic():
        store.update_session(s.id, metadata={"lost": True})
        store.create_task(s.id, "lost")
        store.set_context(s.id, "f", "lost", 1)
        # Inside the transaction the rows and their audit rows are visible...
        assert len(store.audit(session_id=s.id)) == 4
        raise _Abort("caller changed its mind")
    # ...and after the rollback neither is.
    assert store.dump() == before


def _install_failing_audit_trigger(store: Store, *, once_rows: int = 0) -> None:
    """Make every audit insert fail once the audit log holds ``once_rows`` rows."""
    with store.atomic() as conn:
        if store.dialect == "sqlite":
            conn.execute("CREATE TRIGGER sk_fail_audit BEFORE INSERT ON audit_log"
                         f" WHEN (SELECT COUNT(*) FROM audit_log) >= {once_rows}"
                         " BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END")
        else:
            conn.execute("CREATE FUNCTION sk_fail_audit() RETURNS trigger AS $$ BEGIN"
                         f" IF (SELECT count(*) FROM audit_log) >= {once_rows} THEN"
                         " RAISE EXCEPTION 'audit log unavailable'; END IF; RETURN NEW;"
                         " END $$ LANGUAGE plpgsql")
            conn.execute("CREATE TRIGGER sk_fail_audit BEFORE INSERT ON audit_log"
                         " FOR EACH ROW EXECUTE FUNCTION sk_fail_audit()")


def test_a_failing_audit_write_undoes_the_mutation(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)
    s = store.create_session("alice")
    root = store.create_task(s.id, "root")
    child = store.create_task(s.id, "child", parent_task_id=root.id)
    running = store.start_task(store.create_task(s.id, "run").id)
    store.set_context(s.id, "f", "k", 1)
    d = store.record_decision("t", "x", session_id=s.id)
    store.set_preference("alice", "style", "indent", 4)
    _install_failing_audit_trigger(store)
    before = store.dump()
    clock.advance(seconds=1)
    attempts: dict[str, Callable[[], Any]] = {
        "create_session": lambda: store.create_session("bob"),
        "update_session": lambda: store.update_session(s.id, metadata={"x": 1}),
        "delete_session": lambda: store.delete_session(s.id),
        "create_task": lambda: store.create_task(s.id, "new"),
        "update_task": lambda: store.update_task(child.id, parent_task_id=None),
        "start_task": lambda: store.start_task(root.id),
        "complete_task": lambda: store.complete_task(running.id, 1),
        "cancel_cascade": lambda: store.cancel_task(root.id),
        "delete_task": lambda: store.delete_task(root.id),
        "set_context_new": lambda: store.set_context(s.id, "f", "new", 1),
        "set_context_upd": lambda: store.set_context(s.id, "f", "k", 2),
        "set_context_many": lambda: store.set_context_many(
            s.id, [ContextInput("f", f"m{i}", i) for i in range(50)]),
        "delete_context": lambda: store.delete_context(s.id, "f", "k"),
        "record_decision": lambda: store.record_decision("t", "y", session_id=s.id),
        "update_decision": lambda: store.update_decision(d.id, outcome="done"),
        "set_preference": lambda: store.set_preference("alice", "style", "indent", 2),
        "new_preference": lambda: store.set_preference("alice", "style", "tabs", 2),
        "delete_preference": lambda: store.delete_preference("alice", "style", "indent"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(StatekeepError):
            attempt()
        assert store.dump() == before, name


def test_a_bulk_write_failing_half_way_leaves_nothing(store: Store) -> None:
    s = store.create_session("alice")
    store.set_context_many(s.id, [ContextInput("f", f"old{i}", i) for i in range(100)])
    base = len(store.audit(limit=100_000))
    # The batch's context rows all go in, then its audit rows fail at the 1000th.
    _install_failing_audit_trigger(store, once_rows=base + 999)
    before = store.dump()
    batch = [ContextInput("f", f"new{i}", i) for i in range(2000)]
    batch += [ContextInput("f", f"old{i}", -i) for i in range(100)]  # updates too
    with pytest.raises(StatekeepError):
        store.set_context_many(s.id, batch)
    assert store.dump() == before


def test_audit_filters_and_paging(make_store, clock) -> None:
    store = make_store(clock=clock)
    t0 = clock.now
    a = store.create_session("alice")
    b = store.create_session("bob")
    clock.advance(hours=1)
    ta = store.create_task(a.id, "x")
    store.set_context(b.id, "f", "k", 1)
    store.set_preference("alice", "p", "k", 1)

    all_events = store.audit()
    assert [e.id for e in all_events] == sorted(e.id for e in all_events)
    assert len(all_events) == 5
    assert [e.entity_type for e in store.audit(user_id="alice")] == ["session", "task",
                                                                      "preference"]
    assert [e.entity_id for e in store.audit(session_id=a.id)] == [a.id, ta.id]
    assert [e.entity_id for e in store.audit(entity_type="task")] == [ta.id]
    assert [e.event_type for e in store.audit(entity_id=b.id)] == ["create"]
    assert len(store.audit(since=t0 + timedelta(minutes=30))) == 3
    assert len(store.audit(since=t0)) == 5
    paged: list[AuditEvent] = []
    after = None
    while True:
        page = store.audit(limit=2, after_id=after)
        if not page:
            break
        paged.extend(page)
        after = page[-1].id
    assert paged == all_events
    for bad in [{"limit": 0}, {"limit": 100_001}, {"after_id": "3"}, {"entity_type": "a b"},
                {"since": "yesterday"}]:
        with pytest.raises(ValidationError):
            store.audit(**bad)
