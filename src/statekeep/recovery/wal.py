"""Reading a SQLite write-ahead log without SQLite: what survived a crash, and
what a damaged or truncated WAL may have lost.

SQLite itself never reports a torn WAL: when it opens a database it replays
the log up to the last commit frame whose salts and cumulative checksum are
right and silently ignores everything after it. That is correct after a
crash mid-transaction (those frames never committed) but it is also exactly
what a truncated or damaged WAL looks like, and there the ignored frames may
have held committed transactions. This module parses the file as the format
documents it (https://www.sqlite.org/fileformat2.html#walformat) so the
difference can be *shown*, and states plainly where the WAL alone cannot tell:

* Header, 32 bytes big-endian: magic (0x377f0682 or 0x377f0683, whose low bit
  says the checksums use big-endian words), format version, page size,
  checkpoint sequence, salt-1, salt-2, and a checksum of the first 24 bytes.
* Frames: a 24-byte header -- page number, database size in pages for a
  commit frame (0 otherwise), the two salts, a cumulative checksum over the
  first 8 header bytes and the page -- then the page.

A frame is valid when its salts equal the header's and the checksum chain
holds from the header on. Whole frames with other salts after the valid ones
are left over from before the last checkpoint reset: normal, not damage.

What it can know: how many transactions are intact and where the last one
ends; whether bytes follow it (frames that never got a commit frame, a frame
that fails its checksum, a partial frame); whether the file length is header
plus whole frames. What it cannot know from the WAL alone: whether bytes after
the last commit belonged to a transaction that was still being written when
the process died (nothing lost) or to committed transactions whose frames
were cut off or damaged (lost). The wal-index (``-shm``) can settle it when it
is still there from the process that wrote the log: its header records the
last *committed* frame, so a wal-index that names a frame beyond the last
valid commit proves committed transactions are gone, and one that names the
last valid commit proves the tail never committed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

__all__ = ["WalIndexHeader", "WalReport", "inspect_wal", "wal_checksum"]

WAL_MAGIC_LE: Final = 0x377F0682
WAL_MAGIC_BE: Final = 0x377F0683
WAL_VERSION: Final = 3007000
WAL_HEADER_SIZE: Final = 32
FRAME_HEADER_SIZE: Final = 24
_WAL_HEADER = struct.Struct(">8I")
_FRAME_HEADER = struct.Struct(">6I")
#: One copy of the wal-index header in ``-shm`` (native byte order; two copies
#: follow each other and must agree): version, unused, change counter, isInit,
#: bigEndCksum, page size, mxFrame, nPage, frame checksum x2, the salts (the WAL
#: header's 8 bytes, copied as they are), checksum x2.
_SHM_HEADER = struct.Struct("=3I2BH4I8s2I")
_MASK: Final = 0xFFFFFFFF


def wal_checksum(data: bytes, s0: int, s1: int, *, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), seeded with (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    it = iter(words)
    for x0, x1 in zip(it, it, strict=True):
        s0 = (s0 + x0 + s1) & _MASK
        s1 = (s1 + x1 + s0) & _MASK
    return s0, s1


@dataclass(frozen=True, slots=True)
class WalIndexHeader:
    """The header of the wal-index (``-shm``), as the last writer left it."""

    change_counter: int
    page_size: int
    #: The last committed frame (1-based; 0 = none).
    max_frame: int
    db_pages: int
    #: The WAL header's salt bytes this index describes.
    salt: bytes
    #: Frames already copied into the database file by a checkpoint (nBackfill).
    backfilled: int = 0


@dataclass(slots=True)
class WalReport:
    """What a WAL file holds, and what SQLite will and will not replay from it."""

    path: Path
    exists: bool
    size: int = 0
    page_size: int = 0
    checkpoint_seq: int = 0
    salt: tuple[int, int] = (0, 0)
    #: The 32-byte header is present, has a known magic/version and its checksum holds.
    header_valid: bool = False
    #: Whole frames in the file: (size - header) // (24 + page size).
    whole_frames: int = 0
    #: Frames from the start whose salts and checksum chain hold.
    valid_frames: int = 0
    #: Transactions (commit frames) among the valid frames.
    commits: int = 0
    #: 1-based index of the last valid commit frame; 0 when there is none.
    last_commit_frame: int = 0
    #: Database size in pages after that commit.
    db_pages: int = 0
    #: Valid frames after the last commit frame: no commit frame ever followed them.
    uncommitted_frames: int = 0
    #: 1-based index of a whole frame with the current salts whose checksum fails.
    bad_checksum_frame: int = 0
    #: Whole frames after the valid ones that carry other salts (from before a reset).
    stale_frames: int = 0
    #: Bytes after the last whole frame: a partial frame.
    partial_bytes: int = 0
    #: Bytes after the end of the last valid commit frame, not counting stale frames.
    bytes_after_commit: int = 0
    #: The wal-index header left by the writer, when ``-shm`` is there and agrees with itself.
    index: WalIndexHeader | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def salt_bytes(self) -> bytes:
        return struct.pack(">2I", *self.salt)

    @property
    def frame_size(self) -> int:
        return FRAME_HEADER_SIZE + self.page_size

    @property
    def torn(self) -> bool:
        """Bytes follow the last intact transaction that SQLite will ignore
        (other than frames left over from before a reset)."""
        return self.exists and (self.bytes_after_commit > 0 or (
            self.size > 0 and not self.header_valid))

    @property
    def committed_lost(self) -> bool | None:
        """True when committed transactions are provably gone (the wal-index names
        a commit beyond the last valid one), False when provably not, None when
        the WAL alone cannot tell."""
        if not self.torn:
            return False
        idx = self.index
        if idx is None or not self.header_valid or idx.salt != self.salt_bytes:
            return None
        if idx.max_frame > self.last_commit_frame:
            return True
        if idx.max_frame == self.last_commit_frame:
            return False
        return None

    def problems(self) -> list[str]:
        """One sentence per thing wrong with the WAL; empty when nothing is."""
        if not self.torn:
            return []
        if not self.header_valid:
            return [f"{self.path}: the WAL header is damaged or short ({self.size} bytes);"
                    " SQLite will ignore the whole file, and any transaction in it that"
                    " was not yet checkpointed into the database is lost"]
        tail: list[str] = []
        if self.uncommitted_frames:
            tail.append(f"{self.uncommitted_frames} valid frame(s) with no commit frame")
        if self.bad_checksum_frame:
            tail.append(f"frame {self.bad_checksum_frame} fails its checksum")
        if self.partial_bytes:
            tail.append(f"a partial frame of {self.partial_bytes} bytes (the file length"
                        f" is not the header plus whole {self.frame_size}-byte frames)")
        where = (f"after the last intact commit (frame {self.last_commit_frame},"
                 f" transaction {self.commits})" if self.commits else
                 "and no transaction in it is intact")
        verdict = {
            True: (f"the wal-index records frame {self.index.max_frame if self.index else 0}"
                   " as committed, so committed transactions were lost (the WAL was"
                   " truncated or damaged after they committed)"),
            False: ("the wal-index records frame"
                    f" {self.last_commit_frame} as the last commit, so the tail never"
                    " committed and nothing committed is lost"),
            None: ("SQLite will ignore these bytes. If the writer died mid-transaction"
                   " they never committed and nothing is lost; if the file was truncated"
                   " or damaged, the transactions in them are lost -- the WAL alone"
                   " cannot tell which"),
        }[self.committed_lost]
        problems = [f"{self.path}: {self.bytes_after_commit} bytes {where}: "
                    f"{'; '.join(tail) or 'unreadable frames'}. {verdict}"]
        idx = self.index
        if self.committed_lost and idx is not None and idx.backfilled > self.last_commit_frame:
            problems.append(
                f"{self.path}: a checkpoint had already copied frames up to"
                f" {idx.backfilled} into the database file; replaying the shorter log can"
                " mix old and new versions of those pages -- run the integrity check and"
                " restore a backup if it fails")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "exists": self.exists, "size": self.size,
            "page_size": self.page_size, "checkpoint_seq": self.checkpoint_seq,
            "header_valid": self.header_valid, "whole_frames": self.whole_frames,
            "valid_frames": self.valid_frames, "commits": self.commits,
            "last_commit_frame": self.last_commit_frame, "db_pages": self.db_pages,
            "uncommitted_frames": self.uncommitted_frames,
            "bad_checksum_frame": self.bad_checksum_frame, "stale_frames": self.stale_frames,
            "partial_bytes": self.partial_bytes, "bytes_after_commit": self.bytes_after_commit,
            "torn": self.torn, "committed_lost": self.committed_lost,
            "wal_index_max_frame": None if self.index is None else self.index.max_frame,
            "problems": self.problems(), "notes": list(self.notes),
        }


def inspect_wal(db_path: str | Path) -> WalReport:
    """Parse ``<db>-wal`` (and ``<db>-shm`` when present); never modifies either.

    Meant for a database no process is writing: a live writer appends frames
    while this reads, and a frame caught half-written looks like a torn tail.
    """
    wal = Path(f"{db_path}-wal")
    report = WalReport(path=wal, exists=wal.exists())
    if not report.exists:
        return report
    with wal.open("rb") as fh:
        report.size = fh.seek(0, 2)
        fh.seek(0)
        head = fh.read(WAL_HEADER_SIZE)
        if len(head) < WAL_HEADER_SIZE:
            if report.size == 0:
                report.notes.append("the WAL is empty (reset after a checkpoint)")
                report.header_valid = True
            return report
        if not _parse_header(head, report):
            return report
        _scan_frames(fh, head, report)
    report.index = _read_index(Path(f"{db_path}-shm"))
    if report.index is not None and report.index.salt != report.salt_bytes:
        report.notes.append("the wal-index describes another generation of the WAL;"
                            " it was not used")
    return report


def _parse_header(head: bytes, report: WalReport) -> bool:
    magic, version, page_size, seq, salt1, salt2, c0, c1 = _WAL_HEADER.unpack(head)
    if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE):
        report.notes.append(f"bad magic 0x{magic:08x}")
        return False
    if version != WAL_VERSION:
        report.notes.append(f"unknown WAL format version {version}")
        return False
    if page_size == 1:  # how the format writes 65536
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        report.notes.append(f"impossible page size {page_size}")
        return False
    if wal_checksum(head[:24], 0, 0, big_endian=magic == WAL_MAGIC_BE) != (c0, c1):
        report.notes.append("the header checksum does not match")
        return False
    report.page_size, report.checkpoint_seq, report.salt = page_size, seq, (salt1, salt2)
    report.header_valid = True
    return True


def _scan_frames(fh: BinaryIO, head: bytes, report: WalReport) -> None:
    """Walk the checksum chain frame by frame, then classify whatever follows it."""
    big = _WAL_HEADER.unpack(head)[0] == WAL_MAGIC_BE
    frame_size = report.frame_size
    body = report.size - WAL_HEADER_SIZE
    report.whole_frames, report.partial_bytes = divmod(body, frame_size)
    s0, s1 = _WAL_HEADER.unpack(head)[6:8]
    index = 0
    while index < report.whole_frames:
        frame = fh.read(frame_size)
        pgno, commit_size, salt1, salt2, c0, c1 = _FRAME_HEADER.unpack_from(frame)
        if (salt1, salt2) != report.salt:
            break
        n0, n1 = wal_checksum(frame[:8], s0, s1, big_endian=big)
        n0, n1 = wal_checksum(frame[FRAME_HEADER_SIZE:], n0, n1, big_endian=big)
        if (n0, n1) != (c0, c1) or pgno == 0:
            report.bad_checksum_frame = index + 1
            break
        s0, s1 = n0, n1
        index += 1
        if commit_size:
            report.commits += 1
            report.last_commit_frame, report.db_pages = index, commit_size
    report.valid_frames = index
    report.uncommitted_frames = index - report.last_commit_frame
    # Whole frames past the chain with other salts are the previous generation's,
    # which a reset leaves behind on purpose; past a bad frame nothing is trusted.
    if not report.bad_checksum_frame and index < report.whole_frames:
        fh.seek(WAL_HEADER_SIZE + index * frame_size)
        for _ in range(report.whole_frames - index):
            salts = _FRAME_HEADER.unpack_from(fh.read(FRAME_HEADER_SIZE))[2:4]
            fh.seek(report.page_size, 1)
            if salts == report.salt:
                break
            report.stale_frames += 1
    end_of_commit = WAL_HEADER_SIZE + report.last_commit_frame * frame_size
    report.bytes_after_commit = report.size - end_of_commit - report.stale_frames * frame_size
    if report.stale_frames:
        report.notes.append(f"{report.stale_frames} frame(s) from before the last"
                            " checkpoint reset follow the current ones (normal)")


def _read_index(shm: Path) -> WalIndexHeader | None:
    """The wal-index header, when both copies are present, initialised and equal."""
    try:
        with shm.open("rb") as fh:
            data = fh.read(2 * _SHM_HEADER.size + 4)
    except OSError:
        return None
    size = _SHM_HEADER.size
    if len(data) < 2 * size + 4 or data[:size] != data[size:2 * size]:
        return None
    (version, _unused, change, is_init, _big, page_size, max_frame, db_pages,
     _f0, _f1, salt, _c0, _c1) = _SHM_HEADER.unpack_from(data)
    if version != WAL_VERSION or not is_init:
        return None
    # The checkpoint record follows the two header copies; nBackfill comes first.
    backfilled = struct.unpack_from("=I", data, 2 * size)[0]
    return WalIndexHeader(change, 65536 if page_size == 1 else page_size, max_frame,
                          db_pages, salt, backfilled)
