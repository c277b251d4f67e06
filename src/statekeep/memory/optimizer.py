"""Compression, deduplication and prefetch for the memory tiers (seed 5.2).

The seed pickles values; statekeep never does (a pickle from the store would
be code execution waiting to happen). Values travel as strict JSON
(:func:`statekeep.codec.dumps`) and are compressed by
:func:`statekeep.codec.compress`, whose size thresholds were measured on
realistic agent state -- the table is next to them in ``codec.py``.

Large values are deduplicated through the store's content-addressed blobs
(:mod:`statekeep.store.blobs`), so the hundredth copy of a 1 MB tool output
costs a reference, not a megabyte.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

from statekeep import codec
from statekeep.ids import validate_id
from statekeep.memory.hot import HotTier
from statekeep.models import ContextItem, Task, TaskStatus
from statekeep.store.base import Connection
from statekeep.store.protocol import Store

__all__ = ["CompressedData", "MemoryOptimizer", "Packed", "context_key", "task_key"]

_ALGORITHMS: Final = {codec.RAW: "raw", codec.LZ4: "lz4", codec.ZSTD: "zstd"}


@dataclass(frozen=True, slots=True)
class CompressedData:
    """A compressed value: ``data`` carries codec's one-byte header, so it is
    self-describing; ``algorithm`` repeats it for the caller's statistics."""

    data: bytes
    algorithm: str
    original_size: int
    compressed_size: int

    @property
    def ratio(self) -> float:
        return self.original_size / self.compressed_size if self.compressed_size else 1.0


@dataclass(frozen=True, slots=True)
class Packed:
    """How a value is kept in a row: compressed inline, or a blob reference."""

    inline: bytes | None
    blob_hash: str | None
    size_bytes: int


def context_key(item: ContextItem) -> tuple[str, str, str, str]:
    """The hot-tier key :meth:`MemoryOptimizer.prefetch` uses for a context item."""
    return ("ctx", item.session_id, item.context_type, item.context_key)


def task_key(task: Task) -> tuple[str, str]:
    """The hot-tier key of a task (the façade's read-through key)."""
    return ("task", task.id)


class MemoryOptimizer:
    """Encode + compress values, deduplicate large ones, warm the hot tier."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dedup_min_bytes = store.config.dedup_min_bytes
        self.max_value_bytes = store.config.max_value_bytes

    # -- compression ------------------------------------------------------------

    def encode(self, value: Any, *, field: str = "value") -> bytes:
        """Strict JSON bytes of ``value`` (NotJSONError / ValueTooLargeError if not)."""
        return codec.dumps(value, field=field, max_bytes=self.max_value_bytes)

    def compress(self, value: Any) -> CompressedData:
        """Encode and compress with the codec the value's size calls for."""
        return self.compress_bytes(self.encode(value))

    @staticmethod
    def compress_bytes(raw: bytes) -> CompressedData:
        """Compress already-encoded JSON bytes."""
        packed = codec.compress(raw)
        return CompressedData(packed, _ALGORITHMS[packed[0]], len(raw), len(packed))

    @staticmethod
    def decompress(data: CompressedData | bytes) -> Any:
        """The value back from :meth:`compress` (CorruptDataError if damaged)."""
        blob = data.data if isinstance(data, CompressedData) else data
        return codec.loads(codec.decompress(blob))

    # -- deduplication -------------------------------------------------------------

    def pack(self, conn: Connection, raw: bytes) -> Packed:
        """Keep encoded JSON inline (compressed) or, when large, as a shared blob.

        Runs in the caller's transaction, so the blob reference commits with
        the row that holds it.
        """
        if len(raw) >= self.dedup_min_bytes:
            return Packed(None, self.store.put_blob(conn, raw), len(raw))
        return Packed(codec.compress(raw), None, len(raw))

    def unpack(self, inline: bytes | None, blob_hash: str | None) -> bytes:
        """Encoded JSON back from :meth:`pack`'s row form (verified for blobs)."""
        if blob_hash is not None:
            return self.store.get_blob(blob_hash)
        if inline is None:
            raise codec.CorruptDataError("memory row holds neither a value nor a blob")
        return codec.decompress(bytes(inline))

    def release(self, conn: Connection, packed_hash: str | None) -> None:
        """Drop a row's blob reference (no-op for inline values)."""
        if packed_hash is not None:
            self.store.release_blob(conn, packed_hash)

    # -- prefetch ----------------------------------------------------------------

    def prefetch(
        self,
        session_id: str,
        hot: HotTier,
        *,
        context_limit: int = 200,
        task_key_fn: Callable[[Task], Hashable] = task_key,
        context_key_fn: Callable[[ContextItem], Hashable] = context_key,
    ) -> int:
        """Load a session's active tasks and its most relevant context into ``hot``.

        Called when a session resumes, so the agent's first reads hit memory.
        "Active" means pending or in progress. Context items carry no task
        link, so the session's top ``context_limit`` items by relevance stand
        for the active tasks' context. Returns how many entries were placed;
        an entry larger than the tier is skipped, never an error.
        """
        validate_id(session_id, "session_id")
        placed = 0
        for status in (TaskStatus.IN_PROGRESS, TaskStatus.PENDING):
            for task in self.store.list_tasks(session_id, status=status):
                placed += self._place(hot, task_key_fn(task), task, task.to_dict())
        items = self.store.list_context(session_id, limit=context_limit)
        for item in items:
            placed += self._place(hot, context_key_fn(item), item, item.to_dict())
        return placed

    @staticmethod
    def _place(hot: HotTier, key: Hashable, value: Any, as_dict: dict[str, Any]) -> int:
        return int(hot.put(key, value, len(codec.dumps_trusted(as_dict))))
