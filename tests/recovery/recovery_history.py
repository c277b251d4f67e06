"""Shared pieces of the recovery tests: the state a recovery restores, and a long
random history written with a fake clock, with the state recorded after every step."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from statekeep import Store
from statekeep.errors import StatekeepError
from statekeep.store.context import ContextInput

#: What recovery restores: user state. The audit log, snapshots and recovery
#: points only grow; sync_seen is a component's read bookkeeping.
RECOVERED = ("sessions", "tasks", "context", "decisions", "user_preferences", "content_blobs",
             "memory_entries", "context_relations", "context_content", "sync_state",
             "sync_conflicts")


def state(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """The recovered tables of ``store.dump()``: equal exactly when the state is."""
    dump = store.dump()
    return {k: dump[k] for k in RECOVERED}


class FakeClock(Protocol):
    """The root conftest's ``clock`` fixture (its module name is shadowed here)."""

    now: datetime

    def advance(self, **delta: float) -> datetime: ...


CONTENTS = [(f"line {i}\n" * (50 + 40 * i)).encode() for i in range(4)]


@dataclass
class History:
    """What a random history did: the state after each step, stamped with its time."""

    store: Store
    clock: FakeClock
    rng: random.Random
    states: list[tuple[datetime, dict[str, list[tuple[Any, ...]]]]] = field(
        default_factory=list)
    steps: int = 0

    def state_at(self, at: datetime) -> dict[str, list[tuple[Any, ...]]]:
        """The recorded state of the last step stamped at or before ``at``."""
        found = self.states[0][1]
        for when, st in self.states:
            if when <= at:
                found = st
        return found

    def instants(self, n: int) -> list[datetime]:
        """``n`` random instants strictly between recorded steps (never on one), after
        the first step (before it the store has no history to recover)."""
        times = [w for w, _ in self.states]
        picks = sorted(self.rng.sample(range(1, len(times) - 1), min(n, len(times) - 2)))
        return [times[i] + (times[i + 1] - times[i]) / 2 for i in picks]


def _ids(store: Store, sql: str) -> list[str]:
    with store.reading() as conn:
        return [str(r[0]) for r in conn.execute(sql).fetchall()]


def random_step(h: History) -> str:
    """One random mutation; returns its name (a rejected one still counts as a step)."""
    st, rng = h.store, h.rng
    sessions = _ids(st, "SELECT id FROM sessions ORDER BY id")
    tasks = _ids(st, "SELECT id FROM tasks ORDER BY id")
    items = _ids(st, "SELECT id FROM context ORDER BY id")
    ops: list[tuple[str, Callable[[], Any]]] = []
    if len(sessions) < 3 or rng.random() < 0.15:
        ops.append(("create_session", lambda: st.create_session(
            rng.choice(["alice", "bob"]), metadata={"n": rng.randint(0, 9)})))
    if sessions:
        sid = rng.choice(sessions)
        sitems = [i for i in items if st.get_context_by_id(i).session_id == sid]
        stasks = [t for t in tasks if st.get_task(t).session_id == sid]
        ops += [
            ("update_session", lambda: st.update_session(
                sid, metadata={"m": rng.random()},
                status=rng.choice(["active", "paused", "active"]))),
            ("create_task", lambda: st.create_task(
                sid, rng.choice(["plan", "code", "test"]), parameters={"p": rng.randint(0, 5)},
                parent_task_id=rng.choice([None, *stasks]))),
            ("set_context", lambda: st.set_context(
                sid, rng.choice(["file", "note"]), f"k{rng.randint(0, 6)}",
                {"v": rng.randint(0, 100), "tags": ["a", "b"][: rng.randint(0, 2)]},
                relevance_score=rng.choice([None, 0.5, 0.9]))),
            ("set_context_many", lambda: st.set_context_many(sid, [
                ContextInput("note", f"k{rng.randint(0, 6)}", {"batch": rng.random()})
                for _ in range(rng.randint(1, 3))])),
            ("record_decision", lambda: st.record_decision(
                "choose", rng.choice(["x", "y"]), context={"c": rng.randint(0, 3)},
                session_id=sid, task_id=rng.choice([None, *stasks]),
                confidence=rng.random(), autonomous=rng.random() < 0.5)),
            ("set_preference", lambda: st.set_preference(
                rng.choice(["alice", "bob"]), "style", f"p{rng.randint(0, 3)}",
                {"v": rng.randint(0, 9)})),
        ]
        if rng.random() < 0.05:
            ops.append(("delete_session", lambda: st.delete_session(sid)))
        if stasks:
            tid = rng.choice(stasks)
            ops += [
                ("transition", lambda: st.transition_task(
                    tid, rng.choice(["in_progress", "completed", "failed", "pending",
                                     "cancelled"]), result={"ok": True})),
                ("update_task", lambda: st.update_task(
                    tid, priority=rng.randint(0, 9),
                    parent_task_id=rng.choice([None, *stasks]))),
                ("delete_task", lambda: st.delete_task(tid)),
            ]
        if len(sitems) >= 2:
            a, b = rng.sample(sitems, 2)
            ops += [
                ("relate", lambda: st.relate(sid, a, b, rng.choice(["calls", "related"]),
                                             metadata=rng.choice([None, {"w": 1}]))),
                ("replace_relations", lambda: _replace(st, sid, a, b, rng)),
            ]
        if sitems:
            it = rng.choice(sitems)
            ops += [
                ("delete_context", lambda: st.delete_context(
                    sid, *_type_key(st, it))),
                ("attach", lambda: _attach(st, it, sid, rng.choice(CONTENTS))),
                ("detach", lambda: _detach(st, it)),
            ]
        rels = _ids(st, "SELECT id FROM context_relations ORDER BY id")
        if rels:
            rel = rng.choice(rels)
            ops.append(("unrelate", lambda: st.unrelate(rel)))
        decs = _ids(st, "SELECT id FROM decisions ORDER BY id")
        if decs:
            d = rng.choice(decs)
            ops.append(("update_decision", lambda: st.update_decision(
                d, outcome=rng.choice(["good", "bad"]), feedback_score=rng.random())))
        prefs = _ids(st, "SELECT id FROM user_preferences ORDER BY id")
        if prefs:
            p = st.query_one("SELECT user_id, preference_type, preference_key FROM"
                             " user_preferences WHERE id = ?", (rng.choice(prefs),))
            ops.append(("delete_preference", lambda: st.delete_preference(*p)))
    name, op = rng.choice(ops)
    h.clock.advance(milliseconds=rng.randint(1, 5000))
    with contextlib.suppress(StatekeepError):  # an illegal move: rejected, nothing written
        op()
    h.states.append((h.clock.now, state(st)))
    h.steps += 1
    return name


def _type_key(store: Store, item_id: str) -> tuple[str, str]:
    item = store.get_context_by_id(item_id)
    return item.context_type, item.context_key


def _replace(store: Store, sid: str, a: str, b: str, rng: random.Random) -> None:
    with store.atomic() as conn:
        store.replace_relations(conn, sid, [a], ["dependency", "calls"], [
            (a, b, rng.choice(["dependency", "calls"]), rng.random(),
             rng.choice([None, {"x": 1}]))])


def _attach(store: Store, item_id: str, sid: str, data: bytes) -> None:
    with store.atomic() as conn:
        store.attach_content(conn, item_id, sid, data)


def _detach(store: Store, item_id: str) -> None:
    with store.atomic() as conn:
        store.detach_content(conn, item_id)


def write_history(store: Store, clock: FakeClock, steps: int, seed: int,
                  *, on_step: Callable[[History, int], None] | None = None) -> History:
    """``steps`` random mutations, one fake-clock tick apart, each state recorded."""
    h = History(store, clock, random.Random(seed))
    h.states.append((clock.now, state(store)))
    for i in range(steps):
        random_step(h)
        if on_step is not None:
            on_step(h, i)
    clock.advance(seconds=1)
    return h


__all__ = ["RECOVERED", "FakeClock", "History", "state", "write_history"]
