"""Content-addressed blobs: a large value written many times is stored once.

The key is the sha256 of the *uncompressed* bytes, so equal content always
lands on one row whatever codec the thresholds pick. Writers call
:meth:`BlobStore.put_blob` inside their own transaction (the reference and the
row that holds it commit together) and :meth:`BlobStore.release_blob` when the
row goes; the blob is deleted when its last reference is released.

Reads verify: the body is decompressed and hashed again, and a mismatch raises
:class:`~statekeep.codec.CorruptDataError` -- damaged bytes are never handed
back as if they were the value.
"""

from __future__ import annotations

import re

from statekeep import codec
from statekeep.errors import InvalidIdError, NotFoundError
from statekeep.store.base import Connection, StoreCore

__all__ = ["BlobStats", "BlobStore", "validate_hash"]

_HASH_RE = re.compile(r"[0-9a-f]{64}")


def validate_hash(value: object) -> str:
    """A blob hash is 64 lower-case hex digits (a sha256); anything else is refused."""
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        shown = repr(value)[:80]
        raise InvalidIdError(f"blob hash {shown} is not a sha256 hex digest", field="hash")
    return value


class BlobStats(tuple[int, int, int, int]):
    """(blobs, references, uncompressed bytes, stored bytes) of ``content_blobs``."""

    __slots__ = ()

    @property
    def blobs(self) -> int:
        return self[0]

    @property
    def references(self) -> int:
        return self[1]

    @property
    def size_bytes(self) -> int:
        return self[2]

    @property
    def stored_bytes(self) -> int:
        return self[3]


class BlobStore(StoreCore):
    """The ``content_blobs`` table: put with reference counting, verified get."""

    def put_blob(self, conn: Connection, data: bytes) -> str:
        """Store ``data`` once (or add a reference to the copy already stored).

        Runs in the caller's transaction. The UPDATE comes first so that a
        repeat write never pays for compression; the INSERT's ON CONFLICT
        covers two writers racing to create the same blob.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, not {type(data).__name__}")
        raw = bytes(data)
        digest = codec.checksum(raw)
        cur = conn.execute(
            "UPDATE content_blobs SET ref_count = ref_count + 1 WHERE hash = ?", (digest,))
        if cur.rowcount:
            return digest
        packed = codec.compress(raw)
        conn.execute(
            "INSERT INTO content_blobs (hash, data, size_bytes, stored_bytes, ref_count,"
            " created_at) VALUES (?, ?, ?, ?, 1, ?)"
            " ON CONFLICT (hash) DO UPDATE SET ref_count = content_blobs.ref_count + 1",
            (digest, packed, len(raw), len(packed), self.ts(self.now())))
        return digest

    def release_blob(self, conn: Connection, blob_hash: str) -> bool:
        """Drop one reference, in the caller's transaction; True if the blob was deleted."""
        validate_hash(blob_hash)
        cur = conn.execute(
            "UPDATE content_blobs SET ref_count = ref_count - 1"
            " WHERE hash = ? AND ref_count > 0", (blob_hash,))
        if not cur.rowcount:
            raise NotFoundError("blob", blob_hash)
        cur = conn.execute(
            "DELETE FROM content_blobs WHERE hash = ? AND ref_count = 0", (blob_hash,))
        return bool(cur.rowcount)

    def get_blob(self, blob_hash: str) -> bytes:
        """The uncompressed bytes, verified against their hash."""
        validate_hash(blob_hash)
        row = self.query_one("SELECT data FROM content_blobs WHERE hash = ?", (blob_hash,))
        if row is None:
            raise NotFoundError("blob", blob_hash)
        return verified_blob(blob_hash, bytes(row[0]))

    def blob_refs(self, blob_hash: str) -> int:
        """How many references the blob has (0 when it does not exist)."""
        validate_hash(blob_hash)
        row = self.query_one("SELECT ref_count FROM content_blobs WHERE hash = ?",
                             (blob_hash,))
        return 0 if row is None else int(row[0])

    def blob_stats(self) -> BlobStats:
        """Totals over every blob: how much dedup and compression are saving."""
        row = self.query_one(
            "SELECT COUNT(*), COALESCE(SUM(ref_count), 0), COALESCE(SUM(size_bytes), 0),"
            " COALESCE(SUM(stored_bytes), 0) FROM content_blobs", ())
        return BlobStats((int(row[0]), int(row[1]), int(row[2]), int(row[3])))


def verified_blob(blob_hash: str, packed: bytes) -> bytes:
    """Decompress a stored blob body and check it against its hash."""
    try:
        raw = codec.decompress(packed)
    except codec.CorruptDataError as exc:
        raise codec.CorruptDataError(f"blob {blob_hash} is damaged: {exc}") from None
    if codec.checksum(raw) != blob_hash:
        raise codec.CorruptDataError(
            f"blob {blob_hash} is damaged: its content no longer matches its hash")
    return raw
