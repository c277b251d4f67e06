"""Content-addressed blobs on both backends: dedup, reference counts, verified reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from statekeep import Store, codec
from statekeep.codec import CorruptDataError
from statekeep.errors import InvalidIdError, NotFoundError

MB = 1024 * 1024


def _put(store: Store, data: bytes) -> str:
    with store.atomic() as conn:
        return store.put_blob(conn, data)


def _release(store: Store, blob_hash: str) -> bool:
    with store.atomic() as conn:
        return store.release_blob(conn, blob_hash)


def test_put_get_round_trip_and_hash_is_of_uncompressed_bytes(store: Store) -> None:
    for data in (b"", b"tiny", b'{"a": 1}' * 200, os.urandom(100_000)):
        digest = _put(store, data)
        assert digest == codec.checksum(data)
        assert store.get_blob(digest) == data


def test_same_content_is_one_row_with_counted_references(store: Store) -> None:
    data = b'{"tool_output": "' + b"x" * 50_000 + b'"}'
    hashes = {_put(store, data) for _ in range(5)}
    assert len(hashes) == 1
    digest = hashes.pop()
    assert store.blob_refs(digest) == 5
    stats = store.blob_stats()
    assert (stats.blobs, stats.references, stats.size_bytes) == (1, 5, len(data))
    assert stats.stored_bytes < len(data) // 10  # compressed, once


def test_release_deletes_at_zero_and_not_before(store: Store) -> None:
    digest = _put(store, b"abc" * 1000)
    _put(store, b"abc" * 1000)
    assert _release(store, digest) is False
    assert store.get_blob(digest) == b"abc" * 1000
    assert _release(store, digest) is True
    with pytest.raises(NotFoundError):
        store.get_blob(digest)
    with pytest.raises(NotFoundError):
        _release(store, digest)


def test_put_rolls_back_with_the_callers_transaction(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.atomic() as conn:
        digest = store.put_blob(conn, b"never committed")
        raise Boom
    assert store.blob_refs(digest) == 0


def test_bad_hashes_are_refused(store: Store) -> None:
    for bad in ("", "xyz", "A" * 64, "0" * 63, 42, "0" * 64 + "'; DROP TABLE x"):
        with pytest.raises(InvalidIdError):
            store.get_blob(bad)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        store.get_blob("0" * 64)


@pytest.mark.parametrize("damage", ["body", "header", "swap"])
def test_corrupt_blob_raises_never_returns(store: Store, damage: str) -> None:
    data = b'{"k": "' + b"value " * 5000 + b'"}'
    digest = _put(store, data)
    other = _put(store, b"something else entirely " * 100)
    with store.reading() as conn:
        packed = bytes(conn.execute("SELECT data FROM content_blobs WHERE hash = ?",
                                    (digest,)).fetchone()[0])
        other_packed = bytes(conn.execute("SELECT data FROM content_blobs WHERE hash = ?",
                                          (other,)).fetchone()[0])
    if damage == "body":
        bad = packed[:-20] + bytes(20)
    elif damage == "header":
        bad = bytes((9,)) + packed[1:]
    else:  # a valid blob, but of other content: only the hash check catches it
        bad = other_packed
    with store.atomic() as conn:
        conn.execute("UPDATE content_blobs SET data = ? WHERE hash = ?", (bad, digest))
    with pytest.raises(CorruptDataError, match=digest):
        store.get_blob(digest)


def _disk_bytes(store: Store) -> int:
    """Bytes the blob table takes: PG's relation size (with TOAST), or SQLite's
    file after a checkpoint (dbstat is not always compiled in)."""
    with store.reading() as conn:
        if store.dialect == "postgresql":
            row = conn.execute("SELECT pg_total_relation_size('content_blobs')").fetchone()
            return int(row[0])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in Path(store.location).parent.glob(
        Path(store.location).name + "*"))


def test_thousand_writes_of_one_megabyte_cost_about_one_megabyte(store: Store) -> None:
    value = os.urandom(MB)  # incompressible: what is saved is dedup alone
    before = _disk_bytes(store)
    for _ in range(1000):
        digest = _put(store, value)
    assert store.blob_refs(digest) == 1000
    with store.reading() as conn:
        stored = int(conn.execute("SELECT SUM(length(data)) FROM content_blobs").fetchone()[0])
    assert MB <= stored < 1.01 * MB
    grown = _disk_bytes(store) - before
    assert grown < 3 * MB, f"1,000 copies of 1 MB grew the database by {grown} bytes"
