"""codec: strict JSON, canonical hashes, checksums, self-describing compression."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from statekeep import NotJSONError, ValueTooLargeError
from statekeep.codec import (
    LZ4,
    RAW,
    SMALL_BYTES,
    TINY_BYTES,
    ZSTD,
    CorruptDataError,
    canonical_hash,
    checksum,
    compress,
    decompress,
    dumps,
    dumps_trusted,
    loads,
)
from statekeep.errors import StatekeepError


@pytest.mark.parametrize("value", [
    None, True, 0, -5, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e-300, 1.7976931348623157e308,
    "", "ünï ✓ 🤖", "a backslash-u0000 text: \\u0000", [], {}, [1, [2, [3]]],
    {"a": {"b": [None, True, 1.25]}},
])
def test_round_trip(value) -> None:
    data = dumps(value)
    assert isinstance(data, bytes)
    assert loads(data) == value
    assert loads(data.decode()) == value


def test_compact_output() -> None:
    assert dumps({"a": [1, 2]}) == b'{"a":[1,2]}'


@pytest.mark.parametrize("value", [
    {1, 2}, b"x", object(), datetime.now(UTC), Decimal("1"), {1: "a"}, 2**64, -(2**63) - 1,
    complex(1, 1), "\ud800",
])
def test_refuses_non_json(value) -> None:
    with pytest.raises(NotJSONError) as info:
        dumps(value, field="payload")
    assert info.value.field == "payload"
    assert "payload" in str(info.value)


@pytest.mark.parametrize("value", [
    float("nan"), float("inf"), float("-inf"), [1, float("nan")], {"a": {"b": [float("inf")]}},
    (1, float("nan")),
])
def test_refuses_non_finite_even_nested(value) -> None:
    with pytest.raises(NotJSONError):
        dumps(value)


@pytest.mark.parametrize("value", ["a\x00b", {"k\x00": 1}, [["\x00"]], {"a": {"b": "\x00"}}])
def test_refuses_nul_even_nested(value) -> None:
    # PostgreSQL's jsonb cannot hold \u0000, so no backend accepts it.
    with pytest.raises(NotJSONError, match="NUL"):
        dumps(value)


def test_null_alone_is_not_mistaken_for_nan() -> None:
    assert dumps([None, {"x": None}]) == b'[null,{"x":null}]'


def test_max_bytes_boundary() -> None:
    assert len(dumps("x" * 8, max_bytes=10)) == 10
    with pytest.raises(ValueTooLargeError) as info:
        dumps("x" * 9, max_bytes=10, field="blob")
    assert info.value.field == "blob"
    # bytes, not characters
    with pytest.raises(ValueTooLargeError):
        dumps("é" * 5, max_bytes=11)


def test_dumps_trusted_embeds_fragments() -> None:
    inner = dumps({"k": [1, 2]})
    assert loads(dumps_trusted({"v": orjson.Fragment(inner)})) == {"v": {"k": [1, 2]}}


def test_canonical_hash() -> None:
    a = canonical_hash({"b": 1, "a": [1, {"y": 2, "x": 1}]})
    b = canonical_hash({"a": [1, {"x": 1, "y": 2}], "b": 1})
    assert a == b
    assert len(a) == 64 and set(a) <= set("0123456789abcdef")
    assert canonical_hash([1, 2]) != canonical_hash([2, 1])
    assert canonical_hash(None) == hashlib.sha256(b"null").hexdigest()
    with pytest.raises(NotJSONError):
        canonical_hash({1, 2})


@pytest.mark.parametrize("value", [float("nan"), {"x": float("inf")}, [float("-inf")]])
def test_canonical_hash_refuses_non_finite(value) -> None:
    # NaN would otherwise hash exactly like null.
    with pytest.raises(NotJSONError) as info:
        canonical_hash(value, field="context")
    assert info.value.field == "context"


def test_checksum() -> None:
    assert checksum(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert checksum(b"abc") != checksum(b"abd")


@pytest.mark.parametrize(("size", "codec"), [
    (0, RAW), (TINY_BYTES - 1, RAW), (TINY_BYTES, LZ4), (SMALL_BYTES, LZ4),
    (SMALL_BYTES + 1, ZSTD), (1_000_000, ZSTD),
])
def test_compress_picks_codec_by_size(size: int, codec: int) -> None:
    data = (b"statekeep " * (size // 10 + 1))[:size]
    blob = compress(data)
    assert blob[0] == codec
    assert decompress(blob) == data
    if codec != RAW:
        assert len(blob) < len(data)  # repetitive data really shrinks


def test_compress_incompressible_round_trips() -> None:
    data = os.urandom(100_000)
    assert decompress(compress(data)) == data


@pytest.mark.parametrize("blob", [
    b"", bytes((9,)) + b"abc", bytes((LZ4,)) + b"not an lz4 frame",
    bytes((ZSTD,)) + b"not zstd",
])
def test_damaged_blobs(blob: bytes) -> None:
    with pytest.raises(CorruptDataError):
        decompress(blob)
    assert issubclass(CorruptDataError, StatekeepError)


def test_truncated_blob() -> None:
    blob = compress(b"x" * 50_000)
    with pytest.raises(CorruptDataError):
        decompress(blob[: len(blob) // 2])
