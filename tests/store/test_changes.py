"""Change notifications: delivered after commit, never for a rollback."""

from __future__ import annotations

import pytest

from statekeep import ContextInput, Store
from statekeep.store.base import Change


def test_listeners_hear_committed_changes_only(store: Store) -> None:
    heard: list[Change] = []
    session = store.create_session("alice")
    store.add_change_listener(heard.append)

    item = store.set_context(session.id, "note", "plan", [1])
    assert heard == [Change("create", "context", (item.id,), session.id, (("note", "plan"),))]

    heard.clear()
    with pytest.raises(RuntimeError), store.atomic():
        store.set_context(session.id, "note", "other", 1)
        assert heard == []  # not before commit
        raise RuntimeError("roll back")
    assert heard == []  # and never for a rollback

    store.set_context_many(session.id, [ContextInput("note", "plan", 2),
                                        ContextInput("note", "new", 3)])
    assert len(heard) == 1 and heard[0].entity_type == "context"
    assert heard[0].session_id == session.id and item.id in heard[0].entity_ids
    assert len(heard[0].entity_ids) == 2
    assert heard[0].keys == (("note", "plan"), ("note", "new"))
    assert heard[0].entity_ids[0] == item.id  # ids and keys pair up in order

    heard.clear()
    task = store.create_task(session.id, "build")
    store.delete_session(session.id)
    assert [(c.event, c.entity_type, c.entity_ids) for c in heard] == [
        ("create", "task", (task.id,)), ("delete", "session", (session.id,))]


def test_changes_in_one_transaction_arrive_after_it(store: Store) -> None:
    heard: list[str] = []
    session = store.create_session("alice")
    store.add_change_listener(lambda c: heard.append(c.entity_type))
    with store.atomic():
        store.create_task(session.id, "a")
        store.set_preference("alice", "style", "quotes", "double")
        assert heard == []
    assert heard == ["task", "preference"]
