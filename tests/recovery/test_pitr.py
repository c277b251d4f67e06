"""Point-in-time recovery against a long random history, on both backends.

A seeded random history (sessions, task trees with transitions, context
upserts and deletes, relations and their batch replacement, content links,
decisions, preferences, deletes of every kind) is written with a fake clock,
and the state is recorded after every step. For random instants, in random
order -- back and forth, each recovery on top of the previous ones -- the
recovered state must equal the recorded state at that instant. Finally the
state before the first recovery is recovered: every recovery is undone,
because recoveries are themselves in the change log.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from recovery_history import FakeClock, History, state, write_history

from statekeep import Store
from statekeep.models import Snapshot
from statekeep.recovery.manager import RecoveryManager

#: Column holding the session, per table (sessions: its own id).
SESSION_COL = {"sessions": 0, "tasks": 1, "context": 1, "context_relations": 1,
               "context_content": 1}


@pytest.mark.parametrize("snapshots", ["none", "store", "corrupt"])
def test_recovered_state_equals_the_model_at_random_instants(
        make_store: Callable[..., Store], clock: FakeClock, snapshots: str) -> None:
    store = make_store(clock=clock)
    mgr = RecoveryManager(store)
    taken: list[Snapshot] = []

    def on_step(h: History, i: int) -> None:
        if snapshots != "none" and i % 70 == 35:
            taken.append(mgr.snapshots.create())

    h = write_history(store, clock, 280, seed=20240611, on_step=on_step)
    if snapshots == "corrupt":  # a damaged base is skipped for an older one
        with store.atomic() as conn:
            conn.execute("UPDATE state_snapshots SET checksum = ? WHERE id = ?",
                         ("0" * 64, taken[-1].id))
    final = state(store)
    before_any = clock.now
    instants = h.instants(7)
    random.Random(5).shuffle(instants)
    for at in instants:
        clock.advance(seconds=1)
        result = mgr.recover_to_time(at)
        assert state(store) == h.state_at(at), at
        assert result.target_time == at
        if snapshots == "store" and taken[0].audit_id is not None \
                and result.target_audit_id >= taken[0].audit_id:
            assert result.base_snapshot_id is not None
        if snapshots == "corrupt" and result.base_snapshot_id is not None:
            assert result.base_snapshot_id != taken[-1].id
        assert mgr.verify_recovery() == []
    clock.advance(seconds=1)
    mgr.recover_to_time(before_any)
    assert state(store) == final


def by_session(rows: dict[str, list[tuple[Any, ...]]], sid: str,
               keep: bool) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of session ``sid`` (``keep``) or of every other session."""
    return {t: [r for r in rs if (r[SESSION_COL[t]] == sid) == keep]
            for t, rs in rows.items() if t in SESSION_COL}


def test_one_session_back_in_time_leaves_the_others(make_store: Callable[..., Store],
                                                    clock: FakeClock) -> None:
    store = make_store(clock=clock)
    mgr = RecoveryManager(store)
    h = write_history(store, clock, 200, seed=99)
    for at in h.instants(4):
        then = h.state_at(at)
        sessions = [r[0] for r in then["sessions"]]
        if not sessions:
            continue
        sid = random.Random(str(at)).choice(sessions)
        before = state(store)
        clock.advance(seconds=1)
        mgr.recover_to_time(at, sessions=[sid])
        now = state(store)
        assert by_session(now, sid, True) == by_session(then, sid, True)
        assert by_session(now, sid, False) == by_session(before, sid, False)
        assert now["user_preferences"] == before["user_preferences"]
        assert mgr.verify_recovery() == []


def test_synchronised_state_and_conflicts_back_in_time(make_store: Callable[..., Store],
                                                       clock: FakeClock) -> None:
    from statekeep.sync.manager import SyncManager

    store = make_store(clock=clock)
    sync = SyncManager(store)
    mgr = RecoveryManager(store)
    states = []
    steps: list[Callable[[], object]] = [
        lambda: sync.sync_state("ops", {"plan": ["a"], "critical.db": "pg-1", "n": 1}),
        lambda: sync.sync_state("agent", {"plan": ["b"], "n": 2}, base_versions={"plan": 0,
                                                                             "n": 0}),
        lambda: sync.sync_state("agent", {"critical.db": "pg-2"}),
        lambda: sync.sync_state("bot", {"critical.db": "pg-3"}),
        lambda: sync.resolve_conflict(sync.conflicts()[0].id, "proposed"),
        lambda: sync.sync_state("ops", {"n": 7, "new": {"x": 1}}),
    ]
    for step in steps:
        clock.advance(seconds=1)
        step()
        states.append((clock.now, state(store)))
    assert states[-1][1]["sync_conflicts"] and states[-1][1]["sync_state"]
    clock.advance(seconds=1)
    for i in (2, 0, 4, 3):
        clock.advance(seconds=1)
        mgr.recover_to_time(states[i][0] + (states[i + 1][0] - states[i][0]) / 2)
        assert state(store) == states[i][1], i
