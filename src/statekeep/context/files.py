"""Reading one workspace file into a context element, and telling later whether it changed.

Every file is opened exactly once and everything -- size, mtime, hash, binary
sniff, UTF-8 check, line count, content -- comes from that one descriptor, so
the facts recorded describe one and the same file even if the name is swapped
underneath us. ``O_NOFOLLOW`` refuses a file that became a symlink after the
walk checked it (the walk hands us the real path), and ``O_NONBLOCK`` keeps a
file that became a FIFO from hanging the capture.

The whole file is always hashed, streamed in chunks: the hash is what drift
detection and deduplication rest on, so a 2 GB log is hashed but never held in
memory. Content is kept only for UTF-8 text up to ``max_bytes``; everything
else is recorded by hash with a ``content_note`` saying why.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from statekeep.context.elements import CodeFacts, ContextElement, Skipped
from statekeep.context.languages import PARSED_LANGUAGES, language_for
from statekeep.context.workspace import Workspace, WorkspaceFile
from statekeep.errors import CaptureError, PathEscapeError, ValidationError

__all__ = ["Drift", "check_drift", "read_file"]

_CHUNK = 1 << 20
#: Git's rule too: a NUL in the first 8 KiB means binary.
_SNIFF_BYTES = 8192
#: Parse error messages are stored; a pathological one must not bloat the row.
_MAX_ERROR_CHARS = 500
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
)

Parser = Callable[[str, str], CodeFacts]


@dataclass(frozen=True, slots=True)
class Drift:
    """How a captured file compares with the disk now."""

    path: str
    #: "unchanged" | "modified" | "touched" (mtime differs, same hash) | "deleted" | "unreadable"
    state: str
    #: A short human-readable explanation, for the agent reading the report.
    detail: str


@dataclass(frozen=True, slots=True)
class _Scan:
    """What one streaming pass over a file found."""

    sha256: str
    size: int
    binary: bool
    utf8: bool
    lines: int
    data: bytes | None  # the whole file, only when it fit in max_bytes


def read_file(
    wf: WorkspaceFile, *, max_bytes: int, parse: Parser | None = None
) -> ContextElement | Skipped:
    """Capture one file, or say why it was skipped.

    I/O problems become :class:`Skipped` rather than errors: one unreadable
    file must not fail a capture of thousands.
    """
    if max_bytes < 0:
        raise ValidationError("max_bytes must not be negative", field="max_bytes")
    try:
        fd = os.open(wf.path, _OPEN_FLAGS)
    except OSError as exc:
        return Skipped(wf.rel, _open_reason(exc))
    try:
        return _capture_open(fd, wf, max_bytes, parse)
    except OSError as exc:
        return Skipped(wf.rel, _open_reason(exc))
    finally:
        os.close(fd)


def _capture_open(
    fd: int, wf: WorkspaceFile, max_bytes: int, parse: Parser | None
) -> ContextElement | Skipped:
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        return Skipped(wf.rel, "not a regular file")
    scan = _scan(fd, max_bytes)
    after = os.fstat(fd)
    if (scan.size != before.st_size or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns):
        return Skipped(wf.rel, "changed while being read")
    note = _content_note(scan, max_bytes)
    content = scan.data if note is None else None
    text_ok = not scan.binary and scan.utf8
    language = language_for(wf.rel)
    attrs: dict[str, Any] = {
        "path": wf.rel,
        "size": scan.size,
        "mtime": before.st_mtime,
        "sha256": scan.sha256,
        "binary": scan.binary,
        "encoding": "utf-8" if text_ok else None,
        "language": language,
        "lines": scan.lines if text_ok else None,
        "content": "blob" if content is not None else None,
        "content_note": note,
    }
    if content is not None and parse is not None and language in PARSED_LANGUAGES:
        attrs.update(_parse_facts(parse, language, content.decode("utf-8-sig")))
    return ContextElement(type="file", identifier=wf.rel, attributes=attrs, content=content)


def _scan(fd: int, max_bytes: int) -> _Scan:
    """Hash, sniff, validate and (when small enough) keep the file in one pass."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    head = b""
    kept: bytearray | None = bytearray()
    size = newlines = 0
    binary, utf8, last = False, True, b""
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
        size += len(chunk)
        last = chunk[-1:]
        if len(head) < _SNIFF_BYTES:
            head += chunk[: _SNIFF_BYTES - len(head)]
            binary = binary or b"\0" in head
        if not binary and utf8:
            utf8 = _decodes(decoder, chunk, final=False)
            newlines += chunk.count(b"\n")
        if kept is not None:
            if size <= max_bytes:
                kept += chunk
            else:
                kept = None  # too large: stop keeping, keep hashing
    if not binary and utf8:
        utf8 = _decodes(decoder, b"", final=True)
    lines = newlines + (1 if size and last != b"\n" else 0)
    return _Scan(digest.hexdigest(), size, binary, utf8, lines,
                 bytes(kept) if kept is not None else None)


def _decodes(decoder: codecs.IncrementalDecoder, chunk: bytes, *, final: bool) -> bool:
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


def _content_note(scan: _Scan, max_bytes: int) -> str | None:
    """Why the content is not kept, or None when it is."""
    if scan.binary:
        return "binary"
    if not scan.utf8:
        return "not UTF-8 text"
    if scan.size > max_bytes:
        return f"larger than {max_bytes} bytes"
    return None


def _parse_facts(parse: Parser, language: str, text: str) -> dict[str, Any]:
    """The parser's facts, or an empty set of facts carrying its error.

    A parser bug must cost one file its code facts, never the capture. The
    language stays the one the file name gave, whatever the parser says.
    """
    try:
        facts = parse(language, text).to_json()
    except Exception as exc:  # any parser failure is recorded, not raised
        message = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        facts = CodeFacts(language, error=message).to_json()
    facts["language"] = language
    return facts


def _open_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "deleted since it was listed"
    if exc.errno == errno.ELOOP:
        return "changed while being read (now a symlink)"
    if isinstance(exc, IsADirectoryError):
        return "not a regular file"
    return (exc.strerror or type(exc).__name__).lower()


# -- drift ----------------------------------------------------------------------


def check_drift(workspace: Workspace, attrs: Mapping[str, Any]) -> Drift:
    """Compare a file on disk now with the attributes captured for it.

    Size and mtime are the fast path; the file is hashed only when the size
    is equal but the mtime moved, which tells a real edit from a mere touch
    (a checkout, a formatter that changed nothing).
    """
    path, size, mtime, sha256 = _captured(attrs)
    try:
        real = workspace.resolve(path)
    except PathEscapeError:
        return Drift(path, "unreadable", "now resolves outside the workspace")
    except CaptureError as exc:
        if not os.path.exists(workspace.root / path):  # gone, or a link to nothing now
            return Drift(path, "deleted", "no longer exists")
        return Drift(path, "unreadable", str(exc))
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except FileNotFoundError:
        return Drift(path, "deleted", "no longer exists")
    except OSError as exc:
        return Drift(path, "unreadable", _open_reason(exc))
    try:
        return _compare(fd, path, size, mtime, sha256)
    except OSError as exc:
        return Drift(path, "unreadable", _open_reason(exc))
    finally:
        os.close(fd)


def _compare(fd: int, path: str, size: int, mtime: float, sha256: str) -> Drift:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return Drift(path, "modified", "no longer a regular file")
    if st.st_size != size:
        return Drift(path, "modified", f"size changed from {size} to {st.st_size} bytes")
    if st.st_mtime == mtime:
        return Drift(path, "unchanged", "same size and modification time")
    if _hash_fd(fd) == sha256:
        return Drift(path, "touched", "modification time changed, content identical")
    return Drift(path, "modified", "content changed (same size)")


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _captured(attrs: Mapping[str, Any]) -> tuple[str, int, float, str]:
    """The fields drift needs, checked: attributes come back from storage."""
    path, size, mtime, sha256 = (attrs.get(k) for k in ("path", "size", "mtime", "sha256"))
    if not isinstance(path, str) or not path:
        raise ValidationError("file attributes lack a 'path' string", field="attrs")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ValidationError(f"file attributes of {path!r} lack an integer 'size'",
                              field="attrs")
    if not isinstance(mtime, int | float) or isinstance(mtime, bool):
        raise ValidationError(f"file attributes of {path!r} lack a numeric 'mtime'",
                              field="attrs")
    if not isinstance(sha256, str):
        raise ValidationError(f"file attributes of {path!r} lack a 'sha256' string",
                              field="attrs")
    return path, size, float(mtime), sha256
