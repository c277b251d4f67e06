"""Serialisation, compression and checksums: the bytes every layer agrees on.

JSON goes through orjson (5-10x the stdlib) but stricter than orjson's
defaults: statekeep stores JSON documents, so values orjson would quietly
coerce -- datetimes, dataclasses, NaN turned into ``null`` -- are refused with
:class:`NotJSONError` instead of being changed behind the caller's back.

Compressed blobs carry a one-byte header naming the codec, so a reader never
guesses and the thresholds can change without a migration.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Final

import lz4.frame
import orjson
import zstandard

from statekeep.errors import NotJSONError, StatekeepError, ValueTooLargeError

__all__ = [
    "canonical_hash",
    "checksum",
    "compress",
    "decompress",
    "dumps",
    "dumps_trusted",
    "loads",
]

_DUMP_OPTS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_CANONICAL_OPTS: Final = _DUMP_OPTS | orjson.OPT_SORT_KEYS


def _refuse(obj: Any) -> Any:
    raise TypeError(f"values of type {type(obj).__name__} are not JSON")


def _find_non_finite(value: Any) -> bool:
    """True if a float NaN/inf hides anywhere in value (orjson writes them as null)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_find_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_find_non_finite(v) for v in value)
    return False


def _find_nul(value: Any) -> bool:
    """True if a NUL character hides in any string or key of value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_find_nul(k) or _find_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_find_nul(v) for v in value)
    return False


def dumps(value: Any, *, field: str = "value", max_bytes: int | None = None) -> bytes:
    """Encode ``value`` as compact JSON bytes or raise a ValidationError subclass.

    ``max_bytes`` caps the encoded size; the check happens here, before any
    write, so an oversized value never reaches the store.
    """
    try:
        data: bytes = orjson.dumps(value, default=_refuse, option=_DUMP_OPTS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise NotJSONError(f"{field} is not JSON-serialisable: {exc}", field=field) from None
    # orjson encodes NaN and infinities as null; only then is a walk needed.
    if b"null" in data and _find_non_finite(value):
        raise NotJSONError(f"{field} contains NaN or infinity, which JSON cannot hold",
                           field=field)
    # PostgreSQL's jsonb cannot hold \u0000; refuse it everywhere so both
    # backends accept exactly the same values. Walk only when the escape shows.
    if b"\\u0000" in data and _find_nul(value):
        raise NotJSONError(f"{field} contains a NUL character (\\u0000), which the store"
                           " cannot hold", field=field)
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueTooLargeError(
            f"{field} encodes to {len(data)} bytes; the limit is {max_bytes}", field=field
        )
    return data


def dumps_trusted(value: Any) -> bytes:
    """Encode data that statekeep built itself from already-validated values.

    Skips the NaN walk of :func:`dumps`; accepts ``orjson.Fragment`` so an
    already-encoded value can be embedded without encoding it twice.
    """
    data: bytes = orjson.dumps(value)
    return data


def loads(data: bytes | str) -> Any:
    """Decode JSON produced by :func:`dumps`."""
    return orjson.loads(data)


def canonical_hash(value: Any, *, field: str = "value") -> str:
    """sha256 of the canonical (sorted-key) JSON form: equal values, equal hashes."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_CANONICAL_OPTS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise NotJSONError(f"{field} is not JSON-serialisable: {exc}", field=field) from None
    # As in dumps(): NaN would hash like null, making different values collide.
    if b"null" in data and _find_non_finite(value):
        raise NotJSONError(f"{field} contains NaN or infinity, which JSON cannot hold",
                           field=field)
    return hashlib.sha256(data).hexdigest()


def checksum(data: bytes) -> str:
    """Hex sha256 of raw bytes; used for snapshots, archives and blobs."""
    return hashlib.sha256(data).hexdigest()


# --- compression -----------------------------------------------------------

RAW: Final = 0
LZ4: Final = 1
ZSTD: Final = 2
_NAMES: Final = {RAW: "raw", LZ4: "lz4", ZSTD: "zstd"}

# Thresholds measured on realistic agent state (JSON of messages + file maps,
# 2-core machine; "tiers: compression thresholds" in bench/tiers.py re-measures):
#   size    lz4 ratio / compress / decompress    zstd-3 ratio / compress / decompress
#   251 B   0.93 / 0.9 us / 0.7 us               1.21 / 4.7 us / 2.2 us
#   513 B   1.25 / 1.3 us / 0.7 us               1.68 / 5.7 us / 2.2 us
#   2.3 KB  2.05 / 3.1 us / 1.5 us               3.10 / 12 us / 4.7 us
#   11 KB   2.41 / 14 us / 8 us                  4.35 / 47 us / 13 us
#   45 KB   2.55 / 50 us / 24 us                 4.87 / 142 us / 40 us
#   675 KB  2.74 / 876 us / 359 us               5.33 / 1.9 ms / 0.5 ms
# lz4's frame makes values under ~300 B bigger, and at 512 B it saves ~100 B for
# ~1 us. zstd is always 3-4x slower to compress and ~2x to decompress, for
# 1.4-1.9x the ratio: under 16 KiB its extra 5-35 us is a large share of a
# durable write and a warm read; above, the bytes themselves (disk, Redis memory,
# the wire) cost more than the CPU, so the ratio wins.
#: Below this many bytes compression costs more than it saves.
TINY_BYTES: Final = 512
#: Up to this many bytes lz4 wins on speed; above it zstd wins on size.
SMALL_BYTES: Final = 16 * 1024


class CorruptDataError(StatekeepError):
    """A compressed blob's header or body is damaged."""


def compress(data: bytes, *, level: int = 3) -> bytes:
    """Compress with the codec that suits the size, behind a one-byte header."""
    if len(data) < TINY_BYTES:
        return bytes((RAW,)) + data
    if len(data) <= SMALL_BYTES:
        return bytes((LZ4,)) + bytes(lz4.frame.compress(data))
    return bytes((ZSTD,)) + bytes(zstandard.ZstdCompressor(level=level).compress(data))


def decompress(blob: bytes) -> bytes:
    """Undo :func:`compress`; a damaged blob raises CorruptDataError."""
    if not blob:
        raise CorruptDataError("empty blob has no codec header")
    codec, body = blob[0], blob[1:]
    try:
        if codec == RAW:
            return bytes(body)
        if codec == LZ4:
            return bytes(lz4.frame.decompress(body))
        if codec == ZSTD:
            return bytes(zstandard.ZstdDecompressor().decompress(body))
    except Exception as exc:  # the libraries raise their own assorted types
        raise CorruptDataError(f"{_NAMES[codec]} blob is damaged: {exc}") from None
    raise CorruptDataError(f"unknown codec header byte {codec}")
