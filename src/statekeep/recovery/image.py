"""The bytes of a state image: JSON, zstd-compressed, sha256-checked.

A snapshot's ``state_data`` column and an exported snapshot's body are both
this encoding, so one pair of functions reads every copy, and a damaged copy
is refused before anything in it is used.
"""

from __future__ import annotations

from typing import Any

import orjson
import zstandard

from statekeep import codec
from statekeep.errors import SnapshotCorruptError

__all__ = ["ZSTD_LEVEL", "compress_raw", "decode_image", "encode_image"]

ZSTD_LEVEL = 3


def encode_image(doc: dict[str, Any]) -> tuple[bytes, str]:
    """The compressed image and the sha256 of its uncompressed JSON."""
    raw = orjson.dumps(doc)
    return compress_raw(raw), codec.checksum(raw)


def compress_raw(raw: bytes) -> bytes:
    """The stored form of an image's JSON bytes (an imported file's JSON is kept as is,
    so that its checksum stays the one it was exported with)."""
    data: bytes = zstandard.ZstdCompressor(level=ZSTD_LEVEL,
                                           write_content_size=True).compress(raw)
    return data


def decode_image(data: bytes, checksum: str, *, what: str = "snapshot") -> dict[str, Any]:
    """The image back, or SnapshotCorruptError naming ``what`` -- never a damaged image."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise SnapshotCorruptError(f"{what} is corrupt: zstd: {exc}") from None
    if codec.checksum(raw) != checksum:
        raise SnapshotCorruptError(f"{what} is corrupt: content does not match its checksum")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SnapshotCorruptError(f"{what} is corrupt: {exc}") from None
    if not isinstance(doc, dict):
        raise SnapshotCorruptError(f"{what} is corrupt: not a state image")
    return doc
