"""Framed, checksummed, atomically written files: archives and exported snapshots.

Every file statekeep writes for later use has the same shape: a fixed header
(magic, format version, uncompressed length, sha256 of the uncompressed
payload) followed by the zstd-compressed payload. The header lets a reader
refuse a file of the wrong kind, of an unknown format, truncated, or damaged
*before* anything in it is used; the magic keeps an archive from being read
as a snapshot and the other way round.

Files are written atomically (temporary file in the same folder, fsync,
rename, fsync of the folder), so after a crash a file is either complete or
absent -- never half written under its final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zstandard

from statekeep import codec

__all__ = [
    "FrameError",
    "Framing",
    "fsync_dir",
    "tmp_name",
    "write_atomic",
]

ZSTD_LEVEL: Final = 3


class FrameError(Exception):
    """Why a framed file cannot be used; callers turn it into their own error type
    (an archive's names the archive, a snapshot's the snapshot)."""


@dataclass(frozen=True)
class Framing:
    """One file kind: its magic, the format it writes and the formats it reads."""

    magic: bytes
    version: int
    readable: frozenset[int]

    @property
    def header(self) -> struct.Struct:
        return struct.Struct(f">{len(self.magic)}sBQ32s")

    def pack(self, payload: bytes) -> bytes:
        """Header, then ``payload`` compressed with zstd."""
        compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(payload)
        return self.pack_compressed(len(payload), codec.checksum(payload), compressed)

    def pack_compressed(self, length: int, digest: str, compressed: bytes) -> bytes:
        """Header for an already-compressed payload (a snapshot's stored image is
        zstd already: exporting it must not pay for compression twice)."""
        return self.header.pack(self.magic, self.version, length,
                                bytes.fromhex(digest)) + compressed

    def unpack(self, blob: bytes, expected: str | None = None) -> tuple[int, str, bytes]:
        """(format version, sha256, payload) of a framed file, verified.

        ``expected`` is the checksum the caller's index holds for the file;
        FrameError names what is wrong otherwise.
        """
        header = self.header
        if len(blob) < header.size:
            raise FrameError("shorter than its header")
        magic, version, length, digest = header.unpack_from(blob)
        if magic != self.magic:
            raise FrameError("not a file of this kind (bad magic)")
        if version not in self.readable:
            raise FrameError(f"format version {version} is not one this statekeep reads"
                             f" ({', '.join(map(str, sorted(self.readable)))})")
        if expected is not None and digest.hex() != expected:
            raise FrameError("its header checksum is not the one in the index")
        try:
            payload = zstandard.ZstdDecompressor().decompress(blob[header.size:],
                                                              max_output_size=length)
        except zstandard.ZstdError as exc:
            raise FrameError(f"zstd: {exc}") from None
        if len(payload) != length or codec.checksum(payload) != digest.hex():
            raise FrameError("content does not match its checksum")
        return version, digest.hex(), bytes(payload)


def tmp_name(path: Path) -> Path:
    """The temporary name :func:`write_atomic` uses for ``path`` (hidden, unique)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_atomic(path: Path, data: bytes) -> None:
    """Complete file or none: temporary file in the same folder, fsync, rename,
    fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    if os.name != "posix":  # Windows cannot open a folder; its renames are durable
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
