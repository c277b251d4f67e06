"""Content-addressed blobs: a large value written many times is stored once.

The key is the sha256 of the *uncompressed* bytes, so equal content always
lands on one row whatever codec the thresholds pick. Writers call
:meth:`BlobStore.put_blob` inside their own transaction (the reference and the
row that holds it commit together) and :meth:`BlobStore.release_blob` when the
row goes; the blob is deleted when its last reference is released.

Context items link to their full content (a captured file's text) through
``context_content`` instead: :meth:`BlobStore.attach_content` only makes sure
the blob exists (:meth:`BlobStore.ensure_blob`, reference count untouched)
and writes the link, and the table's triggers count the references. So every
way a link can go -- replaced, its item or session deleted and the link
removed by ON DELETE CASCADE -- releases the blob, with no Python on the path.
Links are audited (``attach``/``detach`` of a ``content``, entity id = the
item) so that replaying the audit log rebuilds them; the first link to a
content also records the blob's stored bytes, since the blob itself may be
gone (its last reference released) by the time a replay needs it.

Reads verify: the body is decompressed and hashed again, and a mismatch raises
:class:`~statekeep.codec.CorruptDataError` -- damaged bytes are never handed
back as if they were the value.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any

from statekeep import codec
from statekeep.errors import InvalidIdError, NotFoundError, ValidationError
from statekeep.ids import validate_id
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

    def ensure_blob(self, conn: Connection, data: bytes, *,
                    created_at: datetime | None = None) -> str:
        """Make sure ``data`` is stored, without adding a reference; returns its hash.

        For links whose references the schema counts itself (``context_content``'s
        triggers): the link written next in the same transaction takes the
        reference. A blob inserted here by a transaction that rolls back goes
        with it; one left unlinked by a transaction that committed keeps
        ``ref_count`` 0 -- counted by :meth:`blob_stats`, reusable by the next
        writer of the same bytes, and never deleted under a live reference.

        On PostgreSQL an existing blob is read ``FOR KEY SHARE``: the row then
        cannot be deleted (its last reference released by another transaction)
        before this transaction's link to it commits. ``created_at`` (default:
        now) dates a new blob -- a restored archive keeps its blobs' dates.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, not {type(data).__name__}")
        raw = bytes(data)
        digest = codec.checksum(raw)
        lock = " FOR KEY SHARE" if self.dialect == "postgresql" else ""
        packed: bytes | None = None
        while True:
            if conn.execute(f"SELECT 1 FROM content_blobs WHERE hash = ?{lock}",
                            (digest,)).fetchone() is not None:
                return digest
            if packed is None:  # only a new blob pays for compression
                packed = codec.compress(raw)
            cur = conn.execute(
                "INSERT INTO content_blobs (hash, data, size_bytes, stored_bytes, ref_count,"
                " created_at) VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (hash) DO NOTHING",
                (digest, packed, len(raw), len(packed), self.ts(created_at or self.now())))
            if cur.rowcount == 1:
                return digest
            # Another writer inserted it since our read: read it again, locked.

    def attach_content(self, conn: Connection, item_id: str, session_id: str,
                       data: bytes) -> str:
        """Link a context item to its full content, in the caller's transaction.

        Replaces any content the item had (the old blob loses its reference,
        and goes when that was the last). The item must exist in ``session_id``.
        Returns the content's hash.
        """
        validate_id(item_id, "item_id")
        validate_id(session_id, "session_id")
        row = conn.execute(f"SELECT session_id FROM context WHERE id = ?{self.row_lock}",
                           (item_id,)).fetchone()
        if row is None:
            raise NotFoundError("context item", item_id)
        if row[0] != session_id:
            raise ValidationError(f"context item {item_id!r} belongs to another session,"
                                  f" not {session_id!r}", field="item_id")
        digest = self.ensure_blob(conn, data)
        old = conn.execute("SELECT blob_hash FROM context_content WHERE context_id = ?",
                           (item_id,)).fetchone()
        if old is not None and old[0] == digest:
            return digest
        shared = conn.execute("SELECT 1 FROM context_content WHERE blob_hash = ? LIMIT 1",
                              (digest,)).fetchone() is not None
        conn.execute(
            "INSERT INTO context_content (context_id, session_id, blob_hash) VALUES (?, ?, ?)"
            " ON CONFLICT (context_id) DO UPDATE SET blob_hash = excluded.blob_hash"
            " WHERE context_content.blob_hash <> excluded.blob_hash",
            (item_id, session_id, digest))
        link = {"context_id": item_id, "session_id": session_id, "blob_hash": digest}
        self.audit_row(conn, "attach", "content", item_id,
                       None if old is None else {**link, "blob_hash": old[0]}, link,
                       user_id=self._content_user(conn, session_id), session_id=session_id,
                       notify=False, meta=None if shared else {"blob": self._blob_record(
                           conn, digest)})
        return digest

    def detach_content(self, conn: Connection, item_id: str) -> bool:
        """Remove a context item's link to its content, in the caller's transaction
        (audited; the blob goes with its last reference). False if it had none."""
        validate_id(item_id, "item_id")
        row = conn.execute("DELETE FROM context_content WHERE context_id = ?"
                           " RETURNING session_id, blob_hash", (item_id,)).fetchone()
        if row is None:
            return False
        link = {"context_id": item_id, "session_id": str(row[0]), "blob_hash": str(row[1])}
        self.audit_row(conn, "detach", "content", item_id, link, None,
                       user_id=self._content_user(conn, str(row[0])), session_id=str(row[0]),
                       notify=False)
        return True

    def _content_user(self, conn: Connection, session_id: str) -> str | None:
        row = conn.execute("SELECT user_id FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else str(row[0])

    def _blob_record(self, conn: Connection, digest: str) -> dict[str, Any]:
        """A blob row as the audit log carries it: the stored (compressed) bytes."""
        row = conn.execute("SELECT data, size_bytes, stored_bytes, created_at FROM"
                           " content_blobs WHERE hash = ?", (digest,)).fetchone()
        return {"hash": digest, "data": base64.b64encode(bytes(row[0])).decode("ascii"),
                "size_bytes": int(row[1]), "stored_bytes": int(row[2]),
                "created_at": self.ts_out(row[3]).isoformat()}

    def item_content(self, item_id: str) -> bytes | None:
        """A context item's full content, verified; None when it has none."""
        validate_id(item_id, "item_id")
        row = self.query_one(
            "SELECT b.hash, b.data FROM context_content cc"
            " JOIN content_blobs b ON b.hash = cc.blob_hash WHERE cc.context_id = ?",
            (item_id,))
        if row is None:
            return None
        return verified_blob(str(row[0]), bytes(row[1]))

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
