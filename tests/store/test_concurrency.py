"""Concurrent writers on one store: no lost update, no spurious error.

SQLite serialises writers; PostgreSQL runs them at READ COMMITTED, where only
the store's row locks and insert-first upserts keep these properties. Threads
give each writer its own connection on both backends.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from statekeep import ContextInput, InvalidTransitionError, Store, TaskStatus

WRITERS = 8


def race(fn: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run fn(i) in WRITERS threads released at the same instant."""
    gate = threading.Barrier(WRITERS)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        gate.wait()
        try:
            out = fn(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(out)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_exactly_one_final_transition_wins(store: Store) -> None:
    session = store.create_session("alice")
    task = store.create_task(session.id, "build")
    store.start_task(task.id)
    results, errors = race(lambda i: store.transition_task(
        task.id, TaskStatus.COMPLETED if i % 2 else TaskStatus.FAILED))
    assert len(results) == 1
    assert len(errors) == WRITERS - 1
    assert all(isinstance(e, InvalidTransitionError) for e in errors)
    transitions = store.audit(entity_id=task.id, limit=100)
    assert [e.event_type for e in transitions].count("transition") == 2  # start + one final


def test_concurrent_upserts_of_one_new_preference_count_every_observation(store: Store) -> None:
    _, errors = race(lambda i: store.set_preference("alice", "style", "quotes", i))
    assert errors == []
    pref = store.get_preference("alice", "style", "quotes")
    assert pref is not None and pref.observation_count == WRITERS
    events = store.audit(entity_type="preference", limit=100)
    assert [e.event_type for e in events].count("create") == 1
    assert len(events) == WRITERS
    # Every update's old value is the previous write's new value: no lost update.
    for before, after in itertools.pairwise(events):
        assert after.old_value == before.new_value


def test_concurrent_context_writers_of_one_key_never_collide(store: Store) -> None:
    session = store.create_session("alice")

    def write(i: int) -> Any:
        if i % 2:
            return store.set_context(session.id, "note", "shared", {"writer": i})
        return store.set_context_many(session.id, [
            ContextInput("note", "shared", {"writer": i}),
            ContextInput("note", f"own-{i}", i),
        ])

    _, errors = race(write)
    assert errors == []
    keys = [i.context_key for i in store.list_context(session.id, order="key")]
    assert keys == sorted(["shared", *(f"own-{i}" for i in range(0, WRITERS, 2))])
    shared = [e for e in store.audit(session_id=session.id, entity_type="context", limit=1000)
              if e.new_value["context_key"] == "shared"]
    assert [e.event_type for e in shared].count("create") == 1
    assert len(shared) == WRITERS
    for before, after in itertools.pairwise(shared):
        assert after.old_value["context_value"] == before.new_value["context_value"]
    final = store.get_context(session.id, "note", "shared")
    assert final is not None and final.context_value == shared[-1].new_value["context_value"]
