"""Sync on every backend: versions and bases, exact detection, each strategy's
outcome and audit rows, pending conflicts, propagation after commit, and bad
input that leaves the store exactly as it was."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from statekeep import NotFoundError, Store, ValidationError
from statekeep.errors import (
    ConflictClosedError,
    InvalidIdError,
    InvalidStatusError,
    NoRuleError,
    NotJSONError,
    NotMergeableError,
    UnknownStrategyError,
    ValueTooLargeError,
)
from statekeep.models import ConflictStatus, SyncConflict, SyncEntry
from statekeep.sync.events import SyncEvent
from statekeep.sync.manager import SyncManager

SYNC_TABLES = (("sync_state", "scope, key"), ("sync_seen", "scope, component, key"),
               ("sync_conflicts", "id"))


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every state table, the sync tables included (whether or not store.dump() has them)."""
    out = store.dump()
    with store.reading() as conn:
        for table, order in SYNC_TABLES:
            if table not in out:
                out[table] = [tuple(r) for r in conn.execute(
                    f"SELECT * FROM {table} ORDER BY {order}", ()).fetchall()]
    return out


class Recorder:
    """A propagator that keeps what it is handed, in order."""

    def __init__(self) -> None:
        self.batches: list[tuple[SyncEvent, ...]] = []

    def publish(self, events: Sequence[SyncEvent]) -> None:
        self.batches.append(tuple(events))

    @property
    def events(self) -> list[SyncEvent]:
        return [e for batch in self.batches for e in batch]


@pytest.fixture
def manager(store: Store) -> SyncManager:
    return SyncManager(store)


def make_manager(make_store: Callable[..., Store], **config: Any) -> SyncManager:
    return SyncManager(make_store(**config))


# --- versions, bases, detection ---------------------------------------------------


def test_first_write_creates_version_one(make_store, clock) -> None:
    store = make_store(clock=clock)
    m = SyncManager(store)
    r = m.sync_state("editor", {"plan": ["a"], "title": "x", "empty": None})
    assert r.written == ("empty", "plan", "title")
    assert r.versions == {"empty": 1, "plan": 1, "title": 1}
    assert r.applied == {"empty": None, "plan": ["a"], "title": "x"}
    assert r.resolutions == () and r.pending == {} and r.unchanged == ()
    state = m.get_state()
    assert state["plan"] == SyncEntry("global", "plan", ["a"], 1, "editor", clock.now)
    assert state["empty"].value is None
    assert [(e.key, e.version, e.component) for e in r.events] == [
        ("empty", 1, "editor"), ("plan", 1, "editor"), ("title", 1, "editor")]
    audit = store.audit(entity_type="sync")
    assert [(a.event_type, a.entity_id) for a in audit] == [
        ("create", "global:empty"), ("create", "global:plan"), ("create", "global:title")]
    assert audit[1].new_value == state["plan"].to_dict()
    assert audit[1].change_metadata == {"component": "editor", "base_version": 0}


def test_write_on_the_seen_version_is_no_conflict(manager: SyncManager) -> None:
    manager.sync_state("editor", {"k": 1})
    r = manager.sync_state("editor", {"k": 2})  # base: the version editor wrote
    assert r.written == ("k",) and r.versions == {"k": 2} and r.resolutions == ()
    # Another component that never read k writes on base 0: a conflict.
    r = manager.sync_state("planner", {"k": 3})
    assert [(x.base_version, x.current_version) for x in r.resolutions] == [(0, 2)]
    # Reading with a component makes the read versions its bases.
    manager.sync_state("editor", {"k": 10}, strategy="last_write_wins")
    manager.get_state(keys=["k"], component="planner")
    assert manager.store.sync_seen_versions("planner") == {"k": 4}
    r = manager.sync_state("planner", {"k": 11})
    assert r.resolutions == () and r.versions == {"k": 5}


def test_explicit_base_versions_override_the_seen_ones(manager: SyncManager) -> None:
    manager.sync_state("a", {"k": 1})
    manager.sync_state("a", {"k": 2})
    r = manager.sync_state("a", {"k": 3}, base_versions={"k": 1}, strategy="keep_current")
    (res,) = r.resolutions
    assert (res.strategy, res.action, res.base_version, res.current_version) == (
        "keep_current", "keep", 1, 2)
    assert r.applied == {"k": 2} and r.written == () and r.events == ()
    r = manager.sync_state("b", {"k": 4}, base_versions={"k": 2})
    assert r.resolutions == () and r.versions == {"k": 3}


def test_equal_values_are_never_a_conflict(manager: SyncManager) -> None:
    manager.sync_state("a", {"k": {"x": [1, 2], "y": 1}})
    manager.sync_state("a", {"k": {"x": [1, 2], "y": 2}})
    # b is two versions behind, but proposes exactly what is stored.
    r = manager.sync_state("b", {"k": {"y": 2, "x": [1, 2]}})
    assert r.unchanged == ("k",) and r.resolutions == () and r.written == ()
    assert manager.store.sync_seen_versions("b") == {"k": 2}
    assert manager.get_state()["k"].version == 2


def test_json_equality_tells_numbers_and_booleans_apart(manager: SyncManager) -> None:
    manager.sync_state("a", {"k": 1})
    assert manager.sync_state("a", {"k": 1.0}).written == ("k",)
    assert manager.sync_state("a", {"k": True}).written == ("k",)
    assert manager.sync_state("a", {"k": True}).unchanged == ("k",)
    assert manager.get_state()["k"].version == 3


def test_scopes_are_separate(manager: SyncManager) -> None:
    manager.sync_state("a", {"k": 1}, scope="project-1")
    manager.sync_state("a", {"k": 2}, scope="ses_0001")
    r = manager.sync_state("b", {"k": 3}, scope="project-2")
    assert r.resolutions == () and r.versions == {"k": 1}
    assert {s: manager.get_state(s)["k"].value for s in manager.store.sync_scopes()} == {
        "project-1": 1, "project-2": 3, "ses_0001": 2}
    assert manager.get_state() == {}


def test_bases_are_kept_in_the_store_across_instances(make_store) -> None:
    one, two = make_manager(make_store), make_manager(make_store)
    one.sync_state("editor", {"k": 1})
    two.sync_state("planner", {"k": 2}, strategy="last_write_wins")
    # A fresh store instance (another process, a restart) knows editor's base.
    three = make_manager(make_store)
    r = three.sync_state("editor", {"k": 3}, strategy="keep_current")
    assert [(x.base_version, x.current_version) for x in r.resolutions] == [(1, 2)]


def test_get_state_of_some_keys(manager: SyncManager) -> None:
    manager.sync_state("a", {f"k{i}": i for i in range(5)})
    got = manager.get_state(keys=["k3", "k1", "missing", "k1"])
    assert list(got) == ["k1", "k3"]
    assert manager.get_state(keys=[]) == {}


def test_detect_conflicts_previews_without_writing(manager: SyncManager) -> None:
    manager.sync_state("a", {"x": [1], "y": 1, "z": 5})
    manager.sync_state("b", {"x": [2], "y": 2}, strategy="last_write_wins")
    before = dump(manager.store)
    found = manager.detect_conflicts("a", {"x": [3], "y": 2, "z": 6, "new": 0})
    assert [(c.key, c.base_version, c.current_version, c.current_value, c.proposed_value)
            for c in found] == [("x", 1, 2, [2], [3])]  # y equal, z on its base, new is new
    assert dump(manager.store) == before
    with pytest.raises(ValidationError, match="ahead"):
        manager.detect_conflicts("a", {"z": 1}, base_versions={"z": 9})


# --- strategies and their audit rows ---------------------------------------------


def test_merge_is_selected_for_lists_and_dicts(manager: SyncManager) -> None:
    store = manager.store
    manager.sync_state("a", {"plan": ["a", "b"], "cfg": {"x": [1], "y": 1}})
    manager.sync_state("b", {"plan": ["c", "a"], "cfg": {"x": [2], "z": 0}})
    state = manager.get_state()
    assert state["plan"].value == ["a", "b", "c"] and state["plan"].version == 2
    assert state["cfg"].value == {"x": [1, 2], "y": 1, "z": 0}
    row = store.audit(entity_type="sync", entity_id="global:plan")[-1]
    assert row.old_value["value"] == ["a", "b"] and row.new_value["value"] == ["a", "b", "c"]
    assert row.change_metadata == {
        "component": "b", "base_version": 0, "strategy": "merge",
        "conflict": {"base_version": 0, "current_version": 1, "current_value": ["a", "b"],
                     "proposed_value": ["c", "a"], "resolved_value": ["a", "b", "c"]}}


def test_merge_that_adds_nothing_keeps_the_version(manager: SyncManager) -> None:
    manager.sync_state("a", {"plan": ["a", "b"]})
    r = manager.sync_state("b", {"plan": ["b"]})
    (res,) = r.resolutions
    assert (res.strategy, res.action, res.resolved_value, res.version) == (
        "merge", "keep", ["a", "b"], 1)
    assert r.written == () and r.events == ()
    (row,) = manager.store.audit(entity_type="sync_resolution")
    assert (row.event_type, row.entity_id) == ("keep", "global:plan")
    assert row.change_metadata["conflict"]["proposed_value"] == ["b"]
    assert row.change_metadata["strategy"] == "merge"


def test_last_write_wins_for_scalars(manager: SyncManager) -> None:
    manager.sync_state("a", {"title": "old"})
    r = manager.sync_state("b", {"title": "new"})
    (res,) = r.resolutions
    assert (res.strategy, res.action, res.resolved_value) == ("last_write_wins", "write", "new")
    assert manager.get_state()["title"] == SyncEntry(
        "global", "title", "new", 2, "b", manager.get_state()["title"].updated_at)
    row = manager.store.audit(entity_type="sync", entity_id="global:title")[-1]
    assert row.change_metadata["strategy"] == "last_write_wins"
    assert row.change_metadata["conflict"]["current_value"] == "old"
    assert row.change_metadata["conflict"]["proposed_value"] == "new"


def test_rules_from_config(make_store) -> None:
    m = make_manager(make_store, sync_rules=("counter.*=max", "stable.*=keep_current"))
    m.sync_state("a", {"counter.runs": 5, "stable.name": "x", "other": 1})
    r = m.sync_state("b", {"counter.runs": 3, "stable.name": "y", "other": 2})
    got = {x.key: (x.strategy, x.rule, x.action, x.resolved_value) for x in r.resolutions}
    assert got == {
        "counter.runs": ("rule_based", "counter.*=max", "keep", 5),
        "stable.name": ("rule_based", "stable.*=keep_current", "keep", "x"),
        "other": ("last_write_wins", None, "write", 2),
    }
    r = m.sync_state("c", {"counter.runs": 9})
    assert r.resolutions[0].action == "write" and r.applied == {"counter.runs": 9}
    metas = [a.change_metadata for a in m.store.audit(entity_type="sync_resolution")]
    assert {(x["rule"], x["conflict"]["proposed_value"]) for x in metas} == {
        ("counter.*=max", 3), ("stable.*=keep_current", "y")}


def test_forced_strategy_applies_to_every_conflicting_key(manager: SyncManager) -> None:
    manager.sync_state("a", {"l": [1], "n": 1})
    r = manager.sync_state("b", {"l": [2], "n": 2}, strategy="user_decides")
    assert set(r.pending) == {"l", "n"}
    assert r.applied == {"l": [1], "n": 1} and r.written == ()


# --- pending conflicts -----------------------------------------------------------


def test_critical_keys_wait_for_a_person(manager: SyncManager) -> None:
    store = manager.store
    manager.sync_state("ops", {"critical.db": "pg-1"})
    r = manager.sync_state("agent", {"critical.db": "pg-2"})
    (res,) = r.resolutions
    assert (res.strategy, res.action) == ("user_decides", "pending")
    cid = r.pending["critical.db"]
    assert res.conflict_id == cid
    assert manager.get_state()["critical.db"].value == "pg-1"  # keeps its value meanwhile
    c = manager.get_conflict(cid)
    assert (c.scope, c.key, c.component, c.base_version, c.current_version) == (
        "global", "critical.db", "agent", 0, 1)
    assert (c.current_value, c.proposed_value, c.status) == ("pg-1", "pg-2",
                                                             ConflictStatus.PENDING)
    assert manager.conflicts() == [c]
    (row,) = store.audit(entity_type="sync_conflict")
    assert (row.event_type, row.entity_id, row.new_value) == ("create", cid, c.to_dict())
    assert row.change_metadata["strategy"] == "user_decides"
    # The proposer has not seen what it must decide on: its base stays.
    assert store.sync_seen_versions("agent") == {}


def test_a_newer_proposal_supersedes_the_pending_one(manager: SyncManager) -> None:
    manager.sync_state("ops", {"critical.x": 1})
    first = manager.sync_state("agent", {"critical.x": 2}).pending["critical.x"]
    other = manager.sync_state("bot", {"critical.x": 5}).pending["critical.x"]
    second = manager.sync_state("agent", {"critical.x": 3}).pending["critical.x"]
    assert first != second
    assert manager.get_conflict(first).status is ConflictStatus.SUPERSEDED
    assert manager.get_conflict(first).resolved_at is not None
    assert [c.id for c in manager.conflicts()] == [other, second]
    # Any newer write of the key by the same component supersedes, also one
    # that needs no person (here: on the current version).
    manager.sync_state("agent", {"critical.x": 4}, base_versions={"critical.x": 1})
    assert manager.get_conflict(second).status is ConflictStatus.SUPERSEDED
    assert [c.id for c in manager.conflicts()] == [other]
    events = [(a.event_type, a.entity_id) for a in manager.store.audit(
        entity_type="sync_conflict")]
    assert events == [("create", first), ("create", other), ("supersede", first),
                      ("create", second), ("supersede", second)]
    statuses = {c.id: c.status for c in manager.conflicts(status=None)}
    assert statuses == {first: ConflictStatus.SUPERSEDED, other: ConflictStatus.PENDING,
                        second: ConflictStatus.SUPERSEDED}


@pytest.mark.parametrize(("choice", "value", "final", "written"), [
    ("current", None, ["a"], False),
    ("proposed", None, ["b"], True),
    ("merge", None, ["a", "b"], True),
    ("value", {"chosen": True}, {"chosen": True}, True),
])
def test_resolve_a_pending_conflict(make_store, choice: str, value: Any, final: Any,
                                    written: bool) -> None:
    recorder = Recorder()
    store = make_store()
    m = SyncManager(store, propagator=recorder)
    m.sync_state("ops", {"critical.plan": ["a"]})
    cid = m.sync_state("agent", {"critical.plan": ["b"]}).pending["critical.plan"]
    recorder.batches.clear()
    kwargs: dict[str, Any] = {"value": value} if choice == "value" else {}
    done = m.resolve_conflict(cid, choice, resolved_by="alice", **kwargs)
    assert done.written is written
    assert done.conflict.status is ConflictStatus.RESOLVED
    assert (done.conflict.resolution, done.conflict.resolved_value) == (choice, final)
    assert done.conflict.resolved_by == "alice" and done.conflict.resolved_at is not None
    entry = m.get_state()["critical.plan"]
    assert entry == done.entry and entry.value == final
    assert entry.version == (2 if written else 1)
    assert m.conflicts() == []
    resolve_rows = store.audit(entity_type="sync_conflict")[-1:]
    assert resolve_rows[0].event_type == "resolve" and resolve_rows[0].user_id == "alice"
    assert resolve_rows[0].change_metadata == {"strategy": "user_decides", "choice": choice,
                                                "component": "agent"}
    sync_rows = store.audit(entity_type="sync", entity_id="global:critical.plan")
    if written:
        assert entry.component == "alice"
        meta = sync_rows[-1].change_metadata
        assert meta["strategy"] == "user_decides" and meta["conflict_id"] == cid
        assert meta["conflict"]["current_value"] == ["a"]
        assert meta["conflict"]["proposed_value"] == ["b"]
        assert [(e.key, e.value, e.version, e.component) for e in recorder.events] == [
            ("critical.plan", final, 2, "alice")]
    else:
        assert len(sync_rows) == 1 and recorder.batches == []
    with pytest.raises(ConflictClosedError, match="resolved"):
        m.resolve_conflict(cid, "proposed")


def test_merge_resolution_uses_the_value_stored_now(manager: SyncManager) -> None:
    manager.sync_state("ops", {"critical.l": [1]})
    cid = manager.sync_state("agent", {"critical.l": [2]}).pending["critical.l"]
    manager.sync_state("ops", {"critical.l": [1, 3]})
    done = manager.resolve_conflict(cid, "merge")
    assert done.entry.value == [1, 3, 2] and done.entry.component == "user"


# --- propagation after commit ---------------------------------------------------


def test_events_are_published_after_commit(store: Store) -> None:
    recorder = Recorder()
    m = SyncManager(store, propagator=recorder)
    r = m.sync_state("a", {"x": 1, "y": [1]})
    assert recorder.batches == [r.events]
    r2 = m.sync_state("b", {"x": 1, "y": [2]})  # x unchanged: only y is an event
    assert recorder.batches[-1] == r2.events
    assert [(e.key, e.value, e.version, e.component) for e in r2.events] == [
        ("y", [1, 2], 2, "b")]
    m.sync_state("b", {"x": 1})  # nothing changed: nothing published
    assert len(recorder.batches) == 2


def test_nested_in_a_caller_transaction(store: Store) -> None:
    recorder = Recorder()
    m = SyncManager(store, propagator=recorder)
    with store.atomic():
        m.sync_state("a", {"x": 1})
        assert recorder.batches == []  # not committed yet
    assert [e.key for e in recorder.events] == ["x"]

    before = dump(store)
    with pytest.raises(RuntimeError), store.atomic():
        m.sync_state("a", {"x": 2})
        raise RuntimeError("the caller fails after the sync")
    assert len(recorder.batches) == 1  # the rolled-back write was never announced
    assert dump(store) == before


# --- bad input: a StatekeepError naming the problem, and nothing written --------------


@pytest.fixture
def seeded(make_store) -> SyncManager:
    m = make_manager(make_store, sync_rules=("plan.*=merge",))
    m.sync_state("a", {"n": 1, "plan.x": [1], "critical.k": "v"})
    m.sync_state("b", {"critical.k": "w"})  # one pending conflict
    return m


BAD_SYNCS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("unknown strategy", {"state": {"n": 2}, "strategy": "newest"}, UnknownStrategyError,
     "newest"),
    ("rule_based, no rule", {"state": {"plan.y": [1], "n": 2}, "strategy": "rule_based"},
     NoRuleError, "'n'"),
    ("merge of scalars", {"state": {"a": 1, "n": 5}, "strategy": "merge",
                          "component": "c"}, NotMergeableError, "int"),
    ("control char key", {"state": {"bad\nkey": 1}}, InvalidIdError, "key"),
    ("empty key", {"state": {"": 1}}, InvalidIdError, "key"),
    ("non-string key", {"state": {3: 1}}, InvalidIdError, "key"),
    ("non-string key, rule_based", {"state": {3: 1}, "strategy": "rule_based"},
     InvalidIdError, "key"),
    ("bad component", {"state": {"n": 2}, "component": "has space"}, InvalidIdError,
     "component"),
    ("empty component", {"state": {"n": 2}, "component": ""}, InvalidIdError, "component"),
    ("bad scope", {"state": {"n": 2}, "scope": "../etc"}, InvalidIdError, "scope"),
    ("set value", {"state": {"n": {1, 2}}}, NotJSONError, "state['n']"),
    ("NaN value", {"state": {"n": float("nan")}}, NotJSONError, "NaN"),
    ("object value", {"state": {"n": object()}}, NotJSONError, "state['n']"),
    ("state not a mapping", {"state": [("n", 1)]}, ValidationError, "mapping"),
    ("base ahead", {"state": {"n": 2}, "base_versions": {"n": 5}}, ValidationError,
     "ahead of the stored version 1"),
    ("base ahead of a new key", {"state": {"new": 2}, "base_versions": {"new": 1}},
     ValidationError, "ahead of the stored version 0"),
    ("base of a key not written", {"state": {"n": 2}, "base_versions": {"m": 1}},
     ValidationError, "'m'"),
    ("negative base", {"state": {"n": 2}, "base_versions": {"n": -1}}, ValidationError,
     "non-negative"),
    ("bool base", {"state": {"n": 2}, "base_versions": {"n": True}}, ValidationError,
     "non-negative"),
]


@pytest.mark.parametrize(("case", "kwargs", "error", "text"), BAD_SYNCS,
                         ids=[c[0] for c in BAD_SYNCS])
def test_bad_sync_input_changes_nothing(seeded: SyncManager, case: str,
                                        kwargs: dict[str, Any], error: type[Exception],
                                        text: str) -> None:
    kwargs = dict(kwargs)
    component = kwargs.pop("component", "b")
    state = kwargs.pop("state")
    before = dump(seeded.store)
    with pytest.raises(error) as info:
        seeded.sync_state(component, state, **kwargs)
    assert text in str(info.value)
    assert dump(seeded.store) == before


def test_error_late_in_a_sync_rolls_back_its_earlier_keys(seeded: SyncManager) -> None:
    # "a" sorts first and would be written; "n" then conflicts with no merge.
    before = dump(seeded.store)
    with pytest.raises(NotMergeableError):
        seeded.sync_state("c", {"a": [1], "n": 7, "z": 0}, strategy="merge")
    assert dump(seeded.store) == before


def test_value_too_large_changes_nothing(make_store) -> None:
    m = make_manager(make_store, max_value_bytes=100)
    m.sync_state("a", {"l": ["x" * 60]})
    before = dump(m.store)
    with pytest.raises(ValueTooLargeError):
        m.sync_state("b", {"l": ["y" * 200]})
    with pytest.raises(ValueTooLargeError):  # the merged value is checked too
        m.sync_state("b", {"l": ["y" * 60]})
    assert dump(m.store) == before


def test_bad_resolutions_change_nothing(seeded: SyncManager) -> None:
    (pending,) = seeded.conflicts()
    before = dump(seeded.store)
    with pytest.raises(ValidationError, match="choice 'pick'"):
        seeded.resolve_conflict(pending.id, "pick")
    with pytest.raises(ValidationError, match="needs the value"):
        seeded.resolve_conflict(pending.id, "value")
    with pytest.raises(ValidationError, match="only taken with choice 'value'"):
        seeded.resolve_conflict(pending.id, "proposed", value=1)
    with pytest.raises(NotJSONError):
        seeded.resolve_conflict(pending.id, "value", value={1})
    with pytest.raises(NotMergeableError):  # two strings
        seeded.resolve_conflict(pending.id, "merge")
    with pytest.raises(InvalidIdError):
        seeded.resolve_conflict(pending.id, "current", resolved_by="a person")
    with pytest.raises(NotFoundError):
        seeded.resolve_conflict("cfl_missing", "current")
    with pytest.raises(InvalidIdError):
        seeded.resolve_conflict("../x", "current")
    assert dump(seeded.store) == before

    seeded.resolve_conflict(pending.id, "current")
    closed = dump(seeded.store)
    for choice in ("current", "proposed"):
        with pytest.raises(ConflictClosedError, match="not pending"):
            seeded.resolve_conflict(pending.id, choice)
    assert dump(seeded.store) == closed


def test_bad_listing_arguments(seeded: SyncManager) -> None:
    with pytest.raises(InvalidStatusError):
        seeded.conflicts(status="open")
    with pytest.raises(ValidationError):
        seeded.conflicts(limit=0)
    with pytest.raises(ValidationError):
        seeded.get_state(keys="n")
    with pytest.raises(InvalidIdError):
        seeded.get_state(component="no good")
    assert [c.key for c in seeded.conflicts(status="pending", key="critical.k")] == [
        "critical.k"]
    assert isinstance(seeded.get_conflict(seeded.conflicts()[0].id), SyncConflict)


# --- concurrency within one process (threads; each has its own connection) ---------


def test_concurrent_merges_into_a_new_key_lose_nothing(make_store) -> None:
    # Every thread finds the key missing; insert-first makes all but one merge.
    store = make_store()
    gate = threading.Barrier(6)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        m = SyncManager(store)
        mine: list[str] = []  # the component's own view, as a sync leaves it
        gate.wait()
        try:
            for j in range(5):
                mine = m.sync_state(f"w{i}", {"tokens": [*mine, f"{i}-{j}"]}).applied["tokens"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entry = SyncManager(store).get_state()["tokens"]
    # Every token, exactly once.
    assert sorted(entry.value) == sorted(f"{i}-{j}" for i in range(6) for j in range(5))
    assert entry.version == len(store.audit(entity_type="sync", limit=1000))


def test_the_store_checks_what_a_policy_returns(seeded: SyncManager) -> None:
    store = seeded.store
    before = dump(store)
    with pytest.raises(ValidationError, match="not a Resolution"):
        store.sync_write("c", {"n": 9}, resolve=lambda c: "last_write_wins")  # type: ignore[arg-type,return-value]
    with pytest.raises(ValidationError, match="callable"):
        store.sync_write("c", {"n": 9}, resolve=None)  # type: ignore[arg-type]
    assert dump(store) == before
