"""Context items on every backend: upsert, expiry, access counts, bulk writes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from statekeep import (
    ContextInput,
    NotFoundError,
    NotJSONError,
    Store,
    ValidationError,
)


def test_set_and_get(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    item = store.set_context(s.id, "file", "src/parser.py", {"lines": 812},
                             relevance_score=0.7)
    assert item.id.startswith("ctx_")
    assert (item.session_id, item.context_type, item.context_key) == (s.id, "file",
                                                                      "src/parser.py")
    assert item.context_value == {"lines": 812}
    assert item.relevance_score == 0.7
    assert item.access_count == 0
    assert item.created_at == item.updated_at == item.last_accessed == clock.now
    assert item.expires_at is None
    assert store.get_context(s.id, "file", "src/parser.py") == item
    assert store.get_context_by_id(item.id) == item


def test_default_relevance(store: Store) -> None:
    s = store.create_session("alice")
    assert store.set_context(s.id, "note", "k", 1).relevance_score == 1.0


def test_missing_item_is_none(store: Store) -> None:
    s = store.create_session("alice")
    assert store.get_context(s.id, "file", "nothing") is None
    with pytest.raises(NotFoundError):
        store.get_context_by_id("ctx_ghost")


def test_set_in_missing_session(store: Store) -> None:
    before = store.dump()
    with pytest.raises(NotFoundError):
        store.set_context("ghost", "file", "k", 1)
    assert store.dump() == before


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 0.1, -2.5e-10, "", "text",
    "üñí©ødé ✓ 🤖", [], {}, [1, "a", None, [2.5, {"x": []}]],
    {"nested": {"deep": {"deeper": [1, 2, {"k": "v"}]}}}, "1", "null", "[1]",
])
def test_json_values_round_trip(store: Store, value) -> None:
    s = store.create_session("alice")
    item = store.set_context(s.id, "val", "k", value)
    assert item.context_value == value
    got = store.get_context(s.id, "val", "k")
    assert got is not None
    assert got.context_value == value
    assert type(got.context_value) is type(value)


def test_upsert_keeps_identity_and_stats(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)
    s = store.create_session("alice")
    first = store.set_context(s.id, "file", "a.py", {"v": 1}, relevance_score=0.4)
    clock.advance(seconds=10)
    for _ in range(3):
        store.get_context(s.id, "file", "a.py")
    accessed_at = clock.now
    store.access_log.flush()
    clock.advance(seconds=10)
    second = store.set_context(s.id, "file", "a.py", {"v": 2})
    assert second.id == first.id
    assert second.created_at == first.created_at
    assert second.updated_at == clock.now
    assert second.access_count == 3
    assert second.last_accessed == accessed_at
    assert second.relevance_score == 0.4  # kept unless given
    assert second.context_value == {"v": 2}
    assert store.get_context_by_id(first.id) == second
    third = store.set_context(s.id, "file", "a.py", {"v": 3}, relevance_score=0.9)
    assert third.relevance_score == 0.9 and third.id == first.id
    # Still one row for the (session, type, key).
    assert len(store.list_context(s.id)) == 1


def test_same_key_different_type_or_session_are_distinct(store: Store) -> None:
    s1 = store.create_session("alice")
    s2 = store.create_session("alice")
    a = store.set_context(s1.id, "file", "k", 1)
    b = store.set_context(s1.id, "note", "k", 2)
    c = store.set_context(s2.id, "file", "k", 3)
    assert len({a.id, b.id, c.id}) == 3
    assert store.get_context(s1.id, "file", "k").context_value == 1
    assert store.get_context(s1.id, "note", "k").context_value == 2
    assert store.get_context(s2.id, "file", "k").context_value == 3


def test_expiry_with_clock(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    ttl = store.set_context(s.id, "tmp", "ttl", 1, ttl_seconds=60)
    assert ttl.expires_at == clock.now + timedelta(seconds=60)
    at = store.set_context(s.id, "tmp", "at", 2, expires_at=clock.now + timedelta(hours=1))
    forever = store.set_context(s.id, "tmp", "forever", 3)
    assert {i.id for i in store.list_context(s.id)} == {ttl.id, at.id, forever.id}

    clock.advance(seconds=60)  # expires_at is exclusive: at the instant it is gone
    assert store.get_context(s.id, "tmp", "ttl") is None
    assert {i.id for i in store.list_context(s.id)} == {at.id, forever.id}
    assert store.get_context(s.id, "tmp", "at") is not None

    clock.advance(hours=2)
    assert store.get_context(s.id, "tmp", "at") is None
    assert [i.id for i in store.list_context(s.id)] == [forever.id]
    assert [i.id for i in store.list_context(s.id, context_type="tmp", order="key")] \
        == [forever.id]
    # By id, expired items are still reachable (for recovery and GC).
    assert store.get_context_by_id(ttl.id).context_value == 1
    # Re-setting an expired item revives it without an expiry.
    revived = store.set_context(s.id, "tmp", "ttl", 4)
    assert revived.id == ttl.id and revived.expires_at is None
    assert store.get_context(s.id, "tmp", "ttl").context_value == 4


def test_expiry_must_be_in_one_form(store: Store, clock) -> None:
    s = store.create_session("alice")
    before = store.dump()
    with pytest.raises(ValidationError):
        store.set_context(s.id, "t", "k", 1, ttl_seconds=5,
                          expires_at=clock.now + timedelta(seconds=5))
    for bad in [0, -1, "5", True]:
        with pytest.raises(ValidationError):
            store.set_context(s.id, "t", "k", 1, ttl_seconds=bad)
    assert store.dump() == before


def test_expired_items_are_not_counted_as_accessed(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)
    s = store.create_session("alice")
    item = store.set_context(s.id, "tmp", "k", 1, ttl_seconds=1)
    clock.advance(seconds=2)
    assert store.get_context(s.id, "tmp", "k") is None
    assert store.access_log.flush() == 0
    assert store.get_context_by_id(item.id).access_count == 0


def test_access_counts_are_batched_then_flushed(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)
    s = store.create_session("alice")
    a = store.set_context(s.id, "file", "a", 1)
    b = store.set_context(s.id, "file", "b", 2)
    before = store.dump()
    for _ in range(5):
        store.get_context(s.id, "file", "a")
    clock.advance(seconds=30)
    last = clock.now
    store.get_context(s.id, "file", "a")
    store.get_context(s.id, "file", "b")
    # Reads do not write: nothing in the database moved yet.
    assert store.dump() == before
    assert store.access_log.pending() == 2
    assert store.access_log.flush() == 2
    assert store.access_log.pending() == 0
    got_a = store.get_context_by_id(a.id)
    got_b = store.get_context_by_id(b.id)
    assert (got_a.access_count, got_a.last_accessed) == (6, last)
    assert (got_b.access_count, got_b.last_accessed) == (1, last)
    # Access bookkeeping is not a user mutation: no audit rows for it.
    assert len(store.audit(entity_type="context")) == 2
    assert store.access_log.flush() == 0


def test_flush_never_moves_last_accessed_backwards(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)
    s = store.create_session("alice")
    a = store.set_context(s.id, "file", "a", 1)
    clock.advance(hours=1)
    store.get_context(s.id, "file", "a")
    store.access_log.flush()
    late = clock.now
    clock.now -= timedelta(hours=2)  # a second process with a slow clock
    store.get_context(s.id, "file", "a")
    store.access_log.flush()
    got = store.get_context_by_id(a.id)
    assert got.access_count == 2
    assert got.last_accessed == late


def test_close_flushes_access_counts(make_store, clock) -> None:
    first = make_store(clock=clock, access_flush_interval=0)
    s = first.create_session("alice")
    item = first.set_context(s.id, "file", "a", 1)
    for _ in range(4):
        first.get_context(s.id, "file", "a")
    first.close()
    second = make_store(clock=clock)
    assert second.get_context_by_id(item.id).access_count == 4


def test_list_context_orders_and_limit(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    low = store.set_context(s.id, "file", "b", 1, relevance_score=0.1)
    clock.advance(seconds=1)
    high = store.set_context(s.id, "note", "c", 2, relevance_score=0.9)
    clock.advance(seconds=1)
    mid = store.set_context(s.id, "file", "a", 3, relevance_score=0.5)
    assert [i.id for i in store.list_context(s.id)] == [high.id, mid.id, low.id]
    assert [i.id for i in store.list_context(s.id, order="recent")] == [mid.id, high.id, low.id]
    assert [i.id for i in store.list_context(s.id, order="key")] == [mid.id, low.id, high.id]
    assert [i.id for i in store.list_context(s.id, context_type="file")] == [mid.id, low.id]
    assert [i.id for i in store.list_context(s.id, limit=2)] == [high.id, mid.id]
    with pytest.raises(ValidationError):
        store.list_context(s.id, order="random")
    with pytest.raises(ValidationError):
        store.list_context(s.id, limit=0)


def test_delete_context(store: Store) -> None:
    s = store.create_session("alice")
    item = store.set_context(s.id, "file", "a", 1)
    assert store.delete_context(s.id, "file", "a") is True
    assert store.get_context(s.id, "file", "a") is None
    with pytest.raises(NotFoundError):
        store.get_context_by_id(item.id)
    before = store.dump()
    assert store.delete_context(s.id, "file", "a") is False
    assert store.dump() == before
    ev = store.audit(entity_type="context", entity_id=item.id)
    assert [e.event_type for e in ev] == ["create", "delete"]
    assert ev[1].old_value == item.to_dict() and ev[1].new_value is None


# --- bulk ----------------------------------------------------------------------


@pytest.mark.slow
def test_set_context_many_10k_in_one_transaction(make_store, clock) -> None:
    store = make_store(clock=clock)
    s = store.create_session("alice")
    n = 10_000
    items = [ContextInput("file", f"src/mod_{i}.py", {"i": i, "tags": ["x"] * (i % 3)},
                          relevance_score=(i % 100) / 100) for i in range(n)]
    audit_before = len(store.audit(limit=100_000))
    assert store.set_context_many(s.id, items) == n
    listed = store.list_context(s.id, order="key")
    assert len(listed) == n
    by_key = {i.context_key: i for i in listed}
    assert by_key["src/mod_1234.py"].context_value == {"i": 1234, "tags": ["x"]}
    assert by_key["src/mod_1234.py"].relevance_score == 0.34
    events = store.audit(entity_type="context", limit=100_000)
    assert len(store.audit(limit=100_000)) == audit_before + n
    assert len(events) == n
    assert {e.entity_id for e in events} == {i.id for i in listed}
    assert {e.event_type for e in events} == {"create"}
    assert {e.timestamp for e in events} == {clock.now}  # one transaction, one instant
    # The bulk audit rows say exactly what a single set_context would have said.
    sample = by_key["src/mod_77.py"]
    ev = next(e for e in events if e.entity_id == sample.id)
    assert ev.new_value == sample.to_dict()
    assert ev.old_value is None
    assert (ev.user_id, ev.session_id) == ("alice", s.id)

    # A second pass upserts: ids, creation times and access stats are kept.
    store.get_context(s.id, "file", "src/mod_78.py")
    store.access_log.flush()
    before_78 = store.get_context_by_id(by_key["src/mod_78.py"].id)
    clock.advance(seconds=5)
    again = [ContextInput("file", f"src/mod_{i}.py", i) for i in range(0, n, 2)]
    assert store.set_context_many(s.id, again) == n // 2
    after = {i.context_key: i for i in store.list_context(s.id)}
    assert len(after) == n
    assert after["src/mod_77.py"] == sample  # odd: not in the second batch
    upd = after["src/mod_78.py"]
    assert upd.id == by_key["src/mod_78.py"].id
    assert upd.context_value == 78
    assert upd.relevance_score == 0.78  # kept
    assert upd.access_count == 1
    assert upd.created_at == by_key["src/mod_78.py"].created_at
    assert upd.updated_at == clock.now
    upd_events = store.audit(entity_type="context", entity_id=upd.id)
    assert [e.event_type for e in upd_events] == ["create", "update"]
    assert upd_events[1].old_value == before_78.to_dict()
    assert upd_events[1].new_value == upd.to_dict()


def test_set_context_many_keeps_access_stats(make_store, clock) -> None:
    store = make_store(clock=clock, access_flush_interval=0)
    s = store.create_session("alice")
    item = store.set_context(s.id, "file", "a", 1)
    store.get_context(s.id, "file", "a")
    store.access_log.flush()
    clock.advance(seconds=1)
    store.set_context_many(s.id, [ContextInput("file", "a", 2)])
    got = store.get_context_by_id(item.id)
    assert got.access_count == 1 and got.context_value == 2
    ev = store.audit(entity_type="context", entity_id=item.id)[-1]
    assert ev.new_value == got.to_dict()


def test_set_context_many_rejects_whole_batch(store: Store) -> None:
    s = store.create_session("alice")
    store.set_context(s.id, "file", "existing", 0)
    before = store.dump()
    good = [ContextInput("file", f"k{i}", i) for i in range(100)]
    with pytest.raises(NotJSONError):
        store.set_context_many(s.id, [*good, ContextInput("file", "bad", {1, 2})])
    assert store.dump() == before
    with pytest.raises(ValidationError):
        store.set_context_many(s.id, [*good, ("file", "tuple", 1)])  # type: ignore[list-item]
    assert store.dump() == before
    with pytest.raises(NotFoundError):
        store.set_context_many("ghost", good)
    assert store.dump() == before


def test_set_context_many_empty_and_duplicates(store: Store) -> None:
    s = store.create_session("alice")
    before = store.dump()
    assert store.set_context_many(s.id, []) == 0
    assert store.dump() == before
    # The same key twice in one batch: the last value wins, one row.
    n = store.set_context_many(s.id, [ContextInput("f", "k", 1), ContextInput("f", "k", 2)])
    assert n == 1
    assert store.get_context(s.id, "f", "k").context_value == 2
    assert len(store.audit(entity_type="context")) == 1


def test_set_context_many_accepts_a_generator(store: Store) -> None:
    s = store.create_session("alice")
    assert store.set_context_many(s.id, (ContextInput("f", str(i), i) for i in range(5))) == 5
    assert len(store.list_context(s.id)) == 5
