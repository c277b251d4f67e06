"""Context items' full content in content_blobs, on both backends: the schema's
triggers keep every reference count right on every path -- insert, replace,
delete, ON DELETE CASCADE from an item or a session, rollback -- alongside
the counted references of memory_entries."""

from __future__ import annotations

from typing import Any

import pytest

from statekeep import NotFoundError, Store, ValidationError, codec
from statekeep.codec import CorruptDataError
from statekeep.errors import ConflictError, InvalidIdError

SOURCE = b"def main():\n    return 42\n" * 200
OTHER = b"print('hello')\n" * 300


class Boom(Exception):
    pass


def attach(store: Store, item_id: str, session_id: str, data: bytes) -> str:
    with store.atomic() as conn:
        return store.attach_content(conn, item_id, session_id, data)


def blobs(store: Store) -> dict[str, int]:
    """hash -> ref_count of every blob."""
    with store.reading() as conn:
        return {str(r[0]): int(r[1])
                for r in conn.execute("SELECT hash, ref_count FROM content_blobs").fetchall()}


def links(store: Store) -> int:
    with store.reading() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM context_content").fetchone()[0])


@pytest.fixture
def world(store: Store) -> dict[str, Any]:
    s1 = store.create_session("alice").id
    s2 = store.create_session("bob").id
    ids = {k: store.set_context(s1, "file", k, {"path": k}).id for k in ("a.py", "b.py")}
    ids["c.py"] = store.set_context(s2, "file", "c.py", {"path": "c.py"}).id
    return {"s1": s1, "s2": s2, **ids}


def test_attach_and_read_back(store: Store, world: dict[str, Any]) -> None:
    digest = attach(store, world["a.py"], world["s1"], SOURCE)
    assert digest == codec.checksum(SOURCE)
    assert store.item_content(world["a.py"]) == SOURCE
    assert store.item_content(world["b.py"]) is None
    assert store.item_content("ctx_unknown") is None
    assert blobs(store) == {digest: 1}
    with pytest.raises(InvalidIdError):
        store.item_content("bad id!")


def test_shared_content_is_one_blob_counted_per_link(store: Store,
                                                     world: dict[str, Any]) -> None:
    d = attach(store, world["a.py"], world["s1"], SOURCE)
    attach(store, world["b.py"], world["s1"], SOURCE)
    attach(store, world["c.py"], world["s2"], SOURCE)
    assert blobs(store) == {d: 3}
    attach(store, world["a.py"], world["s1"], SOURCE)  # the same content again: no change
    assert blobs(store) == {d: 3}
    stats = store.blob_stats()
    assert (stats.blobs, stats.references, stats.size_bytes) == (1, 3, len(SOURCE))


def test_replacing_content_moves_the_reference(store: Store, world: dict[str, Any]) -> None:
    d1 = attach(store, world["a.py"], world["s1"], SOURCE)
    attach(store, world["b.py"], world["s1"], SOURCE)
    d2 = attach(store, world["a.py"], world["s1"], OTHER)
    assert blobs(store) == {d1: 1, d2: 1}
    assert store.item_content(world["a.py"]) == OTHER
    attach(store, world["b.py"], world["s1"], OTHER)
    assert blobs(store) == {d2: 2}  # d1's last reference went: so did d1


def test_raw_update_of_the_link_is_counted(store: Store, world: dict[str, Any]) -> None:
    d1 = attach(store, world["a.py"], world["s1"], SOURCE)
    with store.atomic() as conn:
        d2 = store.ensure_blob(conn, OTHER)
        conn.execute("UPDATE context_content SET blob_hash = ? WHERE context_id = ?",
                     (d2, world["a.py"]))
    assert blobs(store) == {d2: 1}
    assert d1 not in blobs(store)


def test_deleting_an_item_releases_its_content(store: Store, world: dict[str, Any]) -> None:
    d = attach(store, world["a.py"], world["s1"], SOURCE)
    attach(store, world["b.py"], world["s1"], SOURCE)
    store.delete_context(world["s1"], "file", "a.py")
    assert blobs(store) == {d: 1} and links(store) == 1
    store.delete_context(world["s1"], "file", "b.py")
    assert blobs(store) == {} and links(store) == 0


def test_deleting_a_session_releases_all_its_content(store: Store,
                                                     world: dict[str, Any]) -> None:
    shared = attach(store, world["a.py"], world["s1"], SOURCE)
    own = attach(store, world["b.py"], world["s1"], OTHER)
    attach(store, world["c.py"], world["s2"], SOURCE)
    store.delete_session(world["s1"])
    assert blobs(store) == {shared: 1}
    assert own not in blobs(store)
    assert store.item_content(world["c.py"]) == SOURCE


def test_memory_entries_and_content_links_share_one_count(store: Store,
                                                          world: dict[str, Any]) -> None:
    with store.atomic() as conn:
        d = store.put_blob(conn, SOURCE)  # a memory_entries-style counted reference
    attach(store, world["a.py"], world["s1"], SOURCE)
    assert blobs(store) == {d: 2}
    store.delete_session(world["s1"])
    assert blobs(store) == {d: 1}
    assert store.get_blob(d) == SOURCE
    with store.atomic() as conn:
        assert store.release_blob(conn, d) is True
    assert blobs(store) == {}


def test_rollback_leaves_no_blob_and_no_link(store: Store, world: dict[str, Any]) -> None:
    d = attach(store, world["b.py"], world["s1"], OTHER)
    before = blobs(store)
    with pytest.raises(Boom), store.atomic() as conn:
        store.attach_content(conn, world["a.py"], world["s1"], SOURCE)
        store.attach_content(conn, world["b.py"], world["s1"], SOURCE)  # replaces OTHER
        assert blobs(store) == {codec.checksum(SOURCE): 2}
        raise Boom
    assert blobs(store) == before == {d: 1}
    assert links(store) == 1
    assert store.item_content(world["b.py"]) == OTHER
    # A savepoint rolled back inside a committed transaction: the same.
    with store.atomic() as conn, pytest.raises(Boom), store.atomic():
        store.attach_content(conn, world["a.py"], world["s1"], SOURCE)
        raise Boom
    assert blobs(store) == {d: 1}


def test_ensure_blob_adds_no_reference(store: Store, world: dict[str, Any]) -> None:
    with store.atomic() as conn:
        d = store.ensure_blob(conn, SOURCE)
        assert store.ensure_blob(conn, SOURCE) == d
    assert blobs(store) == {d: 0}  # committed without a link: harmless, reusable
    attach(store, world["a.py"], world["s1"], SOURCE)
    assert blobs(store) == {d: 1}
    with pytest.raises(TypeError), store.atomic() as conn:
        store.ensure_blob(conn, "text")  # type: ignore[arg-type]


def test_attach_refusals_change_nothing(store: Store, world: dict[str, Any]) -> None:
    attach(store, world["a.py"], world["s1"], SOURCE)
    before = (blobs(store), links(store))
    with pytest.raises(NotFoundError):
        attach(store, "ctx_missing", world["s1"], OTHER)
    with pytest.raises(ValidationError):
        attach(store, world["c.py"], world["s1"], OTHER)  # c.py is bob's
    with pytest.raises(InvalidIdError):
        attach(store, "bad id", world["s1"], OTHER)
    # A link to a blob that does not exist.
    with pytest.raises(ConflictError), store.atomic() as conn:
        conn.execute("INSERT INTO context_content (context_id, session_id, blob_hash)"
                     " VALUES (?, ?, ?)", (world["b.py"], world["s1"], "0" * 64))
    assert (blobs(store), links(store)) == before


def test_damaged_content_raises(store: Store, world: dict[str, Any]) -> None:
    d = attach(store, world["a.py"], world["s1"], SOURCE)
    with store.atomic() as conn:
        conn.execute("UPDATE content_blobs SET data = ? WHERE hash = ?",
                     (codec.compress(b"tampered"), d))
    with pytest.raises(CorruptDataError):
        store.item_content(world["a.py"])
